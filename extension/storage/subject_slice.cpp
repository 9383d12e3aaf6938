// Merging and probing subject index rows (see subject_slice.h).
#include "pii_audit/subject_slice.h"

#include <algorithm>
#include <limits>

namespace pii_audit {
namespace {

std::uint32_t load_u32(const char* p) {
    const auto* b = reinterpret_cast<const unsigned char*>(p);
    return static_cast<std::uint32_t>(b[0]) | static_cast<std::uint32_t>(b[1]) << 8 |
           static_cast<std::uint32_t>(b[2]) << 16 | static_cast<std::uint32_t>(b[3]) << 24;
}

void store_u32(std::string& out, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace

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
            const std::uint64_t offset = load_u32(part.entries.data() + at + 4) + part.shift;
            if (part.shift > kMaxOffset || offset > kMaxOffset) {
                if (why != nullptr)
                    *why = "a merged slice would span more than 2^32 event ids";
                return false;
            }
            keys.push_back(static_cast<std::uint64_t>(load_u32(part.entries.data() + at)) << 32 |
                           offset);
        }
    }
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    out.clear();
    out.reserve(keys.size() * kSliceEntryBytes);
    for (std::uint64_t key : keys) {
        store_u32(out, static_cast<std::uint32_t>(key >> 32));
        store_u32(out, static_cast<std::uint32_t>(key));
    }
    return true;
}

std::vector<std::uint32_t> slice_row_offsets(std::string_view entries, std::uint64_t hash) {
    std::vector<std::uint32_t> found;
    const std::uint32_t want = static_cast<std::uint32_t>(hash);
    const std::size_t n = entries.size() / kSliceEntryBytes;
    std::size_t lo = 0, hi = n;
    while (lo < hi) {  // the first entry whose hash bits are >= want
        std::size_t mid = lo + (hi - lo) / 2;
        if (load_u32(entries.data() + mid * kSliceEntryBytes) < want)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (std::size_t i = lo; i < n && load_u32(entries.data() + i * kSliceEntryBytes) == want; ++i)
        found.push_back(load_u32(entries.data() + i * kSliceEntryBytes + 4));
    return found;
}

}  // namespace pii_audit
