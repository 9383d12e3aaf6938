// Insider detection end to end, through a real server: reads become events, the worker scores
// them, and an explained alert lands in pii_audit.alerts with NOTIFY pii_audit_alerts. Each test
// uses its own login role (= its own peer group) and unique end users, so the other tests'
// traffic on the same cluster is neither a colleague nor a suspect here.
#include <gtest/gtest.h>
#include <sys/select.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "main_cluster.h"
#include "pg_client.h"

namespace pii_it {
namespace {

using namespace std::chrono_literals;

// The product's promise: an alert within 5 s of the read that raised it.
constexpr auto kAlertDeadline = 5s;

ConnectParams as_role(const std::string& role, const std::string& end_user = "",
                      const std::string& password = "") {
    ConnectParams p = main_cluster();
    p.values.emplace_back("user", role);
    if (!password.empty()) p.values.emplace_back("password", password);
    if (!end_user.empty()) p.values.emplace_back("options", "-c pii_audit.end_user=" + end_user);
    return p;
}

// Waits for NOTIFY pii_audit_alerts on `listener` until `deadline`; returns the alert ids seen.
std::vector<int64_t> wait_for_notifications(Connection& listener, Clock::time_point deadline,
                                            size_t want = 1) {
    std::vector<int64_t> ids;
    while (ids.size() < want) {
        PQconsumeInput(listener.get());
        while (PGnotify* n = PQnotifies(listener.get())) {
            if (std::string(n->relname) == "pii_audit_alerts") ids.push_back(std::stoll(n->extra));
            PQfreemem(n);
        }
        if (ids.size() >= want) break;
        auto left = deadline - Clock::now();
        if (left <= 0s) break;
        int fd = PQsocket(listener.get());
        fd_set set;
        FD_ZERO(&set);
        FD_SET(fd, &set);
        auto us = std::chrono::duration_cast<std::chrono::microseconds>(left).count();
        timeval tv{static_cast<time_t>(us / 1000000), static_cast<suseconds_t>(us % 1000000)};
        select(fd + 1, &set, nullptr, nullptr, &tv);
    }
    return ids;
}

struct AlertRow {
    int64_t id = 0;
    std::string actor, peer_group, detector, severity, explanation, status;
    int64_t score = 0;
    int64_t evidence = 0;  // how many evidence ids
};

std::optional<AlertRow> alert_by_id(Connection& conn, int64_t id) {
    Result r = conn.exec(
        "SELECT alert_id, actor, peer_group, detector, severity, explanation, status, score, "
        "cardinality(evidence) FROM pii_audit.alerts WHERE alert_id = $1",
        {std::to_string(id)});
    if (r.rows() != 1) return std::nullopt;
    AlertRow a;
    a.id = r.int64(0, 0);
    a.actor = r.text(0, 1);
    a.peer_group = r.text(0, 2);
    a.detector = r.text(0, 3);
    a.severity = r.text(0, 4);
    a.explanation = r.text(0, 5);
    a.status = r.text(0, 6);
    a.score = r.int64(0, 7);
    a.evidence = r.int64(0, 8);
    return a;
}

// A superuser connection to the main cluster with the test schema in place; IF NOT EXISTS
// notices are kept out of the test output.
std::unique_ptr<Connection> admin_connection() {
    auto admin = std::make_unique<Connection>(main_cluster());
    admin->exec("SET client_min_messages = warning");
    ensure_customers_schema(*admin);
    return admin;
}

class Insider : public testing::Test {
  protected:
    void SetUp() override {
        admin_ = admin_connection();
        admin_->exec_script(
            "CREATE TABLE IF NOT EXISTS public.sms_codes (phone text PRIMARY KEY, code text);"
            "INSERT INTO public.sms_codes SELECT phone, lpad((id * 7919 % 1000000)::text, 6, '0') "
            "  FROM public.customers ON CONFLICT DO NOTHING;"
            "SECURITY LABEL FOR pii ON COLUMN public.sms_codes.phone IS 'phone, subject_key';"
            "SECURITY LABEL FOR pii ON COLUMN public.sms_codes.code IS 'verification_code';");
    }

