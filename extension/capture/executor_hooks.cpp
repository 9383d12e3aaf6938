// Capture: which labelled columns each statement reads, how many rows it produced, and whether it
// completed. Per-statement state lives in the executor's memory context with a reset callback, so
// a statement that fails (or whose transaction aborts) still reports its read, as "failed".
#include "pii_audit_internal.h"

#include "boundary.h"

extern "C" {
#include "access/parallel.h"
#include "access/table.h"
#include "access/xact.h"
#include "commands/dbcommands.h"
#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "nodes/makefuncs.h"
#include "commands/copy.h"
#include "executor/executor.h"
#include "jit/jit.h"
#include "optimizer/cost.h"
#include "common/ip.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "parser/parsetree.h"
#include "optimizer/optimizer.h"
#include "optimizer/planner.h"
#include "nodes/nodeFuncs.h"
#include "tcop/cmdtag.h"
#include "tcop/pquery.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
}

#include <cstring>
#include <new>

bool pii_audit_capture_suppressed = false;

namespace boundary = pii_audit::boundary;

namespace {

ExecutorStart_hook_type prev_executor_start = nullptr;
ExecutorRun_hook_type prev_executor_run = nullptr;
ExecutorFinish_hook_type prev_executor_finish = nullptr;
ExecutorEnd_hook_type prev_executor_end = nullptr;
ProcessUtility_hook_type prev_process_utility = nullptr;

// Depth of statements running inside other statements (functions, DO blocks, triggers).
int nesting_level = 0;

// A utility statement that runs exactly one query through the executor (COPY, CREATE TABLE AS,
// EXPLAIN ANALYZE, DECLARE CURSOR, REFRESH MATERIALIZED VIEW): the query is recorded under the
// utility's command and text.
//
// The wrapped query is the first executor started inside the utility, at the utility's inner
// nesting level, outside planning: a STABLE function the planner runs while estimating (or any
// query a planner hook runs) is a statement of its own, not the utility's.
struct UtilityWrapper {
    bool active;
    int level;          // nesting level inside the utility
    int utility_level;  // the utility's own level, recorded for its event
    int planner_depth;  // planning under way when the utility started
    bool internal_after;  // later queries at this level are the utility's own work (REFRESH)
    const char* command;
    const char* text;
    int text_len;
};
UtilityWrapper wrapper{};
// After REFRESH MATERIALIZED VIEW's query ran, the queries it runs at the same level to merge
// the result (CONCURRENTLY) are internal: not the user's reads. -1: none.
int internal_level = -1;
// Planner invocations under way in this backend (queries the planner itself runs are nested).
int planner_depth = 0;
planner_hook_type prev_capture_planner = nullptr;
// COPY table TO is recorded by the utility hook; its row-level-security query must not be twice.
bool copy_table_recorded = false;

struct RelationRead {
    Oid relid;
    const char* relation;
    StringInfoData columns;
    StringInfoData categories;
    SubjectTracker* subjects;  // the relation has a subject key: whose rows were read
};

enum AuditState { AUDIT_PENDING, AUDIT_EMITTING, AUDIT_DONE };

struct StatementAudit {
    StatementAudit* prev;  // statements whose executor is open in this backend, newest first
    StatementAudit* next;
    EState* estate;
    MemoryContextCallback callback;
    AuditState state;
    bool in_run;  // an ExecutorRun is under way: its rows are in es_processed, not yet in rows
    int64 rows;
    TimestampTz start;
    int nesting;
    const char* command;
    char* query_text;
    int query_len;
    bool query_truncated;
    int64 query_id;
    TimestampTz statement_start;  // of the top-level statement it belongs to
    ReaderIdentity identity;
    List* reads;  // of RelationRead*
};

StatementAudit* active_audits = nullptr;

void link_audit(StatementAudit* audit) {
    audit->prev = nullptr;
    audit->next = active_audits;
    if (active_audits) active_audits->prev = audit;
    active_audits = audit;
}

void unlink_audit(StatementAudit* audit) {
    if (audit->prev) audit->prev->next = audit->next;
    if (audit->next) audit->next->prev = audit->prev;
    if (active_audits == audit) active_audits = audit->next;
}

// ---------------------------------------------------------------- identity of this backend

char database_name[NAMEDATALEN];
char client_addr[64];
bool backend_identity_known = false;

struct CachedRole {
    Oid oid;
    char name[NAMEDATALEN];
};
CachedRole cached_roles[2];

void on_role_change(Datum, int, uint32) {
    for (auto& role : cached_roles) role.oid = InvalidOid;
}

const CachedRole* find_cached_role(Oid oid) {
    for (const auto& role : cached_roles)
        if (role.oid == oid && oid != InvalidOid) return &role;
    return nullptr;
}

bool cached_role(Oid oid, char* out) {
    const CachedRole* role = find_cached_role(oid);
    if (role != nullptr) strlcpy(out, role->name, NAMEDATALEN);
    return role != nullptr;
}

void role_name(Oid oid, char* out) {
    if (cached_role(oid, out)) return;
    char* name = GetUserNameFromId(oid, true);
    strlcpy(out, name ? name : "?", NAMEDATALEN);
    // Keep the two most recent roles: session user and (usually one) current user.
    cached_roles[1] = cached_roles[0];
    cached_roles[0].oid = oid;
    strlcpy(cached_roles[0].name, out, NAMEDATALEN);
}

// Makes sure the role's name is cached (no copy when it is).
void cache_role(Oid oid) {
    if (find_cached_role(oid) != nullptr) return;
    char scratch[NAMEDATALEN];
    role_name(oid, scratch);
}

// Error reporting may not touch the catalog: only names already cached.
void cached_role_name(Oid oid, char* out) {
    if (!cached_role(oid, out)) snprintf(out, NAMEDATALEN, "role %u", oid);
}

void learn_backend_identity() {
    if (backend_identity_known) return;
    char* db = get_database_name(MyDatabaseId);
    strlcpy(database_name, db ? db : "", sizeof database_name);
    client_addr[0] = '\0';
    // The backend status entry holds the client's address (libpq-be.h would drag in GSSAPI).
    if (MyBEEntry)
        pii_audit_format_client_addr(&MyBEEntry->st_clientaddr.addr,
                                     static_cast<int>(MyBEEntry->st_clientaddr.salen), client_addr,
                                     sizeof client_addr);
    backend_identity_known = true;
}

// ---------------------------------------------------------------- normalization

// The C++ normalizer runs behind this wall: no PostgreSQL call inside, no C++ object outside.
bool normalize_noexcept(const char* text, size_t len, size_t max_bytes, char* out,
                        size_t* out_len, bool* truncated) noexcept {
    return pii_audit::boundary::cpp_call(
        nullptr,
        [&] {
            pii_audit::NormalizedQuery normalized = pii_audit::normalize_query(
                std::string_view(text, len), max_bytes, standard_conforming_strings);
            size_t n = normalized.text.size() < max_bytes ? normalized.text.size() : max_bytes;
            memcpy(out, normalized.text.data(), n);
            out[n] = '\0';
            *out_len = n;
            *truncated = normalized.truncated;
        },
        nullptr, 0);
}

const char* command_name(CmdType operation) {
    switch (operation) {
        case CMD_SELECT: return "SELECT";
        case CMD_UPDATE: return "UPDATE";
        case CMD_INSERT: return "INSERT";
        case CMD_DELETE: return "DELETE";
        case CMD_MERGE: return "MERGE";
        default: return "UNKNOWN";
    }
}

// ---------------------------------------------------------------- emitting

void emit(StatementAudit* audit, pii_audit::EventStatus status, bool allow_wait, bool* lost) {
    ListCell* cell;
    foreach (cell, audit->reads) {
        auto* read = static_cast<RelationRead*>(lfirst(cell));
        pii_audit::EventView event;
        event.header.kind = static_cast<uint8>(pii_audit::EventKind::kRead);
        event.header.status = static_cast<uint8>(status);
        event.header.nesting_level = static_cast<uint16>(audit->nesting);
        event.header.event_time = audit->start;
        event.header.row_count = audit->rows;
        event.header.query_id = audit->query_id;
        event.header.relation_oid = read->relid;
        if (audit->query_truncated) event.header.flags |= pii_audit::kFlagQueryTruncated;
        pii_audit_fill_identity(event);
        pii_audit_apply_identity(audit->identity, event);
        event.field[pii_audit::kCommand] = audit->command;
        event.field[pii_audit::kRelation] = read->relation;
        event.field[pii_audit::kColumns] =
            std::string_view(read->columns.data, read->columns.len);
        event.field[pii_audit::kCategories] =
            std::string_view(read->categories.data, read->categories.len);
        event.field[pii_audit::kQueryText] = std::string_view(audit->query_text, audit->query_len);
        pii_audit_subjects_fill(read->subjects, event);
        if (!pii_audit_enqueue(event, allow_wait) && lost) *lost = true;
    }
}

void release_subjects(StatementAudit* audit) {
    ListCell* cell;
    foreach (cell, audit->reads)
        pii_audit_subjects_release(static_cast<RelationRead*>(lfirst(cell))->subjects);
}

void on_statement_context_reset(void* arg) {
    auto* audit = static_cast<StatementAudit*>(arg);
    unlink_audit(audit);
    if (audit->state != AUDIT_DONE) {
        // The estate lives in this context and is freed only after the callbacks ran.
        if (audit->in_run) audit->rows += audit->estate->es_processed;
        // The statement ended in an error (or its emit was interrupted): it read all the same.
        auto status = audit->state == AUDIT_EMITTING ? pii_audit::EventStatus::kCompleted
                                                     : pii_audit::EventStatus::kFailed;
        audit->state = AUDIT_DONE;
        emit(audit, status, false, nullptr);
    }
    release_subjects(audit);
}

StatementAudit* find_audit(EState* estate) {
    for (StatementAudit* audit = active_audits; audit; audit = audit->next)
        if (audit->estate == estate) return audit;
    return nullptr;
}

// ---------------------------------------------------------------- which labelled columns

// A StringInfo holding a copy of a list (len bytes), with room for a short list (it grows like
// any other): initStringInfo's 1 kB each pushed a lookup's query context into a second block (a
// malloc and a free per statement, callgrind: bench/backend_cost.sh).
void init_small_string(StringInfo s, const char* data, int len) {
    int room = 64;
    while (room <= len) room *= 2;
    s->data = static_cast<char*>(palloc(room));
    s->maxlen = room;
    memcpy(s->data, data, len);
    s->data[len] = '\0';
    s->len = len;
    s->cursor = 0;
}

// Adds the labelled columns of `relid` that `selected` (attnums offset by
// FirstLowInvalidHeapAttributeNumber; 0 is the whole row) mentions or, if selected is null,
// every labelled column. Returns the read list.
List* note_read(List* reads, Oid relid, const Bitmapset* selected, bool all_columns) {
    const LabelCacheEntry* labels = pii_audit_label_cache_lookup(relid);
    if (!labels->has_categories) return reads;
    bool whole_row =
        all_columns || bms_is_member(0 - FirstLowInvalidHeapAttributeNumber, selected);
    auto column_read = [&](const LabelledColumn& column) {
        return whole_row ||
               bms_is_member(column.attnum - FirstLowInvalidHeapAttributeNumber, selected);
    };
    RelationRead* read = nullptr;
    ListCell* cell;
    foreach (cell, reads) {
        auto* existing = static_cast<RelationRead*>(lfirst(cell));
        if (existing->relid == relid) read = existing;
    }
    // Adds the columns read, and their categories, to the read's lists (each item once).
    auto add_columns = [&] {
        for (int i = 0; i < labels->ncolumns; ++i)
            if (column_read(labels->columns[i]))
                pii_audit_append_column(&read->columns, &read->categories, labels->columns[i]);
    };
    if (read != nullptr) {  // read again in the same statement (a self-join, a subquery)
        add_columns();
        return reads;
    }
    // The first read of the relation: its lists come from the label cache, which keeps those of
    // the sets of columns read last (building them per statement was a quarter of what auditing
    // a point lookup cost, callgrind: bench/backend_cost.sh). Past 64 labelled columns they are
    // built here.
    uint64 mask = 0;
    bool any = false;
    for (int i = 0; i < labels->ncolumns; ++i) {
        if (!column_read(labels->columns[i])) continue;
        any = true;
        if (i < 64) mask |= uint64{1} << i;
    }
    if (!any) return reads;
    read = static_cast<RelationRead*>(palloc0(sizeof(RelationRead)));
    read->relid = relid;
    read->relation = pstrdup(labels->qualified_name);
    if (labels->ncolumns <= 64) {
        const LabelLists* lists = pii_audit_label_lists(labels, mask);
        init_small_string(&read->columns, lists->columns, lists->columns_len);
        init_small_string(&read->categories, lists->categories, lists->categories_len);
    } else {
        init_small_string(&read->columns, "", 0);
        init_small_string(&read->categories, "", 0);
        add_columns();
    }
    return lappend(reads, read);
}

// A read counts when it touches at least one column with a category (subject_key-only columns are
// listed but do not by themselves make an event).
List* drop_reads_without_category(List* reads) {
    List* kept = NIL;
    ListCell* cell;
    foreach (cell, reads) {
        auto* read = static_cast<RelationRead*>(lfirst(cell));
        if (read->categories.len > 0) kept = lappend(kept, read);
    }
    return kept;
}

// The one statement a (possibly multi-statement) source string holds, by its parse location:
// stmt_location -1 means unknown, stmt_len 0 means "to the end".
void statement_slice(const char* source, int location, int stmt_len, const char** text,
                     int* len) {
    *text = source ? source : "";
    // A string of many statements is sent as one source text: measure only up to the end of
    // this statement, not the whole string once per statement.
    if (location >= 0 && stmt_len > 0) {
        size_t upto = strnlen(*text, static_cast<size_t>(location) + stmt_len);
        if (upto >= static_cast<size_t>(location)) {
            *text += location;
            *len = static_cast<int>(upto - location);
            return;
        }
    }
    *len = strlen(*text);
    if (location >= 0 && location <= *len) {
        *len = stmt_len > 0 && stmt_len <= *len - location ? stmt_len : *len - location;
        *text += location;
    }
}

bool capture_enabled() {
    return pii_audit_enabled && !pii_audit_capture_suppressed && !IsParallelWorker() &&
           IsTransactionState();
}

// Queries PostgreSQL runs on its own behalf inside the user's statement: foreign-key checks
// and actions (run as the table owner, without forced row security) and the merge step of
// REFRESH MATERIALIZED VIEW CONCURRENTLY. The user's statement is recorded, not these.
// A foreign-key query runs without forced row security (as the table owner); so does
// everything nested in it, such as the triggers a cascaded DELETE fires, which are not
// internal: only queries at the level where that state began are. -1: not inside one.
int ri_level = -1;

void on_ri_query_reset(void*) { ri_level = -1; }

bool internal_query(EState* estate) {
    if (internal_level == nesting_level && planner_depth == wrapper.planner_depth) return true;
    if (!InNoForceRLSOperation()) return false;
    if (ri_level >= 0 && nesting_level > ri_level) return false;
    if (ri_level < 0) {
        ri_level = nesting_level;
        // Cleared when this query's executor memory goes (end or abort).
        auto* callback = static_cast<MemoryContextCallback*>(
            MemoryContextAllocZero(estate->es_query_cxt, sizeof(MemoryContextCallback)));
        callback->func = on_ri_query_reset;
        MemoryContextRegisterResetCallback(estate->es_query_cxt, callback);
    }
    return true;
}

PlannedStmt* capture_planner(Query* parse, const char* query_string, int cursor_options,
                             ParamListInfo bound_params) {
    PlannedStmt* result = nullptr;
    // A query over the trail is planned without parallel workers and without JIT. Its rows are
    // wide and its filters find what they need through indexes, so a Gather spends more shipping
    // rows than the workers save (a 100 ms window of access_log on a busy trail, 11,900 rows:
    // 310 ms with two workers and JIT, 46 ms without either), and an officer's query should not
    // take cores from the workload it audits.
    const bool trail = pii_audit_trail_quals(parse);
    const bool saved_jit = jit_enabled;
    const int saved_workers = max_parallel_workers_per_gather;
    if (trail) {
        jit_enabled = false;
        max_parallel_workers_per_gather = 0;
    }
    ++planner_depth;
    ++nesting_level;
    boundary::pg_finally(
        [&] {
            result = prev_capture_planner
                         ? prev_capture_planner(parse, query_string, cursor_options, bound_params)
                         : standard_planner(parse, query_string, cursor_options, bound_params);
        },
        [trail, saved_jit, saved_workers] {
            --planner_depth;
            --nesting_level;
            if (trail) {
                jit_enabled = saved_jit;
                max_parallel_workers_per_gather = saved_workers;
            }
        });
    return result;
}

StatementAudit* new_audit(List* reads, const char* command, const char* text, int text_len,
                          int64 query_id) {
    auto* audit = static_cast<StatementAudit*>(palloc0(sizeof(StatementAudit)));
    audit->reads = reads;
    audit->start = GetCurrentTimestamp();
    audit->statement_start = GetCurrentStatementStartTimestamp();
    audit->nesting = nesting_level;
    audit->command = command;
    audit->query_id = query_id;
    pii_audit_capture_identity(&audit->identity);
    audit->query_text = pii_audit_normalize(text, text_len, &audit->query_len,
                                            &audit->query_truncated);
    return audit;
}

void report_capture_failure(const char* what) {
    pii_audit_count_capture_error();
    ereport(pii_audit_fail_on_error ? ERROR : WARNING,
            (errcode(ERRCODE_INTERNAL_ERROR),
             errmsg("pii_audit could not record a read of labelled columns: %s", what),
             errhint(pii_audit_fail_on_error
                         ? "The statement was refused because pii_audit.fail_on_error is on."
                         : "The statement proceeded; see capture_errors in pii_audit.status.")));
}

// Row-level security adds its policies' conditions to the scans of a table after permissions
// were settled, so their columns are not in selectedCols; yet count(*) through a policy on
// phone = ... tells how many rows each phone has. The columns that scan conditions of a
// labelled relation refer to are reads of it (of the relation the statement named, for a
// partition or child).
struct QualReads {
    PlannedStmt* stmt;
    List* reads;
};

bool qual_reads_walker(PlanState* node, void* context) {
    if (node == nullptr) return false;
    auto* q = static_cast<QualReads*>(context);
    Plan* plan = node->plan;
    List* quals = NIL;
    switch (nodeTag(plan)) {
        case T_SeqScan:
        case T_SampleScan:
        case T_ForeignScan:
        case T_CustomScan:
            quals = plan->qual;
            break;
        case T_IndexScan:
            quals = list_concat_copy(plan->qual, reinterpret_cast<IndexScan*>(plan)->indexqualorig);
            break;
        case T_BitmapHeapScan:
            quals = list_concat_copy(plan->qual,
                                     reinterpret_cast<BitmapHeapScan*>(plan)->bitmapqualorig);
            break;
        case T_TidScan:
            quals = list_concat_copy(plan->qual, reinterpret_cast<TidScan*>(plan)->tidquals);
            break;
        case T_TidRangeScan:
            quals = list_concat_copy(plan->qual,
                                     reinterpret_cast<TidRangeScan*>(plan)->tidrangequals);
            break;
        default:
            break;
    }
    Index scanrelid = quals != NIL ? reinterpret_cast<Scan*>(plan)->scanrelid : 0;
    if (scanrelid > 0) {
        RangeTblEntry* rte = rt_fetch(scanrelid, q->stmt->rtable);
        const LabelCacheEntry* labels = rte->rtekind == RTE_RELATION && rte->relid >= FirstNormalObjectId
                                            ? pii_audit_label_cache_lookup(rte->relid)
                                            : nullptr;
        if (labels != nullptr && labels->has_categories) {
            Bitmapset* attrs = nullptr;
            pull_varattnos(reinterpret_cast<Node*>(quals), scanrelid, &attrs);
            // Recorded under the relation the statement named when this one is its partition
            // or child (the labels are merged across the family, by column name).
            Oid read_relid = rte->relid;
            ListCell* cell;
            foreach (cell, q->reads) {
                Oid relid = static_cast<RelationRead*>(lfirst(cell))->relid;
                for (int i = 0; i < labels->nfamily; ++i)
                    if (labels->family[i] == relid) read_relid = relid;
            }
            if (attrs != nullptr) q->reads = note_read(q->reads, read_relid, attrs, false);
        }
    }
    return planstate_tree_walker(node, pii_audit_as_walker(qual_reads_walker), context);
}

// The labelled columns the statement's range table reads, one entry per relation. With the
// started plan, also the columns its row-level security conditions read.
List* statement_reads(PlannedStmt* stmt, PlanState* planstate) {
    List* reads = NIL;
    bool row_security = false;
    ListCell* cell;
    foreach (cell, stmt->rtable) {
        auto* rte = static_cast<RangeTblEntry*>(lfirst(cell));
        if (rte->rtekind != RTE_RELATION || rte->relid < FirstNormalObjectId) continue;
        if (!(rte->requiredPerms & ACL_SELECT)) {
            if (planstate != nullptr && !row_security)
                row_security = pii_audit_label_cache_lookup(rte->relid)->row_security;
            continue;
        }
        const LabelCacheEntry* labels = pii_audit_label_cache_lookup(rte->relid);
        row_security |= labels->row_security;
        reads = note_read(reads, rte->relid, rte->selectedCols, false);
    }
    if (row_security && planstate != nullptr) {
        QualReads q{stmt, reads};
        (void)qual_reads_walker(planstate, &q);
        reads = q.reads;
    }
    return drop_reads_without_category(reads);
}

void statement_text(QueryDesc* query_desc, const UtilityWrapper& wrapped, const char** command,
                    const char** text, int* len) {
    PlannedStmt* stmt = query_desc->plannedstmt;
    *command = command_name(query_desc->operation);
    if (wrapped.active) {
        *command = wrapped.command;
        *text = wrapped.text;
        *len = wrapped.text_len;
    } else {
        statement_slice(query_desc->sourceText, stmt->stmt_location, stmt->stmt_len, text, len);
    }
}

void capture_statement(QueryDesc* query_desc, const UtilityWrapper& wrapped) {
    PlannedStmt* stmt = query_desc->plannedstmt;
    List* reads = statement_reads(stmt, query_desc->planstate);
    if (reads == NIL) return;

    const char* command;
    const char* text;
    int len;
    statement_text(query_desc, wrapped, &command, &text, &len);
    MemoryContext old = MemoryContextSwitchTo(query_desc->estate->es_query_cxt);
    StatementAudit* audit = new_audit(reads, command, text, len, stmt->queryId);
    if (wrapped.active) audit->nesting = wrapped.utility_level;
    audit->estate = query_desc->estate;
    audit->callback.func = on_statement_context_reset;
    audit->callback.arg = audit;
    MemoryContextRegisterResetCallback(query_desc->estate->es_query_cxt, &audit->callback);
    link_audit(audit);
    ListCell* cell;
    foreach (cell, audit->reads) {
        auto* read = static_cast<RelationRead*>(lfirst(cell));
        if (!pii_audit_label_cache_lookup(read->relid)->has_subject_key) continue;
        read->subjects = pii_audit_subjects_begin();
        (void)pii_audit_subjects_tap(query_desc->planstate, read->relid, read->subjects);
    }
    MemoryContextSwitchTo(old);
    if (audit->query_text == nullptr) report_capture_failure("normalizing the statement failed");
}

// A statement refused for lack of privileges never reaches capture_statement. Trying to read
// personal data one may not read is itself a signal (insider detection), so the attempt is
// recorded with status denied and no rows. Called with the error already flushed, right before
// it is raised again; a failure here is counted and forgotten so that the user still sees the
// original error (whose abort cleans up after both).
void record_denied(QueryDesc* query_desc, const UtilityWrapper& wrapped) {
    bool recorded = boundary::pg_forget_error([&] {
        List* reads = statement_reads(query_desc->plannedstmt, nullptr);
        if (reads != NIL) {
            const char* command;
            const char* text;
            int len;
            statement_text(query_desc, wrapped, &command, &text, &len);
            StatementAudit* audit =
                new_audit(reads, command, text, len, query_desc->plannedstmt->queryId);
            if (audit->query_text == nullptr) audit->query_len = 0;
            audit->state = AUDIT_DONE;
            emit(audit, pii_audit::EventStatus::kDenied, false, nullptr);
        }
    });
    if (!recorded) pii_audit_count_capture_error();
}

// ---------------------------------------------------------------- values shown in errors

emit_log_hook_type prev_emit_log_hook = nullptr;

// Whether `column` is one of the names in the first "(a, b)=(" list of an error detail, as
// "Key (a, b)=(...) already exists" and its translations show them.
bool key_list_names(const char* detail, const char* column) {
    const char* end = strstr(detail, ")=(");
    if (end == nullptr) return false;
    const char* start = end;
    while (start > detail && start[-1] != '(') --start;
    size_t len = strlen(column);
    for (const char* at = start; at + len <= end; ++at) {
        if (strncmp(at, column, len) != 0) continue;
        bool before = at == start || at[-1] == ' ' || at[-1] == ',' || at[-1] == '"';
        char next = at[len];
        bool after = at + len == end || next == ',' || next == ' ' || next == '"' || next == ')';
        if (before && after) return true;
    }
    return false;
}

// A failed statement whose error shows labelled values (the failing row of a CHECK or NOT NULL
// violation, the key of a unique or foreign-key violation, a duplicate found while building a
// unique index) let its user see them: a read of those columns, recorded as failed. Runs
// while the error is reported, before the transaction aborts, so it touches no catalog: the
// relation must be in this backend's label cache, and names come from what is cached.
void record_values_shown(ErrorData* edata) {
    if (edata->elevel != ERROR || edata->detail == nullptr || edata->table_name == nullptr ||
        ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION)
        return;
    if (!pii_audit_enabled || pii_audit_capture_suppressed || IsParallelWorker() ||
        !backend_identity_known)
        return;
    const LabelCacheEntry* labels =
        pii_audit_label_cache_find_cached(edata->schema_name, edata->table_name);
    if (labels == nullptr) return;
    // A row description (CHECK, NOT NULL, exclusion) shows every column the user may see;
    // a key, the columns it lists.
    bool whole_row = edata->sqlerrcode != ERRCODE_UNIQUE_VIOLATION &&
                     edata->sqlerrcode != ERRCODE_FOREIGN_KEY_VIOLATION;
    Bitmapset* shown = nullptr;
    for (int i = 0; i < labels->ncolumns; ++i) {
        const LabelledColumn& column = labels->columns[i];
        if (column.categories_len == 0) continue;
        if (whole_row || key_list_names(edata->detail, column.name))
            shown = bms_add_member(shown, column.attnum - FirstLowInvalidHeapAttributeNumber);
    }
    if (shown == nullptr) return;

    // The user's statement, if it is being audited: the columns join its read (emitted as
    // failed when its executor memory goes).
    // (Not a cursor opened by an earlier statement: it is not the one that failed.)
    StatementAudit* outermost = nullptr;
    for (StatementAudit* a = active_audits; a != nullptr; a = a->next)
        if (a->statement_start == GetCurrentStatementStartTimestamp()) outermost = a;
    if (outermost != nullptr && outermost->state == AUDIT_PENDING) {
        MemoryContext old = MemoryContextSwitchTo(outermost->estate->es_query_cxt);
        outermost->reads = note_read(outermost->reads, labels->relid, shown, false);
        MemoryContextSwitchTo(old);
        return;
    }
    // Otherwise (an INSERT reads nothing labelled until its error shows it) an event of its
    // own, from what is cached.
    StatementAudit audit{};
    audit.reads = note_read(NIL, labels->relid, shown, false);
    if (audit.reads == NIL) return;
    audit.start = GetCurrentTimestamp();
    audit.nesting = 0;
    char command[16] = "UNKNOWN";
    const char* text = debug_query_string ? debug_query_string : "";
    while (*text == ' ' || *text == '\n' || *text == '\t' || *text == '(') ++text;
    size_t n = 0;
    while (n + 1 < sizeof command && isalpha(static_cast<unsigned char>(text[n]))) {
        command[n] = static_cast<char>(toupper(static_cast<unsigned char>(text[n])));
        ++n;
    }
    if (n > 0) command[n] = '\0';
    audit.command = command;
    cached_role_name(GetSessionUserId(), audit.identity.session_user);
    cached_role_name(GetUserId(), audit.identity.current_user);
    strlcpy(audit.identity.end_user, pii_audit_end_user ? pii_audit_end_user : "",
            sizeof audit.identity.end_user);
    strlcpy(audit.identity.application_name, application_name ? application_name : "",
            sizeof audit.identity.application_name);
    const char* source = debug_query_string ? debug_query_string : "";
    audit.query_text =
        pii_audit_normalize(source, static_cast<int>(strlen(source)), &audit.query_len,
                            &audit.query_truncated);
    if (audit.query_text == nullptr) audit.query_len = 0;
    audit.state = AUDIT_DONE;
    emit(&audit, pii_audit::EventStatus::kFailed, false, nullptr);
}

void audit_emit_log(ErrorData* edata) {
    record_values_shown(edata);
    if (prev_emit_log_hook) prev_emit_log_hook(edata);
}

// ---------------------------------------------------------------- hooks

void start_executor(QueryDesc* query_desc, int eflags, const UtilityWrapper& wrapped) {
    boundary::pg_on_error(
        [&] {
            if (prev_executor_start)
                prev_executor_start(query_desc, eflags);
            else
                standard_ExecutorStart(query_desc, eflags);
        },
        [&] {
            if (geterrcode() != ERRCODE_INSUFFICIENT_PRIVILEGE || !capture_enabled() ||
                (eflags & EXEC_FLAG_EXPLAIN_ONLY))
                return;
            ErrorData* error = CopyErrorData();
            FlushErrorState();
            record_denied(query_desc, wrapped);
            ReThrowError(error);
        });
}

void audit_executor_start(QueryDesc* query_desc, int eflags) {
    // The database name and roles are cached now: an error reported later may not look them up.
    if (capture_enabled()) {
        learn_backend_identity();
        cache_role(GetSessionUserId());
        cache_role(GetUserId());
    }
    UtilityWrapper wrapped{};
    if (wrapper.active && wrapper.level == nesting_level &&
        wrapper.planner_depth == planner_depth) {
        wrapped = wrapper;
        wrapper.active = false;
        if (wrapped.internal_after) internal_level = wrapped.level;
    }
    start_executor(query_desc, eflags, wrapped);

    if (!capture_enabled() || (eflags & EXEC_FLAG_EXPLAIN_ONLY)) return;
    if (!wrapped.active && internal_query(query_desc->estate)) return;
    if (wrapped.active && copy_table_recorded) return;
    capture_statement(query_desc, wrapped);
}

void audit_executor_run(QueryDesc* query_desc, ScanDirection direction, uint64 count,
                        bool execute_once) {
    StatementAudit* volatile audit = find_audit(query_desc->estate);
    // A failing run adds its rows in the reset callback, unless they went nowhere (MOVE).
    if (audit)
        audit->in_run = !(ActivePortal != nullptr && ActivePortal->queryDesc == query_desc &&
                          query_desc->dest->mydest == DestNone);
    ++nesting_level;
    boundary::pg_finally(
        [&] {
            if (prev_executor_run)
                prev_executor_run(query_desc, direction, count, execute_once);
            else
                standard_ExecutorRun(query_desc, direction, count, execute_once);
        },
        [] { --nesting_level; });
    // es_processed counts this run only (a cursor runs once per FETCH). row_count counts rows
    // sent: a MOVE, or the skipping part of FETCH ABSOLUTE, runs into DestNone. A WITH HOLD
    // cursor is rewound and run again in full into its hold store at commit: the rows it holds
    // are all the rows it can still send, so the count becomes that total, not a second count.
    if (audit) {
        uint64 processed = query_desc->estate->es_processed;
        bool cursor = ActivePortal != nullptr && ActivePortal->queryDesc == query_desc;
        if (cursor && ActivePortal->holdStore != nullptr &&
            query_desc->dest->mydest == DestTuplestore)
            audit->rows = Max(audit->rows, static_cast<int64>(processed));
        else if (!cursor || query_desc->dest->mydest != DestNone)
            audit->rows += static_cast<int64>(processed);
        audit->in_run = false;
    }
}

void audit_executor_finish(QueryDesc* query_desc) {
    ++nesting_level;
    boundary::pg_finally(
        [&] {
            if (prev_executor_finish)
                prev_executor_finish(query_desc);
            else
                standard_ExecutorFinish(query_desc);
        },
        [] { --nesting_level; });
}

void audit_executor_end(QueryDesc* query_desc) {
    if (StatementAudit* audit = find_audit(query_desc->estate)) {
        audit->state = AUDIT_EMITTING;
        bool lost = false;
        emit(audit, pii_audit::EventStatus::kCompleted, true, &lost);
        audit->state = AUDIT_DONE;
        if (lost && pii_audit_fail_on_error)
            ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY),
                            errmsg("pii_audit could not queue the audit event of this statement"),
                            errdetail("The audit queue stayed full; the loss is counted in "
                                      "pii_audit.status."),
                            errhint("pii_audit.fail_on_error is on, so the statement fails.")));
    }
    if (prev_executor_end)
        prev_executor_end(query_desc);
    else
        standard_ExecutorEnd(query_desc);
}

