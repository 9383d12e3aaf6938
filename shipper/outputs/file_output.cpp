// Lines to a file, exactly once: a batch is written, fsynced, and only then is the checkpoint
// (last event, the file's identity and its length) saved. After a crash the lines past the
// checkpoint's length are cut off and fetched from the trail again. Rotation happens between
// batches: PATH becomes PATH.1 (PATH.1 becomes PATH.2, ...) and a new PATH is started and
// recorded in the checkpoint before any line goes into it.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "../errors.h"
#include "outputs.h"

namespace shipper {
namespace {

std::string errno_text() { return std::strerror(errno); }

class FileOutput : public Output {
  public:
    explicit FileOutput(const Options& o)
        : path_(o.file_path), max_size_(o.file_max_size), keep_(o.file_keep) {}
    ~FileOutput() override { disconnect(); }

    bool restore(Checkpoint& c) override {
        confirmed_ = {c.event_id, c.alert_id};
        bool changed = false;
        struct stat st;
        bool exists = ::stat(path_.c_str(), &st) == 0;
        if (!exists && errno != ENOENT)
            throw FatalError("cannot stat " + path_ + ": " + errno_text());
        if (c.file_inode == 0) {
            // No file recorded (first run, or another destination before): append to PATH.
        } else if (exists && st.st_dev == c.file_device && st.st_ino == c.file_inode) {
            cut_to(path_, st, c.file_offset);
        } else {
            // Rotated after the checkpoint, before the new file was recorded?
            std::string first = path_ + ".1";
            struct stat old;
            if (::stat(first.c_str(), &old) == 0 && old.st_dev == c.file_device &&
                old.st_ino == c.file_inode) {
                cut_to(first, old, c.file_offset);
                if (exists) cut_to(path_, st, 0);  // nothing in the new file was checkpointed
                changed = true;
            } else {
                throw FatalError(
                    "the checkpoint says the delivered lines are the first " +
                    std::to_string(c.file_offset) + " bytes of file " + path_ +
                    (exists ? ", but that file was replaced" : ", but it is gone") +
                    " (moved or rotated by something else). Let only pii-audit-export rotate "
                    "it (--file-max-size). To start a new file, move the checkpoint away and "
                    "give --start-after " +
                    std::to_string(c.event_id));
            }
        }
        open_file();
        checkpointed_ = offset_;
        if (changed || c.file_inode == 0) changed = true;
        describe(c);
        return changed;
    }

    void rewind(const Checkpoint& c) override {
        Output::rewind(c);
        // The saved checkpoint names this file, or (a rotation it did not record) the one before,
        // and then nothing in this one is delivered.
        checkpointed_ = c.file_device == device_ && c.file_inode == inode_ ? c.file_offset : 0;
    }

    // After a failure (a full disk, say), the lines of the failed batch that reached the file
    // are cut off before the batch is written again.
    void connect() override {
        if (fd_ >= 0) return;
        uint64_t device = device_, inode = inode_;
        open_file();
        if (device_ != device || inode_ != inode)
            throw FatalError("file " + path_ +
                             " was replaced while pii-audit-export was writing it");
        if (offset_ < checkpointed_)
            throw FatalError("file " + path_ +
                             " was cut shorter than the delivered lines by something else");
        if (offset_ > checkpointed_) {
            if (::ftruncate(fd_, static_cast<off_t>(checkpointed_)) != 0)
                throw TransientError("cannot cut " + path_ +
                                     " back to the checkpoint: " + errno_text());
            offset_ = checkpointed_;
        }
    }

    void write(const Record& r) override {
        buffer_.append(r.line);
        buffer_.push_back('\n');
        if (buffer_.size() >= (1 << 20)) write_buffer();
    }

    void flush(const Position& upto) override {
        write_buffer();
        if (::fsync(fd_) != 0) throw TransientError("cannot fsync " + path_ + ": " + errno_text());
        checkpointed_ = offset_;
        confirmed_ = upto;
    }

    void describe(Checkpoint& c) const override {
        c.file_device = device_;
        c.file_inode = inode_;
        c.file_offset = checkpointed_;
    }

