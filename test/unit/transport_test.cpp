#include <gtest/gtest.h>

#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include "pii_audit/event_record.h"
#include "pii_audit/ring_buffer.h"

using namespace pii_audit;

namespace {

std::vector<std::string> drain(RingBuffer& ring, RingState& state, std::size_t buffer_size) {
    std::vector<std::string> out;
    std::vector<char> buffer(buffer_size);
    std::uint64_t next = 0;
    std::size_t n = ring.peek(state.tail, buffer.data(), buffer.size(), &next);
    for_each_peeked_record(buffer.data(), n, [&](const char* data, std::size_t len) {
        out.emplace_back(data, len);
    });
    ring.release(next);
    return out;
}

}  // namespace

TEST(RingBuffer, PushAndPeekInOrder) {
    std::vector<char> data(256);
    RingState state{};
    RingBuffer ring(data.data(), data.size(), &state);
    ASSERT_TRUE(ring.push("alpha", 5));
    ASSERT_TRUE(ring.push("be", 2));
    EXPECT_EQ(drain(ring, state, 1024), (std::vector<std::string>{"alpha", "be"}));
    EXPECT_EQ(ring.used(), 0u);
}

TEST(RingBuffer, RefusesWhenFullAndKeepsContents) {
    std::vector<char> data(64);
    RingState state{};
    RingBuffer ring(data.data(), data.size(), &state);
    std::string record(20, 'x');  // footprint 8 + 24 = 32
    EXPECT_TRUE(ring.push(record.data(), record.size()));
    EXPECT_TRUE(ring.push(record.data(), record.size()));
    EXPECT_FALSE(ring.push("y", 1));
    EXPECT_EQ(drain(ring, state, 1024).size(), 2u);
    EXPECT_TRUE(ring.push("y", 1));
}

TEST(RingBuffer, RecordsLargerThanHalfAreRefused) {
    std::vector<char> data(128);
    RingState state{};
    RingBuffer ring(data.data(), data.size(), &state);
    std::string big(ring.max_record() + 1, 'b');
    EXPECT_FALSE(ring.push(big.data(), big.size()));
    std::string fits(ring.max_record(), 'f');
    EXPECT_TRUE(ring.push(fits.data(), fits.size()));
}

TEST(RingBuffer, WrapsAroundTheEnd) {
    std::vector<char> data(96);
    RingState state{};
    RingBuffer ring(data.data(), data.size(), &state);
    for (int round = 0; round < 50; ++round) {
        std::string a = "record-" + std::to_string(round);
        std::string b(static_cast<std::size_t>(round % 17), static_cast<char>('a' + round % 26));
        ASSERT_TRUE(ring.push(a.data(), a.size()));
        ASSERT_TRUE(ring.push(b.data(), b.size()));
        EXPECT_EQ(drain(ring, state, 1024), (std::vector<std::string>{a, b})) << round;
    }
}

TEST(RingBuffer, PeekStopsAtWholeRecordsAndDoesNotRelease) {
    std::vector<char> data(1024);
    RingState state{};
    RingBuffer ring(data.data(), data.size(), &state);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(ring.push("0123456789", 10));  // footprint 24 each
    std::vector<char> buffer(60);
    std::uint64_t next = 0;
    std::size_t n = ring.peek(state.tail, buffer.data(), buffer.size(), &next);
    EXPECT_EQ(n, 48u);  // two whole records; a third would not fit
    EXPECT_EQ(ring.used(), 5u * 24);  // nothing released until the consumer says so
    ring.release(next);
    EXPECT_EQ(ring.used(), 3u * 24);
}

TEST(RingBuffer, HotSpanKeepsWritesAtTheStartWhileTheConsumerKeepsUp) {
    std::vector<char> data(4096);
    RingState state{};
    RingBuffer ring(data.data(), data.size(), &state, 512);
    std::uint64_t furthest = 0;
    for (int i = 0; i < 1000; ++i) {
        std::string a = "event-" + std::to_string(i);
        ASSERT_TRUE(ring.push(a.data(), a.size()));
        if (i % 3 == 2) {
            EXPECT_EQ(drain(ring, state, 4096).size(), 3u) << i;
            EXPECT_EQ(ring.used(), 0u);
        }
        std::uint64_t offset = state.head % data.size();
        furthest = offset > furthest ? offset : furthest;
    }
    // 1,000 records of ~24 bytes went through; none was written past the hot span.
    EXPECT_LE(furthest, 512u);
    EXPECT_GT(state.head, 4u * data.size());
}