// COPY table TO reads without the executor: record it here, with the row count COPY reports.
StatementAudit* capture_copy_table(CopyStmt* copy, const char* text, int len) {
    Oid relid = RangeVarGetRelid(copy->relation, NoLock, true);
    if (!OidIsValid(relid) || relid < FirstNormalObjectId) return nullptr;
    Bitmapset* selected = nullptr;
    bool all = copy->attlist == NIL;
    ListCell* cell;
    foreach (cell, copy->attlist) {
        AttrNumber attnum = get_attnum(relid, strVal(lfirst(cell)));
        if (attnum != InvalidAttrNumber)
            selected = bms_add_member(selected, attnum - FirstLowInvalidHeapAttributeNumber);
    }
    List* reads = drop_reads_without_category(note_read(NIL, relid, selected, all));
    if (reads == NIL) return nullptr;
    StatementAudit* audit = new_audit(reads, "COPY", text, len, 0);
    if (audit->query_text == nullptr) report_capture_failure("normalizing the statement failed");
    return audit;
}

// COPY table TO reads rows without the executor, so no scan could be tapped for subjects. For a
// table with a subject key it runs as COPY (SELECT columns FROM ONLY table) TO instead: the
// same rows and columns (all but generated ones when none are named), and row-level security
// applies as PostgreSQL applies it to COPY anyway (it makes the same rewrite when a policy
// applies). PostgreSQL checks a COPY's column list and privileges before row-level security;
// a query checks them in another order, with other messages. So the rewrite happens only when
// those checks pass, and PostgreSQL's own COPY reports whatever they find: a generated or
// repeated column, a missing privilege.
PlannedStmt* copy_through_executor(PlannedStmt* pstmt) {
    auto* copy = castNode(CopyStmt, pstmt->utilityStmt);
    if (copy->is_from || copy->relation == nullptr || copy->query != nullptr) return nullptr;
    Oid relid = RangeVarGetRelid(copy->relation, AccessShareLock, true);
    if (!OidIsValid(relid) || relid < FirstNormalObjectId || get_rel_relkind(relid) != RELKIND_RELATION)
        return nullptr;
    const LabelCacheEntry* labels = pii_audit_label_cache_lookup(relid);
    if (!labels->has_subject_key || !labels->has_categories) return nullptr;

    // The columns COPY would read, validated as CopyGetAttnums does.
    Relation rel = table_open(relid, NoLock);
    TupleDesc desc = RelationGetDescr(rel);
    List* names = NIL;
    Bitmapset* selected = nullptr;
    bool valid = true;
    if (copy->attlist == NIL) {
        for (int i = 0; i < desc->natts; ++i) {
            Form_pg_attribute attr = TupleDescAttr(desc, i);
            if (attr->attisdropped || attr->attgenerated != '\0') continue;
            names = lappend(names, pstrdup(NameStr(attr->attname)));
            selected = bms_add_member(selected, attr->attnum - FirstLowInvalidHeapAttributeNumber);
        }
    } else {
        ListCell* cell;
        foreach (cell, copy->attlist) {
            const char* name = strVal(lfirst(cell));
            AttrNumber attnum = InvalidAttrNumber;
            for (int i = 0; i < desc->natts; ++i) {
                Form_pg_attribute attr = TupleDescAttr(desc, i);
                if (!attr->attisdropped && namestrcmp(&attr->attname, name) == 0) {
                    if (attr->attgenerated == '\0') attnum = attr->attnum;
                    break;
                }
            }
            int member = attnum - FirstLowInvalidHeapAttributeNumber;
            if (attnum == InvalidAttrNumber || bms_is_member(member, selected)) {
                valid = false;
                break;
            }
            names = lappend(names, pstrdup(name));
            selected = bms_add_member(selected, member);
        }
    }
    table_close(rel, NoLock);
    if (!valid || names == NIL) return nullptr;

    RangeTblEntry* rte = makeNode(RangeTblEntry);
    rte->rtekind = RTE_RELATION;
    rte->relid = relid;
    rte->relkind = RELKIND_RELATION;
    rte->rellockmode = AccessShareLock;
    rte->requiredPerms = ACL_SELECT;
    rte->selectedCols = selected;
    if (!ExecCheckRTPerms(list_make1(rte), false)) return nullptr;

    List* targets = NIL;
    ListCell* cell;
    foreach (cell, names) {
        ColumnRef* ref = makeNode(ColumnRef);
        ref->fields = list_make1(makeString(static_cast<char*>(lfirst(cell))));
        ref->location = -1;
        ResTarget* target = makeNode(ResTarget);
        target->val = reinterpret_cast<Node*>(ref);
        target->location = -1;
        targets = lappend(targets, target);
    }
    RangeVar* from = makeRangeVar(get_namespace_name(get_rel_namespace(relid)),
                                  get_rel_name(relid), -1);
    from->inh = false;
    SelectStmt* select = makeNode(SelectStmt);
    select->targetList = targets;
    select->fromClause = list_make1(from);

    CopyStmt* rewritten = static_cast<CopyStmt*>(copyObjectImpl(copy));
    rewritten->relation = nullptr;
    rewritten->attlist = NIL;
    rewritten->query = reinterpret_cast<Node*>(select);
    PlannedStmt* result = makeNode(PlannedStmt);
    *result = *pstmt;
    result->utilityStmt = reinterpret_cast<Node*>(rewritten);
    return result;
}

