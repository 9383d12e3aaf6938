#include "pii_audit/analysis/scorer.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>

#include "interner.h"
#include "pii_audit/analysis/sketches.h"

namespace pii_audit::analysis {

std::string_view detector_name(Detector d) {
    switch (d) {
        case Detector::sensitive_categories:
            return "sensitive_categories";
        case Detector::distinct_subjects:
            return "distinct_subjects";
        case Detector::no_business_reason:
            return "no_business_reason";
        case Detector::bulk_reading:
            return "bulk_reading";
        case Detector::unusual_hours:
            return "unusual_hours";
        case Detector::departed_or_dormant:
            return "departed_or_dormant";
        case Detector::machine_like_access:
            return "machine_like_access";
        case Detector::login_abuse:
            return "login_abuse";
    }
    return "unknown";
}

std::string_view severity_name(Severity s) {
    switch (s) {
        case Severity::low:
            return "low";
        case Severity::medium:
            return "medium";
        case Severity::high:
            return "high";
        case Severity::critical:
            return "critical";
    }
    return "unknown";
}

Severity severity_of(int score) {
    if (score >= 90) return Severity::critical;
    if (score >= 70) return Severity::high;
    if (score >= 40) return Severity::medium;
    return Severity::low;
}

namespace {

constexpr std::int64_t kMicrosPerSecond = 1000000;
constexpr std::int64_t kSecondsPerDay = 86400;
constexpr std::int32_t kNoDay = INT32_MIN;
constexpr int kHoursPerWeek = 168;
constexpr int kBlockDays = 15;  // rolling windows are unions of 15-day blocks
constexpr int kBlocks = 6;      // 90 days
constexpr int kBlocks30 = 2;
constexpr int kEvidence = 6;
constexpr int kAppSlots = 8;
constexpr int kGroupAppSlots = 16;

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
    std::int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
    return q;
}

// Daily quantities compared with norms. The first group has both an own and a peer norm; the
// rolling windows are compared with peers only, because a slowly drifting actor drags their own
// norm along (the low-and-slow case).
enum Metric : int {
    kSubjectsDay,
    kSensitiveDay,
    kRowsDay,
    kStatementRows,
    kCopyDay,
    kUnexplainedDay,
    kDeniedDay,
    kSessionRows,  // the day's largest session (rows), when events name their session
    kOwnMetricCount,
    kSubjects30 = kOwnMetricCount,
    kSubjects90,
    kSensitive30,
    kUnexplained30,
    kUnexplainedShare30,  // per mille of the window's subject-days: independent of volume
    kMetricCount
};

struct MetricSpec {
    Detector detector;
    double min_excess;  // absolute margin above the norm before anything fires
    double min_ratio;   // relative margin above the norm
    double weight;      // how fast strength grows with log2(value / norm)
    bool integral;
};

// Margins are deliberately generous: an alert costs an officer's time, and a real insider keeps
// going, so a later, clearer signal is worth more than an early noisy one.
constexpr std::array<MetricSpec, kMetricCount> kMetrics = {{
    {Detector::distinct_subjects, 10, 1.5, 1.0, true},
    {Detector::sensitive_categories, 2, 1.5, 1.6, true},
    {Detector::bulk_reading, 300, 2.0, 0.8, true},
    {Detector::bulk_reading, 500, 3.0, 0.8, true},
    {Detector::bulk_reading, 1, 2.0, 1.0, true},
    {Detector::no_business_reason, 3, 1.5, 2.0, true},
    {Detector::login_abuse, 3, 2.0, 1.0, true},
    {Detector::bulk_reading, 500, 2.0, 0.8, true},
    {Detector::distinct_subjects, 30, 1.2, 1.5, true},
    {Detector::distinct_subjects, 60, 1.2, 1.5, true},
    {Detector::sensitive_categories, 3, 1.3, 1.6, true},
    {Detector::no_business_reason, 10, 1.15, 2.0, true},
    {Detector::no_business_reason, 15, 1.15, 2.0, true},
}};

// Cohorts and calendar rhythms. A shift that most of a peer group makes on the same day is a
// business process (month-end closing, an audit week): each member is then judged against what
// the colleagues did that day, and the day of the calendar is remembered so that the next month
// end is expected from its first mover on.
constexpr int kCohortSlots = 16;          // colleagues' values kept per quantity and day
constexpr double kCohortRatio = 5;        // in a team-wide shift: fire beyond 5x the colleagues'
constexpr double kKnownEventRatio = 5;    // in a declared event: 5x what alerts on other days
constexpr double kColdBulkFloor = 1000;   // rows in one statement: bulk work before any norm exists
constexpr double kWindowTeamRatio = 1.5;  // rolling windows are tight: 1.5x a team-wide level
constexpr double kPersonalRatio = 2;      // an actor's own rhythm: up to 2x what it did last time
constexpr double kShiftRate = 0.02;       // how often one member goes beyond a norm by chance
constexpr double kRareRate = 0.01;        // how often one member reads a rare category by chance
constexpr int kRhythms = 128;
constexpr std::size_t kMaxHeld = 4096;        // signals held for the team; beyond, raised at once
constexpr std::uint8_t kRhythmCategory = 64;  // rhythm kinds: metrics, then 64 + category
// The team's pace (record by record): colleagues' values so far today, each divided by what that
// colleague usually does by this hour. A whole team working at 1.5x its usual pace (a campaign,
// a month-end workload without any bulk statement) is a business process from its first hour.
constexpr double kPaceDaily = 1.5;   // daily quantities: one member's day varies by ~40%
constexpr double kPaceWindow = 1.2;  // rolling windows average days out: 20% is a real shift
constexpr int kPaceMinColleagues = 3;
constexpr std::uint32_t kPaceMemoActors = 32;             // groups this large reuse a pace
constexpr std::int64_t kPaceMemoMicros = 5 * 60 * 1000000;  // for five minutes
constexpr double kPaceMinBaseline = 5;  // below, counts are too small for a pace to mean anything
// Highly sensitive subject-days in the 30-day window, in a role that rarely reads them, are
// judged by the role's daily rate (the count a Poisson process at that rate exceeds with
// probability kRoleTail),
// not by the window norm's upper tail: in a group of thirty, that is the insider's own window.
constexpr double kRoleTail = 1e-3;  // chance of a window that high for an ordinary member
constexpr double kRoleMargin = 2;
constexpr double kRoleFewPerDay = 10;  // the role's 99.5th percentile day: a few records at most
// The same roles, sequentially: a CUSUM of the log-likelihood ratio of each active day's count of
// highly sensitive subjects under "the role's rate" against "the role's rate + kRunShift", which
// rises from 0 when an actor starts and keeps rising as long as he goes on, across window and
// block boundaries (a 30-day window that starts weeks before him dilutes his rate). It alerts at
// kRunThreshold (a likelihood ratio of e^6, about 400): for an ordinary member at a role rate of
// 0.1-0.3 codes a day, about once in 4,000-5,000 active days (simulated); an insider taking one
// more code every other working day is found after about 5 (rate 0.1) to 9 (rate 0.3) of them.
constexpr double kRunShift = 0.5;       // the smallest rise worth finding: a code every other day
constexpr double kRunThreshold = 6;     // log-likelihood ratio at which the run alerts
constexpr double kRunRateFloor = 0.05;  // a role that (almost) never reads them: rarity speaks
// The same evidence counted in days rather than records: the role reads them on a share p of its
// active days; an insider who takes one while serving a customer on most working days reads them
// on p + kRunShift (1 - p) of his (at least every other day). A day with such a read adds
// ln(p1 / p), a day without subtracts ln((1 - p) / (1 - p1)). Days, not counts, are what such an
// insider changes (one code a day is his whole signal; a count test weighs his day like a
// colleague's occasional one), and a day with several reads weighs no more than a day with one
// (the count test above is the one for those). Same threshold and resets as the count test.
constexpr double kRunShareFloor = 0.05;  // a role that (almost) never reads them: rarity speaks
constexpr double kShareBound = 2;        // standard errors apart: the role's share has moved
constexpr double kShareKnown = 100;      // (relative standard error)^-2 before the share counts
// Lookups with no declared business reason, per category: in a role that reads a category with
// a ticket (travel records in a call centre), reading it without one is what the colleague who
// looks people up for a friend does. Judged per day against the role's rate of such lookups
// when that rate is low (under one every other day); the limit is the count a Poisson process at
// that rate reaches with probability kUnexplainedTail, and at least kUnexplainedFloor.
constexpr double kUncommonUnexplained = 0.5;
constexpr double kUnexplainedTail = 1e-5;
constexpr double kUnexplainedFloor = 3;
// Highly sensitive categories by the way they are read: a role that reads the phone's
// verification code on the customer screen (the relation its colleagues read it from) does not
// read it from the table of sent codes. A path (relation, category) the peers use on less than
// kRareRate of their actor-days is judged like a rare category, by the subject-days read through
// it in the last kPathMemoryDays, whatever the counts: the Nanning clerk's codes are few, but
// they do not come from where his colleagues' come from.
constexpr int kGroupPaths = 16;          // learned paths of highly sensitive reads per group
constexpr int kTodayPaths = 8;           // paths counted per group and per actor today
constexpr int kPathMemoryDays = 30;      // rare-path subject-days accumulate this long
constexpr int kShifts = 4;               // days beyond own norms remembered per actor
constexpr int kHolidayMaxWeekdays = 10;  // a longer silence is no holiday (a closure, a move)

// Compared with colleagues before any norm exists: one statement's rows (a cumulative quantity
// would compare a finished day with colleagues' days in progress).
bool is_cold_bulk_metric(int m) { return m == kStatementRows; }

// The share of days with at least one (highly sensitive) record, moved z standard errors of a
// share estimated from those days (up for z > 0, down for z < 0); 0 without days. The days are
// weighted, each day's weight multiplied by `decay` a day: their effective number is
// (sum w)^2 / sum w^2 = (1 + decay) times the total weight (a long history of equal days).
double share_bound(const FineHistogram& days, double decay, double z) {
    const double n = days.total() * (1 + decay);
    if (!(n > 0)) return 0;
    const double p = days.fraction_at_least(1);
    return std::clamp(p + z * std::sqrt(p * (1 - p) / n), 0.0, 1.0);
}

// The share is known to about a tenth of itself (one standard error): n p / (1 - p) >= 100.
bool share_known(const FineHistogram& days, double decay) {
    const double n = days.total() * (1 + decay);
    const double p = days.fraction_at_least(1);
    return p > 0 && p < 1 && n * p / (1 - p) >= kShareKnown;
}

// The smallest k with P(X >= k) < tail for X ~ Poisson(mu).
double poisson_upper(double mu, double tail) {
    if (!(mu > 0)) return 1;
    double pmf = std::exp(-mu), below = 0;
    int k = 0;
    for (; k < 100000; ++k) {
        below += pmf;
        if (1 - below < tail) break;
        pmf *= mu / (k + 1);
    }
    return k + 1;
}

// Colleagues who must have made the same shift the same day before it counts as the team's:
// more than chance would give if each did it on `rate` of their days.
std::uint32_t cohort_needed(std::uint32_t colleagues, double rate) {
    const double expected = colleagues * rate;
    const double needed = std::ceil(expected + 2 * std::sqrt(expected));
    return std::max<std::uint32_t>(2, static_cast<std::uint32_t>(needed));
}

// Calendar features of a local day, as (kind << 8 | value).
enum FeatureKind : std::uint16_t {
    kMonthEnd = 1,  // value: weekdays left in the month after this day (0-2)
    kMonthStart,    // weekdays of the month before this day (0-2)
    kQuarterEnd,
    kQuarterStart,
    kDayOfMonth,
    kWeekday,  // 0 = Monday; a weekly rhythm must be seen two weeks running
    // The group's first working day after weekdays on which none of its members worked (public
    // holidays, learned from the group's own activity): work piled up over the holiday.
    kAfterHoliday,
};

struct CivilDate {
    int year, month, day;
};
CivilDate civil_from_days(std::int64_t days) {
    days += 719468;
    const std::int64_t era = floor_div(days, 146097);
    const auto doe = static_cast<unsigned>(days - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    const int d = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
    const int m = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
    return {static_cast<int>(static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2)), m, d};
}
int weekday_of(std::int64_t day) { return static_cast<int>(((day + 3) % 7 + 7) % 7); }

struct Calendar {
    std::int32_t day = kNoDay;
    int count = 0;
    std::array<std::uint16_t, 8> features{};
};

Calendar calendar_of(std::int32_t day) {
    Calendar c;
    c.day = day;
    const CivilDate date = civil_from_days(day);
    const int wd = weekday_of(day);
    auto add = [&](FeatureKind kind, int value) {
        c.features[c.count++] = static_cast<std::uint16_t>(kind << 8 | value);
    };
    if (wd < 5) {
        int left = 0, before = 0;
        for (std::int32_t e = day + 1; civil_from_days(e).month == date.month; ++e)
            left += weekday_of(e) < 5;
        for (std::int32_t e = day - 1; civil_from_days(e).month == date.month; --e)
            before += weekday_of(e) < 5;
        if (left < 3) add(kMonthEnd, left);
        if (left < 3 && date.month % 3 == 0) add(kQuarterEnd, left);
        if (before < 3) add(kMonthStart, before);
        if (before < 3 && date.month % 3 == 1) add(kQuarterStart, before);
    }
    add(kDayOfMonth, date.day);
    add(kWeekday, wd);
    return c;
}

// How long a rhythm seen on a day of this kind is expected to come back.
bool rhythm_due(std::uint16_t feature, std::int32_t last_day, std::uint8_t seen, std::int32_t day) {
    const int ago = day - last_day;
    if (ago < 0) return false;
    switch (feature >> 8) {
        case kMonthEnd:
        case kMonthStart:
        case kDayOfMonth:
            return ago <= 62;  // next month, or the one after
        case kQuarterEnd:
        case kQuarterStart:
            return ago <= 190;
        case kWeekday:
            return ago == 0 || (ago == 7 && seen >= 2);
        case kAfterHoliday:
            return ago <= 400;  // the next holiday, within a year or so
    }
    return false;
}

std::string feature_text(std::uint16_t feature) {
    static constexpr const char* kDays[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                            "Friday", "Saturday", "Sunday"};
    const int value = feature & 0xff;
    switch (feature >> 8) {
        case kMonthEnd:
            return value == 0 ? "the month's last weekday"
                              : fmt::format("month end ({} weekdays left)", value);
        case kMonthStart:
            return value == 0 ? "the month's first weekday"
                              : fmt::format("month start (weekday {} of the month)", value + 1);
        case kQuarterEnd:
            return value == 0 ? "the quarter's last weekday"
                              : fmt::format("quarter end ({} weekdays left)", value);
        case kQuarterStart:
            return fmt::format("quarter start (weekday {} of the quarter)", value + 1);
        case kDayOfMonth:
            return fmt::format("day {} of the month", value);
        case kWeekday:
            return fmt::format("{}s", kDays[value % 7]);
        case kAfterHoliday:
            return "the first working day after a holiday";
    }
    return "a calendar day";
}

// Colleagues beyond their own norms today, per quantity: how many, and the values of the first
// kCohortSlots of them.
struct CohortMetric {
    std::array<std::uint32_t, kCohortSlots> actor{};  // actor id + 1; 0: empty
    std::array<float, kCohortSlots> value{};
    std::uint16_t shifted = 0;
};

struct Rhythm {
    std::uint16_t feature = 0;  // 0: empty
    std::uint8_t kind = 0;      // a metric, or kRhythmCategory + category
    std::uint8_t seen = 0;      // days on which the group made this shift (saturating)
    float magnitude = 0;        // the colleagues' median when it last happened
    std::int32_t last_day = kNoDay;
};

std::uint32_t fingerprint32(std::string_view s) {
    return static_cast<std::uint32_t>(hash_bytes(s, 0x5bd1e995)) | 1u;  // 0 marks an empty slot
}

struct Today {
    std::int32_t day = kNoDay;
    HyperLogLog<8> subjects;
    HyperLogLog<7> sensitive;  // small counts: linear counting is exact enough
    HyperLogLog<7> unexplained;
    double rows = 0;
    double max_statement_rows = 0;
    std::uint32_t session = 0;  // fingerprint of the current session; 0: none named
    double session_rows = 0;
    double max_session_rows = 0;
    std::uint32_t copies = 0;
    std::uint32_t denied = 0;
    std::uint32_t statements = 0;
    std::uint32_t sensitive_statements = 0;
    std::uint32_t sensitive_counted = 0;  // part of `sensitive` already added to the block sums
    std::uint32_t unexplained_counted = 0;
    std::uint32_t subjects_counted = 0;
    std::uint32_t unusual_subjects = 0;
    std::int64_t unusual_abs_hour = -1;  // the hour currently judged unusual, if any
    std::int32_t unusual_how = -1;
    float unusual_own_share = 0;  // shares before this hour was counted, for the explanation
    float unusual_peer_share = 0;
    std::uint32_t unusual_own_hours = 0;
    std::uint64_t sensitive_category_mask = 0;
    std::uint64_t categories_read = 0;     // every category read today
    std::uint64_t categories_checked = 0;  // judged for rarity today
    std::uint64_t rare_categories = 0;     // read today, rarely read by this actor and its peers
    std::uint32_t rare_subjects = 0;
    std::array<float, kMetricCount> norm{};    // max(own, peer) quantile, or -1 when cold
    std::array<float, kMetricCount> limit{};   // value at which the metric fires
    std::array<float, kMetricCount> median{};  // of whichever norm set `norm`
    std::array<float, kDetectorCount> signal{};
    std::uint8_t anomalous_mask = 0;  // detectors that fired today: the day does not teach them
    std::uint8_t apps_used_mask = 0;
    bool machine_like = false;
    std::uint32_t machine_run = 0;
    float machine_mean_gap = 0;
    float machine_cv = 0;
    std::array<std::array<std::uint64_t, kEvidence>, kDetectorCount> evidence{};
    std::array<std::uint8_t, kDetectorCount> evidence_count{};
    std::uint16_t cohort_registered = 0;  // quantities counted in the group's cohort today
    bool bulk_counted = false;            // counted in the group's bulk workers today
    std::uint64_t team_categories = 0;    // rare categories excused today (team, rhythm, event)
    std::uint16_t excused_mask = 0;       // quantities excused as the team's today (counted once)
    float role_limit30 = std::numeric_limits<float>::infinity();  // kSensitive30 by the role
    float role_spread30 = 1;
    float role_expected30 = 0;
    // The sequential test of highly sensitive reads against the role's rate (0: not judged so).
    float run_rate = 0;  // the role's daily rate, for the explanation
    float run_step = 0;  // log-likelihood ratio per subject, divided by the peers' dispersion
    float run_cost = 0;  // per active day, likewise
    // The same test in days (see kRunShareFloor): the role's share of days with such reads, and
    // the log-likelihood ratio a day with them adds and a day without subtracts (0: not judged).
    float days_share = 0;
    float days_step = 0;
    float days_cost = 0;
    bool run_fired = false;  // either test alerted today: both start again from 0
    std::array<std::uint8_t, 64> unexplained_by_category{};  // unexplained reads today
    // Paths of highly sensitive reads today (relation fingerprint, category), to teach the group.
    std::array<std::uint32_t, kTodayPaths> path_relation{};
    std::array<std::uint8_t, kTodayPaths> path_category{};
};

struct ActorState {
    std::uint32_t name_id = 0;
    std::uint32_t group_id = 0;
    bool departed = false;
    std::int32_t first_day = kNoDay;
    std::int32_t active_days = 0;
    std::int32_t last_active_day = kNoDay;
    std::int64_t last_time_us = 0;
    std::int64_t departed_time_us = 0;
    std::array<DecayingHistogram, kOwnMetricCount> own;
    std::array<std::uint16_t, kHoursPerWeek> hours{};  // active hours per hour of the week
    std::uint32_t hours_total = 0;
    std::int64_t last_abs_hour = INT64_MIN;
    std::array<HyperLogLog<8>, kBlocks> blocks;
    std::array<std::int32_t, kBlocks> block_id{};
    std::array<std::uint32_t, kBlocks> sensitive_block{};    // subject-days per block
    std::array<std::uint32_t, kBlocks> unexplained_block{};  // unexplained subject-days
    std::array<std::uint32_t, kBlocks> subject_block{};      // all subject-days
    std::array<std::uint8_t, kBlocks> active_block{};        // days with reads
    HyperLogLog<8> window30;  // unions of blocks, rebuilt each day, then updated in place
    HyperLogLog<8> window90;
    EwMeanVar gaps;
    std::uint32_t run_len = 0;
    std::int64_t last_burst_us = 0;
    float machine_days = 0;
    float tracked_days = 0;
    std::array<std::uint32_t, kAppSlots> apps{};
    std::array<std::uint16_t, kAppSlots> app_uses{};
    std::array<std::uint32_t, kAppSlots> clients{};
    std::array<std::uint16_t, kAppSlots> client_uses{};
    std::uint32_t login_failures = 0;
    std::int64_t first_failure_us = 0;
    std::int64_t last_failure_us = 0;
    std::array<std::int32_t, kDetectorCount> last_alert_day{};
    std::array<std::uint8_t, kDetectorCount> last_alert_band{};
    std::array<std::uint16_t, 64> category_days{};  // active days on which each category was read
    std::uint32_t relation_events = 0;  // declared relations naming this actor
    bool group_known = false;           // seen with a peer group (not just named by a relation)
    // Days this actor went beyond its own norms, for personal monthly rhythms (the DBA's export
    // on the first weekday of each month). Days at a month's or quarter's start or end, and days
    // that repeated an earlier one, are kept over other days (see remember_shift): a DBA's
    // irregular large reads in between must not push the export out.
    struct Shift {
        std::int32_t day = kNoDay;
        std::uint16_t mask = 0;
        bool repeated = false;  // matched an earlier shift of the same point of the calendar
        std::array<float, kOwnMetricCount> value{};
    };
    std::array<Shift, kShifts> shifts{};
    // The sequential test of highly sensitive reads (see kRunShift): its value after the last
    // active day, and since when (and over how many subject-days and active days) it is above 0.
    float sensitive_run = 0;
    std::int32_t run_since = kNoDay;
    std::uint32_t run_subjects = 0;
    std::uint32_t run_days = 0;
    // The same test counted in days with such reads (see kRunShareFloor).
    float days_run = 0;
    std::int32_t days_run_since = kNoDay;
    std::uint16_t days_run_hits = 0;  // days with highly sensitive reads since days_run_since
    std::uint16_t days_run_days = 0;  // active days since days_run_since
    // Subject-days of highly sensitive reads through paths the peers do not use (see kGroupPaths),
    // since the first of them within kPathMemoryDays.
    std::uint32_t path_subjects = 0;
    std::uint32_t path_days = 0;
    std::int32_t path_last_day = kNoDay;
    Today today;
};

// A path of highly sensitive reads: the relation (fingerprint) a category was read from.
struct SensitivePath {
    std::uint32_t relation = 0;  // 0: empty
    std::uint8_t category = 0;
    float days = 0;  // decayed actor-days (learned slots); today's readers (today's slots)
};

struct GroupState {
    std::uint32_t name_id = 0;
    std::int32_t first_day = kNoDay;
    std::int32_t last_decay_day = kNoDay;
    bool service = false;  // from the configuration, not saved
    std::array<FineHistogram, kOwnMetricCount> daily;
    // Window norms per day-in-block: a window 3 days into a block is compared with peers' windows
    // 3 days into a block, so partial and complete windows are never mixed.
    std::array<std::array<FineHistogram, kBlockDays>, kMetricCount - kOwnMetricCount> windows;
    std::array<FineHistogram, kMetricCount> recent;  // the last few days (halved daily)
    std::array<float, kHoursPerWeek> hours{};
    float hours_total = 0;
    float machine_days = 0;
    float tracked_days = 0;
    std::array<std::uint32_t, kGroupAppSlots> apps{};
    std::array<float, kGroupAppSlots> app_days{};
    float actor_days = 0;
    std::array<float, 64> category_days{};  // decayed actor-days reading each category
    std::array<float, 64> unexplained_category{};  // decayed unexplained reads per category
    float category_actor_days = 0;
    std::uint32_t relation_events = 0;
    // Who in the group was active today, and how many of them read a sensitive category: before
    // any norm is learned (a fresh installation), colleagues working the same day are the norm.
    std::int32_t today_day = kNoDay;
    std::uint32_t today_actors = 0;
    std::uint32_t today_sensitive_actors = 0;
    std::uint32_t today_statements = 0;
    std::uint32_t today_sensitive_statements = 0;
    // Same-day cohort (reset with today_day) and the calendar rhythms learned from past cohorts.
    std::array<CohortMetric, kMetricCount> cohort{};
    std::array<std::uint16_t, 64> cohort_categories{};  // colleagues who read each category today
    std::uint32_t today_bulk_actors = 0;                // colleagues who ran a bulk statement today
    std::array<Rhythm, kRhythms> rhythms{};
    // After a team-wide shift every member's rolling windows hold it for the window's length.
    std::array<float, kMetricCount - kOwnMetricCount> window_team_level{};
    std::array<std::int32_t, kMetricCount - kOwnMetricCount> window_team_until{};
    std::array<SensitivePath, kGroupPaths> paths{};        // learned, decayed like categories
    std::array<SensitivePath, kTodayPaths> today_paths{};  // colleagues per path today
    std::int32_t after_holiday_day = kNoDay;  // the last day with the kAfterHoliday feature
};

static_assert(std::is_trivially_copyable_v<ActorState>);
static_assert(std::is_trivially_copyable_v<GroupState>);

// Relations (actor, subject) -> last day the relation explains lookups. Open addressing on a
// 64-bit key; expired entries are dropped whenever the table would grow.
class RelationTable {
  public:
    struct Entry {
        std::uint64_t key = 0;
        std::int32_t expires = 0;
    };

