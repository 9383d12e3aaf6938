// Reads on a hot standby. A standby cannot write, so its worker does not store events: it hands
// the records its backends queue to the primary over libpq, as pii_audit_forwarder, through one
// SECURITY DEFINER function (pii_audit.forward_events). The primary keeps each batch in
// pii_audit.forwarded_batches in the same transaction that moves the standby's high-water mark
// (pii_audit.forwarded_origins: server name, queue generation, last queue sequence), so a batch
// sent again after a lost confirmation is recognised and not kept twice; its worker, the trail's
// only writer, then stores the events like its own (event ids gap-free, in commit order), named
// with the standby's server name.
//
// The standby releases a batch's queue space only once it has itself replayed the primary's
// commit of that batch (its commit record's end, pii_audit.forwarded_commit_position, on the
// same timeline): from then on the standby's own copy of forwarded_origins says the batch was
// kept. Released earlier, a batch would be lost without a trace when the primary dies before
// that commit reached this standby and this standby is promoted: the promoted worker skips only
// what its own forwarded_origins shows, and the batch would be neither there nor in its queue.
// Release normally lags the commit by the replay delay (milliseconds); while replay stands
// still the queue fills, and the queue settings decide as for an unreachable primary.
//
// While the primary cannot be reached the events wait in the standby's queue, a file in its data
// directory (pii_audit.queue_size); what does not fit is dropped and counted, and the count goes
// to the primary with the next batch, which records it as a gap of that server. So does a loss
// of unknown size noted when the standby started (its queue file not trusted after an OS crash,
// or damaged), as a gap row with no count; a refused copy (a new standby's first start, its
// queue file the primary's copied by pg_basebackup) is no loss and is only logged.
// PostgreSQL-free headers first (see pg_free.h).
#include "pii_audit/forward_batch.h"
// clang-format off
#include "pii_audit_internal.h"
#include "boundary.h"
// clang-format on

extern "C" {
#include "access/htup_details.h"
#include "access/timeline.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
}

#include <cstdio>
#include <cstring>

namespace {

constexpr long kConnectTimeoutMs = 15000;
constexpr long kCallTimeoutMs = 60000;
// Records per batch are bounded by the worker's buffer; the framed copy is the same size plus
// four bytes per record.
constexpr long kRetryMinMs = 1000;
constexpr long kRetryMaxMs = 10000;
// How often the standby looks whether its replay reached a kept batch's commit.
constexpr long kReplayPollMs = 10;

// The loop's state lives outside its frame (a longjmp of pg_recovery_loop leaves it).
PGconn* connection = nullptr;
int failures = 0;
uint64 confirmed_dropped = 0;
bool confirmed_any = false;
char* frame_buffer = nullptr;
size_t frame_capacity = 0;
char last_reported[512] = "";
uint64 note_logged = 0;  // the serial of the queue note last logged
// Batches the primary kept whose queue space waits for this standby's replay of the commit, in
// queue order (their commits are in WAL order too). The forwarder reads on past them, so the
// primary gets events as fast as before; only the release waits.
struct KeptBatch {
    uint64 end_position;  // the queue position after the batch's last record
    uint64 records;
    XLogRecPtr commit_end;
    TimeLineID timeline;
};
constexpr int kMaxKept = 256;
KeptBatch kept[kMaxKept];
int kept_first = 0;
int kept_count = 0;

void report_problem(const char* problem) {
    char shown[sizeof(PiiAuditStatus::worker_problem)];
    snprintf(shown, sizeof shown, "forwarding to the primary: %s", problem);
    pii_audit_queue_set_problem(shown);
    // Logged when it changes, not on every retry.
    if (strcmp(last_reported, problem) != 0) {
        strlcpy(last_reported, problem, sizeof last_reported);
        ereport(WARNING,
                (errmsg("pii_audit: cannot forward audit events to the primary: %s", problem),
                 errdetail("They wait in this standby's audit queue (pii_audit.queue_size); "
                           "once it is full, events are dropped and counted, and the "
                           "primary records the gap."),
                 errhint("Check pii_audit.forward_conninfo (or primary_conninfo) and that "
                         "the role pii_audit_forwarder may log in to the primary.")));
    }
}

void close_connection() {
    if (connection != nullptr) PQfinish(connection);
    connection = nullptr;
}

// PQerrorMessage without its trailing line break.
void copy_message(const char* message, char* out, size_t size) {
    strlcpy(out, message != nullptr && message[0] != '\0' ? message : "unknown error", size);
    size_t n = strlen(out);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' ')) out[--n] = '\0';
}

