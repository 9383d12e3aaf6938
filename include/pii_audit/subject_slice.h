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
