#include "pii_audit/analysis/sketches.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace pii_audit::analysis {
namespace {

TEST(HyperLogLog, SmallCountsAreNearlyExact) {
    HyperLogLog<8> hll;
    EXPECT_EQ(hll.estimate(), 0);
    for (int i = 0; i < 14; ++i) hll.add(hash_bytes("subject-" + std::to_string(i)));
    hll.add(hash_bytes("subject-3"));  // a repeat does not count
    EXPECT_EQ(std::lround(hll.estimate()), 14);
}

TEST(HyperLogLog, LargeCountsWithinExpectedError) {
    HyperLogLog<7> hll;
    for (int i = 0; i < 25000; ++i) hll.add(hash_bytes("m" + std::to_string(i)));
    // Standard error 1.04/sqrt(128) = 9.2%; allow three of them.
    EXPECT_NEAR(hll.estimate(), 25000, 25000 * 0.28);
}

TEST(HyperLogLog, MergeIsUnion) {
    HyperLogLog<8> a, b;
    for (int i = 0; i < 100; ++i) a.add(hash_bytes("x" + std::to_string(i)));
    for (int i = 50; i < 150; ++i) b.add(hash_bytes("x" + std::to_string(i)));
    a.merge(b);
    EXPECT_NEAR(a.estimate(), 150, 15);
}

TEST(DecayingHistogram, QuantilesOfSmallIntegers) {
    DecayingHistogram h;
    for (int i = 0; i < 98; ++i) h.add(0);
    h.add(1);
    h.add(3);
    EXPECT_EQ(h.quantile(0.5), 0);
    EXPECT_NEAR(h.quantile(0.99), 1, 0.4);
    EXPECT_NEAR(h.fraction_at_least(1), 0.02, 1e-6);
}

TEST(DecayingHistogram, QuantileTracksMagnitude) {
    DecayingHistogram h;
    for (int i = 1; i <= 1000; ++i) h.add(i);
    EXPECT_NEAR(h.quantile(0.5), 500, 500 * 0.2);
    EXPECT_NEAR(h.quantile(0.99), 990, 990 * 0.2);
}

TEST(DecayingHistogram, DecayForgetsOldBehaviour) {
    DecayingHistogram h;
    for (int i = 0; i < 50; ++i) h.add(100);
    for (int i = 0; i < 200; ++i) {
        h.decay(0.97f);
        h.add(5);
    }
    EXPECT_NEAR(h.quantile(0.99), 5, 1.5);
}

TEST(EwMeanVar, ConstantGapsHaveNoVariance) {
    EwMeanVar s;
    for (int i = 0; i < 100; ++i) s.add(4.0, 0.05);
    EXPECT_NEAR(s.mean, 4.0, 1e-5);
    EXPECT_NEAR(s.variance, 0, 1e-5);
    for (int i = 0; i < 100; ++i) s.add(i % 2 ? 1.0 : 7.0, 0.05);
    EXPECT_NEAR(std::sqrt(s.variance), 3.0, 0.5);
}

TEST(HashBytes, LengthMatters) {
    EXPECT_NE(hash_bytes(std::string_view("a", 1)), hash_bytes(std::string_view("a\0", 2)));
    EXPECT_NE(hash_bytes("12345678"), hash_bytes("123456789"));
}

}  // namespace
}  // namespace pii_audit::analysis