const char* wrapper_command(Node* stmt) {
    switch (nodeTag(stmt)) {
        case T_CopyStmt:
            return castNode(CopyStmt, stmt)->is_from ? nullptr : "COPY";
        case T_CreateTableAsStmt:
        case T_ExplainStmt:
        case T_DeclareCursorStmt:
        case T_RefreshMatViewStmt:
            return GetCommandTagName(CreateCommandTag(stmt));
        default:
            return nullptr;
    }
}

void audit_process_utility_inner(PlannedStmt* pstmt, const char* query_string, bool read_only_tree,
                                 ProcessUtilityContext context, ParamListInfo params,
                                 QueryEnvironment* query_env, DestReceiver* dest,
                                 QueryCompletion* qc);

void audit_process_utility(PlannedStmt* pstmt, const char* query_string, bool read_only_tree,
                           ProcessUtilityContext context, ParamListInfo params,
                           QueryEnvironment* query_env, DestReceiver* dest, QueryCompletion* qc) {
    PlannedStmt* through_executor = nullptr;
    if (capture_enabled() && IsA(pstmt->utilityStmt, CopyStmt))
        through_executor = copy_through_executor(pstmt);
    audit_process_utility_inner(through_executor ? through_executor : pstmt, query_string,
                                read_only_tree, context, params, query_env, dest, qc);
}