    void put(std::uint64_t key, std::int32_t expires, std::int32_t today) {
        if (key == 0) key = 1;
        if ((count_ + 1) * 10 > entries_.size() * 7) rebuild(today);
        const std::size_t mask = entries_.size() - 1;
        for (std::size_t i = key & mask;; i = (i + 1) & mask) {
            Entry& e = entries_[i];
            if (e.key == key) {
                e.expires = std::max(e.expires, expires);
                return;
            }
            if (e.key == 0) {
                e = {key, expires};
                ++count_;
                return;
            }
        }
    }

    bool covers(std::uint64_t key, std::int32_t day) const {
        if (key == 0) key = 1;
        if (entries_.empty()) return false;
        const std::size_t mask = entries_.size() - 1;
        for (std::size_t i = key & mask;; i = (i + 1) & mask) {
            const Entry& e = entries_[i];
            if (e.key == key) return e.expires >= day;
            if (e.key == 0) return false;
        }
    }

    std::size_t size() const { return count_; }
    const std::vector<Entry>& entries() const { return entries_; }
    void assign(std::vector<Entry> entries) {
        entries_ = std::move(entries);
        count_ = 0;
        for (const Entry& e : entries_) count_ += e.key != 0;
    }

  private:
    void rebuild(std::int32_t today) {
        std::vector<Entry> old = std::move(entries_);
        std::size_t live = 0;
        for (const Entry& e : old) live += e.key != 0 && e.expires >= today;
        std::size_t capacity = 1024;
        while (capacity * 5 < (live + 1) * 10) capacity *= 2;  // at most half full afterwards
        entries_.assign(capacity, Entry{});
        count_ = 0;
        for (const Entry& e : old) {
            if (e.key == 0 || e.expires < today) continue;
            const std::size_t mask = capacity - 1;
            std::size_t i = e.key & mask;
            while (entries_[i].key != 0) i = (i + 1) & mask;
            entries_[i] = e;
            ++count_;
        }
    }

    std::vector<Entry> entries_;
    std::size_t count_ = 0;
};

// Failed logins per client address, across accounts: credential stuffing tries many accounts a
// few times each, which counting per account misses. A fixed table, so an attack cannot grow it.
struct AddressFailures {
    std::uint32_t address = 0;  // fingerprint; 0 marks an empty slot
    std::uint32_t failures = 0;
    std::int64_t first_us = 0;
    std::int64_t last_us = 0;
    std::array<std::uint32_t, 8> accounts{};  // distinct accounts tried (the first 8)
    std::uint32_t account_count = 0;
};
constexpr int kAddressSlots = 1024;
// Cold start (no learned norm): distinct subjects of sensitive categories in a day before the
// same-day comparison with colleagues speaks, and how many colleagues must be active.
constexpr std::uint32_t kColdSensitiveMin = 10;
constexpr std::uint32_t kColdMinColleagues = 2;
constexpr std::uint32_t kColdMinStatements = 100;  // colleagues' statements today; at most 1% sensitive
constexpr int kAddressProbe = 8;

std::string format_value(double v, bool integral) {
    if (integral || v >= 100) return fmt::format("{:.0f}", v);
    return fmt::format("{:.1f}", v);
}

}  // namespace

// The fingerprint of the last string it was asked for, kept: the events of one stored group come
// one after another with the same relation, application, address and session, so a repeat costs
// a comparison instead of a hash.
struct LastFingerprint {
    std::string key;
    std::uint32_t value = 0;  // fingerprint32 is never 0: 0 is "nothing kept"
    std::uint32_t of(std::string_view s) {
        if (value == 0 || s != key) {
            value = fingerprint32(s);
            key.assign(s.data(), s.size());
        }
        return value;
    }
};

struct Scorer::Impl {
    ScorerConfig config;
    StringInterner actor_names;
    StringInterner group_names;
    StringInterner category_names;
    std::vector<ActorState> actors;
    std::vector<GroupState> groups;
    RelationTable relations;
    std::array<AddressFailures, kAddressSlots> addresses{};
    std::uint64_t sensitive_mask = 0;
    std::uint64_t alerts_raised = 0;
    // Since this scorer was made or loaded its state (not saved): what the team rules did.
    std::uint64_t held_raised = 0;   // held signals raised: no colleague followed
    std::uint64_t held_dropped = 0;  // held signals dropped: the team made the same shift
    std::uint64_t team_excused = 0;  // quantities, rare categories excused as the team's, per day
    std::uint64_t unknown_categories = 0;
    std::int64_t utc_offset_s = 0;
    // Consecutive events mostly repeat their actor, categories and strings (a stored group's
    // events are fed in a row): the last lookups are kept. Interned ids never change (the
    // interners only grow, and restoring a state replaces the whole Impl), so a kept result is
    // the one a new lookup would give.
    std::string last_actor_name;
    std::uint32_t last_actor_id = StringInterner::kAbsent;
    std::vector<std::string> last_categories;
    std::uint64_t last_category_mask = 0;
    bool last_categories_kept = false;
    LastFingerprint relation_fp, client_fp, application_fp, session_fp;
    // Declared by the DBA; not part of the saved state (the worker re-applies its table).
    struct DeclaredEvent {
        std::string name;
        std::string group;                      // empty: every group
        std::int32_t from_day = 0, to_day = 0;  // local days, inclusive
    };
    std::vector<DeclaredEvent> known;
    Calendar calendar_cache;
    // Signals held while the team may still follow; saved with the state.
    struct Held {
        std::uint32_t actor = 0;
        std::uint8_t kind = 0;  // a metric, or kRhythmCategory + category
        std::uint8_t detector = 0;
        std::int32_t day = kNoDay;
        std::int64_t due_us = 0;
        std::int64_t time_us = 0;  // of the event that raised it
        double strength = 0;
        double value = 0;
        std::string explanation;
    };
    std::vector<Held> held;
    std::int64_t next_due = INT64_MAX;
    bool event_is_bulk = false;  // the access event being scored
    // The team's pace, per group and quantity, reused for a few minutes in large groups: on a
    // day the whole team shifts, every member would otherwise pass over all the others, each
    // time a quantity of theirs fires. Not saved (a cache).
    struct PaceMemo {
        std::int32_t day = kNoDay;
        std::int64_t until_us = 0;
        double pace = 0;
        std::uint32_t counted = 0;
    };
    std::vector<std::array<PaceMemo, kMetricCount>> pace_memo;

    explicit Impl(ScorerConfig c) : config(std::move(c)) {
        utc_offset_s = static_cast<std::int64_t>(config.utc_offset_minutes) * 60;
        for (const std::string& name : config.sensitive_categories) {
            const std::uint32_t bit = category_names.intern(name);
            if (bit < 64) sensitive_mask |= std::uint64_t{1} << bit;
        }
    }

    // ---- names, groups, actors -------------------------------------------------------------

    std::uint32_t group_id(std::string_view name) {
        const std::uint32_t id = group_names.intern(name);
        if (id == groups.size()) {
            GroupState g;
            g.name_id = id;
            g.service = is_service_group(name);
            groups.push_back(g);
        }
        return id;
    }

    bool is_service_group(std::string_view name) const {
        return std::find(config.service_groups.begin(), config.service_groups.end(), name) !=
               config.service_groups.end();
    }

    ActorState& actor(std::string_view name, std::string_view group) {
        std::uint32_t id = last_actor_id != StringInterner::kAbsent && name == last_actor_name
                               ? last_actor_id
                               : actor_names.find(name);
        if (id != last_actor_id) {
            last_actor_id = StringInterner::kAbsent;  // until the new one is known
            if (id != StringInterner::kAbsent) {
                last_actor_name.assign(name.data(), name.size());
                last_actor_id = id;
            }
        }
        if (id == StringInterner::kAbsent) {
            id = actor_names.intern(name);
            ActorState a;
            a.name_id = id;
            a.group_id = group_id(group.empty() ? std::string_view("default") : group);
            a.group_known = !group.empty();
            a.last_alert_day.fill(kNoDay);
            a.block_id.fill(kNoDay);
            actors.push_back(a);
            return actors.back();
        }
        ActorState& a = actors[id];
        // Role changes move the actor to the new group; its own history stays, today's limits
        // follow the new peers.
        if (!group.empty() && group_names.name(a.group_id) != group) {
            a.group_id = group_id(group);
            // Relations declared before the actor's group was known (a ticket opened before
            // the clerk's first read) make the group's lookups checkable too. A role change
            // does not: the new role's work need not come with tickets.
            if (!a.group_known) groups[a.group_id].relation_events += a.relation_events;
            if (a.today.day != kNoDay) compute_limits(a);
        }
        if (!group.empty()) a.group_known = true;
        return a;
    }

