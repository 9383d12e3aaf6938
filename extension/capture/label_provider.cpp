// The `pii` security-label provider: validates labels, restricts who may change them, makes every
// backend re-read the labels of the relation, and records each change in the trail when its
// transaction ends (as completed on commit, failed on abort). Removals of trail partitions
// (retention) are recorded the same way.
#include "pii_audit_internal.h"

extern "C" {
#include "access/xact.h"
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "executor/tuptable.h"
#include "catalog/indexing.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_seclabel.h"
#include "catalog/pg_class.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "commands/seclabel.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

#include <cstring>

namespace {

// A label change or a removal of events, recorded when its transaction ends.
struct PendingLabelChange {
    pii_audit::EventKind kind;
    int64 row_count;  // removals: how many events
    bool confirmed;   // removals: the partition was dropped (announced ones wait for the DROP)
    TimestampTz time;
    Oid relid;
    char* relation;
    char* column;
    char* categories;
    int categories_len;
    char* detail;
    const char* command;  // static text
    SubTransactionId subxact;  // the subtransaction that made it (its parent once that commits)
    bool rolled_back;          // a ROLLBACK TO SAVEPOINT undid it
    char* query_text;
    int query_len;
    bool query_truncated;
    ReaderIdentity identity;
};

List* pending_changes = NIL;  // allocated in TopTransactionContext
bool xact_callback_registered = false;

void emit_pending(pii_audit::EventStatus status) {
    ListCell* cell;
    foreach (cell, pending_changes) {
        auto* change = static_cast<PendingLabelChange*>(lfirst(cell));
        if (!change->confirmed) continue;  // announced, but the DROP never came
        pii_audit::EventView event;
        event.header.kind = static_cast<uint8>(change->kind);
        event.header.row_count = change->row_count;
        event.header.status = static_cast<uint8>(
            change->rolled_back ? pii_audit::EventStatus::kFailed : status);
        event.header.event_time = change->time;
        event.header.relation_oid = change->relid;
        if (change->query_truncated) event.header.flags |= pii_audit::kFlagQueryTruncated;
        pii_audit_fill_identity(event);
        pii_audit_apply_identity(change->identity, event);
        event.field[pii_audit::kCommand] = change->command;
        event.field[pii_audit::kRelation] = change->relation;
        if (change->column != nullptr)
            event.field[pii_audit::kColumns] =
                std::string_view(change->column, strlen(change->column) + 1);
        event.field[pii_audit::kCategories] =
            std::string_view(change->categories, change->categories_len);
        event.field[pii_audit::kQueryText] =
            std::string_view(change->query_text ? change->query_text : "", change->query_len);
        event.field[pii_audit::kDetail] = change->detail;
        // Label changes switch auditing on or off: they wait for queue space like reads do
        // (bounded by queue_wait_timeout, and not at all while the worker is stalled). Commit
        // and abort hold interrupts, so the wait cannot turn into an error here. The worker
        // (removing events for retention) never waits for space only it can free.
        (void)pii_audit_enqueue(event, !pii_audit_capture_suppressed);
    }
    pending_changes = NIL;
}

void on_xact_event(XactEvent event, void*) {
    if (pending_changes == NIL) return;
    switch (event) {
        case XACT_EVENT_COMMIT:
        case XACT_EVENT_PARALLEL_COMMIT:
        case XACT_EVENT_PREPARE:
            emit_pending(pii_audit::EventStatus::kCompleted);
            break;
        case XACT_EVENT_ABORT:
        case XACT_EVENT_PARALLEL_ABORT:
            emit_pending(pii_audit::EventStatus::kFailed);
            break;
        default:
            break;
    }
}

// Savepoints: a change undone by ROLLBACK TO SAVEPOINT did not happen, even if the transaction
// commits; one in a released savepoint belongs to the enclosing (sub)transaction.
void on_subxact_event(SubXactEvent event, SubTransactionId subxact, SubTransactionId parent,
                      void*) {
    if (pending_changes == NIL) return;
    ListCell* cell;
    foreach (cell, pending_changes) {
        auto* change = static_cast<PendingLabelChange*>(lfirst(cell));
        if (change->subxact != subxact) continue;
        if (event == SUBXACT_EVENT_COMMIT_SUB)
            change->subxact = parent;
        else if (event == SUBXACT_EVENT_ABORT_SUB)
            change->rolled_back = true;
    }
}

// Categories known in this database, as a comma-separated list for messages, and whether each
// of `wanted` (NUL-separated) is among them; names the first unknown one.
const char* first_unknown_category(const char* wanted, size_t wanted_len, StringInfo known) {
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "pii_audit: SPI_connect failed");
    int rc = SPI_execute("SELECT name FROM pii_audit.categories ORDER BY name", true, 0);
    if (rc != SPI_OK_SELECT) elog(ERROR, "pii_audit: could not read pii_audit.categories");
    const char* unknown = nullptr;
    for (size_t at = 0; at < wanted_len; at += strlen(wanted + at) + 1) {
        bool found = false;
        for (uint64 row = 0; row < SPI_processed && !found; ++row) {
            char* name = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, 1);
            found = name && strcmp(name, wanted + at) == 0;
        }
        if (!found) {
            unknown = wanted + at;
            break;
        }
    }
    for (uint64 row = 0; row < SPI_processed; ++row) {
        char* name = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, 1);
        appendStringInfo(known, "%s%s", row ? ", " : "", name ? name : "");
    }
    SPI_finish();
    return unknown;
}

