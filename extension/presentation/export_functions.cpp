// SQL-callable formatting for the SIEM export (pii_audit.export, export_alerts and the export
// views): a row of pii_audit.events or of pii_audit.alert_events becomes one line of text in a
// SIEM format (include/pii_audit/siem_format.h). PostgreSQL work (arguments, encoding, arrays)
// happens first, into plain views of palloc'd memory; then one cpp_call formats; then the line is
// copied into a text datum. No C++ object with a destructor lives across a PostgreSQL call.
// PostgreSQL-free headers first (see pg_free.h); the blank lines keep clang-format from sorting
// them after postgres.h.
#include "pii_audit/siem_format.h"
#include "pii_audit/trail_group.h"

#include "pii_audit_internal.h"

#include "boundary.h"

extern "C" {
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inet.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

PGDLLEXPORT Datum pii_audit_check_export_format(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum pii_audit_format_event(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum pii_audit_format_alert_event(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum pii_audit_export(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_export);
PGDLLEXPORT Datum pii_audit_events_after(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_events_after);
PG_FUNCTION_INFO_V1(pii_audit_check_export_format);
PG_FUNCTION_INFO_V1(pii_audit_format_event);
PG_FUNCTION_INFO_V1(pii_audit_format_alert_event);
PGDLLEXPORT Datum pii_audit_server_name(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_server_name);
}

#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

namespace {

using pii_audit::siem::Format;

constexpr int64 kUnixEpochOffsetMicros =
    static_cast<int64>(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;

int64 unix_micros(TimestampTz t) { return t + kUnixEpochOffsetMicros; }

// The text of a datum as UTF-8 (the audit database's encoding converted; a no-op in a UTF-8 or
// SQL_ASCII database). The formatter repairs whatever is still not UTF-8.
std::string_view utf8_text(Datum d) {
    text* t = DatumGetTextPP(d);
    const int len = static_cast<int>(VARSIZE_ANY_EXHDR(t));
    const char* data = VARDATA_ANY(t);
    char* converted = pg_server_to_any(data, len, PG_UTF8);
    if (converted == data) return std::string_view(data, static_cast<size_t>(len));
    return std::string_view(converted, strlen(converted));
}

std::optional<std::string_view> opt_text(FunctionCallInfo fcinfo, int arg) {
    if (PG_ARGISNULL(arg)) return std::nullopt;
    return utf8_text(PG_GETARG_DATUM(arg));
}

template <class T>
std::optional<T> opt_int(FunctionCallInfo fcinfo, int arg) {
    if (PG_ARGISNULL(arg)) return std::nullopt;
    if constexpr (sizeof(T) == 8)
        return static_cast<T>(PG_GETARG_INT64(arg));
    else
        return static_cast<T>(PG_GETARG_INT32(arg));
}

std::optional<bool> opt_bool(FunctionCallInfo fcinfo, int arg) {
    if (PG_ARGISNULL(arg)) return std::nullopt;
    return PG_GETARG_BOOL(arg);
}

// text[] as views (NULL items are left out).
std::optional<pii_audit::siem::TextList> opt_text_list(FunctionCallInfo fcinfo, int arg) {
    if (PG_ARGISNULL(arg)) return std::nullopt;
    ArrayType* array = PG_GETARG_ARRAYTYPE_P(arg);
    Datum* items;
    bool* nulls;
    int n;
    deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT, &items, &nulls, &n);
    auto* views =
        static_cast<std::string_view*>(palloc(sizeof(std::string_view) * (n > 0 ? n : 1)));
    size_t kept = 0;
    for (int i = 0; i < n; ++i)
        if (!nulls[i]) new (&views[kept++]) std::string_view(utf8_text(items[i]));
    return pii_audit::siem::TextList{views, kept};
}

// bigint[] (NULL items are left out).
pii_audit::siem::IdList id_list(Datum d) {
    ArrayType* array = DatumGetArrayTypeP(d);
    Datum* items;
    bool* nulls;
    int n;
    deconstruct_array(array, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &items,
                      &nulls, &n);
    auto* ids = static_cast<std::int64_t*>(palloc(sizeof(std::int64_t) * (n > 0 ? n : 1)));
    size_t kept = 0;
    for (int i = 0; i < n; ++i)
        if (!nulls[i]) ids[kept++] = DatumGetInt64(items[i]);
    return pii_audit::siem::IdList{ids, kept};
}

[[noreturn]] void unknown_format(const char* name) {
    ereport(ERROR,
            (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("unknown export format \"%s\"", name),
             errhint("The formats are %s.", pii_audit::siem::kFormatNames)));
}

Format format_arg(FunctionCallInfo fcinfo, int arg) {
    if (PG_ARGISNULL(arg))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("the export format must not be NULL"),
                        errhint("The formats are %s.", pii_audit::siem::kFormatNames)));
    text* t = PG_GETARG_TEXT_PP(arg);
    Format format;
    if (!pii_audit::siem::parse_format(std::string_view(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)),
                                       &format))
        unknown_format(text_to_cstring(t));
    return format;
}

[[noreturn]] void missing(const char* what) {
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                    errmsg("pii_audit: cannot export an event without %s", what)));
}

