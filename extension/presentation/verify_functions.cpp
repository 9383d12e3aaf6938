// pii_audit.verify_trail: recomputes the trail's hash chain (include/pii_audit/trail_chain.h)
// from the stored rows and names what does not match: the first event of a group whose content
// changed, events missing from a batch, events no batch digested, and broken links between
// batches; optionally, digests held outside that the chain no longer reproduces.
//
// Rows are read through SPI cursors in chunks and reduced at once to plain, palloc'd records
// (first id, count, digest); the chain's functions are noexcept and allocate nothing, so no C++
// object with a destructor is alive across a PostgreSQL call.
// PostgreSQL-free headers first (see pg_free.h).
#include "pii_audit/trail_chain.h"
#include "pii_audit_internal.h"

extern "C" {
#include <sys/socket.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inet.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

PGDLLEXPORT Datum pii_audit_verify_trail(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_verify_trail);
}

#include <cstring>

namespace {

using pii_audit::chain::Digest;
using pii_audit::chain::Hasher;
using pii_audit::chain::Tag;

constexpr int kChunk = 2000;
constexpr uint32 kCacheSlots = 16384;

struct Output {
    ReturnSetInfo* rsinfo;
    int64 problems;  // rows other than 'unchained' and 'ok'
};

void emit(Output& out, int64 event_id, const char* problem, const char* detail) {
    Datum values[3] = {Int64GetDatum(event_id), CStringGetTextDatum(problem),
                       CStringGetTextDatum(detail)};
    bool nulls[3] = {false, false, false};
    tuplestore_putvalues(out.rsinfo->setResult, out.rsinfo->setDesc, values, nulls);
    if (strcmp(problem, "unchained") != 0) ++out.problems;
}

Digest digest_of(Datum d, bool* ok) {
    Digest out;
    bytea* b = DatumGetByteaPP(d);
    *ok = VARSIZE_ANY_EXHDR(b) == pii_audit::chain::kDigestSize;
    if (*ok) memcpy(out.bytes, VARDATA_ANY(b), pii_audit::chain::kDigestSize);
    return out;
}

// ---------------------------------------------------------------- reading the groups
struct CacheSlot {
    int64 id;  // 0: empty
    bool set;
    Digest digest;
};

struct Found {
    int64 first;
    int32 count;
    Digest digest;
};

// The groups in id order, digested as they are fetched.
struct GroupReader {
    Portal portal;
    Found* rows;
    int n, at;
    bool done;
    CacheSlot* sessions;
    CacheSlot* statements;
    MemoryContext chunk_context;
};

constexpr const char* kGroupsQuery =
    "SELECT g.first_event_id, g.event_count, g.min_time, g.max_time, g.recorded_at, g.kind, "
    "g.backend_pid, g.nesting_level, g.payload, g.session_id, g.statement_id, "
    "s.database_name, s.session_user_name, s.current_user_name, s.end_user, "
    "s.application_name, s.client_addr, st.command, st.relation, st.relation_oid, st.columns, "
    "st.categories, st.query_id, st.query_text, st.query_truncated, s.server_name "
    "FROM pii_audit.trail_groups g "
    "LEFT JOIN pii_audit.trail_sessions s ON s.session_id = g.session_id "
    "LEFT JOIN pii_audit.trail_statements st ON st.statement_id = g.statement_id "
    "WHERE g.first_event_id >= $1 AND g.first_event_id <= $2 ORDER BY g.first_event_id";
enum {
    cFirst = 1,
    cCount,
    cMinTime,
    cMaxTime,
    cRecordedAt,
    cKind,
    cPid,
    cNesting,
    cPayload,
    cSessionId,
    cStatementId,
    cDatabase,
    cSessionUser,
    cCurrentUser,
    cEndUser,
    cApplication,
    cClientAddr,
    cCommand,
    cRelation,
    cRelationOid,
    cColumns,
    cCategories,
    cQueryId,
    cQueryText,
    cQueryTruncated,
    cServerName
};

struct Row {
    HeapTuple tuple;
    TupleDesc desc;
    bool null(int col) const {
        bool isnull;
        (void)SPI_getbinval(tuple, desc, col, &isnull);
        return isnull;
    }
    Datum get(int col) const {
        bool isnull;
        return SPI_getbinval(tuple, desc, col, &isnull);
    }
};

void hash_text(Hasher& h, const Row& r, int col) {
    if (r.null(col)) return h.null();
    text* t = DatumGetTextPP(r.get(col));
    h.text(std::string_view(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)));
}