// Waits for the socket (or the latch: a reload, a stop) until the deadline; false once it passed
// or the worker is told to stop.
bool wait_for_socket(PGconn* c, bool write, TimestampTz deadline) {
    long ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
    if (ms <= 0 || pii_audit_worker_stopping()) return false;
    int rc = WaitLatchOrSocket(MyLatch,
                               (write ? WL_SOCKET_WRITEABLE : WL_SOCKET_READABLE) | WL_LATCH_SET |
                                   WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                               PQsocket(c), ms, PG_WAIT_EXTENSION);
    if (rc & WL_LATCH_SET) ResetLatch(MyLatch);
    return !pii_audit_worker_stopping();
}

void append_quoted(StringInfo out, const char* value) {
    appendStringInfoChar(out, '\'');
    for (const char* c = value; *c != '\0'; ++c) {
        if (*c == '\'' || *c == '\\') appendStringInfoChar(out, '\\');
        appendStringInfoChar(out, *c);
    }
    appendStringInfoChar(out, '\'');
}

// The connection string: pii_audit.forward_conninfo as given (after defaults it may override),
// or primary_conninfo with the forwarder's role and the audit database. Only a server that
// accepts writes will do (target_session_attrs=read-write): a cascaded standby's upstream is
// another standby, which cannot store events, so it must name the primary in
// pii_audit.forward_conninfo. False when there is nothing to connect to.
bool build_conninfo(StringInfo out) {
    appendStringInfoString(out,
                           "connect_timeout=10 application_name='pii_audit forwarder' "
                           "options='-c synchronous_commit=on' "
                           "target_session_attrs=read-write ");
    if (pii_audit_forward_conninfo != nullptr && pii_audit_forward_conninfo[0] != '\0') {
        appendStringInfoString(out, pii_audit_forward_conninfo);
        return true;
    }
    const char* primary = GetConfigOption("primary_conninfo", true, false);
    if (primary == nullptr || primary[0] == '\0') return false;
    appendStringInfoString(out, primary);
    appendStringInfoString(out, " user=pii_audit_forwarder dbname=");
    append_quoted(out, pii_audit_database);
    // primary_conninfo's own application_name is the standby's walreceiver's
    appendStringInfoString(out, " application_name='pii_audit forwarder'");
    return true;
}

bool connect_to_primary(char* problem, size_t size) {
    StringInfoData info;
    initStringInfo(&info);
    if (!build_conninfo(&info)) {
        strlcpy(problem, "neither pii_audit.forward_conninfo nor primary_conninfo is set", size);
        pfree(info.data);
        return false;
    }
    PGconn* c = PQconnectStart(info.data);
    pfree(info.data);
    if (c == nullptr) {
        strlcpy(problem, "out of memory", size);
        return false;
    }
    if (PQstatus(c) == CONNECTION_BAD) {
        copy_message(PQerrorMessage(c), problem, size);
        PQfinish(c);
        return false;
    }
    const TimestampTz deadline =
        TimestampTzPlusMilliseconds(GetCurrentTimestamp(), kConnectTimeoutMs);
    PostgresPollingStatusType status = PGRES_POLLING_WRITING;
    while (status != PGRES_POLLING_OK) {
        if (status == PGRES_POLLING_FAILED) {
            copy_message(PQerrorMessage(c), problem, size);
            PQfinish(c);
            return false;
        }
        if (!wait_for_socket(c, status == PGRES_POLLING_WRITING, deadline)) {
            strlcpy(problem, "connecting timed out", size);
            PQfinish(c);
            return false;
        }
        status = PQconnectPoll(c);
    }
    connection = c;
    return true;
}

enum class CallResult { kStored, kRefused, kLost };