// Where the lines come from: this server (pii_audit.server_name, cluster_name or host name).
pii_audit::siem::Origin origin() {
    return pii_audit::siem::Origin{pii_audit_local_server_name(), PII_AUDIT_VERSION};
}

// The line, formatted into a buffer kept for the backend's life (no destructor to skip).
template <class Fill>
text* format_line(Fill&& fill) {
    static std::string* buffer = nullptr;
    char failure[256];
    if (!pii_audit::boundary::cpp_call(
            "pii_audit: formatting an export line",
            [&] {
                if (buffer == nullptr) buffer = new std::string();
                buffer->clear();
                fill(*buffer);
            },
            failure, sizeof failure))
        ereport(ERROR, (errmsg("%s", failure)));
    return cstring_to_text_with_len(buffer->data(), static_cast<int>(buffer->size()));
}

}  // namespace

// _check_export_format(format text) RETURNS void: the error export() gives for a bad format,
// before it reads anything.
Datum pii_audit_check_export_format(PG_FUNCTION_ARGS) {
    (void)format_arg(fcinfo, 0);
    PG_RETURN_VOID();
}

// _format_event(format, event_id, event_time, recorded_at, kind, status, database_name,
//   session_user_name, current_user_name, end_user, application_name, client_addr, backend_pid,
//   command, relation, columns, categories, row_count, query_id, query_text, query_truncated,
//   nesting_level, detail, subject_count, subjects, subjects_truncated, subject_count_estimated,
//   server_name) RETURNS text: the columns of pii_audit.events, in its order.
Datum pii_audit_format_event(PG_FUNCTION_ARGS) {
    const Format format = format_arg(fcinfo, 0);
    if (PG_ARGISNULL(1)) missing("an event_id");
    if (PG_ARGISNULL(2)) missing("an event_time");
    if (PG_ARGISNULL(4)) missing("a kind");
    pii_audit::siem::TrailEvent e;
    e.event_id = PG_GETARG_INT64(1);
    e.event_time = unix_micros(PG_GETARG_TIMESTAMPTZ(2));
    if (!PG_ARGISNULL(3)) e.recorded_at = unix_micros(PG_GETARG_TIMESTAMPTZ(3));
    text* kind = PG_GETARG_TEXT_PP(4);
    if (!pii_audit::siem::parse_event_kind(
            std::string_view(VARDATA_ANY(kind), VARSIZE_ANY_EXHDR(kind)), &e.kind))
        ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                        errmsg("pii_audit: event %lld has an unknown kind \"%s\"",
                               static_cast<long long>(e.event_id), text_to_cstring(kind))));
    e.status = PG_ARGISNULL(5) ? std::string_view() : utf8_text(PG_GETARG_DATUM(5));
    e.database_name = opt_text(fcinfo, 6);
    e.session_user_name = opt_text(fcinfo, 7);
    e.current_user_name = opt_text(fcinfo, 8);
    e.end_user = opt_text(fcinfo, 9);
    e.application_name = opt_text(fcinfo, 10);
    if (!PG_ARGISNULL(11)) {
        // host(): the address without a netmask
        text* addr = DatumGetTextPP(DirectFunctionCall1(network_host, PG_GETARG_DATUM(11)));
        e.client_addr = std::string_view(VARDATA_ANY(addr), VARSIZE_ANY_EXHDR(addr));
    }
    e.backend_pid = opt_int<std::int32_t>(fcinfo, 12);
    e.command = opt_text(fcinfo, 13);
    e.relation = opt_text(fcinfo, 14);
    e.columns = opt_text_list(fcinfo, 15);
    e.categories = opt_text_list(fcinfo, 16);
    e.row_count = opt_int<std::int64_t>(fcinfo, 17);
    e.query_id = opt_int<std::int64_t>(fcinfo, 18);
    e.query_text = opt_text(fcinfo, 19);
    e.query_truncated = opt_bool(fcinfo, 20);
    e.nesting_level = opt_int<std::int32_t>(fcinfo, 21);
    e.detail = opt_text(fcinfo, 22);
    e.subject_count = opt_int<std::int64_t>(fcinfo, 23);
    if (!PG_ARGISNULL(24)) e.subjects = id_list(PG_GETARG_DATUM(24));
    e.subjects_truncated = opt_bool(fcinfo, 25);
    e.subject_count_estimated = opt_bool(fcinfo, 26);
    if (PG_NARGS() > 27) e.server_name = opt_text(fcinfo, 27);
    const auto from = origin();
    PG_RETURN_TEXT_P(format_line(
        [&](std::string& out) { pii_audit::siem::format_event(format, from, e, out); }));
}

