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
