// Each detector against a synthetic organisation: it fires on the pattern it is named after, with
// the numbers in its explanation, and stays quiet on the same organisation working normally.
#include <gtest/gtest.h>

#include "synthetic.h"

namespace pii_audit::analysis {
namespace {

using testing::at;
using testing::describe;
using testing::Sim;

constexpr int kClerks = 20;
constexpr int kWarmDays = 42;  // six weeks of normal work before anything is injected

bool has(const std::vector<Alert>& alerts, Detector d) {
    for (const Alert& a : alerts) {
        if (a.detector == d) return true;
    }
    return false;
}

const Alert* first(const std::vector<Alert>& alerts, Detector d) {
    for (const Alert& a : alerts) {
        if (a.detector == d) return &a;
    }
    return nullptr;
}

class Detectors : public ::testing::Test {
  protected:
    void SetUp() override { sim.office_days(0, kWarmDays, "clerk", kClerks, 25); }
    Sim sim;
};

TEST_F(Detectors, NormalWorkRaisesNothing) {
    sim.office_days(kWarmDays, kWarmDays + 30, "clerk", kClerks, 25);
    EXPECT_TRUE(sim.alerts.empty()) << describe(sim.alerts);
}

TEST_F(Detectors, SensitiveCategoriesBeyondOwnAndPeers) {
    Sim::Read r;
    r.actor = "clerk3";
    r.categories = {"phone", "verification_code"};
    std::vector<Alert> got;
    for (int i = 0; i < 14; ++i) {
        r.time = at(kWarmDays, 10, 2 * i);
        r.subjects = {"walkin-" + std::to_string(i)};
        auto out = sim.access(r);
        got.insert(got.end(), out.begin(), out.end());
    }
    // First the category itself: clerks never read codes. Then the count beyond the norms.
    ASSERT_GE(got.size(), 2u) << describe(sim.alerts);
    EXPECT_EQ(got[0].detector, Detector::sensitive_categories);
    EXPECT_NE(got[0].explanation.find("read verification_code of 2 subjects today, a category this "
                                      "actor read on 0 of 30 active days and peers on 0.0%"),
              std::string::npos)
        << got[0].explanation;
    const Alert* alert = &got[1];
    EXPECT_EQ(alert->detector, Detector::sensitive_categories);
    EXPECT_GE(alert->score, 70);
    EXPECT_NE(alert->explanation.find("read verification_code of "), std::string::npos)
        << alert->explanation;
    EXPECT_NE(alert->explanation.find("own median 0"), std::string::npos) << alert->explanation;
    EXPECT_NE(alert->explanation.find("peers' median 0, 99.5th percentile 0"), std::string::npos)
        << alert->explanation;
    for (const Alert& a : got) EXPECT_EQ(a.explanation.find("walkin"), std::string::npos);
    EXPECT_FALSE(alert->evidence.empty());
    // The escalation to 14 subjects is reported once the score band rises, not per lookup.
    EXPECT_LE(got.size(), 4u) << describe(got);
}

TEST_F(Detectors, RolesThatReadCodesDailyAreNotFlagged) {
    // A back office that verifies identities reads codes every day: its norm, not the clerks'.
    for (int day = 0; day < kWarmDays + 20; ++day) {
        if (!testing::weekday(day)) continue;
        for (int p = 0; p < 8; ++p) {
            sim.office_day(day, "verify" + std::to_string(p), "backoffice", 15,
                           {"phone", "verification_code"});
        }
    }
    for (const Alert& a : sim.alerts) {
        EXPECT_NE(a.peer_group, "backoffice") << describe(sim.alerts);
    }
}

TEST_F(Detectors, DistinctSubjectsInOneDay) {
    Sim::Read r;
    r.actor = "clerk5";
    r.time = at(kWarmDays, 11);
    std::vector<Alert> got;
    for (int i = 0; i < 200; ++i) {
        r.time += 20 * 1000000;
        r.subjects = {"bulk-" + std::to_string(i)};
        auto out = sim.access(r);
        got.insert(got.end(), out.begin(), out.end());
    }
    const Alert* alert = first(got, Detector::distinct_subjects);
    ASSERT_NE(alert, nullptr) << describe(sim.alerts);
    EXPECT_NE(alert->explanation.find("distinct subjects today"), std::string::npos);
    EXPECT_NE(alert->explanation.find("over 30 active days"), std::string::npos)
        << alert->explanation;
    EXPECT_EQ(alert->actor, "clerk5");
}

TEST_F(Detectors, LowAndSlowOverRollingWindows) {
    // Six new people a day on top of normal work: no single day stands out, the month does.
    int extra = 0;
    for (int day = kWarmDays; day < kWarmDays + 75; ++day) {
        if (!testing::weekday(day)) continue;
        sim.office_days(day, day + 1, "clerk", kClerks, 25);
        Sim::Read r;
        r.actor = "clerk7";
        for (int i = 0; i < 6; ++i) {
            r.time = at(day, 16, 10 * i);
            r.subjects = {"slow-" + std::to_string(extra++)};
            sim.relation(r.time - 1000000, "clerk7", r.subjects[0]);  // each with a ticket
            sim.access(r);
        }
        if (!sim.alerts.empty()) break;
    }
    const Alert* alert = first(sim.alerts, Detector::distinct_subjects);
    ASSERT_NE(alert, nullptr) << "extra lookups " << extra << "\n" << describe(sim.alerts);
    EXPECT_EQ(alert->actor, "clerk7") << describe(sim.alerts);
    EXPECT_NE(alert->explanation.find("distinct subjects in the last"), std::string::npos)
        << alert->explanation;
    EXPECT_NE(alert->explanation.find("peers at the same point of their"), std::string::npos)
        << alert->explanation;
    EXPECT_EQ(alert->explanation.find("today"), std::string::npos) << alert->explanation;
    EXPECT_LT(extra, 250);  // caught within about two months of six a day
}

TEST_F(Detectors, LookupsWithoutBusinessReason) {
    Sim::Read r;
    r.actor = "clerk2";
    std::vector<Alert> got;
    for (int i = 0; i < 8; ++i) {
        r.time = at(kWarmDays, 14, 5 * i);
        r.subjects = {"flight-" + std::to_string(i)};
        auto out = sim.access(r);
        got.insert(got.end(), out.begin(), out.end());
    }
    const Alert* alert = first(got, Detector::no_business_reason);
    ASSERT_NE(alert, nullptr) << describe(sim.alerts);
    EXPECT_GE(alert->score, 60);  // unexplained lookups weigh heavily
    // Per category (peers look up names and phones without a ticket rarely: repeat customers
    // have one from the last 30 days) or per day, whichever speaks first.
    EXPECT_NE(alert->explanation.find("with no declared business relation"), std::string::npos)
        << alert->explanation;
    // The same lookups with tickets are ordinary.
    Sim::Read t = r;
    t.actor = "clerk4";
    for (int i = 0; i < 8; ++i) {
        t.time = at(kWarmDays, 14, 5 * i);
        t.subjects = {"ticketed-" + std::to_string(i)};
        sim.relation(t.time - 30 * 1000000, "clerk4", t.subjects[0]);
        sim.access(t);
    }
    EXPECT_TRUE(sim.alerts_for("clerk4").empty()) << describe(sim.alerts);
}

// In the server, relations come from a query that knows actors but not their peer groups: every
// ticket here names its clerk before the clerk's first read says which group he is in.
TEST(DetectorsRelations, RelationsDeclaredBeforeTheGroupIsKnownStillCount) {
    Sim sim;
    constexpr int kDesks = 20;
    for (int p = 0; p < kDesks; ++p) {
        const std::string desk = "desk" + std::to_string(p);
        for (int c = 0; c < 300; ++c)
            sim.relation(at(0, 0), desk, desk + "-cust-" + std::to_string(c));
    }
    std::mt19937_64 rng(11);
    std::uniform_int_distribution<int> pick(0, 299), minute(0, 479);
    for (int day = 0; day < 28; ++day) {
        if (!testing::weekday(day)) continue;
        for (int p = 0; p < kDesks; ++p) {
            std::vector<int> minutes(25);
            for (int& m : minutes) m = minute(rng);
            std::sort(minutes.begin(), minutes.end());
            for (int m : minutes) {
                Sim::Read r;
                r.actor = "desk" + std::to_string(p);
                r.group = "front_desk";
                r.time = at(day, 1) + std::int64_t{m} * 60 * 1000000;
                r.subjects = {r.actor + "-cust-" + std::to_string(pick(rng))};
                sim.access(r);
            }
        }
    }
    ASSERT_TRUE(sim.alerts.empty()) << describe(sim.alerts);
    Sim::Read r;
    r.actor = "desk3";
    r.group = "front_desk";
    std::vector<Alert> got;
    for (int i = 0; i < 8; ++i) {
        r.time = at(28, 3, 5 * i);
        r.subjects = {"walkin-" + std::to_string(i)};
        auto out = sim.access(r);
        got.insert(got.end(), out.begin(), out.end());
    }
    EXPECT_NE(first(got, Detector::no_business_reason), nullptr) << describe(sim.alerts);
}

TEST_F(Detectors, FewUnexplainedLookupsADayAddUpOverAMonth) {
    // Three people a day without a ticket: within daily norms, beyond the peers' month.
    int extra = 0;
    for (int day = kWarmDays; day < kWarmDays + 45 && sim.alerts.empty(); ++day) {
        if (!testing::weekday(day)) continue;
        sim.office_days(day, day + 1, "clerk", kClerks, 25);
        Sim::Read r;
        r.actor = "clerk8";
        for (int i = 0; i < 3; ++i) {
            r.time = at(day, 15, 10 * i);
            r.subjects = {"favour-" + std::to_string(extra++)};
            sim.access(r);
        }
    }
    const Alert* alert = first(sim.alerts, Detector::no_business_reason);
    ASSERT_NE(alert, nullptr) << describe(sim.alerts);
    EXPECT_EQ(alert->actor, "clerk8");
    // Either the count or the share of lookups without a reason over the window speaks.
    const bool count =
        alert->explanation.find("looked up subjects with no declared business relation on ") == 0;
    const bool share =
        alert->explanation.find("had no declared business relation (") != std::string::npos;
    EXPECT_TRUE(count || share) << alert->explanation;
    EXPECT_NE(alert->explanation.find("in the last"), std::string::npos) << alert->explanation;
    EXPECT_EQ(sim.alerts.size(), 1u) << describe(sim.alerts);
    EXPECT_LT(extra, 60);
}

TEST_F(Detectors, BulkStatementAndCopy) {
    Sim::Read r;
    r.actor = "clerk9";
    r.time = at(kWarmDays, 10);
    r.subjects = {"one"};
    r.rows = 50000;
    auto out = sim.access(r);
    const Alert* alert = first(out, Detector::bulk_reading);
    ASSERT_NE(alert, nullptr) << describe(sim.alerts);
    EXPECT_NE(alert->explanation.find("50000 rows"), std::string::npos) << alert->explanation;

    r.actor = "clerk10";
    r.rows = 40;
    r.command = Command::copy;
    out = sim.access(r);
    ASSERT_TRUE(has(out, Detector::bulk_reading)) << describe(sim.alerts);
    EXPECT_NE(first(out, Detector::bulk_reading)->explanation.find("COPY"), std::string::npos);
}

TEST(DetectorsSessions, OneSessionFarBeyondItsNorm) {
    // Analysts run ~10 sessions a day of ~400 rows each. One day a single session reads 3,000
    // rows while the day's total stays ordinary.
    Sim sim;
    auto session = [&](const std::string& actor, int day, int index, int statements, int rows) {
        std::vector<Alert> got;
        Sim::Read r;
        r.actor = actor;
        r.group = "analyst";
        r.categories = {"name"};
        r.session = actor + "-" + std::to_string(day) + "-" + std::to_string(index);
        r.subjects = {};
        for (int i = 0; i < statements; ++i) {
            r.time = at(day, 9 + index % 8, 5 * i, index);
            r.rows = rows;
            auto out = sim.access(r);
            got.insert(got.end(), out.begin(), out.end());
        }
        return got;
    };
    for (int day = 0; day < kWarmDays; ++day) {
        if (!testing::weekday(day)) continue;
        for (int p = 0; p < 10; ++p) {
            for (int k = 0; k < 10; ++k)
                session("analyst" + std::to_string(p), day, k, 4, 90 + (p * 7 + k * 13 + day) % 40);
        }
    }
    ASSERT_TRUE(sim.alerts.empty()) << describe(sim.alerts);
    std::vector<Alert> got = session("analyst3", kWarmDays, 0, 30, 100);
    for (int k = 1; k < 3; ++k) session("analyst3", kWarmDays, k, 4, 100);
    const Alert* alert = first(got, Detector::bulk_reading);
    ASSERT_NE(alert, nullptr) << describe(sim.alerts);
    // First at 1,700 rows (medium), once more when it reaches the high band; nothing else.
    ASSERT_EQ(sim.alerts.size(), 2u) << describe(sim.alerts);
    for (const Alert& a : sim.alerts) {
        EXPECT_EQ(a.detector, Detector::bulk_reading);
        EXPECT_NE(a.explanation.find("rows in one session today"), std::string::npos)
            << a.explanation;
    }
    EXPECT_LT(sim.alerts[0].severity, sim.alerts[1].severity);
}

TEST_F(Detectors, UnusualHours) {
    // Sunday 03:00-04:00: neither this clerk nor any peer has ever worked then.
    const int sunday = kWarmDays + 6;
    Sim::Read r;
    r.actor = "clerk11";
    std::vector<Alert> got;
    for (int i = 0; i < 30; ++i) {
        r.time = at(sunday, 3, i, 13 * i % 60);
        r.subjects = {"night-" + std::to_string(i)};
        sim.relation(r.time - 1000000, "clerk11", r.subjects[0]);  // even with tickets
        auto out = sim.access(r);
        got.insert(got.end(), out.begin(), out.end());
    }
    const Alert* alert = first(got, Detector::unusual_hours);
    ASSERT_NE(alert, nullptr) << describe(sim.alerts);
    EXPECT_NE(alert->explanation.find("on Sunday between 03:00 and 04:00"), std::string::npos)
        << alert->explanation;
    EXPECT_NE(alert->explanation.find("0.0% of this actor's"), std::string::npos)
        << alert->explanation;
}

TEST_F(Detectors, DepartedAccount) {
    sim.scorer.mark_departed("clerk12", at(kWarmDays, 0));
    Sim::Read r;
    r.actor = "clerk12";
    r.time = at(kWarmDays + 3, 10);
    r.subjects = {"x"};
    auto out = sim.access(r);
    const Alert* alert = first(out, Detector::departed_or_dormant);
    ASSERT_NE(alert, nullptr) << describe(sim.alerts);
    EXPECT_EQ(alert->severity, Severity::critical);
    EXPECT_NE(alert->explanation.find("3.4 days after the account was marked departed"),
              std::string::npos)
        << alert->explanation;
    // A successful login by the departed account is reported too (on a later day).
    EXPECT_TRUE(
        has(sim.login(at(kWarmDays + 9, 9), "clerk12", true), Detector::departed_or_dormant));
}

TEST_F(Detectors, DormantAccountComesBack) {
    // clerk13 stops after the warm-up; 45 days later its account reads again.
    const int back = kWarmDays + 45;
    for (int day = kWarmDays; day < back; ++day) {
        if (!testing::weekday(day)) continue;
        for (int p = 0; p < kClerks; ++p) {
            if (p != 13) sim.office_day(day, "clerk" + std::to_string(p), "clerk", 25);
        }
    }
    Sim::Read r;
    r.actor = "clerk13";
    r.time = at(back, 10);
    r.subjects = {"y"};
    auto out = sim.access(r);
    const Alert* alert = first(out, Detector::departed_or_dormant);
    ASSERT_NE(alert, nullptr) << describe(sim.alerts);
    EXPECT_NE(alert->explanation.find("days of silence (dormancy threshold 30 days"),
              std::string::npos)
        << alert->explanation;
}

TEST_F(Detectors, MachineCadenceOnHumanAccountButNotOnService) {
    // A crawler on a clerk's account, one lookup every 4 s (+-0.2 s), evenings.
    auto crawl = [&](const std::string& actor, const std::string& group) {
        std::vector<Alert> got;
        Sim::Read r;
        r.actor = actor;
        r.group = group;
        r.categories = {"name"};  // keeps other detectors out of the way
        std::mt19937 jitter(1);
        std::int64_t t = at(kWarmDays, 12);
        for (int i = 0; i < 80; ++i) {
            t += 4000000 + static_cast<std::int64_t>(jitter() % 400000) - 200000;
            r.time = t;
            r.subjects = {actor + "-cust-" + std::to_string(i % 40)};
            sim.relation(t - 1, actor, r.subjects[0]);
            auto out = sim.access(r);
            got.insert(got.end(), out.begin(), out.end());
        }
        return got;
    };
    const auto human = crawl("clerk14", "clerk");
    const Alert* alert = first(human, Detector::machine_like_access);
    ASSERT_NE(alert, nullptr) << describe(sim.alerts);
    EXPECT_NE(alert->explanation.find("consecutive reads at a steady 4.0 s interval"),
              std::string::npos)
        << alert->explanation;

    ScorerConfig config;
    config.service_groups = {"etl"};
    Sim service(config);
    Sim::Read r;
    r.actor = "etl1";
    r.group = "etl";
    for (int i = 0; i < 200; ++i) {
        r.time = at(1, 2) + std::int64_t{i} * 4000000;
        r.subjects = {"s" + std::to_string(i % 10)};
        service.access(r);
    }
    EXPECT_FALSE(has(service.alerts, Detector::machine_like_access)) << describe(service.alerts);
}

TEST_F(Detectors, NewApplicationFromNewClient) {
    Sim::Read r;
    r.actor = "clerk15";
    r.time = at(kWarmDays, 10);
    r.subjects = {"a"};
    r.application = "psql";
    r.client = "192.0.2.77";
    auto out = sim.access(r);
    const Alert* alert = first(out, Detector::machine_like_access);
    ASSERT_NE(alert, nullptr) << describe(sim.alerts);
    EXPECT_NE(alert->explanation.find("first use of application 'psql' after 30 active days"),
              std::string::npos)
        << alert->explanation;
    EXPECT_EQ(alert->explanation.find("192.0.2.77"), std::string::npos);
}

TEST_F(Detectors, FailedLoginBurstThenSuccess) {
    for (int i = 0; i < 8; ++i)
        sim.login(at(kWarmDays, 20, 0, 15 * i), "clerk16", false, "203.0.113.9");
    auto out = sim.login(at(kWarmDays, 20, 3), "clerk16", true, "203.0.113.9");
    const Alert* alert = first(out, Detector::login_abuse);
    ASSERT_NE(alert, nullptr) << describe(sim.alerts);
    EXPECT_NE(
        alert->explanation.find("8 failed logins within 3.0 minutes, then a successful login"),
        std::string::npos)
        << alert->explanation;
    EXPECT_EQ(alert->evidence.size(), 6u);

    // A couple of typos before logging in is ordinary.
    sim.login(at(kWarmDays, 8, 0), "clerk17", false);
    sim.login(at(kWarmDays, 8, 1), "clerk17", false);
    EXPECT_TRUE(sim.login(at(kWarmDays, 8, 2), "clerk17", true).empty());
}

TEST_F(Detectors, StuffingAcrossAccountsFromOneAddress) {
    // Two tries per account against ten accounts from one address, then one works.
    const std::string attacker = "198.51.100.9";
    int second = 0;
    for (int p = 0; p < 10; ++p) {
        for (int k = 0; k < 2; ++k) {
            EXPECT_TRUE(sim.login(at(kWarmDays, 23, 0, second++), "clerk" + std::to_string(p),
                                  false, attacker)
                            .empty());
        }
    }
    auto out = sim.login(at(kWarmDays, 23, 1), "clerk19", true, attacker);
    const Alert* alert = first(out, Detector::login_abuse);
    ASSERT_NE(alert, nullptr) << describe(sim.alerts);
    EXPECT_EQ(alert->actor, "clerk19");
    EXPECT_NE(alert->explanation.find("successful login from a client address that had 20 failed "
                                      "logins against at least 8 accounts within 1.0 minutes"),
              std::string::npos)
        << alert->explanation;
    // The same colleague logging in from the office is not affected.
    EXPECT_TRUE(sim.login(at(kWarmDays, 23, 2), "clerk18", true, "10.0.0.1").empty());
}

TEST_F(Detectors, PermissionDeniedAttempts) {
    Sim::Read r;
    r.actor = "clerk18";
    r.status = AccessStatus::denied;
    r.categories = {"bank_account"};
    std::vector<Alert> got;
    for (int i = 0; i < 6; ++i) {
        r.time = at(kWarmDays, 15, i);
        r.subjects = {};
        auto out = sim.access(r);
        got.insert(got.end(), out.begin(), out.end());
    }
    const Alert* alert = first(got, Detector::login_abuse);
    ASSERT_NE(alert, nullptr) << describe(sim.alerts);
    EXPECT_NE(alert->explanation.find("was denied"), std::string::npos) << alert->explanation;
}

TEST_F(Detectors, NewHireIsJudgedByPeersUntilWarm) {
    Sim::Read r;
    r.actor = "newhire";
    r.time = at(kWarmDays, 9);
    std::vector<Alert> got;
    for (int i = 0; i < 150; ++i) {
        r.time += 60 * 1000000;
        r.subjects = {"n" + std::to_string(i)};
        sim.relation(r.time - 1, "newhire", r.subjects[0]);
        auto out = sim.access(r);
        got.insert(got.end(), out.begin(), out.end());
    }
    const Alert* alert = first(got, Detector::distinct_subjects);
    ASSERT_NE(alert, nullptr) << describe(sim.alerts);
    EXPECT_NE(alert->explanation.find("no own norm yet (0 active days)"), std::string::npos)
        << alert->explanation;
    // And an ordinary first day raises nothing.
    sim.office_day(kWarmDays, "newhire2", "clerk", 25);
    EXPECT_TRUE(sim.alerts_for("newhire2").empty()) << describe(sim.alerts);
}

TEST(DetectorsCold, NothingFiresWithoutAnyNorm) {
    // No history at all: volume alone proves nothing yet.
    Sim sim;
    Sim::Read r;
    r.actor = "first";
    r.time = at(0, 10);
    for (int i = 0; i < 300; ++i) {
        r.time += 1000000 * (3 + i % 7);
        r.subjects = {"c" + std::to_string(i)};
        sim.access(r);
    }
    EXPECT_TRUE(sim.alerts.empty()) << describe(sim.alerts);
}

// `actor` reads the verification codes of `n` walk-in customers, one a minute from `hour`:00 on
// `day`; returns the alerts raised.
std::vector<Alert> read_codes(Sim& sim, const std::string& actor, int day, int hour, int n) {
    Sim::Read r;
    r.actor = actor;
    r.categories = {"phone", "verification_code"};
    std::vector<Alert> got;
    for (int i = 0; i < n; ++i) {
        r.time = at(day, hour, i);
        r.subjects = {"walkin-" + std::to_string(i)};
        auto out = sim.access(r);
        got.insert(got.end(), out.begin(), out.end());
    }
    return got;
}

// A fresh installation: no norm anywhere. Colleagues working the same day stand in for it.
TEST(DetectorsCold, CodesReadWhileColleaguesReadNoneOnTheFirstDay) {
    Sim sim;
    for (int p = 0; p < 4; ++p) sim.office_day(0, "clerk" + std::to_string(p), "clerk", 25);
    Sim::Read r;
    r.actor = "clerk9";
    r.categories = {"phone", "verification_code"};
    std::vector<Alert> got;
    int read_when_alerted = 0;
    for (int i = 0; i < 30; ++i) {
        r.time = at(0, 11, i);
        r.subjects = {"walkin-" + std::to_string(i)};
        auto out = sim.access(r);
        if (!out.empty() && got.empty()) read_when_alerted = i + 1;
        got.insert(got.end(), out.begin(), out.end());
    }
    ASSERT_FALSE(got.empty()) << describe(sim.alerts);
    EXPECT_EQ(got[0].detector, Detector::sensitive_categories);
    EXPECT_EQ(got[0].actor, "clerk9");
    EXPECT_LE(read_when_alerted, 20);
    EXPECT_NE(got[0].explanation.find("no norm learned yet for this actor or its peers, and 0 of "
                                      "4 colleagues' 100 statements today read any"),
              std::string::npos)
        << got[0].explanation;
    EXPECT_GE(got.back().score, 70) << describe(got);  // 30 people's codes: high by then
    EXPECT_EQ(sim.alerts_for("clerk0").size(), 0u);
}

TEST(DetectorsCold, NoColdAlertWhenColleaguesReadTheSameCategory) {
    Sim sim;
    Sim::Read r;
    r.categories = {"phone", "verification_code"};
    for (int p = 0; p < 5; ++p) {
        r.actor = "agent" + std::to_string(p);
        for (int i = 0; i < 30; ++i) {
            r.time = at(0, 9 + p, i);
            r.subjects = {r.actor + "-c" + std::to_string(i)};
            sim.access(r);
        }
    }
    EXPECT_TRUE(sim.alerts.empty()) << describe(sim.alerts);
}

TEST(DetectorsCold, EarlyInTheDayColleaguesHaveNotWorkedEnoughToCompare) {
    Sim sim;
    for (int p = 0; p < 4; ++p) sim.office_day(0, "clerk" + std::to_string(p), "clerk", 5);
    read_codes(sim, "clerk9", 0, 8, 40);
    EXPECT_TRUE(sim.alerts.empty()) << describe(sim.alerts);
}

TEST(DetectorsCold, AloneOnTheFirstDayProvesNothing) {
    Sim sim;
    read_codes(sim, "only", 0, 10, 40);
    EXPECT_TRUE(sim.alerts.empty()) << describe(sim.alerts);
}

TEST(ScorerConfig, InvalidSettingsSayWhatIsAllowed) {
    ScorerConfig c;
    c.threshold = 150;
    try {
        Scorer s(c);
        FAIL() << "accepted threshold 150";
    } catch (const std::invalid_argument& e) {
        EXPECT_STREQ(e.what(), "scorer setting threshold must be 0-100, not 150");
    }
    c = ScorerConfig();
    c.peer_decay = 0;
    EXPECT_THROW(Scorer{c}, std::invalid_argument);
}

TEST(DetectorsThreshold, ThresholdSuppressesWeakerAlerts) {
    for (int threshold : {50, 99}) {
        ScorerConfig config;
        config.threshold = threshold;
        Sim sim(config);
        sim.office_days(0, 14, "clerk", 3, 10);
        sim.scorer.mark_departed("clerk1", at(14, 0));
        Sim::Read r;
        r.actor = "clerk1";
        r.time = at(15, 10);
        r.subjects = {"one"};
        sim.access(r);
        // The departed-account alert scores 95: raised at 50, not at 99.
        EXPECT_EQ(sim.alerts.size(), threshold == 50 ? 1u : 0u) << describe(sim.alerts);
    }
}

}  // namespace
}  // namespace pii_audit::analysis

