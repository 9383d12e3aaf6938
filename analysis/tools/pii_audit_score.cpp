// pii-audit-score --replay FILE|-: runs the scorer over an exported access trail in time order
// and prints the alerts it would have raised, one JSON object per line. A DBA tries thresholds
// on last month's trail with it before switching them on.
//
// Bad input stops the replay: a malformed line prints "FILE:LINE: ..." on stderr and the tool
// exits with status 2 (alerts found before it were already printed). A backtest that silently
// skipped lines would report fewer alerts than the server would raise.
#include <fmt/format.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "pii_audit/analysis/json_lines.h"
#include "pii_audit/analysis/replay.h"
#include "pii_audit/analysis/scorer.h"

namespace pa = pii_audit::analysis;

namespace {

constexpr int kExitBadInput = 2;
constexpr int kExitUsage = 64;

const char kUsage[] =
    "usage: pii-audit-score --replay FILE|- [options]\n"
    "  --threshold N          raise alerts with combined score >= N (0-100, default 50)\n"
    "  --utc-offset MINUTES   local time for days and hours of the week (default 0)\n"
    "  --sensitive a,b        highly sensitive categories (default verification_code,credential)\n"
    "  --service-groups a,b   peer groups of machine accounts\n"
    "  --dormant-days N       silence after which activity is dormant reuse (default 30)\n"
    "  --team-wait MINUTES    hold volume signals for colleagues to follow (default 60; 0: off)\n"
    "  --load-state FILE      start from saved baselines\n"
    "  --save-state FILE      save baselines at the end\n"
    "  --no-alerts            do not print alerts (for timing)\n"
    "  --stats                print events, alerts, speed and state size on stderr\n"
    "Input: one JSON object per line, see analysis/README.md. Output: one alert per line.\n"
    "Exit status: 0 ok, 2 bad input line (stops at the first), 64 usage, 1 other errors.\n";

std::vector<std::string> split_list(const std::string& s) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start <= s.size()) {
        const std::size_t comma = s.find(',', start);
        const std::string item =
            s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (!item.empty()) out.push_back(item);
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return out;
}

bool parse_int(const char* text, long lo, long hi, long& out) {
    char* end = nullptr;
    errno = 0;
    out = std::strtol(text, &end, 10);
    return errno == 0 && end != text && *end == '\0' && out >= lo && out <= hi;
}

// Reads lines in large blocks; a view stays valid until the next call.
class LineReader {
  public:
    explicit LineReader(std::FILE* f) : file_(f), buffer_(1 << 20) {}

    bool next(std::string_view& line) {
        for (;;) {
            const char* begin = buffer_.data() + start_;
            const void* nl = std::memchr(begin, '\n', end_ - start_);
            if (nl != nullptr) {
                const char* stop = static_cast<const char*>(nl);
                line = std::string_view(begin, static_cast<std::size_t>(stop - begin));
                start_ += line.size() + 1;
                return true;
            }
            if (eof_) {
                if (start_ == end_) return false;
                line = std::string_view(begin, end_ - start_);
                start_ = end_;
                return true;
            }
            // Move the partial line to the front, grow if a single line fills the buffer.
            std::memmove(buffer_.data(), begin, end_ - start_);
            end_ -= start_;
            start_ = 0;
            if (end_ == buffer_.size()) buffer_.resize(buffer_.size() * 2);
            const std::size_t n =
                std::fread(buffer_.data() + end_, 1, buffer_.size() - end_, file_);
            if (n == 0) {
                if (std::ferror(file_)) throw std::runtime_error(std::strerror(errno));
                eof_ = true;
            }
            end_ += n;
        }
    }

  private:
    std::FILE* file_;
    std::vector<char> buffer_;
    std::size_t start_ = 0;
    std::size_t end_ = 0;
    bool eof_ = false;
};

