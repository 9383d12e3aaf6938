// The audit database, through libpq: pii_audit.export() / export_alerts() in batches, LISTEN
// to wake when the worker stored events, and pii_audit.export_checkpoint() to tell retention
// what was delivered.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <memory>
#include <string>

namespace shipper {

struct ResultDeleter {
    void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

class Trail {
  public:
    explicit Trail(std::string conninfo) : conninfo_(std::move(conninfo)) {}
    ~Trail() { disconnect(); }

    // Connects, checks the export surface and the role's privileges, and LISTENs.
    // FatalError when a retry cannot help (no extension, no privilege); TransientError when
    // the server cannot be reached.
    void connect(bool alerts);
    void disconnect() noexcept;
    bool connected() const { return conn_ != nullptr; }

    // Rows (id, line) after `after`, in id order. TransientError on a lost connection.
    Result fetch_events(int64_t after, int max, const std::string& format);
    // The same in two halves, so the server formats the next batch while the current one is
    // being sent. No other query may run in between.
    void start_events(int64_t after, int max, const std::string& format);
    Result finish_events();
    Result fetch_alerts(int64_t after, int max, const std::string& format);
    // Rows (event_id, line) of pii_audit.export_digests(): the chain's digest of each batch
    // that ends after `after` and holds a multiple of `every`, in order.
    Result fetch_digests(int64_t after, int64_t every, const std::string& format);
    // Whether the server has export_digests() (pii_audit 0.3.0 and later).
    bool has_digests() const { return have_digest_function_; }
    void register_checkpoint(const std::string& name, int64_t delivered_event_id);

    // Waits up to `seconds` for a notification; returns the highest event_id announced (0 if
    // none, or only alerts).
    int64_t wait(double seconds);
    int64_t latest_announced() const { return latest_announced_; }
    std::string describe() const;

  private:
    Result run(const char* sql, int nparams, const char* const* params);
    Result checked(Result r);
    [[noreturn]] void lost(const std::string& what);
    int64_t drain_notifications();

    std::string conninfo_;
    PGconn* conn_ = nullptr;
    bool have_checkpoint_function_ = false, have_digest_function_ = false;
    int64_t latest_announced_ = 0;
};

}  // namespace shipper
