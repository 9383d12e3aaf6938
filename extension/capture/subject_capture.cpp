// Capture: whose rows a statement read. Every scan of a relation with a subject_key column is
// tapped: each row the scan returns (it passed the scan's conditions) adds its key to the
// statement's subject set, whether or not the key column is selected. The set counts distinct
// subjects and keeps the keyed hashes of pii_audit.max_subjects_per_event of them.
//
// Plans stay as PostgreSQL chooses them. An index-only scan returns index tuples: on an index
// that holds the key columns the key is read from the index tuple; on another index, from the
// table row the index entry points to (one heap access per row returned, as an index scan
// would make). Parallel workers tap the scans they run, and hand their subject sets to the leader through a
// small per-leader area of dynamic shared memory; the leader, which waits for its workers
// before the statement ends, merges them into its own sets before the event is sent.
// PostgreSQL-free headers first (pg_free.h refuses them after postgres.h).
#include "pii_audit/subject_hash.h"

#include "pii_audit_internal.h"

#include "boundary.h"


extern "C" {
#include "access/parallel.h"
#include "access/genam.h"
#include "access/relscan.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "common/file_utils.h"
#include "executor/execParallel.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "port.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/dsa.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
}

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>

int pii_audit_max_subjects_per_event = 1000;

namespace boundary = pii_audit::boundary;

namespace {

// Exact distinct counting up to this many subjects per relation and statement (about 64 MB of
// fingerprints at the table's largest); past it the count is a HyperLogLog estimate.
constexpr size_t kExactSubjectLimit = 4u << 20;

const char* const kKeyFile = "pii_audit_subject.key";

// Loaded by the postmaster at start; every backend inherits it through fork.
pii_audit::SubjectHasher subject_hasher;
bool subject_key_loaded = false;


// ---------------------------------------------------------------- the server's secret

bool read_key(int fd, char* key) {
    ssize_t n = read(fd, key, pii_audit::kSubjectKeyBytes + 1);
    return n == static_cast<ssize_t>(pii_audit::kSubjectKeyBytes);
}

// ---------------------------------------------------------------- planning


// ---------------------------------------------------------------- taps on scans

// How a key's identifier is made from its value: its text form, compared the way the type
// compares (char(n) without its padding, numeric without trailing fractional zeros), so that
// values equal to the type are one subject.
enum class KeyForm { kText, kBpchar, kInteger, kNumeric, kOutputFunction };

// Memory for one row's identifiers (detoasting, output functions), reset after the row. Made on
// first use: integer keys and plain text never need it, and a point lookup then makes and
// deletes no memory context.
struct RowScratch {
    MemoryContext parent;
    MemoryContext context;  // nullptr until first used
    bool used;
    MemoryContext get() {
        if (context == nullptr)
            context = AllocSetContextCreate(parent, "pii_audit subject keys", ALLOCSET_SMALL_SIZES);
        used = true;
        return context;
    }
    void done() {
        if (!used) return;
        MemoryContextReset(context);
        used = false;
    }
};

struct KeyColumn {
    AttrNumber attnum;        // in the slot read: the table's attnum, or an index-only scan's column
    AttrNumber table_attnum;  // in the table
    KeyForm form;
    Oid typid;
    FmgrInfo output;
};

// One tap per scan node, however many events want its subjects: a scan of a child table read
// both directly and through its parent feeds two trackers. Wrapping a node twice would make the
// wrapper find itself as the "real" function and recurse until the stack overflows.
struct Tap {
    Tap* next;  // all taps of all open statements, most recently used first
    PlanState* node;
    ExecProcNodeMtd real;
    int ntrackers;
    int max_trackers;
    SubjectTracker** trackers;
    int nkeys;
    KeyColumn* keys;
    RowScratch scratch;
    // An index-only scan of an index without the key: the key is read from the table row the
    // index entry points to (what a plain index scan would have fetched). No pin is kept
    // between rows.
    IndexFetchTableData* heap_fetch;
    TupleTableSlot* heap_slot;
};

}  // namespace

struct SubjectTracker {
    pii_audit::SubjectSet* set;  // placement-new'd in palloc'd memory, destroyed on release
    bool tapped;                 // at least one scan feeds this tracker
    bool failed;                 // memory ran out: the count is a lower bound
    bool incomplete;             // some rows were read where the tap could not see them (a
                                 // worker's hand-over failed): the count is a lower bound
    bool released;
};

