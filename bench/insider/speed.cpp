// insider-speed: how fast the scorer itself runs, without JSON parsing or I/O. Loads a replay
// file into memory, then times Scorer::observe over all of it on one thread.
//
//   insider-speed FILE [--utc-offset MINUTES]
#include <fmt/format.h>

#include <chrono>
#include <deque>
#include <fstream>
#include <string>
#include <vector>

#include "pii_audit/analysis/json_lines.h"
#include "pii_audit/analysis/replay.h"
#include "pii_audit/analysis/scorer.h"

namespace pa = pii_audit::analysis;

int main(int argc, char** argv) {
    if (argc < 2) {
        fmt::print(stderr, "usage: insider-speed FILE [--utc-offset MINUTES]\n");
        return 64;
    }
    pa::ScorerConfig config;
    if (argc == 4 && std::string(argv[2]) == "--utc-offset")
        config.utc_offset_minutes = std::stoi(argv[3]);
    std::ifstream in(argv[1]);
    std::deque<std::string> text;  // owns every string the records point to
    std::vector<pa::Record> records;
    std::vector<std::pair<std::size_t, std::size_t>> spans;  // categories, subjects offsets
    std::vector<std::string_view> pool;
    pa::JsonLine json;
    std::string line, error;
    auto keep = [&](std::string_view s) -> std::string_view {
        text.emplace_back(s);
        return text.back();
    };
    while (std::getline(in, line)) {
        if (!json.parse(line)) {
            fmt::print(stderr, "{}\n", json.error());
            return 2;
        }
        pa::Record r;
        if (!pa::decode_record(json, r, error)) {
            fmt::print(stderr, "{}\n", error);
            return 2;
        }
        r.actor = keep(r.actor);
        r.access.actor = r.login.actor = r.relation.actor = r.actor;
        r.access.peer_group = keep(r.access.peer_group);
        r.login.peer_group = keep(r.login.peer_group);
        r.access.application = keep(r.access.application);
        r.access.client_addr = keep(r.access.client_addr);
        r.access.relation = keep(r.access.relation);
        r.access.session = keep(r.access.session);
        r.name = keep(r.name);
        r.peer_group = keep(r.peer_group);
        r.login.client_addr = keep(r.login.client_addr);
        r.relation.subject = keep(r.relation.subject);
        spans.emplace_back(pool.size(), r.access.categories.size);
        for (std::string_view c : r.access.categories) pool.push_back(keep(c));
        spans.emplace_back(pool.size(), r.access.subjects.size);
        for (std::string_view s : r.access.subjects) pool.push_back(keep(s));
        records.push_back(r);
    }
    for (std::size_t i = 0; i < records.size(); ++i) {
        records[i].access.categories = {pool.data() + spans[2 * i].first, spans[2 * i].second};
        records[i].access.subjects = {pool.data() + spans[2 * i + 1].first,
                                      spans[2 * i + 1].second};
    }

    pa::Scorer scorer(config);
    std::vector<pa::Alert> alerts;
    std::size_t alert_count = 0;
    const auto start = std::chrono::steady_clock::now();
    for (const pa::Record& r : records) {
        alerts.clear();
        switch (r.kind) {
            case pa::RecordKind::access:
                scorer.observe(r.access, alerts);
                break;
            case pa::RecordKind::login:
                scorer.observe(r.login, alerts);
                break;
            case pa::RecordKind::relation:
                scorer.observe(r.relation);
                break;
            case pa::RecordKind::departed:
                scorer.mark_departed(r.actor, r.time_us);
                break;
            case pa::RecordKind::known_event:
                scorer.declare_event(
                    {std::string(r.name), std::string(r.peer_group), r.time_us, r.until_us});
                break;
        }
        alert_count += alerts.size();
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const pa::ScorerStats s = scorer.stats();
    fmt::print(
        "events {} alerts {} scorer seconds {:.3f} events/s {:.0f} bytes_per_actor {} state_bytes "
        "{} actors {} relations {}\n",
        records.size(), alert_count, seconds, records.size() / seconds, s.bytes_per_actor,
        s.state_bytes, s.actors, s.relations);
    return 0;
}
