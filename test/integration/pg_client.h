// A small libpq toolkit for the integration tests: owned connections and results, queries that
// throw on error (GoogleTest reports an exception that leaves a test body as a failure), reading
// pii_audit.status, and polling with a deadline.
//
// The clusters are started by run-integration.sh, which exports where they are (see there).
#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace pii_it {

// Connection settings from the environment; throws when the wrapper did not set them.
std::string env_or_throw(const char* name);

// Keyword/value pairs for PQconnectdbParams; empty values are left out so libpq's own
// environment defaults (PGHOST, PGPORT, ...) apply to them.
struct ConnectParams {
    std::vector<std::pair<std::string, std::string>> values;
};
ConnectParams main_cluster(const std::string& dbname = "");
ConnectParams drop_cluster(const std::string& dbname);
ConnectParams stall_cluster(const std::string& dbname);

class Result {
  public:
    Result() = default;
    explicit Result(PGresult* result) : result_(result, &PQclear) {}

    PGresult* get() const { return result_.get(); }
    ExecStatusType status() const { return PQresultStatus(result_.get()); }
    int rows() const { return PQntuples(result_.get()); }
    int columns() const { return PQnfields(result_.get()); }
    bool is_null(int row, int column) const { return PQgetisnull(result_.get(), row, column); }
    std::string text(int row, int column) const;
    int64_t int64(int row, int column) const;  // throws on NULL or a non-number
    std::string sqlstate() const;
    std::string error() const;

  private:
    std::shared_ptr<PGresult> result_;
};

class Connection {
  public:
    explicit Connection(const ConnectParams& params);
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    Connection(Connection&& other) noexcept : conn_(std::exchange(other.conn_, nullptr)) {}
    ~Connection();

    PGconn* get() const { return conn_; }
    int backend_pid() const { return PQbackendPID(conn_); }

    // Runs one statement (no parameters, simple protocol) and returns its result whatever it
    // is: the caller checks the status.
    Result exec_raw(const std::string& sql);
    // Runs one statement; throws unless it succeeded.
    Result exec(const std::string& sql);
    Result exec(const std::string& sql, const std::vector<std::string>& params);
    // Several statements in one simple-protocol string: every result must succeed; returns
    // them all (so a caller can check that each SELECT returned rows).
    std::vector<Result> exec_script(const std::string& sql);
    // The single value of a one-row, one-column query.
    int64_t int64(const std::string& sql, const std::vector<std::string>& params = {});
    std::string text(const std::string& sql, const std::vector<std::string>& params = {});

  private:
    PGconn* conn_ = nullptr;
};

// A SQL string literal: 'it''s'.
std::string quote_literal(const std::string& value);

struct AuditStatus {
    int64_t queue_capacity_bytes = 0;
    int64_t queue_depth_bytes = 0;
    int64_t events_enqueued = 0;
    int64_t events_persisted = 0;
    int64_t events_dropped = 0;
    int64_t capture_errors = 0;
    int64_t worker_pid = 0;  // 0 when the view says NULL
    std::string state;
};
std::string describe(const AuditStatus& status);

// Reads pii_audit.status (the extension must be installed in the connection's database).
AuditStatus read_status(Connection& conn);

using Clock = std::chrono::steady_clock;

// Calls `done` every `interval` until it returns true or `timeout` has passed; returns whether
// it did. `done` is always called at least once, and once more after the deadline.
bool poll_until(std::chrono::milliseconds timeout, const std::function<bool()>& done,
                std::chrono::milliseconds interval = std::chrono::milliseconds(20));

// Waits until the worker has persisted everything enqueued so far (and at least `min_enqueued`
// events were enqueued). A statement's events are enqueued before the client gets its result,
// so once this returns true the events of every statement that returned are in the trail; the
// caller then checks how many there were.
// Returns the last status read; `ok` says whether that happened before the timeout.
AuditStatus wait_for_drain(Connection& conn, int64_t min_enqueued,
                           std::chrono::milliseconds timeout, bool* ok);

}  // namespace pii_it
