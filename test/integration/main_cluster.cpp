#include "main_cluster.h"

#include <unistd.h>

#include <atomic>

namespace pii_it {

void ensure_customers_schema(Connection& conn) {
    if (conn.int64("SELECT count(*) FROM pg_extension WHERE extname = 'pii_audit'") == 0)
        conn.exec("CREATE EXTENSION pii_audit");
    if (conn.int64("SELECT count(*) FROM pii_audit.labelled_columns WHERE schema_name = "
                   "'public' AND table_name = 'customers' AND column_name = 'phone'") == 0) {
        conn.exec_script(
            "CREATE TABLE IF NOT EXISTS public.customers ("
            "  id integer PRIMARY KEY, name text NOT NULL, phone text NOT NULL);"
            "INSERT INTO public.customers "
            "  SELECT g, 'customer ' || g, '+86 138 0000 ' || lpad(g::text, 4, '0') "
            "  FROM generate_series(1, " +
            std::to_string(kCustomerRows) +
            ") AS g ON CONFLICT DO NOTHING;"
            "SECURITY LABEL FOR pii ON COLUMN public.customers.name IS 'name';"
            "SECURITY LABEL FOR pii ON COLUMN public.customers.phone IS 'phone, subject_key';");
    }
    AuditStatus status;
    bool running = poll_until(std::chrono::seconds(30), [&] {
        status = read_status(conn);
        return status.state == "running" && status.worker_pid != 0;
    });
    if (!running)
        throw std::runtime_error("the pii_audit worker is not running: " + describe(status));
    bool drained = false;
    status = wait_for_drain(conn, 0, kDrainTimeout, &drained);
    if (!drained)
        throw std::runtime_error("the queue did not drain before the test: " + describe(status));
}

std::string unique_marker(const std::string& what) {
    static std::atomic<int> counter{0};
    return what + "-p" + std::to_string(getpid()) + "r" + std::to_string(++counter) + "-";
}

int64_t max_event_id(Connection& conn) {
    return conn.int64("SELECT coalesce(max(event_id), 0) FROM pii_audit.events");
}

testing::AssertionResult trail_is_gapless_and_ordered(Connection& conn) {
    Result r = conn.exec(
        "SELECT count(*), coalesce(min(event_id), 0), coalesce(max(event_id), 0), "
        "count(DISTINCT event_id) FROM pii_audit.events");
    int64_t count = r.int64(0, 0), min = r.int64(0, 1), max = r.int64(0, 2),
            distinct = r.int64(0, 3);
    if (count == 0) return testing::AssertionFailure() << "the trail is empty";
    if (min != 1 || max != count || distinct != count)
        return testing::AssertionFailure()
               << "event_id is not 1.." << count << " without holes: count=" << count
               << " min=" << min << " max=" << max << " distinct=" << distinct;
    int64_t backwards = conn.int64(
        "SELECT count(*) FROM (SELECT recorded_at, "
        "  lag(recorded_at) OVER (ORDER BY event_id) AS previous FROM pii_audit.events) s "
        "WHERE recorded_at < previous");
    if (backwards != 0)
        return testing::AssertionFailure()
               << backwards << " rows were recorded earlier than the row with the id before";
    return testing::AssertionSuccess() << "event_id 1.." << count << ", in recording order";
}

}  // namespace pii_it