// Sends a query with parameters and waits for its one row (its first columns copied into
// row_out, at most 2). kRefused: the primary answered with an error or no row (kept in problem);
// kLost: the connection broke or timed out (closed).
CallResult run_query(const char* command, int nparams, const char* const* values,
                     const int* lengths, const int* formats, char (*row_out)[32], int columns,
                     char* problem, size_t problem_size) {
    if (!PQsendQueryParams(connection, command, nparams, nullptr, values, lengths, formats, 0)) {
        copy_message(PQerrorMessage(connection), problem, problem_size);
        close_connection();
        return CallResult::kLost;
    }
    const TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), kCallTimeoutMs);
    bool stored = false, refused = false;
    for (;;) {
        while (PQisBusy(connection)) {
            if (!wait_for_socket(connection, false, deadline)) {
                strlcpy(problem, "the primary did not answer in time", problem_size);
                close_connection();
                return CallResult::kLost;
            }
            if (!PQconsumeInput(connection)) {
                copy_message(PQerrorMessage(connection), problem, problem_size);
                close_connection();
                return CallResult::kLost;
            }
        }
        PGresult* result = PQgetResult(connection);
        if (result == nullptr) break;
        if (PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result) == 1 &&
            PQnfields(result) >= columns) {
            stored = true;
            for (int i = 0; i < columns; ++i)
                strlcpy(row_out[i], PQgetisnull(result, 0, i) ? "" : PQgetvalue(result, 0, i),
                        sizeof row_out[i]);
        } else if (!refused) {
            refused = true;
            copy_message(PQresultErrorMessage(result), problem, problem_size);
        }
        PQclear(result);
    }
    if (PQstatus(connection) == CONNECTION_BAD) {
        if (!refused) copy_message(PQerrorMessage(connection), problem, problem_size);
        close_connection();
        return CallResult::kLost;
    }
    if (refused || !stored) {
        if (!refused) strlcpy(problem, "the primary returned no answer", problem_size);
        return CallResult::kRefused;
    }
    return CallResult::kStored;
}

// Calls pii_audit.forward_events and waits for its answer; once the batch is kept (now or
// before), asks where the primary's commit ended (*commit_end, *timeline).
CallResult call_forward(const char* records, size_t size, uint64 dropped, const char* note,
                        uint64 note_serial, XLogRecPtr* commit_end, TimeLineID* timeline,
                        char* problem, size_t problem_size) {
    char generation[32], fingerprint[32], lost[32], serial[32];
    snprintf(generation, sizeof generation, "%llu",
             static_cast<unsigned long long>(pii_audit_queue_generation()));
    snprintf(fingerprint, sizeof fingerprint, "%lld",
             static_cast<long long>(pii_audit_subject_key_fingerprint()));
    snprintf(lost, sizeof lost, "%llu", static_cast<unsigned long long>(dropped));
    snprintf(serial, sizeof serial, "%llu", static_cast<unsigned long long>(note_serial));
    const char* values[7] = {pii_audit_local_server_name(), generation, fingerprint, lost, records,
                             note, serial};
    int lengths[7] = {0, 0, 0, 0, static_cast<int>(size), 0, 0};
    int formats[7] = {0, 0, 0, 0, 1, 0, 0};
    char row[2][32];
    CallResult result = run_query("SELECT pii_audit.forward_events($1, $2::bigint, $3::bigint, "
                                  "$4::bigint, $5::bytea, $6, $7::bigint)",
                                  7, values, lengths, formats, row, 1, problem, problem_size);
    if (result != CallResult::kStored) return result;
    // After the commit, in the same session: the end of this session's last commit record,
    // which kept the batch (or, for a batch kept before, came after the commit that did).
    result = run_query("SELECT (commit_lsn - '0/0')::text, timeline_id "
                       "FROM pii_audit.forwarded_commit_position()",
                       0, nullptr, nullptr, nullptr, row, 2, problem, problem_size);
    if (result != CallResult::kStored) return result;
    char* end = nullptr;
    *commit_end = static_cast<XLogRecPtr>(strtoull(row[0], &end, 10));
    const unsigned long tli = strtoul(row[1], nullptr, 10);
    if (end == row[0] || *end != '\0' || *commit_end == InvalidXLogRecPtr || tli == 0) {
        snprintf(problem, problem_size, "the primary answered an invalid commit position (%s, %s)",
                 row[0], row[1]);
        return CallResult::kRefused;
    }
    *timeline = static_cast<TimeLineID>(tli);
    return CallResult::kStored;
}

