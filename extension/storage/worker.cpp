// Storage: the single background worker that drains the queue into the trail (pii_audit.
// trail_groups and its side tables, see trail_group.h) in the audit database. It is the only writer, so it assigns event_id in commit order (strictly
// increasing, no gaps), and it releases queue space only after its transaction committed, so
// a worker that is stopped or fails mid-batch loses nothing.
// PostgreSQL-free headers first (see pg_free.h).
#include "pii_audit/forward_batch.h"
#include "pii_audit/subject_slice.h"
#include "pii_audit/trail_chain.h"
#include "pii_audit/trail_dictionary.h"
#include "pii_audit/trail_group.h"

#include "pii_audit_internal.h"

#include "boundary.h"

extern "C" {
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/bufmgr.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/inet.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
}

#include <algorithm>
#include <array>
#include <utility>
#include <vector>

#include <malloc.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <new>

namespace {

constexpr size_t kBatchBytes = 4 * 1024 * 1024;
constexpr long kNotReadyRetryMs = 2000;
constexpr long kShutdownQuietMs = 200;     // after SIGTERM, leave once no event came for this long
constexpr long kShutdownMaxMs = 10000;     // ... or after this, whatever still arrives

constexpr int kWorkerNiceIncrement = 10;

volatile sig_atomic_t shutdown_requested = false;

void handle_sigterm(SIGNAL_ARGS) {
    int saved_errno = errno;
    shutdown_requested = true;
    SetLatch(MyLatch);
    errno = saved_errno;
}

// Column order of the trail's tables, checked against the tables at start.
const char* const kGroupColumns[] = {
    "first_event_id", "event_count", "min_time",     "max_time",      "recorded_at", "session_id",
    "statement_id",   "backend_pid", "nesting_level", "kind",         "payload",
};
constexpr int kNumGroupColumns = sizeof kGroupColumns / sizeof kGroupColumns[0];
enum GroupColumn {
    kColFirstEventId, kColEventCount, kColMinTime, kColMaxTime, kColRecordedAt, kColSessionId,
    kColStatementId, kColBackendPid, kColNestingLevel, kColKind, kColPayload,
};
static_assert(kColPayload + 1 == kNumGroupColumns);
// The kind of a gap row, next to pii_audit::EventKind's values in a group's key.
constexpr uint8 kGapKind = 200;

const char* const kSessionColumns[] = {
    "session_id", "database_name",    "session_user_name", "current_user_name",
    "end_user",   "application_name", "client_addr",       "server_name",
};
constexpr int kNumSessionColumns = sizeof kSessionColumns / sizeof kSessionColumns[0];

const char* const kStatementColumns[] = {
    "statement_id", "command", "relation", "relation_oid", "columns", "categories",
    "query_id", "query_text", "query_truncated",
};
constexpr int kNumStatementColumns = sizeof kStatementColumns / sizeof kStatementColumns[0];

struct WorkerState {
    Oid groups_relid;           // pii_audit.trail_groups
    Oid sessions_relid;         // pii_audit.trail_sessions
    Oid statements_relid;       // pii_audit.trail_statements
    Oid subject_index_relid;    // pii_audit.trail_subject_index
    Oid subject_slices_relid;   // pii_audit.trail_subject_slices
    int64 next_session_id;
    int64 next_statement_id;
    SPIPlanPtr save_position;  // UPDATE worker_state, prepared once per worker
    int64 next_event_id;
    uint64 persisted_seq;       // highest queue sequence already in the table (this generation)
    uint64 dropped_recorded;    // drops already written as gap events (this generation)
    bool note_unclean_restart;  // shared memory was re-created: say so in the trail
    bool promoted;              // ... or rather: a standby was promoted (the old primary is gone)
    bool gap_failing;           // the last gap row could not be stored: keep trying it alone
    bool warned_not_installed;
    TimestampTz last_recorded_at;       // recorded_at of the last batch: never goes back
    TimestampTz partitions_checked_at;  // when the next month's partition was last made sure of
    TimestampTz retention_checked_at;   // when the maintenance process last started
    bool warned_retention;              // it was asked to say if the SQL cannot remove events
    bool trail_gone;                    // a batch found the trail's tables dropped
    Oid digests_relid;                  // pii_audit.trail_digests; invalid before 0.3.0's SQL
    pii_audit::chain::Digest chain_last;  // digest of the last batch stored (zeros: none yet)
    uint64 forwarded_seen;  // pii_audit_forwarded_generation() when batches were last looked for
    bool forwarded_more;    // pii_audit.forwarded_batches may hold batches not stored yet
};

void on_worker_exit(int, Datum) { pii_audit_queue_detach_worker(); }

// The table has these columns, in this order; or, with min_columns, the first min_columns of
// them (the SQL of an older version, before ALTER EXTENSION UPDATE added the rest).
bool table_matches(Oid relid, const char* const* columns, int ncolumns, int min_columns = -1) {
    Relation rel = table_open(relid, AccessShareLock);
    TupleDesc desc = RelationGetDescr(rel);
    bool ok = desc->natts == ncolumns || (min_columns >= 0 && desc->natts == min_columns);
    for (int i = 0; ok && i < desc->natts; ++i)
        ok = !TupleDescAttr(desc, i)->attisdropped &&
             strcmp(NameStr(TupleDescAttr(desc, i)->attname), columns[i]) == 0;
    table_close(rel, AccessShareLock);
    return ok;
}

// ---------------------------------------------------------------- sessions and statements
// The worker's memory of which session and statement rows it stored, by value (see
// trail_dictionary.h). It lives as long as the process: an error in a batch ends the worker,
// so ids remembered for rows of a batch that did not commit are never used.
constexpr size_t kDictionaryBytes = 16 * 1024 * 1024;  // of keys, per dictionary

struct Dictionaries {
    pii_audit::TrailDictionary sessions{kDictionaryBytes};
    pii_audit::TrailDictionary statements{kDictionaryBytes};
    std::string key;  // the key of the last lookup
};
Dictionaries* dictionaries = nullptr;
char dictionary_failure[256];

// Runs fn, which must not call PostgreSQL; a C++ exception becomes false and a message, so the
// caller can raise a PostgreSQL error outside any C++ scope.
template <class Fn>
bool dictionary_guarded(Fn&& fn) noexcept {
    return pii_audit::boundary::cpp_call(nullptr, fn, dictionary_failure, sizeof dictionary_failure);
}

void dictionary_error() {
    ereport(ERROR, (errmsg("pii_audit: could not look up the trail's sessions and statements: %s",
                           dictionary_failure)));
}

void forget_chain_digests();

void reset_dictionaries() {
    forget_chain_digests();  // ids of rolled-back side rows are given again, to other values
    if (!dictionary_guarded([] {
            if (dictionaries == nullptr) {
                dictionaries = new Dictionaries();
            } else {
                dictionaries->sessions.clear();
                dictionaries->statements.clear();
            }
        }))
        dictionary_error();
}

enum class Part { kSession, kGapSession, kStatement };

// What names a gap row's session: the audit database and this server.
struct GapNames {
    std::string_view database, server;
};

// The id stored for this part of the event (for a gap, of its names), 0 if none yet. The key
// stays in dictionaries->key for remember_id.
int64 known_id(Part part, const pii_audit::EventView* event, GapNames gap) {
    int64 id = 0;
    if (!dictionary_guarded([&] {
            Dictionaries& d = *dictionaries;
            switch (part) {
                case Part::kSession: pii_audit::session_key(*event, d.key); break;
                case Part::kGapSession:
                    pii_audit::gap_session_key(gap.database, gap.server, d.key);
                    break;
                case Part::kStatement: pii_audit::statement_key(*event, d.key); break;
            }
            id = (part == Part::kStatement ? d.statements : d.sessions).find(d.key);
        }))
        dictionary_error();
    return id;
}

void remember_id(Part part, int64 id) {
    if (!dictionary_guarded([&] {
            Dictionaries& d = *dictionaries;
            (part == Part::kStatement ? d.statements : d.sessions).remember(d.key, id);
        }))
        dictionary_error();
}

void rebuild_subject_slice();

const char* const kDigestColumns[] = {"first_event_id",  "last_event_id", "recorded_at",
                                      "previous_digest", "digest",        "groups"};
constexpr int kNumDigestColumns = sizeof kDigestColumns / sizeof kDigestColumns[0];

// pii_audit.trail_digests (0.3.0) and the digest of the last batch stored, which the next one
// chains to. Without the table (the SQL of 0.2.0), batches are stored unchained.
void find_digests_table(WorkerState* state) {
    Oid nsp = get_namespace_oid("pii_audit", true);
    Oid relid = OidIsValid(nsp) ? get_relname_relid("trail_digests", nsp) : InvalidOid;
    state->chain_last = pii_audit::chain::Digest{};
    state->digests_relid = InvalidOid;
    if (!OidIsValid(relid) || !table_matches(relid, kDigestColumns, kNumDigestColumns)) return;
    SPI_connect();
    if (SPI_execute("SELECT digest FROM pii_audit.trail_digests ORDER BY first_event_id DESC "
                    "LIMIT 1",
                    true, 1) != SPI_OK_SELECT)
        elog(ERROR, "pii_audit: could not read the last digest of the trail");
    if (SPI_processed == 1) {
        bool isnull;
        Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
        bytea* b = isnull ? nullptr : DatumGetByteaPP(d);
        if (b == nullptr || VARSIZE_ANY_EXHDR(b) != pii_audit::chain::kDigestSize)
            elog(ERROR, "pii_audit: the last row of pii_audit.trail_digests has no valid digest");
        memcpy(state->chain_last.bytes, VARDATA_ANY(b), pii_audit::chain::kDigestSize);
    }
    SPI_finish();
    state->digests_relid = relid;
}

// Finds the trail's tables and where the last run stopped. False while the extension is not
// installed in the audit database.
bool prepare(WorkerState* state) {
    pii_audit_worker_begin_transaction();
    Oid nsp = get_namespace_oid("pii_audit", true);
    Oid events = OidIsValid(nsp) ? get_relname_relid("trail_groups", nsp) : InvalidOid;
    Oid subject_index = OidIsValid(nsp) ? get_relname_relid("trail_subject_index", nsp) : InvalidOid;
    Oid subject_slices = OidIsValid(nsp) ? get_relname_relid("trail_subject_slices", nsp) : InvalidOid;
    Oid sessions = OidIsValid(nsp) ? get_relname_relid("trail_sessions", nsp) : InvalidOid;
    Oid statements = OidIsValid(nsp) ? get_relname_relid("trail_statements", nsp) : InvalidOid;
    Oid worker_state = OidIsValid(nsp) ? get_relname_relid("worker_state", nsp) : InvalidOid;
    bool ready = OidIsValid(events) && OidIsValid(sessions) && OidIsValid(statements) &&
                 OidIsValid(worker_state) && OidIsValid(subject_index) &&
                 OidIsValid(subject_slices);
    if (!ready) {
        if (!state->warned_not_installed)
            ereport(WARNING,
                    (errmsg("pii_audit: the extension is not installed in audit database \"%s\"",
                            pii_audit_database),
                     errdetail("Audit events wait in the shared-memory queue; once it is full "
                               "they are dropped and counted."),
                     errhint("Run CREATE EXTENSION pii_audit in database \"%s\".",
                             pii_audit_database)));
        state->warned_not_installed = true;
    } else if (!table_matches(events, kGroupColumns, kNumGroupColumns) ||
               // Before 0.3.0's SQL, sessions have no server_name: stored without it.
               !table_matches(sessions, kSessionColumns, kNumSessionColumns,
                              kNumSessionColumns - 1) ||
               !table_matches(statements, kStatementColumns, kNumStatementColumns)) {
        if (!state->warned_not_installed)
            ereport(WARNING, (errmsg("pii_audit: the tables of pii_audit.events do not have the "
                                     "columns this version of pii_audit writes"),
                              errdetail("Audit events wait in the shared-memory queue; once it is "
                                        "full they are dropped and counted."),
                              errhint("ALTER EXTENSION pii_audit UPDATE in database \"%s\".",
                                      pii_audit_database)));
        state->warned_not_installed = true;
        ready = false;
    } else {
        state->groups_relid = events;
        state->subject_index_relid = subject_index;
        state->subject_slices_relid = subject_slices;
        state->sessions_relid = sessions;
        state->statements_relid = statements;
        reset_dictionaries();
        SPI_connect();
        state->next_session_id =
            pii_audit_spi_int64("SELECT max(session_id) FROM pii_audit.trail_sessions", 0) + 1;
        state->next_statement_id =
            pii_audit_spi_int64("SELECT max(statement_id) FROM pii_audit.trail_statements", 0) + 1;
        // The last id is kept with the batch that wrote it; looking past it also covers a trail
        // restored from a dump (then last_event_id is 0).
        state->next_event_id =
            Max(pii_audit_spi_int64("SELECT last_event_id FROM pii_audit.worker_state", 0),
                pii_audit_spi_int64("SELECT first_event_id + event_count - 1 FROM pii_audit.trail_groups "
                          "ORDER BY first_event_id DESC LIMIT 1",
                          0)) +
            1;
        state->last_recorded_at =
            pii_audit_spi_int64("SELECT (extract(epoch FROM max(recorded_at) - '2000-01-01 UTC') * 1e6)::bigint "
                      "FROM pii_audit.trail_groups WHERE first_event_id > "
                      "(SELECT last_event_id FROM pii_audit.worker_state) - 4096",
                      0);
        rebuild_subject_slice();
        SPI_finish();
        find_digests_table(state);
        SPI_connect();
        uint64 generation = pii_audit_queue_generation();
        int64 stored_generation =
            pii_audit_spi_int64("SELECT generation FROM pii_audit.worker_state", -1);
        if (stored_generation == static_cast<int64>(generation)) {
            state->persisted_seq = static_cast<uint64>(
                pii_audit_spi_int64("SELECT last_queue_seq FROM pii_audit.worker_state", 0));
            state->dropped_recorded = static_cast<uint64>(
                pii_audit_spi_int64("SELECT dropped_recorded FROM pii_audit.worker_state", 0));
            // The same queue as the last run (also after a crash or a restart: the queue file
            // keeps its generation): records up to last_queue_seq are stored already, and are
            // skipped if the predecessor died before releasing them. clean_shutdown only
            // matters when the queue file is replaced, so the next start must be able to tell.
            SPI_execute("UPDATE pii_audit.worker_state SET clean_shutdown = false, "
                        "updated_at = now()",
                        false, 0);
        } else {
            // A new queue file (first start, or the old file could not be used): after a clean
            // stop the old queue was empty; otherwise it may have held events, which are gone.
            // The trail says which it was (the queue's note says why, when it knows).
            int64 clean = pii_audit_spi_int64(
                "SELECT CASE WHEN clean_shutdown THEN 1 ELSE 0 END FROM pii_audit.worker_state",
                1);
            state->note_unclean_restart = stored_generation != -1 && clean == 0;
            state->persisted_seq = 0;
            state->dropped_recorded = 0;
            // A promoted standby: the records of this queue it forwarded while it was one are
            // in the trail (or in forwarded_batches, stored from there), and are skipped here;
            // so are the drops it reported (their gap rows are there too).
            if (OidIsValid(get_relname_relid("forwarded_origins", nsp))) {
                Oid types[2] = {TEXTOID, INT8OID};
                Datum args[2] = {CStringGetTextDatum(pii_audit_local_server_name()),
                                 Int64GetDatum(static_cast<int64>(generation))};
                if (SPI_execute_with_args("SELECT last_queue_seq, dropped "
                                          "FROM pii_audit.forwarded_origins "
                                          "WHERE server_name = $1 AND generation = $2",
                                          2, types, args, nullptr, true, 1) == SPI_OK_SELECT &&
                    SPI_processed == 1) {
                    bool isnull, dropped_null;
                    Datum seq =
                        SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
                    Datum dropped = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2,
                                                  &dropped_null);
                    if (!dropped_null && DatumGetInt64(dropped) > 0)
                        state->dropped_recorded = static_cast<uint64>(DatumGetInt64(dropped));
                    state->promoted = true;
                    if (!isnull) {
                        state->persisted_seq = static_cast<uint64>(DatumGetInt64(seq));
                        ereport(LOG,
                                (errmsg("pii_audit: this server forwarded its audit queue "
                                        "up to sequence %llu while it was a standby; the "
                                        "worker stores what follows",
                                        static_cast<unsigned long long>(state->persisted_seq))));
                    }
                }
            }
            char sql[256];
            snprintf(sql, sizeof sql,
                     "UPDATE pii_audit.worker_state SET generation = %lld, last_queue_seq = %lld, "
                     "dropped_recorded = %lld, clean_shutdown = false, updated_at = now()",
                     static_cast<long long>(generation),
                     static_cast<long long>(state->persisted_seq),
                     static_cast<long long>(state->dropped_recorded));
            SPI_execute(sql, false, 0);
        }
        SPI_finish();
        state->forwarded_more = true;  // batches standbys handed in before this start
    }
    pii_audit_worker_commit_transaction();
    return ready;
}

