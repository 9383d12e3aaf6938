// The shipper's position: the last event (and alert) the destination confirmed, and for a file
// destination the file and length that hold exactly those lines. Written atomically (temporary
// file, fsync, rename, fsync of the directory): after a crash it is the old one or the new one.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace shipper {

struct Checkpoint {
    int64_t event_id = 0;  // last event delivered
    int64_t alert_id = 0;  // last alert_event_id delivered (--alerts)
    std::string format;    // the format the destination received
    // File destination: the file that holds the delivered lines, and their length in it.
    uint64_t file_device = 0, file_inode = 0, file_offset = 0;

    bool operator==(const Checkpoint& o) const {
        return event_id == o.event_id && alert_id == o.alert_id && format == o.format &&
               file_device == o.file_device && file_inode == o.file_inode &&
               file_offset == o.file_offset;
    }
};

std::string serialize_checkpoint(const Checkpoint& c);
// Throws FatalError naming `origin` when the text is not a checkpoint.
Checkpoint parse_checkpoint(const std::string& text, const std::string& origin);

// nullopt when the file does not exist; FatalError when it cannot be read or parsed.
std::optional<Checkpoint> load_checkpoint(const std::string& path);
// Throws TransientError (a full disk may be freed) with the path and the reason.
void save_checkpoint(const std::string& path, const Checkpoint& c);

// fsync of the directory holding `path`, so that a rename or a new file survives a crash.
void sync_parent_directory(const std::string& path);

}  // namespace shipper
