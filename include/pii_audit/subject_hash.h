// Subject identities: which people's rows a statement read, without storing who they are.
//
// Each subject identifier (the text of a subject_key column) is stored as the first 8 bytes of
// HMAC-SHA-256(key, identifier), big-endian, as a signed 64-bit integer. The key is the
// server's secret; without it a stored hash cannot be tested against guessed identifiers.
//
// While a statement runs, SubjectSet counts distinct subjects exactly with a cheap unkeyed
// fingerprint per row (hash_bytes, never stored), and keeps the keyed hashes of `store_limit`
// subjects: those with the smallest fingerprints (a bottom-k sample), so which subjects are kept
// depends only on the set read, not on the order rows came in (serial or parallel plans keep the
// same ones). Past a memory bound it switches to a HyperLogLog estimate and says so.
//
// A set can be exported as a flat byte image and merged into another set (parallel workers hand
// their subjects to the leader): the union counts as one set fed every row would, and keeps the
// keyed hashes that came with the subjects it first learned about.
#pragma once

#include "pii_audit/pg_free.h"
#include "pii_audit/sketches.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

namespace pii_audit {

// SHA-256 (FIPS 180-4) and HMAC (RFC 2104) over it.
class Sha256 {
public:
    Sha256() noexcept { reset(); }
    void reset() noexcept;
    void update(const void* data, size_t len) noexcept;
    std::array<std::uint8_t, 32> finish() noexcept;
    // The digest, as eight words, of what was absorbed followed by `data` as the message's end,
    // without changing this hash. One compression and no buffering: for the keyed subject hash,
    // whose identifiers are short. False (and nothing done) if something is buffered or `data`
    // does not fit in the final block (more than 55 bytes).
    bool finish_short(const void* data, size_t len, std::uint32_t digest[8]) const noexcept;

private:
    void compress(const std::uint8_t* block) noexcept { compress(state_, block); }
    static void compress(std::uint32_t state[8], const std::uint8_t* block) noexcept;
    std::uint32_t state_[8];
    std::uint8_t buffer_[64];
    size_t buffered_ = 0;
    std::uint64_t total_ = 0;
};

std::array<std::uint8_t, 32> hmac_sha256(std::string_view key, std::string_view message) noexcept;

namespace detail {
// SHA-256 uses the CPU's SHA extensions when it has them. Tests switch them off (false) to
// check the portable code too; returns whether they were in use before.
bool sha256_use_cpu_extensions(bool enable) noexcept;
}  // namespace detail

inline constexpr size_t kSubjectKeyBytes = 32;

// HMAC-SHA-256 with the key's inner and outer pads absorbed once.
class SubjectHasher {
public:
    SubjectHasher() noexcept = default;
    explicit SubjectHasher(std::string_view key) noexcept;
    bool valid() const noexcept { return valid_; }
    std::int64_t hash(std::string_view identifier) const noexcept;

private:
    Sha256 inner_, outer_;
    bool valid_ = false;
};

// Distinct subjects of one relation within one statement. Not thread-safe; allocation failure
// surfaces as std::bad_alloc, so callers wrap it.
class SubjectSet {
public:
    // store_limit: keyed hashes kept (pii_audit.max_subjects_per_event); exact_limit: distinct
    // subjects counted exactly before the count becomes an estimate.
    SubjectSet(const SubjectHasher* hasher, size_t store_limit, size_t exact_limit);

    void add(std::string_view identifier);

    // The kept keyed hashes, valid until the set changes.
    class Kept {
    public:
        Kept(const std::int64_t* data, size_t size) noexcept : data_(data), size_(size) {}
        const std::int64_t* data() const noexcept { return data_; }
        size_t size() const noexcept { return size_; }
        bool empty() const noexcept { return size_ == 0; }
        const std::int64_t* begin() const noexcept { return data_; }
        const std::int64_t* end() const noexcept { return data_ + size_; }

    private:
        const std::int64_t* data_;
        size_t size_;
    };