// Runs a scoring step that starts and commits transactions of its own. A PostgreSQL error in
// it (a failed relearning query, a full disk for its temporary files) rolls its transaction
// back and stops scoring, which scorer_status reports; storing events carries on.
template <class Fn>
void guard_scoring(const char* what, Fn&& step) {
    if (ErrorData* error = pii_audit::boundary::pg_own_transactions(step)) {
        pii_audit_scoring_failed(what, error->message);
        FreeErrorData(error);
    }
}

// Scoring starts (learning again what was stored since its last save) in transactions of its
// own, after the trail's positions are known.
void start_scoring(int64 last_event_id) {
    guard_scoring("starting insider scoring", [&] {
        pii_audit_worker_begin_transaction();
        pii_audit_scoring_start(last_event_id);
        pii_audit_scoring_store_alerts();
        pii_audit_worker_commit_transaction();
        pii_audit_scoring_after_commit();
    });
}

void maintain_scoring(int64 last_event_id, bool force_save) {
    guard_scoring("maintaining insider baselines",
                  [&] { pii_audit_scoring_maintain(last_event_id, force_save); });
}

// Keeps the characters of [s, s+len) that are valid in `encoding` and puts '?' for each byte
// that is not.
void append_valid(StringInfo out, const char* s, int len, int encoding) {
    while (len > 0) {
        int n = static_cast<unsigned char>(*s) < 0x80 ? (*s ? 1 : -1)
                                                      : pg_encoding_verifymbchar(encoding, s, len);
        if (n > 0) {
            appendBinaryStringInfo(out, s, n);
        } else {
            appendStringInfoChar(out, '?');
            n = 1;
        }
        s += n;
        len -= n;
    }
}

Datum text_datum(std::string_view value, int source_encoding) {
    int len = 0;
    const char* text = pii_audit_in_audit_encoding(value, source_encoding, &len);
    return PointerGetDatum(cstring_to_text_with_len(text, len));
}

Datum text_array(std::string_view list, int encoding) {
    int n = 0;
    pii_audit::for_each_list_item(list, [&](std::string_view) { ++n; });
    Datum* items = static_cast<Datum*>(palloc(sizeof(Datum) * (n > 0 ? n : 1)));
    int i = 0;
    pii_audit::for_each_list_item(list,
                                  [&](std::string_view item) { items[i++] = text_datum(item, encoding); });
    return PointerGetDatum(construct_array(items, n, TEXTOID, -1, false, TYPALIGN_INT));
}

Datum inet_datum(std::string_view value) {
    char addr[64];
    size_t n = value.size() < sizeof addr - 1 ? value.size() : sizeof addr - 1;
    memcpy(addr, value.data(), n);
    addr[n] = '\0';
    return DirectFunctionCall1(inet_in, CStringGetDatum(addr));
}

// Events of one batch repeat the same few databases, roles, applications, statements and
// column lists. Each field remembers the datums it built last in this batch, so a repeated
// value is converted once per batch instead of once per event (heap_form_tuple copies the
// datum into every row). The keys point into the batch buffer, which outlives the batch.
class FieldDatums {
public:
    enum class Kind { kText, kTextArray, kInet };

    template <Kind kind>
    Datum get(std::string_view value, int encoding) {
        for (const Entry& e : entries_)
            if (e.used && e.encoding == encoding && e.key == value) return e.datum;
        Entry& slot = entries_[next_];
        next_ = (next_ + 1) % kSlots;
        slot.used = true;
        slot.key = value;
        slot.encoding = encoding;
        if constexpr (kind == Kind::kText) slot.datum = text_datum(value, encoding);
        if constexpr (kind == Kind::kTextArray) slot.datum = text_array(value, encoding);
        if constexpr (kind == Kind::kInet) slot.datum = inet_datum(value);
        return slot.datum;
    }

private:
    static constexpr int kSlots = 8;
    struct Entry {
        bool used = false;
        int encoding = 0;
        std::string_view key;
        Datum datum = 0;
    };
    Entry entries_[kSlots];
    int next_ = 0;
};

struct BatchDatums {
    FieldDatums field[pii_audit::kFieldCount];
    Datum kind_read, kind_label_change, kind_login, kind_gap, kind_removal;

    Datum text(const pii_audit::EventView& event, pii_audit::EventField f) {
        return field[f].get<FieldDatums::Kind::kText>(event.field[f], event.header.source_encoding);
    }
    Datum nullable_text(const pii_audit::EventView& event, pii_audit::EventField f, bool* isnull) {
        *isnull = event.field[f].empty();
        return *isnull ? Datum(0) : text(event, f);
    }
    Datum text_array(const pii_audit::EventView& event, pii_audit::EventField f) {
        return field[f].get<FieldDatums::Kind::kTextArray>(event.field[f],
                                                           event.header.source_encoding);
    }
    Datum inet(const pii_audit::EventView& event, pii_audit::EventField f) {
        return field[f].get<FieldDatums::Kind::kInet>(event.field[f], 0);
    }
};

// ---------------------------------------------------------------- partitions
// trail_groups is partitioned by UTC calendar month of min_time; partition trail_groups_pYYYYMM
// holds that month. Few partitions keep planning cheap (measured: 367 daily partitions cost
// 270 ms of planning per query on the views; monthly ones a year's trail in 13). The worker
// creates a month's partition when a group needs it (standalone, with a CHECK constraint
// matching its bounds, then ATTACH: the parent only takes a lock that readers and the worker's
// own inserts do not conflict with) and, between batches, the next month's ahead.
constexpr int64 kDayMicros = 86400LL * 1000 * 1000;
constexpr int kMaxTargets = 8;  // partitions written by one batch before flushing

int32 day_of(TimestampTz t) {
    int64 day = t / kDayMicros;
    if (t < 0 && t % kDayMicros != 0) --day;
    return static_cast<int32>(day);
}

// The partition of a day: its month, as year * 12 + month - 1.
int32 month_of(int32 day) {
    int year, month, mday;
    j2date(day + POSTGRES_EPOCH_JDATE, &year, &month, &mday);
    return year * 12 + month - 1;
}

// The first day of the month after the day's.
int32 next_month(int32 day) {
    int year, month, mday;
    j2date(day + POSTGRES_EPOCH_JDATE, &year, &month, &mday);
    return date2j(month == 12 ? year + 1 : year, month == 12 ? 1 : month + 1, 1) -
           POSTGRES_EPOCH_JDATE;
}

void partition_name(int32 day, char* out, size_t size) {
    int year, month, mday;
    j2date(day + POSTGRES_EPOCH_JDATE, &year, &month, &mday);
    snprintf(out, size, "trail_groups_p%04d%02d", year, month);
}

// The partition holding `day`, created if missing (pii_audit._month_partition). Runs inside the
// caller's transaction.
Oid day_partition(int32 day, bool create) {
    char name[NAMEDATALEN];
    partition_name(day, name, sizeof name);
    Oid nsp = get_namespace_oid("pii_audit", false);
    Oid relid = get_relname_relid(name, nsp);
    if (OidIsValid(relid) || !create) return relid;
    Datum args[1] = {DateADTGetDatum(day)};
    Oid types[1] = {DATEOID};
    SPI_connect();
    if (SPI_execute_with_args("SELECT pii_audit._month_partition($1)", 1, types, args, nullptr,
                              false, 0) != SPI_OK_SELECT)
        elog(ERROR, "pii_audit: could not create the trail partition %s", name);
    SPI_finish();
    CommandCounterIncrement();
    relid = get_relname_relid(name, nsp);
    if (!OidIsValid(relid)) elog(ERROR, "pii_audit: the trail partition %s was not created", name);
    return relid;
}

// Between batches: next month's partition exists before the first event of next month needs it. A
// failure (a lock held too long) is retried later; the batch that needs it creates it anyway.
void prepare_partitions(WorkerState* state) {
    TimestampTz now = GetCurrentTimestamp();
    if (state->partitions_checked_at != 0 &&
        !TimestampDifferenceExceeds(state->partitions_checked_at, now, 60 * 1000))
        return;
    state->partitions_checked_at = now;
    ErrorData* error = pii_audit::boundary::pg_own_transactions([&] {
        pii_audit_worker_begin_transaction();
        (void)day_partition(day_of(now), true);
        (void)day_partition(next_month(day_of(now)), true);
        pii_audit_worker_commit_transaction();
    });
    if (error != nullptr) {
        ereport(WARNING, (errmsg("pii_audit: could not add the trail's next partition: %s",
                                 error->message),
                          errdetail("The worker tries again in a minute.")));
        FreeErrorData(error);
    }
}

// ---------------------------------------------------------------- upkeep
// Retention and merges of the subject index run in a maintenance process of their own
// (maintenance.cpp), so that they never hold up storing: started between batches, once a
// minute while a retention is set (and right after a reload) or slices were written since its
// last run, and at once when enough slices for a merge were.
int slices_written = 0;  // since the maintenance process was last started

void start_maintenance(WorkerState* state) {
    const bool retention = pii_audit_retention != nullptr && pii_audit_retention[0] != '\0';
    const TimestampTz now = GetCurrentTimestamp();
    const bool minute = state->retention_checked_at == 0 ||
                        TimestampDifferenceExceeds(state->retention_checked_at, now, 60 * 1000);
    // Sixteen new slices make a merge (maintenance.cpp's fanout); fewer wait for the minute.
    if (!(minute && (retention || slices_written > 0)) && slices_written < 16) return;
    if (!pii_audit_launch_maintenance(retention && !state->warned_retention)) return;
    if (retention) state->warned_retention = true;
    state->retention_checked_at = now;
    slices_written = 0;
}

// ---------------------------------------------------------------- writing rows
// Rows are buffered into slots and written with table_multi_insert: one WAL record per heap page
// instead of one per row.
constexpr int kMultiInsertRows = 1000;

// A table the batch adds a row to now and then (sessions, statements, the subject index).
struct SideTable {
    Oid relid;
    Relation rel;
    ResultRelInfo* result;
    TupleTableSlot* slot;
};

