// Declarations shared by the extension's PostgreSQL-facing translation units. Include it first and
// nothing else: it pulls in the PostgreSQL-free headers first, then postgres.h, so the guard in
// pg_free.h holds. Everything declared here runs inside a server process.
#pragma once

#include "pii_audit/event_record.h"
#include "pii_audit/label_grammar.h"
#include "pii_audit/query_normalizer.h"
#include "pii_audit/retention.h"
#include "pii_audit/ring_buffer.h"

extern "C" {
#include "postgres.h"

#include "access/attnum.h"
#include "datatype/timestamp.h"
#include "nodes/pg_list.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/palloc.h"
}

// PostgreSQL's tree walkers (expression_tree_walker, planstate_tree_walker) take an
// unprototyped function pointer.
template <typename Fn>
bool (*pii_audit_as_walker(Fn* fn))() {
    return reinterpret_cast<bool (*)()>(reinterpret_cast<void (*)()>(fn));
}

// ---- settings (module.cpp) ----
enum QueueFullAction { QUEUE_FULL_WAIT, QUEUE_FULL_DROP };

extern bool pii_audit_enabled;
extern char* pii_audit_database;
extern int pii_audit_queue_size_kb;
extern int pii_audit_on_queue_full;
extern int pii_audit_queue_wait_timeout_ms;
extern char* pii_audit_end_user;
extern int pii_audit_max_query_length;
extern int pii_audit_flush_interval_ms;
extern bool pii_audit_fail_on_error;
extern bool pii_audit_loaded_at_startup;
// Testing only (superuser): the next event queued kills its backend half-written.
extern bool pii_audit_test_crash_while_queueing;
// Insider scoring in the worker (storage/scoring.cpp).
extern bool pii_audit_scoring;
extern int pii_audit_alert_threshold;
extern int pii_audit_team_wait_min;
extern int pii_audit_baseline_save_interval_s;
extern char* pii_audit_highly_sensitive_categories;
extern char* pii_audit_service_peer_groups;
extern char* pii_audit_business_relations_query;
extern int pii_audit_business_relations_interval_s;
// Which server the events of this one are stored as (pii_audit.server_name, else cluster_name,
// else the host name); a static buffer, the same until the setting changes.
extern char* pii_audit_server_name_setting;
const char* pii_audit_local_server_name(void);
// Standbys: where the worker forwards events (empty: primary_conninfo, see worker.cpp).
extern char* pii_audit_forward_conninfo;

// ---- capture (capture/*.cpp) ----
void pii_audit_install_capture_hooks(void);
// Connection attempts (successful or failed) become login events (capture/login_capture.cpp).
void pii_audit_install_login_hook(void);
void pii_audit_register_label_provider(void);
// Set in the background worker: its own statements are never audited.
extern bool pii_audit_capture_suppressed;

struct LabelledColumn {
    AttrNumber attnum;
    char* name;
    char* categories;  // NUL-terminated items back to back (the event-record list format)
    int categories_len;
    bool subject_key;
};

// The column and category lists (the event-record list format: items back to back, each
// followed by NUL, each once) of a read of some labelled columns of a relation.
struct LabelLists {
    uint64 mask;  // bit i: the entry's columns[i] was read; 0: an unused memo place
    char* columns;
    int columns_len;
    char* categories;
    int categories_len;
};
constexpr int kLabelListMemos = 4;

struct LabelCacheEntry {
    Oid relid;           // hash key
    bool has_categories; // some column carries at least one category: reads are audited
    bool has_subject_key; // some column is labelled subject_key: reads record whose rows
    bool row_security;    // row-level security is enabled: its policies' conditions read too
    int ncolumns;
    LabelledColumn* columns;  // sorted by attnum
    char* qualified_name;
    int nfamily;         // ancestors and descendants whose labels were merged in
    Oid* family;
    MemoryContext context;
    // The lists of the sets of columns read last (a backend's statements read the same few
    // again and again), in context. Only pii_audit_label_lists changes them.
    mutable LabelLists memo[kLabelListMemos];
    mutable int memo_next;
};