void hash_text_array(Hasher& h, const Row& r, int col) {
    if (r.null(col)) return h.null();
    Datum* items;
    bool* nulls;
    int n;
    deconstruct_array(DatumGetArrayTypeP(r.get(col)), TEXTOID, -1, false, TYPALIGN_INT, &items,
                      &nulls, &n);
    h.begin_list(static_cast<uint32>(n));
    for (int i = 0; i < n; ++i) {
        if (nulls[i]) {
            // Never written by the worker; hashed as an impossible length so it cannot match.
            h.int64_item(-1);
            continue;
        }
        text* t = DatumGetTextPP(items[i]);
        h.item(std::string_view(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)));
    }
}

Digest session_digest(const Row& r) {
    Hasher h(Tag::kSession);
    for (int col : {cDatabase, cSessionUser, cCurrentUser, cEndUser, cApplication})
        hash_text(h, r, col);
    if (r.null(cClientAddr)) {
        h.null();
    } else {
        inet* ip = DatumGetInetPP(r.get(cClientAddr));
        h.inet(ip_family(ip) == PGSQL_AF_INET ? 4 : 6, ip_bits(ip), ip_addr(ip), ip_addrsize(ip));
    }
    hash_text(h, r, cServerName);
    return h.finish();
}

Digest statement_digest(const Row& r) {
    Hasher h(Tag::kStatement);
    hash_text(h, r, cCommand);
    hash_text(h, r, cRelation);
    if (r.null(cRelationOid))
        h.null();
    else
        h.int32(static_cast<int32>(DatumGetObjectId(r.get(cRelationOid))));
    hash_text_array(h, r, cColumns);
    hash_text_array(h, r, cCategories);
    if (r.null(cQueryId))
        h.null();
    else
        h.int64(DatumGetInt64(r.get(cQueryId)));
    hash_text(h, r, cQueryText);
    if (r.null(cQueryTruncated))
        h.null();
    else
        h.boolean(DatumGetBool(r.get(cQueryTruncated)));
    return h.finish();
}

CacheSlot& cache_slot(CacheSlot* slots, int64 id) {
    const uint64 h = static_cast<uint64>(id) * 0x9e3779b97f4a7c15ULL;
    return slots[(h >> 40) % kCacheSlots];
}

Found digest_group(GroupReader& rd, const Row& r) {
    pii_audit::chain::GroupFields f;
    f.first_event_id = DatumGetInt64(r.get(cFirst));
    f.event_count = DatumGetInt32(r.get(cCount));
    f.min_time = DatumGetTimestampTz(r.get(cMinTime));
    f.max_time = DatumGetTimestampTz(r.get(cMaxTime));
    f.recorded_at = DatumGetTimestampTz(r.get(cRecordedAt));
    text* kind = DatumGetTextPP(r.get(cKind));
    f.kind = std::string_view(VARDATA_ANY(kind), VARSIZE_ANY_EXHDR(kind));
    f.has_backend_pid = !r.null(cPid);
    if (f.has_backend_pid) f.backend_pid = DatumGetInt32(r.get(cPid));
    f.has_nesting_level = !r.null(cNesting);
    if (f.has_nesting_level) f.nesting_level = DatumGetInt32(r.get(cNesting));
    // Side rows never change and an id names one row: their digests are kept by id.
    const int64 session_id = DatumGetInt64(r.get(cSessionId));
    CacheSlot& s = cache_slot(rd.sessions, session_id);
    if (!s.set || s.id != session_id) {
        s.digest = session_digest(r);
        s.id = session_id;
        s.set = true;
    }
    f.session = s.digest;
    f.has_statement = !r.null(cStatementId);
    if (f.has_statement) {
        const int64 statement_id = DatumGetInt64(r.get(cStatementId));
        CacheSlot& st = cache_slot(rd.statements, statement_id);
        if (!st.set || st.id != statement_id) {
            st.digest = statement_digest(r);
            st.id = statement_id;
            st.set = true;
        }
        f.statement = st.digest;
    }
    bytea* payload = DatumGetByteaPP(r.get(cPayload));
    f.payload = std::string_view(VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload));
    return Found{f.first_event_id, f.event_count, pii_audit::chain::group_digest(f)};
}