// One partition the batch writes groups to.
struct Target {
    int32 month;  // month_of
    Relation rel;
    ResultRelInfo* result;
    // A copy of the descriptor without a reference count: slots made on the relation's own
    // descriptor each pin it in the resource owner, and forgetting 1,000 pins of one pointer at
    // the end of a batch is a quadratic search.
    TupleDesc slot_desc;
    TupleTableSlot* slots[kMultiInsertRows];
    int buffered;
    BulkInsertState bulk;
    bool check_constraints;  // table_multi_insert does not check constraints; insert_group does
};

struct Inserter {
    EState* estate;
    Target targets[kMaxTargets];
    int ntargets;
    bool careful;
    CommandId cid;
    TimestampTz now;
    BatchDatums* datums;
    SideTable sessions;
    SideTable statements;
    SideTable subject_index;
    SideTable subject_slices;
    SideTable digests;  // pii_audit.trail_digests
    bool chained;       // the installed SQL has trail_digests: groups are digested
};

void open_side_table(Inserter& ins, SideTable& table) {
    table.rel = table_open(table.relid, RowExclusiveLock);
    table.result = makeNode(ResultRelInfo);
    InitResultRelInfo(table.result, table.rel, 0, nullptr, 0);
    ExecOpenIndices(table.result, false);
    table.slot = MakeSingleTupleTableSlot(CreateTupleDescCopy(RelationGetDescr(table.rel)),
                                          &TTSOpsVirtual);
    (void)ins;
}

// values and nulls hold nvalues columns: at least as many as the table has (a table of an
// older version of the SQL may have fewer).
void insert_side_row(Inserter& ins, SideTable& table, const Datum* values, const bool* nulls,
                     int nvalues) {
    if (table.rel == nullptr) open_side_table(ins, table);
    TupleTableSlot* slot = table.slot;
    const int natts = slot->tts_tupleDescriptor->natts;
    if (natts > nvalues)
        elog(ERROR, "pii_audit: table %s has %d columns, the worker writes %d",
             RelationGetRelationName(table.rel), natts, nvalues);
    ExecClearTuple(slot);
    memcpy(slot->tts_values, values, sizeof(Datum) * natts);
    memcpy(slot->tts_isnull, nulls, sizeof(bool) * natts);
    ExecStoreVirtualTuple(slot);
    table_tuple_insert(table.rel, slot, ins.cid, 0, nullptr);
    ExecInsertIndexTuples(table.result, slot, ins.estate, false, false, nullptr, NIL);
}

void close_side_table(SideTable& table) {
    if (table.rel == nullptr) return;
    ExecDropSingleTupleTableSlot(table.slot);
    ExecCloseIndices(table.result);
    table_close(table.rel, NoLock);
    table.rel = nullptr;
}

void flush_target(Inserter& ins, Target& t) {
    if (t.buffered == 0) return;
    table_multi_insert(t.rel, t.slots, t.buffered, ins.cid, 0, t.bulk);
    for (int i = 0; i < t.buffered; ++i) {
        ExecInsertIndexTuples(t.result, t.slots[i], ins.estate, false, false, nullptr, NIL);
        ExecClearTuple(t.slots[i]);
    }
    t.buffered = 0;
}

void flush_rows(Inserter& ins) {
    for (int i = 0; i < ins.ntargets; ++i) flush_target(ins, ins.targets[i]);
}

void close_targets(Inserter& ins) {
    flush_rows(ins);
    for (int i = 0; i < ins.ntargets; ++i) {
        Target& t = ins.targets[i];
        for (TupleTableSlot* slot : t.slots)
            if (slot) ExecDropSingleTupleTableSlot(slot);
        if (t.bulk) FreeBulkInsertState(t.bulk);
        ExecCloseIndices(t.result);
        table_close(t.rel, NoLock);
    }
    ins.ntargets = 0;
}

Target& target_for(Inserter& ins, TimestampTz min_time) {
    const int32 day = day_of(min_time);
    const int32 month = month_of(day);
    for (int i = 0; i < ins.ntargets; ++i)
        if (ins.targets[i].month == month) return ins.targets[i];
    if (ins.ntargets == kMaxTargets) close_targets(ins);
    Target& t = ins.targets[ins.ntargets];
    memset(&t, 0, sizeof t);
    t.month = month;
    // A month dropped between the lookup and the lock (remove_events, DROP TABLE) is made again.
    t.rel = try_table_open(day_partition(day, true), RowExclusiveLock);
    if (t.rel == nullptr) t.rel = table_open(day_partition(day, true), RowExclusiveLock);
    t.slot_desc = CreateTupleDescCopy(RelationGetDescr(t.rel));
    t.result = makeNode(ResultRelInfo);
    // A range table entry of its own, so that a violated constraint can describe the row.
    InitResultRelInfo(t.result, t.rel, 0, nullptr, 0);
    ExecOpenIndices(t.result, false);
    t.check_constraints = RelationGetDescr(t.rel)->constr != nullptr;
    // One group at a time, each in a subtransaction: a buffer pinned by a bulk-insert state in a
    // rolled-back subtransaction would be released under it.
    t.bulk = ins.careful ? nullptr : GetBulkInsertState();
    ++ins.ntargets;
    return t;
}

void insert_group_row(Inserter& ins, Datum* values, bool* nulls) {
    Target& t = target_for(ins, DatumGetTimestampTz(values[kColMinTime]));
    TupleTableSlot*& slot = t.slots[t.buffered];
    if (slot == nullptr) slot = MakeSingleTupleTableSlot(t.slot_desc, &TTSOpsVirtual);
    ExecClearTuple(slot);
    memcpy(slot->tts_values, values, sizeof(Datum) * kNumGroupColumns);
    memcpy(slot->tts_isnull, nulls, sizeof(bool) * kNumGroupColumns);
    ExecStoreVirtualTuple(slot);
    if (t.check_constraints) {
        ExecConstraints(t.result, slot, ins.estate);
        ResetPerTupleExprContext(ins.estate);
    }
    if (++t.buffered == kMultiInsertRows) flush_target(ins, t);
}

// The id of a session or statement row: the one stored before for the same values, or that of
// a row stored now. fill(values, nulls) sets the columns after the id; nulls start all true.
template <int kColumns, class Fill>
int64 side_row_id(Inserter& ins, SideTable& table, int64* next_id, Part part,
                  const pii_audit::EventView* event, GapNames gap, Fill&& fill) {
    int64 id = known_id(part, event, gap);
    if (id != 0) return id;
    id = (*next_id)++;
    Datum values[kColumns];
    bool nulls[kColumns];
    for (bool& n : nulls) n = true;
    values[0] = Int64GetDatum(id);
    nulls[0] = false;
    fill(values, nulls);
    insert_side_row(ins, table, values, nulls, kColumns);
    remember_id(part, id);
    return id;
}

int64 session_id(Inserter& ins, WorkerState* state, const pii_audit::EventView& event) {
    using namespace pii_audit;
    BatchDatums& d = *ins.datums;
    return side_row_id<kNumSessionColumns>(
        ins, ins.sessions, &state->next_session_id, Part::kSession, &event, {},
        [&](Datum* values, bool* nulls) {
            values[1] = d.text(event, kDatabaseName);
            values[2] = d.text(event, kSessionUser);
            values[3] = d.text(event, kCurrentUser);
            values[4] = d.nullable_text(event, kEndUser, &nulls[4]);
            values[5] = d.text(event, kApplicationName);
            nulls[1] = nulls[2] = nulls[3] = nulls[5] = false;
            nulls[6] = (event.header.flags & kFlagClientAddrSet) == 0;
            values[6] = nulls[6] ? Datum(0) : d.inet(event, kClientAddr);
            values[7] = d.text(event, kServerName);
            nulls[7] = false;
        });
}

// A connection attempt reads no relation and runs no statement: its row has only the command.
int64 statement_id(Inserter& ins, WorkerState* state, const pii_audit::EventView& event) {
    using namespace pii_audit;
    BatchDatums& d = *ins.datums;
    return side_row_id<kNumStatementColumns>(
        ins, ins.statements, &state->next_statement_id, Part::kStatement, &event, {},
        [&](Datum* values, bool* nulls) {
            values[1] = d.text(event, kCommand);
            nulls[1] = false;
            if (static_cast<EventKind>(event.header.kind) == EventKind::kLogin) return;
            values[2] = d.text(event, kRelation);
            values[3] = ObjectIdGetDatum(event.header.relation_oid);
            values[4] = d.text_array(event, kColumns);
            values[5] = d.text_array(event, kCategories);
            values[6] = Int64GetDatum(event.header.query_id);
            values[7] = d.text(event, kQueryText);
            values[8] = BoolGetDatum((event.header.flags & kFlagQueryTruncated) != 0);
            for (int i = 2; i <= 8; ++i) nulls[i] = false;
            nulls[6] = event.header.query_id == 0;
        });
}

// ---------------------------------------------------------------- the batch's id cache
// Most events of a batch share the session and the statement of an earlier event of the same
// backend. Each backend's last session, and the last statement per backend, query id and
// relation, are remembered for the batch (the events' fields point into the batch buffer):
// an event equal to them, field by field, takes the same id without building and hashing a
// dictionary key. Equality here is exactly what session_key and statement_key distinguish.
constexpr uint32 kIdCacheSlots = 512;

struct IdCacheSlot {
    uint64 batch;  // the batch that filled it; slots of earlier batches are empty
    int64 id;
    pii_audit::EventView exemplar;
};

struct IdCache {
    uint64 batch;  // counts batches from 1
    IdCacheSlot sessions[kIdCacheSlots];
    IdCacheSlot statements[kIdCacheSlots];
};

// Fields first..last (in wire order) of two decoded events are equal. They lie back to back in
// each record (decode_event), so one comparison of lengths and one of bytes decide.
bool same_fields(const pii_audit::EventView& a, const pii_audit::EventView& b,
                 pii_audit::EventField first, pii_audit::EventField last) {
    const size_t count = static_cast<size_t>(last - first + 1);
    if (memcmp(&a.header.field_length[first], &b.header.field_length[first],
               count * sizeof(a.header.field_length[0])) != 0)
        return false;
    const size_t bytes = static_cast<size_t>(a.field[last].data() + a.field[last].size() -
                                             a.field[first].data());
    return memcmp(a.field[first].data(), b.field[first].data(), bytes) == 0;
}

static_assert(pii_audit::kClientAddr - pii_audit::kDatabaseName == 5 &&
                  pii_audit::kQueryText - pii_audit::kRelation == 3,
              "the session's and the statement's fields are each a run of the wire order");

bool same_session(const pii_audit::EventView& a, const pii_audit::EventView& b) {
    using namespace pii_audit;
    return a.header.source_encoding == b.header.source_encoding &&
           (a.header.flags & kFlagClientAddrSet) == (b.header.flags & kFlagClientAddrSet) &&
           same_fields(a, b, kDatabaseName, kClientAddr) &&
           a.field[kServerName] == b.field[kServerName];
}

bool is_login(const pii_audit::EventView& e) {
    return e.header.kind == static_cast<uint8>(pii_audit::EventKind::kLogin);
}

bool same_statement(const pii_audit::EventView& a, const pii_audit::EventView& b) {
    using namespace pii_audit;
    if (is_login(a) != is_login(b) || a.header.source_encoding != b.header.source_encoding ||
        a.field[kCommand] != b.field[kCommand])
        return false;
    if (is_login(a)) return true;
    return a.header.relation_oid == b.header.relation_oid &&
           a.header.query_id == b.header.query_id &&
           (a.header.flags & kFlagQueryTruncated) == (b.header.flags & kFlagQueryTruncated) &&
           same_fields(a, b, kRelation, kQueryText);
}

uint32 cache_slot(uint64 a, uint64 b) {
    uint64 h = (a * 0x9e3779b97f4a7c15ULL) ^ (b + 0x632be59bd9b4e019ULL);
    h ^= h >> 31;
    h *= 0xff51afd7ed558ccdULL;
    return static_cast<uint32>(h >> 40) % kIdCacheSlots;
}

template <class Lookup>
int64 cached_id(uint64 batch, IdCacheSlot& slot, const pii_audit::EventView& event,
                bool (*same)(const pii_audit::EventView&, const pii_audit::EventView&),
                Lookup&& lookup) {
    if (slot.batch == batch && same(slot.exemplar, event)) return slot.id;
    const int64 id = lookup();
    slot.batch = batch;
    slot.id = id;
    slot.exemplar = event;
    return id;
}

int64 session_id(Inserter& ins, WorkerState* state, const pii_audit::EventView& event);
int64 statement_id(Inserter& ins, WorkerState* state, const pii_audit::EventView& event);

int64 cached_session_id(IdCache& cache, Inserter& ins, WorkerState* state,
                        const pii_audit::EventView& event) {
    IdCacheSlot& slot =
        cache.sessions[cache_slot(static_cast<uint32>(event.header.backend_pid), 0)];
    return cached_id(cache.batch, slot, event, same_session, [&] { return session_id(ins, state, event); });
}

int64 cached_statement_id(IdCache& cache, Inserter& ins, WorkerState* state,
                          const pii_audit::EventView& event) {
    IdCacheSlot& slot = cache.statements[cache_slot(
        static_cast<uint64>(static_cast<uint32>(event.header.backend_pid)) << 32 |
            event.header.relation_oid,
        static_cast<uint64>(event.header.query_id))];
    return cached_id(cache.batch, slot, event, same_statement, [&] { return statement_id(ins, state, event); });
}

// ---------------------------------------------------------------- groups
// The events of a batch that share a session, a statement, a kind, a nesting level and a
// backend become one group (one row), unless it would pass kMaxGroupEvents events or span more
// than kMaxGroupSpanMicros; then the next such event starts a new group.
struct BatchEvent {
    const char* data;  // the queue record, in the batch buffer
    uint32 len;
    int32 next;        // the next event of its group, -1 at the end
    std::string_view server;  // its server name (a queue record of this server carries none)
};

