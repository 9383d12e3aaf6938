// A full queue with pii_audit.on_queue_full = drop: client statements never fail, every lost
// event is counted, and once the worker can write again the trail holds the queued events in
// order followed by one 'gap' row that says how many were lost.
//
// Runs on the "drop" cluster of run-integration.sh: a 256 kB queue, on_queue_full = drop, and an
// audit database where the extension is not installed yet, so the worker cannot drain: it
// waits for CREATE EXTENSION, and events pile up in the queue until it is full.
#include <gtest/gtest.h>

#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "main_cluster.h"
#include "pg_client.h"

namespace pii_it {
namespace {

constexpr const char* kWaitingState = "worker waiting for CREATE EXTENSION in the audit database";
// Far more than a 256 kB queue holds (an event is a few hundred bytes).
constexpr int kReads = 3000;
constexpr int kReadsAfterRecovery = 20;

std::string numbered(const std::string& prefix, int i) {
    char digits[16];
    std::snprintf(digits, sizeof digits, "%05d", i);
    return prefix + digits;
}

TEST(QueueFull, DropModeCountsEveryLossAndTheTrailReportsItAsAGap) {
    const std::string audit_db = env_or_throw("PII_AUDIT_IT_DROP_AUDIT_DB");
    const std::string app_db = env_or_throw("PII_AUDIT_IT_DROP_APP_DB");
    Connection app(drop_cluster(app_db));
    Connection audit(drop_cluster(audit_db));

    ASSERT_EQ(audit.int64("SELECT count(*) FROM pg_extension WHERE extname = 'pii_audit'"), 0)
        << "this test needs a drop cluster whose audit database has no pii_audit yet "
           "(run-integration.sh creates a fresh one for every run)";
    ASSERT_EQ(app.text("SHOW pii_audit.on_queue_full"), "drop");
    ASSERT_EQ(app.text("SHOW pii_audit.database"), audit_db);

    // The application database gets the extension (for labels and the status view) and a
    // labelled table; its SECURITY LABEL is queued as a label_change event.
    app.exec_script(
        "CREATE EXTENSION pii_audit;"
        "CREATE TABLE customers (id integer PRIMARY KEY, name text, phone text);"
        "INSERT INTO customers SELECT g, 'customer ' || g, '+86 139 0000 ' || g "
        "  FROM generate_series(1, 100) AS g;"
        "SECURITY LABEL FOR pii ON COLUMN customers.phone IS 'phone, subject_key';");

    AuditStatus s0;
    ASSERT_TRUE(poll_until(std::chrono::seconds(30),
                           [&] {
                               s0 = read_status(app);
                               return s0.state == kWaitingState && s0.worker_pid != 0;
                           }))
        << "the worker is not waiting for the extension in the audit database: " << describe(s0);
    EXPECT_EQ(s0.queue_capacity_bytes, 256 * 1024) << describe(s0);
    // The label change, and the logins of the two connections above.
    EXPECT_EQ(s0.events_enqueued, 3) << describe(s0);
    EXPECT_EQ(s0.events_persisted, 0) << describe(s0);
    EXPECT_EQ(s0.events_dropped, 0) << describe(s0);

    // kReads labelled reads, each under its own end user, so the trail shows which ones made
    // it. No statement may fail because the queue is full.
    const std::string prefix = unique_marker("drop");
    int failures = 0;
    std::string first_failure;
    for (int i = 0; i < kReads; ++i) {
        try {
            std::vector<Result> results = app.exec_script(
                "SET pii_audit.end_user = " + quote_literal(numbered(prefix, i)) +
                "; SELECT phone FROM customers WHERE id = " + std::to_string(1 + i % 100));
            if (results.size() != 2 || results[1].rows() != 1)
                throw std::runtime_error("read " + std::to_string(i) + " returned no row");
        } catch (const std::exception& e) {
            if (failures++ == 0) first_failure = e.what();
        }
    }
    EXPECT_EQ(failures, 0) << "first failure: " << first_failure;

    AuditStatus s1 = read_status(app);
    const int64_t queued = s1.events_enqueued - s0.events_enqueued;
    const int64_t dropped = s1.events_dropped - s0.events_dropped;
    EXPECT_GT(dropped, 0) << "the queue never filled: " << describe(s1);
    EXPECT_GT(queued, 0) << describe(s1);
    EXPECT_EQ(queued + dropped, kReads)
        << "every read is either queued or counted as dropped: " << describe(s1);
    EXPECT_EQ(s1.events_persisted, 0) << describe(s1);
    EXPECT_GT(s1.queue_depth_bytes, 0) << describe(s1);
    EXPECT_LE(s1.queue_depth_bytes, s1.queue_capacity_bytes) << describe(s1);
    EXPECT_EQ(s1.state, kWaitingState) << describe(s1);

    // Now the worker can write: it must persist what was queued and report the loss.
    audit.exec("CREATE EXTENSION pii_audit");
    bool drained = false;
    AuditStatus s2 = wait_for_drain(app, s1.events_enqueued, std::chrono::seconds(60), &drained);
    ASSERT_TRUE(drained) << "the queue did not drain after CREATE EXTENSION: " << describe(s2);
    EXPECT_EQ(s2.events_persisted, s1.events_enqueued) << describe(s2);
    EXPECT_EQ(s2.events_dropped, s1.events_dropped) << describe(s2);
    EXPECT_EQ(s2.state, "running") << describe(s2);
    ASSERT_TRUE(poll_until(std::chrono::seconds(30), [&] {
        return audit.int64("SELECT count(*) FROM pii_audit.access_log WHERE kind = 'gap'") > 0;
    })) << "no gap row in the trail";

    // Exactly one gap row, counting every dropped event.
    Result gap = audit.exec(
        "SELECT event_id, status, row_count, database_name FROM pii_audit.access_log "
        "WHERE kind = 'gap'");
    ASSERT_EQ(gap.rows(), 1);
    EXPECT_EQ(gap.text(0, 1), "lost");
    EXPECT_EQ(gap.int64(0, 2), s1.events_dropped);
    const int64_t gap_id = gap.int64(0, 0);

    // The queued reads are exactly the first `queued` ones, recorded once each, in order.
    const std::vector<std::string> p{prefix};
    const std::string ours =
        " FROM pii_audit.access_log WHERE kind = 'read' AND starts_with(end_user, $1)";
    EXPECT_EQ(audit.int64("SELECT count(*)" + ours, p), queued);
    EXPECT_EQ(audit.int64("SELECT count(DISTINCT end_user)" + ours, p), queued);
    EXPECT_EQ(audit.text("SELECT min(end_user)" + ours, p), numbered(prefix, 0));
    EXPECT_EQ(audit.text("SELECT max(end_user)" + ours, p),
              numbered(prefix, static_cast<int>(queued - 1)));
    EXPECT_EQ(audit.int64("SELECT count(*) FROM (SELECT end_user, lag(end_user) OVER "
                          "(ORDER BY event_id) AS previous" +
                              ours + ") s WHERE end_user <= previous",
                          p),
              0)
        << "event_id does not follow the order of the reads";
    EXPECT_EQ(audit.int64("SELECT count(*)" + ours +
                              " AND status = 'completed' AND database_name = $2"
                              " AND relation = 'public.customers' AND columns = ARRAY['phone']"
                              " AND row_count = 1",
                          {prefix, app_db}),
              queued);
    EXPECT_LT(audit.int64("SELECT max(event_id)" + ours, p), gap_id)
        << "the gap must come after the events queued before the loss";
    EXPECT_EQ(audit.int64("SELECT count(*) FROM pii_audit.access_log WHERE kind = "
                          "'label_change' AND database_name = $1",
                          {app_db}),
              1);
    EXPECT_EQ(audit.int64("SELECT count(*) FROM pii_audit.events WHERE kind <> 'gap'"),
              s1.events_enqueued);
    EXPECT_TRUE(trail_is_gapless_and_ordered(audit));

    // The trail carries on normally after the gap.
    const std::string after_gap = unique_marker("after-gap");
    app.exec("SET pii_audit.end_user = " + quote_literal(after_gap));
    for (int i = 0; i < kReadsAfterRecovery; ++i)
        EXPECT_EQ(
            app.exec("SELECT phone FROM customers WHERE id = " + std::to_string(i + 1)).rows(), 1);
    AuditStatus s3 = wait_for_drain(app, s1.events_enqueued, std::chrono::seconds(60), &drained);
    ASSERT_TRUE(drained) << describe(s3);
    EXPECT_EQ(s3.events_dropped, s1.events_dropped) << describe(s3);
    EXPECT_EQ(s3.events_enqueued, s1.events_enqueued + kReadsAfterRecovery) << describe(s3);
    EXPECT_EQ(
        audit.int64("SELECT count(*) FROM pii_audit.access_log WHERE end_user = $1", {after_gap}),
        kReadsAfterRecovery);
    EXPECT_GT(audit.int64("SELECT min(event_id) FROM pii_audit.access_log WHERE end_user = $1",
                          {after_gap}),
              gap_id);
    EXPECT_EQ(audit.int64("SELECT count(*) FROM pii_audit.access_log WHERE kind = 'gap'"), 1);
    EXPECT_TRUE(trail_is_gapless_and_ordered(audit));
}

}  // namespace
}  // namespace pii_it

