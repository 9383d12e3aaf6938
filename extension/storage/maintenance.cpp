// Storage upkeep that must not hold up storing: removing months past pii_audit.retention and
// merging the subject index's small slices. The worker (the trail's single writer) starts this
// process between batches, at most once at a time: once a minute while a retention is set, and
// whenever it has written slices since the last run. The process does its work in transactions
// of its own and exits. A removal locks the trail only for the DROP of a month (at most
// lock_timeout = 0.5 s of waiting); merging slices takes no lock the worker needs.
#include "pii_audit_internal.h"

#include "boundary.h"

extern "C" {
#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
}

#include <unistd.h>

#include <cerrno>
#include <cstdio>

namespace {

constexpr int kMaintenanceNiceIncrement = 10;
// Merges per run, so that one run ends and a changed setting or a stop takes effect.
constexpr int kMaxMergesPerRun = 64;
constexpr int kMergeFanout = 16;
constexpr int kMaxMergeLevel = 2;
// Main argument bits.
constexpr uint32 kArgWarnRetention = 1;

bool function_installed(const char* name) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n "
             "ON n.oid = p.pronamespace WHERE n.nspname = 'pii_audit' AND p.proname = '%s'",
             name);
    return pii_audit_spi_int64(sql, 0) > 0;
}

// The months whose events are all older than the retention go, whole partitions at a time, as
// far as every export checkpoint has delivered them (pii_audit._remove_partitions records each
// removal; the records reach the queue when this transaction commits). A reader holding the
// trail longer than the lock timeout makes it give up until the next run.
void apply_retention(bool warn_if_outdated) {
    if (pii_audit_retention == nullptr || pii_audit_retention[0] == '\0') return;
    pii_audit::Retention retention;
    char error[256] = "";
    bool parsed = false;
    if (!pii_audit::boundary::cpp_call(nullptr, [&] {
            parsed = pii_audit::parse_retention(pii_audit_retention, &retention, error,
                                                sizeof error);
        }, error, sizeof error) || !parsed || retention.keep_everything)
        return;  // the setting's check refused it already
    char interval[64];
    snprintf(interval, sizeof interval, "%d months %d days", retention.months, retention.days);
    char why[300];
    snprintf(why, sizeof why, "older than pii_audit.retention (%s)", pii_audit_retention);
    volatile int64 removed = 0;
    volatile bool installed = true;
    ErrorData* failure = pii_audit::boundary::pg_own_transactions([&] {
        pii_audit_worker_begin_transaction();
        pgstat_report_activity(STATE_RUNNING, "pii_audit: removing events past retention");
        SPI_connect();
        installed = function_installed("_remove_partitions");
        if (installed) {
            // Dropping a partition locks the whole trail: never queue the writer or readers
            // behind it for long.
            SPI_execute("SELECT pg_catalog.set_config('lock_timeout', '500ms', true)", false, 0);
            Datum args[2] = {CStringGetTextDatum(interval), CStringGetTextDatum(why)};
            Oid types[2] = {TEXTOID, TEXTOID};
            if (SPI_execute_with_args("SELECT count(*) FROM pii_audit._remove_partitions("
                                      "pg_catalog.now() - $1::pg_catalog.interval, $2, true)",
                                      2, types, args, nullptr, false, 0) != SPI_OK_SELECT)
                elog(ERROR, "pii_audit: could not run pii_audit._remove_partitions");
            bool isnull = true;
            Datum count = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
            removed = isnull ? 0 : DatumGetInt64(count);
        }
        SPI_finish();
        pii_audit_worker_commit_transaction();
        pgstat_report_activity(STATE_IDLE, nullptr);
    });
    if (failure != nullptr) {
        ereport(failure->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE ? LOG : WARNING,
                (errmsg("pii_audit: could not remove events past retention: %s",
                        failure->message),
                 errdetail("The worker tries again in a minute.")));
        FreeErrorData(failure);
    } else if (!installed && warn_if_outdated) {
        ereport(WARNING, (errmsg("pii_audit.retention is set, but the installed pii_audit "
                                 "extension cannot remove events"),
                          errhint("ALTER EXTENSION pii_audit UPDATE in database \"%s\".",
                                  pii_audit_database)));
    } else if (removed > 0) {
        ereport(LOG, (errmsg("pii_audit: removed %lld month%s of events past retention (%s)",
                             static_cast<long long>(removed), removed == 1 ? "" : "s",
                             pii_audit_retention)));
    }
}

