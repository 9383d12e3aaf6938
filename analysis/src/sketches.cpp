#include "pii_audit/analysis/sketches.h"

#include <cmath>

namespace pii_audit::analysis {

template <int P>
double HyperLogLog<P>::estimate() const {
    constexpr double m = kRegisters;
    constexpr double alpha = P == 4   ? 0.673
                             : P == 5 ? 0.697
                             : P == 6 ? 0.709
                                      : 0.7213 / (1 + 1.079 / m);
    const double raw = alpha * m * m / inverse_sum_;
    // Linear counting is more precise, and the raw estimate biased upwards, until only a few
    // registers (1 in 20, i.e. about 3 items per register) are still empty.
    if (zeros_ * 20 >= kRegisters) return m * std::log(m / zeros_);
    return raw;
}

template class HyperLogLog<6>;
template class HyperLogLog<7>;
template class HyperLogLog<8>;

}  // namespace pii_audit::analysis