// _format_alert_event(format, alert_event_id, change, event_time, alert_id, alert_time,
//   raised_at, actor, peer_group, detector, score, severity, explanation, evidence, status,
//   status_by, status_at, note) RETURNS text
Datum pii_audit_format_alert_event(PG_FUNCTION_ARGS) {
    const Format format = format_arg(fcinfo, 0);
    for (int arg : {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14})
        if (PG_ARGISNULL(arg)) missing("one of the alert's required columns");
    pii_audit::siem::AlertEvent a;
    a.alert_event_id = PG_GETARG_INT64(1);
    text* change = PG_GETARG_TEXT_PP(2);
    const std::string_view change_name(VARDATA_ANY(change), VARSIZE_ANY_EXHDR(change));
    if (change_name == "raised")
        a.change = pii_audit::siem::AlertChange::raised;
    else if (change_name == "status")
        a.change = pii_audit::siem::AlertChange::status;
    else
        ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                        errmsg("pii_audit: alert event %lld has an unknown change \"%s\"",
                               static_cast<long long>(a.alert_event_id), text_to_cstring(change))));
    a.event_time = unix_micros(PG_GETARG_TIMESTAMPTZ(3));
    a.alert_id = PG_GETARG_INT64(4);
    a.alert_time = unix_micros(PG_GETARG_TIMESTAMPTZ(5));
    a.raised_at = unix_micros(PG_GETARG_TIMESTAMPTZ(6));
    a.actor = utf8_text(PG_GETARG_DATUM(7));
    a.peer_group = utf8_text(PG_GETARG_DATUM(8));
    a.detector = utf8_text(PG_GETARG_DATUM(9));
    a.score = PG_GETARG_INT32(10);
    a.severity = utf8_text(PG_GETARG_DATUM(11));
    a.explanation = utf8_text(PG_GETARG_DATUM(12));
    a.evidence = id_list(PG_GETARG_DATUM(13));
    a.status = utf8_text(PG_GETARG_DATUM(14));
    a.status_by = opt_text(fcinfo, 15);
    if (!PG_ARGISNULL(16)) a.status_at = unix_micros(PG_GETARG_TIMESTAMPTZ(16));
    a.note = opt_text(fcinfo, 17);
    const auto from = origin();
    PG_RETURN_TEXT_P(format_line(
        [&](std::string& out) { pii_audit::siem::format_alert(format, from, a, out); }));
}

