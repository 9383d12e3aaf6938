// The crossings between C++ and PostgreSQL, in both directions, in one place (see
// ../shared/design/style.md: PostgreSQL reports errors with longjmp, C++ with exceptions, and
// neither may run through the other's frames).
//
//   cpp_call(what, fn, error, size)   C++ code called from PostgreSQL code. No exception leaves
//                                     it: the message ("what: ...") is copied into `error` and
//                                     false is returned. fn must not call anything that can
//                                     raise a PostgreSQL error: a longjmp out of it would skip
//                                     the destructors of its C++ objects. The caller raises or
//                                     reports the PostgreSQL error afterwards, outside any catch.
//
//   pg_subtransaction(fn)             PostgreSQL code that may raise, run in a subtransaction of
//                                     the current transaction. Returns nullptr, or the error
//                                     (copied into the caller's memory context) after rolling
//                                     the subtransaction back: the transaction goes on as if fn
//                                     had not run.
//
//   pg_own_transactions(fn)           PostgreSQL code that starts and commits transactions of
//                                     its own. Returns nullptr, or the error after aborting the
//                                     transaction that was open when it was raised.
//
// In the last two, fn may hold no C++ object with a destructor across a PostgreSQL call: build
// palloc'd plain data at the edge and hand it to C++ through one cpp_call.
//
// Include after pii_audit_internal.h (it needs PostgreSQL's headers).
#pragma once

#include <cstddef>
#include <cstdio>
#include <exception>

extern "C" {
#include "access/xact.h"
#include "utils/elog.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
}

namespace pii_audit::boundary {

template <class Fn>
bool cpp_call(const char* what, Fn&& fn, char* error, size_t size) noexcept {
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

template <class Fn>
ErrorData* pg_subtransaction(Fn&& fn) {
    MemoryContext caller = CurrentMemoryContext;
    ResourceOwner owner = CurrentResourceOwner;
    ErrorData* volatile error = nullptr;
    BeginInternalSubTransaction(nullptr);
    MemoryContextSwitchTo(caller);
    PG_TRY();
    {
        fn();
        ReleaseCurrentSubTransaction();
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(caller);
        error = CopyErrorData();
        FlushErrorState();
        RollbackAndReleaseCurrentSubTransaction();
    }
    PG_END_TRY();
    MemoryContextSwitchTo(caller);
    CurrentResourceOwner = owner;
    return error;
}

template <class Fn>
ErrorData* pg_own_transactions(Fn&& fn) {
    MemoryContext caller = CurrentMemoryContext;
    ErrorData* volatile error = nullptr;
    PG_TRY();
    {
        fn();
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(caller);
        error = CopyErrorData();
        FlushErrorState();
        AbortCurrentTransaction();
        MemoryContextSwitchTo(caller);
    }
    PG_END_TRY();
    return error;
}

}  // namespace pii_audit::boundary