void audit_process_utility_inner(PlannedStmt* pstmt, const char* query_string, bool read_only_tree,
                           ProcessUtilityContext context, ParamListInfo params,
                           QueryEnvironment* query_env, DestReceiver* dest, QueryCompletion* qc) {
    Node* stmt = pstmt->utilityStmt;
    // What a utility runs (a DO block's statements, a procedure's) is nested in it, as
    // pg_stat_statements counts it; EXECUTE runs its prepared statement at its own level.
    const int nest = IsA(stmt, ExecuteStmt) || IsA(stmt, PrepareStmt) ? 0 : 1;
    StatementAudit* volatile copy_audit = nullptr;
    UtilityWrapper saved = wrapper;
    bool saved_copy = copy_table_recorded;
    int saved_internal = internal_level;
    const char* wrapped_command = capture_enabled() ? wrapper_command(stmt) : nullptr;
    if (wrapped_command) {
        const char* text;
        int len;
        statement_slice(query_string, pstmt->stmt_location, pstmt->stmt_len, &text, &len);
        wrapper = UtilityWrapper{true,         nesting_level + nest, nesting_level,
                                 planner_depth, IsA(stmt, RefreshMatViewStmt),
                                 wrapped_command, text, len};
        if (IsA(stmt, CopyStmt) && castNode(CopyStmt, stmt)->relation != nullptr &&
            castNode(CopyStmt, stmt)->query == nullptr) {
            copy_audit = capture_copy_table(castNode(CopyStmt, stmt), text, len);
            copy_table_recorded = copy_audit != nullptr;
        }
    }
    nesting_level += nest;
    boundary::pg_on_error(
        [&] {
            if (prev_process_utility)
                prev_process_utility(pstmt, query_string, read_only_tree, context, params,
                                     query_env, dest, qc);
            else
                standard_ProcessUtility(pstmt, query_string, read_only_tree, context, params,
                                        query_env, dest, qc);
        },
        [&] {
            nesting_level -= nest;
            wrapper = saved;
            copy_table_recorded = saved_copy;
            internal_level = saved_internal;
            // Refused for lack of privileges before reading: denied, as for queries.
            if (copy_audit)
                emit(copy_audit,
                     geterrcode() == ERRCODE_INSUFFICIENT_PRIVILEGE
                         ? pii_audit::EventStatus::kDenied
                         : pii_audit::EventStatus::kFailed,
                     false, nullptr);
        });
    nesting_level -= nest;
    wrapper = saved;
    copy_table_recorded = saved_copy;
    internal_level = saved_internal;
    if (copy_audit) {
        copy_audit->rows = qc ? static_cast<int64>(qc->nprocessed) : 0;
        bool lost = false;
        emit(copy_audit, pii_audit::EventStatus::kCompleted, true, &lost);
        if (lost && pii_audit_fail_on_error)
            ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY),
                            errmsg("pii_audit could not queue the audit event of this COPY")));
    }
}

}  // namespace

