#include "pg_client.h"

#include <cerrno>
#include <cstdlib>
#include <sstream>
#include <thread>

namespace pii_it {

std::string env_or_throw(const char* name) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0')
        throw std::runtime_error(std::string("environment variable ") + name +
                                 " is not set: run these tests through "
                                 "test/integration/run-integration.sh (or ctest)");
    return value;
}

ConnectParams main_cluster(const std::string& dbname) {
    // The wrapper exports PGHOST/PGPORT/PGUSER/PGDATABASE; check them so that a run outside it
    // fails clearly instead of reaching some other server.
    env_or_throw("PGHOST");
    env_or_throw("PGPORT");
    ConnectParams params;
    if (!dbname.empty()) params.values.emplace_back("dbname", dbname);
    params.values.emplace_back("application_name", "pii_audit_integration");
    return params;
}

namespace {

// A cluster of run-integration.sh other than main, by the prefix of its environment variables.
ConnectParams cluster_from_env(const std::string& prefix, const std::string& dbname) {
    ConnectParams params;
    params.values.emplace_back("host", env_or_throw((prefix + "_HOST").c_str()));
    params.values.emplace_back("port", env_or_throw((prefix + "_PORT").c_str()));
    params.values.emplace_back("user", "postgres");
    params.values.emplace_back("dbname", dbname);
    params.values.emplace_back("application_name", "pii_audit_integration");
    return params;
}

}  // namespace

ConnectParams stall_cluster(const std::string& dbname) {
    return cluster_from_env("PII_AUDIT_IT_STALL", dbname);
}

ConnectParams drop_cluster(const std::string& dbname) {
    return cluster_from_env("PII_AUDIT_IT_DROP", dbname);
}

std::string Result::text(int row, int column) const {
    if (row >= rows() || column >= columns())
        throw std::runtime_error("result has no row " + std::to_string(row) + " column " +
                                 std::to_string(column));
    return PQgetvalue(result_.get(), row, column);
}

int64_t Result::int64(int row, int column) const {
    if (is_null(row, column))
        throw std::runtime_error("NULL where a number was expected (row " + std::to_string(row) +
                                 ", column " + std::to_string(column) + ")");
    std::string value = text(row, column);
    errno = 0;
    char* end = nullptr;
    long long parsed = std::strtoll(value.c_str(), &end, 10);
    if (errno != 0 || end == value.c_str() || *end != '\0')
        throw std::runtime_error("not an integer: '" + value + "'");
    return parsed;
}

std::string Result::sqlstate() const {
    const char* code = PQresultErrorField(result_.get(), PG_DIAG_SQLSTATE);
    return code ? code : "";
}

std::string Result::error() const {
    const char* message = PQresultErrorMessage(result_.get());
    return message ? message : "";
}

Connection::Connection(const ConnectParams& params) {
    std::vector<const char*> keys;
    std::vector<const char*> values;
    for (const auto& [key, value] : params.values) {
        keys.push_back(key.c_str());
        values.push_back(value.c_str());
    }
    keys.push_back(nullptr);
    values.push_back(nullptr);
    conn_ = PQconnectdbParams(keys.data(), values.data(), 0);
    if (conn_ == nullptr) throw std::runtime_error("PQconnectdbParams: out of memory");
    if (PQstatus(conn_) != CONNECTION_OK) {
        std::string message = PQerrorMessage(conn_);
        PQfinish(conn_);
        conn_ = nullptr;
        throw std::runtime_error("cannot connect: " + message);
    }
}

Connection::~Connection() {
    if (conn_) PQfinish(conn_);
}

Result Connection::exec_raw(const std::string& sql) {
    Result result(PQexec(conn_, sql.c_str()));
    if (result.get() == nullptr)
        throw std::runtime_error("PQexec failed: " + std::string(PQerrorMessage(conn_)));
    return result;
}

namespace {

void require_success(const Result& result, const std::string& sql) {
    ExecStatusType status = result.status();
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
        throw std::runtime_error("statement failed: " + sql + "\n  " + result.error());
}

}  // namespace

