#include "options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>

#include "errors.h"

namespace shipper {
namespace {

const std::set<std::string> kFormats = {"json", "ocsf", "cef", "leef", "rfc5424"};

int64_t parse_int(const std::string& what, const std::string& text, int64_t min, int64_t max) {
    errno = 0;
    char* end = nullptr;
    long long v = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || errno == ERANGE || v < min || v > max)
        throw UsageError(what + " must be an integer from " + std::to_string(min) + " to " +
                         std::to_string(max) + ", not '" + text + "'");
    return v;
}

double parse_seconds(const std::string& what, const std::string& text, double min, double max) {
    errno = 0;
    char* end = nullptr;
    double v = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(v) || v < min ||
        v > max) {
        char range[96];
        snprintf(range, sizeof range, "%g to %g", min, max);
        throw UsageError(what + " must be a number of seconds from " + range + ", not '" + text +
                         "'");
    }
    return v;
}

// HOST:PORT or [IPv6]:PORT after the scheme.
void parse_endpoint(const std::string& spec, const std::string& rest, Options& o) {
    std::string host, port;
    if (!rest.empty() && rest[0] == '[') {
        size_t close = rest.find(']');
        if (close == std::string::npos || close + 1 >= rest.size() || rest[close + 1] != ':')
            throw UsageError("--output " + spec + ": expected [IPv6-ADDRESS]:PORT");
        host = rest.substr(1, close - 1);
        port = rest.substr(close + 2);
    } else {
        size_t colon = rest.rfind(':');
        if (colon == std::string::npos)
            throw UsageError("--output " + spec + ": expected HOST:PORT (e.g. " +
                             spec.substr(0, spec.find("://") + 3) + "siem.example.org:6514)");
        host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
        if (host.find(':') != std::string::npos)
            throw UsageError("--output " + spec + ": write an IPv6 address in brackets: [::1]:514");
    }
    if (host.empty()) throw UsageError("--output " + spec + ": the host is empty");
    parse_int("the port in --output " + spec, port, 1, 65535);
    o.host = host;
    o.port = port;
}

void parse_output(const std::string& spec, Options& o) {
    o.output_spec = spec;
    if (spec == "stdout" || spec == "-") {
        o.output = OutputKind::Stdout;
        return;
    }
    if (spec.rfind("file:", 0) == 0) {
        o.output = OutputKind::File;
        o.file_path = spec.substr(5);
        if (o.file_path.empty()) throw UsageError("--output file:PATH: the path is empty");
        if (o.file_path.back() == '/')
            throw UsageError("--output file:PATH: '" + o.file_path + "' names a directory");
        return;
    }
    static const std::map<std::string, OutputKind> schemes = {{"tcp", OutputKind::Tcp},
                                                              {"udp", OutputKind::Udp},
                                                              {"tls", OutputKind::Tls},
                                                              {"relp", OutputKind::Relp}};
    size_t sep = spec.find("://");
    if (sep != std::string::npos) {
        auto it = schemes.find(spec.substr(0, sep));
        if (it != schemes.end()) {
            o.output = it->second;
            parse_endpoint(spec, spec.substr(sep + 3), o);
            return;
        }
    }
    throw UsageError("--output '" + spec +
                     "' is not one of: stdout, file:PATH, tcp://HOST:PORT, udp://HOST:PORT, "
                     "tls://HOST:PORT, relp://HOST:PORT");
}

}  // namespace

