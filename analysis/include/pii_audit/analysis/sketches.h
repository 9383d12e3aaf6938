// Small fixed-size summaries the scorer keeps per actor and per peer group. Every type here is
// trivially copyable and allocation-free, so an actor's whole state has a size known at compile
// time and can be saved and restored byte for byte.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "pii_audit/pg_free.h"
#include "pii_audit/sketches.h"

namespace pii_audit::analysis {

// The string hash and HyperLogLog live in the core (capture counts subjects with them too).
using pii_audit::hash_bytes;
using pii_audit::HyperLogLog;
using pii_audit::mix64;

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

    // Mean and variance at bin resolution (each bin at its middle; the zero bin at 0).
    double mean() const { return moment(1); }
    double variance() const {
        const double m = mean();
        return std::max(0.0, moment(2) - m * m);
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
    double moment(int power) const {
        if (total_ <= 0) return 0;
        double sum = 0;
        for (int b = 1; b < Bins; ++b) {
            if (weights_[b] <= 0) continue;
            const double mid = (bin_lower(b) + bin_lower(b + 1)) / 2;
            sum += weights_[b] * (power == 1 ? mid : mid * mid);
        }
        return sum / total_;
    }

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
