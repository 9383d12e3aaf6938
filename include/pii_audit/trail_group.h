// The trail's groups: the events of one batch that share a session, a statement, a kind, a
// nesting level and a backend are stored as one row, their per-event parts packed into one
// byte string (the group's payload). Ids of a group are consecutive (first_event_id + i), so
// they cost nothing; times are deltas; counts are varints; subject hashes are 8 raw bytes each
// (they do not compress). A typical lookup (one subject, one row) takes about 15 bytes.
//
// Payload format, version 1 (all integers are unsigned LEB128 varints unless said otherwise):
//   version byte (1), event count, then per event:
//     time: zigzag(event_time - previous event's time) (the first: - group's min_time)
//     flags byte: status (bits 0-2), subjects tracked (3), subjects truncated (4),
//                 subject count estimated (5), has row count (6), has detail (7)
//     row count                      if has row count (a negative count is stored as 0)
//     subject count                  if tracked
//     number of hashes n, then n hashes of 8 bytes (little-endian)   if tracked
//     detail length, then its bytes  if has detail
// PostgreSQL-free: the worker builds payloads, the SQL functions read them, unit tests check both.
#pragma once

#include "pii_audit/pg_free.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pii_audit {

inline constexpr std::uint8_t kGroupPayloadVersion = 1;
// Group rows stay small enough to be written inline and to bound what one decode allocates.
inline constexpr std::uint32_t kMaxGroupEvents = 4096;
// A group's events lie within this span of time, so that a time filter on events implies one on
// groups (see the planner hook in capture and the view definitions).
inline constexpr std::int64_t kMaxGroupSpanMicros = 3600LL * 1000 * 1000;

struct GroupEvent {
    std::int64_t event_time = 0;  // PostgreSQL TimestampTz
    std::uint8_t status = 0;      // EventStatus, or 4 for a gap's "lost"
    bool has_row_count = false;
    std::int64_t row_count = 0;
    bool tracked = false;  // the relation has a subject key
    bool truncated = false;
    bool estimated = false;
    std::int64_t subject_count = 0;
    // Packed 8-byte hashes: in host order when given to the encoder (as the queue carries them),
    // little-endian when the decoder returns them (read them with subject_at).
    std::string_view subjects;
    bool has_detail = false;
    std::string_view detail;
};

// Appends events to one group's payload. The payload's first time is relative to the group's
// smallest event_time, which the worker learns only once the batch's last event has joined the
// group: events are added relative to any base (reset), and finish(min_time) writes the first
// delta against the real minimum.
class GroupEncoder {
public:
    void reset(std::int64_t base_time);
    void add(const GroupEvent& event);
    std::uint32_t count() const noexcept { return count_; }
    // The finished payload (version, count, events) for a group whose smallest event_time is
    // min_time; valid until the next reset or add.
    std::string_view finish(std::int64_t min_time);
    // The same, when the base given to reset was the smallest event_time.
    std::string_view finish() { return finish(base_time_); }

private:
    std::string body_;
    std::string out_;
    std::int64_t base_time_ = 0;
    std::int64_t first_time_ = 0;
    std::size_t first_delta_size_ = 0;  // bytes of the first event's time in body_
    std::int64_t previous_time_ = 0;
    std::uint32_t count_ = 0;
};

// The i-th hash of a decoded event's subjects.
std::int64_t subject_at(std::string_view subjects, std::size_t i) noexcept;

// The name the views show for an event's status ("completed", "failed", "denied", or "lost" for
// a gap), or nullptr for a status no version writes (a damaged payload).
const char* group_status_name(std::uint8_t status) noexcept;

// Reads a payload event by event. Never reads past the end: a damaged or foreign payload makes
// next() return false and error() say why.
class GroupDecoder {
public:
    GroupDecoder(std::string_view payload, std::int64_t min_time) noexcept;
    std::uint32_t count() const noexcept { return count_; }
    // Fills `event` (its string_views point into the payload) and returns true, or returns false
    // at the end or on damage (then error() is set; bytes after the last event are damage too).
    bool next(GroupEvent& event) noexcept;
    const char* error() const noexcept { return error_; }

private:
    bool fail(const char* why) noexcept;
    bool varint(std::uint64_t& out) noexcept;
    const unsigned char* at_;
    const unsigned char* end_;
    std::int64_t time_;
    std::uint32_t count_ = 0;
    std::uint32_t read_ = 0;
    const char* error_ = nullptr;
};

// Whether an event of the group recorded the subject, or may have read it (its subject list was
// cut short); a damaged payload may hold anyone (true: unpacking it reports the damage). Reads
// the payload in place.
bool group_may_hold_subject(std::string_view payload, std::int64_t min_time,
                            std::int64_t hash) noexcept;

}  // namespace pii_audit
