// Hashing and distinct counting shared by capture (subject sets) and the insider scorer.
// PostgreSQL-free and header-only.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "pii_audit/pg_free.h"

namespace pii_audit {

// splitmix64's finaliser: spreads every input bit over the whole word.
inline std::uint64_t mix64(std::uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

// Hash for short strings (subject ids, names): 8 bytes per mixing round, length folded in so
// that "a" and "a\0" differ.
inline std::uint64_t hash_bytes(std::string_view s, std::uint64_t seed = 0) {
    std::uint64_t h = seed ^ (static_cast<std::uint64_t>(s.size()) * 0x9e3779b97f4a7c15ULL);
    const char* p = s.data();
    std::size_t n = s.size();
    while (n >= 8) {
        std::uint64_t w;
        std::memcpy(&w, p, 8);
        h = mix64(h ^ w);
        p += 8;
        n -= 8;
    }
    std::uint64_t w = 0;
    if (n > 0) std::memcpy(&w, p, n);
    return mix64(h ^ w ^ (static_cast<std::uint64_t>(n) << 59));
}

// HyperLogLog distinct counter with 2^P one-byte registers. The harmonic sum is kept up to date
// on every change so that estimate() is O(1): the scorer asks for it after each new subject.
template <int P>
class HyperLogLog {
  public:
    static constexpr int kRegisters = 1 << P;

    // Returns true if a register grew, i.e. the estimate may have changed.
    bool add(std::uint64_t hash) {
        const std::uint32_t index = static_cast<std::uint32_t>(hash >> (64 - P));
        const std::uint64_t rest = (hash << P) | (std::uint64_t{1} << (P - 1));
        const std::uint8_t rank = static_cast<std::uint8_t>(__builtin_clzll(rest) + 1);
        std::uint8_t& reg = registers_[index];
        if (rank <= reg) return false;
        if (reg == 0) --zeros_;
        inverse_sum_ += inverse_power(rank) - inverse_power(reg);
        reg = rank;
        return true;
    }

    void merge(const HyperLogLog& other) {
        for (int i = 0; i < kRegisters; ++i) {
            if (other.registers_[i] > registers_[i]) registers_[i] = other.registers_[i];
        }
        recompute();
    }

    void clear() { *this = HyperLogLog(); }

    double estimate() const {
        constexpr double m = kRegisters;
        constexpr double alpha = P == 4   ? 0.673
                                 : P == 5 ? 0.697
                                 : P == 6 ? 0.709
                                          : 0.7213 / (1 + 1.079 / m);
        // Linear counting is more precise, and the raw estimate biased upwards, until only a
        // few registers (1 in 20, i.e. about 3 items per register) are still empty.
        if (zeros_ * 20 >= kRegisters) return m * std::log(m / zeros_);
        return alpha * m * m / inverse_sum_;
    }

    bool empty() const { return zeros_ == kRegisters; }

  private:
    static double inverse_power(int rank) {
        // 2^-rank without a libm call; rank is at most 64 - P + 1.
        std::uint64_t bits = static_cast<std::uint64_t>(1023 - rank) << 52;
        double d;
        std::memcpy(&d, &bits, sizeof d);
        return d;
    }
    void recompute() {
        zeros_ = 0;
        inverse_sum_ = 0;
        for (std::uint8_t r : registers_) {
            if (r == 0) ++zeros_;
            inverse_sum_ += inverse_power(r);
        }
    }

    std::array<std::uint8_t, kRegisters> registers_{};
    double inverse_sum_ = kRegisters;
    std::uint32_t zeros_ = kRegisters;
};

}  // namespace pii_audit