// Decodes an event of the batch again (it was decoded once already), with its server name.
void decode_batch_event(const BatchEvent& be, pii_audit::EventView& event) {
    (void)pii_audit::decode_event(be.data, be.len, event);
    event.field[pii_audit::kServerName] = be.server;
}

struct Group {
    int64 session_id;
    int64 statement_id;  // 0 for none (gaps)
    int32 backend_pid;
    int32 nesting_level;  // -1 for none (logins)
    uint8 kind;
    bool open;
    int32 first, last;  // event indexes
    uint32 count;
    TimestampTz min_time, max_time;
    int64 first_event_id;
    bool subjects;  // it has entries for the subject index
};

struct Grouping {
    BatchEvent* events;
    int32 nevents, events_capacity;
    Group* groups;
    int32 ngroups, groups_capacity;
    int32* slots;  // open addressing: group index + 1, 0 empty
    uint32 slot_mask;
};

uint64 group_hash(int64 session, int64 statement, uint8 kind, int32 nesting, int32 pid) {
    uint64 h = static_cast<uint64>(session) * 0x9e3779b97f4a7c15ULL;
    h ^= static_cast<uint64>(statement) + 0x632be59bd9b4e019ULL + (h << 6) + (h >> 2);
    h ^= (static_cast<uint64>(kind) << 40 | static_cast<uint64>(static_cast<uint32>(nesting)) << 8) +
         (h << 6) + (h >> 2);
    h ^= static_cast<uint64>(static_cast<uint32>(pid)) * 0xff51afd7ed558ccdULL;
    return h ^ (h >> 29);
}

void grouping_init(Grouping& g) {
    memset(&g, 0, sizeof g);
    g.events_capacity = 1024;
    g.events = static_cast<BatchEvent*>(palloc(sizeof(BatchEvent) * g.events_capacity));
    g.groups_capacity = 256;
    g.groups = static_cast<Group*>(palloc(sizeof(Group) * g.groups_capacity));
    g.slot_mask = 1023;
    g.slots = static_cast<int32*>(palloc0(sizeof(int32) * (g.slot_mask + 1)));
}

void grouping_rehash(Grouping& g) {
    g.slot_mask = g.slot_mask * 2 + 1;
    pfree(g.slots);
    g.slots = static_cast<int32*>(palloc0(sizeof(int32) * (g.slot_mask + 1)));
    for (int32 i = 0; i < g.ngroups; ++i) {
        const Group& gr = g.groups[i];
        if (!gr.open) continue;
        uint32 s = static_cast<uint32>(group_hash(gr.session_id, gr.statement_id, gr.kind,
                                                  gr.nesting_level, gr.backend_pid)) &
                   g.slot_mask;
        while (g.slots[s] != 0) s = (s + 1) & g.slot_mask;
        g.slots[s] = i + 1;
    }
}

// Encodes the event into its group's payload and keeps its subject index entries (the group's
// first id is known only once the group is stored: see resolve_slice_entries).
void add_to_group(Grouping& g, int32 gi, const pii_audit::EventView& event, bool first);

// Adds the event to its group (a new one when needed); alone: to a group of its own, which no
// later event joins (careful mode, where a failed event's group is taken back). Each event is
// encoded here, in the one pass over the batch that decodes it: going over the batch again
// group by group cost a second decode and a cache miss per event (perf: a fifth of the worker).
void grouping_add(Grouping& g, const char* data, uint32 len, const pii_audit::EventView& event,
                  int64 session, int64 statement, bool alone = false) {
    if (g.nevents == g.events_capacity) {
        g.events_capacity *= 2;
        g.events = static_cast<BatchEvent*>(
            repalloc(g.events, sizeof(BatchEvent) * static_cast<size_t>(g.events_capacity)));
    }
    const int32 index = g.nevents++;
    g.events[index] = BatchEvent{data, len, -1, event.field[pii_audit::kServerName]};
    const uint8 kind = event.header.kind;
    const int32 nesting = static_cast<pii_audit::EventKind>(kind) == pii_audit::EventKind::kLogin
                              ? -1
                              : event.header.nesting_level;
    const int32 pid = event.header.backend_pid;
    const TimestampTz t = event.header.event_time;
    uint32 s = static_cast<uint32>(group_hash(session, statement, kind, nesting, pid)) & g.slot_mask;
    for (; !alone && g.slots[s] != 0; s = (s + 1) & g.slot_mask) {
        Group& gr = g.groups[g.slots[s] - 1];
        if (gr.session_id != session || gr.statement_id != statement || gr.kind != kind ||
            gr.nesting_level != nesting || gr.backend_pid != pid)
            continue;
        TimestampTz lo = Min(gr.min_time, t), hi = Max(gr.max_time, t);
        if (gr.count < pii_audit::kMaxGroupEvents && hi - lo <= pii_audit::kMaxGroupSpanMicros &&
            (lo == gr.min_time || month_of(day_of(lo)) == month_of(day_of(gr.min_time)))) {
            g.events[gr.last].next = index;
            gr.last = index;
            ++gr.count;
            gr.min_time = lo;
            gr.max_time = hi;
            add_to_group(g, g.slots[s] - 1, event, false);
            return;
        }
        gr.open = false;  // full: the slot goes to a new group below
        break;
    }
    if (g.ngroups == g.groups_capacity) {
        g.groups_capacity *= 2;
        g.groups = static_cast<Group*>(
            repalloc(g.groups, sizeof(Group) * static_cast<size_t>(g.groups_capacity)));
    }
    const int32 gi = g.ngroups++;
    g.groups[gi] = Group{session, statement, pid, nesting, kind, !alone, index, index, 1, t, t, 0, false};
    add_to_group(g, gi, event, true);
    if (alone) return;
    g.slots[s] = gi + 1;
    if (static_cast<uint32>(g.ngroups) * 2 > g.slot_mask) grouping_rehash(g);
}

// ---------------------------------------------------------------- the subject index
// Entries (hash, group) of the events stored since the last slice, kept by the worker until a
// slice is written (in the transaction of the batch that fills it). After any failure the
// worker's start reads them again from the trail (rebuild_subject_slice).
constexpr long kSliceMaxAgeMs = 60L * 60 * 1000;
// Events whose subject list was cut short may have read anyone: subject_access looks them up
// under this hash too.
constexpr int64 kTruncatedMark = INT64_MIN;

struct SliceEntry {
    int64 hash;
    int64 group_first_id;
};

struct SubjectSlice {
    std::vector<SliceEntry> entries;
    int64 first_event_id = 0;  // the first id the slice covers (0: nothing stored yet)
    TimestampTz opened_at = 0;
    TimestampTz min_time = 0, max_time = 0;  // of its groups' min_time
    std::vector<char> rows;                  // built rows: per bucket, the entry bytes
    std::vector<std::pair<int32, std::pair<size_t, size_t>>> buckets;  // bucket, (start, len)
    int bucket_bits = 0;
};
SubjectSlice* slice = nullptr;
char slice_failure[256];

void slice_error() {
    ereport(ERROR, (errmsg("pii_audit: could not keep the subject index: %s", slice_failure)));
}

template <class Fn>
void slice_guarded(Fn&& fn) {
    if (!pii_audit::boundary::cpp_call(nullptr, fn, slice_failure, sizeof slice_failure))
        slice_error();
}

// Forgets the entries kept in memory; the slice restarts at first_event_id.
void reset_slice(int64 first_event_id) {
    slice_guarded([&] {
        if (slice == nullptr) slice = new SubjectSlice();
        slice->entries.clear();
        slice->entries.shrink_to_fit();
        slice->first_event_id = first_event_id;
        slice->opened_at = 0;
    });
}

// The slice's time bounds cover a group with entries whose smallest event time is min_time.
void note_slice_time(TimestampTz min_time) {
    if (slice->opened_at == 0) {
        slice->opened_at = GetCurrentTimestamp();
        slice->min_time = slice->max_time = min_time;
    }
    slice->min_time = Min(slice->min_time, min_time);
    slice->max_time = Max(slice->max_time, min_time);
}

// Keeps the entries of one event of a group: its n subject hashes (hash_at(i)) and, when its
// list was cut short, the mark for possible reads.
template <class HashAt>
void note_group_subjects(int64 group_first_id, TimestampTz min_time, size_t n, bool truncated,
                         HashAt&& hash_at) {
    slice_guarded([&] {
        for (size_t i = 0; i < n; ++i) slice->entries.push_back({hash_at(i), group_first_id});
        if (truncated) slice->entries.push_back({kTruncatedMark, group_first_id});
    });
    note_slice_time(min_time);
}

// Entries added since `from` name their group by its index in the batch (add_to_group); once
// the groups are stored, they get the groups' first ids.
void resolve_slice_entries(size_t from, const Grouping& g) {
    SliceEntry* entries = slice->entries.data();
    const size_t n = slice->entries.size();
    for (size_t i = from; i < n; ++i)
        entries[i].group_first_id = g.groups[entries[i].group_first_id].first_event_id;
}

int32 bucket_of(int64 hash, int bits) {
    return bits == 0 ? 0 : static_cast<int32>(hash >> (64 - bits));
}

// Sorts the slice's entries into bucket rows (PostgreSQL-free).
void build_slice_rows(SubjectSlice& s) {
    const size_t n = s.entries.size();
    // The width follows the configured slice size (about 64 entries a bucket), so that the
    // slices merged later share it (a merge keeps the narrowest width of its slices), and grows
    // for a slice far larger than configured (a batch of bulk reads), to about 128 a bucket.
    int bits = 0;
    const size_t configured = static_cast<size_t>(Max(pii_audit_subject_index_slice, 1));
    while (bits < 16 && ((configured >> bits) > 64 || (n >> bits) > 128)) ++bits;
    s.bucket_bits = bits;
    const int64 base = s.first_event_id;
    // Bucket by bucket (a counting sort: one pass to count, one to place), then each bucket's
    // hundred-odd entries by hash and group. A whole-slice comparison sort of a million entries
    // was a tenth of the worker's time.
    // The index of a bucket: its bits unsigned (bucket_of, which names the rows, is signed).
    auto index = [bits](int64 hash) -> size_t {
        return bits == 0 ? 0 : static_cast<size_t>(static_cast<uint64>(hash) >> (64 - bits));
    };
    std::vector<uint32> starts((size_t{1} << bits) + 1, 0);
    for (const SliceEntry& e : s.entries) ++starts[index(e.hash) + 1];
    for (size_t b = 1; b < starts.size(); ++b) starts[b] += starts[b - 1];
    std::vector<SliceEntry> sorted(n);
    {
        std::vector<uint32> at(starts.begin(), starts.end() - 1);
        for (const SliceEntry& e : s.entries) sorted[at[index(e.hash)]++] = e;
    }
    for (size_t b = 0; b + 1 < starts.size(); ++b)
        std::sort(sorted.begin() + starts[b], sorted.begin() + starts[b + 1],
                  [](const SliceEntry& a, const SliceEntry& c) {
                      uint32 la = static_cast<uint32>(a.hash), lc = static_cast<uint32>(c.hash);
                      if (la != lc) return la < lc;
                      return a.group_first_id < c.group_first_id;
                  });
    s.entries.swap(sorted);
    s.rows.resize(n * pii_audit::kSliceEntryBytes);
    s.buckets.clear();
    char* out = s.rows.data();
    size_t used = 0;
    for (size_t i = 0; i < n;) {
        const int32 bucket = bucket_of(s.entries[i].hash, bits);
        const size_t start = used;
        uint32 last_low = 0;
        int64 last_group = -1;
        for (; i < n && bucket_of(s.entries[i].hash, bits) == bucket; ++i) {
            const uint32 low = static_cast<uint32>(s.entries[i].hash);
            const int64 group = s.entries[i].group_first_id;
            if (low == last_low && group == last_group) continue;  // same subject, same group
            last_low = low;
            last_group = group;
            pii_audit::put_slice_entry(out + used, low, static_cast<uint32>(group - base));
            used += pii_audit::kSliceEntryBytes;
        }
        s.buckets.push_back({bucket, {start, used - start}});
    }
    s.rows.resize(used);
}

bool slice_due(bool force) {
    if (slice == nullptr || slice->entries.empty()) return false;
    return force || slice->entries.size() >= static_cast<size_t>(pii_audit_subject_index_slice) ||
           TimestampDifferenceExceeds(slice->opened_at, GetCurrentTimestamp(), kSliceMaxAgeMs);
}

// Writes the slice kept in memory (its rows through insert(relid-selector, values, nulls)) and
// starts the next one after last_event_id. Runs inside a transaction that also stores (or has
// stored) the slice's groups.
template <class Insert>
void write_slice(int64 last_event_id, Insert&& insert) {
    slice_guarded([&] { build_slice_rows(*slice); });
    const int64 slice_id = slice->first_event_id;
    for (const auto& bucket : slice->buckets) {
        bytea* entries = pii_audit_bytea(
            std::string_view(slice->rows.data() + bucket.second.first, bucket.second.second));
        Datum values[3] = {Int64GetDatum(slice_id), Int32GetDatum(bucket.first),
                           PointerGetDatum(entries)};
        bool nulls[3] = {false, false, false};
        insert(false, values, nulls);
        pfree(entries);
    }
    // The last column, level (0: as written here; merges make the next levels), is new in 0.3.0.
    Datum values[7] = {Int64GetDatum(slice_id),
                       Int64GetDatum(last_event_id),
                       TimestampTzGetDatum(slice->min_time),
                       TimestampTzGetDatum(slice->max_time),
                       Int32GetDatum(slice->bucket_bits),
                       Int64GetDatum(static_cast<int64>(slice->entries.size())),
                       Int16GetDatum(0)};
    bool nulls[7] = {};
    insert(true, values, nulls);
    // If the transaction fails, the worker's start reads the entries again from the trail.
    reset_slice(last_event_id + 1);
    ++slices_written;
    slice_guarded([&] {
        std::vector<char>().swap(slice->rows);
        slice->buckets.clear();
    });
}