    std::uint64_t category_mask(Span<std::string_view> categories) {
        if (last_categories_kept && categories.size == last_categories.size() &&
            std::equal(categories.begin(), categories.end(), last_categories.begin()))
            return last_category_mask;
        std::uint64_t mask = 0;
        bool unknown = false;
        for (std::string_view c : categories) {
            std::uint32_t bit = category_names.find(c);
            if (bit == StringInterner::kAbsent) {
                if (category_names.size() >= 64) {
                    ++unknown_categories;  // counted per event: such a list is not kept
                    unknown = true;
                    continue;
                }
                bit = category_names.intern(c);
            }
            if (bit < 64) mask |= std::uint64_t{1} << bit;
        }
        last_categories_kept = false;
        if (!unknown) {
            last_categories.assign(categories.begin(), categories.end());
            last_category_mask = mask;
            last_categories_kept = true;
        }
        return mask;
    }

    // ---- time ------------------------------------------------------------------------------

    struct Clock {
        std::int64_t local_s;
        std::int32_t day;
        std::int64_t abs_hour;
        int how;  // hour of the week, Monday 00:00 = 0
    };

    Clock clock(std::int64_t time_us) const {
        Clock c;
        c.local_s = floor_div(time_us, kMicrosPerSecond) + utc_offset_s;
        c.day = static_cast<std::int32_t>(floor_div(c.local_s, kSecondsPerDay));
        c.abs_hour = floor_div(c.local_s, 3600);
        const int weekday = static_cast<int>(((c.day + 3) % 7 + 7) % 7);  // 1970-01-01: Thursday
        c.how = weekday * 24 +
                static_cast<int>((c.local_s - std::int64_t{c.day} * kSecondsPerDay) / 3600);
        return c;
    }

    // ---- days ------------------------------------------------------------------------------

    static int block_slot(std::int32_t block) {
        return static_cast<int>(((block % kBlocks) + kBlocks) % kBlocks);
    }

    // Days a window ending today spans: the whole blocks before plus today's block so far.
    static int window_span(std::int32_t day, int window) {
        const int in_block = static_cast<int>(((day % kBlockDays) + kBlockDays) % kBlockDays) + 1;
        return (window - kBlockDays) + in_block;
    }
    int covered_days(const ActorState& a, std::int32_t day, int window) const {
        return std::min(window_span(day, window), day - a.first_day + 1);
    }

    // Raw counts, not rates: peers are sampled at the end of each 10-day block, when their
    // windows are complete, so an actor's partial window is compared conservatively.
    static double window_subjects(const ActorState& a, int window) {
        return (window == 30 ? a.window30 : a.window90).estimate();
    }

    static double window_sum(const ActorState& a,
                             const std::array<std::uint32_t, kBlocks> ActorState::*blocks) {
        const std::int32_t block = static_cast<std::int32_t>(floor_div(a.today.day, kBlockDays));
        double sum = 0;
        for (std::int32_t b = block - (kBlocks30 - 1); b <= block; ++b) {
            const int slot = block_slot(b);
            if (a.block_id[slot] == b) sum += (a.*blocks)[slot];
        }
        return sum;
    }
    // Days with reads in the 30-day window before today.
    static double active_days_in_window(const ActorState& a) {
        const std::int32_t block = static_cast<std::int32_t>(floor_div(a.today.day, kBlockDays));
        double days = 0;
        for (std::int32_t b = block - (kBlocks30 - 1); b <= block; ++b) {
            const int slot = block_slot(b);
            if (a.block_id[slot] == b) days += a.active_block[slot];
        }
        return std::max(0.0, days - (a.today.statements > 0 ? 1 : 0));
    }
    static double window_sensitive(const ActorState& a) {
        return window_sum(a, &ActorState::sensitive_block);
    }
    static double window_unexplained(const ActorState& a) {
        return window_sum(a, &ActorState::unexplained_block);
    }
    // Unexplained share of the window's lookups, per mille; < 0 while too few to judge.
    static double window_unexplained_share(const ActorState& a) {
        const double all = window_sum(a, &ActorState::subject_block);
        if (all < 200) return -1;
        return std::round(1000 * window_unexplained(a) / all);
    }

    static int phase_of(std::int32_t day) {
        return static_cast<int>(((day % kBlockDays) + kBlockDays) % kBlockDays);
    }
    // A share does not grow with the window's length, so it needs no day-in-block split and
    // gets fifteen times the samples.
    static int norm_phase(int m, std::int32_t day) {
        return m == kUnexplainedShare30 ? 0 : phase_of(day);
    }
    static FineHistogram& peer_norm(GroupState& g, int m, std::int32_t day) {
        return m < kOwnMetricCount ? g.daily[m]
                                   : g.windows[m - kOwnMetricCount][norm_phase(m, day)];
    }
    static const FineHistogram& peer_norm(const GroupState& g, int m, std::int32_t day) {
        return m < kOwnMetricCount ? g.daily[m]
                                   : g.windows[m - kOwnMetricCount][norm_phase(m, day)];
    }

    bool relations_apply(const ActorState& a) const {
        // Relations are declared per role (tickets for the call centre, appointments for care
        // staff); a role without any has no business reasons to check against.
        return groups[a.group_id].relation_events > 0;
    }

    bool own_warm(const ActorState& a, int m) const {
        return m < kOwnMetricCount && a.active_days >= config.min_history_days &&
               a.own[m].total() > 3;
    }
    bool peer_warm(const GroupState& g, int m, std::int32_t day) const {
        // Window norms are split by day-in-block, so each phase gets fewer samples.
        const double needed = m < kOwnMetricCount ? config.min_peer_days : config.min_peer_days / 3;
        return peer_norm(g, m, day).total() >= needed;
    }

    void close_day(ActorState& a) {
        Today& t = a.today;
        if (t.statements == 0 && t.denied == 0) return;
        GroupState& g = groups[a.group_id];
        if (g.last_decay_day == kNoDay) g.last_decay_day = t.day;
        if (t.day > g.last_decay_day) {
            const float f =
                static_cast<float>(std::pow(config.peer_decay, t.day - g.last_decay_day));
            for (FineHistogram& h : g.daily) h.decay(f);
            for (auto& phases : g.windows) {
                for (FineHistogram& h : phases) h.decay(f);
            }
            // Everything a group remembers forgets at the same pace, per calendar day, so that
            // shares (of days with a category, an application, a machine cadence) stay shares.
            for (float& c : g.category_days) c *= f;
            for (SensitivePath& p : g.paths) p.days *= f;
            for (float& c : g.unexplained_category) c *= f;
            g.category_actor_days *= f;
            for (float& d : g.app_days) d *= f;
            g.actor_days *= f;
            g.machine_days *= f;
            g.tracked_days *= f;
            const float half = static_cast<float>(std::pow(0.5, t.day - g.last_decay_day));
            for (FineHistogram& h : g.recent) h.decay(half);
            g.last_decay_day = t.day;
        }
        std::array<double, kMetricCount> value{};
        std::array<bool, kMetricCount> present{};
        value[kSubjectsDay] = std::round(t.subjects.estimate());
        value[kSensitiveDay] = std::round(t.sensitive.estimate());
        value[kRowsDay] = t.rows;
        value[kStatementRows] = t.max_statement_rows;
        value[kCopyDay] = t.copies;
        value[kUnexplainedDay] = std::round(t.unexplained.estimate());
        value[kDeniedDay] = t.denied;
        value[kSessionRows] = t.max_session_rows;
        for (int m = 0; m < kOwnMetricCount; ++m) present[m] = true;
        present[kSessionRows] = t.session != 0;
        present[kUnexplainedDay] = relations_apply(a);
        // Only windows as long as their day-in-block allows teach: a new hire's first weeks are
        // not a 30-day window.
        const int existed = t.day - a.first_day + 1;
        if (existed >= window_span(t.day, 30)) {
            value[kSubjects30] = std::round(window_subjects(a, 30));
            value[kSensitive30] = window_sensitive(a);
            value[kUnexplained30] = window_unexplained(a);
            present[kSubjects30] = present[kSensitive30] = true;
            present[kUnexplained30] = present[kUnexplainedDay];
            value[kUnexplainedShare30] = window_unexplained_share(a);
            present[kUnexplainedShare30] =
                present[kUnexplainedDay] && value[kUnexplainedShare30] >= 0;
        }
        if (existed >= window_span(t.day, 90)) {
            value[kSubjects90] = std::round(window_subjects(a, 90));
            present[kSubjects90] = true;
        }
        const float own_decay = static_cast<float>(config.own_decay);
        for (int m = 0; m < kMetricCount; ++m) {
            if (!present[m]) continue;
            if (t.anomalous_mask & (1u << static_cast<int>(kMetrics[m].detector))) continue;
            // A day past the firing limit does not teach either, even if it stayed below the
            // alert threshold, was held for the team or excused as the team's: an insider must
            // not become his peers' norm, nor a month end an ordinary day. (The limit of the
            // day's norm, not t.limit, which rises after each firing.)
            if (value[m] >= ordinary_limit(m, t.norm[m])) continue;
            if (m == kSensitive30 && value[m] >= t.role_limit30) continue;
            if (m < kOwnMetricCount) {
                a.own[m].decay(own_decay);
                a.own[m].add(value[m]);
            }
            peer_norm(g, m, t.day).add(value[m]);
            g.recent[m].add(value[m]);
        }
        g.actor_days += 1;
        g.category_actor_days += 1;
        if (!(t.anomalous_mask & (1u << static_cast<int>(Detector::no_business_reason)))) {
            for (int c = 0; c < 64; ++c) g.unexplained_category[c] += t.unexplained_by_category[c];
        }
        if (!(t.anomalous_mask & (1u << static_cast<int>(Detector::sensitive_categories)))) {
            for (int c = 0; c < 64; ++c) {
                if (!(t.categories_read & (std::uint64_t{1} << c))) continue;
                if (a.category_days[c] < 0xffff) ++a.category_days[c];
                g.category_days[c] += 1;
            }
            for (int i = 0; i < kTodayPaths && t.path_relation[i] != 0; ++i)
                learn_path(g, t.path_relation[i], t.path_category[i]);
        }
        if (!(t.anomalous_mask & (1u << static_cast<int>(Detector::machine_like_access)))) {
            a.machine_days = a.machine_days * 0.97f + (t.machine_like ? 1.0f : 0.0f);
            a.tracked_days = a.tracked_days * 0.97f + 1.0f;
            g.machine_days += t.machine_like ? 1.0f : 0.0f;
            g.tracked_days += 1.0f;
            for (int s = 0; s < kAppSlots; ++s) {
                if (t.apps_used_mask & (1u << s)) add_group_app(g, a.apps[s]);
            }
        }
        close_run(a, value[kSensitiveDay]);
        ++a.active_days;
        a.last_active_day = t.day;
    }

    // The day's step of the sequential test; after an alert it starts again from 0.
    static void close_run(ActorState& a, double subjects) {
        close_days_run(a, subjects > 0);
        const Today& t = a.today;
        const double run = a.sensitive_run + subjects * t.run_step - t.run_cost;
        if (t.run_step <= 0 || t.run_fired || run <= 0) {
            a.sensitive_run = 0;
            a.run_since = kNoDay;
            a.run_subjects = 0;
            a.run_days = 0;
            return;
        }
        if (a.run_since == kNoDay) a.run_since = t.day;
        a.sensitive_run = static_cast<float>(run);
        a.run_subjects += static_cast<std::uint32_t>(subjects);
        ++a.run_days;
    }

    static void close_days_run(ActorState& a, bool read) {
        const Today& t = a.today;
        const double run = a.days_run + (read ? t.days_step : -t.days_cost);
        if (t.days_step <= 0 || t.run_fired || run <= 0) {
            a.days_run = 0;
            a.days_run_since = kNoDay;
            a.days_run_hits = 0;
            a.days_run_days = 0;
            return;
        }
        if (a.days_run_since == kNoDay) a.days_run_since = t.day;
        a.days_run = static_cast<float>(run);
        if (a.days_run_hits < 0xffff) a.days_run_hits += read;
        if (a.days_run_days < 0xffff) ++a.days_run_days;
    }

    static void add_group_app(GroupState& g, std::uint32_t fp) {
        int weakest = 0;
        for (int i = 0; i < kGroupAppSlots; ++i) {
            if (g.apps[i] == fp) {
                g.app_days[i] += 1;
                return;
            }
            if (g.app_days[i] < g.app_days[weakest]) weakest = i;
        }
        g.apps[weakest] = fp;
        g.app_days[weakest] = 1;
    }

    void start_day(ActorState& a, std::int32_t day) {
        a.today = Today{};
        Today& t = a.today;
        t.day = day;
        if (a.first_day == kNoDay) a.first_day = day;
        GroupState& g = groups[a.group_id];
        if (g.today_day == kNoDay || day > g.today_day) {
            // Weekdays nobody in the group worked, between its last working day and this one, a
            // weekday: a holiday (once the group has a few weeks of history; at most two weeks).
            if (g.today_day != kNoDay && g.first_day != kNoDay && g.today_day - g.first_day >= 14 &&
                weekday_of(day) < 5) {
                int skipped = 0;
                for (std::int32_t d = g.today_day + 1; d < day && skipped <= kHolidayMaxWeekdays;
                     ++d)
                    skipped += weekday_of(d) < 5;
                if (skipped >= 1 && skipped <= kHolidayMaxWeekdays) g.after_holiday_day = day;
            }
            g.today_day = day;
            g.today_actors = 0;
            g.today_sensitive_actors = 0;
            g.today_statements = 0;
            g.today_sensitive_statements = 0;
            g.cohort = {};
            g.cohort_categories = {};
            g.today_paths = {};
            g.today_bulk_actors = 0;
        }
        const std::int32_t block = static_cast<std::int32_t>(floor_div(day, kBlockDays));
        const int slot = block_slot(block);
        if (a.block_id[slot] != block) {
            a.blocks[slot].clear();
            a.block_id[slot] = block;
            a.sensitive_block[slot] = 0;
            a.unexplained_block[slot] = 0;
            a.subject_block[slot] = 0;
            a.active_block[slot] = 0;
        }
        a.window30.clear();
        a.window90.clear();
        for (std::int32_t b = block - (kBlocks - 1); b <= block; ++b) {
            const int s = block_slot(b);
            if (a.block_id[s] != b) continue;
            a.window90.merge(a.blocks[s]);
            if (b > block - kBlocks30) a.window30.merge(a.blocks[s]);
        }
        compute_limits(a);
    }