// The next group, or nullptr after the last.
const Found* peek(GroupReader& rd) {
    if (rd.at < rd.n) return &rd.rows[rd.at];
    if (rd.done) return nullptr;
    MemoryContextReset(rd.chunk_context);
    MemoryContext old = MemoryContextSwitchTo(rd.chunk_context);
    SPI_cursor_fetch(rd.portal, true, kChunk);
    MemoryContextSwitchTo(old);
    rd.n = static_cast<int>(SPI_processed);
    rd.at = 0;
    if (rd.n == 0) {
        rd.done = true;
        return nullptr;
    }
    SPITupleTable* table = SPI_tuptable;
    old = MemoryContextSwitchTo(rd.chunk_context);
    for (int i = 0; i < rd.n; ++i)
        rd.rows[i] = digest_group(rd, Row{table->vals[i], table->tupdesc});
    MemoryContextSwitchTo(old);
    SPI_freetuptable(table);
    return &rd.rows[0];
}

// ---------------------------------------------------------------- removals and digest rows
struct Range {
    int64 first, last;
};

struct Removals {
    Range* ranges;
    int n;
    bool covers(int64 first, int64 last) const {
        for (int i = 0; i < n; ++i)
            if (ranges[i].first <= first && last <= ranges[i].last) return true;
        return false;
    }
};

// The ranges recorded removals (retention, remove_events) took out of the trail: their events
// say "... with ids from A to B ...". A removal event is chained like any other, so a forged one
// shows up as an inserted or changed event.
Removals load_removals() {
    Removals r{nullptr, 0};
    if (SPI_execute("SELECT (m[1])::bigint, (m[2])::bigint FROM ("
                    "SELECT regexp_match(e.detail, 'ids from ([0-9]+) to ([0-9]+)') AS m "
                    "FROM pii_audit.trail_groups g CROSS JOIN LATERAL "
                    "pii_audit._group_events(g.first_event_id, g.min_time, g.payload) e "
                    "WHERE g.kind = 'removal' AND e.status = 'completed') x WHERE m IS NOT NULL",
                    true, 0) != SPI_OK_SELECT)
        elog(ERROR, "pii_audit: could not read the trail's removals");
    r.n = static_cast<int>(SPI_processed);
    r.ranges = static_cast<Range*>(palloc(sizeof(Range) * (r.n + 1)));
    for (int i = 0; i < r.n; ++i) {
        Row row{SPI_tuptable->vals[i], SPI_tuptable->tupdesc};
        r.ranges[i] = Range{DatumGetInt64(row.get(1)), DatumGetInt64(row.get(2))};
    }
    return r;
}

struct External {
    int64* ids;
    Digest* digests;
    bool* seen;
    int n;
};

int64 query_int64(const char* sql, int nargs, Oid* types, Datum* args, int64 fallback,
                  bool* found) {
    if (SPI_execute_with_args(sql, nargs, types, args, nullptr, true, 1) != SPI_OK_SELECT)
        elog(ERROR, "pii_audit: could not run \"%s\"", sql);
    bool isnull = true;
    Datum d = SPI_processed == 1
                  ? SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)
                  : Datum(0);
    if (found) *found = !isnull;
    return isnull ? fallback : DatumGetInt64(d);
}

