// Capture: whose rows a statement read. Every scan of a relation with a subject_key column is
// tapped: each row the scan returns (it passed the scan's conditions) adds its key to the
// statement's subject set, whether or not the key column is selected. The set counts distinct
// subjects and keeps the keyed hashes of the first pii_audit.max_subjects_per_event.
//
// Two plan shapes would hide rows from the tap, so the planner avoids them for statements that
// read a keyed relation: parallel workers (they scan in other processes) and index-only scans
// (their tuples may not hold the key column).
#include "pii_audit_internal.h"

#include "pii_audit/subject_hash.h"

extern "C" {
#include "catalog/pg_type.h"
#include "common/file_utils.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "optimizer/planner.h"
#include "port.h"
#include "storage/fd.h"
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

namespace {

// Exact distinct counting up to this many subjects per relation and statement (about 64 MB of
// fingerprints at the table's largest); past it the count is a HyperLogLog estimate.
constexpr size_t kExactSubjectLimit = 4u << 20;

const char* const kKeyFile = "pii_audit_subject.key";

// Loaded by the postmaster at start; every backend inherits it through fork.
pii_audit::SubjectHasher subject_hasher;
bool subject_key_loaded = false;

planner_hook_type prev_planner = nullptr;

// PostgreSQL's tree walkers take an unprototyped function pointer.
template <typename Fn>
bool (*as_walker(Fn* fn))() {
    return reinterpret_cast<bool (*)()>(reinterpret_cast<void (*)()>(fn));
}

// ---------------------------------------------------------------- the server's secret

bool read_key(int fd, char* key) {
    ssize_t n = read(fd, key, pii_audit::kSubjectKeyBytes + 1);
    return n == static_cast<ssize_t>(pii_audit::kSubjectKeyBytes);
}

// ---------------------------------------------------------------- planning

bool references_keyed_relation(Node* node, void* context) {
    if (node == nullptr) return false;
    if (IsA(node, RangeTblEntry)) {
        auto* rte = reinterpret_cast<RangeTblEntry*>(node);
        return rte->rtekind == RTE_RELATION && rte->relid >= FirstNormalObjectId &&
               pii_audit_label_cache_lookup(rte->relid)->has_subject_key;
    }
    if (IsA(node, Query))
        return query_tree_walker(reinterpret_cast<Query*>(node),
                                 as_walker(references_keyed_relation), context,
                                 QTW_EXAMINE_RTES_BEFORE);
    return expression_tree_walker(node, as_walker(references_keyed_relation),
                                  context);
}

PlannedStmt* subject_planner(Query* parse, const char* query_string, int cursor_options,
                             ParamListInfo bound_params) {
    bool keyed = pii_audit_enabled && !pii_audit_capture_suppressed &&
                 references_keyed_relation(reinterpret_cast<Node*>(parse), nullptr);
    int nest_level = 0;
    if (keyed) {
        cursor_options &= ~CURSOR_OPT_PARALLEL_OK;
        // Restored below, or by transaction abort if planning fails.
        nest_level = NewGUCNestLevel();
        (void)set_config_option("enable_indexonlyscan", "off", PGC_USERSET, PGC_S_SESSION,
                                GUC_ACTION_SAVE, true, 0, false);
    }
    PlannedStmt* result =
        prev_planner ? prev_planner(parse, query_string, cursor_options, bound_params)
                     : standard_planner(parse, query_string, cursor_options, bound_params);
    if (keyed) AtEOXact_GUC(true, nest_level);
    return result;
}

// ---------------------------------------------------------------- taps on scans

enum class KeyForm { kText, kInteger, kOutputFunction };

struct KeyColumn {
    AttrNumber attnum;
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
    MemoryContext row_context;  // detoasting and output functions, reset per row
};

}  // namespace

struct SubjectTracker {
    pii_audit::SubjectSet* set;  // placement-new'd in palloc'd memory, destroyed on release
    bool tapped;                 // at least one scan feeds this tracker
    bool failed;                 // memory ran out: the count is a lower bound
    bool released;
};

namespace {

Tap* all_taps = nullptr;

// The C++ set behind a wall: allocation failure marks the tracker, never unwinds into the server.
void add_subject(SubjectTracker* tracker, const char* data, size_t len) noexcept {
    if (tracker->failed || tracker->released) return;
    try {
        tracker->set->add(std::string_view(data, len));
    } catch (...) {
        tracker->failed = true;
    }
}

void add_subject(Tap* tap, const char* data, size_t len) noexcept {
    for (int i = 0; i < tap->ntrackers; ++i) add_subject(tap->trackers[i], data, len);
}

void tap_row(Tap* tap, TupleTableSlot* slot) {
    bool used_context = false;
    for (int i = 0; i < tap->nkeys; ++i) {
        KeyColumn& key = tap->keys[i];
        bool isnull;
        Datum value = slot_getattr(slot, key.attnum, &isnull);
        if (isnull) continue;
        switch (key.form) {
            case KeyForm::kInteger: {
                char digits[24];
                int64 v = key.typid == INT8OID   ? DatumGetInt64(value)
                          : key.typid == INT4OID ? DatumGetInt32(value)
                                                 : DatumGetInt16(value);
                int n = pg_lltoa(v, digits);
                add_subject(tap, digits, static_cast<size_t>(n));
                break;
            }
            case KeyForm::kText: {
                auto* ptr = reinterpret_cast<struct varlena*>(DatumGetPointer(value));
                if (VARATT_IS_EXTENDED(ptr)) {
                    MemoryContext old = MemoryContextSwitchTo(tap->row_context);
                    ptr = pg_detoast_datum_packed(ptr);
                    MemoryContextSwitchTo(old);
                    used_context = true;
                }
                add_subject(tap, VARDATA_ANY(ptr), VARSIZE_ANY_EXHDR(ptr));
                break;
            }
            case KeyForm::kOutputFunction: {
                MemoryContext old = MemoryContextSwitchTo(tap->row_context);
                char* text = OutputFunctionCall(&key.output, value);
                MemoryContextSwitchTo(old);
                used_context = true;
                add_subject(tap, text, strlen(text));
                break;
            }
        }
    }
    if (used_context) MemoryContextReset(tap->row_context);
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
    if (!TupIsNull(result) && tap->ntrackers > 0)
        tap_row(tap, reinterpret_cast<ScanState*>(node)->ss_ScanTupleSlot);
    return result;
}

bool is_heap_scan(PlanState* node) {
    switch (nodeTag(node)) {
        case T_SeqScanState:
        case T_SampleScanState:
        case T_IndexScanState:
        case T_BitmapHeapScanState:
        case T_TidScanState:
        case T_TidRangeScanState:
            return true;
        default:
            return false;
    }
}

struct TapRequest {
    Oid read_relid;  // the relation the event is about (a partition's parent, for instance)
    SubjectTracker* tracker;
};

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

void add_tap(PlanState* node, Relation rel, const LabelCacheEntry* labels,
             SubjectTracker* tracker) {
    if (Tap* existing = find_tap(node)) {
        add_tracker(existing, tracker);
        return;
    }
    TupleDesc desc = RelationGetDescr(rel);
    auto* tap = static_cast<Tap*>(palloc0(sizeof(Tap)));
    tap->keys = static_cast<KeyColumn*>(palloc0(sizeof(KeyColumn) * labels->ncolumns));
    for (int i = 0; i < labels->ncolumns; ++i) {
        const LabelledColumn& column = labels->columns[i];
        if (!column.subject_key || column.attnum <= 0 || column.attnum > desc->natts) continue;
        Form_pg_attribute attr = TupleDescAttr(desc, column.attnum - 1);
        if (attr->attisdropped) continue;
        KeyColumn& key = tap->keys[tap->nkeys++];
        key.attnum = column.attnum;
        key.typid = attr->atttypid;
        if (key.typid == INT2OID || key.typid == INT4OID || key.typid == INT8OID) {
            key.form = KeyForm::kInteger;
        } else if (key.typid == TEXTOID || key.typid == VARCHAROID) {
            key.form = KeyForm::kText;
        } else {
            key.form = KeyForm::kOutputFunction;
            Oid output;
            bool varlena;
            getTypeOutputInfo(key.typid, &output, &varlena);
            fmgr_info(output, &key.output);
        }
    }
    if (tap->nkeys == 0) return;
    tap->node = node;
    tap->max_trackers = 2;
    tap->trackers = static_cast<SubjectTracker**>(palloc(sizeof(SubjectTracker*) * 2));
    tap->row_context =
        AllocSetContextCreate(CurrentMemoryContext, "pii_audit subject keys", ALLOCSET_SMALL_SIZES);
    // ExecProcNodeFirst (or the instrumentation wrapper) calls ExecProcNodeReal: tap that.
    tap->real = node->ExecProcNodeReal;
    node->ExecProcNodeReal = tapped_exec_proc_node;
    if (node->ExecProcNode == tap->real) node->ExecProcNode = tapped_exec_proc_node;
    tap->next = all_taps;
    all_taps = tap;
    add_tracker(tap, tracker);
}

bool tap_walker(PlanState* node, void* context) {
    if (node == nullptr) return false;
    auto* request = static_cast<TapRequest*>(context);
    if (is_heap_scan(node)) {
        Relation rel = reinterpret_cast<ScanState*>(node)->ss_currentRelation;
        if (rel != nullptr) {
            Oid relid = RelationGetRelid(rel);
            const LabelCacheEntry* labels = pii_audit_label_cache_lookup(relid);
            if (labels->has_subject_key && scan_belongs_to(labels, relid, request->read_relid))
                add_tap(node, rel, labels, request->tracker);
        }
    }
    return planstate_tree_walker(node, as_walker(tap_walker), context);
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

void pii_audit_install_subject_hooks(void) {
    prev_planner = planner_hook;
    planner_hook = subject_planner;
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
    TapRequest request{read_relid, tracker};
    (void)tap_walker(root, &request);
    return tracker->tapped;
}

void pii_audit_subjects_fill(SubjectTracker* tracker, pii_audit::EventView& event) {
    if (tracker == nullptr || tracker->released) return;
    const pii_audit::SubjectSet& set = *tracker->set;
    event.header.flags |= pii_audit::kFlagSubjectsTracked;
    event.header.subject_count = static_cast<int64>(set.count());
    if (set.truncated() || tracker->failed || !subject_key_loaded)
        event.header.flags |= pii_audit::kFlagSubjectsTruncated;
    if (set.estimated() || tracker->failed)
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
