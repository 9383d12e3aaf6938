// Tamper evidence: the trail's hash chain (SHA-256). The worker digests every group it stores,
// and every batch gets one digest over the previous batch's digest and its groups' digests, kept
// in pii_audit.trail_digests. pii_audit.verify_trail recomputes them from the stored rows; a row
// changed, removed or inserted by someone who bypassed the triggers no longer matches, and a
// chain recomputed by that someone no longer matches digests held outside the database.
//
// Layout, version 2 (what an outsider needs to verify the trail without this code). Every digest
// is SHA-256 over a tag byte, the version byte (2), then fields in the order below, each:
//   NULL                  0x00
//   integer               0x01, then 8 bytes (bigint, timestamptz as microseconds since
//                         2000-01-01 UTC) or 4 bytes (integer, oid), little-endian
//   boolean               0x01, then 0x00 or 0x01
//   text / bytea          0x01, u32 length (little-endian), the bytes (text as stored, in the
//                         audit database's encoding)
//   text[] / bigint[]     0x01, u32 item count, then each item: u32 length and its bytes (text),
//                         or 8 bytes (bigint)
//   inet                  0x01, family (4 or 6), netmask bits, address (4 or 16 bytes)
//   digest                0x01, its 32 bytes
// Tags and fields:
//   'S' session    database_name, session_user_name, current_user_name, end_user,
//                  application_name, client_addr, server_name        (pii_audit.trail_sessions)
//   'T' statement  command, relation, relation_oid, columns, categories, query_id, query_text,
//                  query_truncated                                   (pii_audit.trail_statements)
//   'G' group      first_event_id, event_count (integer), min_time, max_time, recorded_at, kind,
//                  backend_pid (integer), nesting_level (integer), the session's 'S' digest, the
//                  statement's 'T' digest (NULL for gaps), payload (bytea, its layout in
//                  trail_group.h: each event's time, status, row count, subjects and detail)
//   'B' batch      previous batch's digest (32 zero bytes for the first), first_event_id,
//                  last_event_id, group count (integer), then each group's 'G' digest in id order
//   'A' alert event  previous alert event's digest (zeros for the first), alert_event_id,
//                  change, event_time, status, status_by, status_at, note, alert_id,
//                  alert_time, raised_at, actor, peer_group, detector, score (integer),
//                  severity, explanation, evidence (bigint[])
// Every field the views show is covered, whichever table stores it; the ids that join the side
// tables are not (they are not shown: pointing a group at an equal row changes nothing).
// A batch's row in trail_digests also keeps, per group, its event count (u16) and the first 8
// bytes of its 'G' digest: they say which group changed when the batch's digest does not match.
//
// PostgreSQL-free, no allocation, no exception: the worker calls it between PostgreSQL calls.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "pii_audit/pg_free.h"

namespace pii_audit::chain {

// Version 1 (development builds of 0.3.0 only, never released) had no server_name in 'S'; a
// trail chained with it does not verify with version 2.
inline constexpr std::uint8_t kVersion = 2;
inline constexpr std::size_t kDigestSize = 32;
// Per group in trail_digests.groups: event count (u16 little-endian), 8 bytes of its digest.
inline constexpr std::size_t kGroupEntrySize = 10;

struct Digest {
    unsigned char bytes[kDigestSize] = {};
    bool operator==(const Digest& other) const noexcept {
        return std::memcmp(bytes, other.bytes, kDigestSize) == 0;
    }
    bool operator!=(const Digest& other) const noexcept { return !(*this == other); }
};

enum class Tag : char {
    kSession = 'S',
    kStatement = 'T',
    kGroup = 'G',
    kBatch = 'B',
    kAlertEvent = 'A',
};

// SHA-256 over fields encoded as the layout above says.
class Hasher {
  public:
    explicit Hasher(Tag tag) noexcept;
    void null() noexcept;
    void int64(std::int64_t v) noexcept;
    void int32(std::int32_t v) noexcept;
    void boolean(bool v) noexcept;
    void text(std::string_view v) noexcept;
    // A list: begin_list(n), then n item()s (text) or int64_item()s (bigint).
    void begin_list(std::uint32_t n) noexcept;
    void item(std::string_view v) noexcept;
    void int64_item(std::int64_t v) noexcept;
    // family 4 or 6; address of 4 or 16 bytes.
    void inet(std::uint8_t family, std::uint8_t bits, const unsigned char* address,
              std::size_t size) noexcept;
    void digest(const Digest& d) noexcept;
    Digest finish() noexcept;

  private:
    void raw(const void* data, std::size_t size) noexcept;
    void u32(std::uint32_t v) noexcept;
    alignas(16) unsigned char state_[128];  // OpenSSL's SHA256_CTX
};

struct GroupFields {
    std::int64_t first_event_id = 0;
    std::int32_t event_count = 0;
    std::int64_t min_time = 0, max_time = 0, recorded_at = 0;
    std::string_view kind;
    bool has_backend_pid = false;
    std::int32_t backend_pid = 0;
    bool has_nesting_level = false;
    std::int32_t nesting_level = 0;
    Digest session;
    bool has_statement = false;
    Digest statement;
    std::string_view payload;
};
Digest group_digest(const GroupFields& g) noexcept;

Digest batch_digest(const Digest& previous, std::int64_t first_event_id, std::int64_t last_event_id,
                    const Digest* groups, std::size_t ngroups) noexcept;

// Writes a group's entry (kGroupEntrySize bytes) for trail_digests.groups.
void group_entry(std::uint32_t event_count, const Digest& group, unsigned char* out) noexcept;
// Reads entry i of a groups list; false past its end.
bool read_group_entry(std::string_view entries, std::size_t i, std::uint32_t* event_count,
                      std::uint64_t* prefix) noexcept;
std::uint64_t digest_prefix(const Digest& d) noexcept;

// 64 lowercase hex digits; out holds 65 bytes (NUL-terminated).
void to_hex(const Digest& d, char* out) noexcept;
// 64 hex digits (either case); false for anything else.
bool from_hex(std::string_view hex, Digest* d) noexcept;

}  // namespace pii_audit::chain
