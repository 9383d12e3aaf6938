#include "net.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>

#include "../errors.h"

namespace shipper {

double monotonic_now() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

bool wait_fd(int fd, short events, double deadline) {
    for (;;) {
        double left = deadline - monotonic_now();
        if (left <= 0) return false;
        struct pollfd p = {fd, events, 0};
        int n = ::poll(&p, 1, static_cast<int>(std::ceil(left * 1000)));
        if (n > 0) return true;
        if (n < 0 && errno != EINTR) return true;  // the caller's next call reports the error
    }
}

int connect_socket(const std::string& host, const std::string& port, int type, double timeout,
                   const std::string& what) {
    struct addrinfo hints;
    std::memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = type;
    struct addrinfo* list = nullptr;
    int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &list);
    if (rc != 0) throw TransientError("cannot resolve " + what + ": " + gai_strerror(rc));
    std::string last_error = "no address";
    int fd = -1;
    for (struct addrinfo* a = list; a != nullptr && fd < 0; a = a->ai_next) {
        int s =
            ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (s < 0) {
            last_error = std::strerror(errno);
            continue;
        }
        if (::connect(s, a->ai_addr, a->ai_addrlen) == 0) {
            fd = s;
            break;
        }
        if (errno == EINPROGRESS) {
            if (wait_fd(s, POLLOUT, monotonic_now() + timeout)) {
                int err = 0;
                socklen_t len = sizeof err;
                if (::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) {
                    fd = s;
                    break;
                }
                last_error = std::strerror(err);
            } else {
                last_error = "timed out";
            }
        } else {
            last_error = std::strerror(errno);
        }
        ::close(s);
    }
    ::freeaddrinfo(list);
    if (fd < 0) throw TransientError("cannot connect to " + what + ": " + last_error);
    return fd;
}

}  // namespace shipper
