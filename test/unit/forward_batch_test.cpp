// Batches a hot standby hands to its primary: what the primary accepts, and that everything
// else is refused before it reaches the worker.
#include "pii_audit/forward_batch.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace pii_audit;

namespace {

std::string record(std::uint64_t seq, std::string_view user = "clerk") {
    EventView e;
    e.header.kind = static_cast<std::uint8_t>(EventKind::kRead);
    e.header.status = static_cast<std::uint8_t>(EventStatus::kCompleted);
    e.header.queue_seq = seq;
    e.field[kSessionUser] = user;
    e.field[kRelation] = "public.customers";
    std::string out(encoded_size(e), '\0');
    encode_event(e, out.data());
    return out;
}

std::string batch(const std::vector<std::string>& records) {
    std::string out;
    for (const auto& r : records) {
        std::string framed(forward::framed_size(r.size()), '\0');
        forward::frame_record(r.data(), static_cast<std::uint32_t>(r.size()), framed.data());
        out += framed;
    }
    return out;
}

}  // namespace

TEST(ForwardBatch, AcceptsRisingRecordsAndWalksThem) {
    const std::string b = batch({record(7), record(8, "teller"), record(12)});
    const auto s = forward::check_batch(b.data(), b.size());
    EXPECT_EQ(s.problem, nullptr);
    EXPECT_EQ(s.events, 3u);
    EXPECT_EQ(s.first_seq, 7u);
    EXPECT_EQ(s.last_seq, 12u);
    std::vector<std::string> users;
    forward::for_each_record(b.data(), b.size(), [&](const char* data, std::size_t len) {
        EventView e;
        ASSERT_TRUE(decode_event(data, len, e));
        users.emplace_back(e.field[kSessionUser]);
    });
    EXPECT_EQ(users, (std::vector<std::string>{"clerk", "teller", "clerk"}));
}

TEST(ForwardBatch, EmptyBatchCarriesOnlyTheDropCount) {
    const auto s = forward::check_batch("", 0);
    EXPECT_EQ(s.problem, nullptr);
    EXPECT_EQ(s.events, 0u);
}

TEST(ForwardBatch, RefusesWhatIsNoBatch) {
    const std::string good = batch({record(1), record(2)});
    // Cut anywhere inside: refused, never read past the end.
    for (std::size_t cut = 1; cut < good.size(); ++cut) {
        if (cut == forward::framed_size(record(1).size())) continue;  // a whole first record
        EXPECT_NE(forward::check_batch(good.data(), cut).problem, nullptr) << "cut at " << cut;
        std::size_t visited = 0;
        forward::for_each_record(good.data(), cut, [&](const char*, std::size_t) { ++visited; });
        EXPECT_LE(visited, 1u);
    }
    // A length past the end.
    std::string huge = good;
    huge[0] = '\xff';
    huge[1] = '\xff';
    EXPECT_NE(forward::check_batch(huge.data(), huge.size()).problem, nullptr);
    // Bytes that are no event.
    const std::string junk = batch({std::string(200, 'x')});
    EXPECT_STREQ(forward::check_batch(junk.data(), junk.size()).problem,
                 "a record is not a well-formed audit event");
    // Sequences that do not rise (a replayed or reordered record).
    const std::string back = batch({record(5), record(5)});
    EXPECT_STREQ(forward::check_batch(back.data(), back.size()).problem,
                 "queue sequences do not rise");
}