    // The norm is the highest of: own percentile, peers' percentile, and what peers did in the
    // last few days (so a month-end or audit week that moves a whole group is not an alert).
    void compute_limits(ActorState& a) {
        Today& t = a.today;
        const std::int32_t day = t.day;
        const GroupState& g = groups[a.group_id];
        for (int m = 0; m < kMetricCount; ++m) {
            double norm = -1, median = 0;
            // Highly sensitive reads per day are judged by the role once the peers' norm is
            // known: an actor's own habit of taking a code or two a day must not become his
            // licence to take more (each day below the limit raised the next day's).
            const bool role_only = m == kSensitiveDay && peer_warm(g, m, day);
            if (own_warm(a, m) && !role_only) {
                norm = a.own[m].quantile(config.norm_quantile);
                median = a.own[m].quantile(0.5);
            }
            if (peer_warm(g, m, day)) {
                const FineHistogram& h = peer_norm(g, m, day);
                const double peer = h.quantile(config.peer_quantile);
                if (peer > norm) {
                    norm = peer;
                    median = h.quantile(0.5);
                }
                if (g.recent[m].total() >= 5) {
                    const double recent = g.recent[m].quantile(0.9);
                    if (recent > norm) {
                        norm = recent;
                        median = g.recent[m].quantile(0.5);
                    }
                }
            }
            t.median[m] = static_cast<float>(median);
            if (norm < 0) {
                t.norm[m] = -1;
                t.limit[m] = std::numeric_limits<float>::infinity();
                continue;
            }
            t.norm[m] = static_cast<float>(norm);
            t.limit[m] = static_cast<float>(ordinary_limit(m, norm));
        }
        t.role_limit30 = std::numeric_limits<float>::infinity();
        const FineHistogram& daily = g.daily[kSensitiveDay];
        if (peer_warm(g, kSensitiveDay, day) && daily.quantile(0.5) < 1 &&
            daily.quantile(config.peer_quantile) <= kRoleFewPerDay) {
            // A role that reads highly sensitive categories on fewer than half its days, a few
            // records at a time (a counter clerk's occasional code, not a back office's bulk
            // statements, whose heavy tail no daily rate describes): the window is judged by
            // the role's daily rate over the actor's active days in it (mean and spread of the
            // peers' days, which one insider barely moves), not by the window norm's upper tail
            // (in a small group, the insider's own window).
            const double n = active_days_in_window(a) + 1;  // and today
            // The role's rate now: after a reorganisation or in a campaign the last few days say
            // more than the decayed norm.
            const FineHistogram& recent = g.recent[kSensitiveDay];
            const double mean = std::max(daily.mean(), recent.total() >= 5 ? recent.mean() : 0.0);
            // Counts of chance events: Poisson, widened by the peers' day-to-day dispersion.
            const double dispersion = mean > 0 ? std::max(1.0, daily.variance() / mean) : 1.0;
            const double role =
                std::max(n * mean + kRoleMargin,
                         dispersion * poisson_upper(n * mean / dispersion, kRoleTail));
            t.role_expected30 = static_cast<float>(n * mean);
            t.role_spread30 = static_cast<float>(std::max(std::sqrt(n * mean * dispersion), 1.0));
            if (role < t.limit[kSensitive30]) {
                t.role_limit30 = static_cast<float>(role);
                t.limit[kSensitive30] = t.role_limit30;
            }
            const double rate = std::max(mean, kRunRateFloor);
            t.run_rate = static_cast<float>(rate);
            t.run_step = static_cast<float>(std::log((rate + kRunShift) / rate) / dispersion);
            t.run_cost = static_cast<float>(kRunShift / dispersion);
            // The share of the role's days with such reads: the decayed norm's, once it is known
            // to about a tenth of itself. Not while the last few days' share is clearly higher
            // (both two standard errors apart): the team's work has changed (a new screen shows
            // the code to everyone) and the norm has not learned it yet.
            const double share = std::max(daily.fraction_at_least(1), kRunShareFloor);
            if (share_known(daily, config.peer_decay) && share < 0.5 &&
                share_bound(recent, 0.5, -kShareBound) <=
                    share_bound(daily, config.peer_decay, kShareBound)) {
                const double shifted = share + kRunShift * (1 - share);
                t.days_share = static_cast<float>(share);
                t.days_step = static_cast<float>(std::log(shifted / share));
                t.days_cost = static_cast<float>(std::log((1 - share) / (1 - shifted)));
            }
        }
    }

    static double ordinary_limit(int m, double norm) {
        if (norm < 0) return std::numeric_limits<double>::infinity();
        double limit = std::max(norm * kMetrics[m].min_ratio, norm + kMetrics[m].min_excess);
        // A few unexplained lookups a day are a count of chance events (walk-ins): a day's count
        // varies by about its square root, so a margin of 2 of those above the norm (itself a
        // high percentile) is the least that is news.
        if (m == kUnexplainedDay) limit = std::max(limit, norm + 2 * std::sqrt(norm));
        return limit;
    }

    void enter_day(ActorState& a, std::int32_t day) {
        if (a.today.day == day) return;
        if (a.today.day != kNoDay && day < a.today.day) return;  // late event: stays in today
        if (a.today.day != kNoDay) close_day(a);
        start_day(a, day);
    }

    // ---- alerts ----------------------------------------------------------------------------

    static void add_evidence(ActorState& a, Detector d, std::uint64_t event_id) {
        if (event_id == 0) return;
        const int i = static_cast<int>(d);
        auto& ring = a.today.evidence[i];
        std::uint8_t& n = a.today.evidence_count[i];
        if (n > 0 && ring[std::min<int>(n, kEvidence) - 1] == event_id) return;  // added already
        if (n < kEvidence) {
            ring[n++] = event_id;
        } else {
            // Keep the first event (how it started) and the latest ones.
            std::memmove(&ring[1], &ring[2], (kEvidence - 2) * sizeof ring[0]);
            ring[kEvidence - 1] = event_id;
        }
    }

    // Records the signal and raises an alert if the combined score clears the threshold and this
    // detector has not already said as much recently. `explain` runs only when an alert is made.
    template <class Explain>
    void raise(ActorState& a, Detector d, double strength, std::int64_t time_us,
               std::vector<Alert>& out, Explain&& explain) {
        Today& t = a.today;
        const int di = static_cast<int>(d);
        t.anomalous_mask |= static_cast<std::uint8_t>(1u << di);
        if (strength <= t.signal[di]) return;
        t.signal[di] = static_cast<float>(std::min(strength, 0.999));
        double quiet = 1;
        for (float s : t.signal) quiet *= 1 - s;
        const int score = static_cast<int>(std::lround(100 * (1 - quiet)));
        if (score < config.threshold) return;
        const Severity band = severity_of(score);
        // A departed account's activity is news every day it happens.
        const int quiet_days = d == Detector::departed_or_dormant ? 1 : config.repeat_after_days;
        if (a.last_alert_day[di] != kNoDay && t.day - a.last_alert_day[di] < quiet_days &&
            static_cast<std::uint8_t>(band) <= a.last_alert_band[di]) {
            return;
        }
        a.last_alert_day[di] = t.day;
        a.last_alert_band[di] = static_cast<std::uint8_t>(band);
        Alert alert;
        alert.time_us = time_us;
        alert.actor = std::string(actor_names.name(a.name_id));
        alert.peer_group = std::string(group_names.name(a.group_id));
        alert.detector = d;
        alert.score = score;
        alert.severity = band;
        alert.explanation = explain();
        std::string others;
        for (int i = 0; i < kDetectorCount; ++i) {
            if (i == di || t.signal[i] < 0.05f) continue;
            if (!others.empty()) others += ", ";
            others += detector_name(static_cast<Detector>(i));
        }
        if (!others.empty()) alert.explanation += fmt::format(" (also today: {})", others);
        const auto& ring = t.evidence[di];
        alert.evidence.assign(ring.begin(), ring.begin() + t.evidence_count[di]);
        out.push_back(std::move(alert));
        ++alerts_raised;
    }

    std::string norms_text(const ActorState& a, int m) const {
        const bool integral = kMetrics[m].integral;
        const double q = config.norm_quantile;
        const std::string qname = fmt::format("{:g}th percentile", q * 100);
        const double peer_q = config.peer_quantile;
        const std::string peer_qname = fmt::format("{:.3g}th percentile", peer_q * 100);
        std::string text;
        if (m < kOwnMetricCount) {
            if (own_warm(a, m)) {
                text = fmt::format("own median {}, {} {} over {} active days",
                                   format_value(a.own[m].quantile(0.5), integral), qname,
                                   format_value(a.own[m].quantile(q), integral), a.active_days);
            } else {
                text = fmt::format("no own norm yet ({} active days)", a.active_days);
            }
            text += "; ";
        }
        const GroupState& g = groups[a.group_id];
        const std::int32_t day = a.today.day;
        if (peer_warm(g, m, day)) {
            const FineHistogram& h = peer_norm(g, m, day);
            text += fmt::format("peers' median {}, {} {} over {:.0f} actor-days",
                                format_value(h.quantile(0.5), integral), peer_qname,
                                format_value(h.quantile(peer_q), integral), h.total());
            if (g.recent[m].total() >= 5 && g.recent[m].quantile(0.9) > h.quantile(peer_q)) {
                text += fmt::format(" (in the last days peers' 90th percentile rose to {})",
                                    format_value(g.recent[m].quantile(0.9), integral));
            }
        } else {
            text += "peer norm not yet learned";
        }
        return text;
    }

    std::string sensitive_names(std::uint64_t mask) const {
        std::string names;
        for (int bit = 0; bit < 64; ++bit) {
            if (!(mask & (std::uint64_t{1} << bit))) continue;
            if (!names.empty()) names += "/";
            names += category_names.name(static_cast<std::uint32_t>(bit));
        }
        return names.empty() ? std::string("sensitive categories") : names;
    }

    // ---- cohorts, calendar rhythms, declared events ------------------------------------------

    const Calendar& calendar(std::int32_t day) {
        if (calendar_cache.day != day) calendar_cache = calendar_of(day);
        return calendar_cache;
    }

    // The day's calendar features, and the group's own: the first working day after a holiday.
    Calendar group_calendar(const GroupState& g, std::int32_t day) {
        Calendar cal = calendar(day);
        if (g.after_holiday_day == day && cal.count < static_cast<int>(cal.features.size()))
            cal.features[cal.count++] = static_cast<std::uint16_t>(kAfterHoliday << 8);
        return cal;
    }

    const DeclaredEvent* declared_event(std::uint32_t group, std::int32_t day) const {
        for (const DeclaredEvent& e : known) {
            if ((e.group.empty() || e.group == group_names.name(group)) && day >= e.from_day &&
                day <= e.to_day)
                return &e;
        }
        return nullptr;
    }

    // Remembers that the group made this shift today, under every calendar feature of the day.
    void remember_rhythm(GroupState& g, std::int32_t day, std::uint8_t kind, double magnitude) {
        const Calendar cal = group_calendar(g, day);
        for (int i = 0; i < cal.count; ++i) {
            const std::uint16_t f = cal.features[i];
            Rhythm* slot = nullptr;
            Rhythm* oldest = &g.rhythms[0];
            for (Rhythm& r : g.rhythms) {
                if (r.feature == f && r.kind == kind) {
                    slot = &r;
                    break;
                }
                if (oldest->feature != 0 && (r.feature == 0 || r.last_day < oldest->last_day))
                    oldest = &r;
            }
            if (slot == nullptr) {
                slot = oldest;
                *slot = Rhythm{};
                slot->feature = f;
                slot->kind = kind;
            }
            if (slot->last_day != day) {
                if (slot->seen < 255) ++slot->seen;
                slot->last_day = day;
                slot->magnitude = static_cast<float>(magnitude);
            } else {
                slot->magnitude = std::max(slot->magnitude, static_cast<float>(magnitude));
            }
        }
    }

    // The largest remembered shift of this kind that today's calendar makes due, if any.
    const Rhythm* due_rhythm(const GroupState& g, std::int32_t day, std::uint8_t kind) {
        const Calendar cal = group_calendar(g, day);
        const Rhythm* best = nullptr;
        for (const Rhythm& r : g.rhythms) {
            if (r.feature == 0 || r.kind != kind || !rhythm_due(r.feature, r.last_day, r.seen, day))
                continue;
            for (int i = 0; i < cal.count; ++i) {
                if (cal.features[i] == r.feature &&
                    (best == nullptr || r.magnitude > best->magnitude))
                    best = &r;
            }
        }
        return best;
    }

    enum class TeamKind : std::uint8_t { none, cohort, window, rhythm, personal, declared, pace };
    struct TeamJudgement {
        TeamKind kind = TeamKind::none;
        double limit = 0;      // fire at or beyond
        double reference = 0;  // the colleagues' median, the remembered one, or the usual norm
        std::uint32_t others = 0;
        const Rhythm* rhythm = nullptr;
        const DeclaredEvent* event = nullptr;
        std::int32_t personal_day = kNoDay;
        double pace = 0;  // TeamKind::pace: the colleagues' median pace
    };

    // A day at a month's or quarter's start or end: where personal rhythms live.
    static bool calendar_position(std::int32_t day) {
        const Calendar c = calendar_of(day);
        for (int i = 0; i < c.count; ++i) {
            const int kind = c.features[i] >> 8;
            if (kind >= kMonthEnd && kind <= kQuarterStart) return true;
        }
        return false;
    }

    // Which remembered day a new one replaces: an empty slot, else the oldest ordinary day, else
    // the oldest calendar position that has not repeated, else the oldest (or one no longer due).
    static void remember_shift(ActorState& a, int m, double value, bool repeated) {
        const std::int32_t day = a.today.day;
        ActorState::Shift* slot = nullptr;
        int slot_rank = 4;
        for (ActorState::Shift& s : a.shifts) {
            if (s.day == day) {
                slot = &s;
                break;
            }
            int rank = 3;
            if (s.day == kNoDay || day - s.day > 190) {
                rank = 0;
            } else if (!calendar_position(s.day)) {
                rank = 1;
            } else if (!s.repeated) {
                rank = 2;
            }
            if (slot == nullptr || rank < slot_rank || (rank == slot_rank && s.day < slot->day)) {
                slot = &s;
                slot_rank = rank;
            }
        }
        if (slot->day != day) *slot = ActorState::Shift{day, 0, false, {}};
        slot->mask |= static_cast<std::uint16_t>(1u << m);
        slot->repeated |= repeated;
        slot->value[m] = std::max(slot->value[m], static_cast<float>(value));
    }

    // The past day with the largest value of m on which this actor went beyond its norm for m
    // and that falls on the same point of the month or quarter as today (weekdays are too
    // frequent to call a rhythm alone). The largest: an irregular read that happens to share
    // the day of the month must not stand in for last month's export.
    const ActorState::Shift* personal_rhythm(const ActorState& a, int m) {
        const std::int32_t day = a.today.day;
        const Calendar today = calendar(day);
        const ActorState::Shift* best = nullptr;
        for (const ActorState::Shift& s : a.shifts) {
            if (s.day == kNoDay || s.day >= day || !(s.mask & (1u << m))) continue;
            if (best != nullptr && s.value[m] <= best->value[m]) continue;
            const Calendar then = calendar_of(s.day);
            bool matches = false;
            for (int i = 0; i < then.count && !matches; ++i) {
                const std::uint16_t f = then.features[i];
                if ((f >> 8) == kWeekday || !rhythm_due(f, s.day, 1, day)) continue;
                for (int k = 0; k < today.count; ++k) matches |= today.features[k] == f;
            }
            if (matches) best = &s;
        }
        return best;
    }

    // Share of its usual day an actor has worked by this hour of the week, from its own profile
    // of active hours on this weekday (all weekdays when it rarely works this one). Never below
    // a fifth: early in the day a few reads say little about the pace.
    static double day_done(const ActorState& a, int how) {
        const int weekday = how / 24, hour = how % 24;
        auto done = [&](int wd) {
            double before = 0, all = 0;
            for (int h = 0; h < 24; ++h) {
                const double n = a.hours[wd * 24 + h];
                all += n;
                if (h < hour) before += n;
                if (h == hour) before += n / 2;
            }
            return std::pair<double, double>(before, all);
        };
        auto [before, all] = done(weekday);
        if (all < 3) {
            before = all = 0;
            for (int wd = 0; wd < 7; ++wd) {
                const auto [b, n] = done(wd);
                before += b;
                all += n;
            }
        }
        if (all < 3) return 1;
        return std::clamp(before / all, 0.2, 1.0);
    }

    // Actor a's value of quantity m so far today (daily quantities) or now (windows).
    static double current_value(const ActorState& a, int m) {
        const Today& t = a.today;
        switch (m) {
            case kSubjectsDay:
                return t.subjects_counted;
            case kSensitiveDay:
                return t.sensitive_counted;
            case kRowsDay:
                return t.rows;
            case kStatementRows:
                return t.max_statement_rows;
            case kUnexplainedDay:
                return t.unexplained_counted;
            case kSessionRows:
                return t.max_session_rows;
            case kSubjects30:
                return window_subjects(a, 30);
            case kSubjects90:
                return window_subjects(a, 90);
            case kSensitive30:
                return window_sensitive(a);
            case kUnexplained30:
                return window_unexplained(a);
        }
        return -1;  // counts of COPYs and denials, shares: no pace
    }

    // How fast the colleagues work today compared with their usual day: the median over active
    // colleagues of (value so far) / (own median day x share of the day done by now). Windows
    // compare each colleague's window now with the peers' median window at the same point of a
    // block. Returns 0 when too few colleagues have a baseline to say.
    double team_pace(const ActorState& a, int m, std::int64_t time_us, std::uint32_t& counted) {
        counted = 0;
        // Lookups without a declared reason are a few a day, too few for a pace of their own;
        // they are a share of the day's lookups (walk-ins), so the team's pace of people looked
        // up stands for them: after a holiday, the backlog brings its walk-ins with it.
        if (m == kUnexplainedDay) m = kSubjectsDay;
        if (current_value(a, m) < 0) return 0;
        const GroupState& g = groups[a.group_id];
        const std::int32_t day = a.today.day;
        if (g.today_day != day || g.today_actors < kPaceMinColleagues + 1) return 0;
        const bool window = m >= kOwnMetricCount;
        const bool cumulative = !window && m != kStatementRows && m != kSessionRows;
        double window_median = 0;
        if (window) {
            if (!peer_warm(g, m, day)) return 0;
            window_median = peer_norm(g, m, day).quantile(0.5);
            if (window_median < kPaceMinBaseline) return 0;
        }
        // In a large group one member barely moves the median: the pace of a few minutes ago,
        // computed without another member, serves.
        const bool memo_ok = g.today_actors >= kPaceMemoActors;
        if (pace_memo.size() < groups.size()) pace_memo.resize(groups.size());
        PaceMemo& memo = pace_memo[a.group_id][m];
        if (memo_ok && memo.day == day && time_us < memo.until_us) {
            counted = memo.counted;
            return memo.pace;
        }
        const int how = clock(time_us).how;
        std::array<double, 64> paces{};
        for (const ActorState& c : actors) {
            if (c.group_id != a.group_id || c.name_id == a.name_id || c.today.day != day ||
                c.today.statements == 0)
                continue;
            double baseline = window_median;
            if (!window) {
                if (own_warm(c, m)) {
                    baseline = c.own[m].quantile(0.5);
                } else if (peer_warm(g, m, day)) {
                    baseline = g.daily[m].quantile(0.5);
                }
                if (baseline < kPaceMinBaseline) continue;
                if (cumulative) baseline *= day_done(c, how);
            }
            paces[counted % paces.size()] = current_value(c, m) / baseline;
            ++counted;
        }
        double pace = 0;
        if (counted >= kPaceMinColleagues) {
            const std::size_t n = std::min<std::size_t>(counted, paces.size());
            std::nth_element(paces.begin(), paces.begin() + n / 2, paces.begin() + n);
            pace = paces[n / 2];
        }
        if (memo_ok) memo = {day, time_us + kPaceMemoMicros, pace, counted};
        return pace;
    }