// Labels in effect for a relation: its own, its ancestors' (a label on a partitioned table
// covers every partition) and its descendants', matched by column name.
const LabelCacheEntry* pii_audit_label_cache_lookup(Oid relid);
const LabelCacheEntry* pii_audit_label_cache_find_cached(const char* schema, const char* name);
// The lists of reading columns[i] for every bit i of mask (not 0; entry->ncolumns <= 64). Valid
// until the next call for this entry or the entry's invalidation: copy them.
const LabelLists* pii_audit_label_lists(const LabelCacheEntry* entry, uint64 mask);
// Appends a column's name and its categories to a read's lists, each item once.
void pii_audit_append_column(struct StringInfoData* columns, struct StringInfoData* categories,
                             const LabelledColumn& column);
void pii_audit_label_cache_init(void);

// ---- groups by id (presentation/group_fetch.cpp) ----
// The groups with lo < first_event_id <= hi whose ids reach past ends_after (first_event_id +
// event_count > ends_after), as an array of pii_audit.trail_groups rows in no particular order:
// each month's index on first_event_id probed directly, so that no query plans every month.
Datum pii_audit_groups_in_ids(int64 lo, int64 hi, int64 ends_after);
Oid pii_audit_groups_array_type(void);
// The smallest first_event_id after `after`, or -1 when there is none.
int64 pii_audit_next_group_id(int64 after);

// ---- subjects (capture/subject_capture.cpp) ----
extern int pii_audit_max_subjects_per_event;
extern int pii_audit_subject_index_slice;
// pii_audit.retention: empty keeps everything (see pii_audit/retention.h).
extern char* pii_audit_retention;
struct PlanState;
struct SubjectTracker;
// At postmaster start: read (or create) the secret that keys subject hashes.
void pii_audit_load_subject_key(void);
bool pii_audit_subject_key_loaded(void);
// HMAC-SHA-256 of an identifier under the server's key, first 8 bytes.
int64 pii_audit_subject_hash(const char* data, size_t len);
// Names the subject key without revealing it (a keyed hash of a fixed text); 0 without a key.
// A standby forwards it with every batch, and the primary refuses hashes made with another key.
int64 pii_audit_subject_key_fingerprint(void);
void pii_audit_install_subject_hooks(void);
// Names subjects: runs "SELECT key_column FROM relid" (an audited read, with the caller's
// privileges and row security, partitions and children included) and calls found() once per
// hash of wanted (made distinct in place) with the first key value whose identifier,
// made as the capture makes it, has that hash. Stops once every hash is named; returns how many
// were.
typedef void (*pii_audit_identified)(int64 hash, const char* identifier, size_t len, void* arg);
int pii_audit_identify_subjects(Oid relid, const char* key_column, int64* wanted, int nwanted,
                                pii_audit_identified found, void* arg);
// A subject set for one relation of one statement, in the current memory context. Taps the
// scans under root that read read_relid (or its partitions); false if none has a subject key.
SubjectTracker* pii_audit_subjects_begin(void);
bool pii_audit_subjects_tap(PlanState* root, Oid read_relid, SubjectTracker* tracker);
void pii_audit_subjects_fill(SubjectTracker* tracker, pii_audit::EventView& event);
// Frees the set and unhooks its taps; call before the plan's memory goes (idempotent).
void pii_audit_subjects_release(SubjectTracker* tracker);

// ---- transport (transport/shmem_queue.cpp) ----
void pii_audit_request_shmem(void);
void pii_audit_startup_shmem(void);

struct PiiAuditStatus {
    uint64 capacity;
    uint64 depth;
    uint64 enqueued;
    uint64 persisted;
    uint64 dropped;
    uint64 capture_errors;
    int worker_pid;
    TimestampTz last_flush;
    TimestampTz stalled_since;  // 0, or when a producer's wait timed out with no progress
    bool worker_ready;
    char worker_problem[256];   // why the worker cannot store events now; empty when it can
};
void pii_audit_queue_set_problem(const char* problem);
// Events the worker took from the queue but could not store nor record as a gap: counted with
// the drops, so the next gap row reports them.
void pii_audit_queue_count_lost(uint64 events);
void pii_audit_read_status(PiiAuditStatus* out);