int run(int argc, char** argv) {
    std::string input, load_state, save_state;
    bool print_alerts = true, print_stats = false;
    pa::ScorerConfig config;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) {
                fmt::print(stderr, "pii-audit-score: {} needs a value\n{}", arg, kUsage);
                std::exit(kExitUsage);
            }
            return argv[++i];
        };
        auto number = [&](long lo, long hi) {
            const char* text = value();
            long n;
            if (!parse_int(text, lo, hi, n)) {
                fmt::print(stderr,
                           "pii-audit-score: {} must be an integer from {} to {}, not '{}'\n", arg,
                           lo, hi, text);
                std::exit(kExitUsage);
            }
            return static_cast<int>(n);
        };
        if (arg == "--replay") {
            input = value();
        } else if (arg == "--threshold") {
            config.threshold = number(0, 100);
        } else if (arg == "--utc-offset") {
            config.utc_offset_minutes = number(-18 * 60, 18 * 60);
        } else if (arg == "--sensitive") {
            config.sensitive_categories = split_list(value());
        } else if (arg == "--service-groups") {
            config.service_groups = split_list(value());
        } else if (arg == "--dormant-days") {
            config.dormant_days = number(1, 3650);
        } else if (arg == "--team-wait") {
            config.team_wait_minutes = number(0, 24 * 60);
        } else if (arg == "--load-state") {
            load_state = value();
        } else if (arg == "--save-state") {
            save_state = value();
        } else if (arg == "--no-alerts") {
            print_alerts = false;
        } else if (arg == "--stats") {
            print_stats = true;
        } else if (arg == "-h" || arg == "--help") {
            fmt::print("{}", kUsage);
            return 0;
        } else {
            fmt::print(stderr, "pii-audit-score: unknown option '{}'\n{}", arg, kUsage);
            return kExitUsage;
        }
    }
    if (input.empty()) {
        fmt::print(stderr, "pii-audit-score: --replay FILE|- is required\n{}", kUsage);
        return kExitUsage;
    }

    pa::Scorer scorer(config);
    if (!load_state.empty()) {
        std::ifstream in(load_state, std::ios::binary);
        if (!in) throw std::runtime_error(fmt::format("cannot open state file '{}'", load_state));
        const std::string bytes((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
        scorer.restore_state(bytes);
    }

    std::FILE* file = input == "-" ? stdin : std::fopen(input.c_str(), "rb");
    if (file == nullptr) {
        throw std::runtime_error(fmt::format("cannot open '{}': {}", input, std::strerror(errno)));
    }
    const std::string name = input == "-" ? "<stdin>" : input;
    LineReader reader(file);
    pa::JsonLine json;
    pa::Record record;
    std::string error, out;
    std::vector<pa::Alert> alerts;
    std::uint64_t line_no = 0, events = 0, alert_count = 0;
    int status = 0;
    const auto started = std::chrono::steady_clock::now();
    std::string_view line;
    while (reader.next(line)) {
        ++line_no;
        if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
        if (!json.parse(line)) {
            fmt::print(stderr, "pii-audit-score: {}:{}: {}\n", name, line_no, json.error());
            status = kExitBadInput;
            break;
        }
        if (!pa::decode_record(json, record, error)) {
            fmt::print(stderr, "pii-audit-score: {}:{}: {}\n", name, line_no, error);
            status = kExitBadInput;
            break;
        }
        ++events;
        alerts.clear();
        switch (record.kind) {
            case pa::RecordKind::access:
                if (record.access.event_id == 0) record.access.event_id = line_no;
                scorer.observe(record.access, alerts);
                break;
            case pa::RecordKind::login:
                if (record.login.event_id == 0) record.login.event_id = line_no;
                scorer.observe(record.login, alerts);
                break;
            case pa::RecordKind::relation:
                scorer.observe(record.relation);
                break;
            case pa::RecordKind::departed:
                scorer.mark_departed(record.actor, record.time_us);
                break;
            case pa::RecordKind::known_event:
                scorer.declare_event({std::string(record.name), std::string(record.peer_group),
                                      record.time_us, record.until_us});
                break;
        }
        alert_count += alerts.size();
        if (print_alerts) {
            for (const pa::Alert& a : alerts) {
                out += pa::alert_json(a);
                out += '\n';
            }
            if (out.size() > (1 << 16)) {
                std::fwrite(out.data(), 1, out.size(), stdout);
                out.clear();
            }
        }
    }
    // The input is over: what was still held for colleagues is raised now, unless the state is
    // saved to continue from (it keeps what is held).
    if (status == 0 && save_state.empty()) {
        alerts.clear();
        scorer.release_held(INT64_MAX, alerts);
        alert_count += alerts.size();
        if (print_alerts) {
            for (const pa::Alert& a : alerts) {
                out += pa::alert_json(a);
                out += '\n';
            }
        }
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
    if (file != stdin) std::fclose(file);

    if (!save_state.empty() && status == 0) {
        const std::string bytes = scorer.save_state();
        std::ofstream f(save_state, std::ios::binary | std::ios::trunc);
        f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        if (!f) throw std::runtime_error(fmt::format("cannot write state file '{}'", save_state));
    }
    if (print_stats) {
        const pa::ScorerStats s = scorer.stats();
        fmt::print(stderr,
                   "events {} alerts {} seconds {:.3f} events/s {:.0f} actors {} peer_groups {} "
                   "relations {} bytes_per_actor {} state_bytes {} held_now {} held_raised {} "
                   "held_dropped {} team_excused {}\n",
                   events, alert_count, seconds, seconds > 0 ? events / seconds : 0.0, s.actors,
                   s.peer_groups, s.relations, s.bytes_per_actor, s.state_bytes, s.held_now,
                   s.held_raised, s.held_dropped, s.team_excused);
    }
    return status;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        fmt::print(stderr, "pii-audit-score: {}\n", e.what());
        return 1;
    }
}