namespace {

Tap* all_taps = nullptr;

// The C++ set behind a wall: allocation failure marks the tracker, never unwinds into the server.
void add_subject(SubjectTracker* tracker, const char* data, size_t len) noexcept {
    if (tracker->failed || tracker->released) return;
    if (!pii_audit::boundary::cpp_call(
            nullptr, [&] { tracker->set->add(std::string_view(data, len)); }, nullptr, 0))
        tracker->failed = true;
}

void add_subject(Tap* tap, const char* data, size_t len) noexcept {
    for (int i = 0; i < tap->ntrackers; ++i) add_subject(tap->trackers[i], data, len);
}

// The identifier of one key value, as every subject of that column is identified: handed to
// use(data, len) (valid only during the call). What it allocates is in scratch, which the caller
// resets after the row (scratch.done()).
template <typename Use>
inline void key_identifier(const KeyColumn& key, Datum value, RowScratch& scratch, Use&& use) {
    switch (key.form) {
        case KeyForm::kInteger: {
            char digits[24];
            int64 v = key.typid == INT8OID   ? DatumGetInt64(value)
                      : key.typid == INT4OID ? DatumGetInt32(value)
                                             : DatumGetInt16(value);
            int n = pg_lltoa(v, digits);
            use(digits, static_cast<size_t>(n));
            break;
        }
        case KeyForm::kText:
        case KeyForm::kBpchar: {
            auto* ptr = reinterpret_cast<struct varlena*>(DatumGetPointer(value));
            if (VARATT_IS_EXTENDED(ptr)) {
                MemoryContext old = MemoryContextSwitchTo(scratch.get());
                ptr = pg_detoast_datum_packed(ptr);
                MemoryContextSwitchTo(old);
            }
            size_t len = VARSIZE_ANY_EXHDR(ptr);
            if (key.form == KeyForm::kBpchar)
                while (len > 0 && VARDATA_ANY(ptr)[len - 1] == ' ') --len;
            use(VARDATA_ANY(ptr), len);
            break;
        }
        case KeyForm::kNumeric: {
            MemoryContext old = MemoryContextSwitchTo(scratch.get());
            char* text = DatumGetCString(
                DirectFunctionCall1(numeric_out, DirectFunctionCall1(numeric_trim_scale, value)));
            MemoryContextSwitchTo(old);
            use(text, strlen(text));
            break;
        }
        case KeyForm::kOutputFunction: {
            MemoryContext old = MemoryContextSwitchTo(scratch.get());
            char* text = OutputFunctionCall(const_cast<FmgrInfo*>(&key.output), value);
            MemoryContextSwitchTo(old);
            use(text, strlen(text));
            break;
        }
    }
}

// The form of the built-in types identified other than by their output function.
bool builtin_key_form(Oid typid, KeyForm* form) {
    switch (typid) {
        case INT2OID:
        case INT4OID:
        case INT8OID:
            *form = KeyForm::kInteger;
            return true;
        case TEXTOID:
        case VARCHAROID:
            *form = KeyForm::kText;
            return true;
        case BPCHAROID:
            *form = KeyForm::kBpchar;
            return true;
        case NUMERICOID:
            *form = KeyForm::kNumeric;
            return true;
        default:
            return false;
    }
}

// How identifiers of a column of type atttypid are made (attnum fields are the caller's).
void set_key_form(KeyColumn* key, Oid atttypid) {
    // A domain identifies as its base type. The built-in types above are base types themselves:
    // no catalog lookup for them, once per tapped scan.
    key->typid = atttypid;
    if (builtin_key_form(atttypid, &key->form)) return;
    key->typid = getBaseType(atttypid);
    if (builtin_key_form(key->typid, &key->form)) return;
    key->form = KeyForm::kOutputFunction;
    Oid output;
    bool varlena;
    getTypeOutputInfo(key->typid, &output, &varlena);
    fmgr_info(output, &key->output);
}

void tap_row(Tap* tap, TupleTableSlot* slot) {
    for (int i = 0; i < tap->nkeys; ++i) {
        const KeyColumn& key = tap->keys[i];
        bool isnull;
        Datum value = slot_getattr(slot, key.attnum, &isnull);
        if (isnull) continue;
        key_identifier(key, value, tap->scratch,
                       [tap](const char* data, size_t len) { add_subject(tap, data, len); });
    }
    tap->scratch.done();
}

Tap* find_tap(PlanState* node) {
    // Rows come in runs from the same scan: move the tap found to the front.
    for (Tap** link = &all_taps; *link != nullptr; link = &(*link)->next) {
        Tap* tap = *link;
        if (tap->node != node) continue;
        if (link != &all_taps) {
            *link = tap->next;
            tap->next = all_taps;
            all_taps = tap;
        }
        return tap;
    }
    return nullptr;
}

TupleTableSlot* tapped_exec_proc_node(PlanState* node) {
    Tap* tap = find_tap(node);
    if (tap == nullptr) elog(ERROR, "pii_audit: a tapped scan lost its tap");
    TupleTableSlot* result = tap->real(node);
    if (TupIsNull(result) || tap->ntrackers == 0) return result;
    if (tap->heap_fetch != nullptr) {
        IndexScanDesc scan = reinterpret_cast<IndexOnlyScanState*>(node)->ioss_ScanDesc;
        bool call_again = false;
        bool all_dead = false;
        // The index-only scan may itself have visited the heap and moved xs_heaptid to the
        // visible member of a HOT chain; a chain walk cannot start there, the exact TID can.
        Snapshot snapshot = node->state->es_snapshot;
        ItemPointerData tid = scan->xs_heaptid;
        if (table_index_fetch_tuple(tap->heap_fetch, &tid, snapshot, tap->heap_slot, &call_again,
                                    &all_dead) ||
            table_tuple_fetch_row_version(reinterpret_cast<ScanState*>(node)->ss_currentRelation,
                                          &scan->xs_heaptid, snapshot, tap->heap_slot)) {
            tap_row(tap, tap->heap_slot);
        } else {
            for (int i = 0; i < tap->ntrackers; ++i) tap->trackers[i]->incomplete = true;
        }
        ExecClearTuple(tap->heap_slot);
        table_index_fetch_reset(tap->heap_fetch);
        return result;
    }
    // An index-only scan's scan slot holds the index tuple (laid out as its indextlist), also
    // when it had to visit the heap for visibility.
    tap_row(tap, reinterpret_cast<ScanState*>(node)->ss_ScanTupleSlot);
    return result;
}

bool is_table_scan(PlanState* node) {
    switch (nodeTag(node)) {
        case T_SeqScanState:
        case T_SampleScanState:
        case T_IndexScanState:
        case T_IndexOnlyScanState:
        case T_BitmapHeapScanState:
        case T_TidScanState:
        case T_TidRangeScanState:
            return true;
        default:
            return false;
    }
}

bool is_gather(PlanState* node) { return IsA(node, GatherState) || IsA(node, GatherMergeState); }

bool scan_belongs_to(const LabelCacheEntry* labels, Oid scanned, Oid read_relid) {
    if (scanned == read_relid) return true;
    for (int i = 0; i < labels->nfamily; ++i)
        if (labels->family[i] == read_relid) return true;
    return false;
}

void add_tracker(Tap* tap, SubjectTracker* tracker) {
    for (int i = 0; i < tap->ntrackers; ++i)
        if (tap->trackers[i] == tracker) return;
    if (tap->ntrackers == tap->max_trackers) {
        int grown = tap->max_trackers * 2;
        tap->trackers = static_cast<SubjectTracker**>(
            repalloc(tap->trackers, sizeof(SubjectTracker*) * static_cast<size_t>(grown)));
        tap->max_trackers = grown;
    }
    tap->trackers[tap->ntrackers++] = tracker;
    tracker->tapped = true;
}

// Where the scan's slot holds a table column: the column itself, or for an index-only scan
// the index column that is a plain reference to it (InvalidAttrNumber when none is).
AttrNumber slot_column(PlanState* node, AttrNumber attnum) {
    if (!IsA(node, IndexOnlyScanState)) return attnum;
    ListCell* cell;
    foreach (cell, reinterpret_cast<IndexOnlyScan*>(node->plan)->indextlist) {
        auto* entry = static_cast<TargetEntry*>(lfirst(cell));
        if (entry->expr != nullptr && IsA(entry->expr, Var) &&
            reinterpret_cast<Var*>(entry->expr)->varattno == attnum)
            return entry->resno;
    }
    return InvalidAttrNumber;
}

void add_tap(PlanState* node, Relation rel, const LabelCacheEntry* labels,
             SubjectTracker* tracker) {
    if (Tap* existing = find_tap(node)) {
        add_tracker(existing, tracker);
        return;
    }
    TupleDesc desc = RelationGetDescr(rel);
    auto* tap = static_cast<Tap*>(palloc0(sizeof(Tap)));
    tap->keys = static_cast<KeyColumn*>(palloc0(sizeof(KeyColumn) * labels->ncolumns));
    bool from_heap = false;
    for (int i = 0; i < labels->ncolumns; ++i) {
        const LabelledColumn& column = labels->columns[i];
        if (!column.subject_key || column.attnum <= 0 || column.attnum > desc->natts) continue;
        Form_pg_attribute attr = TupleDescAttr(desc, column.attnum - 1);
        if (attr->attisdropped) continue;
        KeyColumn& key = tap->keys[tap->nkeys++];
        key.table_attnum = column.attnum;
        key.attnum = slot_column(node, column.attnum);
        from_heap |= key.attnum == InvalidAttrNumber;
        set_key_form(&key, attr->atttypid);
    }
    if (tap->nkeys == 0) return;
    if (from_heap) {
        // An index-only scan whose index lacks a key column: every key from the table row.
        for (int k = 0; k < tap->nkeys; ++k) tap->keys[k].attnum = tap->keys[k].table_attnum;
        tap->heap_fetch = table_index_fetch_begin(rel);
        // On a copy of the descriptor: a slot on the relation's own pins it until dropped.
        tap->heap_slot = MakeSingleTupleTableSlot(CreateTupleDescCopy(RelationGetDescr(rel)),
                                                  table_slot_callbacks(rel));
    }
    tap->node = node;
    tap->max_trackers = 2;
    tap->trackers = static_cast<SubjectTracker**>(palloc(sizeof(SubjectTracker*) * 2));
    tap->scratch.parent = CurrentMemoryContext;
    // ExecProcNodeFirst (or the instrumentation wrapper) calls ExecProcNodeReal: tap that.
    tap->real = node->ExecProcNodeReal;
    node->ExecProcNodeReal = tapped_exec_proc_node;
    if (node->ExecProcNode == tap->real) node->ExecProcNode = tapped_exec_proc_node;
    tap->next = all_taps;
    all_taps = tap;
    add_tracker(tap, tracker);
}

// ---------------------------------------------------------------- hand-over from parallel workers
//
// Each leader backend that runs a keyed statement with a Gather has, while such a statement is
// open, a DSA area whose handle it publishes in its slot (indexed by its pgprocno) of a small
// shared array. Each worker of that leader, at its ExecutorEnd, exports the subject set of every
// keyed relation it scanned into one record in the area, tagged with its parallel context's
// segment handle (the worker's bgw_main_arg), and links it into the slot's list. The leader
// wraps its Gather nodes to learn the handle and worker count of every launch; at its
// ExecutorEnd (after the workers finished) it takes its launches' records and merges them.
// A launched worker whose record is missing, or any failed hand-over, makes the leader's count
// a lower bound (flagged estimated and truncated), never a silently low exact count.

// A leader's area may not grow past this (workers then hand over 16 kB estimates instead).
constexpr size_t kHandoverAreaLimit = size_t{256} << 20;

struct LeaderSlot {
    slock_t mutex;
    int pid;           // the leader that published area, 0 when none
    int collecting;    // its statements waiting for workers' subjects
    dsa_handle area;
    dsa_pointer records;            // list of HandoverRecord
    pg_atomic_uint32 failures;      // hand-overs to this leader that failed
};

struct HandoverShared {
    int tranche_id;
    int nslots;
    LeaderSlot slots[FLEXIBLE_ARRAY_MEMBER];
};

struct HandoverRecord {
    dsa_pointer next;
    dsm_handle launch;  // the parallel context's segment
    uint32 nsets;
    uint32 incomplete;  // the worker could not export everything it read
    uint32 padding;
    // nsets HandoverSets follow, each followed by its image (padded to 8 bytes)
};

struct HandoverSet {
    Oid relid;  // the relation scanned
    uint32 incomplete;
    uint64 size;
};

constexpr size_t align8(size_t n) { return (n + 7) & ~size_t{7}; }

HandoverShared* handover = nullptr;
shmem_request_hook_type prev_shmem_request = nullptr;
shmem_startup_hook_type prev_shmem_startup = nullptr;
ExecutorStart_hook_type prev_executor_start = nullptr;
ExecutorEnd_hook_type prev_executor_end = nullptr;

Size handover_shmem_size() {
    return add_size(offsetof(HandoverShared, slots),
                    mul_size(static_cast<Size>(MaxBackends), sizeof(LeaderSlot)));
}

void request_handover_shmem() {
    if (prev_shmem_request) prev_shmem_request();
    RequestAddinShmemSpace(handover_shmem_size());
}

void startup_handover_shmem() {
    if (prev_shmem_startup) prev_shmem_startup();
    bool found = false;
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    handover = static_cast<HandoverShared*>(
        ShmemInitStruct("pii_audit subject hand-over", handover_shmem_size(), &found));
    if (!found) {
        handover->tranche_id = LWLockNewTrancheId();
        handover->nslots = MaxBackends;
        for (int i = 0; i < MaxBackends; ++i) {
            LeaderSlot& slot = handover->slots[i];
            SpinLockInit(&slot.mutex);
            slot.pid = 0;
            slot.collecting = 0;
            slot.area = DSM_HANDLE_INVALID;
            slot.records = InvalidDsaPointer;
            pg_atomic_init_u32(&slot.failures, 0);
        }
    }
    LWLockRelease(AddinShmemInitLock);
}

LeaderSlot* slot_of(PGPROC* proc) {
    if (handover == nullptr || proc == nullptr || proc->pgprocno < 0 ||
        proc->pgprocno >= handover->nslots)
        return nullptr;
    return &handover->slots[proc->pgprocno];
}

void register_tranche() {
    static bool registered = false;
    if (registered) return;
    LWLockRegisterTranche(handover->tranche_id, "pii_audit subjects");
    registered = true;
}

// ---- leader side

struct ParallelScan {
    SubjectTracker* tracker;
    Oid scanned;  // a keyed relation scanned under a Gather on the tracker's behalf
};

struct StatementCollector;

struct GatherTap {
    GatherTap* next;
    PlanState* node;
    ExecProcNodeMtd real;
    StatementCollector* collector;
};

struct StatementCollector {
    StatementCollector* next;
    EState* estate;
    MemoryContextCallback callback;
    int nscans, max_scans;
    ParallelScan* scans;
    int nlaunches, max_launches;
    dsm_handle* launches;
    int64 workers_launched;
    uint32 failures_before;
    bool publishing;  // the area exists and the slot names it
    bool finished;
};

StatementCollector* collectors = nullptr;
GatherTap* gather_taps = nullptr;
dsa_area* leader_area = nullptr;  // while collecting > 0
int collecting = 0;

bool begin_publishing() {
    LeaderSlot* slot = slot_of(MyProc);
    if (slot == nullptr) return false;
    if (collecting == 0) {
        MemoryContext caller = CurrentMemoryContext;
        dsa_area* volatile area = nullptr;
        bool created = boundary::pg_forget_error([&] {
            register_tranche();
            MemoryContextSwitchTo(TopMemoryContext);
            area = dsa_create(handover->tranche_id);
            dsa_pin_mapping(area);  // detached by us, also during abort cleanup
            dsa_set_size_limit(area, kHandoverAreaLimit);
            MemoryContextSwitchTo(caller);
        });
        if (!created) {
            // Auditing must not fail the statement: its workers' subjects will be missing,
            // and the event will say the count is a lower bound.
            if (area != nullptr) dsa_detach(area);
            return false;
        }
        leader_area = area;
        SpinLockAcquire(&slot->mutex);
        slot->pid = MyProcPid;
        slot->area = dsa_get_handle(leader_area);
        slot->records = InvalidDsaPointer;
        slot->collecting = 1;
        SpinLockRelease(&slot->mutex);
    } else {
        SpinLockAcquire(&slot->mutex);
        ++slot->collecting;
        SpinLockRelease(&slot->mutex);
    }
    ++collecting;
    return true;
}

void end_publishing() {
    LeaderSlot* slot = slot_of(MyProc);
    if (--collecting > 0) {
        SpinLockAcquire(&slot->mutex);
        --slot->collecting;
        SpinLockRelease(&slot->mutex);
        return;
    }
    SpinLockAcquire(&slot->mutex);
    slot->pid = 0;
    slot->collecting = 0;
    slot->area = DSM_HANDLE_INVALID;
    slot->records = InvalidDsaPointer;
    SpinLockRelease(&slot->mutex);
    // Records nobody took (workers of statements that did not collect) go with the area.
    dsa_detach(leader_area);
    leader_area = nullptr;
}

void mark_incomplete(StatementCollector* collector) {
    for (int i = 0; i < collector->nscans; ++i) collector->scans[i].tracker->incomplete = true;
}

void on_collector_reset(void* arg) {
    auto* collector = static_cast<StatementCollector*>(arg);
    if (!collector->finished) {
        // The statement failed (or never reached ExecutorEnd): what its workers read is lost.
        collector->finished = true;
        if (collector->workers_launched > 0) mark_incomplete(collector);
        if (collector->publishing) end_publishing();
    }
    for (GatherTap** link = &gather_taps; *link != nullptr;) {
        if ((*link)->collector == collector)
            *link = (*link)->next;
        else
            link = &(*link)->next;
    }
    for (StatementCollector** link = &collectors; *link != nullptr; link = &(*link)->next) {
        if (*link == collector) {
            *link = collector->next;
            break;
        }
    }
}

StatementCollector* collector_for(EState* estate) {
    for (StatementCollector* c = collectors; c != nullptr; c = c->next)
        if (c->estate == estate) return c;
    MemoryContext old = MemoryContextSwitchTo(estate->es_query_cxt);
    auto* collector = static_cast<StatementCollector*>(palloc0(sizeof(StatementCollector)));
    collector->estate = estate;
    collector->max_scans = 4;
    collector->scans = static_cast<ParallelScan*>(palloc(sizeof(ParallelScan) * 4));
    collector->max_launches = 2;
    collector->launches = static_cast<dsm_handle*>(palloc(sizeof(dsm_handle) * 2));
    MemoryContextSwitchTo(old);
    if (LeaderSlot* slot = slot_of(MyProc))
        collector->failures_before = pg_atomic_read_u32(&slot->failures);
    collector->publishing = begin_publishing();
    collector->callback.func = on_collector_reset;
    collector->callback.arg = collector;
    MemoryContextRegisterResetCallback(estate->es_query_cxt, &collector->callback);
    collector->next = collectors;
    collectors = collector;
    return collector;
}

GatherTap* find_gather_tap(PlanState* node) {
    for (GatherTap* tap = gather_taps; tap != nullptr; tap = tap->next)
        if (tap->node == node) return tap;
    return nullptr;
}

void note_launch(StatementCollector* collector, PlanState* node) {
    ParallelExecutorInfo* pei;
    int launched;
    if (IsA(node, GatherState)) {
        pei = reinterpret_cast<GatherState*>(node)->pei;
        launched = reinterpret_cast<GatherState*>(node)->nworkers_launched;
    } else {
        pei = reinterpret_cast<GatherMergeState*>(node)->pei;
        launched = reinterpret_cast<GatherMergeState*>(node)->nworkers_launched;
    }
    if (pei == nullptr || pei->pcxt == nullptr || pei->pcxt->seg == nullptr || launched <= 0)
        return;
    collector->workers_launched += launched;
    dsm_handle launch = dsm_segment_handle(pei->pcxt->seg);
    for (int i = 0; i < collector->nlaunches; ++i)
        if (collector->launches[i] == launch) return;  // a rescan reuses its context
    if (collector->nlaunches == collector->max_launches) {
        collector->max_launches *= 2;
        collector->launches = static_cast<dsm_handle*>(
            repalloc(collector->launches, sizeof(dsm_handle) * collector->max_launches));
    }
    collector->launches[collector->nlaunches++] = launch;
}

bool gather_initialized(PlanState* node) {
    return IsA(node, GatherState) ? reinterpret_cast<GatherState*>(node)->initialized
                                  : reinterpret_cast<GatherMergeState*>(node)->initialized;
}

// A Gather launches its workers on its first call after start or rescan.
TupleTableSlot* tapped_gather(PlanState* node) {
    GatherTap* tap = find_gather_tap(node);
    if (tap == nullptr) elog(ERROR, "pii_audit: a tapped gather lost its tap");
    bool was_initialized = gather_initialized(node);
    TupleTableSlot* result = tap->real(node);
    if (!was_initialized && gather_initialized(node)) note_launch(tap->collector, node);
    return result;
}

void note_parallel_scan(PlanState* gather, SubjectTracker* tracker, Oid scanned) {
    StatementCollector* collector = collector_for(gather->state);
    bool known = false;
    for (int i = 0; i < collector->nscans && !known; ++i)
        known = collector->scans[i].tracker == tracker && collector->scans[i].scanned == scanned;
    if (!known) {
        if (collector->nscans == collector->max_scans) {
            collector->max_scans *= 2;
            collector->scans = static_cast<ParallelScan*>(
                repalloc(collector->scans, sizeof(ParallelScan) * collector->max_scans));
        }
        collector->scans[collector->nscans++] = ParallelScan{tracker, scanned};
    }
    if (find_gather_tap(gather) != nullptr) return;
    auto* tap = static_cast<GatherTap*>(
        MemoryContextAllocZero(gather->state->es_query_cxt, sizeof(GatherTap)));
    tap->node = gather;
    tap->collector = collector;
    tap->real = gather->ExecProcNodeReal;
    gather->ExecProcNodeReal = tapped_gather;
    if (gather->ExecProcNode == tap->real) gather->ExecProcNode = tapped_gather;
    tap->next = gather_taps;
    gather_taps = tap;
}

void merge_image(SubjectTracker* tracker, const void* image, size_t size) noexcept {
    if (tracker->failed || tracker->released) return;
    if (!pii_audit::boundary::cpp_call(
            nullptr, [&] { if (!tracker->set->merge(image, size)) tracker->incomplete = true; },
            nullptr, 0))
        tracker->failed = true;
}

void merge_record(StatementCollector* collector, const HandoverRecord* record) {
    if (record->incomplete) mark_incomplete(collector);
    const char* at = reinterpret_cast<const char*>(record) + sizeof(HandoverRecord);
    for (uint32 s = 0; s < record->nsets; ++s) {
        const auto* set = reinterpret_cast<const HandoverSet*>(at);
        const char* image = at + sizeof(HandoverSet);
        for (int i = 0; i < collector->nscans; ++i) {
            ParallelScan& scan = collector->scans[i];
            if (scan.scanned != set->relid) continue;
            if (set->incomplete) scan.tracker->incomplete = true;
            merge_image(scan.tracker, image, set->size);
        }
        at = image + align8(set->size);
    }
}

struct RecordWalk {
    dsa_pointer records;  // still to look at
    dsa_pointer kept;     // records of other launches (a nested statement's): they go back
    HandoverRecord* kept_tail;
    int64 received;
};

// Merges and frees the records of the collector's launches. False if the area failed us.
bool take_records(StatementCollector* collector, RecordWalk* walk) {
    // On an error nothing may stay locked for the detach (as in hand_over).
    return boundary::pg_forget_error([&] {
        while (DsaPointerIsValid(walk->records)) {
            dsa_pointer current = walk->records;
            auto* record = static_cast<HandoverRecord*>(dsa_get_address(leader_area, current));
            walk->records = record->next;
            bool ours = false;
            for (int i = 0; i < collector->nlaunches && !ours; ++i)
                ours = collector->launches[i] == record->launch;
            if (ours) {
                ++walk->received;
                merge_record(collector, record);
                dsa_free(leader_area, current);
            } else {
                record->next = walk->kept;
                if (walk->kept_tail == nullptr) walk->kept_tail = record;
                walk->kept = current;
            }
        }
    });
}

// At the leader's ExecutorEnd: its workers are done (Gather waits for them when it finishes).
void collect(StatementCollector* collector) {
    if (collector->finished) return;
    collector->finished = true;
    bool complete = collector->publishing;
    for (GatherTap* tap = gather_taps; tap != nullptr; tap = tap->next) {
        if (tap->collector != collector) continue;
        PlanState* node = tap->node;
        ParallelExecutorInfo* pei = IsA(node, GatherState)
                                        ? reinterpret_cast<GatherState*>(node)->pei
                                        : reinterpret_cast<GatherMergeState*>(node)->pei;
        if (pei != nullptr && !pei->finished) complete = false;  // workers may still run
    }
    if (collector->workers_launched > 0 && collector->publishing) {
        LeaderSlot* slot = slot_of(MyProc);
        RecordWalk walk{};
        SpinLockAcquire(&slot->mutex);
        walk.records = slot->records;
        slot->records = InvalidDsaPointer;
        SpinLockRelease(&slot->mutex);
        walk.kept = InvalidDsaPointer;
        if (!take_records(collector, &walk)) complete = false;
        if (walk.kept_tail != nullptr) {
            SpinLockAcquire(&slot->mutex);
            walk.kept_tail->next = slot->records;
            slot->records = walk.kept;
            SpinLockRelease(&slot->mutex);
        }
        if (walk.received < collector->workers_launched) complete = false;
        if (pg_atomic_read_u32(&slot->failures) != collector->failures_before) complete = false;
    }
    if (!complete && collector->workers_launched > 0) mark_incomplete(collector);
    if (collector->publishing) end_publishing();
}

// ---- worker side

struct WorkerCapture {
    EState* estate;
    MemoryContextCallback callback;
    int ntrackers, max_trackers;
    Oid* relids;
    SubjectTracker** trackers;
    bool handed_over;
};

WorkerCapture* worker_capture = nullptr;

SubjectTracker* worker_tracker(WorkerCapture* capture, Oid relid) {
    for (int i = 0; i < capture->ntrackers; ++i)
        if (capture->relids[i] == relid) return capture->trackers[i];
    if (capture->ntrackers == capture->max_trackers) {
        capture->max_trackers *= 2;
        capture->relids = static_cast<Oid*>(
            repalloc(capture->relids, sizeof(Oid) * capture->max_trackers));
        capture->trackers = static_cast<SubjectTracker**>(
            repalloc(capture->trackers, sizeof(SubjectTracker*) * capture->max_trackers));
    }
    capture->relids[capture->ntrackers] = relid;
    return capture->trackers[capture->ntrackers++] = pii_audit_subjects_begin();
}

void release_worker_capture(WorkerCapture* capture) {
    for (int i = 0; i < capture->ntrackers; ++i) pii_audit_subjects_release(capture->trackers[i]);
    capture->ntrackers = 0;
    if (worker_capture == capture) worker_capture = nullptr;
}

void on_worker_capture_reset(void* arg) { release_worker_capture(static_cast<WorkerCapture*>(arg)); }

// Is our leader waiting for subjects? (Otherwise nothing is tapped in this worker.)
bool leader_collecting() {
    PGPROC* leader = MyProc != nullptr ? MyProc->lockGroupLeader : nullptr;
    LeaderSlot* slot = slot_of(leader);
    if (slot == nullptr) return false;
    SpinLockAcquire(&slot->mutex);
    bool collecting_now = slot->pid == leader->pid && slot->collecting > 0;
    SpinLockRelease(&slot->mutex);
    return collecting_now;
}

size_t record_size(WorkerCapture* capture, bool compact) {
    size_t size = sizeof(HandoverRecord);
    for (int i = 0; i < capture->ntrackers; ++i)
        size += sizeof(HandoverSet) + align8(capture->trackers[i]->set->export_size(compact));
    return size;
}

void write_record(WorkerCapture* capture, HandoverRecord* record, dsm_handle launch,
                  bool compact) {
    record->next = InvalidDsaPointer;
    record->launch = launch;
    record->nsets = static_cast<uint32>(capture->ntrackers);
    record->incomplete = 0;
    record->padding = 0;
    char* at = reinterpret_cast<char*>(record) + sizeof(HandoverRecord);
    for (int i = 0; i < capture->ntrackers; ++i) {
        SubjectTracker* tracker = capture->trackers[i];
        auto* set = reinterpret_cast<HandoverSet*>(at);
        set->relid = capture->relids[i];
        set->incomplete = tracker->failed || tracker->incomplete;
        set->size = tracker->set->export_size(compact);
        tracker->set->export_to(at + sizeof(HandoverSet), compact);
        at += sizeof(HandoverSet) + align8(set->size);
    }
}

// At the worker's ExecutorEnd: one record per worker and launch, even an empty one, so that
// the leader can tell a missing hand-over from a worker that read nobody.
void hand_over(WorkerCapture* capture) {
    capture->handed_over = true;
    PGPROC* leader = MyProc->lockGroupLeader;
    LeaderSlot* slot = slot_of(leader);
    if (slot == nullptr) return;
    SpinLockAcquire(&slot->mutex);
    bool collecting_now = slot->pid == leader->pid && slot->collecting > 0;
    dsa_handle area_handle = slot->area;
    SpinLockRelease(&slot->mutex);
    if (!collecting_now) return;
    dsm_handle launch = DatumGetUInt32(MyBgworkerEntry->bgw_main_arg);

    dsa_area* volatile area = nullptr;
    volatile bool done = false;
    // No ERROR in a worker because of auditing: the leader learns it from the counter.
    // dsa_allocate can fail in dsm_create while holding the area's lock, which detaching
    // takes again: pg_forget_error releases what the failed call held first.
    bool handed = boundary::pg_forget_error([&] {
        register_tranche();
        area = dsa_attach(area_handle);
        constexpr int kFlags = DSA_ALLOC_HUGE | DSA_ALLOC_NO_OOM;
        bool compact = false;
        dsa_pointer dp = dsa_allocate_extended(area, record_size(capture, false), kFlags);
        if (!DsaPointerIsValid(dp)) {
            // Too big for the area: hand over estimates (16 kB per relation) instead.
            compact = true;
            dp = dsa_allocate_extended(area, record_size(capture, true), kFlags);
        }
        if (DsaPointerIsValid(dp)) {
            auto* record = static_cast<HandoverRecord*>(dsa_get_address(area, dp));
            write_record(capture, record, launch, compact);
            SpinLockAcquire(&slot->mutex);
            record->next = slot->records;
            slot->records = dp;
            SpinLockRelease(&slot->mutex);
            done = true;
        }
        dsa_detach(area);
        area = nullptr;
    });
    if (!handed && area != nullptr) dsa_detach(area);
    if (!done) pg_atomic_fetch_add_u32(&slot->failures, 1);
}

// ---- the walk over a statement's plan

struct TapRequest {
    Oid read_relid;  // the relation the event is about (a partition's parent, for instance)
    SubjectTracker* tracker;
    WorkerCapture* worker;  // in a parallel worker: tap every keyed scan, one set per relation
    PlanState* gather;      // the Gather above the node being walked, if any
};

// Whether relation `relid` (a range-table entry of the statement) is one the request counts.
bool counts_for(const TapRequest* request, Oid relid) {
    const LabelCacheEntry* labels = pii_audit_label_cache_lookup(relid);
    return labels->has_subject_key && scan_belongs_to(labels, relid, request->read_relid);
}

// Paths that read rows of a keyed relation where no tap sees them: the count they lead to is a
// lower bound (flagged estimated and truncated), never an exact count that is too low.
//  - INSERT ... RETURNING hands back the inserted row, and ON CONFLICT DO UPDATE reads the
//    existing one, without a scan;
//  - a foreign or custom scan whose tuples are not laid out as the table (a join or a
//    projection pushed down to the remote side).
void note_untapped_paths(PlanState* node, TapRequest* request) {
    if (request->worker != nullptr) return;  // the leader judges its own plan
    EState* estate = node->state;
    if (IsA(node, ModifyTableState)) {
        auto* plan = reinterpret_cast<ModifyTable*>(node->plan);
        if (plan->operation != CMD_INSERT ||
            (plan->returningLists == NIL && plan->onConflictAction != ONCONFLICT_UPDATE))
            return;
        ListCell* cell;
        foreach (cell, plan->resultRelations) {
            RangeTblEntry* rte = exec_rt_fetch(lfirst_int(cell), estate);
            if (rte->rtekind == RTE_RELATION && counts_for(request, rte->relid))
                request->tracker->incomplete = true;
        }
        return;
    }
    Bitmapset* relids = nullptr;
    bool own_layout = false;
    if (IsA(node, ForeignScanState)) {
        auto* plan = reinterpret_cast<ForeignScan*>(node->plan);
        relids = plan->fs_relids;
        own_layout = plan->scan.scanrelid > 0 && plan->fdw_scan_tlist == NIL;
    } else if (IsA(node, CustomScanState)) {
        auto* plan = reinterpret_cast<CustomScan*>(node->plan);
        relids = plan->custom_relids;
        own_layout = plan->scan.scanrelid > 0 && plan->custom_scan_tlist == NIL;
    } else {
        return;
    }
    Relation rel = reinterpret_cast<ScanState*>(node)->ss_currentRelation;
    if (own_layout && rel != nullptr) {
        Oid relid = RelationGetRelid(rel);
        if (counts_for(request, relid))
            add_tap(node, rel, pii_audit_label_cache_lookup(relid), request->tracker);
        return;
    }
    int rti = -1;
    while ((rti = bms_next_member(relids, rti)) >= 0) {
        RangeTblEntry* rte = exec_rt_fetch(rti, estate);
        if (rte->rtekind == RTE_RELATION && counts_for(request, rte->relid))
            request->tracker->incomplete = true;
    }
}

bool tap_walker(PlanState* node, void* context) {
    if (node == nullptr) return false;
    auto* request = static_cast<TapRequest*>(context);
    note_untapped_paths(node, request);
    if (is_table_scan(node)) {
        Relation rel = reinterpret_cast<ScanState*>(node)->ss_currentRelation;
        if (rel != nullptr) {
            Oid relid = RelationGetRelid(rel);
            const LabelCacheEntry* labels = pii_audit_label_cache_lookup(relid);
            if (labels->has_subject_key && request->worker != nullptr) {
                add_tap(node, rel, labels, worker_tracker(request->worker, relid));
            } else if (labels->has_subject_key &&
                       scan_belongs_to(labels, relid, request->read_relid)) {
                add_tap(node, rel, labels, request->tracker);
                if (request->gather != nullptr)
                    note_parallel_scan(request->gather, request->tracker, relid);
            }
        }
    }
    PlanState* outer_gather = request->gather;
    if (is_gather(node)) request->gather = node;
    bool result = planstate_tree_walker(node, pii_audit_as_walker(tap_walker), context);
    request->gather = outer_gather;
    return result;
}

// ---- executor hooks: workers tap and hand over; leaders collect before the event is sent

void subject_executor_start(QueryDesc* query_desc, int eflags) {
    if (prev_executor_start)
        prev_executor_start(query_desc, eflags);
    else
        standard_ExecutorStart(query_desc, eflags);
    // Only the worker's own query: a function it calls runs queries of its own, whose
    // hand-over would stand in for the query's (a count too low, reported exact) and cost a
    // DSA attach per call. The query's taps see the rows those functions' scans return only
    // through the function's result, as in the leader.
    if (!IsParallelWorker() || !pii_audit_enabled || pii_audit_capture_suppressed ||
        (eflags & EXEC_FLAG_EXPLAIN_ONLY) || worker_capture != nullptr || !leader_collecting())
        return;
    EState* estate = query_desc->estate;
    MemoryContext old = MemoryContextSwitchTo(estate->es_query_cxt);
    auto* capture = static_cast<WorkerCapture*>(palloc0(sizeof(WorkerCapture)));
    capture->estate = estate;
    capture->max_trackers = 4;
    capture->relids = static_cast<Oid*>(palloc(sizeof(Oid) * 4));
    capture->trackers = static_cast<SubjectTracker**>(palloc(sizeof(SubjectTracker*) * 4));
    capture->callback.func = on_worker_capture_reset;
    capture->callback.arg = capture;
    MemoryContextRegisterResetCallback(estate->es_query_cxt, &capture->callback);
    worker_capture = capture;
    TapRequest request{InvalidOid, nullptr, capture, nullptr};
    (void)tap_walker(query_desc->planstate, &request);
    MemoryContextSwitchTo(old);
}

void subject_executor_end(QueryDesc* query_desc) {
    if (worker_capture != nullptr && worker_capture->estate == query_desc->estate &&
        !worker_capture->handed_over) {
        hand_over(worker_capture);
        release_worker_capture(worker_capture);
    }
    for (StatementCollector* c = collectors; c != nullptr; c = c->next)
        if (c->estate == query_desc->estate) collect(c);
    if (prev_executor_end)
        prev_executor_end(query_desc);
    else
        standard_ExecutorEnd(query_desc);
}

}  // namespace