Result Connection::exec(const std::string& sql) {
    Result result = exec_raw(sql);
    require_success(result, sql);
    return result;
}

Result Connection::exec(const std::string& sql, const std::vector<std::string>& params) {
    if (params.empty()) return exec(sql);
    std::vector<const char*> values;
    for (const auto& value : params) values.push_back(value.c_str());
    Result result(PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr,
                               values.data(), nullptr, nullptr, 0));
    if (result.get() == nullptr)
        throw std::runtime_error("PQexecParams failed: " + std::string(PQerrorMessage(conn_)));
    require_success(result, sql);
    return result;
}

std::vector<Result> Connection::exec_script(const std::string& sql) {
    if (!PQsendQuery(conn_, sql.c_str()))
        throw std::runtime_error("PQsendQuery failed: " + std::string(PQerrorMessage(conn_)));
    std::vector<Result> results;
    std::string failure;
    while (PGresult* raw = PQgetResult(conn_)) {
        Result result(raw);
        ExecStatusType status = result.status();
        if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK && failure.empty())
            failure = result.error();
        results.push_back(std::move(result));
    }
    if (!failure.empty()) throw std::runtime_error("script failed: " + sql + "\n  " + failure);
    return results;
}

int64_t Connection::int64(const std::string& sql, const std::vector<std::string>& params) {
    Result result = exec(sql, params);
    if (result.rows() != 1 || result.columns() != 1)
        throw std::runtime_error("expected one value from: " + sql + " (got " +
                                 std::to_string(result.rows()) + " rows)");
    return result.int64(0, 0);
}

std::string Connection::text(const std::string& sql, const std::vector<std::string>& params) {
    Result result = exec(sql, params);
    if (result.rows() != 1 || result.columns() != 1)
        throw std::runtime_error("expected one value from: " + sql + " (got " +
                                 std::to_string(result.rows()) + " rows)");
    return result.text(0, 0);
}

std::string quote_literal(const std::string& value) {
    std::string out = "'";
    for (char c : value) {
        if (c == '\'') out += '\'';
        out += c;
    }
    out += '\'';
    return out;
}

std::string describe(const AuditStatus& s) {
    std::ostringstream out;
    out << "pii_audit.status{capacity=" << s.queue_capacity_bytes
        << " depth=" << s.queue_depth_bytes << " enqueued=" << s.events_enqueued
        << " persisted=" << s.events_persisted << " dropped=" << s.events_dropped
        << " capture_errors=" << s.capture_errors << " worker_pid=" << s.worker_pid << " state='"
        << s.state << "'}";
    return out.str();
}

AuditStatus read_status(Connection& conn) {
    Result r = conn.exec(
        "SELECT queue_capacity_bytes, queue_depth_bytes, events_enqueued, events_persisted, "
        "events_dropped, capture_errors, coalesce(worker_pid, 0), state FROM pii_audit.status");
    if (r.rows() != 1) throw std::runtime_error("pii_audit.status did not return one row");
    AuditStatus s;
    s.queue_capacity_bytes = r.int64(0, 0);
    s.queue_depth_bytes = r.int64(0, 1);
    s.events_enqueued = r.int64(0, 2);
    s.events_persisted = r.int64(0, 3);
    s.events_dropped = r.int64(0, 4);
    s.capture_errors = r.int64(0, 5);
    s.worker_pid = r.int64(0, 6);
    s.state = r.text(0, 7);
    return s;
}

bool poll_until(std::chrono::milliseconds timeout, const std::function<bool()>& done,
                std::chrono::milliseconds interval) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        if (done()) return true;
        if (Clock::now() >= deadline) return done();
        std::this_thread::sleep_for(interval);
    }
}

AuditStatus wait_for_drain(Connection& conn, int64_t min_enqueued,
                           std::chrono::milliseconds timeout, bool* ok) {
    AuditStatus last;
    *ok = poll_until(timeout, [&] {
        last = read_status(conn);
        return last.events_enqueued >= min_enqueued && last.queue_depth_bytes == 0 &&
               last.events_persisted >= last.events_enqueued;
    });
    return last;
}

}  // namespace pii_it
