// Storage: the single background worker that drains the queue into pii_audit.events in the
// audit database. It is the only writer, so it assigns event_id in commit order (strictly
// increasing, no gaps), and it releases queue space only after its transaction committed, so
// a worker that is stopped or fails mid-batch loses nothing.
#include "pii_audit_internal.h"

extern "C" {
#include "access/brin.h"
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

// Column order of pii_audit.events, checked against the table at start.
const char* const kEventColumns[] = {
    "event_id",        "event_time",   "recorded_at",       "kind",
    "status",          "database_name", "session_user_name", "current_user_name",
    "end_user",        "application_name", "client_addr",    "backend_pid",
    "command",         "relation",     "relation_oid",      "columns",
    "categories",      "row_count",    "query_id",          "query_text",
    "query_truncated", "nesting_level", "detail",      "subject_count",
    "subjects",        "subjects_truncated", "subject_count_estimated",
};
constexpr int kNumEventColumns = sizeof kEventColumns / sizeof kEventColumns[0];

struct WorkerState {
    Oid events_relid;
    SPIPlanPtr save_position;  // UPDATE worker_state, prepared once per worker
    int64 next_event_id;
    uint64 persisted_seq;       // highest queue sequence already in the table (this generation)
    uint64 dropped_recorded;    // drops already written as gap events (this generation)
    bool note_unclean_restart;  // shared memory was re-created: say so in the trail
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
    pii_audit_worker_begin_transaction();
    PG_TRY();
    {
        if (ConditionalLockRelationOid(state->events_relid, ShareUpdateExclusiveLock)) {
            Relation rel = table_open(state->events_relid, NoLock);
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
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(caller);
        ErrorData* error = CopyErrorData();
        FlushErrorState();
        AbortCurrentTransaction();
        ereport(WARNING,
                (errmsg("pii_audit: could not summarise the BRIN indexes of the trail: %s",
                        error->message),
                 errdetail("The worker tries again in 10 minutes; until then queries on "
                           "pii_audit.events read the unsummarised part in full.")));
        FreeErrorData(error);
        state->summarize_paused_at = GetCurrentTimestamp();
    }
    PG_END_TRY();
    MemoryContextSwitchTo(caller);
}

int64 spi_int64(const char* sql, int64 fallback) {
    if (SPI_execute(sql, true, 1) != SPI_OK_SELECT || SPI_processed == 0) return fallback;
    bool isnull;
    Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
    return isnull ? fallback : DatumGetInt64(d);
}

bool events_table_matches(Oid relid) {
    Relation rel = table_open(relid, AccessShareLock);
    TupleDesc desc = RelationGetDescr(rel);
    bool ok = desc->natts == kNumEventColumns;
    for (int i = 0; ok && i < kNumEventColumns; ++i)
        ok = !TupleDescAttr(desc, i)->attisdropped &&
             strcmp(NameStr(TupleDescAttr(desc, i)->attname), kEventColumns[i]) == 0;
    table_close(rel, AccessShareLock);
    return ok;
}

// Finds the trail's tables and where the last run stopped. False while the extension is not
// installed in the audit database.
bool prepare(WorkerState* state) {
    pii_audit_worker_begin_transaction();
    Oid nsp = get_namespace_oid("pii_audit", true);
    Oid events = OidIsValid(nsp) ? get_relname_relid("events", nsp) : InvalidOid;
    Oid worker_state = OidIsValid(nsp) ? get_relname_relid("worker_state", nsp) : InvalidOid;
    bool ready = OidIsValid(events) && OidIsValid(worker_state);
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
    } else if (!events_table_matches(events)) {
        if (!state->warned_not_installed)
            ereport(WARNING, (errmsg("pii_audit: table pii_audit.events does not have the columns "
                                     "this version of pii_audit writes"),
                              errdetail("Audit events wait in the shared-memory queue; once it is "
                                        "full they are dropped and counted."),
                              errhint("ALTER EXTENSION pii_audit UPDATE in database \"%s\".",
                                      pii_audit_database)));
        state->warned_not_installed = true;
        ready = false;
    } else {
        state->events_relid = events;
        SPI_connect();
        // The last id is kept with the batch that wrote it; looking past it also covers a trail
        // restored from a dump (then last_event_id is 0 and this is one full scan).
        state->next_event_id =
            spi_int64("SELECT coalesce(max(e.event_id), s.last_event_id) FROM "
                      "pii_audit.worker_state s LEFT JOIN pii_audit.events e "
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
        pii_audit_scoring_start(state->next_event_id - 1);
        pii_audit_scoring_store_alerts();
    }
    pii_audit_worker_commit_transaction();
    if (ready) pii_audit_scoring_after_commit();
    return ready;
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

struct Inserter {
    Relation rel;
    EState* estate;
    ResultRelInfo* result;
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
};

void flush_rows(Inserter& ins) {
    if (ins.buffered == 0) return;
    table_multi_insert(ins.rel, ins.slots, ins.buffered, ins.cid, 0, ins.bulk);
    for (int i = 0; i < ins.buffered; ++i) {
        ExecInsertIndexTuples(ins.result, ins.slots[i], ins.estate, false, false, nullptr, NIL);
        ExecClearTuple(ins.slots[i]);
    }
    ins.buffered = 0;
}

void insert_row(Inserter& ins, Datum* values, bool* nulls) {
    TupleTableSlot*& slot = ins.slots[ins.buffered];
    if (slot == nullptr) slot = MakeSingleTupleTableSlot(ins.slot_desc, &TTSOpsVirtual);
    ExecClearTuple(slot);
    memcpy(slot->tts_values, values, sizeof(Datum) * kNumEventColumns);
    memcpy(slot->tts_isnull, nulls, sizeof(bool) * kNumEventColumns);
    ExecStoreVirtualTuple(slot);
    if (++ins.buffered == kMultiInsertRows) flush_rows(ins);
}

void insert_event(Inserter& ins, WorkerState* state, const pii_audit::EventView& event) {
    using namespace pii_audit;
    BatchDatums& d = *ins.datums;
    Datum values[kNumEventColumns];
    bool nulls[kNumEventColumns] = {};
    auto kind = static_cast<EventKind>(event.header.kind);
    const int64 event_id = state->next_event_id++;
    values[0] = Int64GetDatum(event_id);
    values[1] = TimestampTzGetDatum(event.header.event_time);
    values[2] = TimestampTzGetDatum(ins.now);
    values[3] = kind == EventKind::kLabelChange ? d.kind_label_change
                : kind == EventKind::kLogin     ? d.kind_login
                                                : d.kind_read;
    switch (static_cast<EventStatus>(event.header.status)) {
        case EventStatus::kCompleted: values[4] = d.status_completed; break;
        case EventStatus::kDenied: values[4] = d.status_denied; break;
        default: values[4] = d.status_failed; break;
    }
    values[5] = d.text(event, kDatabaseName);
    values[6] = d.text(event, kSessionUser);
    values[7] = d.text(event, kCurrentUser);
    values[8] = d.nullable_text(event, kEndUser, &nulls[8]);
    values[9] = d.text(event, kApplicationName);
    nulls[10] = (event.header.flags & kFlagClientAddrSet) == 0;
    values[10] = nulls[10] ? Datum(0) : d.inet(event, kClientAddr);
    values[11] = Int32GetDatum(event.header.backend_pid);
    values[12] = d.text(event, kCommand);
    values[13] = d.text(event, kRelation);
    values[14] = ObjectIdGetDatum(event.header.relation_oid);
    values[15] = d.text_array(event, kColumns);
    values[16] = d.text_array(event, kCategories);
    values[17] = Int64GetDatum(event.header.row_count);
    nulls[17] = kind == EventKind::kLabelChange;
    values[18] = Int64GetDatum(event.header.query_id);
    nulls[18] = event.header.query_id == 0;
    values[19] = d.text(event, kQueryText);
    values[20] = BoolGetDatum((event.header.flags & kFlagQueryTruncated) != 0);
    values[21] = Int32GetDatum(event.header.nesting_level);
    values[22] = d.nullable_text(event, kDetail, &nulls[22]);
    if (kind == EventKind::kLogin) {
        // A connection attempt reads no relation and runs no statement.
        for (int i = 13; i <= 21; ++i) nulls[i] = true;
    }
    bool tracked = (event.header.flags & kFlagSubjectsTracked) != 0;
    for (int i = 23; i <= 26; ++i) nulls[i] = !tracked;
    if (tracked) {
        values[23] = Int64GetDatum(event.header.subject_count);
        values[24] = subject_array(event.field[kSubjects]);
        values[25] = BoolGetDatum((event.header.flags & kFlagSubjectsTruncated) != 0);
        values[26] = BoolGetDatum((event.header.flags & kFlagSubjectCountEstimated) != 0);
    }
    insert_row(ins, values, nulls);
    pii_audit_scoring_observe(event_id, event);
}

// A row that says events are missing here, and how many (or that the count is unknown).
void insert_gap(Inserter& ins, WorkerState* state, int64 lost, const char* detail) {
    Datum values[kNumEventColumns];
    bool nulls[kNumEventColumns];
    for (int i = 0; i < kNumEventColumns; ++i) nulls[i] = true;
    values[0] = Int64GetDatum(state->next_event_id++);
    values[1] = TimestampTzGetDatum(ins.now);
    values[2] = TimestampTzGetDatum(ins.now);
    values[3] = CStringGetTextDatum("gap");
    values[4] = CStringGetTextDatum("lost");
    values[5] = CStringGetTextDatum(get_database_name(MyDatabaseId));
    values[17] = Int64GetDatum(lost);
    values[22] = CStringGetTextDatum(detail);
    for (int i : {0, 1, 2, 3, 4, 5, 22}) nulls[i] = false;
    nulls[17] = lost < 0;
    insert_row(ins, values, nulls);
}

// Persists one batch (and any gap to report) in one transaction. Returns how many queue
// records the batch held; *more says the batch was cut short by its buffer.
uint64 flush_once(WorkerState* state, char* buffer, MemoryContext batch_context, bool* more) {
    QueueBatch batch{};
    bool have_records = pii_audit_queue_peek(buffer, kBatchBytes, &batch);
    uint64 dropped = pii_audit_queue_dropped();
    bool have_gap = dropped > state->dropped_recorded || state->note_unclean_restart;
    *more = have_records && batch.size + (64 * 1024) >= kBatchBytes;
    if (!have_records && !have_gap) return 0;

    MemoryContext old = MemoryContextSwitchTo(batch_context);
    pii_audit_worker_begin_transaction();
    pgstat_report_activity(STATE_RUNNING, "pii_audit: persisting audit events");

    Inserter& ins = *static_cast<Inserter*>(palloc0(sizeof(Inserter)));
    ins.rel = table_open(state->events_relid, RowExclusiveLock);
    ins.slot_desc = CreateTupleDescCopy(RelationGetDescr(ins.rel));
    ins.estate = CreateExecutorState();
    ins.result = makeNode(ResultRelInfo);
    InitResultRelInfo(ins.result, ins.rel, 1, nullptr, 0);
    ExecOpenIndices(ins.result, false);
    ins.bulk = GetBulkInsertState();
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
    if (next.note_unclean_restart) {
        insert_gap(ins, &next, -1,
                   "the server restarted after a crash; audit events still queued in shared "
                   "memory at that moment were lost (their number is unknown)");
        next.note_unclean_restart = false;
    }
    pii_audit::for_each_peeked_record(batch.data, batch.size, [&](const char* data, size_t len) {
        ++records;
        pii_audit::EventView event;
        if (!pii_audit::decode_event(data, len, event)) {
            ereport(WARNING, (errmsg("pii_audit: skipped a malformed queue record")));
            insert_gap(ins, &next, 1, "a malformed audit record was found in the queue");
            return;
        }
        if (event.header.queue_seq <= next.persisted_seq) return;  // stored before a restart
        insert_event(ins, &next, event);
        next.persisted_seq = event.header.queue_seq;
    });
    if (dropped > next.dropped_recorded) {
        char detail[200];
        snprintf(detail, sizeof detail,
                 "%llu audit events were dropped because the queue was full "
                 "(see pii_audit.queue_size and pii_audit.on_queue_full)",
                 static_cast<unsigned long long>(dropped - next.dropped_recorded));
        insert_gap(ins, &next, static_cast<int64>(dropped - next.dropped_recorded), detail);
        next.dropped_recorded = dropped;
    }

    flush_rows(ins);
    for (TupleTableSlot* slot : ins.slots)
        if (slot) ExecDropSingleTupleTableSlot(slot);
    FreeBulkInsertState(ins.bulk);
    ExecCloseIndices(ins.result);
    FreeExecutorState(ins.estate);
    table_close(ins.rel, NoLock);

    // Alerts commit with the events that raised them.
    pii_audit_scoring_store_alerts();

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

    pii_audit_worker_commit_transaction();
    pii_audit_scoring_after_commit();
    pgstat_report_activity(STATE_IDLE, nullptr);
    MemoryContextSwitchTo(old);
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
    WorkerState state{};
    bool ready = false;
    TimestampTz shutdown_since = 0;
    TimestampTz last_record_at = 0;

    for (;;) {
        CHECK_FOR_INTERRUPTS();
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
            pii_audit_scoring_config_reloaded();
        }
        long wait_ms = pii_audit_flush_interval_ms;
        if (!ready) {
            ready = prepare(&state);
            if (ready) summarize_ranges(&state, true);
            pii_audit_queue_set_ready(ready);
            if (!ready) {
                if (shutdown_requested) proc_exit(1);
                wait_ms = kNotReadyRetryMs;
            }
        }
        if (ready) {
            bool more = false;
            uint64 records = flush_once(&state, buffer, batch_context, &more);
            pii_audit_queue_set_ready(true);
            // Learning (reloads, saving baselines) and index upkeep only between batches.
            if (!more) {
                pii_audit_scoring_maintain(state.next_event_id - 1, false);
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
                    pii_audit_scoring_maintain(state.next_event_id - 1, true);
                    if (pii_audit_queue_empty()) mark_clean_shutdown();
                    proc_exit(1);
                }
                wait_ms = 20;
            }
        }
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, wait_ms,
                        PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
    }
}