// In the batch's transaction, after its groups.
void write_slice_if_due(Inserter& ins, int64 last_event_id) {
    if (!slice_due(false)) return;
    write_slice(last_event_id, [&](bool slices, const Datum* values, const bool* nulls) {
        insert_side_row(ins, slices ? ins.subject_slices : ins.subject_index, values, nulls,
                        slices ? 7 : 3);
    });
}

// At start: the entries of the groups stored after the last slice, read from the trail in
// chunks; a full slice is written on the way (after an upgrade, the whole old trail is indexed
// here, a slice at a time, in bounded memory).
void rebuild_subject_slice() {
    int64 after = pii_audit_spi_int64("SELECT max(last_event_id) FROM pii_audit.trail_subject_slices", 0);
    reset_slice(after + 1);
    SPIPlanPtr insert_index = SPI_prepare(
        "INSERT INTO pii_audit.trail_subject_index VALUES ($1, $2, $3)", 3,
        std::array<Oid, 3>{INT8OID, INT4OID, BYTEAOID}.data());
    SPIPlanPtr insert_slice = SPI_prepare(
        "INSERT INTO pii_audit.trail_subject_slices VALUES ($1, $2, $3, $4, $5, $6)", 6,
        std::array<Oid, 6>{INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID, INT8OID}
            .data());
    if (insert_index == nullptr || insert_slice == nullptr)
        elog(ERROR, "pii_audit: could not prepare the subject index inserts");
    auto spi_insert = [&](bool slices, const Datum* values, const bool* nulls) {
        char n[6];
        for (int i = 0; i < (slices ? 6 : 3); ++i) n[i] = nulls[i] ? 'n' : ' ';
        if (SPI_execute_plan(slices ? insert_slice : insert_index, const_cast<Datum*>(values), n,
                             false, 0) != SPI_OK_INSERT)
            elog(ERROR, "pii_audit: could not write the subject index");
    };
    Oid types[1] = {INT8OID};
    Datum args[1] = {Int64GetDatum(after)};
    Portal portal = SPI_cursor_open_with_args(
        nullptr,
        "SELECT first_event_id, min_time, payload, event_count FROM pii_audit.trail_groups "
        "WHERE first_event_id > $1 ORDER BY first_event_id",
        1, types, args, nullptr, true, 0);
    int64 last_id = after;
    for (;;) {
        SPI_cursor_fetch(portal, true, 10000);
        if (SPI_processed == 0) break;
        SPITupleTable* rows = SPI_tuptable;
        const uint64 nrows = SPI_processed;
        for (uint64 r = 0; r < nrows; ++r) {
            bool isnull;
            HeapTuple tuple = rows->vals[r];
            TupleDesc desc = rows->tupdesc;
            int64 first = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
            TimestampTz min_time = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 2, &isnull));
            bytea* payload = DatumGetByteaPP(SPI_getbinval(tuple, desc, 3, &isnull));
            int32 count = DatumGetInt32(SPI_getbinval(tuple, desc, 4, &isnull));
            // Slices end between groups.
            if (slice->entries.size() >= static_cast<size_t>(pii_audit_subject_index_slice))
                write_slice(last_id, spi_insert);
            pii_audit::GroupDecoder decoder(
                std::string_view(VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload)), min_time);
            pii_audit::GroupEvent e;
            while (decoder.next(e)) {
                if (!e.tracked) continue;
                // Decoded hashes are little-endian.
                note_group_subjects(first, min_time, e.subjects.size() / 8, e.truncated,
                                    [&](size_t i) { return pii_audit::subject_at(e.subjects, i); });
            }
            if (decoder.error() != nullptr)
                ereport(WARNING, (errmsg("pii_audit: the trail group of event %lld is damaged: %s",
                                         static_cast<long long>(first), decoder.error()),
                                  errdetail("Its subjects are left out of the subject index.")));
            last_id = first + count - 1;
        }
        SPI_freetuptable(rows);
    }
    SPI_cursor_close(portal);
}

// ---------------------------------------------------------------- the hash chain
// Tamper evidence (see trail_chain.h): a group's digest covers its row, the values of its
// session and statement rows (as stored) and its payload; a batch's digest covers the previous
// batch's digest and its groups' digests, and goes to pii_audit.trail_digests with the batch.
// Session and statement rows never change and an id names one value, so their digests are kept
// by id in a direct-mapped cache: a repeated session costs a lookup, not a SHA-256.
constexpr uint32 kChainCacheSlots = 16384;

struct ChainCacheSlot {
    int64 id;  // 0: empty (ids start at 1)
    pii_audit::chain::Digest digest;
};

struct ChainCaches {
    ChainCacheSlot sessions[kChainCacheSlots];
    ChainCacheSlot statements[kChainCacheSlots];
};
ChainCaches* chain_caches = nullptr;  // in TopMemoryContext

// The groups this batch stored, in id order (arrays in the batch context).
struct ChainBatch {
    pii_audit::chain::Digest* digests;
    uint32* counts;
    int32 n, capacity;
    int64 first_event_id;
};
ChainBatch chain_batch;

void forget_chain_digests() {
    if (chain_caches == nullptr) return;
    for (ChainCacheSlot& slot : chain_caches->sessions) slot.id = 0;
    for (ChainCacheSlot& slot : chain_caches->statements) slot.id = 0;
}

ChainCacheSlot& chain_slot(ChainCacheSlot* slots, int64 id) {
    const uint64 h = static_cast<uint64>(id) * 0x9e3779b97f4a7c15ULL;
    return slots[(h >> 40) % kChainCacheSlots];
}

void hash_text_datum(pii_audit::chain::Hasher& h, Datum value) {
    text* t = DatumGetTextPP(value);
    h.text(std::string_view(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)));
}

void hash_inet_datum(pii_audit::chain::Hasher& h, Datum value) {
    inet* ip = DatumGetInetPP(value);
    h.inet(ip_family(ip) == PGSQL_AF_INET ? 4 : 6, ip_bits(ip), ip_addr(ip), ip_addrsize(ip));
}

// A list field's items, each as text_array stores it.
void hash_list(pii_audit::chain::Hasher& h, std::string_view list, int encoding) {
    uint32 n = 0;
    pii_audit::for_each_list_item(list, [&](std::string_view) { ++n; });
    h.begin_list(n);
    pii_audit::for_each_list_item(list, [&](std::string_view item) {
        int len = 0;
        const char* text = pii_audit_in_audit_encoding(item, encoding, &len);
        h.item(std::string_view(text, static_cast<size_t>(len)));
    });
}

// The server of the gap row being stored (insert_gap), for its session's digest.
const char* gap_server = nullptr;

// The digest of a session row: of the event's session (the values session_id stores), or, with
// no event, of a gap's (the audit database's name and the server's only).
pii_audit::chain::Digest session_digest(BatchDatums& d, const pii_audit::EventView* event) {
    using namespace pii_audit;
    chain::Hasher h(chain::Tag::kSession);
    if (event == nullptr) {
        h.text(get_database_name(MyDatabaseId));
        for (int i = 0; i < 5; ++i) h.null();
        h.text(gap_server != nullptr ? gap_server : pii_audit_local_server_name());
        return h.finish();
    }
    hash_text_datum(h, d.text(*event, kDatabaseName));
    hash_text_datum(h, d.text(*event, kSessionUser));
    hash_text_datum(h, d.text(*event, kCurrentUser));
    if (event->field[kEndUser].empty())
        h.null();
    else
        hash_text_datum(h, d.text(*event, kEndUser));
    hash_text_datum(h, d.text(*event, kApplicationName));
    if ((event->header.flags & kFlagClientAddrSet) == 0)
        h.null();
    else
        hash_inet_datum(h, d.inet(*event, kClientAddr));
    hash_text_datum(h, d.text(*event, kServerName));
    return h.finish();
}

// The digest of the event's statement row (the values statement_id stores).
pii_audit::chain::Digest statement_digest(BatchDatums& d, const pii_audit::EventView& event) {
    using namespace pii_audit;
    chain::Hasher h(chain::Tag::kStatement);
    hash_text_datum(h, d.text(event, kCommand));
    if (is_login(event)) {
        for (int i = 0; i < 7; ++i) h.null();
        return h.finish();
    }
    hash_text_datum(h, d.text(event, kRelation));
    h.int32(static_cast<int32>(event.header.relation_oid));
    hash_list(h, event.field[kColumns], event.header.source_encoding);
    hash_list(h, event.field[kCategories], event.header.source_encoding);
    if (event.header.query_id == 0)
        h.null();
    else
        h.int64(event.header.query_id);
    hash_text_datum(h, d.text(event, kQueryText));
    h.boolean((event.header.flags & kFlagQueryTruncated) != 0);
    return h.finish();
}

// Digests a group about to be stored (its row's values, its events' payload) into the batch.
void chain_group(Inserter& ins, const Group& gr, const Datum* values, std::string_view payload,
                 const pii_audit::EventView* event) {
    using namespace pii_audit;
    if (chain_caches == nullptr)
        chain_caches = static_cast<ChainCaches*>(
            MemoryContextAllocZero(TopMemoryContext, sizeof(ChainCaches)));
    chain::GroupFields f;
    f.first_event_id = gr.first_event_id;
    f.event_count = static_cast<int32>(gr.count);
    f.min_time = gr.min_time;
    f.max_time = gr.max_time;
    f.recorded_at = ins.now;
    text* kind = DatumGetTextPP(values[kColKind]);
    f.kind = std::string_view(VARDATA_ANY(kind), VARSIZE_ANY_EXHDR(kind));
    f.has_backend_pid = gr.kind != kGapKind;
    f.backend_pid = gr.backend_pid;
    f.has_nesting_level = gr.nesting_level >= 0;
    f.nesting_level = gr.nesting_level;
    ChainCacheSlot& session = chain_slot(chain_caches->sessions, gr.session_id);
    if (session.id != gr.session_id) {
        session.digest = session_digest(*ins.datums, event);
        session.id = gr.session_id;
    }
    f.session = session.digest;
    f.has_statement = gr.statement_id != 0 && event != nullptr;
    if (f.has_statement) {
        ChainCacheSlot& statement = chain_slot(chain_caches->statements, gr.statement_id);
        if (statement.id != gr.statement_id) {
            statement.digest = statement_digest(*ins.datums, *event);
            statement.id = gr.statement_id;
        }
        f.statement = statement.digest;
    }
    f.payload = payload;
    ChainBatch& b = chain_batch;
    if (b.n == b.capacity) {
        b.capacity = b.capacity == 0 ? 256 : b.capacity * 2;
        const size_t n = static_cast<size_t>(b.capacity);
        b.digests = static_cast<chain::Digest*>(
            b.digests == nullptr ? palloc(n * sizeof(chain::Digest))
                                 : repalloc(b.digests, n * sizeof(chain::Digest)));
        b.counts =
            static_cast<uint32*>(b.counts == nullptr ? palloc(n * sizeof(uint32))
                                                     : repalloc(b.counts, n * sizeof(uint32)));
    }
    if (b.n == 0) b.first_event_id = gr.first_event_id;
    b.digests[b.n] = chain::group_digest(f);
    b.counts[b.n] = gr.count;
    ++b.n;
}

// The batch's row of pii_audit.trail_digests, after its groups; returns its digest.
pii_audit::chain::Digest store_batch_digest(Inserter& ins, const pii_audit::chain::Digest& previous,
                                            int64 last_event_id) {
    using namespace pii_audit;
    const ChainBatch& b = chain_batch;
    const chain::Digest digest = chain::batch_digest(previous, b.first_event_id, last_event_id,
                                                     b.digests, static_cast<size_t>(b.n));
    const size_t entries_size = static_cast<size_t>(b.n) * chain::kGroupEntrySize;
    bytea* entries = static_cast<bytea*>(palloc(VARHDRSZ + entries_size));
    SET_VARSIZE(entries, VARHDRSZ + entries_size);
    for (int32 i = 0; i < b.n; ++i)
        chain::group_entry(b.counts[i], b.digests[i],
                           reinterpret_cast<unsigned char*>(VARDATA(entries)) +
                               static_cast<size_t>(i) * chain::kGroupEntrySize);
    auto as_bytea = [](const chain::Digest& d) {
        return PointerGetDatum(pii_audit_bytea(
            std::string_view(reinterpret_cast<const char*>(d.bytes), chain::kDigestSize)));
    };
    Datum values[6] = {Int64GetDatum(b.first_event_id),
                       Int64GetDatum(last_event_id),
                       TimestampTzGetDatum(ins.now),
                       as_bytea(previous),
                       as_bytea(digest),
                       PointerGetDatum(entries)};
    bool nulls[6] = {};
    insert_side_row(ins, ins.digests, values, nulls, 6);
    return digest;
}

