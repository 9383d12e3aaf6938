// SQL-callable functions that read the trail's groups (see include/pii_audit/trail_group.h and
// the README, "How the trail is stored"): the views unpack groups into events with
// _group_events, and subject lookups read the subject index with _subject_offsets.
// PostgreSQL-free headers first (see pg_free.h).
#include "pii_audit/subject_slice.h"
#include "pii_audit/trail_group.h"

#include "pii_audit_internal.h"

#include "boundary.h"

extern "C" {
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

PGDLLEXPORT Datum pii_audit_group_events(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum pii_audit_subject_offsets(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum pii_audit_event_payload(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum pii_audit_group_has_subject(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_group_events);
PG_FUNCTION_INFO_V1(pii_audit_subject_offsets);
PG_FUNCTION_INFO_V1(pii_audit_event_payload);
PG_FUNCTION_INFO_V1(pii_audit_group_has_subject);
PGDLLEXPORT Datum pii_audit_merge_subject_entries(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum pii_audit_allow_index_upkeep(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum pii_audit_index_upkeep_allowed(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_merge_subject_entries);
PG_FUNCTION_INFO_V1(pii_audit_allow_index_upkeep);
PG_FUNCTION_INFO_V1(pii_audit_index_upkeep_allowed);
}

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

void pii_audit_group_damaged(int64 first_event_id, const char* why) {
    ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                    errmsg("pii_audit: the trail group of event %lld is damaged: %s",
                           static_cast<long long>(first_event_id), why),
                    errhint("Restore pii_audit.trail_groups from a backup; the group's other "
                            "columns (session, statement, times) are still readable.")));
}

Datum pii_audit_subjects_array(std::string_view subjects, Datum** scratch, int* capacity) {
    const int n = static_cast<int>(subjects.size() / 8);
    if (n > *capacity || *scratch == nullptr) {
        *capacity = n > 0 ? n : 1;
        *scratch = static_cast<Datum*>(palloc(sizeof(Datum) * static_cast<size_t>(*capacity)));
    }
    for (int k = 0; k < n; ++k) (*scratch)[k] = Int64GetDatum(pii_audit::subject_at(subjects, k));
    return PointerGetDatum(
        construct_array(*scratch, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

// _group_events(first_event_id bigint, min_time timestamptz, payload bytea)
//   RETURNS TABLE (event_id bigint, event_time timestamptz, status text, row_count bigint,
//                  detail text, subject_count bigint, subjects bigint[],
//                  subjects_truncated boolean, subject_count_estimated boolean)
Datum pii_audit_group_events(PG_FUNCTION_ARGS) {
    const int64 first_event_id = PG_GETARG_INT64(0);
    const TimestampTz min_time = PG_GETARG_TIMESTAMPTZ(1);
    bytea* payload = PG_GETARG_BYTEA_PP(2);
    InitMaterializedSRF(fcinfo, 0);
    auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    if (rsinfo->setDesc->natts != 9)
        elog(ERROR, "pii_audit_group_events: the function must return 9 columns");

    // PostgreSQL-free decoding; a string_view into the payload per event, no allocation.
    pii_audit::GroupDecoder decoder(
        std::string_view(VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload)), min_time);
    pii_audit::GroupEvent e;
    Datum values[9];
    bool nulls[9];
    Datum* hashes = nullptr;
    int hashes_capacity = 0;
    for (int64 i = 0; decoder.next(e); ++i) {
        memset(nulls, 0, sizeof nulls);
        values[0] = Int64GetDatum(first_event_id + i);
        values[1] = TimestampTzGetDatum(e.event_time);
        const char* status = pii_audit::group_status_name(e.status);
        if (status == nullptr)
            pii_audit_group_damaged(first_event_id, "an event has an unknown status");
        values[2] = CStringGetTextDatum(status);
        values[3] = Int64GetDatum(e.row_count);
        nulls[3] = !e.has_row_count;
        nulls[4] = !e.has_detail;
        if (e.has_detail)
            values[4] = PointerGetDatum(
                cstring_to_text_with_len(e.detail.data(), static_cast<int>(e.detail.size())));
        nulls[5] = nulls[6] = nulls[7] = nulls[8] = !e.tracked;
        if (e.tracked) {
            values[5] = Int64GetDatum(e.subject_count);
            values[6] = pii_audit_subjects_array(e.subjects, &hashes, &hashes_capacity);
            values[7] = BoolGetDatum(e.truncated);
            values[8] = BoolGetDatum(e.estimated);
        }
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
    if (decoder.error() != nullptr) pii_audit_group_damaged(first_event_id, decoder.error());
    return static_cast<Datum>(0);
}

// _subject_offsets(entries bytea, subject_hash bigint) RETURNS SETOF bigint: the group offsets
// a subject index row holds for one hash (entries: see subject_slice.h).
Datum pii_audit_subject_offsets(PG_FUNCTION_ARGS) {
    bytea* entries = PG_GETARG_BYTEA_PP(0);
    const uint64 hash = static_cast<uint64>(PG_GETARG_INT64(1));
    // A set of a scalar: the tuple descriptor is the one the caller expects (one bigint).
    InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
    auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    const auto* data = reinterpret_cast<const unsigned char*>(VARDATA_ANY(entries));
    const size_t size = VARSIZE_ANY_EXHDR(entries);
    if (size % 8 != 0)
        ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                        errmsg("pii_audit: a row of the subject index is damaged "
                               "(%zu bytes, not a multiple of 8)",
                               size)));
    // tuplestore_putvalues may raise an error: the visit holds no C++ object.
    pii_audit::for_each_slice_row_offset(
        std::string_view(reinterpret_cast<const char*>(data), size), hash, [&](uint32 offset) {
            Datum value = Int64GetDatum(static_cast<int64>(offset));
            bool isnull = false;
            tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &value, &isnull);
        });
    return static_cast<Datum>(0);
}

// _event_payload(event_time timestamptz, status text, row_count bigint, detail text,
//                subject_count bigint, subjects bigint[], subjects_truncated boolean,
//                subject_count_estimated boolean) RETURNS bytea
// The payload of a group holding one event (min_time = event_time): how the upgrade from 0.1.0
// moves each stored event into the grouped trail. NULL arguments mean what they meant in the
// 0.1.0 trail (no row count, no detail, no subjects tracked).
Datum pii_audit_event_payload(PG_FUNCTION_ARGS) {
    if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("pii_audit: an event needs a time and a status")));
    pii_audit::GroupEvent e;
    e.event_time = PG_GETARG_TIMESTAMPTZ(0);
    char* status = text_to_cstring(PG_GETARG_TEXT_PP(1));
    if (strcmp(status, "completed") == 0)
        e.status = 1;
    else if (strcmp(status, "failed") == 0)
        e.status = 2;
    else if (strcmp(status, "denied") == 0)
        e.status = 3;
    else if (strcmp(status, "lost") == 0)
        e.status = 4;
    else
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("pii_audit: unknown event status \"%s\"", status)));
    e.has_row_count = !PG_ARGISNULL(2);
    e.row_count = e.has_row_count ? PG_GETARG_INT64(2) : 0;
    e.has_detail = !PG_ARGISNULL(3);
    text* detail = e.has_detail ? PG_GETARG_TEXT_PP(3) : nullptr;
    if (detail != nullptr)
        e.detail = std::string_view(VARDATA_ANY(detail), VARSIZE_ANY_EXHDR(detail));
    e.tracked = !PG_ARGISNULL(4);
    e.subject_count = e.tracked ? PG_GETARG_INT64(4) : 0;
    char* packed = nullptr;
    if (e.tracked && !PG_ARGISNULL(5)) {
        ArrayType* subjects = PG_GETARG_ARRAYTYPE_P(5);
        Datum* items;
        bool* item_nulls;
        int n;
        deconstruct_array(subjects, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
                          &items, &item_nulls, &n);
        packed = static_cast<char*>(palloc(sizeof(int64) * (n > 0 ? n : 1)));
        int kept = 0;
        for (int i = 0; i < n; ++i) {
            if (item_nulls[i]) continue;
            int64 h = DatumGetInt64(items[i]);
            memcpy(packed + kept * 8, &h, 8);
            ++kept;
        }
        e.subjects = std::string_view(packed, static_cast<size_t>(kept) * 8);
    }
    e.truncated = e.tracked && !PG_ARGISNULL(6) && PG_GETARG_BOOL(6);
    e.estimated = e.tracked && !PG_ARGISNULL(7) && PG_GETARG_BOOL(7);

    static pii_audit::GroupEncoder* encoder = nullptr;
    std::string_view payload;
    char failure[256];
    if (!pii_audit::boundary::cpp_call(nullptr, [&] {
            if (encoder == nullptr) encoder = new pii_audit::GroupEncoder();
            encoder->reset(e.event_time);
            encoder->add(e);
            payload = encoder->finish();
        }, failure, sizeof failure))
        ereport(ERROR, (errmsg("pii_audit: could not encode an event: %s", failure)));
    PG_RETURN_BYTEA_P(pii_audit_bytea(payload));
}