    std::uint64_t count() const noexcept;
    bool estimated() const noexcept { return hll_ != nullptr; }
    bool truncated() const noexcept { return count() > nkept_; }
    Kept stored() const noexcept { return Kept(kept_hashes(), nkept_); }
    // Bytes of heap memory held (for tests and limits).
    size_t memory_bytes() const noexcept;

    // The flat image: every fingerprint (exact) or, when compact or estimated, the 16 kB
    // HyperLogLog registers (merging a compact image makes the receiver an estimate). Either way
    // with the stored keyed hashes and their fingerprints. Position-independent, 8-byte aligned.
    size_t export_size(bool compact) const noexcept;
    void export_to(void* out, bool compact) const noexcept;
    // Adds an exported set. False (and nothing added) if the image is malformed; throws
    // std::bad_alloc like add().
    bool merge(const void* image, size_t size);

private:
    bool insert_fingerprint(std::uint64_t fp);
    void grow();
    void grow_kept();
    // Calls fn(fingerprint) for every fingerprint in the table (not the zero one, kept apart).
    template <typename Fn>
    void each_fingerprint(Fn&& fn) const {
        const std::uint64_t* table = slots();
        for (size_t at = 0, n = nslots(); at < n; ++at)
            if (table[at] != 0) fn(table[at]);
    }
    // The fingerprint table: inline until it outgrows kInlineSlots, then table_.
    std::uint64_t* slots() noexcept { return table_.empty() ? inline_slots_ : table_.data(); }
    const std::uint64_t* slots() const noexcept {
        return table_.empty() ? inline_slots_ : table_.data();
    }
    size_t nslots() const noexcept { return table_.empty() ? kInlineSlots : table_.size(); }
    // The kept subjects: inline until more than kInlineKept are kept, then the vectors.
    bool kept_inline() const noexcept { return kept_capacity_ <= kInlineKept; }
    std::int64_t* kept_hashes() noexcept {
        return kept_inline() ? inline_hashes_ : stored_.data();
    }
    const std::int64_t* kept_hashes() const noexcept {
        return kept_inline() ? inline_hashes_ : stored_.data();
    }
    std::uint64_t* kept_fingerprints() noexcept {
        return kept_inline() ? inline_kept_fingerprints_ : stored_fingerprints_.data();
    }
    const std::uint64_t* kept_fingerprints() const noexcept {
        return kept_inline() ? inline_kept_fingerprints_ : stored_fingerprints_.data();
    }
    void switch_to_estimate();
    // Offers a subject to the kept hashes (a max-heap on fingerprint); make_hash() runs only if
    // it is kept. known_new: the subject is certainly not kept yet.
    template <typename MakeHash>
    void keep(std::uint64_t fp, MakeHash&& make_hash, bool known_new);
    bool kept(std::uint64_t fp) const noexcept;
    void sift_up(size_t i) noexcept;
    void sift_down(size_t i) noexcept;

    const SubjectHasher* hasher_;
    size_t store_limit_;
    size_t exact_limit_;
    // A statement usually reads one subject or a few: those cost no allocation (a point lookup
    // would otherwise allocate three times and free three times per statement).
    static constexpr size_t kInlineSlots = 16;
    static constexpr size_t kInlineKept = 4;
    std::uint64_t inline_slots_[kInlineSlots] = {};
    std::vector<std::uint64_t> table_;  // open addressing; 0 marks an empty slot
    size_t distinct_ = 0;
    bool zero_seen_ = false;            // fingerprint 0 is kept out of the table
    std::unique_ptr<HyperLogLog<14>> hll_;  // once exact counting stopped (16 kB)
    std::uint64_t floor_ = 0;               // distinct subjects known for certain once estimating
    // Kept keyed hashes and their fingerprints, a max-heap on the fingerprint; nkept_ of
    // kept_capacity_ places used, inline or in the vectors (sized to the capacity).
    size_t nkept_ = 0;
    size_t kept_capacity_ = kInlineKept;
    std::int64_t inline_hashes_[kInlineKept] = {};
    std::uint64_t inline_kept_fingerprints_[kInlineKept] = {};
    std::vector<std::int64_t> stored_;
    std::vector<std::uint64_t> stored_fingerprints_;
};

}  // namespace pii_audit
