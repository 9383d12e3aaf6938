// Subject identities: which people's rows a statement read, without storing who they are.
//
// Each subject identifier (the text of a subject_key column) is stored as the first 8 bytes of
// HMAC-SHA-256(key, identifier), big-endian, as a signed 64-bit integer. The key is the
// server's secret; without it a stored hash cannot be tested against guessed identifiers.
//
// While a statement runs, SubjectSet counts distinct subjects exactly with a cheap unkeyed
// fingerprint per row (hash_bytes, never stored), and computes the keyed hash only for the first `store_limit` distinct
// subjects it keeps. Past a memory bound it switches to a HyperLogLog estimate and says so.
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

private:
    void compress(const std::uint8_t* block) noexcept;
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

    std::uint64_t count() const noexcept;
    bool estimated() const noexcept { return hll_ != nullptr; }
    bool truncated() const noexcept { return count() > stored_.size(); }
    const std::vector<std::int64_t>& stored() const noexcept { return stored_; }
    // Bytes of heap memory held (for tests and limits).
    size_t memory_bytes() const noexcept;

private:
    bool insert_fingerprint(std::uint64_t fp);
    void grow();
    void switch_to_estimate();

    const SubjectHasher* hasher_;
    size_t store_limit_;
    size_t exact_limit_;
    std::vector<std::uint64_t> table_;  // open addressing; 0 marks an empty slot
    size_t distinct_ = 0;
    bool zero_seen_ = false;            // fingerprint 0 is kept out of the table
    std::unique_ptr<HyperLogLog<14>> hll_;  // once exact counting stopped (16 kB)
    std::vector<std::int64_t> stored_;
};

}  // namespace pii_audit