void pii_audit_format_client_addr(const struct sockaddr_storage* addr, int salen, char* out,
                                  size_t size) {
    out[0] = '\0';
    if (salen <= 0 || addr->ss_family == AF_UNIX) return;
    char host[NI_MAXHOST];
    if (pg_getnameinfo_all(addr, salen, host, sizeof host, nullptr, 0, NI_NUMERICHOST) != 0) return;
    if (char* zone = strchr(host, '%')) *zone = '\0';  // inet does not take IPv6 zone ids
    strlcpy(out, host, size);
}

void pii_audit_capture_identity(ReaderIdentity* identity) {
    learn_backend_identity();
    role_name(GetSessionUserId(), identity->session_user);
    role_name(GetUserId(), identity->current_user);
    strlcpy(identity->end_user, pii_audit_end_user ? pii_audit_end_user : "",
            sizeof identity->end_user);
    strlcpy(identity->application_name, application_name ? application_name : "",
            sizeof identity->application_name);
}

void pii_audit_apply_identity(const ReaderIdentity& identity, pii_audit::EventView& event) {
    event.field[pii_audit::kSessionUser] = identity.session_user;
    event.field[pii_audit::kCurrentUser] = identity.current_user;
    event.field[pii_audit::kEndUser] = identity.end_user;
    event.field[pii_audit::kApplicationName] = identity.application_name;
}