    // A login role of its own: its end users form one peer group that nothing else joins.
    std::string make_role(const std::string& what, const std::string& password = "") {
        std::string role = "pii_it_" + what + "_" + std::to_string(getpid());
        admin_->exec("DROP ROLE IF EXISTS " + role);
        admin_->exec("CREATE ROLE " + role + " LOGIN" +
                     (password.empty() ? "" : " PASSWORD " + quote_literal(password)));
        admin_->exec("GRANT SELECT ON public.customers, public.sms_codes TO " + role);
        return role;
    }

    std::unique_ptr<Connection> listen() {
        auto listener = std::make_unique<Connection>(main_cluster());
        listener->exec("LISTEN pii_audit_alerts");
        return listener;
    }

    std::unique_ptr<Connection> admin_;
};

TEST_F(Insider, ClerkReadingCodesAmongColleaguesWhoReadNoneIsAlertedWithinFiveSeconds) {
    const std::string role = make_role("counter");
    const std::string marker = unique_marker("insider");
    // A morning's ordinary work: four colleagues look up names and phones, no codes.
    for (int c = 0; c < 4; ++c) {
        Connection colleague(as_role(role, marker + "-colleague" + std::to_string(c)));
        for (int i = 1; i <= 30; ++i)
            colleague.exec("SELECT name, phone FROM customers WHERE id = $1",
                           {std::to_string((c * 30 + i) % kCustomerRows + 1)});
    }
    auto listener = listen();
    // Then one clerk reads 30 customers' verification codes within a few seconds.
    const std::string clerk = marker + "-clerk";
    Connection suspect(as_role(role, clerk));
    for (int i = 1; i <= 30; ++i)
        suspect.exec("SELECT code FROM sms_codes WHERE phone = '+86 138 0000 ' || lpad($1, 4, '0')",
                     {std::to_string(i)});
    const auto last_read = Clock::now();
    std::vector<int64_t> ids = wait_for_notifications(*listener, last_read + kAlertDeadline);
    ASSERT_FALSE(ids.empty()) << "no NOTIFY pii_audit_alerts within 5 s of the last read";
    auto alert = alert_by_id(*admin_, ids.front());
    ASSERT_TRUE(alert.has_value());
    EXPECT_EQ(alert->actor, clerk);
    EXPECT_EQ(alert->peer_group, role);
    EXPECT_EQ(alert->detector, "sensitive_categories");
    EXPECT_EQ(alert->status, "open");
    EXPECT_GE(alert->score, 50);
    EXPECT_NE(alert->explanation.find("read verification_code of"), std::string::npos)
        << alert->explanation;
    EXPECT_NE(alert->explanation.find("colleagues"), std::string::npos) << alert->explanation;
    EXPECT_GE(alert->evidence, 1);
    // The evidence is the clerk's own reads of the codes table.
    EXPECT_EQ(admin_->int64("SELECT count(*) FROM pii_audit.alerts a, unnest(a.evidence) id "
                            "JOIN pii_audit.events e ON e.event_id = id "
                            "WHERE a.alert_id = $1 AND (e.end_user <> $2 OR e.relation <> "
                            "'public.sms_codes')",
                            {std::to_string(alert->id), clerk}),
              0);
    // Nobody else in the group is a suspect.
    EXPECT_EQ(admin_->int64("SELECT count(*) FROM pii_audit.alerts WHERE peer_group = $1 AND "
                            "actor <> $2",
                            {role, clerk}),
              0);
    // A few more codes: no second alert of the same band (the officer already has one).
    for (int i = 31; i <= 33; ++i)
        suspect.exec("SELECT code FROM sms_codes WHERE phone = '+86 138 0000 ' || lpad($1, 4, '0')",
                     {std::to_string(i)});
    bool drained = false;
    wait_for_drain(*admin_, 0, kDrainTimeout, &drained);
    ASSERT_TRUE(drained);
    EXPECT_EQ(admin_->int64("SELECT count(*) FROM pii_audit.alerts WHERE actor = $1 AND "
                            "severity = $2 AND detector = 'sensitive_categories'",
                            {clerk, alert->severity}),
              1);
}

// COPY ... TO STDOUT through libpq, the data read and dropped; returns the rows copied.
int64_t copy_out(Connection& conn, const std::string& sql) {
    PGresult* start = PQexec(conn.get(), sql.c_str());
    const bool copying = PQresultStatus(start) == PGRES_COPY_OUT;
    const std::string start_error = PQresultErrorMessage(start);
    PQclear(start);
    if (!copying) throw std::runtime_error("COPY did not start: " + start_error);
    char* row = nullptr;
    int n;
    while ((n = PQgetCopyData(conn.get(), &row, 0)) > 0) PQfreemem(row);
    if (n == -2) throw std::runtime_error(PQerrorMessage(conn.get()));
    int64_t rows = -1;
    while (PGresult* end = PQgetResult(conn.get())) {
        if (PQresultStatus(end) == PGRES_COMMAND_OK) rows = std::stoll(PQcmdTuples(end));
        PQclear(end);
    }
    return rows;
}

// A team's month-end run on a fresh installation: every member exports about the same number
// of customers in one COPY. That is the team's day, not an insider; one member copying ten
// times what the others copied that day stands out from the team. (No norm is learned yet, so
// before cohorts the scorer said nothing about either.)
TEST_F(Insider, PeerGroupsSimultaneousBulkCopyIsQuietButTenTimesTheTeamIsAlerted) {
    const std::string role = make_role("month_end");
    const std::string marker = unique_marker("monthend");
    auto listener = listen();
    const int64_t excused_before =
        admin_->int64("SELECT team_excused FROM pii_audit.scorer_status");
    const std::string team_copy =
        "COPY (SELECT c.name, c.phone FROM customers c, generate_series(1, 20) g) TO STDOUT";
    for (int m = 0; m < 4; ++m) {
        Connection member(as_role(role, marker + "member" + std::to_string(m)));
        ASSERT_EQ(copy_out(member, team_copy), 20 * kCustomerRows);
    }
    bool drained = false;
    wait_for_drain(*admin_, 0, kDrainTimeout, &drained);
    ASSERT_TRUE(drained);
    EXPECT_EQ(admin_->int64("SELECT count(*) FROM pii_audit.access_log WHERE end_user LIKE $1 "
                            "AND command = 'COPY'",
                            {marker + "member%"}),
              4);
    EXPECT_TRUE(wait_for_notifications(*listener, Clock::now() + 1s).empty());
    EXPECT_EQ(admin_->int64("SELECT count(*) FROM pii_audit.alerts WHERE peer_group = $1", {role}),
              0);
    // The officer sees why it stayed quiet: members 3 and 4 were judged against the two before
    // them (the team's run) and excused; nothing is held at the end.
    EXPECT_TRUE(poll_until(std::chrono::seconds(10), [&] {
        return admin_->int64("SELECT team_excused FROM pii_audit.scorer_status") >=
               excused_before + 2;
    })) << admin_->text("SELECT row(s.*)::text FROM pii_audit.scorer_status s");
    EXPECT_EQ(admin_->int64("SELECT signals_held FROM pii_audit.scorer_status"), 0);

    const std::string bulk = marker + "bulk";
    Connection extra(as_role(role, bulk));
    ASSERT_EQ(copy_out(extra,
                       "COPY (SELECT c.name, c.phone FROM customers c, "
                       "generate_series(1, 200) g) TO STDOUT"),
              200 * kCustomerRows);
    std::vector<int64_t> ids = wait_for_notifications(*listener, Clock::now() + kAlertDeadline);
    ASSERT_FALSE(ids.empty()) << "no alert within 5 s of a COPY ten times the team's";
    auto alert = alert_by_id(*admin_, ids.front());
    ASSERT_TRUE(alert.has_value());
    EXPECT_EQ(alert->actor, bulk);
    EXPECT_EQ(alert->peer_group, role);
    EXPECT_EQ(alert->detector, "bulk_reading");
    EXPECT_NE(alert->explanation.find("read 20000 rows in one statement"), std::string::npos)
        << alert->explanation;
    EXPECT_NE(alert->explanation.find("4 colleagues"), std::string::npos) << alert->explanation;
    EXPECT_NE(alert->explanation.find("10.0 times theirs"), std::string::npos)
        << alert->explanation;
    EXPECT_EQ(admin_->int64("SELECT count(*) FROM pii_audit.alerts WHERE peer_group = $1 AND "
                            "actor <> $2",
                            {role, bulk}),
              0);
}

// Known events are the DBA's: constraints say what a row must be, officers may read them.
TEST_F(Insider, KnownEventsRefuseMalformedRowsAndReachTheWorker) {
    const std::string name = unique_marker("audit week");
    Result bad =
        admin_->exec_raw("INSERT INTO pii_audit.known_events (event_name, starts, ends) VALUES ('" +
                         name + "', now(), now() - interval '1 day')");
    EXPECT_EQ(bad.sqlstate(), "23514");
    EXPECT_NE(bad.error().find("known_events_ends_after_starts"), std::string::npos) << bad.error();
    bad = admin_->exec_raw(
        "INSERT INTO pii_audit.known_events (event_name, starts, ends) VALUES ('  ', now(), "
        "now() + interval '1 day')");
    EXPECT_EQ(bad.sqlstate(), "23514");
    EXPECT_NE(bad.error().find("known_events_name_not_blank"), std::string::npos) << bad.error();
    EXPECT_EQ(
        admin_->int64("SELECT count(*) FROM pii_audit.known_events WHERE event_name = $1", {name}),
        0);

    admin_->exec(
        "INSERT INTO pii_audit.known_events (event_name, peer_group, starts, ends) "
        "VALUES ($1, 'back_office', now(), now() + interval '5 days')",
        {name});
    // The worker reloads its inputs after the commit and keeps scoring.
    std::this_thread::sleep_for(300ms);
    Connection reader(as_role(make_role("known_events"), unique_marker("reader")));
    reader.exec("SELECT name FROM customers WHERE id = 3");
    bool drained = false;
    wait_for_drain(*admin_, 0, kDrainTimeout, &drained);
    ASSERT_TRUE(drained);
    EXPECT_EQ(admin_->text("SELECT state FROM pii_audit.scorer_status"), "running");
    EXPECT_EQ(admin_->text("SELECT string_agg(privilege_type, ',' ORDER BY privilege_type) FROM "
                           "information_schema.role_table_grants WHERE table_schema = "
                           "'pii_audit' AND table_name = 'known_events' AND grantee = "
                           "'pii_audit_officer'"),
              "SELECT");
    admin_->exec("DELETE FROM pii_audit.known_events WHERE event_name = $1", {name});
}

TEST_F(Insider, DepartedAccountIsACriticalAlert) {
    const std::string role = make_role("departed");
    const std::string leaver = unique_marker("leaver");
    auto listener = listen();
    admin_->exec("SELECT pii_audit.mark_departed($1, now() - interval '1 day')", {leaver});
    Connection conn(as_role(role, leaver));
    conn.exec("SELECT name FROM customers WHERE id = 7");
    std::vector<int64_t> ids = wait_for_notifications(*listener, Clock::now() + kAlertDeadline);
    ASSERT_FALSE(ids.empty());
    auto alert = alert_by_id(*admin_, ids.front());
    ASSERT_TRUE(alert.has_value());
    EXPECT_EQ(alert->actor, leaver);
    EXPECT_EQ(alert->detector, "departed_or_dormant");
    EXPECT_EQ(alert->severity, "critical");

    // Cleared (a mistaken mark): later reads raise nothing new.
    admin_->exec("SELECT pii_audit.clear_departed($1)", {leaver});
    const int64_t before = admin_->int64("SELECT count(*) FROM pii_audit.alerts WHERE actor = $1",
                                         {leaver});
    std::this_thread::sleep_for(300ms);  // the worker reloads after the commit
    conn.exec("SELECT name FROM customers WHERE id = 8");
    bool drained = false;
    wait_for_drain(*admin_, 0, kDrainTimeout, &drained);
    ASSERT_TRUE(drained);
    EXPECT_EQ(admin_->int64("SELECT count(*) FROM pii_audit.alerts WHERE actor = $1", {leaver}),
              before);
}

// run-integration.sh makes members of pii_it_password_users log in with a password.
TEST_F(Insider, FailedLoginBurstThenSuccessIsAlerted) {
    admin_->exec_script(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
        "'pii_it_password_users') THEN CREATE ROLE pii_it_password_users; END IF; END $$;");
    const std::string role = make_role("stuffed", "correct horse");
    admin_->exec("GRANT pii_it_password_users TO " + role);
    auto listener = listen();
    for (int i = 0; i < 8; ++i) {
        try {
            Connection bad(as_role(role, "", "wrong password " + std::to_string(i)));
            FAIL() << "a wrong password was accepted";
        } catch (const std::runtime_error& e) {
            EXPECT_NE(std::string(e.what()).find("password authentication failed"),
                      std::string::npos)
                << e.what();
        }
    }
    Connection good(as_role(role, "", "correct horse"));
    std::vector<int64_t> ids = wait_for_notifications(*listener, Clock::now() + kAlertDeadline);
    ASSERT_FALSE(ids.empty());
    auto alert = alert_by_id(*admin_, ids.front());
    ASSERT_TRUE(alert.has_value());
    EXPECT_EQ(alert->actor, role);
    EXPECT_EQ(alert->detector, "login_abuse");
    EXPECT_NE(alert->explanation.find("8 failed logins"), std::string::npos) << alert->explanation;
    // Every attempt is in the trail, the failures as failed.
    EXPECT_EQ(admin_->int64("SELECT count(*) FROM pii_audit.events WHERE kind = 'login' AND "
                            "session_user_name = $1 AND status = 'failed'",
                            {role}),
              8);
    EXPECT_EQ(admin_->int64("SELECT count(*) FROM pii_audit.events WHERE kind = 'login' AND "
                            "session_user_name = $1 AND status = 'completed'",
                            {role}),
              1);
}

TEST_F(Insider, PermissionDeniedReadIsRecordedAsDenied) {
    const std::string role = make_role("denied");
    admin_->exec("REVOKE SELECT ON public.sms_codes FROM " + role);
    const std::string who = unique_marker("denied");
    Connection conn(as_role(role, who));
    Result r = conn.exec_raw("SELECT code FROM sms_codes WHERE phone = '+86 138 0000 0001'");
    EXPECT_EQ(r.sqlstate(), "42501");  // the user still gets the original error
    bool drained = false;
    wait_for_drain(*admin_, 0, kDrainTimeout, &drained);
    ASSERT_TRUE(drained);
    Result e = admin_->exec(
        "SELECT status, relation, columns::text, categories::text, row_count FROM "
        "pii_audit.access_log WHERE end_user = $1",
        {who});
    ASSERT_EQ(e.rows(), 1);
    EXPECT_EQ(e.text(0, 0), "denied");
    EXPECT_EQ(e.text(0, 1), "public.sms_codes");
    EXPECT_EQ(e.text(0, 2), "{phone,code}");
    EXPECT_EQ(e.text(0, 3), "{phone,verification_code}");
    EXPECT_EQ(e.int64(0, 4), 0);
}

}  // namespace
}  // namespace pii_it