// ---------------------------------------------------------------- export() straight from groups
// export() reads the groups of the events it returns
// through their index on first_event_id, in order (their id ranges do not overlap, so their
// events come out in id order), with their session and statement, and formats each group's
// events from its payload in one go: no row per event and column is built on the way, which is
// what makes export() cost about what events_after() costs.
namespace {

// What a group's events share, copied out of one SPI row (PostgreSQL memory, plain views).
struct GroupRow {
    int64 first_event_id;
    TimestampTz min_time;
    std::string_view payload;
    pii_audit::siem::TrailEvent shared;  // session and statement fields, kind, recorded_at
};

// Lines made for one group: kept for the backend's life, reused (no destructor runs).
struct GroupLines {
    std::string text;
    std::vector<size_t> ends;
    std::vector<int64> ids;
    std::vector<std::int64_t> hashes;
    const char* damage = nullptr;
};

GroupLines* group_lines = nullptr;

// A pull's plan, kept for the backend's life (see prepare_window_plan).
struct WindowPlan {
    SPIPlanPtr plan = nullptr;
    Oid array_type = InvalidOid;  // of the trail_groups rows it was made for
};
WindowPlan export_plan;

std::optional<std::string_view> spi_text(HeapTuple tuple, TupleDesc desc, int column) {
    bool isnull;
    Datum d = SPI_getbinval(tuple, desc, column, &isnull);
    if (isnull) return std::nullopt;
    return utf8_text(d);
}

std::optional<pii_audit::siem::TextList> spi_text_list(HeapTuple tuple, TupleDesc desc,
                                                       int column) {
    bool isnull;
    Datum d = SPI_getbinval(tuple, desc, column, &isnull);
    if (isnull) return std::nullopt;
    Datum* items;
    bool* nulls;
    int n;
    deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT, &items, &nulls, &n);
    auto* views =
        static_cast<std::string_view*>(palloc(sizeof(std::string_view) * (n > 0 ? n : 1)));
    size_t kept = 0;
    for (int i = 0; i < n; ++i)
        if (!nulls[i]) new (&views[kept++]) std::string_view(utf8_text(items[i]));
    return pii_audit::siem::TextList{views, kept};
}

GroupRow read_group(HeapTuple tuple, TupleDesc desc) {
    GroupRow row;
    bool isnull;
    row.first_event_id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
    row.min_time = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 2, &isnull));
    bytea* payload = DatumGetByteaPP(SPI_getbinval(tuple, desc, 3, &isnull));
    row.payload = std::string_view(VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload));
    pii_audit::siem::TrailEvent& e = row.shared;
    Datum recorded = SPI_getbinval(tuple, desc, 4, &isnull);
    if (!isnull) e.recorded_at = unix_micros(DatumGetTimestampTz(recorded));
    text* kind = DatumGetTextPP(SPI_getbinval(tuple, desc, 5, &isnull));
    if (!pii_audit::siem::parse_event_kind(
            std::string_view(VARDATA_ANY(kind), VARSIZE_ANY_EXHDR(kind)), &e.kind))
        ereport(ERROR,
                (errcode(ERRCODE_DATA_CORRUPTED),
                 errmsg("pii_audit: the trail group of event %lld has an unknown kind \"%s\"",
                        static_cast<long long>(row.first_event_id), text_to_cstring(kind))));
    Datum pid = SPI_getbinval(tuple, desc, 6, &isnull);
    if (!isnull) e.backend_pid = DatumGetInt32(pid);
    Datum nesting = SPI_getbinval(tuple, desc, 7, &isnull);
    if (!isnull) e.nesting_level = DatumGetInt32(nesting);
    e.database_name = spi_text(tuple, desc, 8);
    e.session_user_name = spi_text(tuple, desc, 9);
    e.current_user_name = spi_text(tuple, desc, 10);
    e.end_user = spi_text(tuple, desc, 11);
    e.application_name = spi_text(tuple, desc, 12);
    e.client_addr = spi_text(tuple, desc, 13);
    e.command = spi_text(tuple, desc, 14);
    e.relation = spi_text(tuple, desc, 15);
    e.columns = spi_text_list(tuple, desc, 16);
    e.categories = spi_text_list(tuple, desc, 17);
    Datum query_id = SPI_getbinval(tuple, desc, 18, &isnull);
    if (!isnull) e.query_id = DatumGetInt64(query_id);
    e.query_text = spi_text(tuple, desc, 19);
    Datum truncated = SPI_getbinval(tuple, desc, 20, &isnull);
    if (!isnull) e.query_truncated = DatumGetBool(truncated);
    e.server_name = spi_text(tuple, desc, 21);
    return row;
}

