// The streaming insider scorer: learns each actor's and each peer group's norms from the access
// trail and raises explained alerts when an actor goes far beyond both. No PostgreSQL here: the
// background worker and the replay tool (pii-audit-score) feed the same class.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "pii_audit/analysis/events.h"
#include "pii_audit/pg_free.h"

namespace pii_audit::analysis {

enum class Detector : std::uint8_t {
    sensitive_categories,  // highly sensitive categories beyond own and peer norms
    distinct_subjects,     // distinct people per day and per rolling 30/90 days
    no_business_reason,    // lookups not covered by a declared actor-subject relation
    bulk_reading,          // rows per statement / per day, COPY
    unusual_hours,         // hour of the week the actor and the peers do not work in
    departed_or_dormant,   // account marked departed, or back after a long silence
    machine_like_access,   // machine cadence on a human account, new application or client
    login_abuse,           // failed-login burst then success; permission-denied reads
};
constexpr int kDetectorCount = 8;
std::string_view detector_name(Detector d);

enum class Severity : std::uint8_t { low, medium, high, critical };
std::string_view severity_name(Severity s);
// Bands: low < 40 <= medium < 70 <= high < 90 <= critical.
Severity severity_of(int score);

struct Alert {
    std::int64_t time_us = 0;
    std::string actor;
    std::string peer_group;
    Detector detector = Detector::sensitive_categories;
    int score = 0;  // combined risk 0-100 of everything this actor did today
    Severity severity = Severity::low;
    std::string explanation;              // words and numbers; never a subject id
    std::vector<std::uint64_t> evidence;  // event ids, oldest first (at most 6)
};

struct ScorerConfig {
    int threshold = 50;          // alerts whose combined score is below are not raised
    int utc_offset_minutes = 0;  // local time for "today" and hour-of-week
    std::vector<std::string> sensitive_categories = {"verification_code", "credential"};
    double norm_quantile = 0.99;   // "far beyond" starts above this quantile of own history
    double peer_quantile = 0.995;  // ... and of the peers' (who have many more days)
    int min_history_days = 14;     // active days before an actor's own norm is trusted
    double min_peer_days = 30;     // actor-days before a peer group's norm is trusted
    double own_decay = 0.985;      // per active day of the actor (memory ~ 65 active days)
    double peer_decay = 0.985;     // per calendar day for peer-group norms
    int relation_ttl_days = 30;    // a declared relation explains lookups for this long
    int dormant_days = 30;         // silence after which activity counts as dormant reuse
    int repeat_after_days = 7;     // same detector, same or lower severity: stay quiet
    int login_failures = 5;        // failures within the window before a success
    int login_window_seconds = 600;
    std::vector<std::string> service_groups;  // peer groups of machine accounts (cadence is normal)
    // A volume or a rare category that goes beyond the norms while 3+ colleagues are working
    // is held this long for the team to follow (a team-wide shift is a business process, and
    // its first movers cannot know it yet). 0: raise at once. Highly sensitive categories,
    // rolling windows and the non-volume detectors are never held.
    int team_wait_minutes = 60;
};

// A period the DBA declares in advance (an audit week, a migration, a campaign): the group's
// volumes may rise to five times what would raise an alert on another day, and categories new
// to the group (other than the highly sensitive ones) are not rare while it lasts. Colleagues'
// same-day behaviour and learned calendar rhythms need no declaration; this is for what happens for
// the first time.
struct KnownEvent {
    std::string name;
    std::string peer_group;    // empty: every peer group
    std::int64_t from_us = 0;  // [from, to)
    std::int64_t to_us = 0;
};

class StateError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct ScorerStats {
    std::size_t actors = 0;
    std::size_t peer_groups = 0;
    std::size_t relations = 0;
    std::size_t bytes_per_actor = 0;  // fixed size of one actor's state
    std::size_t state_bytes = 0;      // size of save_state() right now
    std::uint64_t alerts = 0;
    std::uint64_t unknown_categories_dropped = 0;  // beyond the 64 distinct category names
    // The team rules, since the scorer was made or restored (not saved with the state):
    std::size_t held_now = 0;        // signals held while colleagues may follow
    std::uint64_t held_raised = 0;   // held, then raised: no colleague followed
    std::uint64_t held_dropped = 0;  // held, then dropped: the team made the same shift
    std::uint64_t team_excused = 0;  // actor-day quantities and rare categories excused as the
                                     // team's (cohort, pace, calendar rhythm, declared event)
};

class Scorer {
  public:
    // Throws std::invalid_argument naming the setting and its allowed range.
    explicit Scorer(ScorerConfig config = {});
    ~Scorer();
    Scorer(Scorer&&) noexcept;
    Scorer& operator=(Scorer&&) noexcept;

    // Events must arrive in time order per actor (a small disorder is tolerated: an event older
    // than the actor's latest one counts as happening at the latest time). Alerts are appended to
    // `out`; no allocation happens unless an alert is raised or a new name is seen.
    void observe(const AccessEvent& event, std::vector<Alert>& out);
    void observe(const LoginEvent& event, std::vector<Alert>& out);
    void observe(const RelationEvent& event);

    // Raises what was held for the team (see ScorerConfig::team_wait_minutes) and is due by
    // now_us. Every observe() does this too; call it when no events come (the worker between
    // batches, the replay tool at the end of its input with INT64_MAX).
    void release_held(std::int64_t now_us, std::vector<Alert>& out);
    std::size_t held() const;

    std::vector<Alert> observe(const AccessEvent& event) {
        std::vector<Alert> out;
        observe(event, out);
        return out;
    }
    std::vector<Alert> observe(const LoginEvent& event) {
        std::vector<Alert> out;
        observe(event, out);
        return out;
    }

    // pii_audit.mark_departed(): any later activity by this actor raises a critical alert.
    void mark_departed(std::string_view actor, std::int64_t time_us);
    void clear_departed(std::string_view actor);

    // Known events (pii_audit.known_events). declare_event throws std::invalid_argument for an
    // empty name or an empty or reversed period; the events already declared stay.
    void declare_event(const KnownEvent& event);
    void clear_known_events();
    std::size_t known_events() const;

    // Baselines survive restarts: an opaque byte string tied to this library's state format.
    // restore_state throws StateError on anything malformed or from another format version and
    // leaves the scorer unchanged in that case.
    std::string save_state() const;
    void restore_state(std::string_view bytes);

    // with_state_size: also serialise the state to measure it (costly with many actors).
    ScorerStats stats(bool with_state_size = true) const;
    const ScorerConfig& config() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace pii_audit::analysis