TEST(RingBuffer, HotSpanStillTakesABurstInTheWholeCapacity) {
    std::vector<char> data(1024);
    RingState state{};
    RingBuffer ring(data.data(), data.size(), &state, 128);
    std::string record(20, 'r');  // footprint 32
    int pushed = 0;
    while (ring.push(record.data(), record.size())) ++pushed;
    EXPECT_EQ(pushed, 1024 / 32);  // the consumer never released anything: no going back
    EXPECT_EQ(drain(ring, state, 4096).size(), static_cast<std::size_t>(pushed));
    // Now the start is free: the next records go back to it, and the skip is invisible.
    ASSERT_TRUE(ring.push("after", 5));
    EXPECT_EQ(state.head % data.size(), 16u);
    EXPECT_EQ(drain(ring, state, 4096), (std::vector<std::string>{"after"}));
}

// A burst that starts while the consumer is a little behind (it released the first record,
// then stalled) must still use the whole capacity, not wrap inside the hot span and stop where
// the consumer stands.
TEST(RingBuffer, BurstUsesTheWholeCapacityWhenTheConsumerIsBehind) {
    std::vector<char> data(1024);
    RingState state{};
    RingBuffer ring(data.data(), data.size(), &state, 128);
    std::string record(20, 'b');  // footprint 32
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(ring.push(record.data(), record.size()));
    std::vector<char> one(32);
    std::uint64_t next = 0;
    ASSERT_EQ(ring.peek(state.tail, one.data(), one.size(), &next), 32u);
    ring.release(next);  // the consumer took one record, then stopped
    int pushed = 3;
    while (ring.push(record.data(), record.size())) ++pushed;
    EXPECT_EQ(pushed, 1024 / 32 + 1) << "the burst stopped at the hot span";
    EXPECT_EQ(drain(ring, state, 4096).size(), static_cast<std::size_t>(pushed - 1));
}

TEST(RingBuffer, GoesBackOnlyWhenTheStartIsReleased) {
    std::vector<char> data(512);
    RingState state{};
    RingBuffer ring(data.data(), data.size(), &state, 128);
    std::string record(20, 'x');  // footprint 32
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(ring.push(record.data(), record.size()));
    // 160 bytes written, nothing released: the sixth record may not overwrite the first.
    ASSERT_TRUE(ring.push("sixth", 5));
    EXPECT_EQ(state.head, 6u * 32 - 16);
    std::vector<std::string> all = drain(ring, state, 4096);
    ASSERT_EQ(all.size(), 6u);
    EXPECT_EQ(all.back(), "sixth");
    ASSERT_TRUE(ring.push("seventh", 7));
    EXPECT_EQ(state.head, 512u + 16);  // went back to the start, past the skip marker
    EXPECT_EQ(drain(ring, state, 4096), (std::vector<std::string>{"seventh"}));
}

// Random pushes and partial drains against a FIFO model: whatever the hot span does, every
// record accepted comes out once, whole and in order, and an empty ring accepts any record.
TEST(RingBuffer, HotSpanNeverLosesOrReordersRecords) {
    for (std::uint64_t hot : {64u, 200u, 1024u, 4096u}) {
        std::vector<char> data(4096);
        RingState state{};
        RingBuffer ring(data.data(), data.size(), &state, hot);
        std::mt19937 rng(static_cast<unsigned>(hot));
        std::deque<std::string> expected;
        int counter = 0;
        for (int step = 0; step < 20000; ++step) {
            if (rng() % 3 != 0) {
                std::string r = std::to_string(counter) + ":" +
                                std::string(rng() % 300, static_cast<char>('a' + counter % 26));
                bool was_empty = ring.used() == 0;
                if (ring.push(r.data(), r.size())) {
                    expected.push_back(r);
                    ++counter;
                } else {
                    ASSERT_FALSE(was_empty) << "an empty ring refused a record, hot=" << hot;
                }
            } else {
                std::size_t room = 64 + rng() % 1024;
                for (const std::string& got : drain(ring, state, room)) {
                    ASSERT_FALSE(expected.empty());
                    ASSERT_EQ(got, expected.front()) << "hot=" << hot << " step=" << step;
                    expected.pop_front();
                }
            }
            ASSERT_LE(ring.used(), data.size());
        }
        for (const std::string& got : drain(ring, state, 1 << 20)) {
            ASSERT_EQ(got, expected.front());
            expected.pop_front();
        }
        EXPECT_TRUE(expected.empty()) << "hot=" << hot;
        EXPECT_GT(counter, 5000) << "hot=" << hot;
    }
}

