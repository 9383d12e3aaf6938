// insider-gen: a synthetic organisation's access trail with injected insider scenarios and an
// answer key, deterministic by seed. Every setting can be changed on the command line so that
// the scorer is judged on organisations it was not tuned on.
//
//   insider-gen --seed 1 --out events.jsonl --key key.tsv [--days 120] [--set name=value ...]
//
// Events are written in time order, times in UTC; the organisation works in local time
// (--set utc_offset_minutes=480 by default), so replay with --utc-offset 480.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Settings {
    std::uint64_t seed = 1;
    int days = 120;
    int start_epoch_day = 19723;  // 2024-01-01, a Monday
    int utc_offset_minutes = 480;
    int clerks = 80;
    int agents = 60;
    int back_office = 25;
    int maternal = 25;
    int services = 6;
    int dbas = 4;
    double clerk_lookups = 28;  // median lookups per working day
    double agent_calls = 45;
    double maternal_visits = 16;
    double clerk_code_rate = 0.004;  // counter clerks legitimately read a code now and then
    double agent_code_rate = 0.35;   // call centre verifies callers: reads codes all day
    // Travel records are read by the back office (expense and travel audits); set this above 0
    // to make the call centre read them too, which hides the colleague's category.
    double agent_travel_rate = 0;
    double back_office_travel_rate = 0.1;
    double walkin_rate = 0.07;  // lookups without a ticket or appointment
    double back_office_credential_rate = 0.05;
    int new_hires = 6;
    int role_changes = 3;
    int inject = 1;
    // Calendar rhythms, in real calendar months from start_epoch_day.
    int festival_start = 38;      // a week of public holidays (New Year's Day and one more too)
    // Work piles up during holidays: on the first weekday after one, clerks, maternal care and
    // the back office do this many times their usual work (the call centre works on holidays).
    double after_holiday_factor = 1;
    int month_end_days = 2;       // the last N weekdays of a month close the books
    double month_end_factor = 3;  // back-office statements on those days
    int month_end_copy = 0;       // 1: on the month's last weekday each back-office member
    double month_end_copy_rows = 30000;  // runs one COPY of about this many rows, which also
    std::string month_end_copy_category =
        "address";                  // reads a category the team otherwise never reads
    double quarter_end_factor = 1;  // the COPY is this much larger in the last month of a quarter
    int quarter_report = 0;         // 1: maternal care pulls its whole district at quarter end
    int audit_week_start = 70;      // internal audit: back office x audit_week_factor
    int audit_week_days = 5;
    double audit_week_factor = 2;
    int campaign_start = -1;  // a campaign: call-centre calls x campaign_factor
    int campaign_days = 10;
    double campaign_factor = 1.8;
    int reorg_day = -1;  // from this day counter clerks also read reorg_category on
    std::string reorg_category = "address";  // every lookup, and do reorg_factor x as many
    double reorg_factor = 1.5;
    // Injected insiders: when and how much.
    int nanning_start = 20;
    int nanning_max = 3;         // codes taken on a day: 1..nanning_max
    double nanning_rate = 0.85;  // share of his working days on which he takes any
    // 1: he reads the codes from the customer screen, where his colleagues read their occasional
    // code, instead of from the table of sent codes (only the counts can tell him apart).
    int nanning_same_path = 0;
    int maternal_start = 15;
    double maternal_daily = 400;
    int crawler_start = 50;
    int departed_day = 60;
    int colleague_start = 62;
    int stuffing_day = 88;
    int hidden_bulk = 0;             // n > 0: at the n-th month-end COPY, bo-0005 copies
    double hidden_bulk_factor = 10;  // this many times the rows of a colleague's COPY
    int hidden_codes = 0;            // n > 0: at the n-th month-end COPY, bo-0006 also reads the
    int hidden_codes_subjects = 30;  // verification codes of this many people
};

// Portable draws: std::mt19937_64 is specified exactly; the distributions are our own so that
// a seed gives the same organisation with every standard library.
class Rng {
  public:
    explicit Rng(std::uint64_t seed) : engine_(seed) {}
    double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
    int below(int n) { return static_cast<int>(uniform() * n); }
    bool chance(double p) { return uniform() < p; }
    double normal() {
        const double u1 = std::max(uniform(), 1e-300), u2 = uniform();
        return std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
    }
    double lognormal(double median, double sigma) { return median * std::exp(sigma * normal()); }

  private:
    std::mt19937_64 engine_;
};

enum class Role { clerk, agent, back_office, maternal, service, dba };

const char* role_name(Role r) {
    switch (r) {
        case Role::clerk:
            return "counter_clerk";
        case Role::agent:
            return "call_centre";
        case Role::back_office:
            return "back_office";
        case Role::maternal:
            return "maternal_care";
        case Role::service:
            return "service";
        case Role::dba:
            return "dba";
    }
    return "?";
}