void check_may_change_labels() {
    if (superuser()) return;
    Oid admin = get_role_oid("pii_audit_admin", true);
    if (OidIsValid(admin) && has_privs_of_role(GetUserId(), admin)) return;
    ereport(ERROR,
            (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
             errmsg("permission denied to change pii labels"),
             errdetail("Only superusers and members of pii_audit_admin may set, change or remove "
                       "pii labels, so that nobody can switch off auditing of data they read."),
             errhint("GRANT pii_audit_admin TO the role that manages labels.")));
}

// The kinds of relation whose columns may carry pii labels.
bool can_carry_labels(char relkind) {
    return relkind == RELKIND_RELATION || relkind == RELKIND_PARTITIONED_TABLE ||
           relkind == RELKIND_MATVIEW || relkind == RELKIND_FOREIGN_TABLE;
}

void validate_target(const ObjectAddress* object) {
    if (object->classId != RelationRelationId || object->objectSubId == 0)
        ereport(ERROR,
                (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                 errmsg("pii labels can only be placed on table columns"),
                 errhint("Use SECURITY LABEL FOR pii ON COLUMN table.column IS 'category, ...'.")));
    if (object->objectSubId < 0)
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("pii labels cannot be placed on system columns")));
    if (object->objectId < FirstNormalObjectId)
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("pii labels cannot be placed on system catalogs")));
    char relkind = get_rel_relkind(object->objectId);
    if (relkind == RELKIND_VIEW)
        ereport(ERROR,
                (errcode(ERRCODE_WRONG_OBJECT_TYPE),
                 errmsg("pii labels cannot be placed on view columns"),
                 errhint("Label the base table's columns: reads through a view are audited on "
                         "the tables it reads.")));
    if (!can_carry_labels(relkind))
        ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
                        errmsg("pii labels can only be placed on columns of tables, partitioned "
                               "tables, materialized views and foreign tables")));
}

// A pending event of this transaction, with the statement and the reader as they are now.
PendingLabelChange* new_pending(pii_audit::EventKind kind, Oid relid, const char* relation,
                                const char* detail, const char* command) {
    MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
    auto* change = static_cast<PendingLabelChange*>(palloc0(sizeof(PendingLabelChange)));
    change->kind = kind;
    change->confirmed = kind != pii_audit::EventKind::kRemoval;
    change->time = GetCurrentTimestamp();
    change->relid = relid;
    change->relation = pstrdup(relation);
    change->detail = pstrdup(detail);
    change->command = command;
    change->subxact = GetCurrentSubTransactionId();
    if (debug_query_string)
        change->query_text = pii_audit_normalize(debug_query_string, strlen(debug_query_string),
                                                 &change->query_len, &change->query_truncated);
    pii_audit_capture_identity(&change->identity);
    pending_changes = lappend(pending_changes, change);
    MemoryContextSwitchTo(old);

    if (!xact_callback_registered) {
        RegisterXactCallback(on_xact_event, nullptr);
        RegisterSubXactCallback(on_subxact_event, nullptr);
        xact_callback_registered = true;
    }
    return change;
}

