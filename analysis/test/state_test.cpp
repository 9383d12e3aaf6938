// Baselines survive a restart: a scorer restored from saved state behaves exactly like one that
// never stopped, and a damaged state is refused without touching the running scorer.
#include <gtest/gtest.h>

#include "pii_audit/analysis/replay.h"
#include "synthetic.h"

namespace pii_audit::analysis {
namespace {

using testing::at;
using testing::Sim;

void second_half(Sim& sim) {
    sim.office_days(30, 50, "clerk", 8, 20);
    Sim::Read r;
    r.actor = "clerk1";
    r.categories = {"verification_code"};
    for (int i = 0; i < 10; ++i) {
        r.time = at(50, 10, i);
        r.subjects = {"v" + std::to_string(i)};
        sim.access(r);
    }
    sim.scorer.mark_departed("clerk2", at(50, 0));
    r.actor = "clerk2";
    r.time = at(50, 11);
    sim.access(r);
}

std::string all_json(const std::vector<Alert>& alerts) {
    std::string s;
    for (const Alert& a : alerts) s += alert_json(a) + "\n";
    return s;
}

TEST(State, RestoredScorerContinuesIdentically) {
    Sim straight(ScorerConfig{}, 3);
    straight.office_days(0, 30, "clerk", 8, 20);
    const std::string saved = straight.scorer.save_state();

    Sim resumed(ScorerConfig{}, 3);
    resumed.office_days(0, 30, "clerk", 8, 20);  // same random draws, then drop the learning
    resumed.scorer = Scorer();
    resumed.scorer.restore_state(saved);
    EXPECT_EQ(resumed.scorer.save_state(), saved);

    straight.alerts.clear();
    resumed.alerts.clear();
    second_half(straight);
    second_half(resumed);
    EXPECT_FALSE(straight.alerts.empty());
    EXPECT_EQ(all_json(resumed.alerts), all_json(straight.alerts));
}

TEST(State, BytesPerActorAreBounded) {
    Sim sim;
    sim.office_days(0, 10, "clerk", 4, 200);
    const ScorerStats s = sim.scorer.stats();
    EXPECT_EQ(s.actors, 4u);
    EXPECT_LT(s.bytes_per_actor, 8192u);
    // State grows with actors and relations, never with events per actor.
    const std::size_t before = s.state_bytes;
    sim.office_days(10, 11, "clerk", 4, 2000);
    EXPECT_LT(sim.scorer.stats().state_bytes, before + 4 * 8192 + 200000);
}

TEST(State, DamagedStateIsRefusedAndScorerUnchanged) {
    Sim sim;
    sim.office_days(0, 10, "clerk", 3, 10);
    const std::string good = sim.scorer.save_state();
    Scorer other;
    other.mark_departed("someone", 0);
    const std::string other_state = other.save_state();

    EXPECT_THROW(other.restore_state("nonsense"), StateError);
    EXPECT_THROW(other.restore_state(good.substr(0, good.size() / 2)), StateError);
    EXPECT_THROW(other.restore_state(good + "x"), StateError);
    std::string wrong_version = good;
    wrong_version[8] = 99;
    try {
        other.restore_state(wrong_version);
        FAIL() << "accepted another format version";
    } catch (const StateError& e) {
        EXPECT_NE(std::string(e.what()).find("baselines must be relearned"), std::string::npos);
    }
    EXPECT_EQ(other.save_state(), other_state);
}

// Format 8 added the sequential test in days to every actor: a state saved by a build of format 7
// (same layout otherwise) is refused with the reason, and the baselines are relearned.
TEST(State, PreviousFormatIsRefused) {
    Sim sim;
    sim.office_days(0, 10, "clerk", 3, 10);
    std::string previous = sim.scorer.save_state();
    previous[8] = 7;
    Scorer other;
    try {
        other.restore_state(previous);
        FAIL() << "accepted a state of format 7";
    } catch (const StateError& e) {
        EXPECT_NE(std::string(e.what()).find("scorer state format 7"), std::string::npos)
            << e.what();
        EXPECT_NE(std::string(e.what()).find("baselines must be relearned"), std::string::npos);
    }
}

// The events of one stored group reach the scorer one after another with the same actor,
// categories, relation, application and address, so it keeps its last lookups of them. What it
// keeps must not change what it counts or decides.
TEST(Repeats, CategoriesBeyondTheLimitAreCountedForEveryEvent) {
    Sim sim;
    Sim::Read r;
    r.time = at(0, 9);
    r.actor = "a";
    for (int i = 0; i < 70; ++i) {  // more names than the 64 the scorer tells apart
        r.categories = {"c" + std::to_string(i)};
        sim.access(r);
    }
    const std::uint64_t before = sim.scorer.stats(false).unknown_categories_dropped;
    r.categories = {"beyond"};
    for (int i = 0; i < 3; ++i) sim.access(r);
    EXPECT_EQ(sim.scorer.stats(false).unknown_categories_dropped, before + 3);
}

TEST(Repeats, AnActorSeenJustBeforeStillChangesRole) {
    Sim sim;
    Sim::Read r;
    r.time = at(0, 9);
    r.actor = "a";
    sim.access(r);
    sim.access(r);
    EXPECT_EQ(sim.scorer.stats(false).peer_groups, 1u);
    r.group = "auditor";  // the same actor, next event, in another role
    sim.access(r);
    EXPECT_EQ(sim.scorer.stats(false).peer_groups, 2u);
    EXPECT_EQ(sim.scorer.stats(false).actors, 1u);
}

TEST(Repeats, AlternatingActorsScoreAsEachAlone) {
    // Each actor's reads alone, and the same reads interleaved with another actor's (every
    // lookup then misses what was kept): the same alerts.
    auto reads = [](Sim& sim, const std::string& actor, bool interleave) {
        for (int day = 0; day < 40; ++day) {
            for (int i = 0; i < 30; ++i) {
                Sim::Read r;
                r.time = at(day, 9, i);
                r.actor = actor;
                r.subjects = {"s" + std::to_string(day * 100 + (day >= 35 ? i * 7 : i % 5))};
                if (day >= 35) r.categories = {"name", "id_number"};
                sim.access(r);
                if (interleave) {
                    Sim::Read other = r;
                    // Not a colleague: peers would change what a is compared with.
                    other.actor = "other";
                    other.group = "ops";
                    other.application = "batch";
                    other.client = "10.0.0.9";
                    other.categories = {"phone"};
                    sim.access(other);
                }
            }
        }
    };
    Sim alone, mixed;
    reads(alone, "a", false);
    reads(mixed, "a", true);
    std::vector<std::string> a_alone, a_mixed;
    for (const Alert& x : alone.alerts) a_alone.push_back(x.explanation);
    for (const Alert& x : mixed.alerts) {
        if (x.actor == "a") a_mixed.push_back(x.explanation);
    }
    EXPECT_FALSE(a_alone.empty());
    EXPECT_EQ(a_alone, a_mixed);
}

}  // namespace
}  // namespace pii_audit::analysis