struct Staff {
    std::string name;
    Role role;
    int hired = 0;  // first day of work
    int leave_from = -1, leave_to = -1;
    int role_change_day = -1;  // becomes back office from this day
    int shift_start = 9 * 3600, shift_end = 17 * 3600;
    bool saturdays = false;
    int pool_base = 0, pool_size = 1500;
    std::string application = "counter-app";
    std::string client;
    int departed_day = -1;  // stops working (the scenario may use the account later)
};

struct Line {
    std::int64_t time_us;
    std::string text;
};

struct Scenario {
    std::string name, actor;
    std::int64_t start_us = 0, end_us = 0;
    std::vector<std::pair<std::int64_t, int>> records;  // time, records taken
};

class Generator {
  public:
    explicit Generator(const Settings& s) : s_(s), rng_(s.seed) { build_staff(); }

    void run(std::FILE* out, std::FILE* key) {
        std::set<std::pair<std::string, int>> actor_days;
        for (int d = 0; d < s_.days; ++d) {
            lines_.clear();
            day(d);
            std::stable_sort(lines_.begin(), lines_.end(),
                             [](const Line& a, const Line& b) { return a.time_us < b.time_us; });
            for (const Line& l : lines_) {
                std::fwrite(l.text.data(), 1, l.text.size(), out);
                std::fputc('\n', out);
            }
            for (const auto& ad : today_actors_) actor_days.insert({ad, d});
            today_actors_.clear();
        }
        fmt::print(key, "meta\tactor_days\t{}\n", actor_days.size());
        fmt::print(key, "meta\tstaff\t{}\n", staff_.size());
        fmt::print(key, "meta\tdays\t{}\n", s_.days);
        fmt::print(key, "meta\tseed\t{}\n", s_.seed);
        for (const Scenario& sc : scenarios_) {
            int total = 0;
            for (const auto& r : sc.records) total += r.second;
            fmt::print(key, "scenario\t{}\t{}\t{}\t{}\t{}\n", sc.name, sc.actor, sc.start_us,
                       sc.end_us, total);
            for (const auto& r : sc.records)
                fmt::print(key, "record\t{}\t{}\t{}\n", sc.name, r.first, r.second);
        }
    }

  private:
    // ---- the organisation ------------------------------------------------------------------

    void add_staff(Role role, int count, const char* prefix) {
        for (int i = 0; i < count; ++i) {
            Staff st;
            st.name = fmt::format("{}-{:04d}", prefix, i);
            st.role = role;
            st.client =
                fmt::format("10.{}.{}.{}", static_cast<int>(role) + 1, i / 200, i % 200 + 10);
            st.pool_base = static_cast<int>(staff_.size()) * 5000;
            switch (role) {
                case Role::clerk:
                    st.saturdays = rng_.chance(0.2);
                    st.pool_size = 1200 + rng_.below(800);
                    break;
                case Role::agent: {
                    const bool late = rng_.chance(0.5);
                    st.shift_start = late ? 13 * 3600 : 7 * 3600;
                    st.shift_end = late ? 21 * 3600 : 15 * 3600;
                    st.application = "crm";
                    st.pool_base = 0;
                    st.pool_size = 400000;  // callers come from anywhere
                    break;
                }
                case Role::back_office:
                    st.shift_start = 8 * 3600;
                    st.shift_end = 18 * 3600;
                    st.application = "backoffice";
                    st.pool_base = 0;
                    st.pool_size = 400000;
                    break;
                case Role::maternal:
                    st.shift_start = 8 * 3600;
                    st.shift_end = 16 * 3600;
                    st.application = "care-app";
                    st.pool_base = 2000000 + i * 4000;
                    st.pool_size = 2500 + rng_.below(1500);
                    break;
                case Role::service:
                    st.shift_start = 2 * 3600;
                    st.application = "report-batch";
                    break;
                case Role::dba:
                    st.shift_start = 9 * 3600;
                    st.shift_end = 19 * 3600;
                    st.application = "psql";
                    break;
            }
            if (role != Role::service && rng_.chance(0.8)) {
                st.leave_from = rng_.below(std::max(1, s_.days - 10));
                st.leave_to = st.leave_from + 5 + rng_.below(6);
            }
            staff_.push_back(st);
        }
    }