// ---------------------------------------------------------------- interface

bool pii_audit_subject_key_loaded(void) { return subject_key_loaded; }

void pii_audit_load_subject_key(void) {
    // The postmaster runs in the data directory. The key is created once, readable by the
    // server's OS user only, and never leaves this process tree.
    char key[pii_audit::kSubjectKeyBytes + 1];
    int fd = open(kKeyFile, O_RDONLY | PG_BINARY);
    if (fd < 0 && errno == ENOENT) {
        if (!pg_strong_random(key, pii_audit::kSubjectKeyBytes)) {
            ereport(WARNING, (errmsg("pii_audit could not generate a subject key: no strong "
                                     "random source"),
                              errdetail("Events will count subjects but store no subject "
                                        "hashes.")));
            return;
        }
        int out = open(kKeyFile, O_WRONLY | O_CREAT | O_EXCL | PG_BINARY, S_IRUSR | S_IWUSR);
        bool ok = out >= 0 &&
                  write(out, key, pii_audit::kSubjectKeyBytes) ==
                      static_cast<ssize_t>(pii_audit::kSubjectKeyBytes) &&
                  pg_fsync(out) == 0;
        if (out >= 0) close(out);
        if (!ok) {
            ereport(WARNING, (errmsg("pii_audit could not write subject key file \"%s\": %m",
                                     kKeyFile),
                              errdetail("Events will count subjects but store no subject "
                                        "hashes.")));
            unlink(kKeyFile);
            return;
        }
        fsync_fname(".", true);
        ereport(LOG, (errmsg("pii_audit created subject key file \"%s\"", kKeyFile),
                      errhint("Back it up with the data directory: without it, recorded "
                              "subjects cannot be matched to people.")));
        fd = open(kKeyFile, O_RDONLY | PG_BINARY);
    }
    if (fd < 0) {
        ereport(WARNING, (errmsg("pii_audit could not open subject key file \"%s\": %m", kKeyFile),
                          errdetail("Events will count subjects but store no subject hashes.")));
        return;
    }
    bool ok = read_key(fd, key);
    close(fd);
    if (!ok) {
        ereport(WARNING,
                (errmsg("pii_audit subject key file \"%s\" is not exactly %d bytes", kKeyFile,
                        static_cast<int>(pii_audit::kSubjectKeyBytes)),
                 errdetail("Events will count subjects but store no subject hashes."),
                 errhint("Restore the file from a backup. Removing it makes a new key, and "
                         "subjects recorded under the old key can no longer be matched.")));
        return;
    }
    subject_hasher = pii_audit::SubjectHasher(std::string_view(key, pii_audit::kSubjectKeyBytes));
    explicit_bzero(key, sizeof key);
    subject_key_loaded = subject_hasher.valid();
}