namespace pii_it {
namespace {

// One CREATE TABLE whose 1,100 columns an event trigger labels queues 1,100 label changes at
// commit, each carrying the 10 kB text of the CREATE TABLE: 11 MB, while the worker drains
// what came first. The burst must be able to use the whole 16 MB queue (it used to wrap inside the 2 MB
// hot span and stop where the worker stood), and label changes wait for space like reads: none
// may be dropped.
TEST(QueueBurst, ElevenHundredLabelChangesInOneCommitAreAllStored) {
    Connection conn(main_cluster());
    ensure_customers_schema(conn);
    const std::string table = "burst_" + std::to_string(conn.backend_pid());
    std::string columns;
    for (int i = 1; i <= 1100; ++i) columns += (i > 1 ? ", c" : "c") + std::to_string(i) + " text";
    conn.exec_script(
        "CREATE FUNCTION label_every_column() RETURNS event_trigger LANGUAGE plpgsql AS $$"
        " DECLARE c record; BEGIN"
        "  FOR c IN SELECT a.attrelid::regclass AS rel, a.attname FROM pg_event_trigger_ddl_commands() d"
        "   JOIN pg_attribute a ON a.attrelid = d.objid AND a.attnum > 0 WHERE d.object_type = 'table'"
        "  LOOP EXECUTE format('SECURITY LABEL FOR pii ON COLUMN %s.%I IS %L', c.rel, c.attname, 'name');"
        "  END LOOP; END $$;"
        "CREATE EVENT TRIGGER label_every_column ON ddl_command_end WHEN TAG IN ('CREATE TABLE')"
        "  EXECUTE FUNCTION label_every_column();");
    conn.exec("SET pii_audit.max_query_length = '64kB'");
    const int64_t dropped_before = read_status(conn).events_dropped;
    try {
        conn.exec("CREATE TABLE " + table + " (" + columns + ")");
    } catch (...) {
        conn.exec_script("DROP EVENT TRIGGER label_every_column; DROP FUNCTION label_every_column();");
        throw;
    }
    conn.exec_script("DROP EVENT TRIGGER label_every_column; DROP FUNCTION label_every_column();");
    bool drained = false;
    AuditStatus s = wait_for_drain(conn, 0, kDrainTimeout, &drained);
    ASSERT_TRUE(drained) << describe(s);
    EXPECT_EQ(s.events_dropped, dropped_before) << describe(s);
    EXPECT_EQ(conn.int64("SELECT count(*) FROM pii_audit.label_changes WHERE relation = $1",
                         {"public." + table}),
              1100);
    conn.exec("DROP TABLE " + table);
}

}  // namespace
}  // namespace pii_it