// PostgreSQL-free: decode the payload, format the events in (after, upto].
void format_group(Format format, const pii_audit::siem::Origin& from, const GroupRow& row,
                  int64 after, int64 upto, GroupLines& out) {
    out.text.clear();
    out.ends.clear();
    out.ids.clear();
    out.damage = nullptr;
    pii_audit::GroupDecoder decoder(row.payload, row.min_time);
    pii_audit::GroupEvent ge;
    pii_audit::siem::TrailEvent e = row.shared;
    for (int64 i = 0; decoder.next(ge); ++i) {
        const int64 id = row.first_event_id + i;
        if (id <= after) continue;
        if (id > upto) break;
        const char* status = pii_audit::group_status_name(ge.status);
        if (status == nullptr) {
            out.damage = "an event has an unknown status";
            return;
        }
        e.event_id = id;
        e.event_time = unix_micros(ge.event_time);
        e.status = status;
        e.row_count = ge.has_row_count ? std::optional<std::int64_t>(ge.row_count) : std::nullopt;
        e.detail = ge.has_detail ? std::optional<std::string_view>(ge.detail) : std::nullopt;
        if (ge.tracked) {
            const size_t n = ge.subjects.size() / 8;
            out.hashes.resize(n);
            for (size_t k = 0; k < n; ++k) out.hashes[k] = pii_audit::subject_at(ge.subjects, k);
            e.subject_count = ge.subject_count;
            e.subjects = pii_audit::siem::IdList{out.hashes.data(), n};
            e.subjects_truncated = ge.truncated;
            e.subject_count_estimated = ge.estimated;
        } else {
            e.subject_count.reset();
            e.subjects.reset();
            e.subjects_truncated.reset();
            e.subject_count_estimated.reset();
        }
        pii_audit::siem::format_event(format, from, e, out.text);
        out.ends.push_back(out.text.size());
        out.ids.push_back(id);
    }
    if (decoder.error() != nullptr) out.damage = decoder.error();
}

}  // namespace

