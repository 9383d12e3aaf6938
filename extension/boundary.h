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
//   pg_finally(fn, cleanup)           PostgreSQL code that may raise, with bookkeeping that must
//                                     be put back either way (a nesting level). cleanup runs,
//                                     then the error, if any, goes on. cleanup must not raise.
//
//   pg_on_error(fn, handler)          handler runs only if fn raised, in the caller's memory
//                                     context, with the error still current (geterrcode(),
//                                     CopyErrorData()); then the error goes on. handler may
//                                     instead end by raising (ReThrowError of a copy).
//
//   pg_forget_error(fn)               An error raised in fn is flushed, every LWLock released,
//                                     and false returned; the caller goes on. Only for fn that
//                                     touches no transactional state (dynamic shared memory and
//                                     LWLocks, as the parallel hand-over does, where a worker
//                                     may not start a subtransaction), or for fn run while the
//                                     transaction is already failing and aborts right after:
//                                     that abort cleans up what the forgotten error left.
//
//   pg_recovery_loop(step, recover)   A background process's main loop: step() runs again and
//                                     again. An error raised in it is reported to the server
//                                     log, its transaction aborted and its LWLocks released;
//                                     then recover(error) runs (it may wait, or exit) and the
//                                     loop goes on. Never returns. The loop's state lives
//                                     outside step's frame (statics), as a longjmp leaves it.
//
// In all but cpp_call, fn may hold no C++ object with a destructor across a PostgreSQL call:
// build palloc'd plain data at the edge and hand it to C++ through one cpp_call. Variables fn
// sets and the caller reads after an error must be volatile.
//
// Include after pii_audit_internal.h (it needs PostgreSQL's headers).
#pragma once

#include "pii_audit/cpp_call.h"

extern "C" {
#include "access/xact.h"
#include "miscadmin.h"
#include "utils/elog.h"
#include "utils/memutils.h"
#include "storage/lwlock.h"
#include "utils/resowner.h"
}

namespace pii_audit::boundary {

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

template <class Fn, class Cleanup>
void pg_finally(Fn&& fn, Cleanup&& cleanup) {
    PG_TRY();
    {
        fn();
    }
    PG_FINALLY();
    {
        cleanup();
    }
    PG_END_TRY();
}

template <class Fn, class Handler>
void pg_on_error(Fn&& fn, Handler&& handler) {
    MemoryContext caller = CurrentMemoryContext;
    PG_TRY();
    {
        fn();
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(caller);
        handler();
        PG_RE_THROW();
    }
    PG_END_TRY();
}

template <class Fn>
bool pg_forget_error(Fn&& fn) {
    MemoryContext caller = CurrentMemoryContext;
    volatile bool ok = true;
    PG_TRY();
    {
        fn();
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(caller);
        FlushErrorState();
        // A failed dsa or dsm call can leave its area's lock held; the caller's cleanup (a
        // detach) takes it again.
        LWLockReleaseAll();
        ok = false;
    }
    PG_END_TRY();
    return ok;
}

template <class Step, class Recover>
[[noreturn]] void pg_recovery_loop(Step&& step, Recover&& recover) {
    sigjmp_buf local_sigjmp_buf;
    if (sigsetjmp(local_sigjmp_buf, 1) != 0) {
        error_context_stack = nullptr;
        HOLD_INTERRUPTS();
        MemoryContextSwitchTo(TopMemoryContext);
        ErrorData* error = CopyErrorData();
        EmitErrorReport();
        AbortCurrentTransaction();
        LWLockReleaseAll();  // also when the error came between transactions
        FlushErrorState();
        RESUME_INTERRUPTS();
        recover(error);
        FreeErrorData(error);
    }
    PG_exception_stack = &local_sigjmp_buf;
    for (;;) step();
}

}  // namespace pii_audit::boundary