    bool rotate_if_due() override {
        // Only between batches: everything in the file delivered and checkpointed.
        if (max_size_ == 0 || fd_ < 0 || offset_ != checkpointed_ || offset_ < max_size_)
            return false;
        disconnect();
        for (int i = keep_ - 1; i >= 1; --i) {
            std::string from = path_ + "." + std::to_string(i),
                        to = path_ + "." + std::to_string(i + 1);
            if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT)
                throw TransientError("cannot rename " + from + " to " + to + ": " + errno_text());
        }
        std::string first = path_ + ".1";
        if (::rename(path_.c_str(), first.c_str()) != 0)
            throw TransientError("cannot rename " + path_ + " to " + first + ": " + errno_text());
        open_file();
        checkpointed_ = offset_;
        return true;
    }

    bool reopen() override {
        // Between batches only (the shipper asks once everything is checkpointed).
        if (fd_ < 0 || offset_ != checkpointed_) return false;
        struct stat st;
        bool same = ::stat(path_.c_str(), &st) == 0 && st.st_dev == device_ && st.st_ino == inode_;
        disconnect();
        open_file();  // PATH again, or a new PATH if the file was moved away (logrotate)
        checkpointed_ = offset_;
        return !same;
    }

    void disconnect() noexcept override {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
        buffer_.clear();
    }

  private:
    void cut_to(const std::string& path, const struct stat& st, uint64_t offset) {
        if (static_cast<uint64_t>(st.st_size) < offset)
            throw FatalError("file " + path + " holds " + std::to_string(st.st_size) +
                             " bytes, fewer than the " + std::to_string(offset) +
                             " the checkpoint says were delivered into it: it was truncated by "
                             "something else, and the lost lines cannot be told apart");
        if (static_cast<uint64_t>(st.st_size) > offset) {
            if (::truncate(path.c_str(), static_cast<off_t>(offset)) != 0)
                throw FatalError("cannot cut " + path + " back to the checkpoint (" +
                                 std::to_string(offset) + " bytes): " + errno_text());
            log_info("removed " + std::to_string(st.st_size - offset) +
                     " bytes past the checkpoint from " + path +
                     " (written but not checkpointed before a stop; they are shipped again)");
        }
    }

    void open_file() {
        bool created = ::access(path_.c_str(), F_OK) != 0;
        fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (fd_ < 0) throw TransientError("cannot open " + path_ + ": " + errno_text());
        struct stat st;
        if (::fstat(fd_, &st) != 0)
            throw TransientError("cannot stat " + path_ + ": " + errno_text());
        device_ = st.st_dev;
        inode_ = st.st_ino;
        offset_ = static_cast<uint64_t>(st.st_size);
        if (created) sync_parent_directory(path_);
    }

    void write_buffer() {
        size_t done = 0;
        while (done < buffer_.size()) {
            ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                // What reached the file is cut off when connect() reopens it.
                std::string why = errno_text();
                disconnect();
                throw TransientError("cannot write " + path_ + ": " + why);
            }
            done += static_cast<size_t>(n);
            offset_ += static_cast<uint64_t>(n);
        }
        buffer_.clear();
    }

    std::string path_;
    uint64_t max_size_;
    int keep_;
    int fd_ = -1;
    uint64_t device_ = 0, inode_ = 0, offset_ = 0;
    uint64_t checkpointed_ = 0;  // the file's length at the last flush
    std::string buffer_;
};

class StdoutOutput : public Output {
  public:
    void connect() override {}
    void write(const Record& r) override {
        buffer_.append(r.line);
        buffer_.push_back('\n');
        if (buffer_.size() >= (1 << 20)) write_buffer();
    }
    void flush(const Position& upto) override {
        write_buffer();
        confirmed_ = upto;
    }
    void disconnect() noexcept override { buffer_.clear(); }

  private:
    void write_buffer() {
        size_t done = 0;
        while (done < buffer_.size()) {
            ssize_t n = ::write(STDOUT_FILENO, buffer_.data() + done, buffer_.size() - done);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw FatalError("cannot write to standard output: " + errno_text());
            done += static_cast<size_t>(n);
        }
        buffer_.clear();
    }
    std::string buffer_;
};

}  // namespace

std::unique_ptr<Output> make_file_output(const Options& o) {
    return std::make_unique<FileOutput>(o);
}
std::unique_ptr<Output> make_stdout_output(const Options&) {
    return std::make_unique<StdoutOutput>();
}

}  // namespace shipper