int64 pii_audit_subject_hash(const char* data, size_t len) {
    return subject_hasher.hash(std::string_view(data, len));
}

int64 pii_audit_subject_key_fingerprint(void) {
    if (!subject_key_loaded) return 0;
    // No identifier is this text with a NUL in front of it (subject keys are column values).
    static const char kProbe[] = "\0pii_audit subject key fingerprint";
    return subject_hasher.hash(std::string_view(kProbe, sizeof kProbe - 1));
}

// ---------------------------------------------------------------- naming subjects

namespace {

// Receives the rows of "SELECT key FROM table" and names the wanted hashes they make.
struct IdentifyReceiver {
    DestReceiver pub;  // first: the executor sees a DestReceiver
    KeyColumn key;
    const int64* wanted;
    // Open addressing on the hash's low bits (keyed hashes are uniform): a row costs its keyed
    // hash and one or two probes. A slot holds 1 + the index into wanted, 0 when empty.
    int32* table;
    size_t mask;
    bool* named;
    int left;
    RowScratch scratch;
    pii_audit_identified found;
    void* arg;
};

void identify_startup(DestReceiver* self, int, TupleDesc typeinfo) {
    auto* r = reinterpret_cast<IdentifyReceiver*>(self);
    r->key.attnum = r->key.table_attnum = 1;
    set_key_form(&r->key, TupleDescAttr(typeinfo, 0)->atttypid);
}

bool identify_row(TupleTableSlot* slot, DestReceiver* self) {
    auto* r = reinterpret_cast<IdentifyReceiver*>(self);
    bool isnull;
    Datum value = slot_getattr(slot, 1, &isnull);
    if (isnull) return true;
    key_identifier(r->key, value, r->scratch, [r](const char* data, size_t len) {
        int64 hash = subject_hasher.hash(std::string_view(data, len));
        for (size_t at = static_cast<uint64>(hash) & r->mask; r->table[at] != 0; at = (at + 1) & r->mask) {
            int i = r->table[at] - 1;
            if (r->wanted[i] != hash) continue;
            if (r->named[i]) return;
            r->named[i] = true;
            --r->left;
            r->found(hash, data, len, r->arg);
            return;
        }
    });
    r->scratch.done();
    return r->left > 0;  // false ends the scan: every hash is named
}

void identify_nothing(DestReceiver*) {}

}  // namespace

