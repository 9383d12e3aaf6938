// Command line of pii-audit-export: parsed and validated in one place, without side effects,
// so that every refusal is unit-tested and names what is allowed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace shipper {

enum class OutputKind { Stdout, File, Tcp, Udp, Tls, Relp };

struct Options {
    std::string conninfo;  // libpq connection string or URI; empty: PG* environment variables
    std::string format = "json";
    OutputKind output = OutputKind::Stdout;
    std::string output_spec = "stdout";
    std::string file_path;   // --output file:PATH
    std::string host, port;  // --output tcp|udp|tls|relp://HOST:PORT
    std::string checkpoint;  // checkpoint file; empty: none (stdout only)
    std::string name;        // the position's name in pii_audit.export_checkpoint()
    bool alerts = false;
    int batch = 10000;
    double poll_interval = 5.0;
    int64_t start_after = 0;
    uint64_t file_max_size = 0;  // 0: never rotate
    int file_keep = 10;
    std::string tls_ca, tls_cert, tls_key, tls_server_name;
    int facility = 13;  // "log audit"
    int severity = 6;   // informational
    double retry_max = 30.0;
    double confirm_delay = 1.0;  // tcp/tls: how long a connection must stay up after a batch
    double timeout = 30.0;       // network operations
    double progress_interval = 0;
    int64_t digest_every = 10000;  // a digest record after each batch holding a multiple; 0: none
    std::vector<std::string> verify_files;  // --verify: check the trail against these files
    bool once = false;
    bool help = false;
    bool version = false;
};

// Throws UsageError with a message naming the option and what it accepts.
Options parse_options(const std::vector<std::string>& args);
std::string usage_text();

// "100MB" -> bytes; throws UsageError. Units: B, kB, MB, GB (powers of 1024, as PostgreSQL).
uint64_t parse_size(const std::string& what, const std::string& text);

}  // namespace shipper
