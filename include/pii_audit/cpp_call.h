// C++ code called from PostgreSQL code: the one crossing that needs no PostgreSQL header (so
// that PostgreSQL-free sources such as the label grammar use it too). See boundary.h for the
// whole set and the rules (extension/boundary.h).
#pragma once

#include <cstddef>
#include <cstdio>
#include <exception>

namespace pii_audit::boundary {

// No exception leaves it: the message ("what: ...") is copied into `error` and false is
// returned. fn must not call anything that can raise a PostgreSQL error.
template <class Fn>
bool cpp_call(const char* what, Fn&& fn, char* error, std::size_t size) noexcept {
    const char* prefix = what != nullptr ? what : "";
    const char* separator = what != nullptr ? ": " : "";
    try {
        fn();
        return true;
    } catch (const std::exception& e) {
        if (error != nullptr && size > 0) snprintf(error, size, "%s%s%s", prefix, separator, e.what());
    } catch (...) {
        if (error != nullptr && size > 0)
            snprintf(error, size, "%s%sunknown exception", prefix, separator);
    }
    return false;
}

}  // namespace pii_audit::boundary
