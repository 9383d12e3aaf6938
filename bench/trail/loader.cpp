// pii_audit_trail_loader: a benchmark aid, never installed. One SQL function puts synthetic read
// events into pii_audit's shared-memory queue, the way the executor hooks do, so the background
// worker stores them through its production path. bench/trail.sh loads it by absolute path.
//
//   pii_audit_bench_load(events bigint, first_event bigint, total_events bigint,
//                        sessions int, actors int, subjects int,
//                        span_start timestamptz, span_end timestamptz, seed int,
//                        database text, relations oid[]) RETURNS bigint
//
// Event i (first_event <= i < first_event + events, out of total_events) happens in burst
// i / 25,000 (bursts spread evenly over the span, events 20 us apart in a burst), by one of
// `sessions` concurrent connections of
// `actors` clerks (clerk_1 ...) in `database`, reading one of four statements on three keyed
// tables (customers, accounts, visits: their oids in `relations`), about one customer (c1 ...
// c<subjects>) hashed with the server's subject key, so subject_access('c42') finds it. Every
// 1/64 of the run the connections reconnect (new backend pids, sessions and clerks).
// Returns how many events the queue took (the rest were dropped and counted by pii_audit).
#include "pii_audit_internal.h"

extern "C" {
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
PG_MODULE_MAGIC;
PG_FUNCTION_INFO_V1(pii_audit_bench_load);
}

#include <cstdio>
#include <cstring>

namespace {

struct Statement {
    const char* command;
    const char* relation;
    const char* columns;  // NUL-separated, as capture sends them
    size_t columns_len;
    const char* categories;
    size_t categories_len;
    const char* query;
    int64 query_id;
};

const Statement kStatements[] = {
    {"SELECT", "public.customers", "name\0phone\0", 11, "name\0phone\0", 11,
     "SELECT name, phone FROM customers WHERE id = $1", 7001},
    {"SELECT", "public.customers", "address\0", 8, "address\0", 8,
     "SELECT address FROM customers WHERE id = $1", 7002},
    {"SELECT", "public.accounts", "iban\0", 5, "bank_account\0", 13,
     "SELECT iban, balance FROM accounts WHERE customer_id = $1", 7003},
    {"SELECT", "public.visits", "diagnosis\0", 10, "health\0", 7,
     "SELECT visited_on, diagnosis FROM visits WHERE customer_id = $1", 7004},
};

uint64 next_random(uint64* state) {  // splitmix64
    uint64 z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

}  // namespace

extern "C" Datum pii_audit_bench_load(PG_FUNCTION_ARGS) {
    const int64 events = PG_GETARG_INT64(0);
    const int64 first = PG_GETARG_INT64(1);
    const int64 total = PG_GETARG_INT64(2);
    const int32 sessions = PG_GETARG_INT32(3);
    const int32 actors = PG_GETARG_INT32(4);
    const int32 subjects = PG_GETARG_INT32(5);
    const TimestampTz span_start = PG_GETARG_TIMESTAMPTZ(6);
    const TimestampTz span_end = PG_GETARG_TIMESTAMPTZ(7);
    const int32 seed = PG_GETARG_INT32(8);
    char* database = text_to_cstring(PG_GETARG_TEXT_PP(9));
    ArrayType* relations = PG_GETARG_ARRAYTYPE_P(10);
    if (ARR_NDIM(relations) != 1 || ARR_DIMS(relations)[0] != 3 || ARR_HASNULL(relations) ||
        ARR_ELEMTYPE(relations) != OIDOID)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("pii_audit_bench_load: relations must be three oids")));
    const Oid* relation_oids = reinterpret_cast<const Oid*>(ARR_DATA_PTR(relations));
    if (events < 0 || first < 0 || total <= 0 || first + events > total || sessions <= 0 ||
        actors <= 0 || subjects <= 0 || span_end <= span_start)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("pii_audit_bench_load: bad arguments"),
                        errhint("0 <= first_event, first_event + events <= total_events, "
                                "sessions, actors and subjects > 0, span_start < span_end.")));
    // Events come in bursts of kBurst, 20 us apart (about what 50,000 reads a second make, and
    // what one batch of the worker holds), the bursts spread over the span: spreading every
    // event evenly would put hours between two reads of one session, which no real batch holds.
    constexpr int64 kBurst = 25000;
    const int64 bursts = (total + kBurst - 1) / kBurst;
    const double step = static_cast<double>(span_end - span_start) / static_cast<double>(bursts);
    uint64 rng = static_cast<uint64>(seed) * 0x100000001b3ULL + static_cast<uint64>(first);
    int64 taken = 0;
    char user[32], app[32], addr[32], subject[32];
    for (int64 k = 0; k < events; ++k) {
        const int64 i = first + k;
        if ((k & 4095) == 0) CHECK_FOR_INTERRUPTS();
        const uint64 r = next_random(&rng);
        const int32 session = static_cast<int32>(r % static_cast<uint64>(sessions));
        const int64 generation = i * 64 / total;
        const int32 actor = static_cast<int32>((generation * sessions + session) % actors) + 1;
        const int statement = static_cast<int>((r >> 20) % 4);
        const Statement& st = kStatements[statement];
        snprintf(user, sizeof user, "clerk_%d", actor);
        snprintf(app, sizeof app, "branch-app");
        snprintf(addr, sizeof addr, "10.%d.%d.%d", actor / 65536 % 256, actor / 256 % 256,
                 actor % 256);
        int len = snprintf(subject, sizeof subject, "c%llu",
                           static_cast<unsigned long long>((r >> 24) % static_cast<uint64>(subjects) + 1));
        int64 hash = pii_audit_subject_hash(subject, static_cast<size_t>(len));

        pii_audit::EventView event;
        event.header.kind = static_cast<uint8>(pii_audit::EventKind::kRead);
        event.header.status = static_cast<uint8>(r % 100 == 0 ? pii_audit::EventStatus::kFailed
                                                              : pii_audit::EventStatus::kCompleted);
        event.header.nesting_level = 1;
        event.header.event_time = span_start + static_cast<int64>(step * static_cast<double>(i / kBurst)) +
                                  (i % kBurst) * 20;
        event.header.row_count = 1;
        event.header.query_id = st.query_id;
        event.header.relation_oid = relation_oids[statement < 2 ? 0 : statement - 1];
        event.header.backend_pid = 100000 + static_cast<int32>(generation) * sessions + session;
        event.header.source_encoding = GetDatabaseEncoding();
        event.header.subject_count = 1;
        event.header.flags = pii_audit::kFlagSubjectsTracked | pii_audit::kFlagClientAddrSet;
        event.field[pii_audit::kDatabaseName] = database;
        event.field[pii_audit::kSessionUser] = user;
        event.field[pii_audit::kCurrentUser] = user;
        event.field[pii_audit::kEndUser] = "";
        event.field[pii_audit::kApplicationName] = app;
        event.field[pii_audit::kClientAddr] = addr;
        event.field[pii_audit::kCommand] = st.command;
        event.field[pii_audit::kRelation] = st.relation;
        event.field[pii_audit::kColumns] = std::string_view(st.columns, st.columns_len);
        event.field[pii_audit::kCategories] = std::string_view(st.categories, st.categories_len);
        event.field[pii_audit::kQueryText] = st.query;
        event.field[pii_audit::kSubjects] =
            std::string_view(reinterpret_cast<const char*>(&hash), sizeof hash);
        if (pii_audit_enqueue(event, true)) ++taken;
    }
    PG_RETURN_INT64(taken);
}
