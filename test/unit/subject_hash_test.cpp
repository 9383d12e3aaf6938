// Keyed subject hashes and distinct-subject counting.
#include "pii_audit/subject_hash.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

namespace {

using pii_audit::hmac_sha256;
using pii_audit::Sha256;
using pii_audit::SubjectHasher;
using pii_audit::SubjectSet;

std::string hex(const std::array<std::uint8_t, 32>& d) {
    std::string out;
    char buf[3];
    for (auto b : d) {
        snprintf(buf, sizeof buf, "%02x", b);
        out += buf;
    }
    return out;
}

std::string sha(std::string_view s) {
    Sha256 h;
    h.update(s.data(), s.size());
    return hex(h.finish());
}

// Every SHA-256 test runs twice: with the CPU's SHA extensions (where the machine has them) and
// with the portable code.
class Sha256Both : public testing::TestWithParam<bool> {
  protected:
    void SetUp() override { before_ = pii_audit::detail::sha256_use_cpu_extensions(GetParam()); }
    void TearDown() override { pii_audit::detail::sha256_use_cpu_extensions(before_); }
    bool before_ = false;
};
INSTANTIATE_TEST_SUITE_P(Sha256, Sha256Both, testing::Values(true, false),
                         [](const testing::TestParamInfo<bool>& info) {
                             return info.param ? "CpuExtensions" : "Portable";
                         });

TEST_P(Sha256Both, StandardVectors) {
    EXPECT_EQ(sha(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(sha("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    EXPECT_EQ(sha(std::string(1000000, 'a')),
              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_P(Sha256Both, SplitUpdatesMatchOneUpdate) {
    std::string text;
    for (int i = 0; i < 300; ++i) text += static_cast<char>('a' + i % 26);
    for (size_t cut = 0; cut <= text.size(); cut += 7) {
        Sha256 h;
        h.update(text.data(), cut);
        h.update(text.data() + cut, text.size() - cut);
        EXPECT_EQ(hex(h.finish()), sha(text)) << "cut at " << cut;
    }
}

TEST_P(Sha256Both, HmacRfc4231Vectors) {
    EXPECT_EQ(hex(hmac_sha256(std::string(20, '\x0b'), "Hi There")),
              "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    EXPECT_EQ(hex(hmac_sha256("Jefe", "what do ya want for nothing?")),
              "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    EXPECT_EQ(hex(hmac_sha256(std::string(131, '\xaa'),
                              "Test Using Larger Than Block-Size Key - Hash Key First")),
              "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

// The two implementations agree on every length around the block and padding boundaries.
TEST(Sha256, CpuExtensionsAndPortableCodeAgree) {
    std::vector<std::string> hardware, portable;
    for (bool use : {true, false}) {
        bool before = pii_audit::detail::sha256_use_cpu_extensions(use);
        std::vector<std::string>& out = use ? hardware : portable;
        std::string text;
        for (int n = 0; n < 300; ++n) {
            out.push_back(sha(text));
            text += static_cast<char>((n * 131 + 7) % 256);
        }
        pii_audit::detail::sha256_use_cpu_extensions(before);
    }
    EXPECT_EQ(hardware, portable);
}

// Identifiers of every length from empty to past two blocks: those that fit in the inner hash's
// final block take the one-compression path, the others the buffered one.
TEST_P(Sha256Both, TheSubjectHashIsTheFirstEightBytesOfTheHmac) {
    std::string key(32, '\0');
    for (int i = 0; i < 32; ++i) key[i] = static_cast<char>(i * 7 + 1);
    SubjectHasher hasher(key);
    ASSERT_TRUE(hasher.valid());
    for (size_t len = 0; len <= 140; ++len) {
        std::string id(len, '\0');
        for (size_t i = 0; i < len; ++i) id[i] = static_cast<char>('0' + (i * 31 + len) % 75);
        auto digest = hmac_sha256(key, id);
        std::uint64_t expected = 0;
        for (int i = 0; i < 8; ++i) expected = (expected << 8) | digest[i];
        EXPECT_EQ(static_cast<std::uint64_t>(hasher.hash(id)), expected) << "length " << len;
    }
}

// What a worker hands over, merged by the leader.
std::vector<unsigned char> image_of(const SubjectSet& set, bool compact) {
    std::vector<unsigned char> image(set.export_size(compact));
    set.export_to(image.data(), compact);
    return image;
}

std::set<std::int64_t> stored_set(const SubjectSet& set) {
    return std::set<std::int64_t>(set.stored().begin(), set.stored().end());
}

TEST(SubjectHasher, RefusesAKeyOfTheWrongSize) {
    EXPECT_FALSE(SubjectHasher("short").valid());
    EXPECT_FALSE(SubjectHasher(std::string(33, 'k')).valid());
    EXPECT_FALSE(SubjectHasher().valid());
}

TEST(SubjectHasher, DifferentKeysGiveDifferentHashes) {
    SubjectHasher a(std::string(32, 'a')), b(std::string(32, 'b'));
    EXPECT_NE(a.hash("13800138000"), b.hash("13800138000"));
    EXPECT_EQ(a.hash("13800138000"), a.hash("13800138000"));
}

TEST(SubjectSet, CountsDistinctAndKeepsThoseWithTheSmallestFingerprints) {
    SubjectHasher hasher(std::string(32, 'k'));
    SubjectSet set(&hasher, 3, 1000), reversed(&hasher, 3, 1000);
    std::vector<std::string> ids = {"a", "b", "c", "d", "e"};
    for (int round = 0; round < 3; ++round)
        for (const std::string& id : ids) set.add(id);
    for (auto it = ids.rbegin(); it != ids.rend(); ++it) reversed.add(*it);
    EXPECT_EQ(set.count(), 5u);
    EXPECT_FALSE(set.estimated());
    EXPECT_TRUE(set.truncated());
    ASSERT_EQ(set.stored().size(), 3u);
    std::sort(ids.begin(), ids.end(), [](const std::string& x, const std::string& y) {
        return pii_audit::hash_bytes(x) < pii_audit::hash_bytes(y);
    });
    std::set<std::int64_t> smallest = {hasher.hash(ids[0]), hasher.hash(ids[1]), hasher.hash(ids[2])};
    EXPECT_EQ(std::set<std::int64_t>(set.stored().begin(), set.stored().end()), smallest);
    // The same subjects are kept whatever order the rows came in.
    EXPECT_EQ(std::set<std::int64_t>(reversed.stored().begin(), reversed.stored().end()), smallest);
}

// Against a plain reference, around where the set's storage changes (its first fingerprints
// and kept hashes live inline, more move to the heap): every count of distinct subjects up to
// 80, read twice, in an order that mixes repeats in, for store limits around those points. The
// same set exported and merged into an empty one must come out the same.
TEST(SubjectSet, MatchesAReferenceAroundItsStorageThresholds) {
    SubjectHasher hasher(std::string(32, 'k'));
    for (size_t limit : {0, 1, 3, 4, 5, 15, 16, 17, 40}) {
        for (int distinct = 0; distinct <= 80; ++distinct) {
            SubjectSet set(&hasher, limit, 1000);
            std::vector<std::pair<std::uint64_t, std::int64_t>> reference;
            for (int round = 0; round < 2; ++round)
                for (int i = 0; i < distinct; ++i) {
                    std::string id = "person-" + std::to_string((i * 7919 + round) % distinct);
                    set.add(id);
                    reference.emplace_back(pii_audit::hash_bytes(id), hasher.hash(id));
                }
            std::sort(reference.begin(), reference.end());
            reference.erase(std::unique(reference.begin(), reference.end()), reference.end());
            std::set<std::int64_t> kept;
            for (size_t i = 0; i < std::min(limit, reference.size()); ++i)
                kept.insert(reference[i].second);
            SCOPED_TRACE("limit " + std::to_string(limit) + ", distinct " + std::to_string(distinct));
            ASSERT_EQ(set.count(), static_cast<std::uint64_t>(distinct));
            EXPECT_EQ(set.truncated(), static_cast<size_t>(distinct) > limit);
            EXPECT_EQ(stored_set(set), kept);
            EXPECT_EQ(set.stored().size(), kept.size());
            SubjectSet merged(&hasher, limit, 1000);
            ASSERT_TRUE(merged.merge(image_of(set, false).data(), set.export_size(false)));
            EXPECT_EQ(merged.count(), set.count());
            EXPECT_EQ(stored_set(merged), kept);
        }
    }
}

TEST(SubjectSet, NothingReadIsZeroAndNotTruncated) {
    SubjectHasher hasher(std::string(32, 'k'));
    SubjectSet set(&hasher, 10, 100);
    EXPECT_EQ(set.count(), 0u);
    EXPECT_FALSE(set.truncated());
    EXPECT_TRUE(set.stored().empty());
}

TEST(SubjectSet, WithoutAValidKeyCountsButStoresNothing) {
    SubjectHasher none;
    SubjectSet set(&none, 10, 100);
    set.add("a");
    set.add("b");
    EXPECT_EQ(set.count(), 2u);
    EXPECT_TRUE(set.stored().empty());
}

TEST(SubjectSet, ExactForAMillionDistinctSubjects) {
    SubjectHasher hasher(std::string(32, 'k'));
    SubjectSet set(&hasher, 1000, 4u << 20);
    for (int i = 1; i <= 1000000; ++i) set.add(std::to_string(i));
    for (int i = 1; i <= 1000; ++i) set.add(std::to_string(i));  // repeats
    EXPECT_EQ(set.count(), 1000000u);
    EXPECT_FALSE(set.estimated());
    EXPECT_EQ(set.stored().size(), 1000u);
    std::set<std::int64_t> unique(set.stored().begin(), set.stored().end());
    EXPECT_EQ(unique.size(), 1000u);
    EXPECT_LE(set.memory_bytes(), 40u << 20);
}

TEST(SubjectSet, PastTheExactLimitMemoryStopsGrowingAndTheCountIsAnEstimate) {
    SubjectHasher hasher(std::string(32, 'k'));
    SubjectSet set(&hasher, 100, 10000);
    for (int i = 0; i < 300000; ++i) set.add("subject-" + std::to_string(i));
    EXPECT_TRUE(set.estimated());
    EXPECT_TRUE(set.truncated());
    EXPECT_LE(set.memory_bytes(), 64u * 1024);
    double ratio = static_cast<double>(set.count()) / 300000.0;
    EXPECT_GT(ratio, 0.95);
    EXPECT_LT(ratio, 1.05);
}

TEST(SubjectSetMerge, TheUnionOfPartsIsTheWholeSet) {
    SubjectHasher hasher(std::string(32, 'k'));
    SubjectSet whole(&hasher, 100, 1000), leader(&hasher, 100, 1000), a(&hasher, 100, 1000),
        b(&hasher, 100, 1000);
    for (int i = 0; i < 60; ++i) {
        std::string id = std::to_string(i);
        whole.add(id);
        (i % 3 == 0 ? leader : i % 3 == 1 ? a : b).add(id);
        if (i % 5 == 0) b.add(id);  // rows seen by two participants count once
    }
    ASSERT_TRUE(leader.merge(image_of(a, false).data(), a.export_size(false)));
    ASSERT_TRUE(leader.merge(image_of(b, false).data(), b.export_size(false)));
    EXPECT_EQ(leader.count(), 60u);
    EXPECT_FALSE(leader.estimated());
    EXPECT_FALSE(leader.truncated());
    EXPECT_EQ(stored_set(leader), stored_set(whole));
}

TEST(SubjectSetMerge, PastTheStoreLimitTheUnionKeepsWhatOneSetWould) {
    SubjectHasher hasher(std::string(32, 'k'));
    SubjectSet leader(&hasher, 10, 100000), a(&hasher, 10, 100000), b(&hasher, 10, 100000);
    for (int i = 0; i < 5; ++i) leader.add("l" + std::to_string(i));
    for (int i = 0; i < 50; ++i) a.add("a" + std::to_string(i));
    for (int i = 0; i < 50; ++i) b.add("b" + std::to_string(i));
    ASSERT_TRUE(leader.merge(image_of(a, false).data(), a.export_size(false)));
    ASSERT_TRUE(leader.merge(image_of(b, false).data(), b.export_size(false)));
    EXPECT_EQ(leader.count(), 105u);
    EXPECT_TRUE(leader.truncated());
    // The merged set keeps what one set fed every row would have kept.
    SubjectSet whole(&hasher, 10, 100000);
    for (int i = 0; i < 50; ++i) whole.add("b" + std::to_string(i));
    for (int i = 0; i < 50; ++i) whole.add("a" + std::to_string(i));
    for (int i = 0; i < 5; ++i) whole.add("l" + std::to_string(i));
    EXPECT_EQ(stored_set(leader), stored_set(whole));
    EXPECT_EQ(stored_set(leader).size(), 10u);
}

TEST(SubjectSetMerge, ACompactImageMakesAnEstimateThatNeverCountsLess) {
    SubjectHasher hasher(std::string(32, 'k'));
    SubjectSet leader(&hasher, 10, 100000), a(&hasher, 10, 100000);
    for (int i = 0; i < 3000; ++i) a.add(std::to_string(i));
    for (int i = 2000; i < 4000; ++i) leader.add(std::to_string(i));
    ASSERT_TRUE(leader.merge(image_of(a, true).data(), a.export_size(true)));
    EXPECT_TRUE(leader.estimated());
    EXPECT_GE(leader.count(), 3000u);
    double ratio = static_cast<double>(leader.count()) / 4000.0;
    EXPECT_GT(ratio, 0.95);
    EXPECT_LT(ratio, 1.05);
}

TEST(SubjectSetMerge, MergingPastTheExactLimitSwitchesToAnEstimate) {
    SubjectHasher hasher(std::string(32, 'k'));
    SubjectSet leader(&hasher, 10, 5000), a(&hasher, 10, 5000), b(&hasher, 10, 5000);
    for (int i = 0; i < 4000; ++i) a.add("a" + std::to_string(i));
    for (int i = 0; i < 4000; ++i) b.add("b" + std::to_string(i));
    ASSERT_TRUE(leader.merge(image_of(a, false).data(), a.export_size(false)));
    EXPECT_FALSE(leader.estimated());
    ASSERT_TRUE(leader.merge(image_of(b, false).data(), b.export_size(false)));
    EXPECT_TRUE(leader.estimated());
    EXPECT_LE(leader.memory_bytes(), 64u * 1024);
    double ratio = static_cast<double>(leader.count()) / 8000.0;
    EXPECT_GT(ratio, 0.95);
    EXPECT_LT(ratio, 1.05);
}

TEST(SubjectSetMerge, RefusesAMalformedImage) {
    SubjectHasher hasher(std::string(32, 'k'));
    SubjectSet leader(&hasher, 10, 100), a(&hasher, 10, 100);
    a.add("x");
    auto image = image_of(a, false);
    EXPECT_FALSE(leader.merge(image.data(), image.size() - 1));
    EXPECT_FALSE(leader.merge(image.data(), 4));
    EXPECT_EQ(leader.count(), 0u);
}

TEST(SubjectFingerprint, SpreadsSimilarKeys) {
    std::set<std::uint64_t> seen;
    for (int i = 0; i < 200000; ++i) seen.insert(pii_audit::hash_bytes(std::to_string(i)));
    EXPECT_EQ(seen.size(), 200000u);
    EXPECT_NE(pii_audit::hash_bytes(""), pii_audit::hash_bytes(std::string(1, '\0')));
}

}  // namespace
