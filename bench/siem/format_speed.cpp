// pii_audit_siem_format_speed [EVENTS]: how fast the SIEM formatter turns trail events into lines,
// per format, on one core: a typical lookup (one subject, a short statement, every field set),
// and a bulk read (a 4 kB statement, 1,000 subject hashes). Prints events/s, ns per event and the
// line's length. EVENTS (default 1,000,000) lookups per format; a tenth as many bulk reads.
// Times are the thread's CPU time, not the wall clock: on a shared machine other processes take
// the core away, and that is not the formatter's cost.
#include <time.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "pii_audit/siem_format.h"

using namespace pii_audit::siem;

namespace {

double cpu_seconds() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double run(Format f, const Origin& origin, TrailEvent e, long n, std::size_t* length) {
    std::string line;
    line.reserve(64 * 1024);
    std::uint64_t checksum = 0;
    const double t0 = cpu_seconds();
    for (long i = 0; i < n; ++i) {
        e.event_id = 1000000 + i;  // the line changes with every event, as in a pull
        e.event_time += 1000;
        line.clear();
        format_event(f, origin, e, line);
        checksum += line.size();
    }
    const double t1 = cpu_seconds();
    *length = static_cast<std::size_t>(checksum / static_cast<std::uint64_t>(n));
    return t1 - t0;
}

}  // namespace

int main(int argc, char** argv) {
    const long n = argc > 1 ? std::atol(argv[1]) : 1000000;
    if (n <= 0) {
        std::fprintf(stderr, "usage: %s [EVENTS]\n", argv[0]);
        return 2;
    }
    const Origin origin{"db-prod-1", "0.3.0"};
    std::string_view columns[] = {"name", "phone"};
    std::string_view categories[] = {"name", "phone"};
    std::int64_t one_subject[] = {-4311925377217473071LL};
    TrailEvent lookup;
    lookup.event_time = 1796034069721566;
    lookup.recorded_at = 1796034069928369;
    lookup.kind = EventKind::read;
    lookup.status = "completed";
    lookup.database_name = "crm";
    lookup.session_user_name = "counter_app";
    lookup.current_user_name = "counter_app";
    lookup.end_user = "clerk-0421";
    lookup.application_name = "counter-frontend";
    lookup.client_addr = "10.20.30.40";
    lookup.backend_pid = 48211;
    lookup.command = "SELECT";
    lookup.relation = "public.customers";
    lookup.columns = TextList{columns, 2};
    lookup.categories = TextList{categories, 2};
    lookup.row_count = 1;
    lookup.query_id = 8906077902670405810LL;
    lookup.query_text = "SELECT name, phone FROM customers WHERE id = $1";
    lookup.query_truncated = false;
    lookup.nesting_level = 0;
    lookup.subject_count = 1;
    lookup.subjects = IdList{one_subject, 1};
    lookup.subjects_truncated = false;
    lookup.subject_count_estimated = false;

    TrailEvent bulk = lookup;
    std::string long_query = "SELECT name, phone FROM customers WHERE segment = $1 AND (";
    while (long_query.size() < 4000) long_query += "region = $2 OR \"quoted \"\"name\"\"\" = $3 OR ";
    long_query += "true)";
    std::vector<std::int64_t> many(1000);
    for (std::size_t i = 0; i < many.size(); ++i)
        many[i] = static_cast<std::int64_t>(0x9E3779B97F4A7C15ULL * (i + 1));
    bulk.query_text = long_query;
    bulk.row_count = 1000;
    bulk.subject_count = 1000;
    bulk.subjects = IdList{many.data(), many.size()};

    std::printf("| format | lookup events/s | ns/event | bytes/line | bulk read events/s | bytes/line |\n");
    std::printf("|---|---|---|---|---|---|\n");
    for (Format f : {Format::json, Format::ocsf, Format::cef, Format::leef, Format::rfc5424}) {
        std::size_t len = 0, bulk_len = 0;
        const double s = run(f, origin, lookup, n, &len);
        const long bn = n / 10 > 0 ? n / 10 : 1;
        const double bs = run(f, origin, bulk, bn, &bulk_len);
        std::printf("| %s | %.0f | %.0f | %zu | %.0f | %zu |\n", format_name(f), n / s, s / n * 1e9,
                    len, bn / bs, bulk_len);
    }
    return 0;
}