    void build_staff() {
        add_staff(Role::clerk, s_.clerks, "clerk");
        add_staff(Role::agent, s_.agents, "agent");
        add_staff(Role::back_office, s_.back_office, "bo");
        add_staff(Role::maternal, s_.maternal, "mcare");
        add_staff(Role::service, s_.services, "svc");
        add_staff(Role::dba, s_.dbas, "dba");
        // New hires join during the period; role changes move clerks to the back office.
        for (int i = 0; i < s_.new_hires && !staff_.empty(); ++i) {
            Staff st = staff_[static_cast<std::size_t>(rng_.below(s_.clerks + s_.agents))];
            st.name = fmt::format("{}-new{:02d}", st.role == Role::clerk ? "clerk" : "agent", i);
            st.hired = 20 + rng_.below(std::max(1, s_.days - 40));
            st.pool_base = static_cast<int>(staff_.size()) * 5000;
            st.leave_from = st.leave_to = -1;
            staff_.push_back(st);
        }
        for (int i = 0; i < s_.role_changes && s_.clerks > 20; ++i) {
            staff_[static_cast<std::size_t>(20 + i)].role_change_day = 40 + rng_.below(40);
        }
        if (s_.inject) plan_scenarios();
    }

    Staff* find(const std::string& name) {
        for (Staff& st : staff_) {
            if (st.name == name) return &st;
        }
        throw std::runtime_error("scenario actor missing (too few staff?): " + name);
    }

    // ---- time ------------------------------------------------------------------------------

    std::int64_t at(int d, int local_second) const {
        const std::int64_t epoch_s = (std::int64_t{s_.start_epoch_day} + d) * 86400 + local_second -
                                     std::int64_t{s_.utc_offset_minutes} * 60;
        return epoch_s * 1000000;
    }

