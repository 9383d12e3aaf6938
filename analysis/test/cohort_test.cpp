// Cohorts and calendar rhythms (issue 15): a shift the whole peer group makes together is a
// business process, remembered for the next time its day of the calendar comes round; one
// member going far beyond the team that day, or reading what nobody else reads, still stands out.
#include <gtest/gtest.h>

#include <climits>
#include <iterator>

#include "pii_audit/analysis/replay.h"
#include "synthetic.h"

namespace pii_audit::analysis {
namespace {

using testing::at;
using testing::describe;
using testing::Sim;

constexpr int kTeam = 12;
// Days since 2024-01-01 (a Monday) of each month's last weekday: Jan 31, Feb 29, Mar 29.
constexpr int kMonthEnds[] = {30, 59, 88};

std::string member(int i) { return "bo" + std::to_string(i); }

// The back office's ordinary statements: ten a day, 20-60 rows each, names and accounts, every
// 45 minutes from 08:00 (statement s of member i).
Sim::Read ordinary(int day, int i, int s) {
    Sim::Read r;
    r.actor = member(i);
    r.group = "back_office";
    r.time = at(day, 8, 0) + std::int64_t{s * 45 + i} * 60 * 1000000;
    r.categories = {"name", "bank_account"};
    const int rows = 20 + (day * 7 + i * 13 + s * 29) % 41;
    for (int k = 0; k < rows; ++k)
        r.subjects.push_back("c" + std::to_string((day * 1000 + i * 97 + s * 31 + k) % 9000));
    return r;
}

// Closing the books: member i copies about `rows` rows, a category the team otherwise never
// reads among them, at 10:02 plus ten minutes per member before.
Sim::Read month_end_read(int day, int i, std::int64_t rows) {
    Sim::Read r;
    r.actor = member(i);
    r.group = "back_office";
    r.time = at(day, 10, 2) + std::int64_t{i} * 10 * 60 * 1000000;
    r.categories = {"name", "bank_account", "address"};
    r.command = Command::copy;
    r.rows = rows;
    for (int k = 0; k < 200; ++k)
        r.subjects.push_back("m" + std::to_string(day * 1000 + i * 200 + k));
    return r;
}

// One day in time order: everyone's ordinary statements, plus `extra` reads.
std::vector<Alert> day_of(Sim& sim, int day, std::vector<Sim::Read> extra = {}, int team = kTeam) {
    std::vector<Sim::Read> reads = std::move(extra);
    for (int s = 0; s < 10; ++s) {
        for (int i = 0; i < team; ++i) reads.push_back(ordinary(day, i, s));
    }
    std::stable_sort(reads.begin(), reads.end(),
                     [](const Sim::Read& a, const Sim::Read& b) { return a.time < b.time; });
    std::vector<Alert> got;
    for (const Sim::Read& r : reads) {
        auto out = sim.access(r);
        got.insert(got.end(), out.begin(), out.end());
    }
    return got;
}

// Weekdays [from, to): the team's ordinary work, and at a month end everyone's COPY (member
// `big` copies `big_rows`).
void run(Sim& sim, int from, int to, int big = -1, std::int64_t big_rows = 0, int team = kTeam) {
    for (int day = from; day < to; ++day) {
        if (!testing::weekday(day)) continue;
        const bool month_end = day == kMonthEnds[0] || day == kMonthEnds[1] || day == kMonthEnds[2];
        std::vector<Sim::Read> copies;
        for (int i = 0; i < team && month_end; ++i)
            copies.push_back(month_end_read(day, i, i == big ? big_rows : 28000 + 500 * i));
        day_of(sim, day, copies, team);
    }
}

void release_all(Sim& sim) {
    std::vector<Alert> out;
    sim.scorer.release_held(INT64_MAX, out);
    sim.alerts.insert(sim.alerts.end(), out.begin(), out.end());
}

TEST(Cohorts, TeamsMonthEndRunRaisesNothingTheFirstTimeOrAfter) {
    Sim sim;
    run(sim, 0, 95);
    release_all(sim);
    EXPECT_TRUE(sim.alerts.empty()) << describe(sim.alerts);
    EXPECT_EQ(sim.scorer.held(), 0u);
    // What pii_audit.scorer_status shows: the first movers' signals held and dropped once the
    // colleagues followed, the others' quantities and the new category excused as the team's.
    const ScorerStats stats = sim.scorer.stats(false);
    EXPECT_EQ(stats.held_now, 0u);
    EXPECT_EQ(stats.held_raised, 0u);
    EXPECT_GT(stats.held_dropped, 0u);
    // Each month end, most of the 12 members have a quantity or the category excused.
    EXPECT_GE(stats.team_excused, 3u * kTeam / 2) << stats.team_excused;
}

TEST(Cohorts, HeldSignalsAreCountedWhileHeldAndWhenRaised) {
    Sim sim;
    run(sim, 0, 42);
    // One member alone copies a month's accounts on an ordinary Wednesday morning (10:42).
    std::vector<Sim::Read> reads = {month_end_read(44, 4, 30000)};
    for (int i = 0; i < kTeam; ++i) {
        for (int s = 0; s < 4; ++s) reads.push_back(ordinary(44, i, s));
    }
    std::stable_sort(reads.begin(), reads.end(),
                     [](const Sim::Read& a, const Sim::Read& b) { return a.time < b.time; });
    for (const Sim::Read& r : reads) sim.access(r);
    const ScorerStats held = sim.scorer.stats(false);
    EXPECT_GE(held.held_now, 1u);
    EXPECT_EQ(held.held_now, sim.scorer.held());
    std::vector<Alert> out;
    sim.scorer.release_held(at(44, 11, 43), out);
    ASSERT_FALSE(out.empty());
    const ScorerStats after = sim.scorer.stats(false);
    EXPECT_EQ(after.held_now, 0u);
    EXPECT_EQ(after.held_raised - held.held_raised, held.held_now);
    EXPECT_EQ(after.held_dropped, held.held_dropped);
}

TEST(Cohorts, OneMemberCopyingTenTimesTheTeamIsAlerted) {
    Sim sim;
    run(sim, 0, 59);
    run(sim, 59, 60, /*big=*/5, /*big_rows=*/300000);
    release_all(sim);
    ASSERT_FALSE(sim.alerts_for(member(5)).empty()) << describe(sim.alerts);
    const Alert& a = sim.alerts_for(member(5)).front();
    EXPECT_EQ(a.detector, Detector::bulk_reading);
    EXPECT_GE(a.score, 50);
    EXPECT_NE(a.explanation.find("colleagues went beyond their own norms for this today too"),
              std::string::npos)
        << a.explanation;
    EXPECT_NE(a.explanation.find("times theirs"), std::string::npos) << a.explanation;
    // Nobody else in the team run is a suspect.
    EXPECT_EQ(sim.alerts.size(), sim.alerts_for(member(5)).size()) << describe(sim.alerts);
}

TEST(Cohorts, CodesNobodyElseReadsInTheTeamRunAreAlertedAtOnce) {
    Sim sim;
    run(sim, 0, 59);
    std::vector<Sim::Read> reads;
    for (int i = 0; i < kTeam; ++i) reads.push_back(month_end_read(59, i, 28000));
    // While the team closes the books, one member also takes 20 people's verification codes.
    for (int k = 0; k < 20; ++k) {
        Sim::Read r;
        r.actor = member(7);
        r.group = "back_office";
        r.time = at(59, 12, 3 * k);
        r.categories = {"phone", "verification_code"};
        r.subjects = {"walkin-" + std::to_string(k)};
        reads.push_back(r);
    }
    std::vector<Alert> got = day_of(sim, 59, reads);
    ASSERT_FALSE(got.empty()) << describe(sim.alerts);
    EXPECT_EQ(got.front().actor, member(7));
    EXPECT_EQ(got.front().detector, Detector::sensitive_categories);
    EXPECT_NE(got.front().explanation.find("verification_code"), std::string::npos);
    // Raised while he was reading (not held for the team): before his 10th code.
    EXPECT_LT(got.front().time_us, at(59, 12, 27)) << got.front().explanation;
    EXPECT_EQ(sim.alerts.size(), sim.alerts_for(member(7)).size()) << describe(sim.alerts);
}

// A day of `per_member` ordinary statements for everyone, spread over the same working hours
// (08:00-15:30), plus `extra` reads: a month-end workload done record by record, no bulk statement.
std::vector<Alert> busy_day(Sim& sim, int day, int per_member, std::vector<Sim::Read> extra = {},
                            int team = kTeam) {
    std::vector<Sim::Read> reads = std::move(extra);
    for (int s = 0; s < per_member; ++s) {
        for (int i = 0; i < team; ++i) {
            Sim::Read r = ordinary(day, i, s);
            r.time = at(day, 8, 0) + (std::int64_t{s} * 450 * 60 / per_member + i * 7) * 1000000;
            reads.push_back(r);
        }
    }
    std::stable_sort(reads.begin(), reads.end(),
                     [](const Sim::Read& a, const Sim::Read& b) { return a.time < b.time; });
    std::vector<Alert> got;
    for (const Sim::Read& r : reads) {
        auto out = sim.access(r);
        got.insert(got.end(), out.begin(), out.end());
    }
    return got;
}

TEST(Cohorts, ATeamsRecordByRecordMonthEndRaisesNothingTheFirstTime) {
    ScorerConfig config;
    config.team_wait_minutes = 0;  // nothing is held: only the team's pace can excuse
    Sim sim(config);
    run(sim, 0, 30);
    // The first month end ever: everyone works through three times the usual statements.
    const auto got = busy_day(sim, 30, 30);
    EXPECT_TRUE(got.empty()) << describe(got);
    // The same workload by one member alone on an ordinary day is news (so the test can fail).
    run(sim, 31, 35);
    std::vector<Sim::Read> alone;
    for (int s = 10; s < 30; ++s) {
        Sim::Read r = ordinary(35, 4, s);
        r.time = at(35, 8, 0) + std::int64_t{s} * 15 * 60 * 1000000;
        alone.push_back(r);
    }
    const auto news = day_of(sim, 35, alone);
    ASSERT_FALSE(news.empty()) << describe(sim.alerts);
    EXPECT_EQ(news.front().actor, member(4));
}

TEST(Cohorts, OneMemberReadingTenTimesTheTeamsPaceStandsOut) {
    ScorerConfig config;
    config.team_wait_minutes = 0;
    Sim sim(config);
    run(sim, 0, 30);
    // In the team's busy month end, member 6 also reads ten times a colleague's month-end
    // workload in the afternoon, when the team's pace is plain to see (irregular gaps: a person).
    std::vector<Sim::Read> extra;
    for (int s = 0; s < 270; ++s) {
        Sim::Read r = ordinary(30, 6, s);
        r.time = at(30, 11, 0) + std::int64_t{s} * 45 * 1000000 + (s % 3) * 20 * 1000000;
        extra.push_back(r);
    }
    const auto got = busy_day(sim, 30, 30, extra);
    ASSERT_FALSE(got.empty()) << describe(sim.alerts);
    for (const Alert& a : got) EXPECT_EQ(a.actor, member(6)) << describe(got);
    bool paced = false;
    for (const Alert& a : got) paced |= a.explanation.find("usual pace") != std::string::npos;
    EXPECT_TRUE(paced) << describe(got);
}

// A team of 40 (the pace of the last five minutes is reused): the same two judgements.
TEST(Cohorts, ALargeTeamsPaceExcusesItsMonthEndButNotTenTimesIt) {
    constexpr int kLarge = 40;
    ScorerConfig config;
    config.team_wait_minutes = 0;
    Sim sim(config);
    run(sim, 0, 30, -1, 0, kLarge);
    std::vector<Sim::Read> extra;
    for (int s = 0; s < 270; ++s) {
        Sim::Read r = ordinary(30, 6, s);
        r.time = at(30, 11, 0) + std::int64_t{s} * 45 * 1000000 + (s % 3) * 20 * 1000000;
        extra.push_back(r);
    }
    const auto got = busy_day(sim, 30, 30, extra, kLarge);
    ASSERT_FALSE(got.empty()) << describe(sim.alerts);
    for (const Alert& a : got) EXPECT_EQ(a.actor, member(6)) << describe(got);
}

TEST(Calendar, ARhythmSeenOnceIsExpectedTheNextTime) {
    ScorerConfig config;
    config.team_wait_minutes = 0;  // no waiting: only the calendar can excuse a first mover
    Sim sim(config);
    run(sim, 0, 30);
    // The first month end ever: its first movers cannot know, the later ones see the team.
    std::vector<Sim::Read> copies;
    for (int i = 0; i < kTeam; ++i) copies.push_back(month_end_read(30, i, 28000 + 500 * i));
    std::vector<Alert> first = day_of(sim, 30, copies);
    EXPECT_FALSE(first.empty());
    for (const Alert& a : first)
        EXPECT_TRUE(a.actor == member(0) || a.actor == member(1)) << a.actor;
    const std::size_t after_january = sim.alerts.size();
    run(sim, 31, 59);
    EXPECT_EQ(sim.alerts.size(), after_january) << describe(sim.alerts);
    // The next month's last weekday is expected from its first mover on.
    run(sim, 59, 60);
    EXPECT_EQ(sim.alerts.size(), after_january) << describe(sim.alerts);
    // A day that is no month end is not excused: one member copying alone is news.
    auto alone = day_of(sim, 64, {month_end_read(64, 3, 28000)});
    ASSERT_FALSE(alone.empty()) << describe(sim.alerts);
    EXPECT_EQ(alone.front().actor, member(3));
}

// Public holidays: nobody in the back office works on Tuesday and Wednesday, days 15-16, and on
// the Thursday everyone works through the backlog in one large COPY (a category the team
// otherwise never reads among it). The first time, its first movers cannot know; after the next
// holiday (days 43-44), the backlog is expected from its first mover on. Learned from the
// group's own activity: no calendar needs declaring.
TEST(Calendar, WorkPiledUpAfterAHolidayIsExpectedAfterTheNextHoliday) {
    ScorerConfig config;
    config.team_wait_minutes = 0;  // no waiting: only the calendar can excuse a first mover
    Sim sim(config);
    auto backlog = [&](int day) {
        std::vector<Sim::Read> copies;
        for (int i = 0; i < kTeam; ++i) copies.push_back(month_end_read(day, i, 28000 + 500 * i));
        return day_of(sim, day, copies);
    };
    run(sim, 0, 15);
    const auto first = backlog(17);
    EXPECT_FALSE(first.empty()) << "the first backlog was news to its first movers";
    for (const Alert& a : first)
        EXPECT_TRUE(a.actor == member(0) || a.actor == member(1)) << describe(first);
    run(sim, 18, 43);
    const std::size_t before = sim.alerts.size();
    const auto second = backlog(45);
    EXPECT_TRUE(second.empty()) << describe(second);
    // An ordinary Friday that follows no holiday: one member copying alone is news.
    run(sim, 46, 53);
    EXPECT_EQ(sim.alerts.size(), before) << describe(sim.alerts);
    const auto alone = day_of(sim, 53, {month_end_read(53, 3, 28000)});
    ASSERT_FALSE(alone.empty()) << describe(sim.alerts);
    EXPECT_EQ(alone.front().actor, member(3));
}

// The DBA's monthly export (200,000 rows on the first weekday of each month) is his own
// rhythm; his irregular large reads in between (days beyond his own norms, on ordinary days)
// must not push it out of what he is remembered to do.
TEST(Calendar, TheDbasMonthlyExportIsExpectedDespiteLargeReadsInBetween) {
    Sim sim;
    // Days since 2024-01-01: Feb 1 (Thu), Mar 1 (Fri), Apr 1 (Mon).
    const int exports[] = {31, 60, 91};
    const int large[] = {38, 44, 50, 53, 66, 72, 79, 81};  // no month's first or last weekdays
    for (int day = 0; day < 95; ++day) {
        if (!testing::weekday(day)) continue;
        for (int p = 0; p < 3; ++p) {
            const std::string dba = "dba" + std::to_string(p);
            for (int s = 0; s < 5; ++s) {
                Sim::Read r;
                r.actor = dba;
                r.group = "dba";
                r.time = at(day, 9 + s, p);
                r.categories = {"name", "phone"};
                r.rows = 30 + (day * 7 + s * 11 + p * 5) % 31;
                sim.access(r);
            }
            if (p != 0) continue;
            if (std::find(std::begin(large), std::end(large), day) != std::end(large)) {
                Sim::Read r;
                r.actor = dba;
                r.group = "dba";
                r.time = at(day, 15);
                r.categories = {"name", "phone"};
                r.rows = 5000;
                sim.access(r);
            }
            if (std::find(std::begin(exports), std::end(exports), day) != std::end(exports)) {
                Sim::Read r;
                r.actor = dba;
                r.group = "dba";
                r.time = at(day, 23);
                r.categories = {"name", "phone", "id_number"};
                r.command = Command::copy;
                r.rows = 200000;
                sim.access(r);
            }
        }
    }
    // The first export is news; the later ones are not, though four large reads came between.
    bool first_export = false;
    for (const Alert& a : sim.alerts) {
        first_export |= a.time_us == at(31, 23);
        EXPECT_NE(a.time_us, at(60, 23)) << describe(sim.alerts);
        EXPECT_NE(a.time_us, at(91, 23)) << describe(sim.alerts);
    }
    EXPECT_TRUE(first_export) << describe(sim.alerts);
}

TEST(Calendar, RhythmsSurviveARestart) {
    ScorerConfig config;
    config.team_wait_minutes = 0;
    Sim sim(config);
    run(sim, 0, 59);
    const std::size_t before = sim.alerts.size();
    Sim restarted(config);
    restarted.scorer.restore_state(sim.scorer.save_state());
    restarted.next_id = sim.next_id;
    run(restarted, 59, 60);
    EXPECT_TRUE(restarted.alerts.empty()) << describe(restarted.alerts);
    EXPECT_GT(before, 0u);  // January's first movers, without waiting
}

TEST(Cohorts, HeldSignalsSurviveARestartAndAreRaisedWhenNobodyFollows) {
    Sim sim;
    run(sim, 0, 42);
    // One member alone copies a month's accounts on an ordinary Wednesday morning.
    std::vector<Sim::Read> reads = {month_end_read(44, 4, 30000)};
    for (int i = 0; i < kTeam; ++i) {
        for (int s = 0; s < 4; ++s) reads.push_back(ordinary(44, i, s));
    }
    std::stable_sort(reads.begin(), reads.end(),
                     [](const Sim::Read& a, const Sim::Read& b) { return a.time < b.time; });
    for (const Sim::Read& r : reads) EXPECT_TRUE(sim.access(r).empty()) << describe(sim.alerts);
    ASSERT_GT(sim.scorer.held(), 0u) << describe(sim.alerts);
    Sim restarted;
    restarted.scorer.restore_state(sim.scorer.save_state());
    EXPECT_EQ(restarted.scorer.held(), sim.scorer.held());
    std::vector<Alert> out;
    // Member 4 copied at 10:42.
    restarted.scorer.release_held(at(44, 11, 41), out);
    EXPECT_TRUE(out.empty()) << "released before the hour was over";
    restarted.scorer.release_held(at(44, 11, 43), out);
    ASSERT_FALSE(out.empty());
    EXPECT_EQ(out.front().actor, member(4));
    EXPECT_NE(out.front().explanation.find("held 60 minutes for colleagues"), std::string::npos)
        << out.front().explanation;
    EXPECT_EQ(restarted.scorer.held(), 0u);
}

TEST(Calendar, DeclaredKnownEventExpectsTheTeamsUnusualWork) {
    ScorerConfig config;
    config.team_wait_minutes = 0;
    Sim sim(config);
    run(sim, 0, 29);
    sim.scorer.declare_event({"migration", "back_office", at(43, 0), at(45, 0)});
    EXPECT_EQ(sim.scorer.known_events(), 1u);
    auto big_statement = [&](int day) {
        Sim::Read r;
        r.actor = member(2);
        r.group = "back_office";
        r.time = at(day, 16);
        r.categories = {"name", "bank_account"};
        r.rows = 1500;
        r.subjects = {"x" + std::to_string(day)};
        return day_of(sim, day, {r});
    };
    run(sim, 29, 44);
    EXPECT_TRUE(big_statement(44).empty()) << describe(sim.alerts);  // during the migration
    run(sim, 45, 50);
    auto out = big_statement(50);  // the same a week later
    ASSERT_FALSE(out.empty()) << describe(sim.alerts);
    EXPECT_EQ(out.front().detector, Detector::bulk_reading);
}

TEST(Calendar, KnownEventsAreValidated) {
    Scorer scorer;
    EXPECT_THROW(scorer.declare_event({"", "", at(1, 0), at(2, 0)}), std::invalid_argument);
    try {
        scorer.declare_event({"audit week", "", at(2, 0), at(1, 0)});
        FAIL() << "a reversed period was accepted";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("must end after it starts"), std::string::npos);
    }
    EXPECT_EQ(scorer.known_events(), 0u);
    scorer.declare_event({"audit week", "", at(1, 0), at(2, 0)});
    EXPECT_EQ(scorer.known_events(), 1u);
    scorer.clear_known_events();
    EXPECT_EQ(scorer.known_events(), 0u);
}

TEST(Calendar, TeamWaitIsValidated) {
    ScorerConfig config;
    config.team_wait_minutes = -1;
    EXPECT_THROW(Scorer{config}, std::invalid_argument);
}

TEST(Calendar, ReplayReadsKnownEvents) {
    JsonLine json;
    Record r;
    std::string error;
    ASSERT_TRUE(json.parse(R"({"kind":"known_event","time":"2024-03-25T00:00:00+08:00",)"
                           R"("until":"2024-03-30T00:00:00+08:00","name":"audit week",)"
                           R"("peer_group":"back_office"})"));
    ASSERT_TRUE(decode_record(json, r, error)) << error;
    EXPECT_EQ(r.kind, RecordKind::known_event);
    EXPECT_EQ(r.name, "audit week");
    EXPECT_EQ(r.peer_group, "back_office");
    EXPECT_EQ(r.until_us - r.time_us, 5LL * 86400 * 1000000);
    ASSERT_TRUE(json.parse(R"({"kind":"known_event","time":"2024-03-25T00:00:00Z",)"
                           R"("until":"2024-03-24T00:00:00Z","name":"x"})"));
    EXPECT_FALSE(decode_record(json, r, error));
    EXPECT_NE(error.find("\"until\""), std::string::npos) << error;
}

}  // namespace
}  // namespace pii_audit::analysis

