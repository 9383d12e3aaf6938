#include "trail.h"

#include <poll.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "errors.h"
#include "outputs/outputs.h"

namespace shipper {
namespace {

std::string trimmed(const char* message) {
    std::string m = message == nullptr ? "" : message;
    while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
    return m;
}

}  // namespace

std::string Trail::describe() const {
    if (conn_ == nullptr) return "the audit database";
    return std::string("database \"") + PQdb(conn_) + "\" as \"" + PQuser(conn_) + "\"";
}

void Trail::disconnect() noexcept {
    if (conn_ != nullptr) PQfinish(conn_);
    conn_ = nullptr;
}

void Trail::lost(const std::string& what) {
    std::string message = what + ": " + trimmed(PQerrorMessage(conn_));
    disconnect();
    throw DatabaseError(message);
}

Result Trail::run(const char* sql, int nparams, const char* const* params) {
    return checked(Result(PQexecParams(conn_, sql, nparams, nullptr, params, nullptr, nullptr, 0)));
}

Result Trail::checked(Result r) {
    if (r == nullptr || PQstatus(conn_) != CONNECTION_OK)
        lost("lost the connection to " + describe());
    ExecStatusType st = PQresultStatus(r.get());
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) return r;
    const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
    std::string message = trimmed(PQresultErrorMessage(r.get()));
    std::string code = state == nullptr ? "" : state;
    // Privileges and missing objects do not fix themselves; anything else may (a restart, a
    // failover, a lock): retried.
    if (code == "42501" || code == "42883" || code == "3F000" || code == "42P01")
        throw FatalError(describe() + ": " + message);
    throw DatabaseError(describe() + ": " + message);
}

void Trail::connect(bool alerts) {
    disconnect();
    conn_ = PQconnectdb(conninfo_.c_str());
    if (conn_ == nullptr)
        throw DatabaseError("cannot connect to the audit database: out of memory");
    if (PQstatus(conn_) != CONNECTION_OK) {
        std::string message =
            "cannot connect to the audit database: " + trimmed(PQerrorMessage(conn_));
        disconnect();
        throw DatabaseError(message);
    }
    run("SET application_name = 'pii-audit-export'", 0, nullptr);
    // The export surface exists, and this role may use it (looking functions up by name needs
    // the schema's USAGE first).
    Result schema =
        run("SELECT to_regnamespace('pii_audit') IS NOT NULL, "
            "       to_regnamespace('pii_audit') IS NOT NULL AND has_schema_privilege('pii_audit', "
            "'USAGE'), "
            "       current_user",
            0, nullptr);
    std::string role = PQgetvalue(schema.get(), 0, 2);
    if (std::string(PQgetvalue(schema.get(), 0, 0)) != "t")
        throw FatalError("database \"" + std::string(PQdb(conn_)) +
                         "\" has no pii_audit extension: connect to the audit database "
                         "(pii_audit.database), where CREATE EXTENSION pii_audit was run");
    if (std::string(PQgetvalue(schema.get(), 0, 1)) != "t")
        throw FatalError("role \"" + role +
                         "\" may not use the schema pii_audit: grant it the role " +
                         "pii_audit_siem (GRANT pii_audit_siem TO \"" + role + "\")");
    Result r =
        run("SELECT to_regprocedure('pii_audit.export(bigint,integer,text)') IS NOT NULL, "
            "       to_regprocedure('pii_audit.export_alerts(bigint,integer,text)') IS NOT NULL, "
            "       to_regprocedure('pii_audit.export_checkpoint(text,bigint)') IS NOT NULL, "
            "       has_schema_privilege('pii_audit', 'USAGE'), current_user, current_database(), "
            "       to_regprocedure('pii_audit.export_digests(bigint,bigint,text,integer)') IS NOT "
            "NULL "
            "WHERE to_regnamespace('pii_audit') IS NOT NULL",
            0, nullptr);
    if (PQntuples(r.get()) == 0)
        throw FatalError("database \"" + std::string(PQdb(conn_)) +
                         "\" has no pii_audit extension: connect to the audit database "
                         "(pii_audit.database), where CREATE EXTENSION pii_audit was run");
    auto yes = [&](int col) { return std::string(PQgetvalue(r.get(), 0, col)) == "t"; };
    std::string user = PQgetvalue(r.get(), 0, 4);
    if (!yes(0) || (alerts && !yes(1)))
        throw FatalError(
            describe() + " has no pii_audit.export" + std::string(yes(0) ? "_alerts" : "") +
            "(bigint, integer, text): update the extension (ALTER EXTENSION pii_audit UPDATE)");
    auto may_execute = [&](const char* signature) {
        const char* params[1] = {signature};
        Result p = run("SELECT has_function_privilege($1, 'EXECUTE')", 1, params);
        return std::string(PQgetvalue(p.get(), 0, 0)) == "t";
    };
    if (!yes(3) || !may_execute("pii_audit.export(bigint,integer,text)") ||
        (alerts && !may_execute("pii_audit.export_alerts(bigint,integer,text)")))
        throw FatalError("role \"" + user + "\" may not call pii_audit.export" +
                         std::string(alerts ? "() and export_alerts()" : "()") +
                         ": grant it the role pii_audit_siem (GRANT pii_audit_siem TO \"" + user +
                         "\")");
    have_checkpoint_function_ = yes(2);
    if (have_checkpoint_function_ && !may_execute("pii_audit.export_checkpoint(text,bigint)"))
        throw FatalError("role \"" + user +
                         "\" may not call pii_audit.export_checkpoint(): grant it the "
                         "role pii_audit_siem");
    if (!have_checkpoint_function_)
        log_warning(describe() +
                    " has no pii_audit.export_checkpoint(text, bigint): retention cannot "
                    "see what this shipper has delivered");
    have_digest_function_ = yes(6);
    if (have_digest_function_ &&
        !may_execute("pii_audit.export_digests(bigint,bigint,text,integer)"))
        throw FatalError("role \"" + user +
                         "\" may not call pii_audit.export_digests(): grant it the role "
                         "pii_audit_siem (or give --digest-every 0)");
    run("LISTEN pii_audit_events", 0, nullptr);
    if (alerts) run("LISTEN pii_audit_alerts", 0, nullptr);
}