// _group_has_subject(min_time timestamptz, payload bytea, subject_hash bigint) RETURNS boolean:
// whether an event of the group recorded the subject, or may have read it (its subject list was
// cut short). Reads the payload in place, without unpacking it into rows (as _tail_groups does for
// subject_access, group_fetch.cpp).
Datum pii_audit_group_has_subject(PG_FUNCTION_ARGS) {
    const TimestampTz min_time = PG_GETARG_TIMESTAMPTZ(0);
    bytea* payload = PG_GETARG_BYTEA_PP(1);
    const int64 hash = PG_GETARG_INT64(2);
    PG_RETURN_BOOL(pii_audit::group_may_hold_subject(
        std::string_view(VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload)), min_time, hash));
}

// _merge_subject_entries(entries bytea[], shifts bigint[]) RETURNS bytea: one bucket's rows of
// the slices being merged (in slice order) and each slice's first id minus the merged slice's:
// the merged slice's row for that bucket (see subject_slice.h).
Datum pii_audit_merge_subject_entries(PG_FUNCTION_ARGS) {
    ArrayType* entries = PG_GETARG_ARRAYTYPE_P(0);
    ArrayType* shifts = PG_GETARG_ARRAYTYPE_P(1);
    Datum* entry_values = nullptr;
    Datum* shift_values = nullptr;
    bool* entry_nulls = nullptr;
    bool* shift_nulls = nullptr;
    int nentries = 0, nshifts = 0;
    deconstruct_array(entries, BYTEAOID, -1, false, TYPALIGN_INT, &entry_values, &entry_nulls,
                      &nentries);
    deconstruct_array(shifts, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &shift_values,
                      &shift_nulls, &nshifts);
    if (nentries != nshifts)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("pii_audit: %d subject index rows but %d shifts", nentries,
                               nshifts)));
    // Plain data for the C++ side: detoasted rows and checked shifts.
    struct Part {
        const char* data;
        size_t size;
        uint64 shift;
    };
    Part* parts = static_cast<Part*>(palloc0(sizeof(Part) * Max(nentries, 1)));
    for (int i = 0; i < nentries; ++i) {
        if (entry_nulls[i] || shift_nulls[i])
            ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                            errmsg("pii_audit: a subject index row or shift is NULL")));
        const int64 shift = DatumGetInt64(shift_values[i]);
        if (shift < 0)
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("pii_audit: a merged slice must start at or before the slices "
                                   "it merges (shift %lld)",
                                   static_cast<long long>(shift))));
        bytea* row = DatumGetByteaPP(entry_values[i]);
        parts[i] = {VARDATA_ANY(row), VARSIZE_ANY_EXHDR(row), static_cast<uint64>(shift)};
    }
    char* merged = nullptr;
    size_t merged_size = 0;
    char failure[256] = "";
    bool ok = false;
    if (!pii_audit::boundary::cpp_call(nullptr, [&] {
            std::vector<pii_audit::SliceRowPart> in;
            in.reserve(static_cast<size_t>(nentries));
            for (int i = 0; i < nentries; ++i)
                in.push_back({std::string_view(parts[i].data, parts[i].size), parts[i].shift});
            std::string out, why;
            ok = pii_audit::merge_slice_rows(in, out, &why);
            if (!ok) {
                snprintf(failure, sizeof failure, "%s", why.c_str());
                return;
            }
            // malloc, not palloc: nothing here may raise a PostgreSQL error.
            merged = static_cast<char*>(malloc(out.size() + 1));
            if (merged == nullptr) throw std::bad_alloc();
            memcpy(merged, out.data(), out.size());
            merged_size = out.size();
        }, failure, sizeof failure) || !ok) {
        free(merged);
        ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                        errmsg("pii_audit: could not merge subject index rows: %s", failure)));
    }
    bytea* result = static_cast<bytea*>(palloc(VARHDRSZ + merged_size));
    SET_VARSIZE(result, VARHDRSZ + merged_size);
    memcpy(VARDATA(result), merged, merged_size);
    free(merged);
    PG_RETURN_BYTEA_P(result);
}

// _allow_index_upkeep() lets this transaction delete rows of the subject index (merging slices,
// removing those of removed months): the index's triggers ask _index_upkeep_allowed(). Only the
// extension's own functions may call it (EXECUTE is revoked from PUBLIC).
namespace {
LocalTransactionId upkeep_transaction = InvalidLocalTransactionId;
}

Datum pii_audit_allow_index_upkeep(PG_FUNCTION_ARGS) {
    upkeep_transaction = MyProc->lxid;
    PG_RETURN_VOID();
}

Datum pii_audit_index_upkeep_allowed(PG_FUNCTION_ARGS) {
    PG_RETURN_BOOL(upkeep_transaction != InvalidLocalTransactionId &&
                   upkeep_transaction == MyProc->lxid);
}