void pii_audit_fill_identity(pii_audit::EventView& event) {
    event.header.backend_pid = MyProcPid;
    event.header.source_encoding = GetDatabaseEncoding();
    event.field[pii_audit::kDatabaseName] = database_name;
    if (client_addr[0] != '\0') {
        event.field[pii_audit::kClientAddr] = client_addr;
        event.header.flags |= pii_audit::kFlagClientAddrSet;
    }
}

namespace {

// The same few statements run again and again (prepared statements, functions): their
// normalized text is remembered, keyed by the exact source text and the settings the result
// depends on. Round-robin replacement; entries live in malloc'd memory for the backend's life
// (a failed allocation only means no caching). Normalizing was the largest part of
// pii_audit's own time in a backend running a prepared lookup.
struct NormalizedCacheEntry {
    char* source;  // the source text, then the normalized text and its NUL, in one allocation
    int source_len;
    int normalized_len;
    int max_bytes;
    bool standard_strings;
    bool truncated;
};
constexpr int kNormalizedCacheSize = 16;
constexpr int kNormalizedCacheMaxSource = 8192;
NormalizedCacheEntry normalized_cache[kNormalizedCacheSize];
int normalized_cache_next = 0;

const NormalizedCacheEntry* cached_normalized(const char* text, int len, int max_bytes) {
    for (const NormalizedCacheEntry& e : normalized_cache)
        if (e.source != nullptr && e.source_len == len && e.max_bytes == max_bytes &&
            e.standard_strings == standard_conforming_strings &&
            memcmp(e.source, text, static_cast<size_t>(len)) == 0)
            return &e;
    return nullptr;
}

void remember_normalized(const char* text, int len, int max_bytes, const char* normalized,
                         int normalized_len, bool truncated) {
    if (len > kNormalizedCacheMaxSource) return;
    NormalizedCacheEntry& e = normalized_cache[normalized_cache_next];
    size_t size = static_cast<size_t>(len) + static_cast<size_t>(normalized_len) + 1;
    auto* memory = static_cast<char*>(realloc(e.source, size));
    if (memory == nullptr) return;  // realloc failed: the old entry is untouched and valid
    normalized_cache_next = (normalized_cache_next + 1) % kNormalizedCacheSize;
    memcpy(memory, text, static_cast<size_t>(len));
    memcpy(memory + len, normalized, static_cast<size_t>(normalized_len) + 1);
    e.source = memory;
    e.source_len = len;
    e.normalized_len = normalized_len;
    e.max_bytes = max_bytes;
    e.standard_strings = standard_conforming_strings;
    e.truncated = truncated;
}

}  // namespace

