// Storing events must survive what goes wrong around it:
// - an event that can never be stored (here: it violates a CHECK constraint a superuser added
//   to the trail) is skipped and counted in a gap row, while the events around it are stored;
// - a PostgreSQL error in insider scoring (here: the alert cannot be inserted) stops scoring,
//   never the storing of events.
// Both used to make the worker exit and retry the same batch forever, storing nothing.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "main_cluster.h"
#include "pg_client.h"

namespace pii_it {
namespace {

std::string row_of_status(Connection& conn) {
    return conn.text("SELECT row(s.*)::text FROM pii_audit.status s");
}

TEST(WorkerFailure, AnEventThatCannotBeStoredIsSkippedAndCountedTheRestIsStored) {
    Connection admin(main_cluster());
    ensure_customers_schema(admin);
    Connection poisoned(main_cluster());
    Connection healthy(main_cluster());
    const std::string marker = unique_marker("poison");
    poisoned.exec("SET pii_audit.end_user = " + quote_literal(marker + "-poisoned"));
    healthy.exec("SET pii_audit.end_user = " + quote_literal(marker + "-healthy"));

    // Small slices of the subject index, so that the entries of the events stored one by one
    // below are written to it (not only read in place from their groups).
    admin.exec("ALTER SYSTEM SET pii_audit.subject_index_slice = 100");
    admin.exec("SELECT pg_reload_conf()");
    SqlOnExit reset_slice(admin, {"ALTER SYSTEM RESET pii_audit.subject_index_slice",
                                  "SELECT pg_reload_conf()"});
    // The maintenance process merges slices, so their number may shrink: what must grow is
    // how far the written slices reach.
    const int64_t slices_reach_before = admin.int64(
        "SELECT coalesce(max(last_event_id), 0) FROM pii_audit.trail_subject_slices");

    bool drained = false;
    wait_for_drain(admin, 0, kDrainTimeout, &drained);  // the logins are stored before
    ASSERT_TRUE(drained);

    // Every event of one backend now violates the trail's constraints. NOT VALID: the rows
    // already stored are not checked.
    admin.exec("ALTER TABLE pii_audit.trail_groups ADD CONSTRAINT it_poison CHECK (backend_pid <> " +
               std::to_string(poisoned.backend_pid()) + ") NOT VALID");
    SqlOnExit cleanup(admin, {"ALTER TABLE pii_audit.trail_groups DROP CONSTRAINT IF EXISTS it_poison"});

    for (int i = 1; i <= 3; ++i) {
        healthy.exec("SELECT phone FROM customers WHERE id = " + std::to_string(i));
        poisoned.exec("SELECT phone FROM customers WHERE id = " + std::to_string(i));
    }
    healthy.exec("SELECT phone FROM customers WHERE id = 4");
    healthy.exec("SELECT phone FROM customers");  // every subject: the slice is due

    AuditStatus s = wait_for_drain(admin, 0, std::chrono::seconds(90), &drained);
    ASSERT_TRUE(drained) << "the worker never got past the unstorable events: "
                         << row_of_status(admin);
    EXPECT_EQ(s.state, "running") << row_of_status(admin);
    EXPECT_EQ(admin.int64("SELECT count(*) FROM pii_audit.access_log WHERE end_user = $1",
                          {marker + "-healthy"}),
              5);
    EXPECT_EQ(admin.int64("SELECT count(*) FROM pii_audit.access_log WHERE end_user = $1",
                          {marker + "-poisoned"}),
              0);
    Result gap = admin.exec(
        "SELECT sum(row_count), string_agg(detail, ' | ') FROM pii_audit.access_log "
        "WHERE kind = 'gap' AND detail LIKE '%could not be stored%'");
    ASSERT_EQ(gap.rows(), 1);
    ASSERT_FALSE(gap.is_null(0, 0)) << "no gap row says events could not be stored";
    EXPECT_EQ(gap.int64(0, 0), 3);
    EXPECT_NE(gap.text(0, 1).find("it_poison"), std::string::npos) << gap.text(0, 1);
    EXPECT_TRUE(trail_is_gapless_and_ordered(admin));
    // The subject index holds the stored events' reads, each under its own group, and nothing
    // of the skipped ones.
    EXPECT_GT(admin.int64("SELECT coalesce(max(last_event_id), 0) FROM pii_audit.trail_subject_slices"),
              slices_reach_before);
    EXPECT_EQ(admin.int64("SELECT count(*) FROM pii_audit.trail_groups g WHERE g.first_event_id > "
                          "(SELECT max(last_event_id) FROM pii_audit.trail_subject_slices)"),
              0)
        << "the events stored one by one are not all in a written slice";
    for (int i : {1, 2, 4, 50}) {
        const std::string phone = "+86 138 0000 " + std::string(i < 10 ? "000" : "00") + std::to_string(i);
        const std::string read_by =
            "SELECT count(*) FROM pii_audit.subject_access($1) WHERE end_user = $2 AND match = 'recorded'";
        EXPECT_EQ(admin.int64(read_by, {phone, marker + "-healthy"}), i <= 4 ? 2 : 1) << phone;
        EXPECT_EQ(admin.int64(read_by, {phone, marker + "-poisoned"}), 0) << phone;
    }

    // Once the cause is gone, the same backend's events are stored again, in the normal way.
    admin.exec("ALTER TABLE pii_audit.trail_groups DROP CONSTRAINT it_poison");
    // The slice size back to its default, before the next event: the worker reloads its
    // settings before it stores a batch, so once this event is stored no reload is left
    // pending to land in a later test.
    admin.exec("ALTER SYSTEM RESET pii_audit.subject_index_slice");
    admin.exec("SELECT pg_reload_conf()");
    poisoned.exec("SELECT phone FROM customers WHERE id = 5");
    s = wait_for_drain(admin, 0, kDrainTimeout, &drained);
    ASSERT_TRUE(drained) << row_of_status(admin);
    EXPECT_EQ(admin.int64("SELECT count(*) FROM pii_audit.access_log WHERE end_user = $1",
                          {marker + "-poisoned"}),
              1);
}

// When not even the gap row can be stored (here a constraint refuses gap rows too), the
// events around it are still stored; the loss is counted with the drops and recorded by the
// first gap row that can be stored.
TEST(WorkerFailure, AGapRowThatCannotBeStoredDoesNotBlockTheTrail) {
    Connection admin(main_cluster());
    ensure_customers_schema(admin);
    Connection poisoned(main_cluster());
    Connection healthy(main_cluster());
    const std::string marker = unique_marker("gapless");
    poisoned.exec("SET pii_audit.end_user = " + quote_literal(marker + "-poisoned"));
    healthy.exec("SET pii_audit.end_user = " + quote_literal(marker + "-healthy"));
    bool drained = false;
    AuditStatus s0 = wait_for_drain(admin, 0, kDrainTimeout, &drained);
    ASSERT_TRUE(drained);
    const int64_t gaps_before = admin.int64(
        "SELECT coalesce(sum(row_count), 0) FROM pii_audit.access_log WHERE kind = 'gap'");

    admin.exec("ALTER TABLE pii_audit.trail_groups ADD CONSTRAINT it_no_gaps CHECK (kind <> 'gap' AND "
               "backend_pid <> " + std::to_string(poisoned.backend_pid()) + ") NOT VALID");
    SqlOnExit cleanup(admin, {"ALTER TABLE pii_audit.trail_groups DROP CONSTRAINT IF EXISTS it_no_gaps"});
    for (int i = 1; i <= 2; ++i) {
        healthy.exec("SELECT phone FROM customers WHERE id = " + std::to_string(i));
        poisoned.exec("SELECT phone FROM customers WHERE id = " + std::to_string(i));
    }
    AuditStatus s1 = wait_for_drain(admin, 0, std::chrono::seconds(90), &drained);
    ASSERT_TRUE(drained) << row_of_status(admin);
    EXPECT_EQ(s1.state, "running") << row_of_status(admin);
    EXPECT_EQ(admin.int64("SELECT count(*) FROM pii_audit.access_log WHERE end_user = $1",
                          {marker + "-healthy"}),
              2);
    EXPECT_EQ(s1.events_dropped - s0.events_dropped, 2) << row_of_status(admin);

    admin.exec("ALTER TABLE pii_audit.trail_groups DROP CONSTRAINT it_no_gaps");
    healthy.exec("SELECT phone FROM customers WHERE id = 3");
    ASSERT_TRUE(poll_until(std::chrono::seconds(30), [&] {
        return admin.int64("SELECT coalesce(sum(row_count), 0) FROM pii_audit.access_log "
                           "WHERE kind = 'gap'") >= gaps_before + 2;
    })) << "no gap row reports the two events that could not be stored";
    EXPECT_TRUE(trail_is_gapless_and_ordered(admin));
}

TEST(WorkerFailure, AnErrorInScoringStopsScoringNotStoring) {
    Connection admin(main_cluster());
    ensure_customers_schema(admin);
    const std::string leaver = unique_marker("scoring-fails");
    admin.exec("SELECT pii_audit.mark_departed($1, now() - interval '1 day')", {leaver});
    // Any alert now fails to insert.
    admin.exec("ALTER TABLE pii_audit.alerts ADD CONSTRAINT it_no_alerts CHECK (false) NOT VALID");
    // Scoring restarts from its last save on the reload.
    SqlOnExit restore(admin, {"ALTER TABLE pii_audit.alerts DROP CONSTRAINT IF EXISTS it_no_alerts",
                              "SELECT pii_audit.clear_departed(" + quote_literal(leaver) + ")",
                              "SELECT pg_reload_conf()"});

    Connection conn(main_cluster());
    conn.exec("SET pii_audit.end_user = " + quote_literal(leaver));
    conn.exec("SELECT name FROM customers WHERE id = 7");  // a departed account: critical alert
    conn.exec("SELECT name FROM customers WHERE id = 8");

    bool drained = false;
    AuditStatus s = wait_for_drain(admin, 0, kDrainTimeout, &drained);
    ASSERT_TRUE(drained) << "a failing alert insert stopped the storing of events: "
                         << row_of_status(admin);
    EXPECT_EQ(s.state, "running");
    EXPECT_EQ(admin.int64("SELECT count(*) FROM pii_audit.access_log WHERE end_user = $1",
                          {leaver}),
              2);
    EXPECT_EQ(admin.text("SELECT state FROM pii_audit.scorer_status"), "stopped after a failure");
    EXPECT_NE(admin.text("SELECT last_error FROM pii_audit.scorer_status").find("it_no_alerts"),
              std::string::npos)
        << admin.text("SELECT last_error FROM pii_audit.scorer_status");

    // Scoring comes back on a reload once the cause is gone.
    admin.exec("ALTER TABLE pii_audit.alerts DROP CONSTRAINT it_no_alerts");
    admin.exec("SELECT pg_reload_conf()");
    conn.exec("SELECT name FROM customers WHERE id = 9");
    EXPECT_TRUE(poll_until(std::chrono::seconds(30), [&] {
        return admin.text("SELECT state FROM pii_audit.scorer_status") == "running";
    })) << admin.text("SELECT row(s.*)::text FROM pii_audit.scorer_status s");
}

}  // namespace
}  // namespace pii_it
