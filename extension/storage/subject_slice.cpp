// Merging and probing subject index rows (see subject_slice.h).
#include "pii_audit/subject_slice.h"

#include <algorithm>
#include <limits>

namespace pii_audit {
bool merge_slice_rows(const std::vector<SliceRowPart>& parts, std::string& out, std::string* why) {
    std::size_t total = 0;
    for (const SliceRowPart& part : parts) {
        if (part.entries.size() % kSliceEntryBytes != 0) {
            if (why != nullptr)
                *why = "a row of the subject index is damaged (" +
                       std::to_string(part.entries.size()) + " bytes, not a multiple of 8)";
            return false;
        }
        total += part.entries.size() / kSliceEntryBytes;
    }
    // (hash bits << 32 | offset): one integer sort gives the row's order.
    std::vector<std::uint64_t> keys;
    keys.reserve(total);
    constexpr std::uint64_t kMaxOffset = std::numeric_limits<std::uint32_t>::max();
    for (const SliceRowPart& part : parts) {
        for (std::size_t at = 0; at < part.entries.size(); at += kSliceEntryBytes) {
            const std::uint64_t offset = slice_entry_offset(part.entries.data() + at) + part.shift;
            if (part.shift > kMaxOffset || offset > kMaxOffset) {
                if (why != nullptr)
                    *why = "a merged slice would span more than 2^32 event ids";
                return false;
            }
            keys.push_back(static_cast<std::uint64_t>(slice_entry_low(part.entries.data() + at)) << 32 |
                           offset);
        }
    }
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    out.resize(keys.size() * kSliceEntryBytes);
    char* at = out.data();
    for (std::uint64_t key : keys) {
        put_slice_entry(at, static_cast<std::uint32_t>(key >> 32), static_cast<std::uint32_t>(key));
        at += kSliceEntryBytes;
    }
    return true;
}

std::vector<std::uint32_t> slice_row_offsets(std::string_view entries, std::uint64_t hash) {
    std::vector<std::uint32_t> found;
    for_each_slice_row_offset(entries, hash, [&](std::uint32_t offset) { found.push_back(offset); });
    return found;
}

}  // namespace pii_audit