// ---------------------------------------------------------------- storing a batch
// Errors that say the server, not the event, is in trouble (disk full, out of memory, I/O):
// skipping events for them would lose what a retry will store.
bool environmental(const ErrorData* error) {
    int category = ERRCODE_TO_CATEGORY(error->sqlerrcode);
    return category == ERRCODE_INSUFFICIENT_RESOURCES || category == ERRCODE_OPERATOR_INTERVENTION ||
           category == ERRCODE_SYSTEM_ERROR || error->sqlerrcode == ERRCODE_DATA_CORRUPTED ||
           error->sqlerrcode == ERRCODE_INDEX_CORRUPTED || error->elevel > ERROR;
}

// The per-event part of a queued event, for its group's payload. Text is converted to the audit
// database's encoding first.
pii_audit::GroupEvent group_event(const pii_audit::EventView& event) {
    using namespace pii_audit;
    GroupEvent e;
    auto kind = static_cast<EventKind>(event.header.kind);
    e.event_time = event.header.event_time;
    e.status = event.header.status;
    // A label change counts no rows; a connection attempt reads none.
    e.has_row_count = kind != EventKind::kLabelChange && kind != EventKind::kLogin &&
                      !(kind == EventKind::kRemoval && event.header.row_count < 0);
    e.row_count = event.header.row_count;
    e.tracked = (event.header.flags & kFlagSubjectsTracked) != 0;
    e.truncated = (event.header.flags & kFlagSubjectsTruncated) != 0;
    e.estimated = (event.header.flags & kFlagSubjectCountEstimated) != 0;
    e.subject_count = event.header.subject_count;
    e.subjects = event.field[kSubjects];
    e.has_detail = !event.field[kDetail].empty();
    if (e.has_detail) {
        int len = 0;
        const char* text =
            pii_audit_in_audit_encoding(event.field[kDetail], event.header.source_encoding, &len);
        e.detail = std::string_view(text, static_cast<size_t>(len));
    }
    return e;
}

pii_audit::GroupEncoder* encoder = nullptr;  // gap rows
// One encoder per group of the batch (by index), kept for the worker's life so that their
// buffers are reused.
std::vector<pii_audit::GroupEncoder>* group_encoders = nullptr;
char encoder_failure[256];

void add_to_group(Grouping& g, int32 gi, const pii_audit::EventView& event, bool first) {
    using namespace pii_audit;
    const GroupEvent e = group_event(event);
    if (!boundary::cpp_call(nullptr, [&] {
            if (group_encoders == nullptr) group_encoders = new std::vector<GroupEncoder>();
            if (group_encoders->size() <= static_cast<size_t>(gi))
                group_encoders->resize(static_cast<size_t>(gi) + 1);
            GroupEncoder& enc = (*group_encoders)[static_cast<size_t>(gi)];
            if (first) enc.reset(e.event_time);
            enc.add(e);
            if (!e.tracked) return;
            // Hashes from the queue are in host order.
            const size_t n = e.subjects.size() / 8;
            for (size_t i = 0; i < n; ++i) {
                int64 h;
                memcpy(&h, e.subjects.data() + i * 8, 8);
                slice->entries.push_back({h, gi});
            }
            if (e.truncated) slice->entries.push_back({kTruncatedMark, gi});
        }, encoder_failure, sizeof encoder_failure))
        elog(ERROR, "pii_audit: could not encode a trail group: %s", encoder_failure);
    if (e.tracked && (e.truncated || !e.subjects.empty())) g.groups[gi].subjects = true;
}

void insert_group(Inserter& ins, const Group& gr, std::string_view payload,
                  const pii_audit::EventView* event);

// Stores group gi of the batch (its events encoded by add_to_group), with ids from
// state->next_event_id. Returns the group's first event id.
int64 store_group(Inserter& ins, WorkerState* state, Grouping& g, int32 gi) {
    using namespace pii_audit;
    Group& gr = g.groups[gi];
    gr.first_event_id = state->next_event_id;
    state->next_event_id += gr.count;
    std::string_view payload;
    if (!boundary::cpp_call(nullptr, [&] {
            payload = (*group_encoders)[static_cast<size_t>(gi)].finish(gr.min_time);
        }, encoder_failure, sizeof encoder_failure))
        elog(ERROR, "pii_audit: could not encode a trail group: %s", encoder_failure);
    if (gr.subjects) note_slice_time(gr.min_time);
    EventView first;
    decode_batch_event(g.events[gr.first], first);
    insert_group(ins, gr, payload, &first);
    return gr.first_event_id;
}

// The row of a group (its events encoded in payload; event: its first, nullptr for a gap).
void insert_group(Inserter& ins, const Group& gr, std::string_view payload,
                  const pii_audit::EventView* event) {
    using namespace pii_audit;
    BatchDatums& d = *ins.datums;
    Datum values[kNumGroupColumns];
    bool nulls[kNumGroupColumns] = {};
    values[kColFirstEventId] = Int64GetDatum(gr.first_event_id);
    values[kColEventCount] = Int32GetDatum(static_cast<int32>(gr.count));
    values[kColMinTime] = TimestampTzGetDatum(gr.min_time);
    values[kColMaxTime] = TimestampTzGetDatum(gr.max_time);
    values[kColRecordedAt] = TimestampTzGetDatum(ins.now);
    values[kColSessionId] = Int64GetDatum(gr.session_id);
    values[kColStatementId] = Int64GetDatum(gr.statement_id);
    nulls[kColStatementId] = gr.statement_id == 0;
    values[kColBackendPid] = Int32GetDatum(gr.backend_pid);
    nulls[kColBackendPid] = gr.kind == kGapKind;
    values[kColNestingLevel] = Int32GetDatum(gr.nesting_level);
    nulls[kColNestingLevel] = gr.nesting_level < 0;
    switch (gr.kind) {
        case static_cast<uint8>(EventKind::kLabelChange): values[kColKind] = d.kind_label_change; break;
        case static_cast<uint8>(EventKind::kLogin): values[kColKind] = d.kind_login; break;
        case kGapKind: values[kColKind] = d.kind_gap; break;
        case static_cast<uint8>(EventKind::kRemoval): values[kColKind] = d.kind_removal; break;
        default: values[kColKind] = d.kind_read; break;
    }
    values[kColPayload] = PointerGetDatum(pii_audit_bytea(payload));
    if (ins.chained) chain_group(ins, gr, values, payload, event);
    insert_group_row(ins, values, nulls);
}

// Feeds the scorer the events of a stored group, in id order.
void observe_group(Grouping& g, const Group& gr) {
    if (!pii_audit_scoring_observing(gr.first_event_id + gr.count - 1)) return;
    int64 id = gr.first_event_id;
    for (int32 i = gr.first; i >= 0; i = g.events[i].next) {
        pii_audit::EventView event;
        decode_batch_event(g.events[i], event);
        // A group's events share their session and statement (same_session, same_statement).
        pii_audit_scoring_observe(id++, event, i != gr.first);
    }
}

// Careful mode: rows inserted by insert() (a group, or a gap row) go in a subtransaction of
// their own. Returns nullptr when they stay, else the error after undoing them: the ids taken
// (*next as before), the rows still buffered, and the remembered side rows (rolled back too).
// An error that says the server is in trouble fails the whole batch instead (retried later).
template <class Fn>
ErrorData* insert_alone(Inserter& ins, WorkerState* next, Fn&& insert) {
    flush_rows(ins);  // rows already buffered are not these rows' to roll back
    // A buffer pinned by a bulk-insert state would change hands inside the subtransaction:
    // from here on this batch inserts without one.
    for (int t = 0; t < ins.ntargets; ++t) {
        if (ins.targets[t].bulk == nullptr) continue;
        FreeBulkInsertState(ins.targets[t].bulk);
        ins.targets[t].bulk = nullptr;
    }
    ins.careful = true;
    const WorkerState before = *next;
    const size_t slice_entries = slice != nullptr ? slice->entries.size() : 0;
    const int32 chain_groups = chain_batch.n;
    ErrorData* error = pii_audit::boundary::pg_subtransaction([&] {
        insert();
        flush_rows(ins);
    });
    if (error == nullptr) return nullptr;
    if (environmental(error)) ReThrowError(error);
    *next = before;
    for (int t = 0; t < ins.ntargets; ++t) {
        Target& target = ins.targets[t];
        for (int i = 0; i < target.buffered; ++i) ExecClearTuple(target.slots[i]);
        target.buffered = 0;
    }
    slice_guarded([&] { slice->entries.resize(slice_entries); });
    chain_batch.n = chain_groups;
    reset_dictionaries();
    return error;
}

// In careful mode (and after a gap row failed) a gap row goes in alone: a gap that cannot be
// stored (a constraint someone added) is logged and tried again with the next batch, and never
// keeps the events around it from being stored. True when it was stored.
template <class Fn>
bool store_gap(bool careful, Inserter& ins, WorkerState* next, Fn&& insert) {
    if (!careful && !next->gap_failing) {
        insert();
        return true;
    }
    ErrorData* error = insert_alone(ins, next, insert);
    next->gap_failing = error != nullptr;
    if (error == nullptr) return true;
    ereport(WARNING, (errmsg("pii_audit: a gap row could not be stored: %s", error->message),
                      errdetail("It is tried again with the next batch.")));
    FreeErrorData(error);
    return false;
}

// A row that says events are missing here, and how many (or that the count is unknown). Its
// session holds only the audit database's name and the server's (this one's, or a standby's
// whose lost events it records); it has no statement.
void insert_gap(Inserter& ins, WorkerState* state, int64 lost, const char* detail,
                const char* server = nullptr) {
    const char* database = get_database_name(MyDatabaseId);
    if (server == nullptr) server = pii_audit_local_server_name();
    gap_server = server;
    int64 session = side_row_id<kNumSessionColumns>(ins, ins.sessions, &state->next_session_id,
                                                    Part::kGapSession, nullptr, {database, server},
                                                    [&](Datum* values, bool* nulls) {
                                                        values[1] = CStringGetTextDatum(database);
                                                        nulls[1] = false;
                                                        values[7] = CStringGetTextDatum(server);
                                                        nulls[7] = false;
                                                    });
    // The gap's one event is encoded directly (it came from no queue record).
    Group gr{session, 0, 0, -1, kGapKind, false, -1, -1, 1, ins.now, ins.now, 0, false};
    gr.first_event_id = state->next_event_id++;
    pii_audit::GroupEvent e;
    e.event_time = ins.now;
    e.status = 4;  // lost
    e.has_row_count = lost >= 0;
    e.row_count = lost;
    e.has_detail = true;
    e.detail = detail;
    std::string_view payload;
    if (!pii_audit::boundary::cpp_call(nullptr, [&] {
            if (encoder == nullptr) encoder = new pii_audit::GroupEncoder();
            encoder->reset(ins.now);
            encoder->add(e);
            payload = encoder->finish();
        }, encoder_failure, sizeof encoder_failure))
        elog(ERROR, "pii_audit: could not encode a gap row: %s", encoder_failure);
    insert_group(ins, gr, payload, nullptr);
}

// ---------------------------------------------------------------- batches from standbys
// Batches hot standbys handed in (storage/forwarder.cpp), in the order they were kept, copied
// into the batch context: their events are stored in this batch's transaction, which also
// deletes their rows.
struct ForwardedBatch {
    int64 id;
    std::string_view server;  // NUL-terminated
    int64 skip_through;
    int64 lost;
    const char* loss_note;  // a loss of unknown size on the standby (why), or nullptr
    const char* data;
    size_t size;
};
struct ForwardedBatches {
    ForwardedBatch* batches;
    int n;
    bool more;  // there may be more than were taken
};
constexpr int kMaxForwardedBatches = 32;

void fetch_forwarded(ForwardedBatches& out, MemoryContext batch_context) {
    out = ForwardedBatches{};
    Oid nsp = get_namespace_oid("pii_audit", true);
    if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("forwarded_batches", nsp))) return;
    SPI_connect();
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT batch_id, server_name, skip_through, lost, records, note "
             "FROM pii_audit.forwarded_batches ORDER BY batch_id LIMIT %d",
             kMaxForwardedBatches);
    if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
        elog(ERROR, "pii_audit: could not read the batches standbys forwarded");
    out.batches = static_cast<ForwardedBatch*>(MemoryContextAllocZero(
        batch_context, sizeof(ForwardedBatch) * (SPI_processed > 0 ? SPI_processed : 1)));
    size_t bytes = 0;
    for (uint64 i = 0; i < SPI_processed; ++i) {
        HeapTuple tuple = SPI_tuptable->vals[i];
        TupleDesc desc = SPI_tuptable->tupdesc;
        bool isnull;
        ForwardedBatch& fb = out.batches[out.n];
        fb.id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
        char* server = SPI_getvalue(tuple, desc, 2);
        fb.server = MemoryContextStrdup(batch_context, server ? server : "");
        fb.skip_through = DatumGetInt64(SPI_getbinval(tuple, desc, 3, &isnull));
        fb.lost = DatumGetInt64(SPI_getbinval(tuple, desc, 4, &isnull));
        bytea* records = DatumGetByteaPP(SPI_getbinval(tuple, desc, 5, &isnull));
        fb.size = VARSIZE_ANY_EXHDR(records);
        char* copy = static_cast<char*>(MemoryContextAlloc(batch_context, fb.size + 1));
        memcpy(copy, VARDATA_ANY(records), fb.size);
        fb.data = copy;
        char* note = SPI_getvalue(tuple, desc, 6);
        fb.loss_note = note ? MemoryContextStrdup(batch_context, note) : nullptr;
        ++out.n;
        bytes += fb.size;
        // About one queue batch of standbys' events per transaction.
        if (bytes >= kBatchBytes && i + 1 < SPI_processed) {
            out.more = true;
            break;
        }
    }
    if (SPI_processed == static_cast<uint64>(kMaxForwardedBatches)) out.more = true;
    SPI_finish();
}