    std::string iso(std::int64_t us) const {
        const std::int64_t secs = us / 1000000;
        std::int64_t days = secs / 86400, rem = secs % 86400;
        days += 719468;
        const std::int64_t era = days / 146097;
        const unsigned doe = static_cast<unsigned>(days - era * 146097);
        const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        const unsigned mp = (5 * doy + 2) / 153;
        const unsigned dd = doy - (153 * mp + 2) / 5 + 1;
        const unsigned m = mp < 10 ? mp + 3 : mp - 9;
        const std::int64_t y = static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2);
        return fmt::format("{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}.{:03d}Z", y, m, dd,
                           rem / 3600, (rem / 60) % 60, rem % 60, (us / 1000) % 1000);
    }

    bool holiday(int d) const {
        // New Year's Day, a festival week, and a day eight weeks later.
        const int f = s_.festival_start;
        return d == 0 || (d >= f && d <= f + 6) || d == f + 56;
    }
    // Monday = 0, from the real calendar.
    int weekday(int d) const { return ((s_.start_epoch_day + d + 3) % 7 + 7) % 7; }
    struct Civil {
        int year, month, day;
    };
    Civil civil(int d) const {
        std::int64_t days = std::int64_t{s_.start_epoch_day} + d + 719468;
        const std::int64_t era = days / 146097;
        const unsigned doe = static_cast<unsigned>(days - era * 146097);
        const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        const unsigned mp = (5 * doy + 2) / 153;
        const int dd = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
        const int m = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
        return {static_cast<int>(yoe + era * 400 + (m <= 2)), m, dd};
    }
    // Weekdays left in this calendar month after day d.
    int weekdays_left_in_month(int d) const {
        const int month = civil(d).month;
        int left = 0;
        for (int e = d + 1; civil(e).month == month; ++e) left += weekday(e) < 5;
        return left;
    }
    bool month_end(int d) const {
        return weekday(d) < 5 && weekdays_left_in_month(d) < s_.month_end_days;
    }
    bool last_weekday_of_month(int d) const {
        return weekday(d) < 5 && weekdays_left_in_month(d) == 0;
    }
    bool first_weekday_of_month(int d) const {
        if (weekday(d) >= 5) return false;
        const int month = civil(d).month;
        for (int e = d - 1; civil(e).month == month; --e) {
            if (weekday(e) < 5) return false;
        }
        return true;
    }
    bool quarter_month(int d) const { return civil(d).month % 3 == 0; }
    // The first weekday after one or more weekdays of public holiday.
    bool after_holiday(int d) const {
        if (weekday(d) >= 5 || holiday(d)) return false;
        int e = d - 1;
        while (e >= 0 && weekday(e) >= 5) --e;
        return e >= 0 && holiday(e);
    }
    // 1 for the first month-end COPY day of the period, 2 for the second, ...
    int month_end_index(int d) const {
        int n = 0;
        for (int e = 0; e <= d; ++e) n += last_weekday_of_month(e);
        return last_weekday_of_month(d) ? n : 0;
    }

    // ---- emitting ----------------------------------------------------------------------------

    static std::string json_list(const std::vector<std::string>& items) {
        std::string s = "[";
        for (std::size_t i = 0; i < items.size(); ++i) {
            if (i) s += ',';
            s += '"';
            s += items[i];
            s += '"';
        }
        return s + "]";
    }

    std::string group_of(const Staff& st, int d) const {
        if (st.role_change_day >= 0 && d >= st.role_change_day) return role_name(Role::back_office);
        return role_name(st.role);
    }

    void access(const Staff& st, int d, std::int64_t t, const char* relation,
                const std::vector<std::string>& categories,
                const std::vector<std::string>& subjects, long rows, const char* command = "SELECT",
                const std::string* app = nullptr, const std::string* client = nullptr) {
        today_actors_.insert(st.name);
        lines_.push_back(
            {t, fmt::format(R"({{"time":"{}","actor":"{}","peer_group":"{}","application":"{}",)"
                            R"("client_addr":"{}","command":"{}","relation":"{}","categories":{},)"
                            R"("rows":{},"subjects":{},"status":"ok"}})",
                            iso(t), st.name, group_of(st, d), app ? *app : st.application,
                            client ? *client : st.client, command, relation, json_list(categories),
                            rows, json_list(subjects))});
    }

    void relation(const Staff& st, std::int64_t t, const std::string& subject) {
        lines_.push_back(
            {t, fmt::format(R"({{"kind":"relation","time":"{}","actor":"{}","subject":"{}"}})",
                            iso(t), st.name, subject)});
    }

    void login(const Staff& st, std::int64_t t, bool success, const std::string& client) {
        lines_.push_back(
            {t,
             fmt::format(
                 R"({{"kind":"login","time":"{}","actor":"{}","peer_group":"{}","client_addr":"{}","success":{}}})",
                 iso(t), st.name,
                 group_of(st, static_cast<int>((t / 1000000 + s_.utc_offset_minutes * 60) / 86400 -
                                               s_.start_epoch_day)),
                 client, success ? "true" : "false")});
    }

    std::string person(int id) const { return fmt::format("p{}", id); }

    int pick_customer(const Staff& st) {
        // Repeat customers: a skewed draw from the actor's pool.
        const double u = rng_.uniform();
        return st.pool_base + static_cast<int>(st.pool_size * u * u);
    }

    // ---- a day -------------------------------------------------------------------------------

    bool works(const Staff& st, int d) const {
        if (d < st.hired) return false;
        if (st.departed_day >= 0 && d >= st.departed_day) return false;
        if (d >= st.leave_from && d < st.leave_to) return false;
        const int wd = weekday(d);
        const bool moved = st.role_change_day >= 0 && d >= st.role_change_day;
        const Role role = moved ? Role::back_office : st.role;
        switch (role) {
            case Role::service:
                return true;
            case Role::agent:
                return (d + static_cast<int>(st.name.back())) % 7 < 5;  // rota, holidays too
            default:
                if (holiday(d)) return false;
                if (wd == 5) return role == Role::clerk && st.saturdays;
                return wd < 5;
        }
    }

    void lookups(const Staff& st, int d, double median, const std::vector<std::string>& categories,
                 const char* sensitive, double sensitive_rate, const char* relation_name,
                 const char* occasional = nullptr, double occasional_rate = 0) {
        double count = rng_.lognormal(median, 0.3);
        if (month_end(d)) count *= 1.3;
        if (st.role != Role::agent && after_holiday(d)) count *= s_.after_holiday_factor;
        const bool reorganised = st.role == Role::clerk && s_.reorg_day >= 0 && d >= s_.reorg_day;
        if (reorganised) count *= s_.reorg_factor;
        if (st.role == Role::agent && s_.campaign_start >= 0 && d >= s_.campaign_start &&
            d < s_.campaign_start + s_.campaign_days) {
            count *= s_.campaign_factor;
        }
        const bool saturday_morning = st.role == Role::clerk && weekday(d) == 5;
        if (saturday_morning) count *= 0.5;
        const int shift_end = saturday_morning ? 13 * 3600 : st.shift_end;
        const int n = static_cast<int>(count);
        std::vector<int> times;
        for (int i = 0; i < n; ++i)
            times.push_back(st.shift_start + rng_.below(shift_end - st.shift_start));
        std::sort(times.begin(), times.end());
        if (!times.empty()) {
            const std::int64_t first = at(d, times.front()) - 120 * 1000000;
            if (rng_.chance(0.03)) login(st, first - 30 * 1000000, false, st.client);
            login(st, first, true, st.client);
        }
        for (int tsec : times) {
            const std::string who = person(pick_customer(st));
            const std::int64_t t = at(d, tsec);
            if (!rng_.chance(s_.walkin_rate))
                relation(st, t - (60 + rng_.below(600)) * 1000000LL, who);
            std::vector<std::string> cats = categories;
            if (reorganised) cats.push_back(s_.reorg_category);
            if (sensitive && rng_.chance(sensitive_rate)) cats.push_back(sensitive);
            if (occasional && rng_.chance(occasional_rate)) cats.push_back(occasional);
            access(st, d, t, relation_name, cats, {who}, 1);
            if (rng_.chance(0.5)) {  // the detail screen: a second statement seconds later
                access(st, d, t + (2 + rng_.below(20)) * 1000000LL, "accounts", {"bank_account"},
                       {who}, 1 + rng_.below(3));
            }
            served_.push_back({t, who});
        }
    }

    void back_office_day(const Staff& st, int d) {
        double statements = rng_.lognormal(12, 0.4);
        if (month_end(d)) statements *= s_.month_end_factor;
        if (after_holiday(d)) statements *= s_.after_holiday_factor;
        if (d >= s_.audit_week_start && d < s_.audit_week_start + s_.audit_week_days)
            statements *= s_.audit_week_factor;  // internal audit week
        const int n = static_cast<int>(statements);
        login(st, at(d, st.shift_start - 300), true, st.client);
        for (int i = 0; i < n; ++i) {
            const std::int64_t t =
                at(d, st.shift_start + rng_.below(st.shift_end - st.shift_start));
            const int rows = std::max(1, static_cast<int>(rng_.lognormal(25, 0.9)));
            std::vector<std::string> subjects;
            for (int r = 0; r < std::min(rows, 400); ++r)
                subjects.push_back(person(rng_.below(st.pool_size)));
            std::vector<std::string> cats = {"name", "id_number", "bank_account"};
            if (rng_.chance(s_.back_office_credential_rate)) cats.push_back("credential");
            if (rng_.chance(s_.back_office_travel_rate)) cats.push_back("travel");
            access(st, d, t, "accounts", cats, subjects, rows);
        }
        if (s_.month_end_copy && last_weekday_of_month(d)) month_end_copy(st, d);
    }

    // Closing the books: every back-office member exports the month's accounts in one COPY.
    void month_end_copy(const Staff& st, int d) {
        double rows = rng_.lognormal(s_.month_end_copy_rows, 0.3);
        if (quarter_month(d)) rows *= s_.quarter_end_factor;
        const int index = month_end_index(d);
        const bool hidden_bulk = s_.inject && s_.hidden_bulk == index && st.name == "bo-0005";
        if (hidden_bulk) {
            rows = s_.month_end_copy_rows * (quarter_month(d) ? s_.quarter_end_factor : 1) *
                   s_.hidden_bulk_factor;
        }
        std::vector<std::string> subjects;
        for (int r = 0; r < 400; ++r) subjects.push_back(person(rng_.below(st.pool_size)));
        const std::int64_t t = at(d, st.shift_start + 3600 + rng_.below(6 * 3600));
        access(st, d, t, "accounts",
               {"name", "id_number", "bank_account", s_.month_end_copy_category}, subjects,
               static_cast<long>(rows), "COPY");
        if (hidden_bulk) {
            scenario("hidden_bulk").records.push_back({t, 1});
        }
        if (s_.inject && s_.hidden_codes == index && st.name == "bo-0006") {
            // Hidden in the team's run: the codes of people nobody in the team has a reason to see.
            for (int i = 0; i < s_.hidden_codes_subjects; ++i) {
                const std::int64_t when = t + (30 + i * 40) * 1000000LL;
                access(st, d, when, "sms_codes", {"phone", "verification_code"},
                       {person(rng_.below(400000))}, 1);
                scenario("hidden_codes").records.push_back({when, 1});
            }
        }
    }

    // Quarter end: each maternal-care worker reports on the whole district in one statement.
    void quarter_report(const Staff& st, int d) {
        std::vector<std::string> subjects;
        for (int r = 0; r < 400; ++r)
            subjects.push_back(person(st.pool_base + rng_.below(st.pool_size)));
        const std::int64_t t = at(d, st.shift_start + 3600 + rng_.below(5 * 3600));
        access(st, d, t, "mothers", {"name", "phone", "health", "minor", "address"}, subjects,
               st.pool_size);
    }

    void service_day(const Staff& st, int d) {
        std::int64_t t = at(d, st.shift_start + rng_.below(600));
        for (int i = 0; i < 120; ++i) {
            t += static_cast<std::int64_t>(2e6 * (1 + 0.01 * rng_.normal()));
            access(st, d, t, "accounts", {"name", "bank_account"}, {},
                   static_cast<long>(rng_.lognormal(800, 0.3)));
        }
    }

    void dba_day(const Staff& st, int d) {
        const int n = 2 + rng_.below(8);
        for (int i = 0; i < n; ++i) {
            const std::int64_t t =
                at(d, st.shift_start + rng_.below(st.shift_end - st.shift_start));
            access(st, d, t, "customers", {"name", "phone"}, {},
                   static_cast<long>(rng_.lognormal(40, 2.0)));
        }
        if (first_weekday_of_month(d) &&
            st.name == "dba-0000") {  // the monthly export, always by the same DBA
            access(st, d, at(d, 23 * 3600), "customers", {"name", "phone", "id_number"}, {}, 200000,
                   "COPY");
        }
    }

    void day(int d) {
        served_.clear();
        for (const Staff& st : staff_) {
            if (!works(st, d)) continue;
            const bool bo = st.role == Role::back_office ||
                            (st.role_change_day >= 0 && d >= st.role_change_day);
            if (bo) {
                back_office_day(st, d);
                continue;
            }
            const std::size_t before = served_.size();
            switch (st.role) {
                case Role::clerk:
                    lookups(st, d, s_.clerk_lookups, {"name", "phone", "id_number"},
                            "verification_code", s_.clerk_code_rate, "customers");
                    break;
                case Role::agent:
                    lookups(st, d, s_.agent_calls, {"name", "phone"}, "verification_code",
                            s_.agent_code_rate, "customers", "travel", s_.agent_travel_rate);
                    break;
                case Role::maternal:
                    lookups(st, d, s_.maternal_visits,
                            {"name", "phone", "health", "minor", "address"}, nullptr, 0, "mothers");
                    if (s_.quarter_report && quarter_month(d) && last_weekday_of_month(d))
                        quarter_report(st, d);
                    break;
                case Role::service:
                    service_day(st, d);
                    break;
                case Role::dba:
                    dba_day(st, d);
                    break;
                case Role::back_office:
                    break;
            }
            if (st.name == "clerk-0007") nanning(st, d, before);
        }
        if (s_.inject) inject(d);
    }

    // ---- scenarios -----------------------------------------------------------------------------

    Scenario& scenario(const std::string& name) {
        for (Scenario& s : scenarios_) {
            if (s.name == name) return s;
        }
        throw std::runtime_error("no scenario " + name);
    }

    void plan_scenarios() {
        auto add = [&](const std::string& name, const std::string& actor, int from, int to) {
            find(actor);
            Scenario s;
            s.name = name;
            s.actor = actor;
            s.start_us = at(from, 0);
            s.end_us = at(to, 0);
            scenarios_.push_back(s);
        };
        const int last = s_.days;
        auto from = [&](int d) { return std::min(d, last - 1); };
        auto to = [&](int d) { return std::min(d, last); };
        add("nanning_clerk", "clerk-0007", from(s_.nanning_start), to(s_.nanning_start + 90));
        add("maternal_bulk", "mcare-0003", from(s_.maternal_start), to(s_.maternal_start + 100));
        add("departed_account", "agent-0011", from(s_.departed_day + 6), to(s_.departed_day + 7));
        add("colleague_lookups", "agent-0023", from(s_.colleague_start),
            to(s_.colleague_start + 30));
        add("night_crawler", "bo-0004", from(s_.crawler_start), to(s_.crawler_start + 4));
        add("credential_stuffing", "agent-0031", from(s_.stuffing_day), to(s_.stuffing_day + 1));
        find("agent-0011")->departed_day = from(s_.departed_day);
        // Insiders hidden in the team's month-end run: the scenario is that one day.
        for (int d = 0; d < last; ++d) {
            const int index = s_.month_end_copy ? month_end_index(d) : 0;
            if (index == 0) continue;
            if (index == s_.hidden_bulk) add("hidden_bulk", "bo-0005", d, d + 1);
            if (index == s_.hidden_codes) add("hidden_codes", "bo-0006", d, d + 1);
        }
    }

    bool in(const std::string& name, int d) const {
        for (const Scenario& s : scenarios_) {
            if (s.name == name) return at(d, 12 * 3600) >= s.start_us && at(d, 0) < s.end_us;
        }
        return false;
    }

    // The Nanning clerk: while serving customers, also takes the phone's verification code of one
    // to three of them, on most working days.
    void nanning(const Staff& st, int d, std::size_t served_from) {
        if (!s_.inject || !in("nanning_clerk", d) || served_.size() <= served_from) return;
        if (!rng_.chance(s_.nanning_rate)) return;
        const int n = 1 + rng_.below(s_.nanning_max);
        for (int i = 0; i < n; ++i) {
            const auto& [t, who] =
                served_[served_from + static_cast<std::size_t>(rng_.below(
                                          static_cast<int>(served_.size() - served_from)))];
            const std::int64_t when = t + 40 * 1000000LL;
            if (s_.nanning_same_path) {
                access(st, d, when, "customers",
                       {"name", "phone", "id_number", "verification_code"}, {who}, 1);
            } else {
                access(st, d, when, "sms_codes", {"phone", "verification_code"}, {who}, 1);
            }
            scenario("nanning_clerk").records.push_back({when, 1});
        }
    }

    void inject(int d) {
        if (in("maternal_bulk", d)) {
            Staff& st = *find("mcare-0003");
            if (works(st, d)) {
                // Other districts' mothers, in pages of 25-60, spread over the working day.
                int remaining = static_cast<int>(rng_.lognormal(s_.maternal_daily, 0.3));
                while (remaining > 0) {
                    const int page = std::min(remaining, 25 + rng_.below(36));
                    std::vector<std::string> subjects;
                    for (int i = 0; i < page; ++i)
                        subjects.push_back(person(2000000 + rng_.below(150000)));
                    const std::int64_t t =
                        at(d, st.shift_start + rng_.below(st.shift_end - st.shift_start));
                    access(st, d, t, "mothers", {"name", "phone", "address", "minor"}, subjects,
                           page);
                    scenario("maternal_bulk").records.push_back({t, page});
                    remaining -= page;
                }
            }
        }
        if (d == std::min(s_.departed_day, s_.days - 1)) {
            const Staff& st = *find("agent-0011");
            lines_.push_back(
                {at(d, 0), fmt::format(R"({{"kind":"departed","time":"{}","actor":"{}"}})",
                                       iso(at(d, 0)), st.name)});
        }
        if (in("departed_account", d)) {
            // Rights were never revoked: the ex-employee's account logs in one evening.
            const Staff& st = *find("agent-0011");
            const std::string home = "198.51.100.77";
            login(st, at(d, 20 * 3600), true, home);
            for (int i = 0; i < 5; ++i) {
                const std::int64_t t = at(d, 20 * 3600 + 60 + i * 45);
                access(st, d, t, "itineraries", {"name", "travel"}, {person(rng_.below(400000))}, 1,
                       "SELECT", nullptr, &home);
                scenario("departed_account").records.push_back({t, 1});
            }
        }
        if (in("colleague_lookups", d)) {
            // A former colleague's requests: people with no call, ticket or case, a few a day.
            const Staff& st = *find("agent-0023");
            if (works(st, d) && rng_.chance(0.6)) {
                const int n = 2 + rng_.below(4);
                for (int i = 0; i < n; ++i) {
                    const std::int64_t t =
                        at(d, st.shift_start + rng_.below(st.shift_end - st.shift_start));
                    access(st, d, t, "itineraries", {"name", "travel"},
                           {person(rng_.below(400000))}, 1);
                    scenario("colleague_lookups").records.push_back({t, 1});
                }
            }
        }
        if (in("night_crawler", d)) {
            // A program planted on a back-office machine pages through customers at night.
            const Staff& st = *find("bo-0004");
            const std::string app = "python-requests", client = "10.9.9.9";
            std::int64_t t = at(d, 3600 + rng_.below(600));
            const int start = rng_.below(300000);
            for (int i = 0; i < 2500; ++i) {
                t += static_cast<std::int64_t>(3e6 * (1 + 0.04 * rng_.normal()));
                access(st, d, t, "customers", {"name", "phone", "id_number"}, {person(start + i)},
                       1, "SELECT", &app, &client);
                scenario("night_crawler").records.push_back({t, 1});
            }
        }
        if (in("credential_stuffing", d)) {
            const Staff& st = *find("agent-0031");
            const std::string attacker = "203.0.113.66";
            std::int64_t t = at(d, 22 * 3600 + 600);
            for (int i = 0; i < 30; ++i) {
                t += (4 + rng_.below(6)) * 1000000LL;
                login(st, t, false, attacker);
            }
            login(st, t + 5000000, true, attacker);
            for (int i = 0; i < 40; ++i) {
                t += 10 * 1000000LL;
                access(st, d, t + 5000000, "customers", {"name", "phone", "id_number"},
                       {person(rng_.below(400000))}, 1, "SELECT", nullptr, &attacker);
                scenario("credential_stuffing").records.push_back({t + 5000000, 1});
            }
        }
    }

    Settings s_;
    Rng rng_;
    std::vector<Staff> staff_;
    std::vector<Scenario> scenarios_;
    std::vector<Line> lines_;
    std::vector<std::pair<std::int64_t, std::string>> served_;
    std::set<std::string> today_actors_;
};

