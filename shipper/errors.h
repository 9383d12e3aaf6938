// What can go wrong in pii-audit-export, sorted by what the program does about it.
#pragma once

#include <stdexcept>
#include <string>

namespace shipper {

// Bad command line: print the message and the usage hint, exit 2.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Nothing a retry can fix (missing role, damaged checkpoint, replaced output file): exit 1.
struct FatalError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The receiver or the database is away for now: back off and try again, never skip.
struct TransientError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The database connection was lost or a query failed in a way a retry may fix.
struct DatabaseError : TransientError {
    using TransientError::TransientError;
};

}  // namespace shipper