void verify(Output& out, int64 from, int64 to, External& ext) {
    char detail[512];
    Oid types2[2] = {INT8OID, INT8OID};
    bool found = false;
    const int64 first_chained = query_int64(
        "SELECT first_event_id FROM pii_audit.trail_digests ORDER BY first_event_id LIMIT 1", 0,
        nullptr, nullptr, 0, &found);
    const bool any_chained = found;
    // Events stored before the chain began (by pii_audit 0.2.0, before ALTER EXTENSION UPDATE).
    {
        const int64 upto = any_chained ? Min(to, first_chained - 1) : to;
        if (from <= upto) {
            Datum args[2] = {Int64GetDatum(from), Int64GetDatum(upto)};
            bool any = false;
            const int64 lo = query_int64(
                "SELECT greatest(min(first_event_id), $1) FROM pii_audit.trail_groups "
                "WHERE first_event_id + event_count - 1 >= $1 AND first_event_id <= $2",
                2, types2, args, 0, &any);
            if (any) {
                const int64 hi = query_int64(
                    "SELECT least(max(first_event_id + event_count - 1), $2) "
                    "FROM pii_audit.trail_groups WHERE first_event_id + event_count - 1 >= $1 "
                    "AND first_event_id <= $2",
                    2, types2, args, 0, nullptr);
                if (any_chained)
                    snprintf(detail, sizeof detail,
                             "events %lld to %lld were stored before the trail was chained (by "
                             "pii_audit 0.2.0, before ALTER EXTENSION UPDATE): they cannot be "
                             "verified; the chain begins at event %lld",
                             static_cast<long long>(lo), static_cast<long long>(hi),
                             static_cast<long long>(first_chained));
                else
                    snprintf(detail, sizeof detail,
                             "events %lld to %lld have no digests: no batch has been chained "
                             "yet (pii_audit.trail_digests is empty; it fills from the first "
                             "batch stored by pii_audit 0.3.0, unless someone empties it)",
                             static_cast<long long>(lo), static_cast<long long>(hi));
                emit(out, lo, "unchained", detail);
            }
        }
    }
    if (!any_chained) return;
    const Removals removals = load_removals();

    // The batches holding events from..to, and the one before them (for the first link).
    Datum args[2] = {Int64GetDatum(from), Int64GetDatum(to)};
    bool have_previous = false;
    Digest previous_digest;
    int64 previous_last = 0;
    if (SPI_execute_with_args(
            "SELECT last_event_id, digest FROM pii_audit.trail_digests WHERE last_event_id < $1 "
            "ORDER BY last_event_id DESC LIMIT 1",
            1, types2, args, nullptr, true, 1) != SPI_OK_SELECT)
        elog(ERROR, "pii_audit: could not read pii_audit.trail_digests");
    if (SPI_processed == 1) {
        Row row{SPI_tuptable->vals[0], SPI_tuptable->tupdesc};
        previous_last = DatumGetInt64(row.get(1));
        bool ok;
        previous_digest = digest_of(row.get(2), &ok);
        have_previous = ok;
    }
    SPIPlanPtr batches_plan = SPI_prepare(
        "SELECT first_event_id, last_event_id, previous_digest, digest, groups "
        "FROM pii_audit.trail_digests WHERE last_event_id >= $1 AND first_event_id <= $2 "
        "ORDER BY first_event_id",
        2, types2);
    if (batches_plan == nullptr) elog(ERROR, "pii_audit: could not plan the digests' query");
    Portal batches = SPI_cursor_open(nullptr, batches_plan, args, nullptr, true);

    // Groups from the first batch's first event (found below) to `to` or the last batch's end.
    int64 lo = from, hi = to;
    {
        bool any = false;
        int64 v = query_int64(
            "SELECT min(first_event_id) FROM pii_audit.trail_digests "
            "WHERE last_event_id >= $1 AND first_event_id <= $2",
            2, types2, args, 0, &any);
        if (any) lo = Min(lo, v);
        v = query_int64(
            "SELECT max(last_event_id) FROM pii_audit.trail_digests "
            "WHERE last_event_id >= $1 AND first_event_id <= $2",
            2, types2, args, 0, &any);
        if (any) hi = Max(hi, v);
        lo = Max(lo, first_chained);
    }
    GroupReader rd{};
    rd.rows = static_cast<Found*>(palloc(sizeof(Found) * kChunk));
    rd.sessions = static_cast<CacheSlot*>(palloc0(sizeof(CacheSlot) * kCacheSlots));
    rd.statements = static_cast<CacheSlot*>(palloc0(sizeof(CacheSlot) * kCacheSlots));
    rd.chunk_context = AllocSetContextCreate(CurrentMemoryContext, "pii_audit verify chunk",
                                             ALLOCSET_DEFAULT_SIZES);
    {
        Datum gargs[2] = {Int64GetDatum(lo), Int64GetDatum(hi)};
        SPIPlanPtr plan = SPI_prepare(kGroupsQuery, 2, types2);
        if (plan == nullptr) elog(ERROR, "pii_audit: could not plan the groups' query");
        rd.portal = SPI_cursor_open(nullptr, plan, gargs, nullptr, true);
    }

    MemoryContext batch_context = AllocSetContextCreate(
        CurrentMemoryContext, "pii_audit verify batch", ALLOCSET_DEFAULT_SIZES);
    int64 batches_checked = 0, groups_checked = 0, externals_matched = 0;
    int64 last_verified = lo - 1;
    // The first event after the last external digest that matched: where a rewrite may begin.
    int64 external_from = lo;
    Digest* digests = nullptr;
    int capacity = 0;
    for (;;) {
        SPI_cursor_fetch(batches, true, 1);
        if (SPI_processed == 0) break;
        MemoryContextReset(batch_context);
        MemoryContext old = MemoryContextSwitchTo(batch_context);
        Row row{SPI_tuptable->vals[0], SPI_tuptable->tupdesc};
        const int64 first = DatumGetInt64(row.get(1));
        const int64 last = DatumGetInt64(row.get(2));
        bool ok_prev, ok_digest;
        const Digest stored_previous = digest_of(row.get(3), &ok_prev);
        const Digest stored = digest_of(row.get(4), &ok_digest);
        bytea* entries_datum = DatumGetByteaPCopy(row.get(5));
        const std::string_view entries(VARDATA_ANY(entries_datum),
                                       VARSIZE_ANY_EXHDR(entries_datum));
        MemoryContextSwitchTo(old);
        SPI_freetuptable(SPI_tuptable);
        ++batches_checked;

        // The link to the batch before.
        if (!ok_prev || !ok_digest) {
            snprintf(detail, sizeof detail,
                     "the digest row of events %lld to %lld is damaged (a digest is not 32 bytes)",
                     static_cast<long long>(first), static_cast<long long>(last));
            emit(out, first, "broken_link", detail);
        } else if (have_previous && previous_last + 1 != first) {
            snprintf(detail, sizeof detail,
                     "no digest covers events %lld to %lld: a batch's digest row was removed",
                     static_cast<long long>(previous_last + 1), static_cast<long long>(first - 1));
            emit(out, previous_last + 1, "broken_link", detail);
        } else if (have_previous && stored_previous != previous_digest) {
            snprintf(detail, sizeof detail,
                     "the batch of events %lld to %lld does not chain to the batch before it "
                     "(its previous_digest differs from that batch's digest)",
                     static_cast<long long>(first), static_cast<long long>(last));
            emit(out, first, "broken_link", detail);
        } else if (!have_previous && first == first_chained && stored_previous != Digest{}) {
            snprintf(detail, sizeof detail,
                     "the first chained batch (events %lld to %lld) chains to a batch that is gone",
                     static_cast<long long>(first), static_cast<long long>(last));
            emit(out, first, "broken_link", detail);
        }

        // Its groups against the stored list, then its digest.
        const size_t nexpected = entries.size() / pii_audit::chain::kGroupEntrySize;
        if (static_cast<int>(nexpected) > capacity) {
            capacity = static_cast<int>(nexpected) * 2;
            digests = static_cast<Digest*>(digests == nullptr
                                               ? palloc(sizeof(Digest) * capacity)
                                               : repalloc(digests, sizeof(Digest) * capacity));
        }
        int64 expected_total = 0;
        for (size_t i = 0; i < nexpected; ++i) {
            uint32 c;
            uint64 p;
            (void)pii_audit::chain::read_group_entry(entries, i, &c, &p);
            expected_total += c;
        }
        bool batch_problem = false, partly_removed = false;
        if (entries.size() % pii_audit::chain::kGroupEntrySize != 0 ||
            expected_total != last - first + 1) {
            snprintf(detail, sizeof detail,
                     "the digest row of events %lld to %lld is damaged (its group list does not "
                     "add up to its events)",
                     static_cast<long long>(first), static_cast<long long>(last));
            emit(out, first, "broken_link", detail);
            batch_problem = true;
        }
        size_t e = 0;
        int64 expected_first = first;
        int ndigests = 0;
        bool complete = true;  // every expected group found, in order, and nothing else
        for (;;) {
            const Found* g = peek(rd);
            if (g != nullptr && g->first < first) {
                // Between batches (only before the first batch read): no digest names it.
                snprintf(detail, sizeof detail,
                         "events %lld to %lld are in no batch's digest: inserted",
                         static_cast<long long>(g->first),
                         static_cast<long long>(g->first + g->count - 1));
                emit(out, g->first, "inserted", detail);
                ++rd.at;
                continue;
            }
            const bool group_in_batch = g != nullptr && g->first <= last;
            uint32 ecount = 0;
            uint64 eprefix = 0;
            const bool have_expected =
                pii_audit::chain::read_group_entry(entries, e, &ecount, &eprefix);
            if (!group_in_batch && !have_expected) break;
            if (have_expected && (!group_in_batch || g->first > expected_first)) {
                // Expected here, not found.
                const int64 missing_last = expected_first + ecount - 1;
                if (removals.covers(expected_first, missing_last)) {
                    partly_removed = true;
                } else {
                    snprintf(detail, sizeof detail,
                             "events %lld to %lld (one group of the batch of events %lld to %lld) "
                             "are missing: removed without a recorded removal",
                             static_cast<long long>(expected_first),
                             static_cast<long long>(missing_last), static_cast<long long>(first),
                             static_cast<long long>(last));
                    emit(out, expected_first, "removed", detail);
                    batch_problem = true;
                }
                complete = false;
                expected_first += ecount;
                ++e;
                continue;
            }
            if (!have_expected || g->first < expected_first) {
                snprintf(detail, sizeof detail,
                         "events %lld to %lld are not among the groups the batch of events %lld "
                         "to %lld digested: inserted",
                         static_cast<long long>(g->first),
                         static_cast<long long>(g->first + g->count - 1),
                         static_cast<long long>(first), static_cast<long long>(last));
                emit(out, g->first, "inserted", detail);
                batch_problem = true;
                complete = false;
                ++rd.at;
                continue;
            }
            // The same first event: the same group, unless its content changed.
            ++groups_checked;
            if (static_cast<uint32>(g->count) != ecount ||
                pii_audit::chain::digest_prefix(g->digest) != eprefix) {
                snprintf(detail, sizeof detail,
                         "the group of events %lld to %lld differs from what was chained (%s): "
                         "its row, its session's or statement's values, or its events' payload "
                         "changed",
                         static_cast<long long>(g->first),
                         static_cast<long long>(g->first + Max(g->count, 1) - 1),
                         static_cast<uint32>(g->count) != ecount ? "its number of events changed"
                                                                 : "its digest differs");
                emit(out, g->first, "changed", detail);
                batch_problem = true;
            }
            if (ndigests < capacity) digests[ndigests++] = g->digest;
            expected_first += ecount;
            ++e;
            ++rd.at;
        }
        if (complete && !batch_problem && ok_digest && ok_prev &&
            static_cast<size_t>(ndigests) == nexpected) {
            const Digest recomputed = pii_audit::chain::batch_digest(
                stored_previous, first, last, digests, static_cast<size_t>(ndigests));
            if (recomputed != stored) {
                snprintf(detail, sizeof detail,
                         "the digest of the batch of events %lld to %lld does not match its groups "
                         "(its digest row was rewritten)",
                         static_cast<long long>(first), static_cast<long long>(last));
                emit(out, first, "broken_link", detail);
            }
        }
        (void)partly_removed;  // checked group by group above; its stored digest carries on

        // Digests held outside, for the batch that ends here.
        for (int i = 0; i < ext.n; ++i) {
            if (ext.seen[i] || ext.ids[i] != last) continue;
            ext.seen[i] = true;
            if (ext.digests[i] == stored) {
                ++externals_matched;
                external_from = last + 1;
            } else {
                snprintf(detail, sizeof detail,
                         "the chain's digest at event %lld differs from the digest held outside: "
                         "events from %lld to %lld were changed, removed or inserted and the "
                         "chain recomputed",
                         static_cast<long long>(last), static_cast<long long>(external_from),
                         static_cast<long long>(last));
                emit(out, external_from, "external_mismatch", detail);
                external_from = last + 1;
            }
        }
        previous_last = last;
        previous_digest = stored;
        have_previous = ok_digest;
        last_verified = last;
    }
    SPI_cursor_close(batches);
    // Groups after the last batch's digest: stored by no batch the chain knows.
    while (const Found* g = peek(rd)) {
        if (g->first > to) break;
        snprintf(detail, sizeof detail, "events %lld to %lld are in no batch's digest: inserted",
                 static_cast<long long>(g->first), static_cast<long long>(g->first + g->count - 1));
        emit(out, g->first, "inserted", detail);
        ++rd.at;
    }
    SPI_cursor_close(rd.portal);
    for (int i = 0; i < ext.n; ++i) {
        if (ext.seen[i] || ext.ids[i] < from || ext.ids[i] > to) continue;
        snprintf(detail, sizeof detail,
                 "a digest held outside names event %lld, but no batch of the trail ends there: "
                 "the trail was rewritten in other batches",
                 static_cast<long long>(ext.ids[i]));
        emit(out, ext.ids[i], "external_mismatch", detail);
    }
    if (out.problems == 0) {
        snprintf(detail, sizeof detail,
                 "events %lld to %lld verified: %lld batches, %lld groups; %lld digests held "
                 "outside matched",
                 static_cast<long long>(lo), static_cast<long long>(last_verified),
                 static_cast<long long>(batches_checked), static_cast<long long>(groups_checked),
                 static_cast<long long>(externals_matched));
        emit(out, last_verified, "ok", detail);
    }
}

}  // namespace

