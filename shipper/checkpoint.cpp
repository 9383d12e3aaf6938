#include "checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "errors.h"

namespace shipper {
namespace {

constexpr const char* kMagic = "pii-audit-export checkpoint 1";

std::string errno_text() { return std::strerror(errno); }

void write_all(int fd, const std::string& data, const std::string& path) {
    size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw TransientError("cannot write " + path + ": " + errno_text());
        done += static_cast<size_t>(n);
    }
}

}  // namespace

std::string serialize_checkpoint(const Checkpoint& c) {
    std::ostringstream out;
    out << kMagic << "\n"
        << "event_id " << c.event_id << "\n"
        << "alert_id " << c.alert_id << "\n"
        << "format " << (c.format.empty() ? "-" : c.format) << "\n"
        << "file " << c.file_device << " " << c.file_inode << " " << c.file_offset << "\n"
        << "end\n";
    return out.str();
}

Checkpoint parse_checkpoint(const std::string& text, const std::string& origin) {
    auto bad = [&](const std::string& why) {
        return FatalError("the checkpoint " + origin + " is damaged (" + why +
                          "); fix or remove it (then --start-after ID says where to resume)");
    };
    std::istringstream in(text);
    std::string line;
    if (!std::getline(in, line) || line != kMagic)
        throw bad("first line is not '" + std::string(kMagic) + "'");
    Checkpoint c;
    bool have_event = false, have_alert = false, have_format = false, have_file = false,
         have_end = false;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string key;
        fields >> key;
        if (key == "event_id")
            have_event = static_cast<bool>(fields >> c.event_id) && c.event_id >= 0;
        else if (key == "alert_id")
            have_alert = static_cast<bool>(fields >> c.alert_id) && c.alert_id >= 0;
        else if (key == "format") {
            have_format = static_cast<bool>(fields >> c.format);
            if (c.format == "-") c.format.clear();
        } else if (key == "file")
            have_file = static_cast<bool>(fields >> c.file_device >> c.file_inode >> c.file_offset);
        else if (key == "end") {
            have_end = true;
            break;
        } else
            throw bad("unknown line '" + line + "'");
        std::string extra;
        if (fields >> extra) throw bad("unexpected '" + extra + "' in line '" + line + "'");
    }
    if (!have_event || !have_alert || !have_format || !have_file || !have_end)
        throw bad("a line is missing or malformed");
    return c;
}

std::optional<Checkpoint> load_checkpoint(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return std::nullopt;
        throw FatalError("cannot read the checkpoint " + path + ": " + errno_text());
    }
    std::string text;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int saved = errno;
            ::close(fd);
            errno = saved;
            throw FatalError("cannot read the checkpoint " + path + ": " + errno_text());
        }
        if (n == 0) break;
        text.append(buf, static_cast<size_t>(n));
        if (text.size() > 65536) break;  // a checkpoint is a few lines
    }
    ::close(fd);
    return parse_checkpoint(text, path);
}

void sync_parent_directory(const std::string& path) {
    size_t slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) throw TransientError("cannot open directory " + dir + ": " + errno_text());
    int rc = ::fsync(fd);
    int saved = errno;
    ::close(fd);
    errno = saved;
    if (rc != 0) throw TransientError("cannot fsync directory " + dir + ": " + errno_text());
}

void save_checkpoint(const std::string& path, const Checkpoint& c) {
    std::string temp = path + ".tmp";
    int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) throw TransientError("cannot create " + temp + ": " + errno_text());
    try {
        write_all(fd, serialize_checkpoint(c), temp);
        if (::fsync(fd) != 0) throw TransientError("cannot fsync " + temp + ": " + errno_text());
    } catch (...) {
        ::close(fd);
        throw;
    }
    if (::close(fd) != 0) throw TransientError("cannot close " + temp + ": " + errno_text());
    if (::rename(temp.c_str(), path.c_str()) != 0)
        throw TransientError("cannot rename " + temp + " to " + path + ": " + errno_text());
    sync_parent_directory(path);
}

}  // namespace shipper