    // An actor went beyond its own norm for quantity m: counts it in the group's cohort, and
    // says whether the team (today, on this day of the calendar before, or as declared) moved
    // the same way, and how far this actor may go before it stands out from the team.
    TeamJudgement judge_team(ActorState& a, int m, double value) {
        TeamJudgement j;
        GroupState& g = groups[a.group_id];
        Today& t = a.today;
        if (g.today_day != t.day) return j;
        CohortMetric& c = g.cohort[m];
        const std::uint32_t key = a.name_id + 1;
        if (!(t.cohort_registered & (1u << m))) {
            t.cohort_registered |= static_cast<std::uint16_t>(1u << m);
            ++c.shifted;
        }
        std::array<float, kCohortSlots> others{};
        int n = 0;
        bool stored = false;
        for (int i = 0; i < kCohortSlots; ++i) {
            if (c.actor[i] == key) {
                c.value[i] = std::max(c.value[i], static_cast<float>(value));
                stored = true;
            } else if (c.actor[i] == 0 && !stored) {
                c.actor[i] = key;
                c.value[i] = static_cast<float>(value);
                stored = true;
            } else if (c.actor[i] != 0) {
                others[n++] = c.value[i];
            }
        }
        const std::uint32_t colleagues = g.today_actors > 0 ? g.today_actors - 1 : 0;
        j.others = c.shifted - 1;
        if (n > 0 && j.others >= cohort_needed(colleagues, kShiftRate)) {
            std::nth_element(others.begin(), others.begin() + n / 2, others.begin() + n);
            j.kind = TeamKind::cohort;
            j.reference = others[n / 2];
            if (m < kOwnMetricCount) {
                j.limit = kCohortRatio * j.reference;
                // Remembered once a quarter of the colleagues took part: a few members going
                // beyond on the same day by chance are no rhythm (and would crowd the table).
                if (4 * j.others >= colleagues)
                    remember_rhythm(g, t.day, static_cast<std::uint8_t>(m), j.reference);
            } else {
                // Rolling windows stay high for the window's length after a team's shift: that
                // is no rhythm, but the level every member's window now holds.
                const int w = m - kOwnMetricCount;
                const int length = m == kSubjects90 ? 90 : 30;
                g.window_team_level[w] =
                    g.window_team_until[w] >= t.day
                        ? std::max(g.window_team_level[w], static_cast<float>(j.reference))
                        : static_cast<float>(j.reference);
                g.window_team_until[w] = t.day + length;
                j.limit = kWindowTeamRatio * j.reference;
            }
            return j;
        }
        if (m >= kOwnMetricCount) {
            const int w = m - kOwnMetricCount;
            if (g.window_team_until[w] >= t.day && g.window_team_level[w] > 0) {
                j.kind = TeamKind::window;
                j.reference = g.window_team_level[w];
                j.limit = kWindowTeamRatio * j.reference;
            }
            return j;
        }
        if (const ActorState::Shift* past = personal_rhythm(a, m)) {
            j.kind = TeamKind::personal;
            j.personal_day = past->day;
            j.reference = past->value[m];
            j.limit = kPersonalRatio * j.reference;
            remember_shift(a, m, value, true);
            return j;
        }
        remember_shift(a, m, value, false);
        if (const Rhythm* r = due_rhythm(g, t.day, static_cast<std::uint8_t>(m))) {
            j.kind = TeamKind::rhythm;
            j.rhythm = r;
            j.reference = r->magnitude;
            j.limit = kCohortRatio * j.reference;
            return j;
        }
        if (t.norm[m] >= 0) {
            if (const DeclaredEvent* e = declared_event(a.group_id, t.day)) {
                j.kind = TeamKind::declared;
                j.event = e;
                j.reference = t.limit[m];
                j.limit = kKnownEventRatio * j.reference;
            }
        }
        return j;
    }

    static std::string team_text(const TeamJudgement& j, double value, bool integral,
                                 std::int32_t day) {
        const double times = value / std::max(j.reference, 1.0);
        switch (j.kind) {
            case TeamKind::cohort:
                return fmt::format(
                    "; {} colleagues went beyond their own norms for this today too (their median "
                    "{}): this is {:.1f} times theirs",
                    j.others, format_value(j.reference, integral), times);
            case TeamKind::rhythm:
                return fmt::format(
                    "; on {}, when the group's values rise to about {} (seen on {} such days): "
                    "this "
                    "is {:.1f} times that",
                    feature_text(j.rhythm->feature), format_value(j.reference, integral),
                    j.rhythm->seen, times);
            case TeamKind::declared:
                return fmt::format(
                    "; during the declared event '{}': {:.1f} times the value that alerts on "
                    "other days",
                    j.event->name, times);
            case TeamKind::window:
                return fmt::format(
                    "; the whole group's windows rose to about {} after a shift it made together: "
                    "this is {:.1f} times that",
                    format_value(j.reference, integral), times);
            case TeamKind::personal:
                return fmt::format(
                    "; this actor did about {} on the same day of the month {} days ago: this is "
                    "{:.1f} times that",
                    format_value(j.reference, integral), day - j.personal_day, times);
            case TeamKind::pace:
                return fmt::format(
                    "; {} colleagues work at {:.1f} times their usual pace today (a team-wide "
                    "shift): this is {:.1f} times the value that alerts at the usual pace",
                    j.others, j.pace, value / std::max(j.reference, 1.0));
            case TeamKind::none:
                break;
        }
        return std::string();
    }

    // ---- waiting for the team ------------------------------------------------------------------

    // Highly sensitive reads and permission denials are never held.
    static bool holdable_metric(int m) {
        return m != kSensitiveDay && m != kDeniedDay && m != kSensitive30;
    }

    // Only the day of a bulk statement (a COPY, or kColdBulkFloor rows and more) is held: that
    // is how a team's periodic run looks, and an insider who reads record by record is not
    // slowed down.
    bool may_hold(const ActorState& a) const {
        const Today& t = a.today;
        const bool bulk_today =
            event_is_bulk || t.copies > 0 || t.max_statement_rows >= kColdBulkFloor;
        if (!bulk_today || config.team_wait_minutes == 0 || held.size() >= kMaxHeld) return false;
        const GroupState& g = groups[a.group_id];
        return g.today_day == a.today.day && g.today_actors >= 4;
    }

    // Holds a signal (or strengthens the one already held for the same actor and kind).
    template <class Explain>
    void hold(ActorState& a, std::uint8_t kind, Detector d, double strength, double value,
              std::int64_t time_us, Explain&& explain) {
        for (Held& h : held) {
            if (h.actor == a.name_id && h.kind == kind && h.day == a.today.day) {
                if (strength > h.strength) {
                    h.strength = strength;
                    h.value = value;
                    h.time_us = time_us;
                    h.explanation = explain();
                }
                return;
            }
        }
        Held h;
        h.actor = a.name_id;
        h.kind = kind;
        h.detector = static_cast<std::uint8_t>(d);
        h.day = a.today.day;
        h.due_us = time_us + std::int64_t{config.team_wait_minutes} * 60 * kMicrosPerSecond;
        h.time_us = time_us;
        h.strength = strength;
        h.value = value;
        h.explanation = explain();
        next_due = std::min(next_due, h.due_us);
        held.push_back(std::move(h));
    }

    void release_due(std::int64_t now_us, std::vector<Alert>& out) {
        if (held.empty() || now_us < next_due) return;
        next_due = INT64_MAX;
        for (std::size_t i = 0; i < held.size();) {
            if (held[i].due_us > now_us) {
                next_due = std::min(next_due, held[i].due_us);
                ++i;
                continue;
            }
            Held h = std::move(held[i]);
            held[i] = std::move(held.back());
            held.pop_back();
            if (settle(h, out)) {
                ++held_raised;
            } else {
                ++held_dropped;
            }
        }
    }

    // The wait is over: if enough colleagues made the same shift meanwhile, the signal was the
    // team's (unless this actor went 5x past them); otherwise it is raised as it was.
    // Returns whether it was raised (false: dropped as the team's).
    bool settle(const Held& h, std::vector<Alert>& out) {
        ActorState& a = actors[h.actor];
        GroupState& g = groups[a.group_id];
        double strength = h.strength;
        std::string explanation = h.explanation;
        if (g.today_day == h.day && a.today.day == h.day) {
            const std::uint32_t colleagues = g.today_actors > 0 ? g.today_actors - 1 : 0;
            if (h.kind < kRhythmCategory) {
                const CohortMetric& c = g.cohort[h.kind];
                const std::uint32_t others =
                    c.shifted - ((a.today.cohort_registered >> h.kind) & 1u);
                std::array<float, kCohortSlots> values{};
                int n = 0;
                for (int i = 0; i < kCohortSlots; ++i) {
                    if (c.actor[i] != 0 && c.actor[i] != a.name_id + 1) values[n++] = c.value[i];
                }
                const bool window = h.kind >= kOwnMetricCount;
                const int w = window ? h.kind - kOwnMetricCount : 0;
                TeamJudgement j;
                if (n > 0 && others >= cohort_needed(colleagues, kShiftRate)) {
                    std::nth_element(values.begin(), values.begin() + n / 2, values.begin() + n);
                    j.kind = TeamKind::cohort;
                    j.others = others;
                    j.reference = values[n / 2];
                } else if (window && g.window_team_until[w] >= h.day &&
                           g.window_team_level[w] > 0) {
                    j.kind = TeamKind::window;
                    j.reference = g.window_team_level[w];
                }
                // Colleagues ran bulk statements too, but this quantity moved less for them: the
                // team's bulk day, unless a colleague's value says how far is too far.
                const std::uint32_t bulk_others =
                    g.today_bulk_actors - (a.today.bulk_counted ? 1u : 0u);
                if (j.kind == TeamKind::none &&
                    bulk_others >= cohort_needed(colleagues, kShiftRate))
                    return false;
                if (j.kind != TeamKind::none) {
                    j.limit = (window ? kWindowTeamRatio : kCohortRatio) * j.reference;
                    if (h.value < j.limit) return false;
                    const double weight = kMetrics[h.kind].weight;
                    strength = 1 - std::exp2(-weight * (1 + std::log2(h.value / j.limit)));
                    explanation += team_text(j, h.value, kMetrics[h.kind].integral, h.day);
                }
            } else {
                const int cat = h.kind - kRhythmCategory;
                const std::uint64_t bit = std::uint64_t{1} << cat;
                if (a.today.team_categories & bit) return false;
                const std::uint32_t others =
                    g.cohort_categories[cat] > 0 ? g.cohort_categories[cat] - 1 : 0;
                if (others >= cohort_needed(colleagues, kRareRate)) {
                    a.today.team_categories |= bit;
                    if (4 * others >= colleagues) remember_rhythm(g, h.day, h.kind, others);
                    return false;
                }
            }
        }
        explanation +=
            fmt::format(" (held {} minutes for colleagues making the same shift; none did)",
                        config.team_wait_minutes);
        raise(a, static_cast<Detector>(h.detector), strength, h.time_us, out,
              [&] { return explanation; });
        return true;
    }

    void count_excused(Today& t, int m) {
        if (t.excused_mask & (1u << m)) return;
        t.excused_mask |= static_cast<std::uint16_t>(1u << m);
        ++team_excused;
    }

    void check_metric(ActorState& a, int m, double value, std::int64_t time_us,
                      std::vector<Alert>& out) {
        Today& t = a.today;
        // Without any norm, bulk work is judged against colleagues doing bulk work the same day.
        const bool cold_bulk = t.norm[m] < 0 && is_cold_bulk_metric(m) && value >= kColdBulkFloor;
        if (!(value >= t.limit[m]) && !cold_bulk) return;
        const MetricSpec& spec = kMetrics[m];
        TeamJudgement team = judge_team(a, m, value);
        if (cold_bulk && team.kind != TeamKind::cohort) return;
        if (team.kind == TeamKind::none && t.norm[m] >= 0) {
            // Nobody else went beyond a norm yet, but the team may be working at a higher pace
            // record by record: then the limit moves with the pace.
            std::uint32_t counted = 0;
            const double pace = team_pace(a, m, time_us, counted);
            if (pace >= (m < kOwnMetricCount ? kPaceDaily : kPaceWindow)) {
                team.kind = TeamKind::pace;
                team.pace = pace;
                team.others = counted;
                team.reference = ordinary_limit(m, t.norm[m]);
                if (m == kSensitive30)
                    team.reference = std::min<double>(team.reference, t.role_limit30);
                team.limit = std::min(pace, kCohortRatio) * team.reference;
                if (value < team.limit) {
                    t.limit[m] = static_cast<float>(value * 1.1 + 1);  // look again later
                    count_excused(t, m);
                    return;
                }
                // Beyond even the team's pace. On the day of a bulk statement, colleagues may
                // still follow: judged as on any day, so that the signal can wait for them.
                if (holdable_metric(m) && may_hold(a)) team = TeamJudgement{};
            }
        }
        double strength;
        if (team.kind != TeamKind::none) {
            // The team moved: what stands out is going far beyond the team (and never less
            // than what would alert on an ordinary day).
            const double limit =
                t.norm[m] >= 0 ? std::max<double>(team.limit, t.limit[m]) : team.limit;
            if (value < limit) {
                count_excused(t, m);
                return;
            }
            strength = 1 - std::exp2(-spec.weight * (1 + std::log2(value / limit)));
        } else {
            const double norm = t.norm[m];
            // Excess over the norm, as a ratio or in units of the norm's own spread (p99 -
            // median), whichever says more: tight norms (peers' 30-day windows) make +30%
            // remarkable. A wide norm (median far below the percentile: heavy-tailed work) needs
            // a larger ratio.
            const double spread = std::max<double>(t.norm[m] - t.median[m], spec.min_excess);
            const double log_width = std::log2((norm + 1) / (t.median[m] + 1));
            const double ratio = std::log2((value + 1) / (norm + 1)) *
                                 std::min(1.0, 3.0 / std::max(log_width, 1e-9));
            // Window sums are tight (a month averages days out), so a spread there means more.
            const double spreads = (value - norm) / ((m < kOwnMetricCount ? 4 : 2) * spread);
            double excess = norm >= 0 ? std::max(ratio, spreads) : 0;
            if (m == kSensitive30 && value >= t.role_limit30) {
                // Beyond the role's typical window (the ordinary norm may be the insider's own).
                excess = std::max(excess, 1 + (value - t.role_limit30) / (2 * t.role_spread30));
            }
            strength = 1 - std::exp2(-spec.weight * excess);
        }
        // Look again only after another quarter of growth; the band rule handles escalation.
        t.limit[m] = static_cast<float>(value * 1.25 + 1);
        if (team.kind == TeamKind::none && holdable_metric(m) && may_hold(a)) {
            hold(a, static_cast<std::uint8_t>(m), spec.detector, strength, value, time_us,
                 [&] { return metric_text(a, m, value); });
            return;
        }
        raise(a, spec.detector, strength, time_us, out, [&] {
            return metric_text(a, m, value) + team_text(team, value, spec.integral, t.day);
        });
    }

