// SQL-callable formatting for the SIEM export (pii_audit.export, export_alerts and the export
// views): a row of pii_audit.events or of pii_audit.alert_events becomes one line of text in a
// SIEM format (include/pii_audit/siem_format.h). PostgreSQL work (arguments, encoding, arrays)
// happens first, into plain views of palloc'd memory; then one cpp_call formats; then the line is
// copied into a text datum. No C++ object with a destructor lives across a PostgreSQL call.
// PostgreSQL-free headers first (see pg_free.h).
#include "pii_audit/siem_format.h"

#include "pii_audit_internal.h"

#include "boundary.h"

extern "C" {
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inet.h"
#include "utils/timestamp.h"

PGDLLEXPORT Datum pii_audit_check_export_format(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum pii_audit_format_event(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum pii_audit_format_alert_event(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_check_export_format);
PG_FUNCTION_INFO_V1(pii_audit_format_event);
PG_FUNCTION_INFO_V1(pii_audit_format_alert_event);
}

#include <unistd.h>

#include <cstring>
#include <string>

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
    auto* views = static_cast<std::string_view*>(palloc(sizeof(std::string_view) * (n > 0 ? n : 1)));
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
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("unknown export format \"%s\"", name),
                    errhint("The formats are %s.", pii_audit::siem::kFormatNames)));
}

Format format_arg(FunctionCallInfo fcinfo, int arg) {
    if (PG_ARGISNULL(arg))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("the export format must not be NULL"),
                        errhint("The formats are %s.", pii_audit::siem::kFormatNames)));
    text* t = PG_GETARG_TEXT_PP(arg);
    Format format;
    if (!pii_audit::siem::parse_format(
            std::string_view(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)), &format))
        unknown_format(text_to_cstring(t));
    return format;
}

[[noreturn]] void missing(const char* what) {
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                    errmsg("pii_audit: cannot export an event without %s", what)));
}

// Where the lines come from: cluster_name when it is set, else the host name; once per backend.
pii_audit::siem::Origin origin() {
    static char server[256];
    if (server[0] == '\0') {
        const char* cluster = GetConfigOption("cluster_name", true, false);
        if (cluster != nullptr && cluster[0] != '\0')
            strlcpy(server, cluster, sizeof server);
        else if (gethostname(server, sizeof server - 1) != 0 || server[0] == '\0')
            strlcpy(server, "localhost", sizeof server);
    }
    return pii_audit::siem::Origin{server, PII_AUDIT_VERSION};
}

// The line, formatted into a buffer kept for the backend's life (no destructor to skip).
template <class Fill>
text* format_line(Fill&& fill) {
    static std::string* buffer = nullptr;
    char failure[256];
    if (!pii_audit::boundary::cpp_call("pii_audit: formatting an export line", [&] {
            if (buffer == nullptr) buffer = new std::string();
            buffer->clear();
            fill(*buffer);
        }, failure, sizeof failure))
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
//   nesting_level, detail, subject_count, subjects, subjects_truncated, subject_count_estimated)
//   RETURNS text: the columns of pii_audit.events, in its order.
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
    const auto from = origin();
    PG_RETURN_TEXT_P(format_line([&](std::string& out) {
        pii_audit::siem::format_event(format, from, e, out);
    }));
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
    PG_RETURN_TEXT_P(format_line([&](std::string& out) {
        pii_audit::siem::format_alert(format, from, a, out);
    }));
}