namespace {

// The groups that may hold events in (after, upto], in id order (a group holds at most
// kMaxGroupEvents events, so none starts before after - 4096), fetched from each month's index
// (pii_audit_groups_in_ids) and joined with their session and statement by the plan: its first
// three columns must be first_event_id, min_time and payload. emit(tuple, desc) runs per group in
// a memory context reset after it, and returns how many events it added to the result.
template <class Emit>
int64 scan_groups(SPIPlanPtr plan, int64 after, int64 upto, Emit&& emit) {
    const int64 lo = after < PG_INT64_MIN + 4096 ? PG_INT64_MIN : after - 4096;
    Datum groups = pii_audit_groups_in_ids(lo, upto, after == PG_INT64_MAX ? after : after + 1);
    Datum args[1] = {groups};
    Portal cursor = SPI_cursor_open(nullptr, plan, args, nullptr, true);
    MemoryContext per_group = AllocSetContextCreate(CurrentMemoryContext, "pii_audit pull group",
                                                    ALLOCSET_DEFAULT_SIZES);
    int64 emitted = 0;
    for (;;) {
        SPI_cursor_fetch(cursor, true, 256);
        if (SPI_processed == 0) break;
        for (uint64 r = 0; r < SPI_processed; ++r) {
            MemoryContext caller = MemoryContextSwitchTo(per_group);
            emitted += emit(SPI_tuptable->vals[r], SPI_tuptable->tupdesc);
            MemoryContextSwitchTo(caller);
            MemoryContextReset(per_group);
        }
        SPI_freetuptable(SPI_tuptable);
    }
    SPI_cursor_close(cursor);
    MemoryContextDelete(per_group);
    pfree(DatumGetPointer(groups));
    return emitted;
}

// A plan kept for the backend's life: the groups handed in (an array of trail_groups rows) with
// their session and statement, in id order, `columns` being what the caller reads of them after
// first_event_id, min_time and payload. It reads no month of the trail, so it plans in
// microseconds however many months there are.
SPIPlanPtr prepare_window_plan(const char* columns, Oid array_type) {
    char sql[2048];
    snprintf(sql, sizeof sql,
             "SELECT g.first_event_id, g.min_time, g.payload, %s"
             " FROM pg_catalog.unnest($1) g"
             " LEFT JOIN pii_audit.trail_sessions s ON s.session_id OPERATOR(pg_catalog.=) "
             "g.session_id"
             " LEFT JOIN pii_audit.trail_statements st"
             "   ON st.statement_id OPERATOR(pg_catalog.=) g.statement_id"
             " ORDER BY g.first_event_id",
             columns);
    Oid types[1] = {array_type};
    SPIPlanPtr plan = SPI_prepare_cursor(sql, 1, types, CURSOR_OPT_GENERIC_PLAN);
    if (plan == nullptr || SPI_keepplan(plan) != 0)
        elog(ERROR, "pii_audit: could not prepare the query of a pull by id");
    return plan;
}

// The kept plan, made again when the trail's row type is not the one it was made for (the
// extension dropped and created again in this session).
SPIPlanPtr window_plan(WindowPlan* kept, const char* columns) {
    const Oid array_type = pii_audit_groups_array_type();
    if (kept->plan != nullptr && kept->array_type == array_type) return kept->plan;
    if (kept->plan != nullptr) {
        SPI_freeplan(kept->plan);
        kept->plan = nullptr;
    }
    kept->plan = prepare_window_plan(columns, array_type);
    kept->array_type = array_type;
    return kept->plan;
}

// The lines of the events in (after, upto] into the result; returns how many.
int64 export_window(Format format, const pii_audit::siem::Origin& from, int64 after, int64 upto,
                    ReturnSetInfo* rsinfo) {
    SPIPlanPtr plan = window_plan(&export_plan,
            "g.recorded_at, g.kind, g.backend_pid, g.nesting_level, s.database_name,"
            " s.session_user_name, s.current_user_name, s.end_user, s.application_name,"
            " pg_catalog.host(s.client_addr), st.command, st.relation, st.columns, st.categories,"
            " st.query_id, st.query_text, st.query_truncated, s.server_name");
    char failure[256];
    return scan_groups(plan, after, upto, [&](HeapTuple tuple, TupleDesc desc) -> int64 {
        const GroupRow row = read_group(tuple, desc);
        if (!pii_audit::boundary::cpp_call(
                "pii_audit: formatting an export line",
                [&] {
                    if (group_lines == nullptr) group_lines = new GroupLines();
                    format_group(format, from, row, after, upto, *group_lines);
                },
                failure, sizeof failure))
            ereport(ERROR, (errmsg("%s", failure)));
        if (group_lines->damage != nullptr)
            pii_audit_group_damaged(row.first_event_id, group_lines->damage);
        size_t begin = 0;
        for (size_t k = 0; k < group_lines->ids.size(); ++k) {
            const size_t end = group_lines->ends[k];
            Datum values[2] = {
                Int64GetDatum(group_lines->ids[k]),
                PointerGetDatum(cstring_to_text_with_len(group_lines->text.data() + begin,
                                                         static_cast<int>(end - begin)))};
            bool nulls[2] = {false, false};
            tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
            begin = end;
        }
        return static_cast<int64>(group_lines->ids.size());
    });
}

// Calls window(after, upto) for the next max_events ids after after_event_id, under SPI: before
// the oldest event (0, or events removed) it starts at the oldest; ids have no gaps, but a month
// dropped by hand leaves a hole, and an empty window with events after it moves on to them, so
// that a collector never stops short of the end.
template <class Window>
void pull_after(int64 after_event_id, int32 max_events, Window&& window) {
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "pii_audit: SPI_connect failed");
    int64 start = after_event_id;
    const int64 oldest = pii_audit_next_group_id(PG_INT64_MIN);
    if (oldest >= 0 && start < oldest - 1) start = oldest - 1;
    while (oldest >= 0) {
        const int64 upto = start > PG_INT64_MAX - max_events ? PG_INT64_MAX : start + max_events;
        if (window(start, upto) > 0 || upto == PG_INT64_MAX) break;
        const int64 next = pii_audit_next_group_id(upto);
        if (next < 0) break;
        start = next - 1;
    }
    SPI_finish();
}

}  // namespace

// export(after_event_id bigint, max_events integer DEFAULT 10000, format text DEFAULT 'json')
//   RETURNS TABLE (event_id bigint, line text): the next max_events events after an event id,
// one line each, in id order. C, not PL/pgSQL: a PL/pgSQL function would copy every line into a
// second result set, which cost twice the formatting.
Datum pii_audit_export(PG_FUNCTION_ARGS) {
    if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("after_event_id, max_events and format must not be NULL"),
                        errhint("Pass 0 as after_event_id to start at the oldest event.")));
    const int64 after_event_id = PG_GETARG_INT64(0);
    const int32 max_events = PG_GETARG_INT32(1);
    if (after_event_id < 0)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("after_event_id must be 0 or more, not %lld",
                               static_cast<long long>(after_event_id)),
                        errhint("Pass 0 to start at the oldest event, or the last event_id "
                                "received.")));
    if (max_events < 1 || max_events > 1000000)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("max_events must be between 1 and 1000000, not %d", max_events)));
    const Format format = format_arg(fcinfo, 2);
    InitMaterializedSRF(fcinfo, 0);
    auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    if (rsinfo->setDesc->natts != 2)
        elog(ERROR, "pii_audit_export: the function must return 2 columns");
    const auto from = origin();
    pull_after(after_event_id, max_events, [&](int64 after, int64 upto) {
        return export_window(format, from, after, upto, rsinfo);
    });
    return static_cast<Datum>(0);
}

