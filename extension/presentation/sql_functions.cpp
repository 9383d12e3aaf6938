// SQL-callable functions behind the extension's views.
#include "pii_audit_internal.h"

extern "C" {
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

PGDLLEXPORT Datum pii_audit_require_preload(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum pii_audit_status(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_require_preload);
PG_FUNCTION_INFO_V1(pii_audit_status);
}

// Called first thing by the install script: auditing that is not loaded at server start would
// silently record nothing, so CREATE EXTENSION refuses instead.
Datum pii_audit_require_preload(PG_FUNCTION_ARGS) {
    (void)fcinfo;
    if (!pii_audit_loaded_at_startup)
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("pii_audit must be loaded at server start"),
                 errdetail("It is not in shared_preload_libraries, so no read would be audited."),
                 errhint("Add pii_audit to shared_preload_libraries in postgresql.conf "
                         "(shared_preload_libraries = 'pii_audit'), restart the server, then run "
                         "CREATE EXTENSION pii_audit again.")));
    PG_RETURN_VOID();
}

Datum pii_audit_status(PG_FUNCTION_ARGS) {
    TupleDesc tupdesc;
    if (get_call_result_type(fcinfo, nullptr, &tupdesc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "pii_audit_status: return type must be a row type");
    PiiAuditStatus status;
    pii_audit_read_status(&status);

    const char* state;
    if (!pii_audit_loaded_at_startup)
        state = "not loaded";
    else if (!OidIsValid(get_database_oid(pii_audit_database, true)))
        state = "audit database missing";
    else if (status.worker_pid == 0)
        state = "worker not running";
    else if (status.worker_problem[0] != '\0')
        state = status.worker_problem;
    else if (status.stalled_since != 0)
        state = "worker not draining the queue: events are dropped and counted";
    else if (!status.worker_ready)
        state = "worker waiting for CREATE EXTENSION in the audit database";
    else
        state = "running";

    // An extension not yet updated to 0.3.0 has the first 11 columns; heap_form_tuple reads as
    // many as the row type has.
    Datum values[15];
    bool nulls[15] = {};
    values[0] = Int64GetDatum(static_cast<int64>(status.capacity));
    values[1] = Int64GetDatum(static_cast<int64>(status.depth));
    values[2] = Int64GetDatum(static_cast<int64>(status.enqueued));
    values[3] = Int64GetDatum(static_cast<int64>(status.persisted));
    values[4] = Int64GetDatum(static_cast<int64>(status.dropped));
    values[5] = Int64GetDatum(static_cast<int64>(status.capture_errors));
    values[6] = Int32GetDatum(status.worker_pid);
    nulls[6] = status.worker_pid == 0;
    values[7] = TimestampTzGetDatum(status.last_flush);
    nulls[7] = status.last_flush == 0;
    values[8] = CStringGetTextDatum(state);
    values[9] = CStringGetTextDatum(pii_audit_database ? pii_audit_database : "");
    values[10] = BoolGetDatum(pii_audit_enabled);
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

namespace {

void require_subject_key() {
    if (!pii_audit_subject_key_loaded())
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("pii_audit has no subject key, so subject hashes cannot be computed"),
                 errdetail("The key file pii_audit_subject.key in the data directory was missing, "
                           "unreadable or damaged when the server started; see the server log."),
                 errhint("Restore the key file from a backup and restart the server.")));
}

}  // namespace

// pii_audit.subject_hash(text): the hash events store for a subject identifier.
extern "C" {
PGDLLEXPORT Datum pii_audit_subject_hash_sql(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_subject_hash_sql);
}

Datum pii_audit_subject_hash_sql(PG_FUNCTION_ARGS) {
    require_subject_key();
    text* identifier = PG_GETARG_TEXT_PP(0);
    PG_RETURN_INT64(pii_audit_subject_hash(VARDATA_ANY(identifier), VARSIZE_ANY_EXHDR(identifier)));
}

// pii_audit._identify_subjects(relation regclass, key_column name, hashes bigint[])
//     RETURNS TABLE (subject_hash bigint, identifier text)
// Which of the hashes belong to a key value in the table: one row per hash named, with the
// identifier as the capture makes it. The table is read by a query (audited, with the caller's
// privileges) whose rows are hashed as they come: what breach_scope uses to name the people on
// its list (hashing through SQL cost about three times as much).
extern "C" {
#include "utils/array.h"
#include "utils/lsyscache.h"
PGDLLEXPORT Datum pii_audit_identify_subjects_sql(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_identify_subjects_sql);
}