namespace pii_audit::analysis {
namespace {

// The Nanning clerk's way: two codes a day while serving customers, then more. Judged by his
// own history, each day below the limit raised the next day's; and a day of two codes is
// within any daily limit. What gives him away is the sum: highly sensitive subject-days in his
// 30-day window against the role's daily rate over his active days (240 clerks, each reading a
// customer's code on 2% of days), before the peers' window norm exists (the trail's first
// month) and without letting his own window become the norm.
TEST(DetectorsSensitive, AClerksOwnHabitOfTakingCodesIsNotHisLicence) {
    using testing::at;
    Sim sim;
    auto codes = [&](const std::string& actor, int day, int n) {
        for (int i = 0; i < n; ++i) {
            Sim::Read r;
            r.actor = actor;
            r.time = at(day, 16, 10 * i);
            r.categories = {"phone", "verification_code"};
            r.subjects = {actor + "-served-" + std::to_string(day) + "-" + std::to_string(i)};
            sim.access(r);
        }
    };
    for (int day = 0; day < 22; ++day) {
        if (!testing::weekday(day)) continue;
        for (int p = 0; p < 240; ++p) {
            const std::string clerk = "clerk" + std::to_string(p);
            sim.office_day(day, clerk, "clerk", 5);
            if (p != 3 && (day + p) % 50 == 0) codes(clerk, day, 1);
        }
        codes("clerk3", day, day < 21 ? 2 : 4);
    }
    const auto got = sim.alerts_for("clerk3");
    ASSERT_FALSE(got.empty()) << testing::describe(sim.alerts);
    EXPECT_EQ(got.front().detector, Detector::sensitive_categories);
    // Within his first week: a handful of codes where the role's rate expects a tenth of one.
    EXPECT_LT(got.front().time_us, at(7, 0)) << got.front().explanation;
    EXPECT_NE(got.front().explanation.find("at the role's daily rate"), std::string::npos)
        << got.front().explanation;
    // His colleagues' occasional code is no alert, and nobody else is a suspect.
    EXPECT_EQ(sim.alerts.size(), got.size()) << testing::describe(sim.alerts);
}

}  // namespace
}  // namespace pii_audit::analysis