// Whether this standby has replayed the commit that kept a batch: on the commit's timeline, its
// replay is past it; on a later timeline (a failover this standby followed), the commit came
// before that timeline's history left the commit's. kNotYet also while this standby still
// replays an older timeline than the primary's (it has not followed a failover yet).
// kNotInHistory: this standby's history left the commit's timeline before the commit, so its
// copy of forwarded_origins will never show the batch: it is handed in again (to the new
// primary, which keeps only what it lacks).
enum class Replayed { kYes, kNotYet, kNotInHistory };
Replayed replayed(XLogRecPtr commit_end, TimeLineID timeline) {
    TimeLineID replay_timeline = 0;
    const XLogRecPtr replay = GetXLogReplayRecPtr(&replay_timeline);
    if (replay_timeline == timeline)
        return replay >= commit_end ? Replayed::kYes : Replayed::kNotYet;
    if (replay_timeline < timeline) return Replayed::kNotYet;
    List* history = readTimeLineHistory(replay_timeline);
    Replayed answer = Replayed::kNotInHistory;
    ListCell* cell;
    foreach (cell, history) {
        const auto* entry = static_cast<TimeLineHistoryEntry*>(lfirst(cell));
        if (entry->tli == timeline && commit_end <= entry->end) answer = Replayed::kYes;
    }
    list_free_deep(history);
    return answer;
}

// Releases the queue space of the kept batches whose commit this standby has replayed. False
// when a kept batch's commit is not in this standby's timeline history: the kept batches are
// then forgotten, to be handed in again.
bool release_replayed() {
    while (kept_count > 0) {
        const KeptBatch& k = kept[kept_first];
        switch (replayed(k.commit_end, k.timeline)) {
            case Replayed::kNotYet:
                return true;
            case Replayed::kYes: {
                QueueBatch done{nullptr, 0, k.end_position};
                pii_audit_queue_release(done, k.records);
                kept_first = (kept_first + 1) % kMaxKept;
                --kept_count;
                break;
            }
            case Replayed::kNotInHistory:
                kept_first = 0;
                kept_count = 0;
                return false;
        }
    }
    return true;
}

long retry_pause() {
    long pause = kRetryMinMs << (failures < 4 ? failures : 4);
    return pause > kRetryMaxMs ? kRetryMaxMs : pause;
}

// The server forwarded to kept batches on a timeline this standby does not follow (split brain,
// or pii_audit.forward_conninfo names a server it does not replicate from): they are handed in
// again over a new connection, after a pause, so that a server that keeps answering that way is
// not flooded. Returns the pause.
long history_mismatch() {
    close_connection();
    ++failures;
    pii_audit_queue_set_ready(false);
    report_problem("the primary's commits of forwarded batches are not in this standby's "
                   "timeline history; they are handed in again");
    pgstat_report_activity(STATE_IDLE, nullptr);
    return retry_pause();
}

}  // namespace

void pii_audit_forward_stop(void) { close_connection(); }