// peek() copies runs of the ring and closes up torn records in its output: records torn at any
// place (before a skip marker, across the ring's end, first or last in a run), with outputs of
// any size, come out whole, in order, and never twice; every record is handed out in the end.
TEST(RingBuffer, PeekPassesOverTornRecordsAnywhere) {
    for (std::uint64_t hot : {200u, 4096u}) {
        std::vector<char> data(4096);
        RingState state{};
        RingBuffer ring(data.data(), data.size(), &state, hot);
        std::mt19937 rng(static_cast<unsigned>(hot) + 7);
        std::deque<std::string> expected;
        int counter = 0, torn = 0;
        for (int step = 0; step < 30000; ++step) {
            const unsigned what = rng() % 10;
            if (what < 6) {
                std::string r = std::to_string(counter) + ":" +
                                std::string(rng() % 200, static_cast<char>('a' + counter % 26));
                if (ring.push(r.data(), r.size())) {
                    expected.push_back(r);
                    ++counter;
                }
            } else if (what == 6) {
                std::uint64_t at;
                if (ring.reserve(static_cast<std::uint32_t>(1 + rng() % 150), &at)) {
                    RingBuffer::Recovery found = ring.recover();  // the writer died
                    ASSERT_GE(found.torn, 1u) << "step=" << step;  // and any not released yet
                    ASSERT_FALSE(found.damaged);
                    ++torn;
                }
            } else {
                std::size_t room = 8 + rng() % 700;
                for (const std::string& got : drain(ring, state, room)) {
                    ASSERT_FALSE(expected.empty()) << "step=" << step;
                    ASSERT_EQ(got, expected.front()) << "hot=" << hot << " step=" << step;
                    expected.pop_front();
                }
            }
        }
        for (const std::string& got : drain(ring, state, 1 << 20)) {
            ASSERT_FALSE(expected.empty());
            ASSERT_EQ(got, expected.front());
            expected.pop_front();
        }
        EXPECT_TRUE(expected.empty()) << "hot=" << hot;
        EXPECT_EQ(ring.used(), 0u) << "torn records are released with the rest";
        EXPECT_GT(torn, 1000) << "hot=" << hot;
        EXPECT_GT(counter, 5000) << "hot=" << hot;
    }
}

// A writer killed between reserve() and complete() (a crash while queueing): the record is
// counted as torn by recover(), never handed out, and the records around it are kept.
TEST(RingBuffer, RecoverCountsATornRecordAndKeepsTheOthers) {
    std::vector<char> data(256);
    RingState state{};
    RingBuffer ring(data.data(), data.size(), &state);
    ASSERT_TRUE(ring.push("before", 6));
    std::uint64_t at = 0;
    ASSERT_TRUE(ring.reserve(10, &at));
    ring.write(at, "half", 4);  // and the writer dies here
    // Before recovery a consumer that ignored the lock would still never see it half.
    EXPECT_EQ(drain(ring, state, 1024), (std::vector<std::string>{"before"}));
    ASSERT_TRUE(ring.push("after", 5));  // (only to test recover() past it)
    state.tail = 0;                      // as if "before" had not been released
    RingBuffer::Recovery found = ring.recover();
    EXPECT_EQ(found.complete, 2u);
    EXPECT_EQ(found.torn, 1u);
    EXPECT_FALSE(found.damaged);
    EXPECT_EQ(drain(ring, state, 1024), (std::vector<std::string>{"before", "after"}));
    // Recovering again finds the same torn record, already marked, and nothing new.
    state.tail = 0;
    found = ring.recover();
    EXPECT_EQ(found.torn, 1u);
}

