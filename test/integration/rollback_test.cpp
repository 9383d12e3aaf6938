// A read is a read even when its transaction rolls back or its statement fails part-way: the
// trail must have it (as 'completed' or 'failed'), with what the client actually received.
#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "main_cluster.h"
#include "pg_client.h"

namespace pii_it {
namespace {

constexpr const char* kFailingRead =
    "SELECT phone, 1/(id-5) FROM customers WHERE id BETWEEN 1 AND 10";

struct FailedQuery {
    int rows_received = 0;
    std::string sqlstate;
    std::string error;
};

// Runs `sql` in single-row mode, so that rows the server sends before the error are seen.
FailedQuery run_until_error(Connection& conn, const std::string& sql) {
    if (!PQsendQuery(conn.get(), sql.c_str()))
        throw std::runtime_error("PQsendQuery: " + std::string(PQerrorMessage(conn.get())));
    if (!PQsetSingleRowMode(conn.get())) throw std::runtime_error("PQsetSingleRowMode failed");
    FailedQuery out;
    while (PGresult* raw = PQgetResult(conn.get())) {
        Result r(raw);
        if (r.status() == PGRES_SINGLE_TUPLE) {
            ++out.rows_received;
        } else if (r.status() == PGRES_FATAL_ERROR) {
            out.sqlstate = r.sqlstate();
            out.error = r.error();
        }
    }
    return out;
}

class Rollback : public testing::Test {
  protected:
    void SetUp() override {
        conn_ = std::make_unique<Connection>(main_cluster());
        ensure_customers_schema(*conn_);
        before_ = read_status(*conn_);
    }

    // The trail rows of one end user, oldest first.
    Result rows_of(const std::string& end_user) {
        return conn_->exec(
            "SELECT status, command, relation, array_to_string(columns, ','), row_count, "
            "query_text, kind, backend_pid FROM pii_audit.access_log WHERE end_user = $1 "
            "ORDER BY event_id",
            {end_user});
    }

    std::unique_ptr<Connection> conn_;
    AuditStatus before_;
};

TEST_F(Rollback, ReadsInRolledBackTransactionsAndFailedStatementsAreRecorded) {
    Connection& c = *conn_;
    const std::string pid = std::to_string(c.backend_pid());

    // (a) A read in a transaction that rolls back; the end user is set with SET LOCAL.
    const std::string rolled_back = unique_marker("rb");
    c.exec("BEGIN");
    c.exec("SET LOCAL pii_audit.end_user = " + quote_literal(rolled_back));
    EXPECT_EQ(c.exec("SELECT phone FROM customers WHERE id = 1").rows(), 1);
    c.exec("ROLLBACK");

    // (b) A statement that fails part-way (division by zero at id 5), outside a transaction.
    const std::string failed = unique_marker("fail");
    c.exec("SET pii_audit.end_user = " + quote_literal(failed));
    FailedQuery b = run_until_error(c, kFailingRead);
    EXPECT_EQ(b.sqlstate, "22012") << b.error;
    EXPECT_EQ(b.rows_received, 4) << "rows 1..4 come before the division by zero";

    // (c) A completed read, then a failing one, in a transaction that is rolled back.
    const std::string both = unique_marker("both");
    c.exec("SET pii_audit.end_user = " + quote_literal(both));
    c.exec("BEGIN");
    EXPECT_EQ(c.exec("SELECT name FROM customers WHERE id = 2").rows(), 1);
    FailedQuery cq = run_until_error(c, kFailingRead);
    EXPECT_EQ(cq.sqlstate, "22012") << cq.error;
    c.exec("ROLLBACK");

    // (d) A read inside a savepoint that is rolled back, in a transaction that commits.
    const std::string savepoint = unique_marker("sp");
    c.exec("SET pii_audit.end_user = " + quote_literal(savepoint));
    c.exec("BEGIN");
    c.exec("SAVEPOINT s");
    EXPECT_EQ(c.exec("SELECT name, phone FROM customers WHERE id IN (3, 4)").rows(), 2);
    c.exec("ROLLBACK TO SAVEPOINT s");
    c.exec("COMMIT");
    c.exec("RESET pii_audit.end_user");

    constexpr int kExpectedEvents = 5;
    bool drained = false;
    AuditStatus after = wait_for_drain(c, before_.events_enqueued, kDrainTimeout, &drained);
    ASSERT_TRUE(drained) << describe(after);
    EXPECT_EQ(after.events_enqueued - before_.events_enqueued, kExpectedEvents) << describe(after);
    EXPECT_EQ(after.events_dropped, 0) << describe(after);

    {
        SCOPED_TRACE("(a) rolled-back transaction");
        Result r = rows_of(rolled_back);
        ASSERT_EQ(r.rows(), 1);
        EXPECT_EQ(r.text(0, 0), "completed");
        EXPECT_EQ(r.text(0, 1), "SELECT");
        EXPECT_EQ(r.text(0, 2), "public.customers");
        EXPECT_EQ(r.text(0, 3), "phone");
        EXPECT_EQ(r.int64(0, 4), 1);
        EXPECT_EQ(r.text(0, 6), "read");
        EXPECT_EQ(r.text(0, 7), pid);
    }
    {
        SCOPED_TRACE("(b) statement failed part-way");
        Result r = rows_of(failed);
        ASSERT_EQ(r.rows(), 1);
        EXPECT_EQ(r.text(0, 0), "failed");
        EXPECT_EQ(r.text(0, 1), "SELECT");
        EXPECT_EQ(r.text(0, 3), "phone");
        EXPECT_EQ(r.int64(0, 4), b.rows_received)
            << "row_count must be the rows the client received before the error";
        std::string text = r.text(0, 5);
        EXPECT_EQ(text.rfind("SELECT phone, ", 0), 0u) << text;
        EXPECT_EQ(text.find("1/(id-5)"), std::string::npos) << "constants kept: " << text;
        EXPECT_EQ(text.find("BETWEEN 1 AND 10"), std::string::npos) << "constants kept: " << text;
        EXPECT_EQ(r.text(0, 7), pid);
    }
    {
        SCOPED_TRACE("(c) completed then failed read, transaction rolled back");
        Result r = rows_of(both);
        ASSERT_EQ(r.rows(), 2);
        EXPECT_EQ(r.text(0, 0), "completed");
        EXPECT_EQ(r.text(0, 3), "name");
        EXPECT_EQ(r.int64(0, 4), 1);
        EXPECT_EQ(r.text(1, 0), "failed");
        EXPECT_EQ(r.text(1, 3), "phone");
        EXPECT_EQ(r.int64(1, 4), cq.rows_received);
    }
    {
        SCOPED_TRACE("(d) read in a rolled-back savepoint");
        Result r = rows_of(savepoint);
        ASSERT_EQ(r.rows(), 1);
        EXPECT_EQ(r.text(0, 0), "completed");
        EXPECT_EQ(r.text(0, 3), "name,phone");
        EXPECT_EQ(r.int64(0, 4), 2);
    }
    EXPECT_TRUE(trail_is_gapless_and_ordered(c));
}

}  // namespace
}  // namespace pii_it