namespace {

// The columns of pii_audit.events and where events_after takes each from: the group query's
// column (1-based, after first_event_id, min_time and payload) or the event.
enum class EventColumn { kGroup, kEventId, kEventTime, kStatus, kRowCount, kDetail, kSubjectCount,
                         kSubjects, kSubjectsTruncated, kSubjectCountEstimated };
struct EventsColumn {
    const char* name;
    EventColumn from;
    int group_column;
};
constexpr EventsColumn kEventsColumns[] = {
    {"event_id", EventColumn::kEventId, 0},
    {"event_time", EventColumn::kEventTime, 0},
    {"recorded_at", EventColumn::kGroup, 4},
    {"kind", EventColumn::kGroup, 5},
    {"status", EventColumn::kStatus, 0},
    {"database_name", EventColumn::kGroup, 8},
    {"session_user_name", EventColumn::kGroup, 9},
    {"current_user_name", EventColumn::kGroup, 10},
    {"end_user", EventColumn::kGroup, 11},
    {"application_name", EventColumn::kGroup, 12},
    {"client_addr", EventColumn::kGroup, 13},
    {"backend_pid", EventColumn::kGroup, 6},
    {"command", EventColumn::kGroup, 14},
    {"relation", EventColumn::kGroup, 15},
    {"relation_oid", EventColumn::kGroup, 16},
    {"columns", EventColumn::kGroup, 17},
    {"categories", EventColumn::kGroup, 18},
    {"row_count", EventColumn::kRowCount, 0},
    {"query_id", EventColumn::kGroup, 19},
    {"query_text", EventColumn::kGroup, 20},
    {"query_truncated", EventColumn::kGroup, 21},
    {"nesting_level", EventColumn::kGroup, 7},
    {"detail", EventColumn::kDetail, 0},
    {"subject_count", EventColumn::kSubjectCount, 0},
    {"subjects", EventColumn::kSubjects, 0},
    {"subjects_truncated", EventColumn::kSubjectsTruncated, 0},
    {"subject_count_estimated", EventColumn::kSubjectCountEstimated, 0},
    {"server_name", EventColumn::kGroup, 22},
};
constexpr int kMaxEventsColumns = 64;

WindowPlan events_plan;

// The rows of the events in (after, upto] into the result (columns[i]: what column i is).
int64 events_window(int64 after, int64 upto, ReturnSetInfo* rsinfo, const EventsColumn* const* columns) {
    SPIPlanPtr plan = window_plan(&events_plan,
            "g.recorded_at, g.kind, g.backend_pid, g.nesting_level, s.database_name,"
            " s.session_user_name, s.current_user_name, s.end_user, s.application_name,"
            " s.client_addr, st.command, st.relation, st.relation_oid, st.columns, st.categories,"
            " st.query_id, st.query_text, st.query_truncated, s.server_name");
    const int natts = rsinfo->setDesc->natts;
    return scan_groups(plan, after, upto, [&](HeapTuple tuple, TupleDesc desc) -> int64 {
        Datum group[23];
        bool group_null[23];
        if (desc->natts != 22)
            elog(ERROR, "pii_audit_events_after: the group query has %d columns", desc->natts);
        heap_deform_tuple(tuple, desc, group + 1, group_null + 1);
        const int64 first_event_id = DatumGetInt64(group[1]);
        bytea* payload = DatumGetByteaPP(group[3]);
        // PostgreSQL-free decoding; string_views into the payload, no allocation.
        pii_audit::GroupDecoder decoder(
            std::string_view(VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload)),
            DatumGetTimestampTz(group[2]));
        pii_audit::GroupEvent e;
        Datum values[kMaxEventsColumns];
        bool nulls[kMaxEventsColumns];
        Datum* hashes = nullptr;
        int hashes_capacity = 0;
        int64 emitted = 0;
        for (int64 i = 0; decoder.next(e); ++i) {
            const int64 id = first_event_id + i;
            if (id <= after) continue;
            if (id > upto) break;
            const char* status = pii_audit::group_status_name(e.status);
            if (status == nullptr)
                pii_audit_group_damaged(first_event_id, "an event has an unknown status");
            for (int c = 0; c < natts; ++c) {
                nulls[c] = false;
                switch (columns[c]->from) {
                    case EventColumn::kGroup:
                        values[c] = group[columns[c]->group_column];
                        nulls[c] = group_null[columns[c]->group_column];
                        break;
                    case EventColumn::kEventId: values[c] = Int64GetDatum(id); break;
                    case EventColumn::kEventTime: values[c] = TimestampTzGetDatum(e.event_time); break;
                    case EventColumn::kStatus: values[c] = CStringGetTextDatum(status); break;
                    case EventColumn::kRowCount:
                        values[c] = Int64GetDatum(e.row_count);
                        nulls[c] = !e.has_row_count;
                        break;
                    case EventColumn::kDetail:
                        nulls[c] = !e.has_detail;
                        if (e.has_detail)
                            values[c] = PointerGetDatum(cstring_to_text_with_len(
                                e.detail.data(), static_cast<int>(e.detail.size())));
                        break;
                    case EventColumn::kSubjectCount:
                        values[c] = Int64GetDatum(e.subject_count);
                        nulls[c] = !e.tracked;
                        break;
                    case EventColumn::kSubjects:
                        nulls[c] = !e.tracked;
                        if (e.tracked)
                            values[c] = pii_audit_subjects_array(e.subjects, &hashes,
                                                                 &hashes_capacity);
                        break;
                    case EventColumn::kSubjectsTruncated:
                        values[c] = BoolGetDatum(e.truncated);
                        nulls[c] = !e.tracked;
                        break;
                    case EventColumn::kSubjectCountEstimated:
                        values[c] = BoolGetDatum(e.estimated);
                        nulls[c] = !e.tracked;
                        break;
                }
            }
            tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
            ++emitted;
        }
        if (decoder.error() != nullptr) pii_audit_group_damaged(first_event_id, decoder.error());
        return emitted;
    });
}

}  // namespace

