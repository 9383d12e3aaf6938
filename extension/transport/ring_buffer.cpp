#include "pii_audit/ring_buffer.h"

#include <cstring>

namespace pii_audit {

void RingBuffer::copy_in(std::uint64_t position, const void* src, std::uint64_t n) {
    std::uint64_t offset = position % capacity_;
    std::uint64_t first = n < capacity_ - offset ? n : capacity_ - offset;
    std::memcpy(data_ + offset, src, first);
    if (first < n) std::memcpy(data_, static_cast<const char*>(src) + first, n - first);
}

void RingBuffer::copy_out(std::uint64_t position, void* dst, std::uint64_t n) const {
    std::uint64_t offset = position % capacity_;
    std::uint64_t first = n < capacity_ - offset ? n : capacity_ - offset;
    std::memcpy(dst, data_ + offset, first);
    if (first < n) std::memcpy(static_cast<char*>(dst) + first, data_, n - first);
}

bool RingBuffer::push(const void* record, std::uint32_t length) {
    if (length > max_record()) return false;
    std::uint64_t need = footprint(length);
    std::uint64_t offset = state_->head % capacity_;
    if (offset != 0 && offset + need > hot_span_) {
        // Past the hot span: go back to the start only while the consumer keeps up (at most
        // half the hot span unreleased). Going back leaves just the bytes before the
        // consumer's position free, since the skipped rest counts as used until it passes
        // them: a consumer that is behind would cap a burst at the hot span. Otherwise keep
        // writing on, and the whole capacity takes the burst.
        std::uint64_t start = state_->head - offset + capacity_;
        if (used() <= hot_span_ / 2 && start + need - state_->tail <= capacity_) {
            std::uint32_t skip = kSkipToStart;
            char marker[kPrefix] = {};
            std::memcpy(marker, &skip, sizeof skip);
            copy_in(state_->head, marker, kPrefix);  // offset is aligned, so the prefix fits
            state_->head = start;
        }
    }
    if (capacity_ - used() < need) return false;
    char prefix[kPrefix] = {};
    std::memcpy(prefix, &length, sizeof length);
    copy_in(state_->head, prefix, kPrefix);
    copy_in(state_->head + kPrefix, record, length);
    state_->head += need;
    return true;
}

std::size_t RingBuffer::peek(std::uint64_t from, char* out, std::size_t out_capacity,
                             std::uint64_t* next) const {
    std::uint64_t position = from;
    std::size_t copied = 0;
    while (position < state_->head) {
        char prefix[kPrefix];
        copy_out(position, prefix, kPrefix);
        std::uint32_t length;
        std::memcpy(&length, prefix, sizeof length);
        if (length == kSkipToStart) {
            position += capacity_ - position % capacity_;
            continue;
        }
        std::uint64_t need = footprint(length);
        if (copied + need > out_capacity) break;
        std::memcpy(out + copied, prefix, kPrefix);
        copy_out(position + kPrefix, out + copied + kPrefix, need - kPrefix);
        copied += need;
        position += need;
    }
    *next = position;
    return copied;
}

}  // namespace pii_audit
