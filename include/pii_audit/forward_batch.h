// A batch of events a hot standby hands to its primary (pii_audit.forward_events): the standby's
// queue records, each framed as a u32 length (host order: a streaming replica runs on the same
// architecture as its primary) followed by the record (event_record.h). The primary checks a
// batch before it keeps it (check_batch): a forwarder role that sends anything else gets an
// error, and nothing malformed reaches the worker.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "pii_audit/event_record.h"
#include "pii_audit/pg_free.h"

namespace pii_audit::forward {

inline constexpr std::size_t kFrame = sizeof(std::uint32_t);

// Bytes a record of len bytes takes in a batch.
inline std::size_t framed_size(std::size_t len) { return kFrame + len; }

// Writes one framed record at out; returns the bytes written.
inline std::size_t frame_record(const char* record, std::uint32_t len, char* out) {
    std::memcpy(out, &len, kFrame);
    if (len > 0) std::memcpy(out + kFrame, record, len);
    return kFrame + len;
}

struct BatchSummary {
    const char* problem = nullptr;  // nullptr when the batch is well-formed
    std::uint64_t events = 0;
    std::uint64_t first_seq = 0, last_seq = 0;  // queue sequences of its first and last event
};

// Checks framing, that every record is a well-formed event, and that queue sequences rise.
BatchSummary check_batch(const char* data, std::size_t size);

// Calls visit(record, len) for each record of a checked batch; stops at a frame that does not
// fit (which check_batch refuses).
template <typename Visit>
void for_each_record(const char* data, std::size_t size, Visit&& visit) {
    std::size_t offset = 0;
    while (size - offset >= kFrame) {
        std::uint32_t len;
        std::memcpy(&len, data + offset, kFrame);
        if (len > size - offset - kFrame) return;
        visit(data + offset + kFrame, static_cast<std::size_t>(len));
        offset += kFrame + len;
    }
}

}  // namespace pii_audit::forward