extern "C" Datum pii_audit_verify_trail(PG_FUNCTION_ARGS) {
    if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("from_event_id and to_event_id must not be NULL"),
                        errhint("pii_audit.verify_trail(1, 9223372036854775807) verifies the "
                                "whole trail.")));
    const int64 from = PG_GETARG_INT64(0), to = PG_GETARG_INT64(1);
    if (from < 1 || to < from)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("from_event_id must be 1 or more and to_event_id at least "
                               "from_event_id (got %lld and %lld)",
                               static_cast<long long>(from), static_cast<long long>(to))));
    External ext{nullptr, nullptr, nullptr, 0};
    if (PG_ARGISNULL(2) != PG_ARGISNULL(3))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("external_event_ids and external_digests go together"),
                        errhint("Pass both arrays, of the same length, or neither.")));
    if (!PG_ARGISNULL(2)) {
        Datum* ids;
        Datum* hexes;
        bool* id_nulls;
        bool* hex_nulls;
        int nids, nhex;
        ArrayType* a = PG_GETARG_ARRAYTYPE_P(2);
        ArrayType* b = PG_GETARG_ARRAYTYPE_P(3);
        deconstruct_array(a, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &ids, &id_nulls, &nids);
        deconstruct_array(b, TEXTOID, -1, false, TYPALIGN_INT, &hexes, &hex_nulls, &nhex);
        if (nids != nhex)
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("external_event_ids has %d items and external_digests %d", nids, nhex),
                     errhint("Each digest held outside goes with the event id it ends at.")));
        ext.n = nids;
        ext.ids = static_cast<int64*>(palloc(sizeof(int64) * (nids + 1)));
        ext.digests = static_cast<Digest*>(palloc(sizeof(Digest) * (nids + 1)));
        ext.seen = static_cast<bool*>(palloc0(sizeof(bool) * (nids + 1)));
        for (int i = 0; i < nids; ++i) {
            if (id_nulls[i] || hex_nulls[i])
                ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                                errmsg("external digest %d is NULL", i + 1)));
            ext.ids[i] = DatumGetInt64(ids[i]);
            text* t = DatumGetTextPP(hexes[i]);
            const std::string_view hex(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
            if (!pii_audit::chain::from_hex(hex, &ext.digests[i]))
                ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                                errmsg("external digest %d is not 64 hexadecimal digits: \"%s\"",
                                       i + 1, text_to_cstring(t)),
                                errhint("Digests are SHA-256, written as pii_audit.export_digests "
                                        "writes them.")));
        }
    }
    InitMaterializedSRF(fcinfo, 0);
    Output out{reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo), 0};
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "pii_audit: SPI_connect failed");
    verify(out, from, to, ext);
    SPI_finish();
    return Datum(0);
}