long pii_audit_forward_step(char* buffer, size_t capacity) {
    if (!release_replayed()) return history_mismatch();
    pgstat_report_activity(STATE_RUNNING, "pii_audit: forwarding audit events to the primary");
    // What a start or crash restart of this standby noted (a queue file refused, records torn):
    // counted losses are in the drop count the primary records; a loss of unknown size (a queue
    // file not trusted after an OS crash, or damaged) goes with the next batch, and the primary
    // records it as a gap of this server. A copied file refused at the first start of a standby
    // made with pg_basebackup is no loss: its events are the primary's, which stores them.
    char note[320];
    bool unknown_loss = false, copy_only = false;
    uint64 note_serial = pii_audit_queue_note(note, sizeof note, &unknown_loss, &copy_only);
    const bool send_note = note[0] != '\0' && unknown_loss && !copy_only;
    if (note[0] != '\0' && note_serial != note_logged) {
        ereport(send_note ? WARNING : LOG,
                (errmsg("pii_audit on a standby: %s", note),
                 send_note ? errdetail("The primary records a gap of this server of unknown size.")
                 : copy_only
                     ? errdetail("Not a loss: the events of the copied queue file are the "
                                 "original server's, which stores them.")
                     : errdetail("The events counted as lost are recorded as a gap of this "
                                 "server in the primary's trail.")));
        note_logged = note_serial;
    }
    if (note[0] != '\0' && !send_note) {
        pii_audit_queue_clear_note(note_serial);
        note[0] = '\0';
    }
    // A new connection may reach another server (after a failover) that lacks the batches kept
    // but not released yet: they are handed in again first, from the queue's tail, so that a
    // server never gets a batch after a hole (its high-water mark would pass over the hole, and
    // the missing batches would then be taken for duplicates). One that has them answers
    // 'duplicate'. On the same connection the next batch follows the kept ones (none while as
    // many wait as can be tracked).
    if (connection == nullptr) {
        kept_first = 0;
        kept_count = 0;
    }
    QueueBatch batch{};
    const uint64 kept_end =
        kept_count > 0 ? kept[(kept_first + kept_count - 1) % kMaxKept].end_position : 0;
    const bool have_records =
        kept_count < kMaxKept &&
        (kept_count == 0 ? pii_audit_queue_peek(buffer, capacity, &batch)
                         : pii_audit_queue_peek_after(kept_end, buffer, capacity, &batch));
    const uint64 dropped = pii_audit_queue_dropped();
    if (!have_records && confirmed_any && dropped == confirmed_dropped && !send_note) {
        pgstat_report_activity(STATE_IDLE, nullptr);
        if (failures == 0) pii_audit_queue_set_ready(true);
        return kept_count > 0 ? kReplayPollMs : pii_audit_flush_interval_ms;
    }
    char problem[512];
    if (connection == nullptr) {
        if (!connect_to_primary(problem, sizeof problem)) {
            ++failures;
            pii_audit_queue_set_ready(false);
            report_problem(problem);
            pgstat_report_activity(STATE_IDLE, nullptr);
            return retry_pause();
        }
    }
    // Frame the records (the primary checks every one of them).
    uint64 records = 0;
    size_t framed = 0;
    if (have_records) {
        // A queue record's prefix is at least as long as a frame's: the framed copy never
        // takes more than the peeked bytes, so every record peeked is sent.
        static_assert(pii_audit::RingBuffer::kPrefix >= pii_audit::forward::kFrame);
        size_t need = batch.size + 64;
        if (need > frame_capacity) {
            free(frame_buffer);
            frame_buffer = static_cast<char*>(malloc(need));
            frame_capacity = frame_buffer ? need : 0;
            if (frame_buffer == nullptr) elog(ERROR, "pii_audit: out of memory framing a batch");
        }
        pii_audit::for_each_peeked_record(
            batch.data, batch.size, [&](const char* data, size_t len) {
                framed += pii_audit::forward::frame_record(data, static_cast<uint32>(len),
                                                           frame_buffer + framed);
                ++records;
            });
    }
    XLogRecPtr commit_end = InvalidXLogRecPtr;
    TimeLineID timeline = 0;
    const CallResult result =
        call_forward(frame_buffer ? frame_buffer : "", framed, dropped, send_note ? note : nullptr,
                     note_serial, &commit_end, &timeline, problem, sizeof problem);
    pgstat_report_activity(STATE_IDLE, nullptr);
    if (result != CallResult::kStored) {
        ++failures;
        pii_audit_queue_set_ready(false);
        report_problem(problem);
        return retry_pause();
    }
    if (have_records) {
        kept[(kept_first + kept_count) % kMaxKept] =
            KeptBatch{batch.end_position, records, commit_end, timeline};
        ++kept_count;
        if (!release_replayed()) return history_mismatch();
    }
    confirmed_dropped = dropped;
    confirmed_any = true;
    if (send_note) pii_audit_queue_clear_note(note_serial);
    if (failures > 0 || last_reported[0] != '\0')
        ereport(LOG, (errmsg("pii_audit: forwarding audit events to the primary works again")));
    failures = 0;
    last_reported[0] = '\0';
    pii_audit_queue_set_problem("");
    pii_audit_queue_set_ready(true);
    // A full batch: the next one at once.
    if (batch.size + 64 * 1024 >= capacity || have_records) return 0;
    return kept_count > 0 ? kReplayPollMs : pii_audit_flush_interval_ms;
}

