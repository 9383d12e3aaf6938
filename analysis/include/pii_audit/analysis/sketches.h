// Small fixed-size summaries the scorer keeps per actor and per peer group. Every type here is
// trivially copyable and allocation-free, so an actor's whole state has a size known at compile
// time and can be saved and restored byte for byte.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "pii_audit/pg_free.h"

namespace pii_audit::analysis {

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

    double estimate() const;

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

// Distribution of a non-negative quantity on a log scale (BinsPerOctave bins per octave of
// value+1, so 0 has its own bin and small integers are nearly exact), with exponential forgetting
// so that norms follow slow changes in work. Values beyond the range share the last bin.
template <int BinsPerOctave, int Bins>
class DecayingHistogramT {
  public:
    static constexpr int kBins = Bins;

    void add(double value, float weight = 1.0f) {
        weights_[bin_of(value)] += weight;
        total_ += weight;
    }
    void decay(float factor) {
        for (float& w : weights_) w *= factor;
        total_ *= factor;
    }
    double total() const { return total_; }

    // The value below which a fraction q of the weight lies (linear within a bin); 0 if empty.
    double quantile(double q) const {
        if (total_ <= 0) return 0;
        const double target = q * total_;
        double cumulative = 0;
        for (int b = 0; b < Bins; ++b) {
            const double w = weights_[b];
            if (w <= 0) continue;
            if (cumulative + w >= target) {
                if (b == 0) return 0;  // the zero bin holds (nearly) exact zeros
                double within = (target - cumulative) / w;
                within = within < 0 ? 0 : within > 1 ? 1 : within;
                const double lo = bin_lower(b);
                return lo + within * (bin_lower(b + 1) - lo);
            }
            cumulative += w;
        }
        return bin_lower(Bins - 1);
    }

    // Weighted fraction of observations >= value (at bin resolution).
    double fraction_at_least(double value) const {
        if (total_ <= 0) return 0;
        double above = 0;
        for (int b = bin_of(value); b < Bins; ++b) above += weights_[b];
        return above / total_;
    }

    static int bin_of(double value) {
        if (!(value > 0)) return 0;
        const int bin = static_cast<int>(std::log2(value + 1) * BinsPerOctave);
        return bin < Bins - 1 ? bin : Bins - 1;
    }
    static double bin_lower(int bin) {
        return std::exp2(static_cast<double>(bin) / BinsPerOctave) - 1;
    }

  private:
    std::array<float, Bins> weights_{};
    float total_ = 0;
};

// Per actor: 4 bins per octave up to ~260,000 (288 bytes).
using DecayingHistogram = DecayingHistogramT<4, 72>;
// Per peer group, where a few bytes more buy sharper percentiles: 8 per octave, same range.
using FineHistogram = DecayingHistogramT<8, 144>;

// Exponentially weighted mean and variance. The first observations are averaged plainly (the
// weight is 1/n until it reaches alpha) so a short history is not dominated by its first value.
struct EwMeanVar {
    float mean = 0;
    float variance = 0;
    std::uint32_t n = 0;

    void add(double x, double alpha) {
        ++n;
        const double a = n < 1.0 / alpha ? 1.0 / n : alpha;
        const double diff = x - mean;
        mean = static_cast<float>(mean + a * diff);
        variance = static_cast<float>((1 - a) * (variance + a * diff * diff));
    }
    void reset() { *this = EwMeanVar(); }
};

}  // namespace pii_audit::analysis