int pii_audit_identify_subjects(Oid relid, const char* key_column, int64* wanted, int nwanted,
                                pii_audit_identified found, void* arg) {
    if (nwanted <= 0) return 0;
    IdentifyReceiver r{};
    r.pub.receiveSlot = identify_row;
    r.pub.rStartup = identify_startup;
    r.pub.rShutdown = identify_nothing;
    r.pub.rDestroy = identify_nothing;
    r.pub.mydest = DestNone;
    size_t slots = 4;
    while (slots < static_cast<size_t>(nwanted) * 2) slots *= 2;
    r.mask = slots - 1;
    r.table = static_cast<int32*>(palloc0(slots * sizeof(int32)));
    // Each hash once: wanted keeps the distinct ones at its front, in the order given.
    int distinct = 0;
    for (int i = 0; i < nwanted; ++i) {
        size_t at = static_cast<uint64>(wanted[i]) & r.mask;
        while (r.table[at] != 0 && wanted[r.table[at] - 1] != wanted[i]) at = (at + 1) & r.mask;
        if (r.table[at] != 0) continue;
        wanted[distinct] = wanted[i];
        r.table[at] = ++distinct;
    }
    r.wanted = wanted;
    r.named = static_cast<bool*>(palloc0(static_cast<size_t>(distinct)));
    r.left = distinct;
    r.found = found;
    r.arg = arg;
    r.scratch.parent = CurrentMemoryContext;

    // A query, not a scan of our own: it reads as the caller may (privileges, row-level
    // security, partitions and inheritance children), and it is audited like any read: naming
    // people from their keys is a read of the key column.
    char* relname = get_rel_name(relid);
    char* nspname = get_namespace_name(get_rel_namespace(relid));
    if (relname == nullptr || nspname == nullptr)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
                        errmsg("pii_audit: relation with OID %u does not exist", relid)));
    char* sql = psprintf("SELECT %s FROM %s", quote_identifier(key_column),
                         quote_qualified_identifier(nspname, relname));
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "pii_audit: SPI_connect failed");
    SPIExecuteOptions options{};
    options.read_only = true;
    options.dest = &r.pub;
    int rc = SPI_execute_extended(sql, &options);
    // SPI says "utility" for a SELECT whose rows go to a receiver of its caller's (DestNone).
    if (rc != SPI_OK_SELECT && rc != SPI_OK_UTILITY)
        elog(ERROR, "pii_audit: naming subjects failed: %s", SPI_result_code_string(rc));
    SPI_finish();
    if (r.scratch.context != nullptr) MemoryContextDelete(r.scratch.context);
    pfree(r.named);
    pfree(r.table);
    pfree(sql);
    return distinct - r.left;
}