// ---------------------------------------------------------------- alert events
extern "C" {
PGDLLEXPORT Datum pii_audit_alert_event_digest(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_alert_event_digest);
}

// The 'A' digest of one alert event with its alert (trail_chain.h). Arguments in the layout's
// order, after the previous alert event's digest (NULL: the first, 32 zero bytes).
extern "C" Datum pii_audit_alert_event_digest(PG_FUNCTION_ARGS) {
    enum {
        aPrevious,
        aId,
        aChange,
        aTime,
        aStatus,
        aStatusBy,
        aStatusAt,
        aNote,
        aAlertId,
        aAlertTime,
        aRaisedAt,
        aActor,
        aPeerGroup,
        aDetector,
        aScore,
        aSeverity,
        aExplanation,
        aEvidence
    };
    Digest previous;
    if (!PG_ARGISNULL(aPrevious)) {
        bool ok;
        previous = digest_of(PG_GETARG_DATUM(aPrevious), &ok);
        if (!ok)
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("the previous alert event's digest is not 32 bytes")));
    }
    Hasher h(Tag::kAlertEvent);
    h.digest(previous);
    auto text_arg = [&](int i) {
        if (PG_ARGISNULL(i)) return h.null();
        text* t = PG_GETARG_TEXT_PP(i);
        h.text(std::string_view(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)));
    };
    auto int64_arg = [&](int i) {
        if (PG_ARGISNULL(i)) return h.null();
        h.int64(PG_GETARG_INT64(i));
    };
    int64_arg(aId);
    text_arg(aChange);
    int64_arg(aTime);  // timestamptz: microseconds since 2000-01-01, as a bigint
    text_arg(aStatus);
    text_arg(aStatusBy);
    int64_arg(aStatusAt);
    text_arg(aNote);
    int64_arg(aAlertId);
    int64_arg(aAlertTime);
    int64_arg(aRaisedAt);
    text_arg(aActor);
    text_arg(aPeerGroup);
    text_arg(aDetector);
    if (PG_ARGISNULL(aScore))
        h.null();
    else
        h.int32(PG_GETARG_INT32(aScore));
    text_arg(aSeverity);
    text_arg(aExplanation);
    if (PG_ARGISNULL(aEvidence)) {
        h.null();
    } else {
        Datum* items;
        bool* nulls;
        int n;
        deconstruct_array(PG_GETARG_ARRAYTYPE_P(aEvidence), INT8OID, 8, FLOAT8PASSBYVAL,
                          TYPALIGN_DOUBLE, &items, &nulls, &n);
        h.begin_list(static_cast<uint32>(n));
        for (int i = 0; i < n; ++i) h.int64_item(nulls[i] ? PG_INT64_MIN : DatumGetInt64(items[i]));
    }
    const Digest d = h.finish();
    PG_RETURN_BYTEA_P(pii_audit_bytea(
        std::string_view(reinterpret_cast<const char*>(d.bytes), pii_audit::chain::kDigestSize)));
}