namespace {

void put_identified(int64 hash, const char* identifier, size_t len, void* arg) {
    auto* rsinfo = static_cast<ReturnSetInfo*>(arg);
    Datum values[2] = {Int64GetDatum(hash),
                       PointerGetDatum(cstring_to_text_with_len(identifier, static_cast<int>(len)))};
    bool nulls[2] = {false, false};
    tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

}  // namespace

Datum pii_audit_identify_subjects_sql(PG_FUNCTION_ARGS) {
    require_subject_key();
    Oid relid = PG_GETARG_OID(0);
    const char* column = NameStr(*PG_GETARG_NAME(1));
    ArrayType* hashes = PG_GETARG_ARRAYTYPE_P(2);
    InitMaterializedSRF(fcinfo, 0);
    auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);

    char* relname = get_rel_name(relid);
    if (relname == nullptr)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
                        errmsg("pii_audit: relation with OID %u does not exist", relid)));
    AttrNumber attnum = get_attnum(relid, column);
    if (attnum == InvalidAttrNumber)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_COLUMN),
                        errmsg("pii_audit: column \"%s\" of \"%s\" does not exist", column, relname)));
    if (attnum < 0)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("pii_audit: \"%s\" is a system column, not a subject key", column)));

    Datum* items;
    bool* item_nulls;
    int n;
    deconstruct_array(hashes, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &items,
                      &item_nulls, &n);
    auto* wanted = static_cast<int64*>(palloc(sizeof(int64) * (n > 0 ? n : 1)));
    int nwanted = 0;
    for (int i = 0; i < n; ++i)
        if (!item_nulls[i]) wanted[nwanted++] = DatumGetInt64(items[i]);
    pii_audit_identify_subjects(relid, column, wanted, nwanted, put_identified, rsinfo);
    return static_cast<Datum>(0);
}

// Trigger on pii_audit.peer_groups and pii_audit.departed: once the transaction commits, the
// worker reloads both (an uncommitted change must not reach the scorer, a committed one must
// not wait for a timer).
extern "C" {
#include "access/xact.h"
#include "commands/trigger.h"
PGDLLEXPORT Datum pii_audit_scorer_inputs_changed(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_scorer_inputs_changed);
}

namespace {
bool scorer_inputs_dirty = false;
bool scorer_callback_registered = false;

void scorer_inputs_xact_callback(XactEvent event, void*) {
    if (event == XACT_EVENT_COMMIT && scorer_inputs_dirty) pii_audit_scorer_inputs_bump();
    if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
        event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
        scorer_inputs_dirty = false;
}
}  // namespace

Datum pii_audit_scorer_inputs_changed(PG_FUNCTION_ARGS) {
    if (!CALLED_AS_TRIGGER(fcinfo))
        ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                        errmsg("pii_audit._scorer_inputs_changed() may only be called as a trigger")));
    if (!scorer_callback_registered) {
        RegisterXactCallback(scorer_inputs_xact_callback, nullptr);
        scorer_callback_registered = true;
    }
    scorer_inputs_dirty = true;
    return PointerGetDatum(nullptr);
}

// pii_audit.scorer_status: what the worker's insider scoring is doing.
extern "C" {
PGDLLEXPORT Datum pii_audit_scorer_status(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_scorer_status);
}

Datum pii_audit_scorer_status(PG_FUNCTION_ARGS) {
    TupleDesc tupdesc;
    if (get_call_result_type(fcinfo, nullptr, &tupdesc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "pii_audit_scorer_status: return type must be a row type");
    ScorerStatus status;
    pii_audit_read_scorer_status(&status);
    // An extension not yet updated to 0.3.0 has the first 11 columns; heap_form_tuple reads as
    // many as the row type has.
    Datum values[15];
    bool nulls[15] = {};
    values[0] = CStringGetTextDatum(pii_audit_scoring ? status.state : "off");
    values[1] = Int64GetDatum(status.actors);
    values[2] = Int64GetDatum(status.peer_groups);
    values[3] = Int64GetDatum(status.relations);
    values[4] = Int64GetDatum(status.state_bytes);
    values[5] = Int64GetDatum(status.scored_upto);
    values[6] = Int64GetDatum(status.alerts_raised);
    values[7] = TimestampTzGetDatum(status.last_save);
    nulls[7] = status.last_save == 0;
    values[8] = TimestampTzGetDatum(status.relations_loaded_at);
    nulls[8] = status.relations_loaded_at == 0;
    values[9] = CStringGetTextDatum(status.last_error);
    nulls[9] = status.last_error[0] == '\0';
    values[10] = Int32GetDatum(pii_audit_alert_threshold);
    values[11] = Int64GetDatum(status.signals_held);
    values[12] = Int64GetDatum(status.held_raised);
    values[13] = Int64GetDatum(status.held_dropped);
    values[14] = Int64GetDatum(status.team_excused);
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
