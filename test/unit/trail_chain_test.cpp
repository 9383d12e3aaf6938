// The hash chain's layout (trail_chain.h): digests are SHA-256 over exactly the bytes the header
// documents, so that someone outside can verify the trail with their own code.
#include "pii_audit/trail_chain.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <string>

using namespace pii_audit::chain;

namespace {

Digest sha256(const std::string& bytes) {
    Digest d;
    unsigned int n = 0;
    EVP_Digest(bytes.data(), bytes.size(), d.bytes, &n, EVP_sha256(), nullptr);
    return d;
}

std::string le(std::uint64_t v, int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return s;
}

GroupFields sample_group() {
    GroupFields g;
    g.first_event_id = 41;
    g.event_count = 2;
    g.min_time = 1000;
    g.max_time = 2000;
    g.recorded_at = 3000;
    g.kind = "read";
    g.has_backend_pid = true;
    g.backend_pid = 4242;
    g.has_nesting_level = true;
    g.nesting_level = 1;
    g.session.bytes[0] = 0x11;
    g.has_statement = true;
    g.statement.bytes[31] = 0x22;
    g.payload = std::string_view("\x01\x02payload", 9);
    return g;
}

}  // namespace

TEST(TrailChain, FieldEncodingsAreTheDocumentedBytes) {
    Hasher h(Tag::kSession);
    h.text("db");
    h.null();
    h.int64(-2);
    h.int32(7);
    h.boolean(true);
    h.begin_list(2);
    h.item("a");
    h.item("");
    const unsigned char v4[4] = {127, 0, 0, 1};
    h.inet(4, 32, v4, 4);
    std::string expected = "S\x02";  // tag, layout version 2
    expected += std::string("\x01", 1) + le(2, 4) + "db";
    expected += std::string("\x00", 1);
    expected += std::string("\x01", 1) + le(static_cast<std::uint64_t>(-2), 8);
    expected += std::string("\x01", 1) + le(7, 4);
    expected += std::string("\x01\x01", 2);
    expected += std::string("\x01", 1) + le(2, 4) + le(1, 4) + "a" + le(0, 4);
    expected += std::string("\x01\x04\x20\x7f\x00\x00\x01", 7);
    EXPECT_EQ(h.finish(), sha256(expected));
}

TEST(TrailChain, GroupDigestIsTheDocumentedBytes) {
    GroupFields g = sample_group();
    std::string x = "G\x02";
    x += std::string("\x01", 1) + le(41, 8);
    x += std::string("\x01", 1) + le(2, 4);
    x += std::string("\x01", 1) + le(1000, 8);
    x += std::string("\x01", 1) + le(2000, 8);
    x += std::string("\x01", 1) + le(3000, 8);
    x += std::string("\x01", 1) + le(4, 4) + "read";
    x += std::string("\x01", 1) + le(4242, 4);
    x += std::string("\x01", 1) + le(1, 4);
    x += std::string("\x01", 1) + std::string(reinterpret_cast<const char*>(g.session.bytes), 32);
    x += std::string("\x01", 1) + std::string(reinterpret_cast<const char*>(g.statement.bytes), 32);
    x += std::string("\x01", 1) + le(9, 4) + std::string(g.payload);
    EXPECT_EQ(group_digest(g), sha256(x));
}

TEST(TrailChain, EveryGroupFieldChangesTheDigest) {
    const Digest base = group_digest(sample_group());
    auto changed = [&](auto&& change) {
        GroupFields g = sample_group();
        change(g);
        return group_digest(g) != base;
    };
    EXPECT_TRUE(changed([](GroupFields& g) { g.first_event_id++; }));
    EXPECT_TRUE(changed([](GroupFields& g) { g.event_count++; }));
    EXPECT_TRUE(changed([](GroupFields& g) { g.min_time++; }));
    EXPECT_TRUE(changed([](GroupFields& g) { g.max_time++; }));
    EXPECT_TRUE(changed([](GroupFields& g) { g.recorded_at++; }));
    EXPECT_TRUE(changed([](GroupFields& g) { g.kind = "gap"; }));
    EXPECT_TRUE(changed([](GroupFields& g) { g.has_backend_pid = false; }));
    EXPECT_TRUE(changed([](GroupFields& g) { g.backend_pid++; }));
    EXPECT_TRUE(changed([](GroupFields& g) { g.has_nesting_level = false; }));
    EXPECT_TRUE(changed([](GroupFields& g) { g.session.bytes[5] ^= 1; }));
    EXPECT_TRUE(changed([](GroupFields& g) { g.has_statement = false; }));
    EXPECT_TRUE(changed([](GroupFields& g) { g.statement.bytes[0] ^= 1; }));
    EXPECT_TRUE(changed([](GroupFields& g) { g.payload = g.payload.substr(1); }));
}