// Called from _PG_init while shared_preload_libraries load (the only way pii_audit installs).
void pii_audit_install_subject_hooks(void) {
    prev_shmem_request = shmem_request_hook;
    shmem_request_hook = request_handover_shmem;
    prev_shmem_startup = shmem_startup_hook;
    shmem_startup_hook = startup_handover_shmem;
    prev_executor_start = ExecutorStart_hook;
    ExecutorStart_hook = subject_executor_start;
    prev_executor_end = ExecutorEnd_hook;
    ExecutorEnd_hook = subject_executor_end;
}

SubjectTracker* pii_audit_subjects_begin(void) {
    auto* tracker = static_cast<SubjectTracker*>(palloc0(sizeof(SubjectTracker)));
    void* memory = palloc(sizeof(pii_audit::SubjectSet));
    size_t store = static_cast<size_t>(pii_audit_max_subjects_per_event);
    tracker->set = new (memory) pii_audit::SubjectSet(subject_key_loaded ? &subject_hasher : nullptr,
                                                      store, kExactSubjectLimit);
    return tracker;
}

bool pii_audit_subjects_tap(PlanState* root, Oid read_relid, SubjectTracker* tracker) {
    TapRequest request{read_relid, tracker, nullptr, nullptr};
    (void)tap_walker(root, &request);
    return tracker->tapped;
}