    std::string metric_text(const ActorState& a, int m, double value) const {
        const Today& t = a.today;
        const MetricSpec& spec = kMetrics[m];
        {
            const std::string v = format_value(value, spec.integral);
            const std::string norms = norms_text(a, m);
            switch (m) {
                case kSubjectsDay:
                    return fmt::format("read records of {} distinct subjects today; {}", v, norms);
                case kSensitiveDay:
                    return fmt::format("read {} of {} distinct subjects today; {}",
                                       sensitive_names(t.sensitive_category_mask), v, norms);
                case kRowsDay:
                    return fmt::format("read {} rows of labelled columns today; {}", v, norms);
                case kStatementRows:
                    return fmt::format(
                        "read {} rows in one statement (largest statement of a day: {})", v, norms);
                case kSessionRows:
                    return fmt::format(
                        "read {} rows in one session today (largest session of a day: {})", v,
                        norms);
                case kCopyDay:
                    return fmt::format("ran COPY on labelled columns {} times today; {}", v, norms);
                case kUnexplainedDay:
                    return fmt::format(
                        "looked up {} subjects today with no declared business relation in the "
                        "last {} days; {}",
                        v, config.relation_ttl_days, norms);
                case kDeniedDay:
                    return fmt::format("was denied {} reads of labelled columns today; {}", v,
                                       norms);
                case kSubjects30:
                case kSubjects90: {
                    const int window = m == kSubjects30 ? 30 : 90;
                    const HyperLogLog<8>& hll = m == kSubjects30 ? a.window30 : a.window90;
                    return fmt::format(
                        "read records of about {:.0f} distinct subjects in the last {} days; {} "
                        "(peers at the same point of their {}-day windows)",
                        hll.estimate(), covered_days(a, t.day, window), norms, window);
                }
                case kUnexplainedShare30:
                    return fmt::format(
                        "{:.1f}% of the subjects looked up in the last {} days had no declared "
                        "business relation ({} of {} subject-days); {} (in per mille; peers at the "
                        "same point of their 30-day windows)",
                        value / 10, covered_days(a, t.day, 30), window_unexplained(a),
                        window_sum(a, &ActorState::subject_block), norms);
                case kUnexplained30:
                    return fmt::format(
                        "looked up subjects with no declared business relation on {} subject-days "
                        "in the last {} days; {} (peers at the same point of their 30-day windows)",
                        v, covered_days(a, t.day, 30), norms);
                case kSensitive30: {
                    std::string text = fmt::format(
                        "read {} of subjects on {} subject-days in the last {} days; {} (peers at "
                        "the same point of their 30-day windows)",
                        sensitive_names(sensitive_mask), v, covered_days(a, t.day, 30), norms);
                    if (value >= t.role_limit30) {
                        text += fmt::format(
                            "; at the role's daily rate about {:.1f} were expected over this "
                            "actor's {:.0f} active days in the window (limit {:.0f})",
                            t.role_expected30, active_days_in_window(a) + 1, t.role_limit30);
                    }
                    return text;
                }
            }
            return std::string();
        }
    }

    // The sequential test of highly sensitive reads against the role's rate, with today's count so
    // far (today's whole expected count is already subtracted: it cannot fire early by the hour).
    void check_sensitive_run(ActorState& a, std::uint32_t count, std::int64_t time_us,
                             std::vector<Alert>& out) {
        Today& t = a.today;
        if (t.run_fired || (t.run_step <= 0 && t.days_step <= 0)) return;
        const double run = t.run_step > 0 ? a.sensitive_run + count * t.run_step - t.run_cost : 0;
        // In days: today already has such a read (count >= 1).
        const double days_run = t.days_step > 0 ? a.days_run + t.days_step : 0;
        if (run < kRunThreshold && days_run < kRunThreshold) return;
        // Colleagues beyond their norms of highly sensitive reads today, more than chance: the
        // team's work has changed (a new screen shows the code), not this member's.
        const GroupState& g = groups[a.group_id];
        if (g.today_day == t.day) {
            const std::uint32_t colleagues = g.today_actors > 0 ? g.today_actors - 1 : 0;
            std::uint32_t others = 0;
            for (int m : {kSensitiveDay, kSensitive30}) {
                const std::uint32_t shifted = g.cohort[m].shifted;
                const bool self = (t.cohort_registered & (1u << m)) != 0;
                others = std::max(others, shifted - (self && shifted > 0 ? 1 : 0));
            }
            if (others >= cohort_needed(colleagues, kShiftRate)) return;
        }
        t.run_fired = true;
        if (run >= kRunThreshold) {
            const double strength =
                1 - std::exp2(-kMetrics[kSensitive30].weight * (run / kRunThreshold));
            const std::uint32_t days = a.run_days + 1;
            const std::uint32_t subjects = a.run_subjects + count;
            const CivilDate since = civil_from_days(a.run_since == kNoDay ? t.day : a.run_since);
            raise(a, Detector::sensitive_categories, strength, time_us, out, [&] {
                return fmt::format(
                    "read {} of subjects on {} subject-days over {} active days since "
                    "{:04d}-{:02d}-{:02d}, where the role's rate of {:.2f} a day expects about "
                    "{:.1f}; the evidence for a rate {:.1f} a day higher has grown without a break "
                    "to a likelihood ratio of {:.0f} (alerts at {:.0f})",
                    sensitive_names(t.sensitive_category_mask), subjects, days, since.year,
                    since.month, since.day, t.run_rate, days * t.run_rate, kRunShift, std::exp(run),
                    std::exp(kRunThreshold));
            });
            return;
        }
        const double strength =
            1 - std::exp2(-kMetrics[kSensitive30].weight * (days_run / kRunThreshold));
        const std::uint32_t days = a.days_run_days + 1u;
        const std::uint32_t hits = a.days_run_hits + 1u;
        const CivilDate since =
            civil_from_days(a.days_run_since == kNoDay ? t.day : a.days_run_since);
        raise(a, Detector::sensitive_categories, strength, time_us, out, [&] {
            return fmt::format(
                "read {} on {} of {} active days since {:04d}-{:02d}-{:02d}, where the role reads "
                "them on {:.0f}% of its active days (about {:.1f} of {} expected); the evidence "
                "for reading them on at least half of the days has grown without a break to a "
                "likelihood ratio of {:.0f} (alerts at {:.0f})",
                sensitive_names(t.sensitive_category_mask), hits, days, since.year, since.month,
                since.day, 100.0 * t.days_share, days * t.days_share, days, std::exp(days_run),
                std::exp(kRunThreshold));
        });
    }

    // Cold start: neither the actor nor its peers have a learned norm for sensitive reads yet
    // (a fresh installation, a new group). Colleagues active the same day stand in for the norm:
    // one person reading many people's verification codes while (almost) none of the others
    // read any is the Nanning clerk's pattern, and it must not wait weeks for a baseline.
    void check_cold_sensitive(ActorState& a, std::uint32_t count, std::int64_t time_us,
                              std::vector<Alert>& out) {
        const GroupState& g = groups[a.group_id];
        const Today& t = a.today;
        if (g.today_day != t.day || count < kColdSensitiveMin) return;
        // Colleagues must have done enough work today for "they read none" to mean something:
        // early in the morning nobody has read anything yet.
        const std::uint32_t others = g.today_actors > 0 ? g.today_actors - 1 : 0;
        const std::uint32_t statements = g.today_statements - std::min(g.today_statements, t.statements);
        const std::uint32_t sensitive =
            g.today_sensitive_statements - std::min(g.today_sensitive_statements, t.sensitive_statements);
        if (others < kColdMinColleagues || statements < kColdMinStatements ||
            sensitive * 100 > statements) {
            return;
        }
        const double strength =
            std::min(0.95, 1 - std::exp2(-(static_cast<double>(count) - kColdSensitiveMin / 2.0) /
                                         kColdSensitiveMin));
        raise(a, Detector::sensitive_categories, strength, time_us, out, [&] {
            return fmt::format(
                "read {} of {} subjects today; no norm learned yet for this actor or its peers, "
                "and {} of {} colleagues' {} statements today read any",
                sensitive_names(t.sensitive_category_mask), count, sensitive, others, statements);
        });
    }

    // The colleagues looked up this category without a ticket far more often today than their
    // rate says for this hour (a reorganisation that adds the category to every screen, a
    // campaign): the team's work changed, and what it reads without a ticket is not one member's
    // secret. Counted over the whole team: such lookups are too rare for a per-person median.
    bool team_reads_unexplained(const ActorState& a, int c, double rate, std::int64_t time_us) {
        const GroupState& g = groups[a.group_id];
        if (g.today_day != a.today.day) return false;
        const int how = clock(time_us).how;
        double seen = 0, expected = 0;
        std::uint32_t readers = 0;
        for (const ActorState& o : actors) {
            if (o.group_id != a.group_id || o.name_id == a.name_id || o.today.day != a.today.day ||
                o.today.statements == 0)
                continue;
            const double n = o.today.unexplained_by_category[c];
            seen += n;
            readers += n > 0;
            expected += rate * day_done(o, how);
        }
        return readers >= 2 && seen >= 2 * expected + kUnexplainedFloor;
    }

    // Lookups without a declared reason of a category the role reads with one (see
    // kUncommonUnexplained): per category, today's count against the role's daily rate.
    void check_unexplained_categories(ActorState& a, std::uint64_t categories, std::uint32_t added,
                                      std::int64_t time_us, std::vector<Alert>& out) {
        Today& t = a.today;
        const GroupState& g = groups[a.group_id];
        const bool peers_known = g.category_actor_days >= config.min_peer_days;
        for (int c = 0; c < 64; ++c) {
            if (!(categories & (std::uint64_t{1} << c))) continue;
            std::uint8_t& n = t.unexplained_by_category[c];
            n = static_cast<std::uint8_t>(std::min<std::uint32_t>(255, n + added));
            if (!peers_known) continue;
            const double rate = g.unexplained_category[c] / g.category_actor_days;
            if (rate >= kUncommonUnexplained) continue;
            const double limit = std::max(kUnexplainedFloor, poisson_upper(rate, kUnexplainedTail));
            if (n < limit) continue;
            if (team_reads_unexplained(a, c, rate, time_us)) continue;
            const std::uint32_t count = n;
            const double strength = std::min(0.9, 0.6 + 0.1 * (count - limit));
            raise(a, Detector::no_business_reason, strength, time_us, out, [&] {
                return fmt::format(
                    "looked up {} of {} subjects today with no declared business relation; peers "
                    "look up {} without one {:.2f} times per actor-day",
                    category_names.name(static_cast<std::uint32_t>(c)), count,
                    category_names.name(static_cast<std::uint32_t>(c)), rate);
            });
        }
    }

    // A category the actor's role (almost) never reads, such as travel records in a call centre,
    // is judged like a highly sensitive one: by how many people's records it was read for today.
    void check_rare_categories(ActorState& a, std::uint64_t categories, const AccessEvent& e,
                               std::int64_t time_us, std::vector<Alert>& out) {
        Today& t = a.today;
        const GroupState& g = groups[a.group_id];
        const bool own_known = a.active_days >= config.min_history_days;
        const bool peer_known = g.category_actor_days >= config.min_peer_days;
        const std::uint64_t fresh = categories & ~t.categories_checked;
        if (fresh != 0 && (own_known || peer_known)) {
            t.categories_checked |= fresh;
            for (int c = 0; c < 64; ++c) {
                if (!(fresh & (std::uint64_t{1} << c))) continue;
                const double own =
                    own_known ? static_cast<double>(a.category_days[c]) / a.active_days : 0;
                const double peer = peer_known ? g.category_days[c] / g.category_actor_days : 0;
                if (own < 0.02 && peer < 0.01) t.rare_categories |= std::uint64_t{1} << c;
            }
        }
        const std::uint64_t rare_now = categories & t.rare_categories & ~t.team_categories;
        if (!rare_now) return;
        excuse_team_categories(a, rare_now);
        if (!(categories & t.rare_categories & ~t.team_categories)) return;
        t.rare_subjects += static_cast<std::uint32_t>(std::max<std::size_t>(e.subjects.size, 1));
        add_evidence(a, Detector::sensitive_categories, e.event_id);
        const double strength = std::min(0.8, 0.35 + 0.1 * std::log2(1.0 + t.rare_subjects));
        const std::uint64_t rare = t.rare_categories & ~t.team_categories & t.categories_read;
        int c = 0;
        while (c < 63 && !(rare & (std::uint64_t{1} << c))) ++c;
        auto explain = [&] {
            return fmt::format(
                "read {} of {} subjects today, a category this actor read on {} of {} active days "
                "and peers on {:.1f}% of their actor-days",
                sensitive_names(rare), t.rare_subjects, a.category_days[c], a.active_days,
                g.category_actor_days > 0 ? 100.0 * g.category_days[c] / g.category_actor_days
                                          : 0.0);
        };
        // Highly sensitive categories are never held: codes nobody else reads are news at once.
        if (!(rare & sensitive_mask) && may_hold(a)) {
            hold(a, static_cast<std::uint8_t>(kRhythmCategory + c), Detector::sensitive_categories,
                 strength, t.rare_subjects, time_us, explain);
            return;
        }
        raise(a, Detector::sensitive_categories, strength, time_us, out, explain);
    }

    static void learn_path(GroupState& g, std::uint32_t relation, std::uint8_t category) {
        int weakest = 0;
        for (int i = 0; i < kGroupPaths; ++i) {
            SensitivePath& p = g.paths[i];
            if (p.relation == relation && p.category == category) {
                p.days += 1;
                return;
            }
            if (p.days < g.paths[weakest].days) weakest = i;
        }
        g.paths[weakest] = {relation, category, 1};
    }

    static float path_days(const GroupState& g, std::uint32_t relation, int category) {
        for (const SensitivePath& p : g.paths) {
            if (p.relation == relation && p.category == category) return p.days;
        }
        return 0;
    }

    // Highly sensitive categories read from a relation the peers (almost) never read them from,
    // where the category itself is not rare for the role (that is check_rare_categories' case).
    void check_sensitive_paths(ActorState& a, std::uint64_t categories, const AccessEvent& e,
                               std::int64_t time_us, std::vector<Alert>& out) {
        Today& t = a.today;
        GroupState& g = groups[a.group_id];
        if (e.relation.empty()) return;
        const std::uint32_t relation = relation_fp.of(e.relation);
        const bool peers_known = g.category_actor_days >= config.min_peer_days;
        const std::uint32_t colleagues =
            g.today_day == t.day && g.today_actors > 0 ? g.today_actors - 1 : 0;
        bool rare = false;
        int rare_category = -1;
        for (int c = 0; c < 64; ++c) {
            if (!(categories & (std::uint64_t{1} << c))) continue;
            // Today's paths, for teaching and for the colleagues' count.
            int i = 0;
            while (i < kTodayPaths && t.path_relation[i] != 0 &&
                   !(t.path_relation[i] == relation && t.path_category[i] == c)) {
                ++i;
            }
            std::uint32_t others = 0;
            if (g.today_day == t.day) {
                int j = 0;
                while (j < kTodayPaths && g.today_paths[j].relation != 0 &&
                       !(g.today_paths[j].relation == relation && g.today_paths[j].category == c)) {
                    ++j;
                }
                const bool first_today = i < kTodayPaths && t.path_relation[i] == 0;
                if (j < kTodayPaths) {
                    SensitivePath& p = g.today_paths[j];
                    if (p.relation == 0) p = {relation, static_cast<std::uint8_t>(c), 0};
                    if (first_today) p.days += 1;
                    const float self = i < kTodayPaths ? 1.0f : 0.0f;  // counted above
                    others = static_cast<std::uint32_t>(std::max(0.0f, p.days - self));
                }
            }
            if (i < kTodayPaths && t.path_relation[i] == 0) {
                t.path_relation[i] = relation;
                t.path_category[i] = static_cast<std::uint8_t>(c);
            }
            if (!peers_known || (t.rare_categories & (std::uint64_t{1} << c))) continue;
            if (path_days(g, relation, c) >= kRareRate * g.category_actor_days) continue;
            // Colleagues reading it the same way today, more than chance: a new screen, the
            // team's way of working now (learned from tomorrow on).
            if (others >= cohort_needed(colleagues, kRareRate)) continue;
            rare = true;
            rare_category = c;
        }
        if (!rare) return;
        if (a.path_last_day == kNoDay || t.day - a.path_last_day > kPathMemoryDays) {
            a.path_subjects = 0;
            a.path_days = 0;
        }
        if (a.path_last_day != t.day) ++a.path_days;
        a.path_last_day = t.day;
        a.path_subjects += static_cast<std::uint32_t>(std::max<std::size_t>(e.subjects.size, 1));
        const double strength = std::min(0.8, 0.35 + 0.1 * std::log2(1.0 + a.path_subjects));
        const int c = rare_category;
        add_evidence(a, Detector::sensitive_categories, e.event_id);
        raise(a, Detector::sensitive_categories, strength, time_us, out, [&] {
            return fmt::format(
                "read {} of {} subjects on {} days from {}, where peers read it on {:.1f}% of "
                "their actor-days but from this relation on {:.1f}%",
                category_names.name(static_cast<std::uint32_t>(c)), a.path_subjects, a.path_days,
                e.relation, 100.0 * g.category_days[c] / g.category_actor_days,
                100.0 * path_days(g, relation, c) / g.category_actor_days);
        });
    }

    // A category rare for the actor and its peers is no news when enough colleagues read it
    // today too, when the group read it on this day of the calendar before, or during a declared
    // event (except the highly sensitive categories, which a declaration does not excuse).
    void excuse_team_categories(ActorState& a, std::uint64_t rare) {
        Today& t = a.today;
        GroupState& g = groups[a.group_id];
        if (g.today_day != t.day) return;
        const std::uint32_t colleagues = g.today_actors > 0 ? g.today_actors - 1 : 0;
        const DeclaredEvent* event = declared_event(a.group_id, t.day);
        for (int c = 0; c < 64; ++c) {
            const std::uint64_t bit = std::uint64_t{1} << c;
            if (!(rare & bit)) continue;
            const std::uint32_t others =
                g.cohort_categories[c] > 0 ? g.cohort_categories[c] - 1 : 0;
            const auto kind = static_cast<std::uint8_t>(kRhythmCategory + c);
            const bool counted = (t.team_categories & bit) != 0;
            if (others >= cohort_needed(colleagues, kRareRate)) {
                t.team_categories |= bit;
                if (!counted) ++team_excused;
                if (4 * others >= colleagues) remember_rhythm(g, t.day, kind, others);
            } else if (due_rhythm(g, t.day, kind) != nullptr ||
                       (event != nullptr && !(bit & sensitive_mask))) {
                t.team_categories |= bit;
                if (!counted) ++team_excused;
            }
        }
    }

