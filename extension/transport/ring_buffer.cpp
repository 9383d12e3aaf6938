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

bool RingBuffer::reserve(std::uint32_t length, std::uint64_t* position) {
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
            std::uint32_t skip[2] = {kSkipToStart, kComplete};
            copy_in(state_->head, skip, kPrefix);  // offset is aligned, so the prefix fits
            state_->head = start;
        }
    }
    if (capacity_ - used() < need) return false;
    std::uint32_t prefix[2] = {length, kWriting};
    copy_in(state_->head, prefix, kPrefix);
    *position = state_->head;
    state_->head += need;
    return true;
}

void RingBuffer::complete(std::uint64_t position) {
    std::uint32_t state = kComplete;
    copy_in(position + sizeof(std::uint32_t), &state, sizeof state);
}

RingBuffer::Recovery RingBuffer::recover() {
    Recovery found;
    std::uint64_t position = state_->tail;
    const std::uint64_t head = state_->head;
    if (head < position || head - position > capacity_ || position % kAlign != 0 ||
        head % kAlign != 0) {
        // The positions themselves are damaged: nothing between them can be trusted.
        found.damaged = true;
        found.damaged_bytes = head >= position ? head - position : 0;
        state_->head = state_->tail = 0;
        return found;
    }
    while (position < head) {
        std::uint32_t prefix[2];
        copy_out(position, prefix, kPrefix);
        if (prefix[0] == kSkipToStart && prefix[1] == kComplete && position % capacity_ != 0) {
            const std::uint64_t next = position + capacity_ - position % capacity_;
            if (next > head) {  // a producer going back always left head exactly there
                found.damaged = true;
                found.damaged_bytes = head - position;
                state_->head = position;
                return found;
            }
            position = next;
            continue;
        }
        const std::uint64_t need = footprint(prefix[0]);
        if (prefix[0] > max_record() || position + need > head ||
            (prefix[1] != kComplete && prefix[1] != kWriting && prefix[1] != kTorn)) {
            found.damaged = true;
            found.damaged_bytes = head - position;
            state_->head = position;
            return found;
        }
        if (prefix[1] == kComplete) {
            ++found.complete;
        } else {
            if (prefix[1] == kWriting) {
                std::uint32_t torn = kTorn;
                copy_in(position + sizeof(std::uint32_t), &torn, sizeof torn);
            }
            ++found.torn;
        }
        position += need;
    }
    return found;
}

std::size_t RingBuffer::peek(std::uint64_t from, char* out, std::size_t out_capacity,
                             std::uint64_t* next) const {
    std::uint64_t position = from;
    std::size_t copied = 0;
    while (position < state_->head) {
        char prefix[kPrefix];
        copy_out(position, prefix, kPrefix);
        std::uint32_t length, state;
        std::memcpy(&length, prefix, sizeof length);
        std::memcpy(&state, prefix + sizeof length, sizeof state);
        if (length == kSkipToStart) {
            position += capacity_ - position % capacity_;
            continue;
        }
        std::uint64_t need = footprint(length);
        if (state != kComplete) {
            position += need;  // torn by a writer that died (recover() marked it)
            continue;
        }
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
