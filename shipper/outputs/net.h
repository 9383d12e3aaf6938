// Sockets with deadlines: every wait is bounded, so a stuck receiver turns into a retry.
#pragma once

#include <string>

namespace shipper {

// A connected non-blocking socket (SOCK_STREAM or SOCK_DGRAM); TransientError if none.
int connect_socket(const std::string& host, const std::string& port, int type, double timeout,
                   const std::string& what);
// Waits for `events` on fd until the deadline (seconds on CLOCK_MONOTONIC); false on timeout.
bool wait_fd(int fd, short events, double deadline);
double monotonic_now();

}  // namespace shipper