namespace pii_audit::analysis {
namespace {

using testing::describe;
using testing::Sim;

// A call centre that reads travel records on some calls, always with a ticket (the caller's
// case): travel records are no rare category here. Reading them without a ticket is.
class TravelWithTickets : public ::testing::Test {
  protected:
    static constexpr int kAgents = 30;
    // One day in time order (the team's reads interleave, as in the trail).
    void day(int d, const std::vector<std::string>& without_ticket = {},
             int ticketless_travel = 0) {
        std::vector<std::pair<Sim::Read, bool>> reads;  // read, with a ticket
        for (int p = 0; p < kAgents; ++p) {
            const std::string agent = "agent" + std::to_string(p);
            for (int k = 0; k < 30; ++k) {
                Sim::Read r;
                r.actor = agent;
                r.group = "call_centre";
                r.time = testing::at(d, 9) + std::int64_t{k * 900 + p} * 1000000;
                r.subjects = {agent + "-caller-" + std::to_string(d * 100 + k)};
                r.categories = {"name", "phone"};
                if ((d + k + p) % 10 == 0) r.categories = {"name", "travel"};
                const bool ticketless = std::find(without_ticket.begin(), without_ticket.end(),
                                                  agent) != without_ticket.end() &&
                                        k < ticketless_travel;
                // Walk-ins: about one call in seven has no ticket, never a travel case.
                const bool walk_in =
                    r.categories[1] == "phone" && ((d * 31 + k) * 17 + p * 13) % 100 < 15;
                if (ticketless) {
                    r.categories = {"name", "travel"};
                    r.subjects = {"friend-of-a-friend-" + std::to_string(d * 100 + k)};
                }
                reads.push_back({r, !ticketless && !walk_in});
            }
        }
        std::stable_sort(reads.begin(), reads.end(),
                         [](const auto& a, const auto& b) { return a.first.time < b.first.time; });
        for (const auto& [r, ticket] : reads) {
            if (ticket) sim.relation(r.time - 60 * 1000000, r.actor, r.subjects[0]);
            sim.access(r);
        }
    }
    Sim sim;
};

TEST_F(TravelWithTickets, AnAgentLookingUpTravelWithoutTicketsIsAlerted) {
    for (int d = 0; d < 35; ++d) day(d);
    ASSERT_TRUE(sim.alerts.empty()) << describe(sim.alerts);
    day(35, {"agent7"}, 5);
    const auto got = sim.alerts_for("agent7");
    ASSERT_FALSE(got.empty()) << describe(sim.alerts);
    EXPECT_EQ(got.front().detector, Detector::no_business_reason);
    EXPECT_NE(got.front().explanation.find("looked up travel of"), std::string::npos)
        << got.front().explanation;
    EXPECT_EQ(sim.alerts.size(), got.size()) << describe(sim.alerts);
}

TEST_F(TravelWithTickets, TheWholeTeamReadingItWithoutTicketsIsTheTeamsWork) {
    for (int d = 0; d < 35; ++d) day(d);
    // A new screen shows travel records on every call before tickets are linked to it.
    std::vector<std::string> everyone;
    for (int p = 0; p < kAgents; ++p) everyone.push_back("agent" + std::to_string(p));
    day(35, everyone, 4);
    EXPECT_TRUE(sim.alerts.empty()) << describe(sim.alerts);
}

}  // namespace
}  // namespace pii_audit::analysis