namespace {
const char* const kExportEvents =
    "SELECT event_id, line FROM pii_audit.export($1::bigint, $2::integer, $3::text)";
}

Result Trail::fetch_events(int64_t after, int max, const std::string& format) {
    std::string a = std::to_string(after), m = std::to_string(max);
    const char* params[3] = {a.c_str(), m.c_str(), format.c_str()};
    return run(kExportEvents, 3, params);
}

void Trail::start_events(int64_t after, int max, const std::string& format) {
    std::string a = std::to_string(after), m = std::to_string(max);
    const char* params[3] = {a.c_str(), m.c_str(), format.c_str()};
    if (!PQsendQueryParams(conn_, kExportEvents, 3, nullptr, params, nullptr, nullptr, 0))
        lost("lost the connection to " + describe());
}

Result Trail::finish_events() {
    Result last;
    while (PGresult* r = PQgetResult(conn_)) last.reset(r);  // one statement: one result
    return checked(std::move(last));
}

Result Trail::fetch_alerts(int64_t after, int max, const std::string& format) {
    std::string a = std::to_string(after), m = std::to_string(max);
    const char* params[3] = {a.c_str(), m.c_str(), format.c_str()};
    return run(
        "SELECT alert_event_id, line FROM pii_audit.export_alerts($1::bigint, $2::integer, "
        "$3::text)",
        3, params);
}

Result Trail::fetch_digests(int64_t after, int64_t every, const std::string& format) {
    std::string a = std::to_string(after), e = std::to_string(every);
    const char* params[3] = {a.c_str(), e.c_str(), format.c_str()};
    return run(
        "SELECT event_id, line FROM pii_audit.export_digests($1::bigint, $2::bigint, $3::text, "
        "1000)",
        3, params);
}

void Trail::register_checkpoint(const std::string& name, int64_t delivered_event_id) {
    if (!have_checkpoint_function_) return;
    std::string id = std::to_string(delivered_event_id);
    const char* params[2] = {name.c_str(), id.c_str()};
    run("SELECT pii_audit.export_checkpoint($1::text, $2::bigint)", 2, params);
}

int64_t Trail::drain_notifications() {
    int64_t latest = 0;
    while (PGnotify* n = PQnotifies(conn_)) {
        if (std::string(n->relname) == "pii_audit_events") {
            long long id = std::strtoll(n->extra, nullptr, 10);
            if (id > latest) latest = id;
        } else {
            latest = std::max<int64_t>(latest, 0);
        }
        PQfreemem(n);
    }
    if (latest > latest_announced_) latest_announced_ = latest;
    return latest;
}

int64_t Trail::wait(double seconds) {
    if (conn_ == nullptr) return 0;
    int64_t latest = drain_notifications();
    struct pollfd p = {PQsocket(conn_), POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::ceil(seconds * 1000)));
    if (n > 0) {
        if (!PQconsumeInput(conn_)) lost("lost the connection to " + describe());
        latest = std::max(latest, drain_notifications());
    }
    return latest;
}

}  // namespace shipper