uint64_t parse_size(const std::string& what, const std::string& text) {
    size_t digits = 0;
    while (digits < text.size() && isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
    std::string unit = text.substr(digits);
    static const std::map<std::string, uint64_t> units = {
        {"", 1}, {"B", 1}, {"kB", 1024}, {"MB", 1024 * 1024}, {"GB", 1024ull * 1024 * 1024}};
    auto it = units.find(unit);
    if (digits == 0 || digits > 12 || it == units.end())
        throw UsageError(what +
                         " must be a size such as 500kB, 100MB or 2GB (units B, kB, MB, "
                         "GB), not '" +
                         text + "'");
    return std::stoull(text.substr(0, digits)) * it->second;
}

Options parse_options(const std::vector<std::string>& args) {
    Options o;
    bool have_output = false;
    std::set<std::string> seen;
    for (size_t i = 0; i < args.size(); ++i) {
        std::string arg = args[i], value;
        bool inline_value = false;
        if (arg.rfind("--", 0) == 0) {
            size_t eq = arg.find('=');
            if (eq != std::string::npos) {
                value = arg.substr(eq + 1);
                arg = arg.substr(0, eq);
                inline_value = true;
            }
        } else if (arg == "-d" || arg == "-o" || arg == "-h" || arg == "-f") {
            static const std::map<std::string, std::string> shorts = {
                {"-d", "--dbname"}, {"-o", "--output"}, {"-h", "--help"}, {"-f", "--format"}};
            arg = shorts.at(arg);
        } else {
            throw UsageError("unexpected argument '" + arg + "' (options start with --)");
        }
        static const std::set<std::string> flags = {"--help", "--version", "--alerts", "--once"};
        static const std::set<std::string> valued = {
            "--dbname",        "--format",          "--output",        "--checkpoint",
            "--name",          "--batch",           "--poll-interval", "--start-after",
            "--file-max-size", "--file-keep",       "--tls-ca",        "--tls-cert",
            "--tls-key",       "--tls-server-name", "--facility",      "--severity",
            "--retry-max",     "--confirm-delay",   "--timeout",       "--progress",
            "--digest-every",  "--verify"};
        if (flags.count(arg)) {
            if (inline_value) throw UsageError(arg + " takes no value");
        } else if (valued.count(arg)) {
            if (!inline_value) {
                if (i + 1 >= args.size()) throw UsageError(arg + " needs a value");
                value = args[++i];
            }
        } else {
            throw UsageError("unknown option '" + arg + "' (see --help)");
        }
        if (!seen.insert(arg).second && arg != "--verify") throw UsageError(arg + " given twice");

        if (arg == "--help")
            o.help = true;
        else if (arg == "--version")
            o.version = true;
        else if (arg == "--alerts")
            o.alerts = true;
        else if (arg == "--once")
            o.once = true;
        else if (arg == "--dbname")
            o.conninfo = value;
        else if (arg == "--format") {
            if (!kFormats.count(value))
                throw UsageError("--format '" + value +
                                 "' is not one of: json, ocsf, cef, leef, rfc5424");
            o.format = value;
        } else if (arg == "--output") {
            parse_output(value, o);
            have_output = true;
        } else if (arg == "--checkpoint") {
            if (value.empty() || value.back() == '/')
                throw UsageError("--checkpoint must name a file, not '" + value + "'");
            o.checkpoint = value;
        } else if (arg == "--name") {
            // As pii_audit.export_checkpoint() accepts them.
            bool ok = !value.empty() && value.size() <= 63 &&
                      isalnum(static_cast<unsigned char>(value[0]));
            for (unsigned char c : value)
                ok = ok && c < 128 && (isalnum(c) || c == '_' || c == '-' || c == '.');
            if (!ok)
                throw UsageError(
                    "--name may hold up to 63 letters, digits, '_', '.' and '-', starting "
                    "with a letter or digit, not '" +
                    value + "'");
            o.name = value;
        } else if (arg == "--batch")
            o.batch = static_cast<int>(parse_int(arg, value, 1, 1000000));
        else if (arg == "--poll-interval")
            o.poll_interval = parse_seconds(arg, value, 0.05, 3600);
        else if (arg == "--start-after")
            o.start_after = parse_int(arg, value, 0, INT64_MAX);
        else if (arg == "--file-max-size")
            o.file_max_size = parse_size(arg, value);
        else if (arg == "--file-keep")
            o.file_keep = static_cast<int>(parse_int(arg, value, 1, 1000));
        else if (arg == "--tls-ca")
            o.tls_ca = value;
        else if (arg == "--tls-cert")
            o.tls_cert = value;
        else if (arg == "--tls-key")
            o.tls_key = value;
        else if (arg == "--tls-server-name")
            o.tls_server_name = value;
        else if (arg == "--facility")
            o.facility = static_cast<int>(parse_int(arg, value, 0, 23));
        else if (arg == "--severity")
            o.severity = static_cast<int>(parse_int(arg, value, 0, 7));
        else if (arg == "--retry-max")
            o.retry_max = parse_seconds(arg, value, 0.1, 3600);
        else if (arg == "--confirm-delay")
            o.confirm_delay = parse_seconds(arg, value, 0, 60);
        else if (arg == "--timeout")
            o.timeout = parse_seconds(arg, value, 0.5, 3600);
        else if (arg == "--progress")
            o.progress_interval = parse_seconds(arg, value, 0.1, 86400);
        else if (arg == "--digest-every")
            o.digest_every = parse_int(arg, value, 0, INT64_MAX);
        else if (arg == "--verify") {
            if (value.empty())
                throw UsageError("--verify needs a file written by pii-audit-export");
            o.verify_files.push_back(value);
        }
    }
    if (o.help || o.version) return o;
    if (!o.verify_files.empty()) {
        for (const char* only : {"--output", "--checkpoint", "--alerts", "--once", "--batch",
                                 "--start-after", "--digest-every", "--format"})
            if (seen.count(only))
                throw UsageError(std::string("--verify checks files against the trail and ships "
                                             "nothing: drop ") +
                                 only);
        return o;
    }

    if (!have_output) throw UsageError("--output is required (e.g. --output relp://siem:2514)");
    if (o.output != OutputKind::Stdout && o.checkpoint.empty())
        throw UsageError("--checkpoint FILE is required with --output " + o.output_spec +
                         ": without it a restart would send everything again");
    if (o.output == OutputKind::File && !o.checkpoint.empty() && o.checkpoint == o.file_path)
        throw UsageError("--checkpoint and --output file: name the same file");
    bool tls = o.output == OutputKind::Tls;
    if (!tls && (!o.tls_ca.empty() || !o.tls_cert.empty() || !o.tls_key.empty() ||
                 !o.tls_server_name.empty()))
        throw UsageError("--tls-* options apply to --output tls://HOST:PORT only");
    if (tls && o.tls_ca.empty())
        throw UsageError(
            "--output tls:// needs --tls-ca FILE (the CA that signed the receiver's "
            "certificate)");
    if (o.tls_cert.empty() != o.tls_key.empty())
        throw UsageError(
            "--tls-cert and --tls-key go together (the client certificate and its key)");
    if (o.output != OutputKind::File &&
        (seen.count("--file-max-size") || seen.count("--file-keep")))
        throw UsageError("--file-max-size and --file-keep apply to --output file:PATH only");
    if (o.name.empty()) o.name = "pii-audit-export";
    return o;
}

std::string usage_text() {
    return R"(pii-audit-export: push pii_audit's trail to a file or a SIEM, resuming where it stopped.

Usage: pii-audit-export --output DEST [--checkpoint FILE] [OPTIONS]

Source
  -d, --dbname CONNINFO    the audit database (libpq string or URI; default: PG* variables)
  -f, --format FORMAT      json (default), ocsf, cef, leef or rfc5424
      --alerts             ship alerts too (pii_audit.export_alerts), after the events
      --batch N            events per call of pii_audit.export() (1..1000000, default 10000)
      --poll-interval S    look for events every S seconds even without NOTIFY (default 5)
      --start-after ID     without a checkpoint, start after this event_id (default 0: all)
      --digest-every N     after the batch of the trail that holds each multiple of N, send
                           its chain digest as a record (default 10000; 0: none)

Destination (--output, required)
  stdout | file:PATH | tcp://HOST:PORT | udp://HOST:PORT | tls://HOST:PORT | relp://HOST:PORT
      --checkpoint FILE    where the last delivered event_id is kept (required but for stdout)
      --name NAME          the position's name in pii_audit.export_checkpoint() (default
                           pii-audit-export); retention keeps what NAME has not received
      --file-max-size SIZE rotate the file past SIZE (e.g. 100MB; default: never)
      --file-keep N        rotated files kept as PATH.1 .. PATH.N (default 10)
      --tls-ca FILE        CA certificate(s) that signed the receiver's (tls:// only, required)
      --tls-cert FILE      client certificate, with --tls-key FILE
      --tls-server-name N  name the receiver's certificate must carry (default: HOST)
      --facility N         syslog facility of wrapped lines (0..23, default 13 "log audit")
      --severity N         syslog severity of wrapped lines (0..7, default 6 "informational")
      --confirm-delay S    tcp/tls: a batch counts as delivered once the receiver's TCP stack
                           acknowledged it and the connection stayed up S seconds (default 1)
      --timeout S          give up on a stuck receiver after S seconds, then retry (default 30)
      --retry-max S        longest pause between retries (default 30)

Running
      --progress S         log events/s and the lag behind the trail every S seconds (also
                           on SIGUSR1)
      --once               ship what is there, wait until it is delivered, and exit
                           (SIGHUP: close the destination and open it again, between batches:
                           a file moved away by logrotate is started anew at its path)
      --help, --version

Verifying
      --verify FILE        read the digest records in FILE (any format, as shipped; give
                           --verify once per file) and check the live trail against them
                           with pii_audit.verify_trail (an officer's connection, -d)

Exit status: 0 stopped by SIGTERM/SIGINT or --once done (--verify: the trail matches), 1 error
(--verify: a mismatch or a damaged digest record), 2 bad options.
)";
}

}  // namespace shipper