namespace pii_audit::analysis {
namespace {

using testing::at;
using testing::describe;
using testing::Sim;

// Counter clerks, a tenth of whose customers are walk-ins (no ticket declared): a few lookups
// without a business reason a day, too few for a pace of their own. On the first day after a
// holiday the whole team serves four times its usual customers, walk-ins included.
class Backlog : public ::testing::Test {
  protected:
    static constexpr int kClerks = 20;
    // All clerks' lookups of one day in time order; `ticketless[p]` extra lookups of clerk p
    // without a ticket.
    void day(int d, int lookups, std::vector<int> ticketless = {}) {
        ticketless.resize(kClerks);
        std::bernoulli_distribution walk_in(0.1);
        std::uniform_int_distribution<int> second(0, 8 * 3600 - 1);  // 09:00-17:00, at random
        struct Lookup {
            std::int64_t time;
            int clerk;
            bool ticket;
            std::string subject;
        };
        std::vector<Lookup> all;
        for (int p = 0; p < kClerks; ++p) {
            const std::string clerk = "clerk" + std::to_string(p);
            for (int k = 0; k < lookups + ticketless[p]; ++k) {
                const bool friend_of = k >= lookups;
                all.push_back({at(d, 9) + std::int64_t{second(sim.rng)} * 1000000, p,
                               !friend_of && !walk_in(sim.rng),
                               clerk + "-" + std::to_string(d) + "-" + std::to_string(k)});
            }
        }
        std::sort(all.begin(), all.end(),
                  [](const Lookup& a, const Lookup& b) { return a.time < b.time; });
        for (const Lookup& l : all) {
            Sim::Read r;
            r.actor = "clerk" + std::to_string(l.clerk);
            r.time = l.time;
            r.subjects = {l.subject};
            if (l.ticket) sim.relation(r.time - 60000000, r.actor, l.subject);
            sim.access(r);
        }
    }
    void warm() {
        for (int d = 0; d < 42; ++d) {
            if (testing::weekday(d)) day(d, 25);
        }
        ASSERT_TRUE(sim.alerts.empty()) << describe(sim.alerts);
    }
    Sim sim{ScorerConfig{}, 5};
};

TEST_F(Backlog, TheTeamsWalkInsAtFourTimesItsPaceAreNoNews) {
    warm();
    day(42, 100);
    EXPECT_TRUE(sim.alerts.empty()) << describe(sim.alerts);
}

TEST_F(Backlog, OneClerkLookingUpEightyPeopleWithoutReasonInTheBacklogStandsOut) {
    warm();
    std::vector<int> ticketless(kClerks);
    ticketless[4] = 80;
    day(42, 100, ticketless);
    ASSERT_FALSE(sim.alerts.empty());
    for (const Alert& a : sim.alerts) EXPECT_EQ(a.actor, "clerk4") << describe(sim.alerts);
    EXPECT_EQ(sim.alerts.front().detector, Detector::no_business_reason);
}

}  // namespace
}  // namespace pii_audit::analysis
