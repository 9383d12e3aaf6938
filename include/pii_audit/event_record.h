// The layout of one audit event as it travels from a backend through the shared-memory queue to
// the background worker. Fixed-size header, then the string fields back to back. Encoding writes
// into a caller's buffer and decoding returns views into it: no allocation on either side.
#pragma once
#include "pii_audit/pg_free.h"

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace pii_audit {

// kLogin: a connection attempt (ClientAuthentication hook); status kCompleted when it succeeded.
// kRemoval: events removed from the trail (retention, pii_audit.remove_events); row_count says
// how many, detail which ids and times and why.
enum class EventKind : std::uint8_t { kRead = 1, kLabelChange = 2, kLogin = 3, kRemoval = 4 };
// kDenied: the statement was refused for lack of privileges before it read anything.
enum class EventStatus : std::uint8_t { kCompleted = 1, kFailed = 2, kDenied = 3 };

// String fields, in wire order. List fields (columns, categories) hold items each followed by a
// NUL byte, because a column name may contain any other character.
enum EventField : int {
    kDatabaseName,
    kSessionUser,
    kCurrentUser,
    kEndUser,
    kApplicationName,
    kClientAddr,
    kCommand,
    kRelation,
    kColumns,
    kCategories,
    kQueryText,
    kDetail,
    kSubjects,  // keyed subject hashes, 8 bytes each in host order (see subject_hash.h)
    // The server the event happened on. Empty from a backend: the worker stores its own
    // pii_audit.server_name; set for events a standby forwarded (the standby's name).
    kServerName,
    kFieldCount
};

inline constexpr std::uint32_t kFlagQueryTruncated = 1u << 0;
inline constexpr std::uint32_t kFlagClientAddrSet = 1u << 1;
inline constexpr std::uint32_t kFlagSubjectsTracked = 1u << 2;    // the relation has a subject key
inline constexpr std::uint32_t kFlagSubjectsTruncated = 1u << 3;  // more subjects than hashes
inline constexpr std::uint32_t kFlagSubjectCountEstimated = 1u << 4;

struct EventHeader {
    std::uint32_t magic;
    std::uint8_t kind;
    std::uint8_t status;
    std::uint16_t nesting_level;
    std::uint64_t queue_seq;   // assigned by the queue under its lock
    std::int64_t event_time;   // PostgreSQL TimestampTz: microseconds since 2000-01-01 UTC
    std::int64_t row_count;
    std::int64_t query_id;
    std::int64_t subject_count;  // distinct subjects read (kFlagSubjectsTracked)
    std::uint32_t relation_oid;
    std::int32_t backend_pid;
    std::int32_t source_encoding;  // the reading database's encoding (PostgreSQL's enum value)
    std::uint32_t flags;
    std::uint32_t field_length[kFieldCount];
};

inline constexpr std::uint32_t kEventMagic = 0x50494941;  // "PIIA"

struct EventView {
    EventHeader header{};
    std::string_view field[kFieldCount];
};

std::size_t encoded_size(const EventView& event);
// Writes exactly encoded_size(event) bytes to out.
void encode_event(const EventView& event, char* out);
// False when the bytes are not a well-formed event (wrong magic, lengths past the end).
bool decode_event(const char* data, std::size_t size, EventView& out);

// Walks a NUL-terminated list field: calls visit(item) for each item.
template <typename Visit>
void for_each_list_item(std::string_view list, Visit&& visit) {
    std::size_t start = 0;
    while (start < list.size()) {
        std::size_t end = list.find('\0', start);
        if (end == std::string_view::npos) end = list.size();
        visit(list.substr(start, end - start));
        start = end + 1;
    }
}

}  // namespace pii_audit