// Merges slices of the subject index, one merge per transaction.
void compact_subject_index() {
    for (int done = 0; done < kMaxMergesPerRun; ++done) {
        CHECK_FOR_INTERRUPTS();
        volatile int64 merges = 0;
        ErrorData* failure = pii_audit::boundary::pg_own_transactions([&] {
            pii_audit_worker_begin_transaction();
            pgstat_report_activity(STATE_RUNNING, "pii_audit: merging subject index slices");
            SPI_connect();
            if (function_installed("compact_subject_index")) {
                char sql[128];
                snprintf(sql, sizeof sql,
                         "SELECT pii_audit.compact_subject_index(%d, %d, 1)::bigint",
                         kMergeFanout, kMaxMergeLevel);
                merges = pii_audit_spi_int64(sql, 0);
            }
            SPI_finish();
            pii_audit_worker_commit_transaction();
            pgstat_report_activity(STATE_IDLE, nullptr);
        });
        if (failure != nullptr) {
            ereport(WARNING, (errmsg("pii_audit: could not merge subject index slices: %s",
                                     failure->message),
                              errdetail("Lookups stay correct; the worker tries again later.")));
            FreeErrorData(failure);
            return;
        }
        if (merges == 0) return;
    }
}

BackgroundWorkerHandle* running = nullptr;
bool warned_no_slot = false;

}  // namespace

bool pii_audit_maintenance_running(void) {
    if (running == nullptr) return false;
    pid_t pid;
    BgwHandleStatus status = GetBackgroundWorkerPid(running, &pid);
    if (status == BGWH_STARTED || status == BGWH_NOT_YET_STARTED) return true;
    pfree(running);
    running = nullptr;
    return false;
}

bool pii_audit_launch_maintenance(bool warn_retention) {
    if (pii_audit_maintenance_running()) return false;
    BackgroundWorker worker{};
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = BGW_NEVER_RESTART;
    strlcpy(worker.bgw_library_name, "pii_audit", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "pii_audit_maintenance_main", BGW_MAXLEN);
    strlcpy(worker.bgw_name, "pii_audit maintenance", BGW_MAXLEN);
    strlcpy(worker.bgw_type, "pii_audit maintenance", BGW_MAXLEN);
    worker.bgw_main_arg = UInt32GetDatum(warn_retention ? kArgWarnRetention : 0);
    worker.bgw_notify_pid = 0;  // polled (GetBackgroundWorkerPid): no signals into the worker
    MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
    BackgroundWorkerHandle* handle = nullptr;
    bool ok = RegisterDynamicBackgroundWorker(&worker, &handle);
    MemoryContextSwitchTo(old);
    if (!ok) {
        if (!warned_no_slot)
            ereport(LOG, (errmsg("pii_audit: no background worker slot for the maintenance "
                                 "process (retention, subject index merges); trying again later"),
                          errhint("Raise max_worker_processes.")));
        warned_no_slot = true;
        return false;
    }
    warned_no_slot = false;
    running = handle;
    return true;
}

extern "C" void pii_audit_maintenance_main(Datum arg) {
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    // Background work: it yields the CPU to the statements it audits, as the worker does.
    errno = 0;
    if (nice(kMaintenanceNiceIncrement) == -1 && errno != 0)
        ereport(DEBUG1, (errmsg("pii_audit maintenance could not lower its priority: %m")));
    BackgroundWorkerInitializeConnection(pii_audit_database, nullptr, 0);
    SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);
    pgstat_report_appname("pii_audit maintenance");
    const uint32 flags = DatumGetUInt32(arg);
    apply_retention((flags & kArgWarnRetention) != 0);
    compact_subject_index();
    proc_exit(0);
}