// Records a label change of column `attnum` of `relid`, emitted when the transaction ends.
void queue_change(Oid relid, int attnum, const char* categories, size_t categories_len,
                  const char* detail, const char* command) {
    char* relation =
        quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), get_rel_name(relid));
    char* column = get_attname(relid, static_cast<AttrNumber>(attnum), false);
    PendingLabelChange* change =
        new_pending(pii_audit::EventKind::kLabelChange, relid, relation, detail, command);
    MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
    change->column = pstrdup(column);
    if (categories_len > 0) {
        change->categories = static_cast<char*>(palloc(categories_len));
        memcpy(change->categories, categories, categories_len);
        change->categories_len = static_cast<int>(categories_len);
    }
    MemoryContextSwitchTo(old);
}

// Dropping a labelled column (or its table) removes its label with it: the trail must say so,
// or a label could vanish without a trace.
void record_dropped_label(Oid relid, int attnum, const char* label, const char* what) {
    size_t label_len = strlen(label);
    char* categories = static_cast<char*>(palloc(label_len + 1));
    size_t categories_len = 0;
    bool subject_key = false;
    char error[256];
    if (!pii_audit::parse_label_into(label, categories, label_len + 1, &categories_len,
                                     &subject_key, error, sizeof error))
        categories_len = 0;
    queue_change(relid, attnum, categories, categories_len,
                 psprintf("%s with its label (was '%s')", what, label), "DROP");
}

// ---------------------------------------------------------------- removals of trail partitions
// pii_audit._remove_partitions announces each removal (ids, count, times, why) before its DROP;
// the DROP confirms it. A partition of trail_groups dropped any other way (DROP TABLE by a
// superuser, DROP EXTENSION) is recorded too: its rows are read before they go.

bool is_trail_partition(Oid relid) {
    Oid nsp = get_namespace_oid("pii_audit", true);
    if (!OidIsValid(nsp) || get_rel_namespace(relid) != nsp) return false;
    const char* name = get_rel_name(relid);
    if (name == nullptr || strncmp(name, "trail_groups_p", 14) != 0 || strlen(name) != 20)
        return false;
    for (int i = 14; i < 20; ++i)
        if (name[i] < '0' || name[i] > '9') return false;
    return true;
}

PendingLabelChange* announced_removal(Oid relid) {
    ListCell* cell;
    foreach (cell, pending_changes) {
        auto* change = static_cast<PendingLabelChange*>(lfirst(cell));
        if (change->kind == pii_audit::EventKind::kRemoval && change->relid == relid)
            return change;
    }
    return nullptr;
}

void utc_text(TimestampTz t, char* out, size_t size) {
    struct pg_tm tm;
    fsec_t fsec;
    if (timestamp2tm(t, nullptr, &tm, &fsec, nullptr, nullptr) != 0) {
        strlcpy(out, "?", size);
        return;
    }
    snprintf(out, size, "%04d-%02d-%02d %02d:%02d:%02d", tm.tm_year, tm.tm_mon, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec);
}

