#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "pii_audit/trail_group.h"

using namespace pii_audit;

namespace {

std::string pack(const std::vector<std::int64_t>& hashes) {
    std::string out(hashes.size() * 8, '\0');
    for (std::size_t i = 0; i < hashes.size(); ++i) std::memcpy(&out[i * 8], &hashes[i], 8);
    return out;
}

struct Owned {
    GroupEvent event;
    std::string subjects;
    std::string detail;
};

std::vector<Owned> decode_all(std::string_view payload, std::int64_t min_time, const char** error) {
    GroupDecoder d(payload, min_time);
    std::vector<Owned> out;
    GroupEvent e;
    while (d.next(e)) {
        Owned o{e, std::string(e.subjects), std::string(e.detail)};
        out.push_back(o);
    }
    *error = d.error();
    return out;
}

}  // namespace

TEST(TrailGroup, RoundTripsEveryField) {
    const std::int64_t t0 = 849'000'000'000'000;
    std::string one = pack({-5, 0x7fffffffffffffffLL});
    GroupEncoder enc;
    enc.reset(t0);
    GroupEvent a;
    a.event_time = t0 + 250;
    a.status = 1;
    a.has_row_count = true;
    a.row_count = 1;
    a.tracked = true;
    a.subject_count = 2;
    a.subjects = one;
    enc.add(a);
    GroupEvent b;  // earlier than a: deltas may be negative
    b.event_time = t0;
    b.status = 2;
    b.has_detail = true;
    b.detail = std::string_view("line\nwith \0 NUL", 15);
    enc.add(b);
    GroupEvent c;  // a truncated, estimated subject list
    c.event_time = t0 + 3'599'000'000;
    c.status = 3;
    c.has_row_count = true;
    c.row_count = 1'000'000'000'000;
    c.tracked = true;
    c.truncated = true;
    c.estimated = true;
    c.subject_count = 70'000;
    enc.add(c);
    std::string payload(enc.finish());

    const char* error = nullptr;
    auto events = decode_all(payload, t0, &error);
    ASSERT_EQ(error, nullptr);
    ASSERT_EQ(events.size(), 3u);
    EXPECT_EQ(events[0].event.event_time, t0 + 250);
    EXPECT_EQ(events[0].event.status, 1);
    EXPECT_TRUE(events[0].event.has_row_count);
    EXPECT_EQ(events[0].event.row_count, 1);
    EXPECT_TRUE(events[0].event.tracked);
    EXPECT_EQ(events[0].event.subject_count, 2);
    ASSERT_EQ(events[0].subjects.size(), 16u);
    EXPECT_EQ(subject_at(events[0].subjects, 0), -5);
    EXPECT_EQ(subject_at(events[0].subjects, 1), 0x7fffffffffffffffLL);
    EXPECT_FALSE(events[0].event.has_detail);
    EXPECT_EQ(events[1].event.event_time, t0);
    EXPECT_EQ(events[1].event.status, 2);
    EXPECT_FALSE(events[1].event.has_row_count);
    EXPECT_FALSE(events[1].event.tracked);
    EXPECT_EQ(events[1].detail, std::string("line\nwith \0 NUL", 15));
    EXPECT_EQ(events[2].event.event_time, t0 + 3'599'000'000);
    EXPECT_EQ(events[2].event.row_count, 1'000'000'000'000);
    EXPECT_TRUE(events[2].event.truncated);
    EXPECT_TRUE(events[2].event.estimated);
    EXPECT_EQ(events[2].event.subject_count, 70'000);
    EXPECT_TRUE(events[2].subjects.empty());
}

// The worker adds a group's events as they come, before it knows the group's smallest time:
// the payload must be byte for byte the one encoded against that minimum from the start.
TEST(TrailGroup, FinishingAgainstTheMinimumLaterGivesTheSamePayload) {
    const std::int64_t t0 = 849'000'000'000'000;
    std::mt19937_64 rng(7);
    for (int round = 0; round < 200; ++round) {
        const int n = 1 + static_cast<int>(rng() % 40);
        std::vector<GroupEvent> events(static_cast<std::size_t>(n));
        std::vector<std::string> subjects(static_cast<std::size_t>(n));
        for (int i = 0; i < n; ++i) {
            GroupEvent& e = events[static_cast<std::size_t>(i)];
            // Out of order, up to an hour apart, and now and then far apart (wrapping deltas).
            e.event_time = round % 50 == 0 && i == 1 ? INT64_MIN + 5
                                                     : t0 + static_cast<std::int64_t>(rng() % 3'600'000'000ULL);
            e.status = 1 + static_cast<std::uint8_t>(rng() % 3);
            e.has_row_count = true;
            e.row_count = static_cast<std::int64_t>(rng() % 100'000);
            e.tracked = rng() % 2 == 0;
            subjects[static_cast<std::size_t>(i)] = pack({static_cast<std::int64_t>(rng())});
            if (e.tracked) {
                e.subject_count = 1;
                e.subjects = subjects[static_cast<std::size_t>(i)];
            }
        }
        std::int64_t min_time = events[0].event_time;
        for (const GroupEvent& e : events) min_time = std::min(min_time, e.event_time);
        GroupEncoder known, later;
        known.reset(min_time);
        later.reset(events[0].event_time);
        for (const GroupEvent& e : events) {
            known.add(e);
            later.add(e);
        }
        const std::string expected(known.finish());
        ASSERT_EQ(std::string(later.finish(min_time)), expected) << "round " << round;
        const char* error = nullptr;
        auto decoded = decode_all(expected, min_time, &error);
        ASSERT_EQ(error, nullptr);
        ASSERT_EQ(decoded.size(), events.size());
        for (std::size_t i = 0; i < events.size(); ++i)
            EXPECT_EQ(decoded[i].event.event_time, events[i].event_time);
    }
    GroupEncoder empty;
    empty.reset(t0);
    EXPECT_EQ(std::string(empty.finish(t0 - 5)), std::string("\x01\x00", 2));
}

// Every size of event: many hashes, large counts and details together (the encoder assembles
// small events in a buffer of its own and long ones in parts).
TEST(TrailGroup, EventsOfEverySizeRoundTrip) {
    const std::int64_t t0 = 849'000'000'000'000;
    for (std::size_t n = 0; n <= 5; ++n) {
        for (bool detail : {false, true}) {
            std::vector<std::int64_t> hashes;
            for (std::size_t i = 0; i < n; ++i) hashes.push_back(-1 - static_cast<std::int64_t>(i) * 0x0101010101010101LL);
            const std::string packed = pack(hashes);
            const std::string text(detail ? 300 : 0, 'd');
            GroupEncoder enc;
            enc.reset(t0);
            GroupEvent e;
            e.event_time = INT64_MAX;  // ten-byte varints everywhere
            e.status = 2;
            e.has_row_count = true;
            e.row_count = INT64_MAX;
            e.tracked = true;
            e.subject_count = INT64_MAX;
            e.subjects = packed;
            e.has_detail = detail;
            e.detail = text;
            enc.add(e);
            enc.add(e);
            const std::string payload(enc.finish());
            const char* error = nullptr;
            auto events = decode_all(payload, t0, &error);
            ASSERT_EQ(error, nullptr) << n << " " << detail;
            ASSERT_EQ(events.size(), 2u);
            for (const Owned& o : events) {
                EXPECT_EQ(o.event.event_time, INT64_MAX);
                EXPECT_EQ(o.event.row_count, INT64_MAX);
                EXPECT_EQ(o.event.subject_count, INT64_MAX);
                ASSERT_EQ(o.subjects.size(), n * 8);
                for (std::size_t i = 0; i < n; ++i) EXPECT_EQ(subject_at(o.subjects, i), hashes[i]);
                EXPECT_EQ(o.detail, text);
            }
        }
    }
}

TEST(TrailGroup, ALookupTakesAboutFifteenBytes) {
    const std::int64_t t0 = 849'000'000'000'000;
    GroupEncoder enc;
    enc.reset(t0);
    std::mt19937_64 rng(7);
    std::vector<std::string> hashes;
    for (int i = 0; i < 100; ++i) hashes.push_back(pack({static_cast<std::int64_t>(rng())}));
    for (int i = 0; i < 100; ++i) {
        GroupEvent e;
        e.event_time = t0 + i * 400;  // 2,500 lookups a second in one session
        e.status = 1;
        e.has_row_count = true;
        e.row_count = 1;
        e.tracked = true;
        e.subject_count = 1;
        e.subjects = hashes[i];
        enc.add(e);
    }
    std::string_view payload = enc.finish();
    EXPECT_LE(payload.size(), 100u * 15 + 3);
    const char* error = nullptr;
    auto events = decode_all(payload, t0, &error);
    ASSERT_EQ(error, nullptr);
    ASSERT_EQ(events.size(), 100u);
    for (int i = 0; i < 100; ++i) {
        EXPECT_EQ(events[i].event.event_time, t0 + i * 400);
        std::int64_t want;
        std::memcpy(&want, hashes[i].data(), 8);
        EXPECT_EQ(subject_at(events[i].subjects, 0), want);
    }
}

TEST(TrailGroup, ExtremeTimesRoundTrip) {
    GroupEncoder enc;
    const std::int64_t lo = INT64_MIN, hi = INT64_MAX;
    enc.reset(lo);
    for (std::int64_t t : {hi, lo, std::int64_t{0}, hi}) {
        GroupEvent e;
        e.event_time = t;
        enc.add(e);
    }
    std::string payload(enc.finish());
    const char* error = nullptr;
    auto events = decode_all(payload, lo, &error);
    ASSERT_EQ(error, nullptr);
    ASSERT_EQ(events.size(), 4u);
    EXPECT_EQ(events[0].event.event_time, hi);
    EXPECT_EQ(events[1].event.event_time, lo);
    EXPECT_EQ(events[2].event.event_time, 0);
    EXPECT_EQ(events[3].event.event_time, hi);
}

TEST(TrailGroup, DamageIsReportedNeverReadPast) {
    GroupEncoder enc;
    enc.reset(0);
    std::string h = pack({1, 2, 3});
    for (int i = 0; i < 3; ++i) {
        GroupEvent e;
        e.event_time = i;
        e.tracked = true;
        e.subject_count = 3;
        e.subjects = h;
        e.has_detail = true;
        e.detail = "error text";
        enc.add(e);
    }
    const std::string good(enc.finish());
    const char* error = nullptr;
    ASSERT_EQ(decode_all(good, 0, &error).size(), 3u);
    ASSERT_EQ(error, nullptr);
    // Every truncation is damage, reported, and never read past (ASan/valgrind would see it).
    for (std::size_t cut = 0; cut < good.size(); ++cut) {
        std::string damaged = good.substr(0, cut);
        auto events = decode_all(damaged, 0, &error);
        EXPECT_NE(error, nullptr) << "cut at " << cut;
        EXPECT_LT(events.size(), 3u);
    }
    // Trailing bytes, an unknown version, a count past the limit, an overlong number.
    auto check = [&](std::string bytes, const char* want) {
        decode_all(bytes, 0, &error);
        ASSERT_NE(error, nullptr) << want;
        EXPECT_NE(std::string(error).find(want), std::string::npos) << error;
    };
    check(good + "x", "after its last event");
    check(std::string("\x02\x00", 2), "unknown version");
    check(std::string("\x01\xff\xff\x03", 4), "more events");
    check(std::string("\x01\x01") + std::string(11, '\xff'), "overlong");
    // Random bytes never crash and never report more events than the header allows.
    std::mt19937 rng(11);
    for (int i = 0; i < 20000; ++i) {
        std::string bytes(rng() % 64, '\0');
        for (char& c : bytes) c = static_cast<char>(rng());
        if (!bytes.empty() && rng() % 2) bytes[0] = 1;
        GroupDecoder d(bytes, 0);
        GroupEvent e;
        std::uint32_t n = 0;
        while (d.next(e)) ++n;
        EXPECT_LE(n, kMaxGroupEvents);
    }
}

// The names the views, events_after and export() show for a payload's status byte.
TEST(TrailGroup, StatusNames) {
    EXPECT_STREQ(group_status_name(1), "completed");
    EXPECT_STREQ(group_status_name(2), "failed");
    EXPECT_STREQ(group_status_name(3), "denied");
    EXPECT_STREQ(group_status_name(4), "lost");
    EXPECT_EQ(group_status_name(0), nullptr);
    EXPECT_EQ(group_status_name(5), nullptr);
}

// What subject_access reads beyond the subject index: a group holds a subject when an event
// recorded it, may hold anyone when an event's list was cut short or the payload is damaged.
TEST(TrailGroup, MayHoldSubject) {
    const std::int64_t t0 = 849'000'000'000'000;
    const std::string listed = pack({11, 22, 33});
    GroupEncoder enc;
    enc.reset(t0);
    GroupEvent untracked;  // a read of a table without a subject key
    untracked.event_time = t0;
    untracked.status = 1;
    enc.add(untracked);
    GroupEvent tracked;
    tracked.event_time = t0 + 5;
    tracked.status = 1;
    tracked.tracked = true;
    tracked.subject_count = 3;
    tracked.subjects = listed;
    enc.add(tracked);
    const std::string payload(enc.finish());
    EXPECT_TRUE(group_may_hold_subject(payload, t0, 22));
    EXPECT_TRUE(group_may_hold_subject(payload, t0, 33));
    EXPECT_FALSE(group_may_hold_subject(payload, t0, 44));

    enc.reset(t0);
    GroupEvent cut = tracked;  // read more subjects than it kept
    cut.subject_count = 5000;
    cut.truncated = true;
    enc.add(cut);
    const std::string truncated(enc.finish());
    EXPECT_TRUE(group_may_hold_subject(truncated, t0, 44));

    const std::string damaged = payload.substr(0, payload.size() - 3);
    EXPECT_TRUE(group_may_hold_subject(damaged, t0, 44));
    EXPECT_TRUE(group_may_hold_subject(std::string_view(), t0, 44));
}