namespace pii_audit::analysis {
namespace {

// The late Nanning clerk: weeks of ordinary work, then one more code on every other working
// day. His 30-day window holds weeks of ordinary days before he starts; the sequential tests of
// his days against the role's (in subjects a day, and in days with codes) start rising on his
// first code and do not reset at a window's or block's boundary. And when the whole team starts
// reading codes at that rate (a new screen shows them), the role's recent rate moves with it:
// nobody is a suspect.
class LateClerk : public ::testing::Test {
  protected:
    static constexpr int kClerks = 40;
    // A Monday, three days after a 15-day block began: his 30-day window holds 18 ordinary days.
    static constexpr int kStart = 35;
    // Every clerk reads a customer's code on a tenth of days (seeded: chance clusters included);
    // from kStart, `takers` also take one code on about every other working day.
    void run(int days, int takers, double rate = 0.5) {
        std::bernoulli_distribution ordinary(0.1), take(rate);
        for (int day = 0; day < days; ++day) {
            if (!testing::weekday(day)) continue;
            for (int p = 0; p < kClerks; ++p) {
                const std::string clerk = "clerk" + std::to_string(p);
                sim.office_day(day, clerk, "clerk", 4);
                int n = ordinary(sim.rng) ? 1 : 0;
                if (p < takers && day >= kStart && take(sim.rng)) {
                    ++n;
                    if (p == 0) taken.push_back(testing::at(day, 16, 30));
                }
                for (int i = 0; i < n; ++i) {
                    Sim::Read r;
                    r.actor = clerk;
                    r.time = testing::at(day, 16, 30 + i);
                    r.categories = {"phone", "verification_code"};
                    r.subjects = {clerk + "-code-" + std::to_string(day) + "-" + std::to_string(i)};
                    sim.access(r);
                }
            }
        }
    }
    Sim sim{ScorerConfig{}, 11};
    std::vector<std::int64_t> taken;  // clerk0's extra codes
};

bool is_run(const Alert& a) { return a.explanation.find("likelihood ratio") != std::string::npos; }
bool is_days_run(const Alert& a) {
    return is_run(a) && a.explanation.find(" active days since ") != std::string::npos &&
           a.explanation.find("subject-days") == std::string::npos;
}

TEST_F(LateClerk, OneCodeEveryOtherDayIsFoundByTheSequentialTest) {
    run(110, 1);
    const auto got = sim.alerts_for("clerk0");
    ASSERT_FALSE(got.empty()) << testing::describe(sim.alerts);
    EXPECT_EQ(got.front().detector, Detector::sensitive_categories);
    // The test in days speaks first: codes on 4 of his first 6 days where the role reads them on
    // a tenth of its days. (The count test and the window needed 7 subject-days or more, half his
    // codes with this seed.)
    EXPECT_TRUE(is_days_run(got.front())) << got.front().explanation;
    EXPECT_NE(got.front().explanation.find("on 4 of 6 active days since 2024-02-06"),
              std::string::npos)
        << got.front().explanation;
    const auto before = std::count_if(taken.begin(), taken.end(),
                                      [&](std::int64_t t) { return t < got.front().time_us; });
    EXPECT_LT(before, static_cast<long>(taken.size() / 4)) << testing::describe(got);
    // After the alert it starts again from 0, and its next run crosses the 15-day block boundary
    // of 2024-03-03 without starting again.
    const auto next = std::find_if(got.begin() + 1, got.end(), is_days_run);
    ASSERT_NE(next, got.end()) << testing::describe(got);
    EXPECT_NE(next->explanation.find("since 2024-02-19"), std::string::npos) << next->explanation;
    EXPECT_GT(next->time_us, testing::at(62, 0)) << next->explanation;
    // Four thousand ordinary clerk-days, a code on a tenth of them at random: the test in days
    // raises one ordinary clerk (6 of 12 days since 2024-03-08, a chance cluster that has a
    // probability of about 3 in 10,000 at each start); nobody else is a suspect.
    std::size_t others = 0;
    for (const Alert& a : sim.alerts) {
        if (a.actor == "clerk0") continue;
        ++others;
        EXPECT_TRUE(is_days_run(a)) << a.explanation;
    }
    EXPECT_LE(others, 1u) << testing::describe(sim.alerts);
}

// One code on every working day from a Monday: the count test (one subject a day against the
// role's 0.1) needs five of them; four days out of four with codes, where the role reads them on
// a tenth of its days, are the evidence of a likelihood ratio of about 900.
TEST_F(LateClerk, ACodeEveryDayIsFoundOnTheFourthDay) {
    run(kStart + 7, 1, 1.0);
    const auto got = sim.alerts_for("clerk0");
    ASSERT_FALSE(got.empty()) << testing::describe(sim.alerts);
    EXPECT_TRUE(is_days_run(got.front())) << got.front().explanation;
    EXPECT_GE(got.front().time_us, testing::at(kStart + 3, 0)) << got.front().explanation;
    EXPECT_LT(got.front().time_us, testing::at(kStart + 4, 0)) << got.front().explanation;
    EXPECT_NE(got.front().explanation.find("on 4 of 4 active days since 2024-02-05"),
              std::string::npos)
        << got.front().explanation;
}

// The role's share of days with codes is learned before it judges anyone: in the first weeks of
// a team of ten (one of them reads a customer's code each day), six working days of six with a
// code are no evidence against a share the peers' 150 days do not yet know to a tenth of itself
// (that takes about a hundred of their days with codes). The count test and the window speak.
TEST(DetectorsSensitive, TheTestInDaysWaitsUntilTheRolesShareIsKnown) {
    Sim sim{ScorerConfig{}, 5};
    for (int day = 0; day < 22; ++day) {
        if (!testing::weekday(day)) continue;
        for (int p = 0; p < 10; ++p) {
            const std::string clerk = "clerk" + std::to_string(p);
            sim.office_day(day, clerk, "clerk", 20);
            if ((p == 0 && day >= 14) || (day + p) % 10 == 3) {
                Sim::Read r;
                r.actor = clerk;
                r.time = testing::at(day, 16, 30);
                r.categories = {"phone", "verification_code"};
                r.subjects = {clerk + "-code-" + std::to_string(day)};
                sim.access(r);
            }
        }
    }
    EXPECT_EQ(std::count_if(sim.alerts.begin(), sim.alerts.end(), is_days_run), 0)
        << testing::describe(sim.alerts);
}

// Ordinary clerks only, a code on a tenth of their days at random over 4,000 clerk-days: chance
// clusters (four days of four, five of eight) happen, and the test in days raises them at its
// rate, about one in 1,000 clerk-days at a likelihood ratio of 400 (4 with this seed): the price
// of finding a clerk who takes one code a day at his fourth. Twice that is a miscalibration
// (a share of the role's days that is too low: the test must be judged by the peers' share).
TEST_F(LateClerk, OrdinaryClerksChanceClustersAreNoSuspects) {
    run(110, 0);
    EXPECT_LE(std::count_if(sim.alerts.begin(), sim.alerts.end(), is_days_run), 8)
        << testing::describe(sim.alerts);
    // Nothing but the test in days.
    EXPECT_EQ(std::count_if(sim.alerts.begin(), sim.alerts.end(), is_days_run),
              static_cast<long>(sim.alerts.size()))
        << testing::describe(sim.alerts);
}

TEST_F(LateClerk, TheWholeTeamTakingCodesAtThatRateIsNoSuspectOfTheSequentialTest) {
    run(110, kClerks);
    // The role's recent rate moves with the team within a day or two.
    EXPECT_EQ(std::count_if(sim.alerts.begin(), sim.alerts.end(), is_run), 0)
        << testing::describe(sim.alerts);
}

}  // namespace
}  // namespace pii_audit::analysis