// A partition dropped without an announcement: its groups, read before the DROP removes them.
void record_unannounced_drop(Oid relid) {
    AttrNumber cols[4] = {get_attnum(relid, "first_event_id"), get_attnum(relid, "event_count"),
                          get_attnum(relid, "min_time"), get_attnum(relid, "max_time")};
    int64 events = 0, first = PG_INT64_MAX, last = 0;
    TimestampTz oldest = DT_NOEND, newest = DT_NOBEGIN;
    bool readable = true;
    for (AttrNumber col : cols) readable = readable && col > 0;
    if (readable) {
        Relation rel = table_open(relid, AccessShareLock);  // the DROP holds a stronger lock
        Snapshot snapshot = RegisterSnapshot(GetLatestSnapshot());
        TableScanDesc scan = table_beginscan(rel, snapshot, 0, nullptr);
        TupleTableSlot* slot = table_slot_create(rel, nullptr);
        while (table_scan_getnextslot(scan, ForwardScanDirection, slot)) {
            bool nulls[4];
            Datum values[4];
            for (int i = 0; i < 4; ++i) values[i] = slot_getattr(slot, cols[i], &nulls[i]);
            if (nulls[0] || nulls[1] || nulls[2] || nulls[3]) continue;
            int64 id = DatumGetInt64(values[0]);
            int64 count = DatumGetInt32(values[1]);
            events += count;
            first = Min(first, id);
            last = Max(last, id + count - 1);
            oldest = Min(oldest, DatumGetTimestampTz(values[2]));
            newest = Max(newest, DatumGetTimestampTz(values[3]));
        }
        ExecDropSingleTupleTableSlot(slot);
        table_endscan(scan);
        UnregisterSnapshot(snapshot);
        table_close(rel, AccessShareLock);
        if (events == 0) return;  // an empty month: nothing was removed
    }
    char* relation = quote_qualified_identifier("pii_audit", get_rel_name(relid));
    const char* detail;
    if (readable) {
        char from[32], to[32];
        utc_text(oldest, from, sizeof from);
        utc_text(newest, to, sizeof to);
        detail = psprintf("%lld events with ids from %lld to %lld (%s to %s UTC) removed: "
                          "the partition was dropped directly, not by retention or "
                          "pii_audit.remove_events",
                          static_cast<long long>(events), static_cast<long long>(first),
                          static_cast<long long>(last), from, to);
    } else {
        detail = "events removed: the partition was dropped directly, not by retention or "
                 "pii_audit.remove_events; its columns had been altered, so how many is not "
                 "known";
    }
    PendingLabelChange* removal = new_pending(pii_audit::EventKind::kRemoval, relid, relation,
                                              detail, "DROP TABLE");
    removal->row_count = readable ? events : -1;
    removal->confirmed = true;
}

object_access_hook_type prev_object_access = nullptr;

void on_object_access(ObjectAccessType access, Oid class_id, Oid object_id, int sub_id,
                      void* arg) {
    if (prev_object_access) prev_object_access(access, class_id, object_id, sub_id, arg);
    if (access != OAT_DROP || class_id != RelationRelationId || object_id < FirstNormalObjectId)
        return;
    if (!can_carry_labels(get_rel_relkind(object_id))) return;
    // Labels exist only where the extension is installed; skip the catalog lookups elsewhere.
    if (!OidIsValid(get_extension_oid("pii_audit", true))) return;
    if (sub_id == 0 && is_trail_partition(object_id)) {
        if (PendingLabelChange* announced = announced_removal(object_id))
            announced->confirmed = true;
        else
            record_unannounced_drop(object_id);
        return;
    }
    if (sub_id > 0) {
        ObjectAddress column = {RelationRelationId, object_id, sub_id};
        if (char* label = GetSecurityLabel(&column, "pii"))
            record_dropped_label(object_id, sub_id, label, "column dropped");
        return;
    }
    // The table's labelled columns, from pg_seclabel (collected first, recorded after the scan).
    List* attnums = NIL;
    List* labels = NIL;
    Relation seclabel = table_open(SecLabelRelationId, AccessShareLock);
    ScanKeyData keys[2];
    ScanKeyInit(&keys[0], Anum_pg_seclabel_objoid, BTEqualStrategyNumber, F_OIDEQ,
                ObjectIdGetDatum(object_id));
    ScanKeyInit(&keys[1], Anum_pg_seclabel_classoid, BTEqualStrategyNumber, F_OIDEQ,
                ObjectIdGetDatum(RelationRelationId));
    SysScanDesc scan = systable_beginscan(seclabel, SecLabelObjectIndexId, true, nullptr, 2, keys);
    while (HeapTuple tuple = systable_getnext(scan)) {
        auto* row = reinterpret_cast<FormData_pg_seclabel*>(GETSTRUCT(tuple));
        bool provider_null = true, label_null = true;
        Datum provider = heap_getattr(tuple, Anum_pg_seclabel_provider,
                                      RelationGetDescr(seclabel), &provider_null);
        Datum label =
            heap_getattr(tuple, Anum_pg_seclabel_label, RelationGetDescr(seclabel), &label_null);
        if (row->objsubid > 0 && !provider_null && !label_null &&
            strcmp(TextDatumGetCString(provider), "pii") == 0) {
            attnums = lappend_int(attnums, row->objsubid);
            labels = lappend(labels, TextDatumGetCString(label));
        }
    }
    systable_endscan(scan);
    table_close(seclabel, AccessShareLock);
    ListCell* attnum;
    ListCell* label;
    forboth (attnum, attnums, label, labels)
        record_dropped_label(object_id, lfirst_int(attnum), static_cast<char*>(lfirst(label)),
                             "table dropped");
}

