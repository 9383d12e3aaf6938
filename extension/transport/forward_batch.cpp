#include "pii_audit/forward_batch.h"

namespace pii_audit::forward {

BatchSummary check_batch(const char* data, std::size_t size) {
    BatchSummary s;
    std::size_t offset = 0;
    while (offset < size) {
        if (size - offset < kFrame) {
            s.problem = "the batch ends inside a record's length";
            return s;
        }
        std::uint32_t len;
        std::memcpy(&len, data + offset, kFrame);
        if (len > size - offset - kFrame) {
            s.problem = "a record is longer than the rest of the batch";
            return s;
        }
        EventView event;
        if (!decode_event(data + offset + kFrame, len, event)) {
            s.problem = "a record is not a well-formed audit event";
            return s;
        }
        const std::uint64_t seq = event.header.queue_seq;
        if (s.events > 0 && seq <= s.last_seq) {
            s.problem = "queue sequences do not rise";
            return s;
        }
        if (s.events == 0) s.first_seq = seq;
        s.last_seq = seq;
        ++s.events;
        offset += kFrame + len;
    }
    return s;
}

}  // namespace pii_audit::forward