    // ---- hours, cadence, applications --------------------------------------------------------

    static float window_share(const float* hours, float total, int how) {
        const float around = hours[(how + kHoursPerWeek - 1) % kHoursPerWeek] + hours[how] +
                             hours[(how + 1) % kHoursPerWeek];
        return around / total;
    }

    void track_hour(ActorState& a, const Clock& c) {
        if (c.abs_hour == a.last_abs_hour) return;
        a.last_abs_hour = c.abs_hour;
        GroupState& g = groups[a.group_id];
        std::array<float, kHoursPerWeek> own{};
        for (int i = 0; i < kHoursPerWeek; ++i) own[i] = a.hours[i];
        if (g.first_day == kNoDay) g.first_day = c.day;
        // A week-long profile needs at least two weeks of it.
        const bool own_known = a.hours_total >= 80 && c.day - a.first_day >= 14;
        const bool peer_known = g.hours_total >= 400 && c.day - g.first_day >= 14;
        const float own_share = own_known ? window_share(own.data(), a.hours_total, c.how) : 0;
        const float peer_share =
            peer_known ? window_share(g.hours.data(), g.hours_total, c.how) : 0;
        const bool unusual = (own_known || peer_known) && own_share < 0.004f && peer_share < 0.004f;
        a.today.unusual_abs_hour = unusual ? c.abs_hour : -1;
        a.today.unusual_how = unusual ? c.how : -1;
        if (unusual) {
            a.today.unusual_own_share = own_share;
            a.today.unusual_peer_share = peer_share;
            a.today.unusual_own_hours = a.hours_total;
        }
        if (a.hours[c.how] < 0xffff) ++a.hours[c.how];
        if (++a.hours_total > 4000) {  // halve: bounded counters that favour recent habits
            a.hours_total = 0;
            for (auto& h : a.hours) {
                h = static_cast<std::uint16_t>(h / 2);
                a.hours_total += h;
            }
        }
        g.hours[c.how] += 1;
        g.hours_total += 1;
        if (g.hours_total > 1e6f) {
            for (float& h : g.hours) h *= 0.5f;
            g.hours_total *= 0.5f;
        }
    }

    std::string hour_text(const ActorState& a) const {
        static constexpr const char* kDays[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                                "Friday", "Saturday", "Sunday"};
        const Today& t = a.today;
        const int how = t.unusual_how;
        return fmt::format(
            "read {} subjects' records on {} between {:02d}:00 and {:02d}:00, hours that hold "
            "{:.1f}% of this actor's {} active hours and {:.1f}% of the peers' (the hour and its "
            "neighbours)",
            t.unusual_subjects, kDays[how / 24], how % 24, (how % 24 + 1) % 24,
            t.unusual_own_share * 100, t.unusual_own_hours, t.unusual_peer_share * 100);
    }

    bool machine_normal(const ActorState& a) const {
        const GroupState& g = groups[a.group_id];
        if (g.service) return true;
        // Nothing known yet about the account or its peers: no basis to call it non-human.
        if (a.tracked_days < 10 && g.tracked_days < config.min_peer_days) return true;
        if (a.tracked_days >= 10 && a.machine_days >= 0.2f * a.tracked_days) return true;
        return g.tracked_days >= config.min_peer_days && g.machine_days >= 0.2f * g.tracked_days;
    }

    void track_cadence(ActorState& a, std::int64_t time_us, std::uint64_t event_id,
                       std::vector<Alert>& out) {
        // Gaps are measured between bursts: one lookup often runs a few statements at once.
        if (a.last_burst_us == 0) {
            a.last_burst_us = time_us;
            return;
        }
        const double gap = static_cast<double>(time_us - a.last_burst_us) / kMicrosPerSecond;
        if (gap < 1.0) return;
        a.last_burst_us = time_us;
        if (gap > 1800) {
            a.gaps.reset();
            a.run_len = 0;
            return;
        }
        a.gaps.add(gap, 0.05);
        ++a.run_len;
        add_evidence(a, Detector::machine_like_access, event_id);
        if (a.run_len < 50 || a.gaps.mean > 600) return;
        const double cv = std::sqrt(std::max(0.0f, a.gaps.variance)) / a.gaps.mean;
        if (cv >= 0.3) return;
        Today& t = a.today;
        t.machine_like = true;
        t.machine_run = a.run_len;
        t.machine_mean_gap = a.gaps.mean;
        t.machine_cv = static_cast<float>(cv);
        if (machine_normal(a)) return;
        raise(a, Detector::machine_like_access, 0.6, time_us, out, [&] {
            return fmt::format(
                "{} consecutive reads at a steady {:.1f} s interval (variation {:.0f}%), a "
                "machine-like cadence on an account whose own and peers' history is human",
                t.machine_run, t.machine_mean_gap, t.machine_cv * 100);
        });
    }

    static int find_or_replace(std::array<std::uint32_t, kAppSlots>& fps,
                               std::array<std::uint16_t, kAppSlots>& uses, std::uint32_t fp,
                               bool& is_new) {
        int weakest = 0;
        for (int i = 0; i < kAppSlots; ++i) {
            if (fps[i] == fp) {
                is_new = false;
                if (uses[i] < 0xffff) ++uses[i];
                return i;
            }
            if (uses[i] < uses[weakest]) weakest = i;
        }
        is_new = true;
        fps[weakest] = fp;
        uses[weakest] = 1;
        return weakest;
    }

    void track_origin(ActorState& a, const AccessEvent& e, std::int64_t time_us,
                      std::vector<Alert>& out) {
        const bool warm = a.active_days >= config.min_history_days;
        bool new_client = false;
        if (!e.client_addr.empty()) {
            find_or_replace(a.clients, a.client_uses, client_fp.of(e.client_addr), new_client);
        }
        if (e.application.empty()) return;
        const std::uint32_t fp = application_fp.of(e.application);
        bool new_app = false;
        const int slot = find_or_replace(a.apps, a.app_uses, fp, new_app);
        a.today.apps_used_mask |= static_cast<std::uint8_t>(1u << slot);
        if (!warm || !new_app || groups[a.group_id].service) return;
        const GroupState& g = groups[a.group_id];
        double peer_days = 0;
        for (int i = 0; i < kGroupAppSlots; ++i) {
            if (g.apps[i] == fp) peer_days = g.app_days[i];
        }
        const double share = g.actor_days > 0 ? peer_days / g.actor_days : 0;
        if (share >= 0.02) return;
        add_evidence(a, Detector::machine_like_access, e.event_id);
        raise(a, Detector::machine_like_access, new_client ? 0.6 : 0.45, time_us, out, [&] {
            std::string app;
            for (char ch : e.application.substr(0, 40)) app += (ch >= 32 && ch < 127) ? ch : '?';
            return fmt::format(
                "first use of application '{}' after {} active days{}; peers used it on {:.1f}% "
                "of their actor-days",
                app, a.active_days, new_client ? ", from a client address new to this actor" : "",
                share * 100);
        });
    }

    void check_departed_dormant(ActorState& a, std::int64_t time_us, std::int64_t previous_us,
                                std::uint64_t event_id, std::vector<Alert>& out) {
        if (a.departed && time_us >= a.departed_time_us) {
            add_evidence(a, Detector::departed_or_dormant, event_id);
            const double days = static_cast<double>(time_us - a.departed_time_us) /
                                (kMicrosPerSecond * kSecondsPerDay);
            raise(a, Detector::departed_or_dormant, 0.95, time_us, out, [&] {
                return fmt::format("activity {:.1f} days after the account was marked departed",
                                   days);
            });
            return;
        }
        if (previous_us == 0 || a.active_days < config.min_history_days) return;
        const double silent =
            static_cast<double>(time_us - previous_us) / (kMicrosPerSecond * kSecondsPerDay);
        if (silent < config.dormant_days) return;
        add_evidence(a, Detector::departed_or_dormant, event_id);
        raise(a, Detector::departed_or_dormant, 0.55, time_us, out, [&] {
            return fmt::format(
                "first activity after {:.0f} days of silence (dormancy threshold {} days, {} "
                "active days before)",
                silent, config.dormant_days, a.active_days);
        });
    }

    // ---- events ----------------------------------------------------------------------------

    void observe_access(const AccessEvent& e, std::vector<Alert>& out) {
        release_due(e.time_us, out);
        event_is_bulk = e.command == Command::copy || e.rows >= kColdBulkFloor;
        ActorState& a = actor(e.actor, e.peer_group);
        const std::int64_t previous = a.last_time_us;
        const std::int64_t time_us = std::max(e.time_us, previous);
        const Clock c = clock(time_us);
        enter_day(a, c.day);
        a.last_time_us = time_us;
        Today& t = a.today;
        check_departed_dormant(a, time_us, previous, e.event_id, out);
        track_hour(a, c);

        if (e.status == AccessStatus::denied) {
            ++t.denied;
            add_evidence(a, Detector::login_abuse, e.event_id);
            check_metric(a, kDeniedDay, t.denied, time_us, out);
            return;
        }
        if (e.status != AccessStatus::ok) return;
        // Colleagues are those who read something today (a login alone does not count).
        if (t.statements == 0 && groups[a.group_id].today_day == c.day) ++groups[a.group_id].today_actors;
        if (t.statements == 0) {
            std::uint8_t& days =
                a.active_block[block_slot(static_cast<std::int32_t>(floor_div(c.day, kBlockDays)))];
            if (days < 255) ++days;
        }
        ++t.statements;
        if (event_is_bulk && !t.bulk_counted) {
            t.bulk_counted = true;
            if (GroupState& g = groups[a.group_id]; g.today_day == c.day) ++g.today_bulk_actors;
        }
        track_cadence(a, time_us, e.event_id, out);
        track_origin(a, e, time_us, out);

        const std::uint64_t categories = category_mask(e.categories);
        const bool sensitive = (categories & sensitive_mask) != 0;
        if (sensitive) t.sensitive_category_mask |= categories & sensitive_mask;
        t.sensitive_statements += sensitive;
        if (GroupState& g = groups[a.group_id]; g.today_day == c.day) {
            ++g.today_statements;
            g.today_sensitive_statements += sensitive;
        }
        if (const std::uint64_t first_today = categories & ~t.categories_read; first_today != 0) {
            if (GroupState& g = groups[a.group_id]; g.today_day == c.day) {
                for (int bit = 0; bit < 64; ++bit) {
                    if ((first_today >> bit) & 1u) ++g.cohort_categories[bit];
                }
            }
        }
        t.categories_read |= categories;
        check_rare_categories(a, categories, e, time_us, out);
        if (sensitive) check_sensitive_paths(a, categories & sensitive_mask, e, time_us, out);
        const bool check_relations = relations_apply(a);
        const bool unusual = t.unusual_abs_hour == c.abs_hour;
        const std::int32_t block = static_cast<std::int32_t>(floor_div(c.day, kBlockDays));
        HyperLogLog<8>& block_hll = a.blocks[block_slot(block)];
        bool new_subject = false, new_window = false, new_sensitive = false,
             new_unexplained = false;
        std::uint32_t unexplained_here = 0;
        for (std::string_view s : e.subjects) {
            const std::uint64_t h = hash_bytes(s);
            new_subject |= t.subjects.add(h);
            block_hll.add(h);
            new_window |= a.window30.add(h);
            new_window |= a.window90.add(h);
            if (sensitive) new_sensitive |= t.sensitive.add(h);
            if (check_relations &&
                !relations.covers(mix64(h ^ (std::uint64_t{a.name_id} << 1)), c.day)) {
                new_unexplained |= t.unexplained.add(h);
                ++unexplained_here;  // per category read, not per distinct subject of the day
            }
        }
        if (unusual) t.unusual_subjects += static_cast<std::uint32_t>(e.subjects.size);

        if (new_subject) {
            add_evidence(a, Detector::distinct_subjects, e.event_id);
            const auto count = static_cast<std::uint32_t>(std::lround(t.subjects.estimate()));
            if (count > t.subjects_counted) {
                a.subject_block[block_slot(block)] += count - t.subjects_counted;
                t.subjects_counted = count;
            }
            check_metric(a, kSubjectsDay, count, time_us, out);
        }
        if (new_window) {
            check_metric(a, kSubjects30, std::round(window_subjects(a, 30)), time_us, out);
            check_metric(a, kSubjects90, std::round(window_subjects(a, 90)), time_us, out);
        }
        if (sensitive) add_evidence(a, Detector::sensitive_categories, e.event_id);
        if (new_sensitive) {
            const auto count = static_cast<std::uint32_t>(std::lround(t.sensitive.estimate()));
            if (count > t.sensitive_counted) {
                GroupState& g = groups[a.group_id];
                if (t.sensitive_counted == 0 && g.today_day == t.day) ++g.today_sensitive_actors;
                a.sensitive_block[block_slot(block)] += count - t.sensitive_counted;
                t.sensitive_counted = count;
            }
            check_metric(a, kSensitiveDay, count, time_us, out);
            check_metric(a, kSensitive30, window_sensitive(a), time_us, out);
            check_sensitive_run(a, count, time_us, out);
            if (t.norm[kSensitiveDay] < 0) check_cold_sensitive(a, count, time_us, out);
        }
        if (new_unexplained) {
            add_evidence(a, Detector::no_business_reason, e.event_id);
            const auto count = static_cast<std::uint32_t>(std::lround(t.unexplained.estimate()));
            if (count > t.unexplained_counted) {
                a.unexplained_block[block_slot(block)] += count - t.unexplained_counted;
                t.unexplained_counted = count;
            }
            check_metric(a, kUnexplainedDay, count, time_us, out);
            check_metric(a, kUnexplained30, window_unexplained(a), time_us, out);
            const double share = window_unexplained_share(a);
            if (share >= 0) check_metric(a, kUnexplainedShare30, share, time_us, out);
        }
        if (unexplained_here > 0)
            check_unexplained_categories(a, categories, unexplained_here, time_us, out);
        const double rows = static_cast<double>(std::max<std::int64_t>(e.rows, 0));
        if (rows > 0 || e.command == Command::copy) {
            t.rows += rows;
            add_evidence(a, Detector::bulk_reading, e.event_id);
            check_metric(a, kRowsDay, t.rows, time_us, out);
            if (rows > t.max_statement_rows) {
                t.max_statement_rows = rows;
                check_metric(a, kStatementRows, rows, time_us, out);
            }
            if (!e.session.empty()) {
                // Sessions are counted within the local day; one that spans midnight starts over.
                const std::uint32_t fp = session_fp.of(e.session);
                if (fp != t.session) {
                    t.session = fp;
                    t.session_rows = 0;
                }
                t.session_rows += rows;
                if (t.session_rows > t.max_session_rows) {
                    t.max_session_rows = t.session_rows;
                    check_metric(a, kSessionRows, t.session_rows, time_us, out);
                }
            }
            if (e.command == Command::copy) {
                ++t.copies;
                check_metric(a, kCopyDay, t.copies, time_us, out);
            }
        }
        if (unusual && !e.subjects.empty()) {
            add_evidence(a, Detector::unusual_hours, e.event_id);
            const double n = t.unusual_subjects;
            const double strength = std::min(0.75, 0.3 + 0.1 * std::log2(1 + n / 5));
            raise(a, Detector::unusual_hours, strength, time_us, out, [&] { return hour_text(a); });
        }
    }