namespace pii_it {
namespace {

// Declared business relations: the DBA's query is run by the worker; a bad one is reported in
// pii_audit.scorer_status and never stops the worker.
class BusinessRelations : public testing::Test {
  protected:
    void SetUp() override {
        admin_ = admin_connection();
        admin_->exec_script(
            "CREATE TABLE IF NOT EXISTS public.it_tickets (clerk text, customer_phone text, "
            "  opened_at timestamptz DEFAULT now());");
    }
    void TearDown() override {
        admin_->exec("ALTER SYSTEM RESET pii_audit.business_relations_query");
        admin_->exec("ALTER SYSTEM RESET pii_audit.business_relations_interval");
        admin_->exec("SELECT pg_reload_conf()");
    }
    void set_query(const std::string& query) {
        admin_->exec("ALTER SYSTEM SET pii_audit.business_relations_query = " +
                     quote_literal(query));
        admin_->exec("ALTER SYSTEM SET pii_audit.business_relations_interval = '1s'");
        admin_->exec("SELECT pg_reload_conf()");
    }
    std::unique_ptr<Connection> admin_;
};

TEST_F(BusinessRelations, TicketsAreLoadedAndABadQueryIsReportedNotFatal) {
    EXPECT_EQ(admin_->text("SELECT state FROM pii_audit.scorer_status"), "running");
    const int64_t before = admin_->int64("SELECT relations FROM pii_audit.scorer_status");
    const std::string clerk = unique_marker("ticket-clerk");
    admin_->exec("INSERT INTO public.it_tickets (clerk, customer_phone) SELECT $1, phone "
                 "FROM public.customers WHERE id <= 5",
                 {clerk});
    set_query(
        "SELECT clerk, customer_phone, opened_at FROM public.it_tickets "
        "WHERE opened_at > coalesce($1, now() - interval '30 days')");
    EXPECT_TRUE(poll_until(std::chrono::seconds(10), [&] {
        return admin_->int64("SELECT relations FROM pii_audit.scorer_status") >= before + 5;
    })) << admin_->text("SELECT row(s.*)::text FROM pii_audit.scorer_status s");
    EXPECT_EQ(admin_->text("SELECT coalesce(last_error, '') FROM pii_audit.scorer_status"), "");
    // Only new rows are asked for afterwards ($1): five more tickets, five more relations.
    const int64_t loaded = admin_->int64("SELECT relations FROM pii_audit.scorer_status");
    admin_->exec("INSERT INTO public.it_tickets (clerk, customer_phone) SELECT $1, phone "
                 "FROM public.customers WHERE id BETWEEN 6 AND 10",
                 {clerk});
    EXPECT_TRUE(poll_until(std::chrono::seconds(10), [&] {
        return admin_->int64("SELECT relations FROM pii_audit.scorer_status") == loaded + 5;
    })) << admin_->text("SELECT row(s.*)::text FROM pii_audit.scorer_status s");

    // Wrong shape, then a query that fails: reported, and events are still stored.
    set_query("SELECT 1");
    EXPECT_TRUE(poll_until(std::chrono::seconds(10), [&] {
        return admin_->text("SELECT coalesce(last_error, '') FROM pii_audit.scorer_status")
                   .find("three columns") != std::string::npos;
    })) << admin_->text("SELECT row(s.*)::text FROM pii_audit.scorer_status s");
    set_query("SELECT clerk, customer_phone, opened_at FROM public.no_such_table");
    EXPECT_TRUE(poll_until(std::chrono::seconds(10), [&] {
        return admin_->text("SELECT coalesce(last_error, '') FROM pii_audit.scorer_status")
                   .find("no_such_table") != std::string::npos;
    })) << admin_->text("SELECT row(s.*)::text FROM pii_audit.scorer_status s");
    EXPECT_EQ(admin_->text("SELECT state FROM pii_audit.scorer_status"), "running");
    const std::string reader = unique_marker("after-bad-query");
    admin_->exec("SET pii_audit.end_user = " + quote_literal(reader));
    admin_->exec("SELECT phone FROM customers WHERE id = 3");
    admin_->exec("RESET pii_audit.end_user");
    bool drained = false;
    wait_for_drain(*admin_, 0, kDrainTimeout, &drained);
    ASSERT_TRUE(drained);
    EXPECT_EQ(admin_->int64("SELECT count(*) FROM pii_audit.access_log WHERE end_user = $1",
                            {reader}),
              1);
}

}  // namespace
}  // namespace pii_it
