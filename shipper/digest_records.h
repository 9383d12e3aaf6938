// Digest records in a shipped stream (pii_audit.export_digests() lines, in any export format,
// as written to a file or wrapped in a syslog header), read back for --verify. No I/O, no
// PostgreSQL: unit-tested on its own.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace shipper {

struct DigestRecord {
    int64_t event_id = 0;  // the last event of the batch the digest covers
    std::string digest;    // 64 lowercase hex digits
};

// The digest record a line carries; nullopt for a line that is not one (an event, an alert).
// Throws std::runtime_error saying what is wrong with a line that is a digest record but
// damaged (its event id or digest missing or malformed, or not valid JSON).
std::optional<DigestRecord> parse_digest_record(std::string_view line);

}  // namespace shipper