namespace pii_audit::analysis {
namespace {

using testing::at;
using testing::describe;
using testing::Sim;

// The way a highly sensitive category is read: clerks read a customer's verification code now
// and then on the customer screen ("customers"). The Nanning clerk takes codes from the table of
// sent codes ("sms_codes"), one a day: a count no daily or window norm of a role that reads
// codes anyway can tell from chance, but a path his peers never use.
class CodePaths : public ::testing::Test {
  protected:
    static constexpr int kClerks = 30;
    static constexpr int kWarm = 42;
    void SetUp() override {
        for (int day = 0; day < kWarm; ++day) days(day);
    }
    // Ordinary work; every clerk reads a code on the customer screen on about one day in eight.
    void days(int day) {
        if (!testing::weekday(day)) return;
        for (int p = 0; p < kClerks; ++p) {
            const std::string clerk = "clerk" + std::to_string(p);
            sim.office_day(day, clerk, "clerk", 20);
            if ((day * 7 + p * 3) % 8 == 0) code(clerk, day, 0, "customers");
        }
    }
    std::vector<Alert> code(const std::string& clerk, int day, int i, const std::string& relation) {
        Sim::Read r;
        r.actor = clerk;
        r.time = at(day, 17, 30 + i);
        r.categories = {"phone", "verification_code"};
        r.relation = relation;
        r.subjects = {clerk + "-code-" + std::to_string(day) + "-" + std::to_string(i)};
        return sim.access(r);
    }
    Sim sim;
};

TEST_F(CodePaths, OrdinaryWorkRaisesNothing) {
    for (int day = kWarm; day < kWarm + 28; ++day) days(day);
    EXPECT_TRUE(sim.alerts.empty()) << describe(sim.alerts);
}

TEST_F(CodePaths, CodesFromATableThePeersNeverReadThemFromAreAlertedAtTheSecond) {
    days(kWarm);
    EXPECT_TRUE(code("clerk3", kWarm, 1, "sms_codes").empty()) << describe(sim.alerts);
    days(kWarm + 1);
    const auto got = code("clerk3", kWarm + 1, 1, "sms_codes");
    ASSERT_EQ(got.size(), 1u) << describe(sim.alerts);
    EXPECT_EQ(got[0].detector, Detector::sensitive_categories);
    EXPECT_NE(got[0].explanation.find("read verification_code of 2 subjects on 2 days from "
                                      "sms_codes, where peers read it on "),
              std::string::npos)
        << got[0].explanation;
    EXPECT_NE(got[0].explanation.find("but from this relation on 0.0%"), std::string::npos)
        << got[0].explanation;
    ASSERT_EQ(got[0].evidence.size(), 1u);  // today's read (yesterday's is another day's)
    EXPECT_EQ(got[0].evidence[0], sim.next_id - 1);
    EXPECT_EQ(sim.alerts.size(), 1u) << describe(sim.alerts);
}

TEST_F(CodePaths, TheSameCodesFromTheCustomerScreenAreNoNews) {
    days(kWarm);
    code("clerk3", kWarm, 1, "customers");
    days(kWarm + 1);
    code("clerk3", kWarm + 1, 1, "customers");
    EXPECT_TRUE(sim.alerts.empty()) << describe(sim.alerts);
}

TEST_F(CodePaths, TheWholeTeamMovingToANewScreenIsNoSuspect) {
    // From kWarm on every clerk reads one code a day from a new screen, in the same half hour.
    for (int day = kWarm; day < kWarm + 14; ++day) {
        days(day);
        if (!testing::weekday(day)) continue;
        for (int p = 0; p < kClerks; ++p) code("clerk" + std::to_string(p), day, 1, "code_screen");
    }
    EXPECT_TRUE(sim.alerts.empty()) << describe(sim.alerts);
}

}  // namespace
}  // namespace pii_audit::analysis