void pii_audit_subjects_fill(SubjectTracker* tracker, pii_audit::EventView& event) {
    if (tracker == nullptr || tracker->released) return;
    const pii_audit::SubjectSet& set = *tracker->set;
    event.header.flags |= pii_audit::kFlagSubjectsTracked;
    event.header.subject_count = static_cast<int64>(set.count());
    bool lower_bound = tracker->failed || tracker->incomplete;
    if (set.truncated() || lower_bound || !subject_key_loaded)
        event.header.flags |= pii_audit::kFlagSubjectsTruncated;
    if (set.estimated() || lower_bound)
        event.header.flags |= pii_audit::kFlagSubjectCountEstimated;
    event.field[pii_audit::kSubjects] =
        std::string_view(reinterpret_cast<const char*>(set.stored().data()),
                         set.stored().size() * sizeof(int64));
}

void pii_audit_subjects_release(SubjectTracker* tracker) {
    if (tracker == nullptr || tracker->released) return;
    tracker->released = true;
    // Detach the tracker from its taps and unlink taps left without one. Trackers are released
    // when their statement's executor memory is reset, so no tapped node of theirs runs again,
    // and an unlinked tap never points at freed memory.
    for (Tap** link = &all_taps; *link != nullptr;) {
        Tap* tap = *link;
        int kept = 0;
        for (int i = 0; i < tap->ntrackers; ++i)
            if (tap->trackers[i] != tracker) tap->trackers[kept++] = tap->trackers[i];
        tap->ntrackers = kept;
        if (kept == 0)
            *link = tap->next;
        else
            link = &tap->next;
    }
    tracker->set->~SubjectSet();
}