void pii_label_hook(const ObjectAddress* object, const char* label) {
    validate_target(object);
    check_may_change_labels();
    if (!OidIsValid(get_extension_oid("pii_audit", true)))
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("pii_audit is not installed in database \"%s\"",
                        get_database_name(MyDatabaseId)),
                 errhint("Run CREATE EXTENSION pii_audit in this database before labelling "
                         "columns.")));

    size_t categories_len = 0;
    char* categories = nullptr;
    if (label != nullptr) {
        size_t label_len = strlen(label);
        categories = static_cast<char*>(palloc(label_len + 1));
        bool subject_key = false;
        char error[512];
        if (!pii_audit::parse_label_into(label, categories, label_len + 1, &categories_len,
                                         &subject_key, error, sizeof error)) {
            StringInfoData known;
            initStringInfo(&known);
            first_unknown_category("", 0, &known);
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("invalid pii label \"%s\": %s", label, error),
                            errhint("Allowed: one or more of %s, and/or subject_key, separated "
                                    "by commas.",
                                    known.data)));
        }
        StringInfoData known;
        initStringInfo(&known);
        if (const char* unknown = first_unknown_category(categories, categories_len, &known))
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("unknown pii category \"%s\" in label \"%s\"", unknown, label),
                     errhint("Known categories: %s; subject_key marks the column that identifies "
                             "the person. Add categories to pii_audit.categories.",
                             known.data)));
    }

    char* previous = GetSecurityLabel(object, "pii");
    const char* detail;
    if (label == nullptr)
        detail = psprintf("label removed (was '%s')", previous ? previous : "");
    else if (previous == nullptr)
        detail = psprintf("label set to '%s'", label);
    else
        detail = psprintf("label changed from '%s' to '%s'", previous, label);
    queue_change(object->objectId, object->objectSubId, categories, categories_len, detail,
                 "SECURITY LABEL");
    // Every backend re-reads this relation's labels (and its partitions' through their family).
    CacheInvalidateRelcacheByRelid(object->objectId);
}

}  // namespace

void pii_audit_register_label_provider(void) {
    register_label_provider("pii", pii_label_hook);
    prev_object_access = object_access_hook;
    object_access_hook = on_object_access;
}

// pii_audit._record_removal(relid, relation, events, detail): called by pii_audit's removal of
// trail partitions just before the DROP, in the same transaction. The event goes into the queue
// when the transaction ends, if the DROP happened: as completed if it committed, as failed if
// it did not.
extern "C" {
PGDLLEXPORT Datum pii_audit_record_removal(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_record_removal);
}

Datum pii_audit_record_removal(PG_FUNCTION_ARGS) {
    Oid relid = PG_GETARG_OID(0);
    char* relation = text_to_cstring(PG_GETARG_TEXT_PP(1));
    int64 events = PG_GETARG_INT64(2);
    char* detail = text_to_cstring(PG_GETARG_TEXT_PP(3));
    if (events < 0)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("a removal cannot remove %lld events", static_cast<long long>(events))));
    if (announced_removal(relid) != nullptr)
        ereport(ERROR, (errcode(ERRCODE_DUPLICATE_OBJECT),
                        errmsg("the removal of %s is already recorded", relation)));
    PendingLabelChange* removal = new_pending(pii_audit::EventKind::kRemoval, relid, relation,
                                              detail, "REMOVE EVENTS");
    removal->row_count = events;
    PG_RETURN_VOID();
}