void set_option(Settings& s, const std::string& assignment) {
    const auto eq = assignment.find('=');
    if (eq == std::string::npos)
        throw std::runtime_error("--set needs name=value, not " + assignment);
    const std::string name = assignment.substr(0, eq);
    const std::string value = assignment.substr(eq + 1);
    std::map<std::string, std::string*> strings = {
        {"month_end_copy_category", &s.month_end_copy_category},
        {"reorg_category", &s.reorg_category}};
    if (auto it = strings.find(name); it != strings.end()) {
        if (value.empty() ||
            value.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") != std::string::npos)
            throw std::runtime_error(name + " must be a category name, not " + value);
        *it->second = value;
        return;
    }
    std::size_t used = 0;
    const double v = std::stod(value, &used);
    if (used != value.size())
        throw std::runtime_error("--set " + name + ": not a number: " + value);
    std::map<std::string, double*> reals = {
        {"clerk_lookups", &s.clerk_lookups},
        {"agent_calls", &s.agent_calls},
        {"maternal_visits", &s.maternal_visits},
        {"clerk_code_rate", &s.clerk_code_rate},
        {"agent_code_rate", &s.agent_code_rate},
        {"agent_travel_rate", &s.agent_travel_rate},
        {"back_office_travel_rate", &s.back_office_travel_rate},
        {"walkin_rate", &s.walkin_rate},
        {"back_office_credential_rate", &s.back_office_credential_rate},
        {"month_end_factor", &s.month_end_factor},
        {"month_end_copy_rows", &s.month_end_copy_rows},
        {"quarter_end_factor", &s.quarter_end_factor},
        {"audit_week_factor", &s.audit_week_factor},
        {"campaign_factor", &s.campaign_factor},
        {"reorg_factor", &s.reorg_factor},
        {"nanning_rate", &s.nanning_rate},
        {"after_holiday_factor", &s.after_holiday_factor},
        {"maternal_daily", &s.maternal_daily},
        {"hidden_bulk_factor", &s.hidden_bulk_factor}};
    std::map<std::string, int*> ints = {{"days", &s.days},
                                        {"clerks", &s.clerks},
                                        {"agents", &s.agents},
                                        {"back_office", &s.back_office},
                                        {"maternal", &s.maternal},
                                        {"services", &s.services},
                                        {"dbas", &s.dbas},
                                        {"new_hires", &s.new_hires},
                                        {"role_changes", &s.role_changes},
                                        {"inject", &s.inject},
                                        {"utc_offset_minutes", &s.utc_offset_minutes},
                                        {"start_epoch_day", &s.start_epoch_day},
                                        {"festival_start", &s.festival_start},
                                        {"month_end_days", &s.month_end_days},
                                        {"month_end_copy", &s.month_end_copy},
                                        {"quarter_report", &s.quarter_report},
                                        {"audit_week_start", &s.audit_week_start},
                                        {"audit_week_days", &s.audit_week_days},
                                        {"campaign_start", &s.campaign_start},
                                        {"campaign_days", &s.campaign_days},
                                        {"reorg_day", &s.reorg_day},
                                        {"nanning_start", &s.nanning_start},
                                        {"nanning_max", &s.nanning_max},
                                        {"nanning_same_path", &s.nanning_same_path},
                                        {"maternal_start", &s.maternal_start},
                                        {"crawler_start", &s.crawler_start},
                                        {"departed_day", &s.departed_day},
                                        {"colleague_start", &s.colleague_start},
                                        {"stuffing_day", &s.stuffing_day},
                                        {"hidden_bulk", &s.hidden_bulk},
                                        {"hidden_codes", &s.hidden_codes},
                                        {"hidden_codes_subjects", &s.hidden_codes_subjects}};
    if (auto it = reals.find(name); it != reals.end()) {
        *it->second = v;
    } else if (auto it2 = ints.find(name); it2 != ints.end()) {
        *it2->second = static_cast<int>(v);
    } else {
        throw std::runtime_error("unknown setting " + name);
    }
}

}  // namespace

int main(int argc, char** argv) {
    try {
        Settings s;
        std::string out_path, key_path;
        for (int i = 1; i < argc; ++i) {
            const std::string a = argv[i];
            if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
            if (a == "--seed") {
                s.seed = std::stoull(argv[++i]);
            } else if (a == "--days") {
                s.days = std::stoi(argv[++i]);
            } else if (a == "--out") {
                out_path = argv[++i];
            } else if (a == "--key") {
                key_path = argv[++i];
            } else if (a == "--set") {
                set_option(s, argv[++i]);
            } else {
                throw std::runtime_error("unknown option " + a);
            }
        }
        if (out_path.empty() || key_path.empty()) {
            throw std::runtime_error(
                "usage: insider-gen --out events.jsonl --key key.tsv [--seed N] [--days N] [--set "
                "name=value]");
        }
        std::FILE* out = std::fopen(out_path.c_str(), "wb");
        std::FILE* key = std::fopen(key_path.c_str(), "wb");
        if (!out || !key) throw std::runtime_error("cannot open output files");
        Generator(s).run(out, key);
        std::fclose(out);
        std::fclose(key);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "insider-gen: %s\n", e.what());
        return 1;
    }
}
