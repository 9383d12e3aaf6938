// Rows of the subject index (pii_audit.trail_subject_index). A slice covers the groups with ids
// from its first_event_id; per bucket (the top bucket_bits bits of a subject hash) one row holds
// 8-byte entries: the hash's low 32 bits, then the group's first_event_id minus the slice's,
// both little-endian, sorted by (hash bits, offset), without duplicates.
//
// Slices are written small by the worker (level 0) and merged later, fanout at a time, into
// slices of the next level (pii_audit._compact_subject_index): the rows of one bucket are
// concatenated with their offsets moved to the merged slice's start and sorted again. The bucket
// bits stay those of the merged slices, so a merge never needs the groups' full hashes.
//
// PostgreSQL-free: the SQL functions read and merge rows, unit tests check both.
#pragma once

#include "pii_audit/pg_free.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pii_audit {

inline constexpr std::size_t kSliceEntryBytes = 8;

// One entry's bytes: the hash's low 32 bits, then the offset, both little-endian.
inline void put_slice_entry(char* out, std::uint32_t low, std::uint32_t offset) noexcept {
    for (int b = 0; b < 4; ++b) {
        out[b] = static_cast<char>((low >> (8 * b)) & 0xff);
        out[4 + b] = static_cast<char>((offset >> (8 * b)) & 0xff);
    }
}
inline std::uint32_t slice_u32(const char* p) noexcept {
    const auto* b = reinterpret_cast<const unsigned char*>(p);
    return static_cast<std::uint32_t>(b[0]) | static_cast<std::uint32_t>(b[1]) << 8 |
           static_cast<std::uint32_t>(b[2]) << 16 | static_cast<std::uint32_t>(b[3]) << 24;
}
inline std::uint32_t slice_entry_low(const char* entry) noexcept { return slice_u32(entry); }
inline std::uint32_t slice_entry_offset(const char* entry) noexcept { return slice_u32(entry + 4); }

// Calls visit(offset) for each offset a row holds for the hash's low 32 bits, in order (binary
// search; allocates nothing, so that a caller may visit into PostgreSQL's memory).
template <class Visit>
void for_each_slice_row_offset(std::string_view entries, std::uint64_t hash, Visit&& visit) {
    const std::uint32_t want = static_cast<std::uint32_t>(hash);
    const std::size_t n = entries.size() / kSliceEntryBytes;
    const char* data = entries.data();
    std::size_t lo = 0, hi = n;
    while (lo < hi) {  // the first entry whose hash bits are >= want
        const std::size_t mid = lo + (hi - lo) / 2;
        if (slice_entry_low(data + mid * kSliceEntryBytes) < want)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (std::size_t i = lo; i < n && slice_entry_low(data + i * kSliceEntryBytes) == want; ++i)
        visit(slice_entry_offset(data + i * kSliceEntryBytes));
}

// One bucket row of one of the slices merged, with the distance from the merged slice's first
// event id to its slice's.
struct SliceRowPart {
    std::string_view entries;
    std::uint64_t shift = 0;
};

// The merged row (entries as above) of parts, or false with the reason in *why: a part whose
// length is not a multiple of 8, or an offset that would not fit in 32 bits.
bool merge_slice_rows(const std::vector<SliceRowPart>& parts, std::string& out, std::string* why);

// The offsets a row holds for the hash's low 32 bits, in order (binary search).
std::vector<std::uint32_t> slice_row_offsets(std::string_view entries, std::uint64_t hash);

}  // namespace pii_audit
