// insider-eval: scores pii-audit-score's alerts against insider-gen's answer key.
//
//   insider-eval --key key.tsv --alerts alerts.jsonl
//
// An alert is true if it names a scenario's actor between the scenario's start and 30 days after
// its end, or, for an alert on a rolling window ("... in the last N days"), as long as that window
// still holds days of the scenario; every other alert is false. Prints per scenario: detected, time
// to first alert, records taken up to it; overall false alerts per 1,000 actor-days and precision.
#include <fmt/format.h>

#include <algorithm>
#include <boost/accumulators/accumulators.hpp>
#include <boost/accumulators/statistics/max.hpp>
#include <boost/accumulators/statistics/mean.hpp>
#include <boost/accumulators/statistics/stats.hpp>
#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "pii_audit/analysis/json_lines.h"
#include "pii_audit/analysis/replay.h"

namespace acc = boost::accumulators;
namespace pa = pii_audit::analysis;

namespace {

struct Scenario {
    std::string name, actor;
    std::int64_t start_us = 0, end_us = 0;
    long total = 0;
    std::vector<std::pair<std::int64_t, int>> records;
    std::int64_t first_alert_us = -1;
    std::string first_detector;
    int first_score = 0;
};

struct AlertRow {
    std::int64_t time_us;
    std::string actor, detector, explanation;
    int score;
};

std::vector<std::string> split_tabs(const std::string& line) {
    std::vector<std::string> out;
    std::stringstream ss(line);
    std::string item;
    while (std::getline(ss, item, '\t')) out.push_back(item);
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    std::string key_path, alerts_path, summary_name;
    bool list_false = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--key" && i + 1 < argc) {
            key_path = argv[++i];
        } else if (a == "--alerts" && i + 1 < argc) {
            alerts_path = argv[++i];
        } else if (a == "--summary" && i + 1 < argc) {
            summary_name = argv[++i];
        } else if (a == "--list-false") {
            list_false = true;
        } else {
            fmt::print(stderr,
                       "usage: insider-eval --key key.tsv --alerts alerts.jsonl [--list-false] "
                       "[--summary NAME]\n");
            return 64;
        }
    }
    std::ifstream key(key_path);
    if (!key) {
        fmt::print(stderr, "insider-eval: cannot open {}\n", key_path);
        return 1;
    }
    std::map<std::string, long> meta;
    std::vector<Scenario> scenarios;
    std::string line;
    while (std::getline(key, line)) {
        const auto f = split_tabs(line);
        if (f.size() == 3 && f[0] == "meta") {
            meta[f[1]] = std::stol(f[2]);
        } else if (f.size() == 6 && f[0] == "scenario") {
            scenarios.push_back(
                {f[1], f[2], std::stoll(f[3]), std::stoll(f[4]), std::stol(f[5]), {}, -1, {}, 0});
        } else if (f.size() == 4 && f[0] == "record") {
            for (Scenario& s : scenarios) {
                if (s.name == f[1]) s.records.push_back({std::stoll(f[2]), std::stoi(f[3])});
            }
        }
    }

    for (Scenario& s : scenarios) std::sort(s.records.begin(), s.records.end());
    std::ifstream in(alerts_path);
    if (!in) {
        fmt::print(stderr, "insider-eval: cannot open {}\n", alerts_path);
        return 1;
    }
    pa::JsonLine json;
    std::vector<AlertRow> false_alerts;
    std::map<std::string, int> false_by_detector;
    long true_alerts = 0, line_no = 0;
    // Rolling windows keep showing a scenario's reads after it ends: alerts on the scenario's
    // actor up to 30 days later are about it, not false; an alert on an N-day window is about it
    // as long as the window reaches back into the scenario (the maternal-care worker's 90-day
    // window of 13,000 subjects two months after she stopped counts her stolen records).
    constexpr std::int64_t kDay = 86400LL * 1000000;
    const auto grace_of = [&](const std::string& explanation) {
        std::int64_t days = 30;
        const std::string_view marker = "in the last ";
        for (std::size_t at = explanation.find(marker); at != std::string::npos;
             at = explanation.find(marker, at + 1)) {
            std::size_t i = at + marker.size();
            std::int64_t n = 0;
            bool digits = false;
            while (i < explanation.size() && n < 1000 && explanation[i] >= '0' &&
                   explanation[i] <= '9') {
                n = n * 10 + (explanation[i++] - '0');
                digits = true;
            }
            if (digits && explanation.compare(i, 5, " days") == 0) days = std::max(days, n);
        }
        return days * kDay;
    };
    while (std::getline(in, line)) {
        ++line_no;
        if (!json.parse(line)) {
            fmt::print(stderr, "insider-eval: {}:{}: {}\n", alerts_path, line_no, json.error());
            return 2;
        }
        AlertRow a;
        const pa::JsonValue* t = json.find("time");
        if (!t || !pa::parse_iso8601(t->string, a.time_us)) {
            fmt::print(stderr, "insider-eval: {}:{}: bad time\n", alerts_path, line_no);
            return 2;
        }
        a.actor = std::string(json.find("actor")->string);
        a.detector = std::string(json.find("detector")->string);
        a.explanation = std::string(json.find("explanation")->string);
        a.score = static_cast<int>(json.find("score")->integer);
        bool matched = false;
        const std::int64_t grace = grace_of(a.explanation);
        for (Scenario& s : scenarios) {
            if (s.actor != a.actor || a.time_us < s.start_us || a.time_us > s.end_us + grace)
                continue;
            matched = true;
            if (s.first_alert_us < 0) {
                s.first_alert_us = a.time_us;
                s.first_detector = a.detector;
                s.first_score = a.score;
            }
        }
        if (matched) {
            ++true_alerts;
        } else {
            false_alerts.push_back(a);
            ++false_by_detector[a.detector];
        }
    }

    acc::accumulator_set<double, acc::stats<acc::tag::mean, acc::tag::max>> taken_share;
    int detected = 0;
    std::string per_scenario;  // for --summary: name=records before/total, or name=MISS
    fmt::print("{:<20} {:<12} {:<8} {:>11} {:>15}  {}\n", "scenario", "actor", "detected",
               "first (h)", "records before", "first detector (score)");
    for (const Scenario& s : scenarios) {
        const std::int64_t first_record = s.records.empty() ? s.start_us : s.records.front().first;
        if (s.first_alert_us < 0) {
            fmt::print("{:<20} {:<12} {:<8} {:>11} {:>9} / {:<5}\n", s.name, s.actor, "NO", "-",
                       "-", s.total);
            taken_share(1.0);
            per_scenario += fmt::format(" {}=MISS/{}", s.name, s.total);
            continue;
        }
        ++detected;
        long before = 0;
        for (const auto& r : s.records) {
            if (r.first <= s.first_alert_us) before += r.second;
        }
        taken_share(s.total > 0 ? static_cast<double>(before) / s.total : 0.0);
        per_scenario += fmt::format(" {}={}/{}", s.name, before, s.total);
        fmt::print("{:<20} {:<12} {:<8} {:>11.1f} {:>9} / {:<5}  {} ({})\n", s.name, s.actor, "yes",
                   static_cast<double>(s.first_alert_us - first_record) / 3.6e9, before, s.total,
                   s.first_detector, s.first_score);
    }
    const long actor_days = meta["actor_days"];
    const double per_1000 =
        actor_days > 0 ? 1000.0 * static_cast<double>(false_alerts.size()) / actor_days : 0;
    const long all = true_alerts + static_cast<long>(false_alerts.size());
    fmt::print("\nscenarios detected: {} of {}\n", detected, scenarios.size());
    fmt::print(
        "records taken before the first alert: mean {:.1f}% of a scenario's total, worst {:.1f}%\n",
        100 * acc::mean(taken_share), 100 * acc::max(taken_share));
    fmt::print("alerts: {} true, {} false; precision {:.3f}\n", true_alerts, false_alerts.size(),
               all > 0 ? static_cast<double>(true_alerts) / all : 0.0);
    fmt::print("false alerts per 1,000 actor-days: {:.2f} ({} actor-days; target <= 1)\n", per_1000,
               actor_days);
    for (const auto& [d, n] : false_by_detector) fmt::print("  false {}: {}\n", d, n);
    if (!summary_name.empty()) {
        // One tab-separated line for bench/insider/grid.sh to tabulate.
        fmt::print("summary\t{}\t{}\t{}\t{}\t{}\t{:.2f}\t{:.3f}\t{}\n", summary_name, detected,
                   scenarios.size(), false_alerts.size(), actor_days, per_1000,
                   all > 0 ? static_cast<double>(true_alerts) / all : 0.0,
                   per_scenario.empty() ? "" : per_scenario.substr(1));
    }
    if (list_false) {
        for (const AlertRow& a : false_alerts) {
            fmt::print("FALSE {} {} {} {}: {}\n", pa::format_iso8601(a.time_us), a.actor,
                       a.detector, a.score, a.explanation);
        }
    }
    return 0;
}
