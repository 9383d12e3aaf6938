#include "verify.h"

#include <libpq-fe.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include "digest_records.h"
#include "errors.h"

namespace shipper {
namespace {

struct ConnCloser {
    void operator()(PGconn* c) const { PQfinish(c); }
};
struct ResultCloser {
    void operator()(PGresult* r) const { PQclear(r); }
};

// event_id -> digest, from every file; the same event twice must carry the same digest (a
// replay repeats records).
std::map<int64_t, std::string> read_records(const std::vector<std::string>& files) {
    std::map<int64_t, std::string> held;
    for (const std::string& path : files) {
        std::ifstream in(path, std::ios::binary);
        if (!in) throw FatalError("cannot read " + path);
        std::string line;
        size_t number = 0, found = 0;
        while (std::getline(in, line)) {
            ++number;
            std::optional<DigestRecord> r;
            try {
                r = parse_digest_record(line);
            } catch (const std::runtime_error& e) {
                throw FatalError(path + ", line " + std::to_string(number) + ": " + e.what());
            }
            if (!r) continue;
            ++found;
            auto [it, added] = held.emplace(r->event_id, r->digest);
            if (!added && it->second != r->digest)
                throw FatalError(path + ", line " + std::to_string(number) +
                                 ": a second digest record for event " +
                                 std::to_string(r->event_id) + " with another digest (" +
                                 r->digest + ", before " + it->second + "): the file was changed");
        }
        if (in.bad()) throw FatalError("cannot read " + path);
        if (found == 0)
            throw FatalError(path +
                             " holds no digest record (was it shipped with --digest-every 0, "
                             "or is it not a file pii-audit-export wrote?)");
    }
    return held;
}

}  // namespace

int run_verify(const Options& o) {
    std::map<int64_t, std::string> held = read_records(o.verify_files);
    std::string ids = "{", digests = "{";
    for (const auto& [id, digest] : held) {
        if (ids.size() > 1) {
            ids += ',';
            digests += ',';
        }
        ids += std::to_string(id);
        digests += digest;
    }
    ids += '}';
    digests += '}';

    std::unique_ptr<PGconn, ConnCloser> conn(PQconnectdb(o.conninfo.c_str()));
    if (PQstatus(conn.get()) != CONNECTION_OK)
        throw FatalError(std::string("cannot connect to the audit database: ") +
                         PQerrorMessage(conn.get()));
    const char* params[2] = {ids.c_str(), digests.c_str()};
    std::unique_ptr<PGresult, ResultCloser> r(PQexecParams(
        conn.get(),
        "SELECT coalesce(event_id::text, '-'), problem, coalesce(detail, '') "
        "FROM pii_audit.verify_trail(1, 9223372036854775807, $1::bigint[], $2::text[])",
        2, nullptr, params, nullptr, nullptr, 0));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
        std::string why = PQresultErrorMessage(r.get());
        const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
        if (state != nullptr && std::string(state) == "42501")
            why +=
                "verify_trail is for officers: connect (-d) as a member of pii_audit_officer "
                "or pii_audit_admin";
        throw FatalError("pii_audit.verify_trail failed: " + why);
    }
    bool ok = false;
    int problems = 0;
    for (int i = 0; i < PQntuples(r.get()); ++i) {
        std::string problem = PQgetvalue(r.get(), i, 1);
        if (problem == "ok") {
            ok = true;
            printf("ok: %s; the %zu digest records held outside match (events up to %lld)\n",
                   PQgetvalue(r.get(), i, 2), held.size(),
                   static_cast<long long>(held.rbegin()->first));
            continue;
        }
        if (problem != "unchained") ++problems;
        printf("event %s: %s: %s\n", PQgetvalue(r.get(), i, 0), problem.c_str(),
               PQgetvalue(r.get(), i, 2));
    }
    fflush(stdout);
    if (!ok || problems > 0) {
        fprintf(stderr,
                "pii-audit-export: the trail does not match the digest records in %s (%d "
                "problems)\n",
                o.verify_files.size() == 1 ? o.verify_files[0].c_str() : "the files", problems);
        return 1;
    }
    return 0;
}

}  // namespace shipper