char* pii_audit_normalize(const char* text, int len, int* out_len, bool* truncated) {
    const int max_bytes = pii_audit_max_query_length;
    if (const NormalizedCacheEntry* hit = cached_normalized(text, len, max_bytes)) {
        char* out = static_cast<char*>(palloc(static_cast<size_t>(hit->normalized_len) + 1));
        memcpy(out, hit->source + hit->source_len, static_cast<size_t>(hit->normalized_len) + 1);
        *out_len = hit->normalized_len;
        *truncated = hit->truncated;
        return out;
    }
    char* out = static_cast<char*>(palloc(static_cast<size_t>(max_bytes) + 1));
    size_t n = 0;
    if (!normalize_noexcept(text, static_cast<size_t>(len), static_cast<size_t>(max_bytes), out,
                            &n, truncated)) {
        pfree(out);
        *out_len = 0;
        return nullptr;
    }
    // The normalizer cuts on UTF-8 boundaries; other server encodings need PostgreSQL's rule.
    if (*truncated && GetDatabaseEncoding() != PG_UTF8) n = pg_mbcliplen(out, n, n);
    out[n] = '\0';
    *out_len = static_cast<int>(n);
    remember_normalized(text, len, max_bytes, out, *out_len, *truncated);
    return out;
}

void pii_audit_install_capture_hooks(void) {
    prev_executor_start = ExecutorStart_hook;
    ExecutorStart_hook = audit_executor_start;
    prev_executor_run = ExecutorRun_hook;
    ExecutorRun_hook = audit_executor_run;
    prev_executor_finish = ExecutorFinish_hook;
    ExecutorFinish_hook = audit_executor_finish;
    prev_executor_end = ExecutorEnd_hook;
    ExecutorEnd_hook = audit_executor_end;
    prev_process_utility = ProcessUtility_hook;
    ProcessUtility_hook = audit_process_utility;
    prev_capture_planner = planner_hook;
    planner_hook = capture_planner;
    prev_emit_log_hook = emit_log_hook;
    emit_log_hook = audit_emit_log;
    CacheRegisterSyscacheCallback(AUTHOID, on_role_change, 0);
    pii_audit_install_login_hook();
}