TEST(RingBuffer, RecoverCutsAtADamagedPrefix) {
    std::vector<char> data(256);
    RingState state{};
    RingBuffer ring(data.data(), data.size(), &state);
    ASSERT_TRUE(ring.push("one", 3));
    ASSERT_TRUE(ring.push("two", 3));
    ASSERT_TRUE(ring.push("three", 5));
    const std::uint64_t second = RingBuffer::footprint(3);
    data[second + 4] = 'X';  // the second record's state word is garbage
    RingBuffer::Recovery found = ring.recover();
    EXPECT_TRUE(found.damaged);
    EXPECT_EQ(found.complete, 1u);
    EXPECT_EQ(found.damaged_bytes, 2 * RingBuffer::footprint(3) + RingBuffer::footprint(5) - second);
    EXPECT_EQ(drain(ring, state, 1024), (std::vector<std::string>{"one"}));
    EXPECT_TRUE(ring.push("four", 4));  // and the ring goes on from there
    EXPECT_EQ(drain(ring, state, 1024), (std::vector<std::string>{"four"}));
}

TEST(RingBuffer, RecoverRefusesImpossiblePositions) {
    std::vector<char> data(256);
    RingState state{};
    RingBuffer ring(data.data(), data.size(), &state);
    ASSERT_TRUE(ring.push("one", 3));
    state.head = state.tail + 1000;  // more than the capacity
    RingBuffer::Recovery found = ring.recover();
    EXPECT_TRUE(found.damaged);
    EXPECT_EQ(ring.used(), 0u);
    EXPECT_TRUE(ring.push("two", 3));
    EXPECT_EQ(drain(ring, state, 1024), (std::vector<std::string>{"two"}));
}

// Records wrapped around the end and past a hot-span skip marker are all recovered.
TEST(RingBuffer, RecoverWalksWrapsAndSkipMarkers) {
    std::vector<char> data(512);
    RingState state{};
    RingBuffer ring(data.data(), data.size(), &state, 128);
    int pushed = 0, drained = 0;
    for (int i = 0; i < 200; ++i) {
        std::string r = "r" + std::to_string(i) + std::string(i % 40, 'z');
        if (ring.push(r.data(), r.size())) ++pushed;
        if (i % 3 == 0) drained += static_cast<int>(drain(ring, state, 64).size());
    }
    const RingState before = state;
    RingBuffer::Recovery found = ring.recover();
    EXPECT_FALSE(found.damaged);
    EXPECT_EQ(found.torn, 0u);
    EXPECT_EQ(static_cast<int>(found.complete), pushed - drained);
    EXPECT_EQ(state.head, before.head);
    EXPECT_EQ(static_cast<int>(drain(ring, state, 1 << 16).size()), pushed - drained);
}

TEST(EventRecord, RoundTrip) {
    EventView event;
    event.header.kind = static_cast<std::uint8_t>(EventKind::kRead);
    event.header.status = static_cast<std::uint8_t>(EventStatus::kFailed);
    event.header.row_count = 42;
    event.header.queue_seq = 7;
    event.field[kRelation] = "public.customers";
    event.field[kColumns] = std::string_view("name\0phone\0", 11);
    event.field[kQueryText] = "SELECT name, phone FROM customers WHERE id = $1";
    std::vector<char> buffer(encoded_size(event));
    encode_event(event, buffer.data());

    EventView back;
    ASSERT_TRUE(decode_event(buffer.data(), buffer.size(), back));
    EXPECT_EQ(back.header.row_count, 42);
    EXPECT_EQ(back.header.queue_seq, 7u);
    EXPECT_EQ(back.field[kRelation], "public.customers");
    EXPECT_TRUE(back.field[kEndUser].empty());
    std::vector<std::string> columns;
    for_each_list_item(back.field[kColumns],
                       [&](std::string_view c) { columns.emplace_back(c); });
    EXPECT_EQ(columns, (std::vector<std::string>{"name", "phone"}));
}

TEST(EventRecord, RejectsTruncatedOrForeignBytes) {
    EventView event;
    event.field[kQueryText] = "SELECT 1";
    std::vector<char> buffer(encoded_size(event));
    encode_event(event, buffer.data());
    EventView back;
    EXPECT_FALSE(decode_event(buffer.data(), buffer.size() - 1, back));
    EXPECT_FALSE(decode_event(buffer.data(), 10, back));
    buffer[0] ^= 0x55;
    EXPECT_FALSE(decode_event(buffer.data(), buffer.size(), back));
}
