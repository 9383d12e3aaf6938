// pii-audit-export --verify FILE...: the digest records a shipper wrote, checked against the
// live trail with pii_audit.verify_trail (see the README, "Verifying the trail").
#pragma once

#include "options.h"

namespace shipper {

// Prints what differs (or that the trail matches) on standard output. Returns the exit
// status: 0 the trail matches, 1 a mismatch, a damaged or missing digest record, or no
// database. Throws FatalError for what stops it before the check.
int run_verify(const Options& options);

}  // namespace shipper
