#include <gtest/gtest.h>

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