TEST(TrailChain, NullAndEmptyTextDiffer) {
    Hasher a(Tag::kSession), b(Tag::kSession);
    a.null();
    b.text("");
    EXPECT_NE(a.finish(), b.finish());
}

TEST(TrailChain, FieldBoundariesCannotShift) {
    Hasher a(Tag::kSession), b(Tag::kSession);
    a.text("ab");
    a.text("c");
    b.text("a");
    b.text("bc");
    EXPECT_NE(a.finish(), b.finish());
}

TEST(TrailChain, TagsSeparateKindsOfRecord) {
    Hasher a(Tag::kSession), b(Tag::kStatement);
    EXPECT_NE(a.finish(), b.finish());
}

TEST(TrailChain, BatchDigestChainsThePreviousOne) {
    Digest groups[2] = {group_digest(sample_group()), Digest{}};
    Digest zero;
    Digest first = batch_digest(zero, 41, 42, groups, 2);
    Digest second = batch_digest(first, 43, 43, groups, 1);
    EXPECT_NE(second, batch_digest(zero, 43, 43, groups, 1));
    EXPECT_NE(first, batch_digest(zero, 41, 42, groups, 1));
    EXPECT_NE(first, batch_digest(zero, 41, 43, groups, 2));
    std::string x = "B\x02";
    x += std::string("\x01", 1) + std::string(32, '\0');
    x += std::string("\x01", 1) + le(41, 8);
    x += std::string("\x01", 1) + le(42, 8);
    x += std::string("\x01", 1) + le(2, 4);
    for (const Digest& g : groups)
        x += std::string("\x01", 1) + std::string(reinterpret_cast<const char*>(g.bytes), 32);
    EXPECT_EQ(first, sha256(x));
}

TEST(TrailChain, GroupEntriesRoundTrip) {
    Digest d = group_digest(sample_group());
    unsigned char buf[2 * kGroupEntrySize];
    group_entry(4096, d, buf);
    group_entry(1, Digest{}, buf + kGroupEntrySize);
    std::string_view entries(reinterpret_cast<const char*>(buf), sizeof buf);
    std::uint32_t count = 0;
    std::uint64_t prefix = 0;
    ASSERT_TRUE(read_group_entry(entries, 0, &count, &prefix));
    EXPECT_EQ(count, 4096u);
    EXPECT_EQ(prefix, digest_prefix(d));
    ASSERT_TRUE(read_group_entry(entries, 1, &count, &prefix));
    EXPECT_EQ(count, 1u);
    EXPECT_EQ(prefix, 0u);
    EXPECT_FALSE(read_group_entry(entries, 2, &count, &prefix));
    EXPECT_FALSE(read_group_entry(entries.substr(0, 15), 1, &count, &prefix));
}

TEST(TrailChain, HexRoundTripAndBadInput) {
    Digest d = group_digest(sample_group());
    char hex[65];
    to_hex(d, hex);
    EXPECT_EQ(std::string(hex).size(), 64u);
    Digest back;
    ASSERT_TRUE(from_hex(hex, &back));
    EXPECT_EQ(back, d);
    std::string upper(hex);
    for (char& c : upper) c = static_cast<char>(toupper(c));
    ASSERT_TRUE(from_hex(upper, &back));
    EXPECT_EQ(back, d);
    EXPECT_FALSE(from_hex(std::string(hex).substr(1), &back));
    EXPECT_FALSE(from_hex(std::string(hex) + "0", &back));
    std::string bad(hex);
    bad[10] = 'g';
    EXPECT_FALSE(from_hex(bad, &back));
    EXPECT_FALSE(from_hex("", &back));
}
