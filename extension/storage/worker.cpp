// Storage: the single background worker that drains the queue into pii_audit.trail in the
// audit database. It is the only writer, so it assigns event_id in commit order (strictly
// increasing, no gaps), and it releases queue space only after its transaction committed, so
// a worker that is stopped or fails mid-batch loses nothing.
// PostgreSQL-free headers first (see pg_free.h).
#include "pii_audit/trail_dictionary.h"

#include "pii_audit_internal.h"

#include "boundary.h"

extern "C" {
#include "access/brin.h"
#include "access/brin_revmap.h"
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "lib/stringinfo.h"
#include "commands/dbcommands.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inet.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

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
const char* const kTrailColumns[] = {
    "event_id",    "event_time",    "recorded_at",   "session_id",
    "statement_id", "row_count",    "backend_pid",   "nesting_level",
    "kind",        "status",        "detail",        "subject_count",
    "subjects",    "subjects_truncated", "subject_count_estimated",
};
constexpr int kNumTrailColumns = sizeof kTrailColumns / sizeof kTrailColumns[0];
enum TrailColumn {
    kColEventId, kColEventTime, kColRecordedAt, kColSessionId, kColStatementId, kColRowCount,
    kColBackendPid, kColNestingLevel, kColKind, kColStatus, kColDetail, kColSubjectCount,
    kColSubjects, kColSubjectsTruncated, kColSubjectCountEstimated,
};
static_assert(kColSubjectCountEstimated + 1 == kNumTrailColumns);

const char* const kSessionColumns[] = {
    "session_id", "database_name", "session_user_name", "current_user_name", "end_user",
    "application_name", "client_addr",
};
constexpr int kNumSessionColumns = sizeof kSessionColumns / sizeof kSessionColumns[0];

const char* const kStatementColumns[] = {
    "statement_id", "command", "relation", "relation_oid", "columns", "categories",
    "query_id", "query_text", "query_truncated",
};
constexpr int kNumStatementColumns = sizeof kStatementColumns / sizeof kStatementColumns[0];

struct WorkerState {
    Oid trail_relid;            // pii_audit.trail
    Oid sessions_relid;         // pii_audit.trail_sessions
    Oid statements_relid;       // pii_audit.trail_statements
    int64 next_session_id;
    int64 next_statement_id;
    SPIPlanPtr save_position;  // UPDATE worker_state, prepared once per worker
    int64 next_event_id;
    uint64 persisted_seq;       // highest queue sequence already in the table (this generation)
    uint64 dropped_recorded;    // drops already written as gap events (this generation)
    bool note_unclean_restart;  // shared memory was re-created: say so in the trail
    bool gap_failing;           // the last gap row could not be stored: keep trying it alone
    bool warned_not_installed;
    BlockNumber summarized_below;    // BRIN ranges of the trail before this block are summarised
    TimestampTz last_summarize;      // when the worker last looked for filled BRIN ranges
    TimestampTz summarize_paused_at; // a summarisation failed; retry after kSummarizeRetryMs
};

void on_worker_exit(int, Datum) { pii_audit_queue_detach_worker(); }

// ---------------------------------------------------------------- BRIN summaries
// A BRIN range that is not summarised matches every query, so "events after N", time ranges,
// subject_access and the worker's own start would read every row added since the last VACUUM
// (measured: the worker's start read 13.5M rows in 4.7 s on a 27M-event trail). autosummarize
// cannot keep up with the trail: autovacuum keeps 256 requests and logs each one it drops,
// thousands of lines a minute at 40k events/s. So the worker summarises each range itself once
// it is full, between batches, and at start everything left unsummarised.
constexpr long kSummarizeEveryMs = 1000;
constexpr long kSummarizeRetryMs = 10 * 60 * 1000;

// The trail's BRIN indexes with their pages per range (at most a few).
int brin_indexes_of(Relation rel, Oid* oids, BlockNumber* pages_per_range, int max) {
    int n = 0;
    List* indexes = RelationGetIndexList(rel);
    ListCell* cell;
    foreach (cell, indexes) {
        Relation index = index_open(lfirst_oid(cell), AccessShareLock);
        if (index->rd_rel->relam == BRIN_AM_OID && n < max) {
            oids[n] = RelationGetRelid(index);
            pages_per_range[n] = BrinGetPagesPerRange(index);
            ++n;
        }
        index_close(index, AccessShareLock);
    }
    list_free(indexes);
    return n;
}

// Summarises the filled ranges (all unsummarised ranges when at_start) in a transaction of its
// own. Never waits: when VACUUM holds the table, it is summarising too, and the worker tries
// again later. An error is reported and pauses summarising; it never stops the worker.
void summarize_ranges(WorkerState* state, bool at_start) {
    TimestampTz now = GetCurrentTimestamp();
    if (!at_start && !TimestampDifferenceExceeds(state->last_summarize, now, kSummarizeEveryMs))
        return;
    if (state->summarize_paused_at != 0 &&
        !TimestampDifferenceExceeds(state->summarize_paused_at, now, kSummarizeRetryMs))
        return;
    state->last_summarize = now;
    MemoryContext caller = CurrentMemoryContext;
    ErrorData* error = pii_audit::boundary::pg_own_transactions([&] {
        pii_audit_worker_begin_transaction();
        if (ConditionalLockRelationOid(state->trail_relid, ShareUpdateExclusiveLock)) {
            Relation rel = table_open(state->trail_relid, NoLock);
            BlockNumber nblocks = RelationGetNumberOfBlocks(rel);
            Oid oids[8];
            BlockNumber ranges[8];
            int n = brin_indexes_of(rel, oids, ranges, 8);
            table_close(rel, NoLock);
            BlockNumber done = nblocks;
            for (int i = 0; i < n; ++i) {
                if (at_start) {
                    DirectFunctionCall1(brin_summarize_new_values, ObjectIdGetDatum(oids[i]));
                    continue;
                }
                // Only full ranges: a summarised range that still grows costs an index update
                // per row inserted.
                BlockNumber first = state->summarized_below / ranges[i] * ranges[i];
                BlockNumber full_end = nblocks / ranges[i] * ranges[i];
                for (BlockNumber block = first; block < full_end; block += ranges[i])
                    DirectFunctionCall2(brin_summarize_range, ObjectIdGetDatum(oids[i]),
                                        Int64GetDatum(static_cast<int64>(block)));
                if (full_end < done) done = full_end;
            }
            state->summarized_below = done;
        }
        pii_audit_worker_commit_transaction();
    });
    if (error != nullptr) {
        ereport(WARNING,
                (errmsg("pii_audit: could not summarise the BRIN indexes of the trail: %s",
                        error->message),
                 errdetail("The worker tries again in 10 minutes; until then queries on "
                           "pii_audit.events read the unsummarised part in full.")));
        FreeErrorData(error);
        state->summarize_paused_at = GetCurrentTimestamp();
    }
    MemoryContextSwitchTo(caller);
}

int64 spi_int64(const char* sql, int64 fallback) {
    if (SPI_execute(sql, true, 1) != SPI_OK_SELECT || SPI_processed == 0) return fallback;
    bool isnull;
    Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
    return isnull ? fallback : DatumGetInt64(d);
}

bool table_matches(Oid relid, const char* const* columns, int ncolumns) {
    Relation rel = table_open(relid, AccessShareLock);
    TupleDesc desc = RelationGetDescr(rel);
    bool ok = desc->natts == ncolumns;
    for (int i = 0; ok && i < ncolumns; ++i)
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

void reset_dictionaries() {
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

// The id stored for this part of the event (for a gap, of the database), 0 if none yet. The key
// stays in dictionaries->key for remember_id.
int64 known_id(Part part, const pii_audit::EventView* event, std::string_view database) {
    int64 id = 0;
    if (!dictionary_guarded([&] {
            Dictionaries& d = *dictionaries;
            switch (part) {
                case Part::kSession: pii_audit::session_key(*event, d.key); break;
                case Part::kGapSession: pii_audit::gap_session_key(database, d.key); break;
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

// Finds the trail's tables and where the last run stopped. False while the extension is not
// installed in the audit database.
bool prepare(WorkerState* state) {
    pii_audit_worker_begin_transaction();
    Oid nsp = get_namespace_oid("pii_audit", true);
    Oid events = OidIsValid(nsp) ? get_relname_relid("trail", nsp) : InvalidOid;
    Oid sessions = OidIsValid(nsp) ? get_relname_relid("trail_sessions", nsp) : InvalidOid;
    Oid statements = OidIsValid(nsp) ? get_relname_relid("trail_statements", nsp) : InvalidOid;
    Oid worker_state = OidIsValid(nsp) ? get_relname_relid("worker_state", nsp) : InvalidOid;
    bool ready = OidIsValid(events) && OidIsValid(sessions) && OidIsValid(statements) &&
                 OidIsValid(worker_state);
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
    } else if (!table_matches(events, kTrailColumns, kNumTrailColumns) ||
               !table_matches(sessions, kSessionColumns, kNumSessionColumns) ||
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
        state->trail_relid = events;
        state->sessions_relid = sessions;
        state->statements_relid = statements;
        reset_dictionaries();
        SPI_connect();
        state->next_session_id =
            spi_int64("SELECT max(session_id) FROM pii_audit.trail_sessions", 0) + 1;
        state->next_statement_id =
            spi_int64("SELECT max(statement_id) FROM pii_audit.trail_statements", 0) + 1;
        // The last id is kept with the batch that wrote it; looking past it also covers a trail
        // restored from a dump (then last_event_id is 0 and this is one full scan).
        state->next_event_id =
            spi_int64("SELECT coalesce(max(e.event_id), s.last_event_id) FROM "
                      "pii_audit.worker_state s LEFT JOIN pii_audit.trail e "
                      "ON e.event_id > s.last_event_id GROUP BY s.last_event_id",
                      0) +
            1;
        uint64 generation = pii_audit_queue_generation();
        int64 stored_generation =
            spi_int64("SELECT generation FROM pii_audit.worker_state", -1);
        if (stored_generation == static_cast<int64>(generation)) {
            state->persisted_seq = static_cast<uint64>(
                spi_int64("SELECT last_queue_seq FROM pii_audit.worker_state", 0));
            state->dropped_recorded = static_cast<uint64>(
                spi_int64("SELECT dropped_recorded FROM pii_audit.worker_state", 0));
            // A predecessor stopped by SIGTERM marked a clean stop; from now on a crash would
            // lose queued events again, so the next start must be able to tell.
            SPI_execute("UPDATE pii_audit.worker_state SET clean_shutdown = false, "
                        "updated_at = now()",
                        false, 0);
        } else {
            // Shared memory is new: after a clean stop the queue was empty; after a crash it
            // may have held events, which are gone. The trail says which it was.
            int64 clean = spi_int64(
                "SELECT CASE WHEN clean_shutdown THEN 1 ELSE 0 END FROM pii_audit.worker_state",
                1);
            state->note_unclean_restart = stored_generation != -1 && clean == 0;
            state->persisted_seq = 0;
            state->dropped_recorded = 0;
            char sql[256];
            snprintf(sql, sizeof sql,
                     "UPDATE pii_audit.worker_state SET generation = %lld, last_queue_seq = 0, "
                     "dropped_recorded = 0, clean_shutdown = false, updated_at = now()",
                     static_cast<long long>(generation));
            SPI_execute(sql, false, 0);
        }
        SPI_finish();
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

// Subject hashes arrive as packed 8-byte integers (possibly unaligned in the batch buffer).
Datum subject_array(std::string_view packed) {
    int n = static_cast<int>(packed.size() / sizeof(int64));
    Datum* items = static_cast<Datum*>(palloc(sizeof(Datum) * (n > 0 ? n : 1)));
    for (int i = 0; i < n; ++i) {
        int64 v;
        memcpy(&v, packed.data() + i * sizeof(int64), sizeof v);
        items[i] = Int64GetDatum(v);
    }
    return PointerGetDatum(construct_array(items, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL,
                                           TYPALIGN_DOUBLE));
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
    Datum kind_read, kind_label_change, kind_login, status_completed, status_failed, status_denied;

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

// Rows are buffered into slots and written with table_multi_insert: one WAL record per heap page
// instead of one per row, which is most of what storing an event costs.
constexpr int kMultiInsertRows = 1000;

// A table the batch adds a row to now and then (sessions, statements): opened at its first row.
struct SideTable {
    Oid relid;
    Relation rel;
    ResultRelInfo* result;
    TupleTableSlot* slot;
};

// BRIN insertion into ranges nobody summarised yet. brininsert looks up the range's summary for
// every row and finds none: a fifth of the worker's time once rows were narrow (perf). Every
// summariser (VACUUM, brin_summarize_range/new_values, autosummarize work items, this worker)
// holds ShareUpdateExclusiveLock on the table while it summarises, and it reads the rows of the
// range from the table, so a row added while nobody can summarise needs no index entry for a
// range without a summary: the summary made later reads it. A batch that gets that lock without
// waiting therefore looks up each range once and skips those rows; one that does not (VACUUM is
// running) inserts every index entry as usual. A range that has a summary always gets its
// entries.
struct BrinSkip {
    Relation index;
    BlockNumber pages_per_range;
    BlockNumber range;  // the range last looked up (InvalidBlockNumber: none yet)
    bool unsummarised;
};

struct Inserter {
    Relation rel;
    EState* estate;
    ResultRelInfo* result;
    // The batch holds ShareUpdateExclusiveLock on the trail: no range can be summarised or
    // desummarised until it commits.
    bool ranges_frozen;
    int num_indexes;
    Relation* index_descs;      // as opened by ExecOpenIndices
    IndexInfo** index_infos;
    BrinSkip* brin;             // per index; index == nullptr for other kinds of index
    Relation* tuple_descs;      // the indexes one row needs
    IndexInfo** tuple_infos;
    // A copy of the events table's descriptor without a reference count: slots made on the
    // relation's own descriptor each pin it in the resource owner, and forgetting 1,000 pins of
    // one pointer at the end of a batch is a quadratic search (a tenth of the worker's time).
    TupleDesc slot_desc;
    TupleTableSlot* slots[kMultiInsertRows];
    int buffered;
    BulkInsertState bulk;
    CommandId cid;
    TimestampTz now;
    BatchDatums* datums;
    SideTable sessions;
    SideTable statements;
    bool check_constraints;  // the trail has CHECK or NOT NULL constraints: table_multi_insert
                             // does not check them, so insert_row does
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

void insert_side_row(Inserter& ins, SideTable& table, const Datum* values, const bool* nulls) {
    if (table.rel == nullptr) open_side_table(ins, table);
    TupleTableSlot* slot = table.slot;
    const int natts = slot->tts_tupleDescriptor->natts;
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

// True if heap block `block` lies in a range of the index that has no summary.
bool range_unsummarised(BrinSkip& b, BlockNumber block) {
    BlockNumber range = block / b.pages_per_range * b.pages_per_range;
    if (range == b.range) return b.unsummarised;
    BlockNumber pages_per_range;
    BrinRevmap* revmap = brinRevmapInitialize(b.index, &pages_per_range, nullptr);
    Buffer buffer = InvalidBuffer;
    OffsetNumber offset;
    Size size;
    BrinTuple* summary = brinGetTupleForHeapBlock(revmap, range, &buffer, &offset, &size,
                                                  BUFFER_LOCK_SHARE, nullptr);
    if (summary != nullptr) LockBuffer(buffer, BUFFER_LOCK_UNLOCK);
    if (BufferIsValid(buffer)) ReleaseBuffer(buffer);
    brinRevmapTerminate(revmap);
    b.range = range;
    b.unsummarised = summary == nullptr;
    return b.unsummarised;
}

void prepare_index_inserts(Inserter& ins) {
    ResultRelInfo* r = ins.result;
    ins.num_indexes = r->ri_NumIndices;
    ins.index_descs = r->ri_IndexRelationDescs;
    ins.index_infos = r->ri_IndexRelationInfo;
    int n = ins.num_indexes > 0 ? ins.num_indexes : 1;
    ins.brin = static_cast<BrinSkip*>(palloc0(sizeof(BrinSkip) * n));
    ins.tuple_descs = static_cast<Relation*>(palloc(sizeof(Relation) * n));
    ins.tuple_infos = static_cast<IndexInfo**>(palloc(sizeof(IndexInfo*) * n));
    if (!ins.ranges_frozen) return;
    for (int i = 0; i < ins.num_indexes; ++i) {
        Relation index = ins.index_descs[i];
        if (index->rd_rel->relam != BRIN_AM_OID) continue;
        ins.brin[i].index = index;
        ins.brin[i].pages_per_range = BrinGetPagesPerRange(index);
        ins.brin[i].range = InvalidBlockNumber;
    }
}

void flush_rows(Inserter& ins) {
    if (ins.buffered == 0) return;
    table_multi_insert(ins.rel, ins.slots, ins.buffered, ins.cid, 0, ins.bulk);
    ResultRelInfo* r = ins.result;
    for (int i = 0; i < ins.buffered; ++i) {
        BlockNumber block = ItemPointerGetBlockNumber(&ins.slots[i]->tts_tid);
        int n = 0;
        for (int k = 0; k < ins.num_indexes; ++k) {
            if (ins.brin[k].index != nullptr && range_unsummarised(ins.brin[k], block)) continue;
            ins.tuple_descs[n] = ins.index_descs[k];
            ins.tuple_infos[n] = ins.index_infos[k];
            ++n;
        }
        if (n > 0) {
            r->ri_NumIndices = n;
            r->ri_IndexRelationDescs = ins.tuple_descs;
            r->ri_IndexRelationInfo = ins.tuple_infos;
            ExecInsertIndexTuples(r, ins.slots[i], ins.estate, false, false, nullptr, NIL);
            r->ri_NumIndices = ins.num_indexes;
            r->ri_IndexRelationDescs = ins.index_descs;
            r->ri_IndexRelationInfo = ins.index_infos;
        }
        ExecClearTuple(ins.slots[i]);
    }
    ins.buffered = 0;
}

void insert_row(Inserter& ins, Datum* values, bool* nulls) {
    TupleTableSlot*& slot = ins.slots[ins.buffered];
    if (slot == nullptr) slot = MakeSingleTupleTableSlot(ins.slot_desc, &TTSOpsVirtual);
    ExecClearTuple(slot);
    memcpy(slot->tts_values, values, sizeof(Datum) * kNumTrailColumns);
    memcpy(slot->tts_isnull, nulls, sizeof(bool) * kNumTrailColumns);
    ExecStoreVirtualTuple(slot);
    if (ins.check_constraints) {
        ExecConstraints(ins.result, slot, ins.estate);
        ResetPerTupleExprContext(ins.estate);
    }
    if (++ins.buffered == kMultiInsertRows) flush_rows(ins);
}

// The id of a session or statement row: the one stored before for the same values, or that of
// a row stored now. fill(values, nulls) sets the columns after the id; nulls start all true.
template <int kColumns, class Fill>
int64 side_row_id(Inserter& ins, SideTable& table, int64* next_id, Part part,
                  const pii_audit::EventView* event, std::string_view database, Fill&& fill) {
    int64 id = known_id(part, event, database);
    if (id != 0) return id;
    id = (*next_id)++;
    Datum values[kColumns];
    bool nulls[kColumns];
    for (bool& n : nulls) n = true;
    values[0] = Int64GetDatum(id);
    nulls[0] = false;
    fill(values, nulls);
    insert_side_row(ins, table, values, nulls);
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

// Returns the event's id; the caller feeds the scorer once the row is sure to stay.
int64 insert_event(Inserter& ins, WorkerState* state, const pii_audit::EventView& event) {
    using namespace pii_audit;
    BatchDatums& d = *ins.datums;
    Datum values[kNumTrailColumns];
    bool nulls[kNumTrailColumns] = {};
    auto kind = static_cast<EventKind>(event.header.kind);
    const int64 event_id = state->next_event_id++;
    values[kColEventId] = Int64GetDatum(event_id);
    values[kColEventTime] = TimestampTzGetDatum(event.header.event_time);
    values[kColRecordedAt] = TimestampTzGetDatum(ins.now);
    values[kColSessionId] = Int64GetDatum(session_id(ins, state, event));
    values[kColStatementId] = Int64GetDatum(statement_id(ins, state, event));
    values[kColRowCount] = Int64GetDatum(event.header.row_count);
    // A label change counts no rows; a connection attempt reads none and runs no statement.
    nulls[kColRowCount] = kind == EventKind::kLabelChange || kind == EventKind::kLogin;
    values[kColBackendPid] = Int32GetDatum(event.header.backend_pid);
    values[kColNestingLevel] = Int32GetDatum(event.header.nesting_level);
    nulls[kColNestingLevel] = kind == EventKind::kLogin;
    values[kColKind] = kind == EventKind::kLabelChange ? d.kind_label_change
                       : kind == EventKind::kLogin     ? d.kind_login
                                                       : d.kind_read;
    switch (static_cast<EventStatus>(event.header.status)) {
        case EventStatus::kCompleted: values[kColStatus] = d.status_completed; break;
        case EventStatus::kDenied: values[kColStatus] = d.status_denied; break;
        default: values[kColStatus] = d.status_failed; break;
    }
    values[kColDetail] = d.nullable_text(event, kDetail, &nulls[kColDetail]);
    bool tracked = (event.header.flags & kFlagSubjectsTracked) != 0;
    for (int i = kColSubjectCount; i <= kColSubjectCountEstimated; ++i) nulls[i] = !tracked;
    if (tracked) {
        values[kColSubjectCount] = Int64GetDatum(event.header.subject_count);
        values[kColSubjects] = subject_array(event.field[kSubjects]);
        values[kColSubjectsTruncated] =
            BoolGetDatum((event.header.flags & kFlagSubjectsTruncated) != 0);
        values[kColSubjectCountEstimated] =
            BoolGetDatum((event.header.flags & kFlagSubjectCountEstimated) != 0);
    }
    insert_row(ins, values, nulls);
    return event_id;
}

// A row that says events are missing here, and how many (or that the count is unknown). Its
// session holds only the audit database's name; it has no statement.
void insert_gap(Inserter& ins, WorkerState* state, int64 lost, const char* detail) {
    const char* database = get_database_name(MyDatabaseId);
    int64 session = side_row_id<kNumSessionColumns>(
        ins, ins.sessions, &state->next_session_id, Part::kGapSession, nullptr, database,
        [&](Datum* values, bool* nulls) {
            values[1] = CStringGetTextDatum(database);
            nulls[1] = false;
        });
    Datum values[kNumTrailColumns];
    bool nulls[kNumTrailColumns];
    for (bool& n : nulls) n = true;
    values[kColEventId] = Int64GetDatum(state->next_event_id++);
    values[kColEventTime] = TimestampTzGetDatum(ins.now);
    values[kColRecordedAt] = TimestampTzGetDatum(ins.now);
    values[kColSessionId] = Int64GetDatum(session);
    values[kColKind] = CStringGetTextDatum("gap");
    values[kColStatus] = CStringGetTextDatum("lost");
    values[kColRowCount] = Int64GetDatum(lost);
    values[kColDetail] = CStringGetTextDatum(detail);
    for (int i : {kColEventId, kColEventTime, kColRecordedAt, kColSessionId, kColKind, kColStatus,
                  kColDetail})
        nulls[i] = false;
    nulls[kColRowCount] = lost < 0;
    insert_row(ins, values, nulls);
}

// Persists one batch (and any gap to report) in one transaction. Returns how many queue
// records the batch held; *more says the batch was cut short by its buffer.
// Errors that say the server, not the event, is in trouble (disk full, out of memory, I/O):
// skipping events for them would lose what a retry will store.
bool environmental(const ErrorData* error) {
    int category = ERRCODE_TO_CATEGORY(error->sqlerrcode);
    return category == ERRCODE_INSUFFICIENT_RESOURCES || category == ERRCODE_OPERATOR_INTERVENTION ||
           category == ERRCODE_SYSTEM_ERROR || error->sqlerrcode == ERRCODE_DATA_CORRUPTED ||
           error->sqlerrcode == ERRCODE_INDEX_CORRUPTED || error->elevel > ERROR;
}

// Careful mode: rows inserted by insert() (an event, or a gap row) go in a subtransaction of
// their own. Returns nullptr when they stay, else the error after undoing them: the ids taken
// (*next as before), the rows still buffered, and the remembered side rows (rolled back too).
// An error that says the server is in trouble fails the whole batch instead (retried later).
template <class Fn>
ErrorData* insert_alone(Inserter& ins, WorkerState* next, Fn&& insert) {
    flush_rows(ins);  // rows already buffered are not these rows' to roll back
    const WorkerState before = *next;
    ErrorData* error = pii_audit::boundary::pg_subtransaction([&] {
        insert();
        flush_rows(ins);
    });
    if (error == nullptr) return nullptr;
    if (environmental(error)) ReThrowError(error);
    *next = before;
    for (int i = 0; i < ins.buffered; ++i) ExecClearTuple(ins.slots[i]);
    ins.buffered = 0;
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

uint64 flush_once(WorkerState* state, char* buffer, MemoryContext batch_context, bool careful,
                  bool* more) {
    QueueBatch batch{};
    bool have_records = pii_audit_queue_peek(buffer, kBatchBytes, &batch);
    uint64 dropped = pii_audit_queue_dropped();
    bool have_gap = dropped > state->dropped_recorded || state->note_unclean_restart;
    *more = have_records && batch.size + (64 * 1024) >= kBatchBytes;
    if (!have_records && !have_gap) return 0;

    // The transaction switches to its own context: the batch's allocations go to the batch
    // context, reset after every batch.
    pii_audit_worker_begin_transaction();
    MemoryContext old = MemoryContextSwitchTo(batch_context);
    pgstat_report_activity(STATE_RUNNING, careful ? "pii_audit: persisting audit events one by one"
                                                  : "pii_audit: persisting audit events");

    Inserter& ins = *static_cast<Inserter*>(palloc0(sizeof(Inserter)));
    ins.rel = table_open(state->trail_relid, RowExclusiveLock);
    ins.ranges_frozen = ConditionalLockRelationOid(state->trail_relid, ShareUpdateExclusiveLock);
    ins.slot_desc = CreateTupleDescCopy(RelationGetDescr(ins.rel));
    ins.estate = CreateExecutorState();
    // A range table, so that a violated constraint can describe the failing row.
    RangeTblEntry* rte = makeNode(RangeTblEntry);
    rte->rtekind = RTE_RELATION;
    rte->relid = state->trail_relid;
    rte->relkind = RELKIND_RELATION;
    rte->rellockmode = RowExclusiveLock;
    ExecInitRangeTable(ins.estate, list_make1(rte));
    ins.result = makeNode(ResultRelInfo);
    InitResultRelInfo(ins.result, ins.rel, 1, nullptr, 0);
    ExecOpenIndices(ins.result, false);
    ins.check_constraints = RelationGetDescr(ins.rel)->constr != nullptr;
    prepare_index_inserts(ins);
    // One event at a time, each in a subtransaction: a buffer pinned by a bulk-insert state
    // in a rolled-back subtransaction would be released under it.
    ins.bulk = careful ? nullptr : GetBulkInsertState();
    ins.sessions.relid = state->sessions_relid;
    ins.statements.relid = state->statements_relid;
    open_side_table(ins, ins.sessions);
    open_side_table(ins, ins.statements);
    ins.cid = GetCurrentCommandId(true);
    ins.now = GetCurrentTimestamp();
    ins.datums = new (palloc(sizeof(BatchDatums))) BatchDatums();
    ins.datums->kind_read = CStringGetTextDatum("read");
    ins.datums->kind_label_change = CStringGetTextDatum("label_change");
    ins.datums->kind_login = CStringGetTextDatum("login");
    ins.datums->status_denied = CStringGetTextDatum("denied");
    ins.datums->status_completed = CStringGetTextDatum("completed");
    ins.datums->status_failed = CStringGetTextDatum("failed");

    WorkerState next = *state;
    uint64 records = 0;
    int64 unstorable = 0;
    char unstorable_reason[256] = "";
    if (next.note_unclean_restart &&
        store_gap(careful, ins, &next, [&] {
            insert_gap(ins, &next, -1,
                       "the server restarted after a crash; audit events still queued in shared "
                       "memory at that moment were lost (their number is unknown)");
        }))
        next.note_unclean_restart = false;
    pii_audit::for_each_peeked_record(batch.data, batch.size, [&](const char* data, size_t len) {
        ++records;
        pii_audit::EventView event;
        if (!pii_audit::decode_event(data, len, event)) {
            ereport(WARNING, (errmsg("pii_audit: skipped a malformed queue record")));
            ++unstorable;
            if (unstorable_reason[0] == '\0')
                strlcpy(unstorable_reason, "a malformed record in the queue",
                        sizeof unstorable_reason);
            return;
        }
        if (event.header.queue_seq <= next.persisted_seq) return;  // stored before a restart
        if (!careful) {
            // A failed batch is rolled back whole, and the scorer rebuilt from its last save.
            pii_audit_scoring_observe(insert_event(ins, &next, event), event);
            next.persisted_seq = event.header.queue_seq;
            return;
        }
        int64 event_id = 0;
        ErrorData* error =
            insert_alone(ins, &next, [&] { event_id = insert_event(ins, &next, event); });
        if (error == nullptr) {
            pii_audit_scoring_observe(event_id, event);
        } else {
            // This event can never be stored: skip it, count it, say why in a gap row.
            if (unstorable++ == 0) strlcpy(unstorable_reason, error->message, sizeof unstorable_reason);
            ereport(WARNING, (errmsg("pii_audit: an audit event could not be stored: %s",
                                     error->message),
                              errdetail("It is skipped and counted in a gap row of the trail.")));
            FreeErrorData(error);
        }
        next.persisted_seq = event.header.queue_seq;
    });
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
        char detail[200];
        snprintf(detail, sizeof detail,
                 "%llu audit events were lost: dropped because the queue was full (see "
                 "pii_audit.queue_size and pii_audit.on_queue_full), or, rarely, taken from it "
                 "but neither storable nor recordable as a gap (see the server log)",
                 static_cast<unsigned long long>(dropped - next.dropped_recorded));
        if (store_gap(careful, ins, &next, [&] {
                insert_gap(ins, &next, static_cast<int64>(dropped - next.dropped_recorded),
                           detail);
            }))
            next.dropped_recorded = dropped;
    }

    flush_rows(ins);
    for (TupleTableSlot* slot : ins.slots)
        if (slot) ExecDropSingleTupleTableSlot(slot);
    if (ins.bulk) FreeBulkInsertState(ins.bulk);
    close_side_table(ins.sessions);
    close_side_table(ins.statements);
    ExecCloseIndices(ins.result);
    FreeExecutorState(ins.estate);
    table_close(ins.rel, NoLock);

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
    SPI_finish();

    MemoryContextSwitchTo(old);
    pii_audit_worker_commit_transaction();
    pii_audit_scoring_after_commit();
    pgstat_report_activity(STATE_IDLE, nullptr);
    MemoryContextReset(batch_context);

    *state = next;
    if (have_records) pii_audit_queue_release(batch, records);
    return records;
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

void pii_audit_register_worker(void) {
    BackgroundWorker worker{};
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    // Only a primary can write the trail; on a standby the worker does not run (see README).
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
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
    ereport(LOG, (errmsg("pii_audit worker started: the audit trail goes to database \"%s\" "
                         "(pii_audit.database)",
                         pii_audit_database)));
    BackgroundWorkerInitializeConnection(pii_audit_database, nullptr, 0);
    // The worker's reads of the trail (start, catching up after a crash) are plain range scans;
    // compiling them costs more than it saves (measured: 146 ms of JIT for one start query).
    SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);
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
        }
        long wait_ms = pii_audit_flush_interval_ms;
        if (!ready) {
            ready = prepare(&state);
            if (ready) {
                start_scoring(state.next_event_id - 1);
                summarize_ranges(&state, true);
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
                summarize_ranges(&state, false);
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