// Persists one batch (and any gap to report) in one transaction. Returns how many queue
// records the batch held; *more says the batch was cut short by its buffer.
uint64 flush_once(WorkerState* state, char* buffer, MemoryContext batch_context, bool careful,
                  bool* more) {
    QueueBatch batch{};
    bool have_records = pii_audit_queue_peek(buffer, kBatchBytes, &batch);
    uint64 dropped = pii_audit_queue_dropped();
    // Why events were lost at the last start or crash restart (the queue file's recovery).
    char note[320];
    bool note_unknown_loss = false;
    const uint64 note_serial = pii_audit_queue_note(note, sizeof note, &note_unknown_loss, nullptr);
    bool have_gap = dropped > state->dropped_recorded || state->note_unclean_restart ||
                    note_unknown_loss;
    *more = have_records && batch.size + (64 * 1024) >= kBatchBytes;
    // Batches hot standbys handed in (pii_audit.forward_events), signalled at their commit.
    const uint64 forwarded_generation = pii_audit_forwarded_generation();
    const bool have_forwarded =
        state->forwarded_more || forwarded_generation != state->forwarded_seen;
    if (!have_records && !have_gap && !have_forwarded) return 0;

    // The transaction switches to its own context: the batch's allocations go to the batch
    // context, reset after every batch.
    pii_audit_worker_begin_transaction();
    // DROP EXTENSION (or a dropped table) since prepare(): the events stay queued, and the
    // worker waits for the trail again instead of failing on relations that are gone.
    // The SQL of 0.3.0 (ALTER EXTENSION UPDATE) may arrive while the worker runs: from then
    // on batches are chained.
    if (!OidIsValid(state->digests_relid)) {
        find_digests_table(state);
        // 0.3.0's SQL arrived: sessions have a server name from now on, and the session rows
        // stored before without one are not reused (their chained digest would not match).
        if (OidIsValid(state->digests_relid)) reset_dictionaries();
    }
    const Oid tables[] = {state->groups_relid, state->sessions_relid, state->statements_relid,
                          state->subject_index_relid, state->subject_slices_relid,
                          OidIsValid(state->digests_relid) ? state->digests_relid
                                                           : state->groups_relid};
    for (Oid relid : tables) {
        // Locked now (a DROP in progress is waited for), and held until the batch commits.
        if (Relation rel = try_table_open(relid, RowExclusiveLock)) {
            table_close(rel, NoLock);
            continue;
        }
        pii_audit_worker_commit_transaction();
        state->trail_gone = true;
        *more = false;
        return 0;
    }
    MemoryContext old = MemoryContextSwitchTo(batch_context);
    ForwardedBatches forwarded{};
    if (have_forwarded) fetch_forwarded(forwarded, batch_context);
    pgstat_report_activity(STATE_RUNNING, careful ? "pii_audit: persisting audit events one by one"
                                                  : "pii_audit: persisting audit events");

    Inserter& ins = *static_cast<Inserter*>(palloc0(sizeof(Inserter)));
    ins.careful = careful;
    ins.estate = CreateExecutorState();
    ins.cid = GetCurrentCommandId(true);
    // Times only move forward from one batch to the next, whatever the clock does.
    ins.now = Max(GetCurrentTimestamp(), state->last_recorded_at);
    ins.datums = new (palloc(sizeof(BatchDatums))) BatchDatums();
    ins.datums->kind_read = CStringGetTextDatum("read");
    ins.datums->kind_label_change = CStringGetTextDatum("label_change");
    ins.datums->kind_login = CStringGetTextDatum("login");
    ins.datums->kind_gap = CStringGetTextDatum("gap");
    ins.datums->kind_removal = CStringGetTextDatum("removal");
    ins.sessions.relid = state->sessions_relid;
    ins.statements.relid = state->statements_relid;
    ins.subject_index.relid = state->subject_index_relid;
    ins.subject_slices.relid = state->subject_slices_relid;
    ins.digests.relid = state->digests_relid;
    ins.chained = OidIsValid(state->digests_relid);
    chain_batch = ChainBatch{};

    // Everything a subtransaction (careful mode, gap rows) writes to is opened out here: a
    // relation opened inside one would be released with it.
    open_side_table(ins, ins.sessions);
    open_side_table(ins, ins.statements);
    (void)target_for(ins, ins.now);

    WorkerState next = *state;
    next.last_recorded_at = ins.now;
    uint64 records = 0;
    int64 unstorable = 0;
    char unstorable_reason[256] = "";
    bool note_stored = false;
    if ((next.note_unclean_restart || note_unknown_loss) &&
        store_gap(careful, ins, &next, [&] {
            insert_gap(ins, &next, -1,
                       note_unknown_loss ? note
                       : next.promoted
                           ? "this server was promoted from a hot standby while the old primary "
                             "had not stopped cleanly; audit events still queued there, or "
                             "stored there but not yet replicated to this server, were lost "
                             "with it (their number is unknown)"
                           : "the server restarted after a crash; audit events still queued in "
                             "shared memory at that moment were lost (their number is unknown)");
        })) {
        next.note_unclean_restart = false;
        note_stored = note_unknown_loss;
    }

    Grouping g;
    grouping_init(g);
    // Not in careful mode, where a failed event rolls back the side rows it added. Kept for the
    // worker's life (a fresh one per batch cost page faults): a new batch number empties it.
    static IdCache* id_cache = nullptr;
    if (id_cache == nullptr)
        id_cache = static_cast<IdCache*>(MemoryContextAllocZero(TopMemoryContext, sizeof(IdCache)));
    IdCache& cache = *id_cache;
    ++cache.batch;
    const size_t batch_entries_from = slice->entries.size();
    const std::string_view local_server = pii_audit_local_server_name();
    // One record: of this server's queue (from == nullptr), or of a batch a standby handed in.
    auto add_record = [&](const char* data, size_t len, const ForwardedBatch* from) {
        pii_audit::EventView event;
        if (!pii_audit::decode_event(data, len, event)) {
            ereport(WARNING, (errmsg("pii_audit: skipped a malformed queue record")));
            ++unstorable;
            if (unstorable_reason[0] == '\0')
                strlcpy(unstorable_reason, "a malformed record in the queue",
                        sizeof unstorable_reason);
            return;
        }
        if (from != nullptr) {
            // Kept before (a batch sent again with more records after a lost confirmation).
            if (static_cast<int64>(event.header.queue_seq) <= from->skip_through) return;
            event.field[pii_audit::kServerName] = from->server;
        } else {
            if (event.header.queue_seq <= next.persisted_seq) return;  // stored before a restart
            next.persisted_seq = event.header.queue_seq;
            // This server's own events (a backend leaves the name to the worker).
            event.field[pii_audit::kServerName] = local_server;
        }
        if (!careful) {
            grouping_add(g, data, static_cast<uint32>(len), event,
                         cached_session_id(cache, ins, &next, event),
                         cached_statement_id(cache, ins, &next, event));
            return;
        }
        // Careful: each event alone (its side rows, its one-event group), in a subtransaction.
        (void)target_for(ins, event.header.event_time);
        const int32 before = g.ngroups, before_events = g.nevents;
        ErrorData* error = insert_alone(ins, &next, [&] {
            const size_t entries_from = slice->entries.size();
            grouping_add(g, data, static_cast<uint32>(len), event, session_id(ins, &next, event),
                         statement_id(ins, &next, event), true);
            store_group(ins, &next, g, g.ngroups - 1);
            resolve_slice_entries(entries_from, g);
        });
        if (error == nullptr) {
            observe_group(g, g.groups[g.ngroups - 1]);
        } else {
            g.ngroups = before;
            g.nevents = before_events;
            // This event can never be stored: skip it, count it, say why in a gap row.
            if (unstorable++ == 0)
                strlcpy(unstorable_reason, error->message, sizeof unstorable_reason);
            ereport(WARNING, (errmsg("pii_audit: an audit event could not be stored: %s",
                                     error->message),
                              errdetail("It is skipped and counted in a gap row of the trail.")));
            FreeErrorData(error);
        }
        if (from == nullptr) next.persisted_seq = event.header.queue_seq;
    };
    pii_audit::for_each_peeked_record(batch.data, batch.size, [&](const char* data, size_t len) {
        ++records;
        add_record(data, len, nullptr);
    });
    for (int i = 0; i < forwarded.n; ++i) {
        const ForwardedBatch& fb = forwarded.batches[i];
        if (fb.loss_note != nullptr) {
            char detail[600];
            snprintf(detail, sizeof detail,
                     "audit events were lost on standby \"%s\" (how many is unknown): %s",
                     fb.server.data(), fb.loss_note);
            // Not kept for a retry (its batch row goes with this transaction): said in the log.
            if (!store_gap(careful, ins, &next,
                           [&] { insert_gap(ins, &next, -1, detail, fb.server.data()); }))
                ereport(WARNING, (errmsg("pii_audit: not recorded in the trail: %s", detail)));
        }
        if (fb.lost > 0) {
            char detail[400];
            snprintf(detail, sizeof detail,
                     "%lld audit events were lost on standby \"%s\": dropped because its queue "
                     "was full (while the primary could not be reached, or its worker could not "
                     "keep up; see pii_audit.queue_size there)",
                     static_cast<long long>(fb.lost), fb.server.data());
            if (!store_gap(careful, ins, &next,
                           [&] { insert_gap(ins, &next, fb.lost, detail, fb.server.data()); }))
                pii_audit_queue_count_lost(static_cast<uint64>(fb.lost));
        }
        pii_audit::forward::for_each_record(
            fb.data, fb.size, [&](const char* data, size_t len) { add_record(data, len, &fb); });
    }
    if (!careful) {
        // A failed batch is rolled back whole, and the scorer rebuilt from its last save.
        for (int32 i = 0; i < g.ngroups; ++i) {
            store_group(ins, &next, g, i);
            observe_group(g, g.groups[i]);
        }
        resolve_slice_entries(batch_entries_from, g);
    }
    if (unstorable > 0) {
        char detail[512];
        snprintf(detail, sizeof detail,
                 "%lld audit events could not be stored and were skipped (first error: %s)",
                 static_cast<long long>(unstorable), unstorable_reason);
        // Counted with the drops if it cannot be stored: the next gap row then says so.
        if (!store_gap(careful, ins, &next, [&] { insert_gap(ins, &next, unstorable, detail); }))
            pii_audit_queue_count_lost(static_cast<uint64>(unstorable));
    }
    if (dropped > next.dropped_recorded) {
        char detail[600];
        if (note[0] != '\0' && !note_unknown_loss)
            snprintf(detail, sizeof detail,
                     "%llu audit events were lost: %s; any others were dropped because the queue "
                     "was full (see pii_audit.queue_size and pii_audit.on_queue_full)",
                     static_cast<unsigned long long>(dropped - next.dropped_recorded), note);
        else
            snprintf(detail, sizeof detail,
                     "%llu audit events were lost: dropped because the queue was full (see "
                     "pii_audit.queue_size and pii_audit.on_queue_full), or, rarely, taken from "
                     "it but neither storable nor recordable as a gap (see the server log)",
                     static_cast<unsigned long long>(dropped - next.dropped_recorded));
        if (store_gap(careful, ins, &next, [&] {
                insert_gap(ins, &next, static_cast<int64>(dropped - next.dropped_recorded),
                           detail);
            })) {
            next.dropped_recorded = dropped;
            if (!note_unknown_loss) note_stored = true;
        }
    }

    close_targets(ins);
    if (ins.chained && chain_batch.n > 0)
        next.chain_last = store_batch_digest(ins, state->chain_last, next.next_event_id - 1);
    write_slice_if_due(ins, next.next_event_id - 1);
    close_side_table(ins.sessions);
    close_side_table(ins.statements);
    close_side_table(ins.subject_index);
    close_side_table(ins.subject_slices);
    close_side_table(ins.digests);
    FreeExecutorState(ins.estate);

    // Alerts commit with the events that raised them. Storing never depends on scoring: a
    // failure there rolls back only the alerts and stops scoring.
    if (ErrorData* error =
            pii_audit::boundary::pg_subtransaction([] { pii_audit_scoring_store_alerts(); })) {
        pii_audit_scoring_failed("storing alerts", error->message);
        FreeErrorData(error);
    }

    SPI_connect();
    if (state->save_position == nullptr) {
        Oid types[3] = {INT8OID, INT8OID, INT8OID};
        SPIPlanPtr plan = SPI_prepare(
            "UPDATE pii_audit.worker_state SET last_queue_seq = $1, dropped_recorded = $2, "
            "last_event_id = $3, updated_at = now()",
            3, types);
        if (plan == nullptr || SPI_keepplan(plan) != 0)
            elog(ERROR, "pii_audit: could not prepare the worker_state update");
        state->save_position = next.save_position = plan;
    }
    Datum position[3] = {Int64GetDatum(static_cast<int64>(next.persisted_seq)),
                         Int64GetDatum(static_cast<int64>(next.dropped_recorded)),
                         Int64GetDatum(next.next_event_id - 1)};
    if (SPI_execute_plan(state->save_position, position, nullptr, false, 0) != SPI_OK_UPDATE)
        elog(ERROR, "pii_audit: could not record the worker's position");
    if (forwarded.n > 0) {
        char sql[160];
        snprintf(sql, sizeof sql, "DELETE FROM pii_audit.forwarded_batches WHERE batch_id <= %lld",
                 static_cast<long long>(forwarded.batches[forwarded.n - 1].id));
        if (SPI_execute(sql, false, 0) != SPI_OK_DELETE)
            elog(ERROR, "pii_audit: could not remove the forwarded batches it stored");
    }
    // Wake followers of the trail (pii-audit-export LISTENs): the payload is the last event_id
    // this batch made visible. Skipped while NOTIFY's queue is half full, so a listener that
    // never reads cannot make the commit fail; followers poll as well.
    if (next.next_event_id > state->next_event_id) {
        char sql[160];
        snprintf(sql, sizeof sql,
                 "SELECT pg_catalog.pg_notify('pii_audit_events', '%lld') "
                 "WHERE pg_catalog.pg_notification_queue_usage() < 0.5",
                 static_cast<long long>(next.next_event_id - 1));
        if (SPI_execute(sql, false, 0) != SPI_OK_SELECT)
            elog(ERROR, "pii_audit: could not notify pii_audit_events");
    }
    SPI_finish();

    MemoryContextSwitchTo(old);
    pii_audit_worker_commit_transaction();
    pii_audit_scoring_after_commit();
    pgstat_report_activity(STATE_IDLE, nullptr);
    MemoryContextReset(batch_context);

    next.forwarded_seen = forwarded_generation;
    next.forwarded_more = forwarded.more;
    if (forwarded.more) *more = true;
    *state = next;
    if (note_stored && note[0] != '\0') pii_audit_queue_clear_note(note_serial);
    if (have_records) pii_audit_queue_release(batch, records);
    return records;
}

