// A small synthetic organisation for detector tests: clerks who look up customers during office
// hours, mostly with a declared ticket first, drawing on their own pool of repeat customers.
#pragma once
#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "pii_audit/analysis/scorer.h"

namespace pii_audit::analysis::testing {

// 2024-01-01 (a Monday) plus `day` days, at the given UTC time.
inline std::int64_t at(int day, int hour, int minute = 0, int second = 0) {
    const std::int64_t epoch_day = 19723 + day;
    return ((epoch_day * 24 + hour) * 3600 + minute * 60 + second) * std::int64_t{1000000};
}

inline bool weekday(int day) { return day % 7 < 5; }

class Sim {
  public:
    explicit Sim(ScorerConfig config = {}, std::uint64_t seed = 7)
        : scorer(std::move(config)), rng(seed) {}

    struct Read {
        std::int64_t time;
        std::string actor;
        std::string group = "clerk";
        std::vector<std::string> categories = {"name", "phone"};
        std::vector<std::string> subjects;
        std::int64_t rows = -1;  // -1: one row per subject
        Command command = Command::select;
        AccessStatus status = AccessStatus::ok;
        std::string application = "counter-app";
        std::string client = "10.0.0.1";
        std::string session;
        std::string relation = "customers";
    };

    std::vector<Alert> access(const Read& r) {
        std::vector<std::string_view> cats(r.categories.begin(), r.categories.end());
        std::vector<std::string_view> subs(r.subjects.begin(), r.subjects.end());
        AccessEvent e;
        e.time_us = r.time;
        e.event_id = next_id++;
        e.actor = r.actor;
        e.peer_group = r.group;
        e.application = r.application;
        e.client_addr = r.client;
        e.session = r.session;
        e.relation = r.relation;
        e.command = r.command;
        e.categories = {cats.data(), cats.size()};
        e.subjects = {subs.data(), subs.size()};
        e.rows = r.rows >= 0 ? r.rows : static_cast<std::int64_t>(r.subjects.size());
        e.status = r.status;
        std::vector<Alert> out;
        scorer.observe(e, out);
        record(out);
        return out;
    }

    void relation(std::int64_t time, const std::string& actor, const std::string& subject) {
        scorer.observe(RelationEvent{time, actor, subject});
    }

    std::vector<Alert> login(std::int64_t time, const std::string& actor, bool success,
                             const std::string& client = "10.0.0.1") {
        LoginEvent e;
        e.time_us = time;
        e.event_id = next_id++;
        e.actor = actor;
        e.peer_group = "clerk";
        e.client_addr = client;
        e.success = success;
        std::vector<Alert> out;
        scorer.observe(e, out);
        record(out);
        return out;
    }

    // One office day: `lookups` customers between 09:00 and 17:00; 95% come with a ticket.
    void office_day(int day, const std::string& actor, const std::string& group, int lookups,
                    std::vector<std::string> categories = {"name", "phone"}) {
        std::uniform_int_distribution<int> second(9 * 3600, 17 * 3600 - 1);
        std::vector<int> times(static_cast<std::size_t>(lookups));
        for (int& t : times) t = second(rng);
        std::sort(times.begin(), times.end());
        std::uniform_int_distribution<int> pick(0, 299);
        std::bernoulli_distribution ticket(0.95);
        for (int t : times) {
            const std::string customer = actor + "-cust-" + std::to_string(pick(rng));
            if (ticket(rng)) relation(at(day, 0) + std::int64_t{t - 60} * 1000000, actor, customer);
            Read r;
            r.time = at(day, 0) + std::int64_t{t} * 1000000;
            r.actor = actor;
            r.group = group;
            r.categories = categories;
            r.subjects = {customer};
            access(r);
        }
    }

    // Everyone in the group works every weekday in [from, to).
    void office_days(int from, int to, const std::string& group, int people, int lookups) {
        for (int day = from; day < to; ++day) {
            if (!weekday(day)) continue;
            for (int p = 0; p < people; ++p)
                office_day(day, group + std::to_string(p), group, lookups);
        }
    }

    std::vector<Alert> alerts_for(const std::string& actor) const {
        std::vector<Alert> out;
        for (const Alert& a : alerts) {
            if (a.actor == actor) out.push_back(a);
        }
        return out;
    }

    Scorer scorer;
    std::vector<Alert> alerts;
    std::uint64_t next_id = 1;
    std::mt19937_64 rng;

  private:
    void record(const std::vector<Alert>& out) {
        alerts.insert(alerts.end(), out.begin(), out.end());
    }
};

inline std::string describe(const std::vector<Alert>& alerts) {
    std::string s;
    for (const Alert& a : alerts) {
        s += a.actor + " " + std::string(detector_name(a.detector)) + " " +
             std::to_string(a.score) + ": " + a.explanation + "\n";
    }
    return s;
}

}  // namespace pii_audit::analysis::testing
