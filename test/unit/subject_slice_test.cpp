// Merging subject index rows: a merge of small slices answers every probe as one slice built at
// once would (subject_slice.h).
#include "pii_audit/subject_slice.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <utility>

namespace {

using pii_audit::merge_slice_rows;
using pii_audit::slice_row_offsets;
using pii_audit::SliceRowPart;

// A row as the worker writes it: entries (hash, group id) of one bucket, relative to base.
std::string build_row(std::vector<std::pair<std::uint64_t, std::uint64_t>> entries,
                      std::uint64_t base) {
    std::vector<std::uint64_t> keys;
    for (auto [hash, group] : entries)
        keys.push_back((hash & 0xffffffffu) << 32 | (group - base));
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    std::string row;
    for (std::uint64_t k : keys)
        for (int half = 1; half >= 0; --half)
            for (int i = 0; i < 4; ++i)
                row.push_back(static_cast<char>((k >> (32 * half + 8 * i)) & 0xff));
    return row;
}

TEST(SubjectSlice, MergedSlicesAnswerAsOneSliceWould) {
    std::mt19937_64 rng(42);
    // 4 slices of 1,000 groups; hashes from a small pool so that people recur across slices.
    std::vector<std::uint64_t> people(300);
    for (auto& p : people) p = rng();
    std::vector<std::pair<std::uint64_t, std::uint64_t>> all;
    std::vector<SliceRowPart> parts;
    std::vector<std::string> rows;
    const std::uint64_t first = 5000;
    for (int s = 0; s < 4; ++s) {
        std::vector<std::pair<std::uint64_t, std::uint64_t>> entries;
        const std::uint64_t base = first + 1000 * s;
        for (int g = 0; g < 1000; ++g)
            for (int k = 0; k < 3; ++k) entries.push_back({people[rng() % people.size()], base + g});
        all.insert(all.end(), entries.begin(), entries.end());
        rows.push_back(build_row(entries, base));
    }
    for (int s = 0; s < 4; ++s) parts.push_back({rows[s], 1000u * s});
    std::string merged, why;
    ASSERT_TRUE(merge_slice_rows(parts, merged, &why)) << why;
    EXPECT_EQ(merged, build_row(all, first));
    for (std::uint64_t person : people) {
        std::vector<std::uint32_t> expected;
        for (auto [hash, group] : all)
            if (static_cast<std::uint32_t>(hash) == static_cast<std::uint32_t>(person))
                expected.push_back(static_cast<std::uint32_t>(group - first));
        std::sort(expected.begin(), expected.end());
        expected.erase(std::unique(expected.begin(), expected.end()), expected.end());
        EXPECT_EQ(slice_row_offsets(merged, person), expected);
    }
    EXPECT_TRUE(slice_row_offsets(merged, 0x123456789ull).empty());
}

TEST(SubjectSlice, DuplicatesAndEmptyParts) {
    std::string a = build_row({{7, 10}, {7, 11}}, 10);
    std::string merged, why;
    ASSERT_TRUE(merge_slice_rows({{a, 0}, {a, 0}, {"", 5}}, merged, &why)) << why;
    EXPECT_EQ(merged, a);
    ASSERT_TRUE(merge_slice_rows({}, merged, &why));
    EXPECT_TRUE(merged.empty());
}

TEST(SubjectSlice, DamagedRowsAndOverflowAreRefused) {
    std::string merged, why;
    EXPECT_FALSE(merge_slice_rows({{std::string_view("1234567", 7), 0}}, merged, &why));
    EXPECT_NE(why.find("not a multiple of 8"), std::string::npos) << why;
    std::string far = build_row({{1, 0xfffffff0u}}, 0);
    EXPECT_FALSE(merge_slice_rows({{far, 0x100}}, merged, &why));
    EXPECT_NE(why.find("2^32"), std::string::npos) << why;
}

}  // namespace