    void observe_login(const LoginEvent& e, std::vector<Alert>& out) {
        release_due(e.time_us, out);
        ActorState& a = actor(e.actor, e.peer_group);
        const std::int64_t previous = a.last_time_us;
        const std::int64_t time_us = std::max(e.time_us, previous);
        enter_day(a, clock(time_us).day);
        a.last_time_us = time_us;
        const std::int64_t window = std::int64_t{config.login_window_seconds} * kMicrosPerSecond;
        if (!e.success) {
            if (a.login_failures == 0 || time_us - a.last_failure_us > window) {
                a.login_failures = 0;
                a.first_failure_us = time_us;
            }
            ++a.login_failures;
            a.last_failure_us = time_us;
            track_address_failure(e, time_us, window);
            add_evidence(a, Detector::login_abuse, e.event_id);
            if (a.login_failures >= 4u * static_cast<std::uint32_t>(config.login_failures)) {
                const std::uint32_t n = a.login_failures;
                const double minutes = static_cast<double>(time_us - a.first_failure_us) / 60e6;
                raise(a, Detector::login_abuse, 0.5, time_us, out, [&] {
                    return fmt::format("{} failed logins within {:.1f} minutes and no success yet",
                                       n, minutes);
                });
            }
            return;
        }
        check_departed_dormant(a, time_us, previous, e.event_id, out);
        if (const AddressFailures* f = address_entry(e.client_addr, time_us, false);
            f != nullptr && time_us - f->last_us <= window &&
            f->failures >= 2u * static_cast<std::uint32_t>(config.login_failures) &&
            f->account_count >= 3) {
            add_evidence(a, Detector::login_abuse, e.event_id);
            const std::uint32_t failures = f->failures, accounts = f->account_count;
            const double minutes = static_cast<double>(time_us - f->first_us) / 60e6;
            raise(a, Detector::login_abuse, 0.8, time_us, out, [&] {
                return fmt::format(
                    "successful login from a client address that had {} failed logins against {}{} "
                    "accounts within {:.1f} minutes",
                    failures, accounts >= 8 ? "at least " : "", accounts, minutes);
            });
        }
        const std::uint32_t n = a.login_failures;
        const bool burst = n >= static_cast<std::uint32_t>(config.login_failures) &&
                           time_us - a.last_failure_us <= window;
        a.login_failures = 0;
        if (!burst) return;
        add_evidence(a, Detector::login_abuse, e.event_id);
        const double minutes = static_cast<double>(time_us - a.first_failure_us) / 60e6;
        const double strength =
            std::min(0.95, 0.7 + 0.1 * std::log2(static_cast<double>(n) / config.login_failures));
        raise(a, Detector::login_abuse, strength, time_us, out, [&] {
            return fmt::format("{} failed logins within {:.1f} minutes, then a successful login", n,
                               minutes);
        });
    }

    // The entry for this address, claiming the stalest of its probe window if it has none.
    AddressFailures* address_entry(std::string_view client, std::int64_t time_us, bool claim) {
        if (client.empty()) return nullptr;
        const std::uint32_t fp = fingerprint32(client);
        const std::size_t start = fp % kAddressSlots;
        AddressFailures* stalest = nullptr;
        for (int i = 0; i < kAddressProbe; ++i) {
            AddressFailures& slot =
                addresses[(start + static_cast<std::size_t>(i)) % kAddressSlots];
            if (slot.address == fp) return &slot;
            if (stalest == nullptr || slot.last_us < stalest->last_us) stalest = &slot;
        }
        if (!claim) return nullptr;
        *stalest = AddressFailures{};
        stalest->address = fp;
        stalest->first_us = time_us;
        return stalest;
    }

    void track_address_failure(const LoginEvent& e, std::int64_t time_us, std::int64_t window) {
        AddressFailures* f = address_entry(e.client_addr, time_us, true);
        if (f == nullptr) return;
        if (time_us - f->last_us > window) {  // a new burst
            const std::uint32_t address = f->address;
            *f = AddressFailures{};
            f->address = address;
            f->first_us = time_us;
        }
        ++f->failures;
        f->last_us = time_us;
        const std::uint32_t account = fingerprint32(e.actor);
        const auto end = f->accounts.begin() + f->account_count;
        if (f->account_count < f->accounts.size() &&
            std::find(f->accounts.begin(), end, account) == end) {
            f->accounts[f->account_count++] = account;
        }
    }

    void observe_relation(const RelationEvent& e) {
        ActorState& a = actor(e.actor, {});
        ++groups[a.group_id].relation_events;
        ++a.relation_events;
        const std::int32_t day = clock(e.time_us).day;
        const std::uint64_t key = mix64(hash_bytes(e.subject) ^ (std::uint64_t{a.name_id} << 1));
        relations.put(key, day + config.relation_ttl_days, day);
    }
};

namespace {

// Settings come from GUCs and command lines: say what is allowed, not just that it failed.
void validate(const ScorerConfig& c) {
    auto check = [](bool ok, std::string_view name, std::string_view allowed, double value) {
        if (!ok) {
            throw std::invalid_argument(
                fmt::format("scorer setting {} must be {}, not {:g}", name, allowed, value));
        }
    };
    check(c.threshold >= 0 && c.threshold <= 100, "threshold", "0-100", c.threshold);
    check(std::abs(c.utc_offset_minutes) <= 18 * 60, "utc_offset_minutes", "-1080 to 1080",
          c.utc_offset_minutes);
    check(c.norm_quantile >= 0.5 && c.norm_quantile < 1, "norm_quantile", "in [0.5, 1)",
          c.norm_quantile);
    check(c.peer_quantile >= 0.5 && c.peer_quantile < 1, "peer_quantile", "in [0.5, 1)",
          c.peer_quantile);
    check(c.min_history_days >= 1, "min_history_days", "at least 1", c.min_history_days);
    check(c.min_peer_days >= 1, "min_peer_days", "at least 1", c.min_peer_days);
    check(c.own_decay > 0 && c.own_decay <= 1, "own_decay", "in (0, 1]", c.own_decay);
    check(c.peer_decay > 0 && c.peer_decay <= 1, "peer_decay", "in (0, 1]", c.peer_decay);
    check(c.relation_ttl_days >= 1, "relation_ttl_days", "at least 1", c.relation_ttl_days);
    check(c.dormant_days >= 1, "dormant_days", "at least 1", c.dormant_days);
    check(c.repeat_after_days >= 1, "repeat_after_days", "at least 1", c.repeat_after_days);
    check(c.login_failures >= 1, "login_failures", "at least 1", c.login_failures);
    check(c.login_window_seconds >= 1, "login_window_seconds", "at least 1",
          c.login_window_seconds);
    check(c.team_wait_minutes >= 0 && c.team_wait_minutes <= 24 * 60, "team_wait_minutes", "0-1440",
          c.team_wait_minutes);
    check(c.sensitive_categories.size() <= 64, "sensitive_categories",
          "at most 64 names (categories share a 64-bit mask)",
          static_cast<double>(c.sensitive_categories.size()));
}

}  // namespace

Scorer::Scorer(ScorerConfig config) {
    validate(config);
    impl_ = std::make_unique<Impl>(std::move(config));
}
Scorer::~Scorer() = default;
Scorer::Scorer(Scorer&&) noexcept = default;
Scorer& Scorer::operator=(Scorer&&) noexcept = default;

void Scorer::observe(const AccessEvent& event, std::vector<Alert>& out) {
    impl_->observe_access(event, out);
}
void Scorer::observe(const LoginEvent& event, std::vector<Alert>& out) {
    impl_->observe_login(event, out);
}
void Scorer::observe(const RelationEvent& event) { impl_->observe_relation(event); }

void Scorer::release_held(std::int64_t now_us, std::vector<Alert>& out) {
    impl_->release_due(now_us, out);
}
std::size_t Scorer::held() const { return impl_->held.size(); }

void Scorer::mark_departed(std::string_view actor, std::int64_t time_us) {
    ActorState& a = impl_->actor(actor, {});
    a.departed = true;
    a.departed_time_us = time_us;
}

void Scorer::clear_departed(std::string_view actor) {
    const std::uint32_t id = impl_->actor_names.find(actor);
    if (id != StringInterner::kAbsent) impl_->actors[id].departed = false;
}

void Scorer::declare_event(const KnownEvent& event) {
    if (event.name.empty()) throw std::invalid_argument("known event: the name must not be empty");
    if (!(event.to_us > event.from_us)) {
        throw std::invalid_argument(fmt::format(
            "known event '{}': the period must end after it starts", event.name.substr(0, 63)));
    }
    Impl& s = *impl_;
    Impl::DeclaredEvent d;
    d.name = event.name;
    d.group = event.peer_group;
    d.from_day = s.clock(event.from_us).day;
    d.to_day = s.clock(event.to_us - 1).day;
    s.known.push_back(std::move(d));
}

void Scorer::clear_known_events() { impl_->known.clear(); }
std::size_t Scorer::known_events() const { return impl_->known.size(); }

const ScorerConfig& Scorer::config() const { return impl_->config; }

// ---- state ---------------------------------------------------------------------------------

namespace {

constexpr char kMagic[8] = {'P', 'I', 'I', 'S', 'C', 'O', 'R', 'E'};
constexpr std::uint32_t kFormatVersion = 8;  // 8: the sequential test in days; 7: paths

class Writer {
  public:
    explicit Writer(std::string& out) : out_(out) {}
    template <class T>
    void pod(const T& v) {
        static_assert(std::is_trivially_copyable_v<T>);
        out_.append(reinterpret_cast<const char*>(&v), sizeof v);
    }
    void bytes(const void* p, std::size_t n) { out_.append(static_cast<const char*>(p), n); }
    void str(std::string_view s) {
        pod(static_cast<std::uint32_t>(s.size()));
        bytes(s.data(), s.size());
    }
    void names(const StringInterner& names) {
        pod(static_cast<std::uint32_t>(names.size()));
        for (std::uint32_t i = 0; i < names.size(); ++i) str(names.name(i));
    }

  private:
    std::string& out_;
};

class Reader {
  public:
    explicit Reader(std::string_view in) : in_(in) {}
    template <class T>
    T pod(const char* what) {
        static_assert(std::is_trivially_copyable_v<T>);
        T v;
        std::memcpy(&v, take(sizeof v, what), sizeof v);
        return v;
    }
    const char* take(std::size_t n, const char* what) {
        if (in_.size() - pos_ < n) {
            throw StateError(
                fmt::format("scorer state truncated while reading {} (offset {})", what, pos_));
        }
        const char* p = in_.data() + pos_;
        pos_ += n;
        return p;
    }
    std::uint32_t count(std::size_t element_size, const char* what) {
        const auto n = pod<std::uint32_t>(what);
        if (element_size > 0 && n > (in_.size() - pos_) / element_size) {
            throw StateError(fmt::format("scorer state: {} count {} exceeds the data", what, n));
        }
        return n;
    }
    void names(StringInterner& names, const char* what) {
        const std::uint32_t n = count(4, what);
        for (std::uint32_t i = 0; i < n; ++i) {
            const std::uint32_t len = count(1, what);
            const std::string_view s(take(len, what), len);
            if (names.intern(s) != i) {
                throw StateError(fmt::format("scorer state: duplicate name in {}", what));
            }
        }
    }
    bool done() const { return pos_ == in_.size(); }

  private:
    std::string_view in_;
    std::size_t pos_ = 0;
};

}  // namespace

std::string Scorer::save_state() const {
    const Impl& s = *impl_;
    std::string out;
    out.reserve(64 + s.actors.size() * sizeof(ActorState) + s.groups.size() * sizeof(GroupState) +
                s.relations.entries().size() * sizeof(RelationTable::Entry));
    Writer w(out);
    w.bytes(kMagic, sizeof kMagic);
    w.pod(kFormatVersion);
    w.pod(static_cast<std::uint32_t>(sizeof(ActorState)));
    w.pod(static_cast<std::uint32_t>(sizeof(GroupState)));
    w.names(s.actor_names);
    w.names(s.group_names);
    w.names(s.category_names);
    w.pod(static_cast<std::uint32_t>(s.groups.size()));
    for (const GroupState& g : s.groups) w.pod(g);
    w.pod(static_cast<std::uint32_t>(s.actors.size()));
    for (const ActorState& a : s.actors) w.pod(a);
    w.pod(static_cast<std::uint32_t>(s.relations.entries().size()));
    w.bytes(s.relations.entries().data(),
            s.relations.entries().size() * sizeof(RelationTable::Entry));
    w.pod(s.addresses);
    w.pod(s.alerts_raised);
    w.pod(s.unknown_categories);
    w.pod(static_cast<std::uint32_t>(s.held.size()));
    for (const Impl::Held& h : s.held) {
        w.pod(h.actor);
        w.pod(h.kind);
        w.pod(h.detector);
        w.pod(h.day);
        w.pod(h.due_us);
        w.pod(h.time_us);
        w.pod(h.strength);
        w.pod(h.value);
        w.str(h.explanation);
    }
    return out;
}

void Scorer::restore_state(std::string_view bytes) {
    Impl fresh(impl_->config);
    // Names are restored exactly as saved; the configured sensitive categories are re-applied
    // afterwards, so a category renamed in the configuration takes effect.
    fresh.category_names = StringInterner();
    Reader r(bytes);
    if (std::memcmp(r.take(sizeof kMagic, "magic"), kMagic, sizeof kMagic) != 0) {
        throw StateError("not a pii_audit scorer state (bad magic)");
    }
    const auto version = r.pod<std::uint32_t>("version");
    const auto actor_size = r.pod<std::uint32_t>("actor size");
    const auto group_size = r.pod<std::uint32_t>("group size");
    if (version != kFormatVersion || actor_size != sizeof(ActorState) ||
        group_size != sizeof(GroupState)) {
        throw StateError(fmt::format(
            "scorer state format {} (actor {} B, group {} B) does not match this build's format {} "
            "(actor {} B, group {} B); baselines must be relearned",
            version, actor_size, group_size, kFormatVersion, sizeof(ActorState),
            sizeof(GroupState)));
    }
    r.names(fresh.actor_names, "actor names");
    r.names(fresh.group_names, "group names");
    r.names(fresh.category_names, "category names");
    const std::uint32_t n_groups = r.count(sizeof(GroupState), "groups");
    if (n_groups != fresh.group_names.size())
        throw StateError("scorer state: group count mismatch");
    fresh.groups.resize(n_groups);
    for (std::uint32_t i = 0; i < n_groups; ++i) {
        fresh.groups[i] = r.pod<GroupState>("group");
        if (fresh.groups[i].name_id != i) throw StateError("scorer state: group id out of order");
        fresh.groups[i].service = fresh.is_service_group(fresh.group_names.name(i));
    }
    const std::uint32_t n_actors = r.count(sizeof(ActorState), "actors");
    if (n_actors != fresh.actor_names.size())
        throw StateError("scorer state: actor count mismatch");
    fresh.actors.resize(n_actors);
    for (std::uint32_t i = 0; i < n_actors; ++i) {
        fresh.actors[i] = r.pod<ActorState>("actor");
        if (fresh.actors[i].name_id != i || fresh.actors[i].group_id >= n_groups) {
            throw StateError("scorer state: actor ids inconsistent");
        }
    }
    const std::uint32_t n_relations = r.count(sizeof(RelationTable::Entry), "relations");
    if (n_relations != 0 && (n_relations & (n_relations - 1)) != 0) {
        throw StateError("scorer state: relation table size is not a power of two");
    }
    std::vector<RelationTable::Entry> entries(n_relations);
    if (n_relations > 0) {
        std::memcpy(entries.data(), r.take(n_relations * sizeof(RelationTable::Entry), "relations"),
                    n_relations * sizeof(RelationTable::Entry));
    }
    fresh.relations.assign(std::move(entries));
    fresh.addresses = r.pod<std::array<AddressFailures, kAddressSlots>>("login addresses");
    fresh.alerts_raised = r.pod<std::uint64_t>("alert count");
    fresh.unknown_categories = r.pod<std::uint64_t>("category count");
    const std::uint32_t n_held = r.count(1, "held signals");
    for (std::uint32_t i = 0; i < n_held; ++i) {
        Impl::Held h;
        h.actor = r.pod<std::uint32_t>("held actor");
        h.kind = r.pod<std::uint8_t>("held kind");
        h.detector = r.pod<std::uint8_t>("held detector");
        h.day = r.pod<std::int32_t>("held day");
        h.due_us = r.pod<std::int64_t>("held due");
        h.time_us = r.pod<std::int64_t>("held time");
        h.strength = r.pod<double>("held strength");
        h.value = r.pod<double>("held value");
        const std::uint32_t len = r.count(1, "held explanation");
        h.explanation.assign(r.take(len, "held explanation"), len);
        if (h.actor >= n_actors || h.detector >= kDetectorCount ||
            (h.kind >= kOwnMetricCount && h.kind < kRhythmCategory) ||
            h.kind >= kRhythmCategory + 64) {
            throw StateError("scorer state: held signal inconsistent");
        }
        fresh.next_due = std::min(fresh.next_due, h.due_us);
        fresh.held.push_back(std::move(h));
    }
    if (!r.done()) throw StateError("scorer state has trailing bytes");
    fresh.sensitive_mask = 0;
    for (const std::string& name : fresh.config.sensitive_categories) {
        const std::uint32_t bit = fresh.category_names.intern(name);
        if (bit < 64) fresh.sensitive_mask |= std::uint64_t{1} << bit;
    }
    fresh.known = std::move(impl_->known);  // declared by the DBA, not learned: kept as is
    *impl_ = std::move(fresh);
}

ScorerStats Scorer::stats(bool with_state_size) const {
    ScorerStats s;
    s.actors = impl_->actors.size();
    s.peer_groups = impl_->groups.size();
    s.relations = impl_->relations.size();
    s.bytes_per_actor = sizeof(ActorState);
    s.state_bytes = with_state_size ? save_state().size() : 0;
    s.alerts = impl_->alerts_raised;
    s.unknown_categories_dropped = impl_->unknown_categories;
    s.held_now = impl_->held.size();
    s.held_raised = impl_->held_raised;
    s.held_dropped = impl_->held_dropped;
    s.team_excused = impl_->team_excused;
    return s;
}

}  // namespace pii_audit::analysis