// What the worker's insider scoring is doing, published after each maintenance step and batch.
struct ScorerStatus {
    char state[48];        // off, starting, running, stopped after a failure, not installed
    int64 actors;
    int64 peer_groups;
    int64 relations;
    int64 state_bytes;     // size of the last saved baselines
    int64 scored_upto;     // last event id learned from
    int64 alerts_raised;   // since the worker started
    TimestampTz last_save;
    TimestampTz relations_loaded_at;
    char last_error[256];  // the last scoring or relations-query failure; empty when none
    int64 signals_held;    // held now while colleagues may make the same shift
    int64 held_raised;     // since the baselines were loaded: held, then raised
    int64 held_dropped;    // held, then dropped as the team's
    int64 team_excused;    // actor-day quantities and rare categories excused as the team's
};
void pii_audit_publish_scorer_status(const ScorerStatus& status);
void pii_audit_read_scorer_status(ScorerStatus* out);

// Encodes and queues one event. allow_wait: may sleep for space (never during abort cleanup or
// transaction callbacks). Returns false when the event was dropped (and counted).
bool pii_audit_enqueue(pii_audit::EventView& event, bool allow_wait);

// A bytea holding these bytes, in the current memory context.
inline bytea* pii_audit_bytea(std::string_view bytes) {
    auto* out = static_cast<bytea*>(palloc(VARHDRSZ + bytes.size()));
    SET_VARSIZE(out, VARHDRSZ + bytes.size());
    memcpy(VARDATA(out), bytes.data(), bytes.size());
    return out;
}

// Raises the ERROR for a trail group whose payload cannot be read (why), with the way out.
[[noreturn]] void pii_audit_group_damaged(int64 first_event_id, const char* why);
// A decoded group event's subject hashes (GroupEvent::subjects) as a bigint[]. scratch holds
// *capacity Datums the caller keeps from one event to the next (grown here; start with nullptr
// and 0), so a group's events share one buffer.
Datum pii_audit_subjects_array(std::string_view subjects, Datum** scratch, int* capacity);

// Before planning: filters on the trail views' event_time and event_id imply filters on the
// groups' own columns, which use their indexes (presentation/trail_planner.cpp). Returns whether
// the query reads the trail's groups (it is then planned without parallel workers or JIT).
struct Query;
bool pii_audit_trail_quals(Query* parse);
void pii_audit_count_capture_error(void);

// Consumer side, used only by the background worker.
struct QueueBatch {
    char* data;
    size_t size;
    uint64 end_position;
};
void pii_audit_queue_attach_worker(Latch* latch, int pid);
void pii_audit_queue_detach_worker(void);
void pii_audit_queue_set_ready(bool ready);
uint64 pii_audit_queue_generation(void);
// Why events were lost at the last start or crash restart ("" if none), and its serial: the
// worker puts it in its gap row and clears it (if still the same) once that row is committed.
// *unknown_loss: how many is unknown (a gap row with no count), else they are counted as drops.
// *copy_only (may be nullptr): that loss is only a copied queue file's refused at start (the
// original server stores its events).
uint64 pii_audit_queue_note(char* out, size_t size, bool* unknown_loss, bool* copy_only);
void pii_audit_queue_clear_note(uint64 serial);
bool pii_audit_queue_peek(char* buffer, size_t capacity, QueueBatch* batch);
// The records after position `from` (a batch's end_position peeked before, not released yet):
// a consumer that releases later than it reads (a standby's forwarder) reads on past its
// unreleased batches.
bool pii_audit_queue_peek_after(uint64 from, char* buffer, size_t capacity, QueueBatch* batch);
void pii_audit_queue_release(const QueueBatch& batch, uint64 persisted);
uint64 pii_audit_queue_dropped(void);
bool pii_audit_queue_empty(void);
// Peer groups or departed accounts changed (a committed transaction): the worker reloads them.
void pii_audit_scorer_inputs_bump(void);
uint64 pii_audit_scorer_inputs_generation(void);
// A standby's batch was kept in pii_audit.forwarded_batches (a committed transaction): the
// worker stores it.
void pii_audit_forwarded_bump(void);
uint64 pii_audit_forwarded_generation(void);

