// A byte ring of variable-length records for many producers and one consumer. The caller owns
// the locking: producers push under an exclusive lock; the single consumer copies records out,
// persists them, and only then releases their space, so a consumer that dies before its commit
// loses nothing.
//
// Crash safety: the ring may live in memory that outlives the processes writing it (a file
// mapping, see shmem_queue.cpp). A record's prefix says whether it is complete: push() first
// reserves the record (prefix marked kWriting, head moved past it), then copies the bytes, then
// marks it kComplete. A writer killed in between leaves a reserved record that is never complete;
// peek() skips it and recover() counts it, so a torn record is never handed out half.
//
// Hot span: while the consumer keeps up, producers go back to the start of the ring as soon as
// they pass the first `hot_span` bytes, so the ring's memory in use stays a few hundred pages
// however large its capacity. The rest of the capacity only absorbs bursts the consumer has not
// caught up with. On the 2-core VMs this project is measured on, writing 250 bytes per event
// around a 16 MB ring cost 6% of a lookup workload's throughput and around 64 MB 15%, while 2 MB
// or less cost nothing measurable (bench/RESULTS.md, part 4): touching many distinct pages is
// what is expensive, not the bytes.
#pragma once
#include "pii_audit/pg_free.h"

#include <cstddef>
#include <cstdint>

namespace pii_audit {

// Positions only ever grow; the byte offset in the ring is position % capacity.
struct RingState {
    std::uint64_t head;  // where the next record is written
    std::uint64_t tail;  // oldest byte not yet released by the consumer
};

class RingBuffer {
public:
    // capacity must be a positive multiple of kAlign; so must hot_span, when it is given.
    RingBuffer(char* data, std::uint64_t capacity, RingState* state)
        : RingBuffer(data, capacity, state, capacity) {}
    RingBuffer(char* data, std::uint64_t capacity, RingState* state, std::uint64_t hot_span)
        : data_(data), capacity_(capacity), state_(state),
          hot_span_(hot_span == 0 || hot_span > capacity ? capacity : hot_span) {}

    static constexpr std::uint64_t kAlign = 8;
    static constexpr std::uint64_t kPrefix = 8;  // u32 length + u32 state, keeps records aligned
    // A prefix holding this length is not a record: the rest of the ring up to its end is unused
    // and the next record starts at the beginning (the producer went back to the hot span).
    static constexpr std::uint32_t kSkipToStart = 0xFFFFFFFFu;
    // A record's state, the prefix's second word.
    static constexpr std::uint32_t kWriting = 0x57524954u;   // reserved, bytes being copied
    static constexpr std::uint32_t kComplete = 0x444F4E45u;  // whole: may be handed out
    static constexpr std::uint32_t kTorn = 0x544F524Eu;      // its writer died: skipped

    // What recover() found between tail and head.
    struct Recovery {
        std::uint64_t complete = 0;  // whole records kept
        std::uint64_t torn = 0;      // reserved but never completed: now marked kTorn, skipped
        // The positions or a prefix made no sense: everything from there on was dropped (head
        // moved back to where the last sound record ends), how many records is unknown here.
        bool damaged = false;
        std::uint64_t damaged_bytes = 0;
    };

    // Bytes a record of `length` occupies, prefix and padding included.
    static std::uint64_t footprint(std::uint64_t length) {
        return kPrefix + (length + kAlign - 1) / kAlign * kAlign;
    }
    // The largest record push() can ever accept.
    std::uint64_t max_record() const { return capacity_ / 2 - kPrefix; }

    std::uint64_t used() const { return state_->head - state_->tail; }
    std::uint64_t capacity() const { return capacity_; }

    // False (and nothing written) when the record does not fit now.
    bool push(const void* record, std::uint32_t length) {
        std::uint64_t at;
        if (!reserve(length, &at)) return false;
        write(at, record, length);
        complete(at);
        return true;
    }
    // push() in its three steps (a test can stop a writer between them). reserve() finds room,
    // writes the prefix marked kWriting and moves head past the record; write() copies the
    // bytes; complete() marks the record whole.
    bool reserve(std::uint32_t length, std::uint64_t* position);
    void write(std::uint64_t position, const void* record, std::uint32_t length) {
        copy_in(position + kPrefix, record, length);
    }
    void complete(std::uint64_t position);

    // After the writers died (a crash), before anyone uses the ring again: checks every record
    // between tail and head, marks incomplete ones kTorn and cuts the ring at the first prefix
    // that makes no sense. Records it keeps are exactly those peek() will hand out.
    Recovery recover();

    // Copies whole complete records (each as u32 length + bytes, packed back to back with the same prefix
    // and padding as in the ring) starting at `from` into out, up to out_capacity bytes. Returns
    // the bytes copied; *next is the position after the last record copied (or skipped: torn
    // records are passed over, never copied).
    std::size_t peek(std::uint64_t from, char* out, std::size_t out_capacity,
                     std::uint64_t* next) const;

    // Frees everything before position `to` (a position peek returned).
    void release(std::uint64_t to) { state_->tail = to; }

private:
    void copy_in(std::uint64_t position, const void* src, std::uint64_t n);
    void copy_out(std::uint64_t position, void* dst, std::uint64_t n) const;

    char* data_;
    std::uint64_t capacity_;
    RingState* state_;
    std::uint64_t hot_span_;
};

// Iterates the records in a buffer filled by RingBuffer::peek.
template <typename Visit>
void for_each_peeked_record(const char* buffer, std::size_t size, Visit&& visit) {
    std::size_t offset = 0;
    while (offset + RingBuffer::kPrefix <= size) {
        std::uint32_t length;
        __builtin_memcpy(&length, buffer + offset, sizeof length);
        visit(buffer + offset + RingBuffer::kPrefix, static_cast<std::size_t>(length));
        offset += RingBuffer::footprint(length);
    }
}

}  // namespace pii_audit