// ---------------------------------------------------------------- the primary's side
namespace {
bool wake_registered = false;
bool wake_at_commit = false;

void wake_worker_at_commit(XactEvent event, void*) {
    if (event == XACT_EVENT_COMMIT && wake_at_commit) pii_audit_forwarded_bump();
    if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT) wake_at_commit = false;
}
}  // namespace

extern "C" {
PGDLLEXPORT Datum pii_audit_forwarded_wake(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_forwarded_wake);
}

// _forwarded_wake() RETURNS void: once this transaction commits, the worker stores the batch it
// kept (before the commit the worker could not see it).
Datum pii_audit_forwarded_wake(PG_FUNCTION_ARGS) {
    if (!wake_registered) {
        RegisterXactCallback(wake_worker_at_commit, nullptr);
        wake_registered = true;
    }
    wake_at_commit = true;
    PG_RETURN_VOID();
}

extern "C" {
PGDLLEXPORT Datum pii_audit_forwarded_commit_position(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_forwarded_commit_position);
}

// forwarded_commit_position(OUT commit_lsn pg_lsn, OUT timeline_id integer): where this
// session's last commit record ended, and this server's timeline. Called by a standby's
// forwarder right after forward_events committed, it names the commit that kept the batch (or,
// for a batch kept before, a later one): the standby releases the batch's queue space once its
// own replay is past it. A session that committed nothing gets the current end of WAL.
Datum pii_audit_forwarded_commit_position(PG_FUNCTION_ARGS) {
    TupleDesc desc;
    if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "pii_audit: forwarded_commit_position must return a record");
    if (RecoveryInProgress())
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("pii_audit: a server in recovery does not keep forwarded batches")));
    const XLogRecPtr end =
        XactLastCommitEnd != InvalidXLogRecPtr ? XactLastCommitEnd : GetXLogInsertRecPtr();
    Datum values[2] = {LSNGetDatum(end),
                       Int32GetDatum(static_cast<int32>(GetWALInsertionTimeLine()))};
    bool nulls[2] = {false, false};
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

extern "C" {
PGDLLEXPORT Datum pii_audit_forward_check(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_forward_check);
}

// _forward_check(records bytea, key_fingerprint bigint) RETURNS bigint[] {events, first queue
// sequence, last queue sequence}: refuses a batch that is malformed or whose subject hashes were
// made with another key than this server's.
Datum pii_audit_forward_check(PG_FUNCTION_ARGS) {
    if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("pii_audit: a forwarded batch needs its records and key fingerprint")));
    bytea* records = PG_GETARG_BYTEA_PP(0);
    const int64 fingerprint = PG_GETARG_INT64(1);
    const int64 ours = pii_audit_subject_key_fingerprint();
    if (fingerprint != ours)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
                 errmsg("pii_audit: refused events forwarded with another subject key"),
                 errdetail("The standby's subject key fingerprint is %lld, this server's is %lld: "
                           "its subject hashes would not match this trail's.",
                           static_cast<long long>(fingerprint), static_cast<long long>(ours)),
                 errhint("Copy pii_audit_subject.key from the primary's data directory to the "
                         "standby's (pg_basebackup does) and restart the standby.")));
    const pii_audit::forward::BatchSummary s =
        pii_audit::forward::check_batch(VARDATA_ANY(records), VARSIZE_ANY_EXHDR(records));
    if (s.problem != nullptr)
        ereport(ERROR, (errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
                        errmsg("pii_audit: refused a malformed forwarded batch: %s", s.problem)));
    Datum items[3] = {Int64GetDatum(static_cast<int64>(s.events)),
                      Int64GetDatum(static_cast<int64>(s.first_seq)),
                      Int64GetDatum(static_cast<int64>(s.last_seq))};
    PG_RETURN_ARRAYTYPE_P(construct_array(items, 3, INT8OID, 8, true, TYPALIGN_DOUBLE));
}