// ---- insider scoring in the worker (storage/scoring.cpp) ----
// Inside a transaction: restore saved baselines and learn again what the trail stored after
// them, up to last_event_id.
void pii_audit_scoring_start(int64 last_event_id);
// Inside the batch transaction: feed one stored event; then store the alerts it raised (with
// NOTIFY) before commit and log them after commit. (A batch that fails ends the worker, and
// with it the scorer's memory: the next worker restores baselines and learns again.)
// same_group: the event has the session and statement fields of the previous call's event (the
// next event of the same stored group, in the same batch buffer): what follows from those fields
// alone is reused instead of worked out again.
void pii_audit_scoring_observe(int64 event_id, const pii_audit::EventView& event, bool same_group);
// False when scoring does not look at events (off, or failed): then events up to last_event_id
// count as seen, and the caller need not decode them.
bool pii_audit_scoring_observing(int64 last_event_id);
void pii_audit_scoring_store_alerts(void);
void pii_audit_scoring_after_commit(void);
// Outside a transaction, between batches: reloads, periodic (or forced) save of baselines.
void pii_audit_scoring_maintain(int64 last_event_id, bool force_save);
void pii_audit_scoring_config_reloaded(void);
void pii_audit_scoring_failed(const char* what, const char* message);
void pii_audit_scoring_batch_failed(void);

// ---- forwarding from a hot standby (storage/forwarder.cpp) ----
// On a standby, in the worker's loop: hands the queue's next batch to the primary. Returns how
// long to wait before the next step (ms). buffer: capacity bytes for the queue's records.
long pii_audit_forward_step(char* buffer, size_t capacity);
// The standby was promoted: closes the connection to the old primary.
void pii_audit_forward_stop(void);

// ---- storage (storage/worker.cpp) ----
// Start (with a snapshot) and commit one of the worker's transactions.
// The first column of the first row of a query run through SPI (connected), or fallback when
// it fails, returns no row or NULL (the worker's and the maintenance process's lookups).
int64 pii_audit_spi_int64(const char* sql, int64 fallback);
void pii_audit_worker_begin_transaction(void);
void pii_audit_worker_commit_transaction(void);
// Text of an event in the audit database's encoding, never failing: characters it cannot
// represent (and invalid bytes) become '?'. May return value's own bytes (not NUL-terminated).
const char* pii_audit_in_audit_encoding(std::string_view value, int source_encoding, int* out_len);
void pii_audit_register_worker(void);
// The worker was told to stop (SIGTERM).
bool pii_audit_worker_stopping(void);
extern "C" PGDLLEXPORT void pii_audit_worker_main(Datum arg);
// The maintenance process (storage/maintenance.cpp): retention and subject index merges, started
// by the worker. Launch returns false when one is still running or no slot was free.
bool pii_audit_launch_maintenance(bool warn_retention);
bool pii_audit_maintenance_running(void);
extern "C" PGDLLEXPORT void pii_audit_maintenance_main(Datum arg);

// ---- identity of this backend, cached (capture/executor_hooks.cpp) ----
void pii_audit_fill_identity(pii_audit::EventView& event);

// Who is reading, captured while a transaction is open (names need catalog lookups) so the event
// can be sent later, even from abort cleanup.
struct ReaderIdentity {
    char session_user[NAMEDATALEN];
    char current_user[NAMEDATALEN];
    char end_user[128];
    char application_name[NAMEDATALEN];
};
void pii_audit_capture_identity(ReaderIdentity* identity);
// A client's numeric address as inet accepts it; "" for a Unix socket or when it cannot be said.
void pii_audit_format_client_addr(const struct sockaddr_storage* addr, int salen, char* out,
                                  size_t size);
void pii_audit_apply_identity(const ReaderIdentity& identity, pii_audit::EventView& event);

// Normalizes [text, text+len) into palloc'd memory; *truncated tells whether it was cut.
char* pii_audit_normalize(const char* text, int len, int* out_len, bool* truncated);