// On a hot standby: hand the queue's events to the primary until promoted (then the process
// exits, and the postmaster starts the worker again as a primary's) or stopped.
[[noreturn]] void forward_main() {
    ereport(LOG, (errmsg("pii_audit worker started on a hot standby: audit events are forwarded "
                         "to the primary as server \"%s\"",
                         pii_audit_local_server_name())));
    static char* buffer = nullptr;
    buffer = static_cast<char*>(MemoryContextAlloc(TopMemoryContext, kBatchBytes));
    pii_audit::boundary::pg_recovery_loop(
        [&] {
            CHECK_FOR_INTERRUPTS();
            if (ConfigReloadPending) {
                ConfigReloadPending = false;
                ProcessConfigFile(PGC_SIGHUP);
                pii_audit_forward_stop();  // the connection string may have changed
            }
            if (!RecoveryInProgress()) {
                pii_audit_forward_stop();
                ereport(LOG, (errmsg("pii_audit: this standby was promoted; the worker restarts "
                                     "to store audit events itself")));
                proc_exit(1);
            }
            // The queue file keeps what is not forwarded yet for the next start.
            if (shutdown_requested) {
                pii_audit_forward_stop();
                proc_exit(1);
            }
            long wait_ms = pii_audit_forward_step(buffer, kBatchBytes);
            if (wait_ms > 0) {
                (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, wait_ms,
                                PG_WAIT_EXTENSION);
                ResetLatch(MyLatch);
            }
        },
        [&](ErrorData* error) {
            pii_audit_forward_stop();
            char problem[sizeof(PiiAuditStatus::worker_problem)];
            snprintf(problem, sizeof problem, "forwarding failed, retrying: %s", error->message);
            pii_audit_queue_set_problem(problem);
            pii_audit_queue_set_ready(false);
            (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1000,
                            PG_WAIT_EXTENSION);
            ResetLatch(MyLatch);
        });
}

void mark_clean_shutdown() {
    pii_audit_worker_begin_transaction();
    SPI_connect();
    SPI_execute("UPDATE pii_audit.worker_state SET clean_shutdown = true, updated_at = now()",
                false, 0);
    SPI_finish();
    pii_audit_worker_commit_transaction();
}

}  // namespace

// The worker's own transactions: a statement start time (for now()) and a snapshot.
int64 pii_audit_spi_int64(const char* sql, int64 fallback) {
    if (SPI_execute(sql, true, 1) != SPI_OK_SELECT || SPI_processed == 0) return fallback;
    bool isnull;
    Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
    return isnull ? fallback : DatumGetInt64(d);
}

void pii_audit_worker_begin_transaction(void) {
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
}

void pii_audit_worker_commit_transaction(void) {
    PopActiveSnapshot();
    CommitTransactionCommand();
}

// Text from another database (or from a connection's startup packet) may hold characters the
// audit database's encoding cannot represent, or bytes that are no characters at all. Storing
// must not fail on them: the batch would fail, and the worker would retry it forever while the
// queue filled. What cannot be stored becomes '?'.
const char* pii_audit_in_audit_encoding(std::string_view value, int source_encoding, int* out_len) {
    const int target = GetDatabaseEncoding();
    const char* data = value.data();
    const char* const end = value.data() + value.size();
    const int len = static_cast<int>(value.size());
    if (target == PG_SQL_ASCII ||
        ((source_encoding == target || source_encoding == PG_SQL_ASCII) &&
         pg_verify_mbstr(target, data, len, true))) {
        *out_len = len;
        return data;
    }
    StringInfoData out;
    initStringInfo(&out);
    Oid proc = source_encoding == target || source_encoding == PG_SQL_ASCII
                   ? InvalidOid
                   : FindDefaultConversionProc(source_encoding, target);
    if (!OidIsValid(proc)) {
        append_valid(&out, data, len, target);
    } else {
        char* buffer =
            static_cast<char*>(palloc(static_cast<Size>(len) * MAX_CONVERSION_GROWTH + 1));
        while (data < end) {
            int rest = static_cast<int>(end - data);
            int done = pg_do_encoding_conversion_buf(
                proc, source_encoding, target,
                reinterpret_cast<unsigned char*>(const_cast<char*>(data)), rest,
                reinterpret_cast<unsigned char*>(buffer), rest * MAX_CONVERSION_GROWTH + 1, true);
            appendStringInfoString(&out, buffer);
            data += done;
            if (done < rest) {
                // No equivalent, or invalid bytes: skip the character if its length is known.
                appendStringInfoChar(&out, '?');
                int skip = pg_encoding_verifymbchar(source_encoding, data, static_cast<int>(end - data));
                data += skip > 0 ? skip : 1;
            }
        }
        pfree(buffer);
    }
    *out_len = out.len;
    return out.data;
}

bool pii_audit_worker_stopping(void) { return shutdown_requested; }

void pii_audit_register_worker(void) {
    BackgroundWorker worker{};
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    // On a hot standby it starts as soon as reads may (consistent state) and forwards the events
    // to the primary (forwarder.cpp); once promoted it restarts and stores them itself.
    worker.bgw_start_time = BgWorkerStart_ConsistentState;
    worker.bgw_restart_time = 1;
    strlcpy(worker.bgw_library_name, "pii_audit", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "pii_audit_worker_main", BGW_MAXLEN);
    strlcpy(worker.bgw_name, "pii_audit worker", BGW_MAXLEN);
    strlcpy(worker.bgw_type, "pii_audit worker", BGW_MAXLEN);
    RegisterBackgroundWorker(&worker);
}

extern "C" void pii_audit_worker_main(Datum) {
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, handle_sigterm);
    BackgroundWorkerUnblockSignals();
    pii_audit_capture_suppressed = true;
    // Storing the trail is background work: it must not take CPU from the queries it audits.
    // Foreground statements that ping-pong with their clients are latency-bound, and on a
    // small machine a worker at the same priority delays every round trip. With a lower
    // priority it runs in the gaps; the queue absorbs bursts, and if it ever fills, backends
    // wait for it (pii_audit.on_queue_full), so the worker is never starved for good.
    errno = 0;
    if (nice(kWorkerNiceIncrement) == -1 && errno != 0)
        ereport(LOG, (errmsg("pii_audit worker could not lower its scheduling priority: %m")));

    // Each batch allocates and frees megabytes of datums and tuples. With glibc's defaults
    // blocks that large are mapped and unmapped around every batch, and the worker spent a
    // fifth of its time in page faults touching fresh memory (perf, 45k events/s). Keeping
    // freed memory in the process makes the next batch reuse warm pages.
    mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);

    before_shmem_exit(on_worker_exit, 0);
    pii_audit_queue_attach_worker(MyLatch, MyProcPid);
    if (RecoveryInProgress()) forward_main();
    ereport(LOG, (errmsg("pii_audit worker started: the audit trail goes to database \"%s\" "
                         "(pii_audit.database)",
                         pii_audit_database)));
    BackgroundWorkerInitializeConnection(pii_audit_database, nullptr, 0);
    // The worker's reads of the trail (start, catching up after a crash) are plain range scans;
    // compiling them costs more than it saves (measured: 146 ms of JIT for one start query).
    SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);
    // Queue space is released as soon as a batch commits. A commit not yet flushed
    // (synchronous_commit = off keeps it in shared memory for a while) is undone by a crash,
    // and the events it held would be gone from both: the worker's commits are always flushed.
    if (synchronous_commit < SYNCHRONOUS_COMMIT_LOCAL_FLUSH)
        SetConfigOption("synchronous_commit", "local", PGC_SUSET, PGC_S_OVERRIDE);
    pgstat_report_appname("pii_audit worker");

    char* buffer = static_cast<char*>(MemoryContextAlloc(TopMemoryContext, kBatchBytes));
    // A large keeper block survives every reset, so batches do not map and unmap memory.
    MemoryContext batch_context = AllocSetContextCreate(TopMemoryContext, "pii_audit batch",
                                                        8 * 1024 * 1024, 8 * 1024 * 1024,
                                                        8 * 1024 * 1024);
    // The loop's state survives an error caught by pg_recovery_loop (a longjmp), hence static.
    static WorkerState state{};
    static bool ready = false;
    static TimestampTz shutdown_since = 0;
    static TimestampTz last_record_at = 0;
    static int failures = 0;  // batches that failed in a row

    // Any error while storing lands here: the transaction is rolled back, nothing is released
    // from the queue, and the batch is tried again after a pause (1 s, doubling to 30 s). After
    // two failures in a row, batches are stored one event at a time, so that an event that can
    // never be stored is skipped and recorded as a gap instead of blocking the queue forever;
    // while the server itself is in trouble (disk full, out of memory) events are kept and
    // retried. The worker never exits for this: the postmaster would restart it in a loop.
    auto recover = [&](ErrorData* error) {
        MemoryContextReset(batch_context);
        pgstat_report_activity(STATE_IDLE, nullptr);
        pii_audit_scoring_batch_failed();  // its alerts were rolled back with it
        ++failures;
        long pause_ms = failures >= 6 ? 30000 : 1000L << (failures - 1);
        char problem[sizeof(PiiAuditStatus::worker_problem)];
        snprintf(problem, sizeof problem, "storing events failed %d time%s in a row, retrying: %s",
                 failures, failures == 1 ? "" : "s", error->message);
        pii_audit_queue_set_problem(problem);
        // Positions, ids and remembered side rows are read again from the trail.
        ready = false;
        pii_audit_queue_set_ready(false);
        // The whole pause, though backends set the latch each time they drop an event (measured
        // with a full disk: 2,000 retries and as many logged errors in 5 s without this).
        const TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), pause_ms);
        for (;;) {
            if (shutdown_requested) proc_exit(1);
            long left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);
            if (left <= 0) break;
            (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, left,
                            PG_WAIT_EXTENSION);
            ResetLatch(MyLatch);
        }
    };
    pii_audit::boundary::pg_recovery_loop([&] {
        CHECK_FOR_INTERRUPTS();
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
            pii_audit_scoring_config_reloaded();
            state.retention_checked_at = 0;  // a changed retention applies at once
        }
        long wait_ms = pii_audit_flush_interval_ms;
        if (!ready) {
            ready = prepare(&state);
            if (ready) {
                start_scoring(state.next_event_id - 1);
                prepare_partitions(&state);
            }
            pii_audit_queue_set_ready(ready);
            if (!ready) {
                if (shutdown_requested) proc_exit(1);
                wait_ms = kNotReadyRetryMs;
            }
        }
        if (ready) {
            bool more = false;
            uint64 records = flush_once(&state, buffer, batch_context, failures >= 2, &more);
            if (state.trail_gone) {
                state.trail_gone = false;
                state.warned_not_installed = false;
                ready = false;
                pii_audit_queue_set_ready(false);
                return;
            }
            if (failures > 0) {
                ereport(LOG, (errmsg("pii_audit: storing events works again after %d failed "
                                     "attempt%s",
                                     failures, failures == 1 ? "" : "s")));
                failures = 0;
                pii_audit_queue_set_problem("");
            }
            pii_audit_queue_set_ready(true);
            // Table statistics (inserted rows) reach the cumulative statistics system, so that
            // autovacuum and ANALYZE know the trail grows.
            pgstat_report_stat(false);
            // Learning (reloads, saving baselines) and index upkeep only between batches.
            if (!more) {
                maintain_scoring(state.next_event_id - 1, false);
                prepare_partitions(&state);
                start_maintenance(&state);
            }
            TimestampTz now = GetCurrentTimestamp();
            if (records > 0) last_record_at = now;
            if (more) wait_ms = 0;
            if (shutdown_requested) {
                // Drain what backends still send while they finish, then leave. Exit code 1
                // makes the postmaster start a new worker unless the server is stopping.
                if (shutdown_since == 0) shutdown_since = now;
                bool quiet = !more && pii_audit_queue_empty() &&
                             TimestampDifferenceExceeds(last_record_at, now, kShutdownQuietMs);
                if (quiet || TimestampDifferenceExceeds(shutdown_since, now, kShutdownMaxMs)) {
                    maintain_scoring(state.next_event_id - 1, true);
                    if (pii_audit_queue_empty()) mark_clean_shutdown();
                    proc_exit(1);
                }
                wait_ms = 20;
            }
        }
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, wait_ms,
                        PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
    }, recover);
}