// events_after(after_event_id bigint, max_events integer DEFAULT 10000) RETURNS SETOF
// pii_audit.events: the next events after an id, in id order. C, like export(): the groups are
// read through a plan kept for the backend and unpacked straight into the result (in PL/pgSQL
// the rows went through two result sets and a function call per group).
Datum pii_audit_events_after(PG_FUNCTION_ARGS) {
    if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("after_event_id and max_events must not be NULL"),
                        errhint("Pass 0 to start at the oldest event.")));
    const int64 after_event_id = PG_GETARG_INT64(0);
    const int32 max_events = PG_GETARG_INT32(1);
    if (max_events < 1 || max_events > 1000000)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("max_events must be between 1 and 1000000, not %d", max_events)));
    InitMaterializedSRF(fcinfo, 0);
    auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    const TupleDesc desc = rsinfo->setDesc;
    if (desc->natts > kMaxEventsColumns)
        elog(ERROR, "pii_audit_events_after: pii_audit.events has more columns than it knows");
    const EventsColumn* columns[kMaxEventsColumns];
    for (int c = 0; c < desc->natts; ++c) {
        const char* name = NameStr(TupleDescAttr(desc, c)->attname);
        columns[c] = nullptr;
        for (const EventsColumn& known : kEventsColumns)
            if (strcmp(known.name, name) == 0) columns[c] = &known;
        if (columns[c] == nullptr)
            elog(ERROR, "pii_audit_events_after: pii_audit.events has a column it does not know: %s",
                 name);
    }
    pull_after(after_event_id, max_events, [&](int64 after, int64 upto) {
        return events_window(after, upto, rsinfo, columns);
    });
    return static_cast<Datum>(0);
}

// The server name every exported line carries (for the digest records of export_digests).
extern "C" Datum pii_audit_server_name(PG_FUNCTION_ARGS) {
    (void)fcinfo;
    PG_RETURN_TEXT_P(cstring_to_text(origin().server_name.data()));
}
