// Insider scoring inside the background worker. Every event the worker stores is also fed to the
// PostgreSQL-free scorer (analysis/); alerts go into pii_audit.alerts in the same transaction as
// the events that raised them, with NOTIFY pii_audit_alerts, and a WARNING line in the server log
// once committed. Baselines are saved to pii_audit.scorer_state now and then; after a restart the
// events stored since the last save are learned again from the trail (alerts they raise again
// are recognised by the alerts table's unique key).
//
// The scorer is C++ that may throw (allocation); every call into it is behind a wall that turns
// an exception into "scoring is off until the next reload", with a WARNING. Persisting events
// never depends on it.
// PostgreSQL-free headers first (pg_free.h refuses them after postgres.h).
#include "pii_audit/analysis/scorer.h"

#include "pii_audit_internal.h"

#include "boundary.h"


extern "C" {
#include "access/xact.h"
#include "utils/resowner.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
}

#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace {

namespace analysis = pii_audit::analysis;

// PostgreSQL timestamps count from 2000-01-01, the scorer from 1970-01-01.
constexpr int64 kUnixToPostgresMicros =
    int64{POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE} * SECS_PER_DAY * USECS_PER_SEC;
// Learning again after a restart reads the trail; beyond this many events the oldest are skipped
// (their norms are lost, nothing else).
constexpr int64 kCatchUpMaxEvents = 5000000;
constexpr int kCatchUpChunk = 10000;

struct StoredAlert {
    int64 alert_id;
    analysis::Alert alert;
};

struct ScoringState {
    std::unique_ptr<analysis::Scorer> scorer;
    bool started = false;       // restored and caught up in this process
    bool broken = false;        // an exception stopped scoring until settings are reloaded
    bool warned_not_installed = false;
    TimestampTz last_start_attempt = 0;
    bool reloaded = false;  // the configuration was reloaded since the last start attempt
    // Declared business relations (pii_audit.business_relations_query).
    std::string relations_query;     // the query whose rows were loaded so far
    TimestampTz relations_since = 0;  // latest `since` loaded; 0 with relations_loaded false
    bool relations_loaded = false;
    TimestampTz relations_last_run = 0;
    bool relations_failing = false;   // a WARNING was given; the next success says so
    int64 saved_bytes = 0;
    int64 alerts_raised = 0;
    char last_error[256] = "";
    int64 scored_upto = 0;      // last event id fed (or skipped)
    int64 saved_upto = -1;      // scored_upto of the last saved state
    TimestampTz last_save = 0;
    uint64 inputs_generation = 0;
    // The settings the scorer was built with; a reload that changes them rebuilds it.
    int threshold = -1;
    int team_wait_minutes = -1;
    int utc_offset_minutes = 0;
    std::string sensitive;
    std::string service;
    std::unordered_map<std::string, std::string> peer_groups;  // actor -> peer group
    std::unordered_set<std::string> departed;  // as applied to the scorer
    std::vector<analysis::Alert> pending;      // raised in the open batch transaction
    std::vector<StoredAlert> stored;           // inserted, to be logged after commit
    // Reused per event: views into the batch buffer or into palloc'd rows.
    std::vector<std::string_view> categories;
    std::vector<std::string_view> subjects;
    SPIPlanPtr insert_alert = nullptr;
    std::string save_buffer;  // serialised baselines on their way to scorer_state
    // The team rules' counts last published: a quiet batch that changes them publishes too.
    uint64 published_team = 0;
};

ScoringState* scoring = nullptr;

char failure[256];

// Runs fn; a C++ exception turns scoring off (until a reload) and is reported after the catch.
template <class Fn>
bool guarded(const char* what, Fn&& fn) noexcept {
    failure[0] = '\0';
    return pii_audit::boundary::cpp_call(what, fn, failure, sizeof failure);
}

void publish();

// Changes whenever a signal is held, settled or excused as the team's.
uint64 team_signature(const analysis::ScorerStats& stats) {
    return (static_cast<uint64>(stats.held_now) + 1) * 0x9e3779b97f4a7c15ULL ^
           stats.held_raised * 0xbf58476d1ce4e5b9ULL ^ stats.held_dropped * 0x94d049bb133111ebULL ^
           stats.team_excused;
}

void report_failure() {
    scoring->broken = true;
    strlcpy(scoring->last_error, failure, sizeof scoring->last_error);
    publish();
    // publish() may run guarded steps, which clear failure: the reason is last_error now.
    ereport(WARNING, (errmsg("pii_audit: insider scoring stopped: %s", scoring->last_error),
                      errdetail("Events are still stored; they are not scored."),
                      errhint("Scoring restarts from the last saved baselines on a configuration "
                              "reload (pg_reload_conf()), or by itself after 10 minutes.")));
    scoring->last_start_attempt = GetCurrentTimestamp();
}

std::vector<std::string> split_names(const std::string& list) {
    std::vector<std::string> names;
    pii_audit::for_each_listed_name(list, [&](std::string_view name) { names.emplace_back(name); });
    return names;
}

int current_utc_offset_minutes() {
    pg_time_t now = static_cast<pg_time_t>(time(nullptr));
    struct pg_tm* tm = session_timezone ? pg_localtime(&now, session_timezone) : nullptr;
    return tm ? static_cast<int>(tm->tm_gmtoff / 60) : 0;
}

bool settings_changed() {
    return scoring->threshold != pii_audit_alert_threshold ||
           scoring->team_wait_minutes != pii_audit_team_wait_min ||
           scoring->utc_offset_minutes != current_utc_offset_minutes() ||
           scoring->sensitive != (pii_audit_highly_sensitive_categories
                                      ? pii_audit_highly_sensitive_categories
                                      : "") ||
           scoring->service != (pii_audit_service_peer_groups ? pii_audit_service_peer_groups : "");
}

// Builds the scorer from the settings, carrying over what the previous one learned.
bool build_scorer(const char* state_bytes, size_t state_len) {
    scoring->threshold = pii_audit_alert_threshold;
    scoring->team_wait_minutes = pii_audit_team_wait_min;
    scoring->utc_offset_minutes = current_utc_offset_minutes();
    scoring->sensitive =
        pii_audit_highly_sensitive_categories ? pii_audit_highly_sensitive_categories : "";
    scoring->service = pii_audit_service_peer_groups ? pii_audit_service_peer_groups : "";
    bool ok = guarded("building the scorer", [&] {
        analysis::ScorerConfig config;
        config.threshold = scoring->threshold;
        config.team_wait_minutes = scoring->team_wait_minutes;
        config.utc_offset_minutes = scoring->utc_offset_minutes;
        config.sensitive_categories = split_names(scoring->sensitive);
        config.service_groups = split_names(scoring->service);
        auto fresh = std::make_unique<analysis::Scorer>(config);
        std::string carried = scoring->scorer ? scoring->scorer->save_state() : std::string();
        if (state_bytes) carried.assign(state_bytes, state_len);
        if (!carried.empty()) {
            try {  // inside cpp_call: a state from another version is expected
                fresh->restore_state(carried);
            } catch (const analysis::StateError& e) {  // inside cpp_call
                // Saved by another version of the scorer: start learning again.
                snprintf(failure, sizeof failure, "%s", e.what());
            }
        }
        scoring->scorer = std::move(fresh);
        scoring->departed.clear();  // re-applied from the table by the caller
    });
    if (!ok) {
        report_failure();
        return false;
    }
    if (failure[0] != '\0')
        ereport(WARNING, (errmsg("pii_audit: saved insider baselines were not restored: %s",
                                 failure),
                          errdetail("Scoring starts learning again from new events.")));
    scoring->broken = false;
    return true;
}

// ---------------------------------------------------------------- inputs from tables

// Rows are copied out of SPI into palloc'd memory first, so that no C++ object is alive while
// PostgreSQL may raise an error (SPI, detoasting, palloc); then one guarded C++ step, with no
// PostgreSQL call inside, applies them.
char* text_copy(HeapTuple tuple, TupleDesc desc, int column) {
    bool isnull;
    Datum d = SPI_getbinval(tuple, desc, column, &isnull);
    return isnull ? nullptr : TextDatumGetCString(d);
}

struct InputRow {
    const char* actor;
    const char* group;  // peer_groups: the group
    TimestampTz since;  // departed
    bool cleared;
};

struct KnownEventRow {
    const char* name;
    const char* group;  // NULL: every group
    TimestampTz starts, ends;
};

// Reads pii_audit.peer_groups, pii_audit.departed and pii_audit.known_events (inside a
// transaction, SPI connected).
void load_inputs() {
    uint64 ngroups = 0;
    InputRow* groups = nullptr;
    if (SPI_execute("SELECT actor, peer_group FROM pii_audit.peer_groups", true, 0) ==
        SPI_OK_SELECT) {
        ngroups = SPI_processed;
        groups = static_cast<InputRow*>(palloc0(sizeof(InputRow) * (ngroups + 1)));
        for (uint64 i = 0; i < ngroups; ++i) {
            groups[i].actor = text_copy(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
            groups[i].group = text_copy(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
        }
    }
    uint64 nmarks = 0;
    InputRow* marks = nullptr;
    if (SPI_execute("SELECT actor, departed_at, cleared_at IS NOT NULL FROM pii_audit.departed",
                    true, 0) == SPI_OK_SELECT) {
        nmarks = SPI_processed;
        marks = static_cast<InputRow*>(palloc0(sizeof(InputRow) * (nmarks + 1)));
        for (uint64 i = 0; i < nmarks; ++i) {
            bool isnull;
            marks[i].actor = text_copy(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
            marks[i].since = DatumGetTimestampTz(
                SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
            marks[i].cleared = DatumGetBool(
                SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));
        }
    }
    // An audit database whose objects predate known events has none to load.
    uint64 nevents = 0;
    KnownEventRow* events = nullptr;
    Oid nsp = get_namespace_oid("pii_audit", true);
    if (OidIsValid(nsp) && OidIsValid(get_relname_relid("known_events", nsp)) &&
        SPI_execute("SELECT event_name, peer_group, starts, ends FROM pii_audit.known_events", true,
                    0) == SPI_OK_SELECT) {
        nevents = SPI_processed;
        events = static_cast<KnownEventRow*>(palloc0(sizeof(KnownEventRow) * (nevents + 1)));
        for (uint64 i = 0; i < nevents; ++i) {
            bool isnull;
            events[i].name = text_copy(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
            events[i].group = text_copy(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
            events[i].starts = DatumGetTimestampTz(
                SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));
            events[i].ends = DatumGetTimestampTz(
                SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 4, &isnull));
        }
    }
    char rejected[256] = "";
    bool ok = guarded("loading peer groups, departed accounts and known events", [&] {
        std::unordered_map<std::string, std::string> map;
        for (uint64 i = 0; i < ngroups; ++i)
            if (groups[i].actor != nullptr && groups[i].group != nullptr)
                map.emplace(groups[i].actor, groups[i].group);
        scoring->peer_groups = std::move(map);
        if (!scoring->scorer) return;
        for (uint64 i = 0; i < nmarks; ++i) {
            const InputRow& m = marks[i];
            if (m.actor == nullptr) continue;
            bool applied = scoring->departed.count(m.actor) > 0;
            if (!m.cleared && !applied) {
                scoring->scorer->mark_departed(m.actor, m.since + kUnixToPostgresMicros);
                scoring->departed.insert(m.actor);
            } else if (m.cleared) {
                scoring->scorer->clear_departed(m.actor);
                scoring->departed.erase(m.actor);
            }
        }
        scoring->scorer->clear_known_events();
        for (uint64 i = 0; i < nevents; ++i) {
            const KnownEventRow& e = events[i];
            try {  // inside cpp_call: a bad row is skipped, the others applied
                scoring->scorer->declare_event({e.name ? e.name : "", e.group ? e.group : "",
                                                e.starts + kUnixToPostgresMicros,
                                                e.ends + kUnixToPostgresMicros});
            } catch (const std::invalid_argument& bad) {  // inside cpp_call
                // The table's constraints keep such rows out; one that got in is skipped.
                if (rejected[0] == '\0') snprintf(rejected, sizeof rejected, "%s", bad.what());
            }
        }
    });
    if (!ok) report_failure();
    if (ok && rejected[0] != '\0')
        ereport(WARNING,
                (errmsg("pii_audit: a row of pii_audit.known_events was ignored: %s", rejected)));
}

// ---------------------------------------------------------------- feeding events

analysis::Command command_of(std::string_view c) {
    if (c == "SELECT") return analysis::Command::select;
    if (c == "COPY") return analysis::Command::copy;
    if (c == "INSERT") return analysis::Command::insert;
    if (c == "UPDATE") return analysis::Command::update;
    if (c == "DELETE") return analysis::Command::delete_;
    return analysis::Command::other;
}

std::string_view peer_group_of(std::string_view actor, std::string_view role) {
    if (!scoring->peer_groups.empty()) {
        auto it = scoring->peer_groups.find(std::string(actor));
        if (it != scoring->peer_groups.end()) return it->second;
    }
    return role;
}

// Names arrive in the encoding of the database where they were read; the alerts table (and the
// peer group mapping) use the audit database's.
std::string_view in_audit_encoding(std::string_view value, int encoding) {
    if (value.empty()) return value;
    int len = 0;
    const char* text = pii_audit_in_audit_encoding(value, encoding, &len);
    return std::string_view(text, static_cast<size_t>(len));
}

// What one stored event says, independent of where it came from (queue record or trail row).
struct EventFacts {
    int64 event_id;
    TimestampTz time;
    pii_audit::EventKind kind;
    pii_audit::EventStatus status;
    std::string_view session_user, end_user, application, client_addr, command, relation;
    int32 backend_pid;
    int64 rows;
    // categories and subjects are in scoring->categories / scoring->subjects
};

// What follows from an event's session and statement alone: the same for every event of a group.
struct SharedFacts {
    std::string_view actor;  // empty: the event is not scored
    std::string_view group;
    char session[24];
    analysis::Command command;
};

void derive_shared(const EventFacts& f, SharedFacts& d) {
    d.actor = f.end_user.empty() ? f.session_user : f.end_user;
    d.group = d.actor.empty() ? std::string_view() : peer_group_of(d.actor, f.session_user);
    snprintf(d.session, sizeof d.session, "%d", f.backend_pid);
    d.command = command_of(f.command);
}

void feed_derived(const EventFacts& f, const SharedFacts& d) {
    ScoringState& s = *scoring;
    s.scored_upto = f.event_id;
    const std::string_view actor = d.actor;
    if (actor.empty()) return;
    const std::string_view group = d.group;
    const int64 time_us = f.time + kUnixToPostgresMicros;
    if (f.kind == pii_audit::EventKind::kLogin) {
        analysis::LoginEvent e;
        e.time_us = time_us;
        e.event_id = static_cast<std::uint64_t>(f.event_id);
        e.actor = actor;
        e.peer_group = group;
        e.client_addr = f.client_addr;
        e.success = f.status == pii_audit::EventStatus::kCompleted;
        s.scorer->observe(e, s.pending);
        return;
    }
    if (f.kind != pii_audit::EventKind::kRead) return;
    analysis::AccessEvent e;
    e.time_us = time_us;
    e.event_id = static_cast<std::uint64_t>(f.event_id);
    e.actor = actor;
    e.peer_group = group;
    e.application = f.application;
    e.client_addr = f.client_addr;
    e.relation = f.relation;
    e.session = d.session;
    e.command = d.command;
    e.categories = {s.categories.data(), s.categories.size()};
    e.subjects = {s.subjects.data(), s.subjects.size()};
    e.rows = f.rows;
    e.status = f.status == pii_audit::EventStatus::kCompleted ? analysis::AccessStatus::ok
               : f.status == pii_audit::EventStatus::kDenied  ? analysis::AccessStatus::denied
                                                               : analysis::AccessStatus::error;
    s.scorer->observe(e, s.pending);
}

void feed(const EventFacts& f) {
    SharedFacts d;
    derive_shared(f, d);
    feed_derived(f, d);
}

// The group being fed (pii_audit_scoring_observe with same_group): its first event's facts, with
// views into the batch buffer, valid while that group's events are fed.
struct OpenGroup {
    EventFacts facts{};
    SharedFacts shared{};
};
OpenGroup open_group;

bool scoring_active() {
    return scoring != nullptr && scoring->started && !scoring->broken && pii_audit_scoring &&
           scoring->scorer != nullptr;
}

// Tells pii_audit.scorer_status what scoring is doing.
void publish() {
    ScoringState& s = *scoring;
    ScorerStatus out{};
    const char* state = !pii_audit_scoring       ? "off"
                        : s.warned_not_installed && !s.started ? "not installed"
                        : s.broken               ? "stopped after a failure"
                        : s.started              ? "running"
                                                 : "starting";
    strlcpy(out.state, state, sizeof out.state);
    if (s.scorer) {
        analysis::ScorerStats stats{};
        if (guarded("reading scorer statistics", [&] { stats = s.scorer->stats(false); })) {
            out.actors = static_cast<int64>(stats.actors);
            out.peer_groups = static_cast<int64>(stats.peer_groups);
            out.relations = static_cast<int64>(stats.relations);
            out.signals_held = static_cast<int64>(stats.held_now);
            out.held_raised = static_cast<int64>(stats.held_raised);
            out.held_dropped = static_cast<int64>(stats.held_dropped);
            out.team_excused = static_cast<int64>(stats.team_excused);
            s.published_team = team_signature(stats);
        }
    }
    out.state_bytes = s.saved_bytes;
    out.scored_upto = s.scored_upto;
    out.alerts_raised = s.alerts_raised;
    out.last_save = s.saved_upto >= 0 ? s.last_save : 0;
    out.relations_loaded_at = s.relations_loaded ? s.relations_last_run : 0;
    strlcpy(out.last_error, s.last_error, sizeof out.last_error);
    pii_audit_publish_scorer_status(out);
}

// ---------------------------------------------------------------- catching up from the trail

bool catch_up_from_trail(int64 last_event_id) {
    ScoringState& s = *scoring;
    if (last_event_id - s.scored_upto > kCatchUpMaxEvents) {
        ereport(LOG, (errmsg("pii_audit: %lld events were stored since insider baselines were "
                             "last saved; only the latest %lld are learned again",
                             static_cast<long long>(last_event_id - s.scored_upto),
                             static_cast<long long>(kCatchUpMaxEvents))));
        s.scored_upto = last_event_id - kCatchUpMaxEvents;
    }
    Oid types[1] = {INT8OID};
    char sql[512];
    // One range of ids per chunk: bounded in memory and temporary space whatever the trail's
    // size (ORDER BY ... LIMIT over the view sorted the whole trail, and with a full disk the
    // sort's temporary files failed the worker's start again and again). The range is read
    // through the groups' index on first_event_id (_events_in); a sequential scan of a large
    // trail per chunk would never end.
    snprintf(sql, sizeof sql,
             "SELECT event_id, event_time, kind, status, session_user_name, end_user, "
             "application_name, host(client_addr), backend_pid, command, relation, categories, "
             "row_count, subjects FROM pii_audit._events_in($1, $1 + %d) "
             "WHERE kind IN ('read', 'login') ORDER BY event_id",
             kCatchUpChunk);
    (void)set_config_option("enable_seqscan", "off", PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
                            true, 0, false);
    SPIPlanPtr plan = SPI_prepare(sql, 1, types);
    if (plan == nullptr) return false;
    int64 learned = 0;
    MemoryContext rows_context =
        AllocSetContextCreate(CurrentMemoryContext, "pii_audit catch-up", ALLOCSET_DEFAULT_SIZES);
    for (;;) {
        Datum arg[1] = {Int64GetDatum(s.scored_upto)};
        if (SPI_execute_plan(plan, arg, nullptr, true, 0) != SPI_OK_SELECT) return false;
        if (SPI_processed == 0) {
            // An empty range (gaps, label changes only) is not the end while ids remain.
            if (s.scored_upto + kCatchUpChunk < last_event_id) {
                s.scored_upto += kCatchUpChunk;
                continue;
            }
            break;
        }
        SPITupleTable* table = SPI_tuptable;
        uint64 n = SPI_processed;
        for (uint64 i = 0; i < n; ++i) {
            MemoryContext old = MemoryContextSwitchTo(rows_context);
            HeapTuple row = table->vals[i];
            TupleDesc desc = table->tupdesc;
            bool isnull;
            auto column_text = [&](int col) -> std::string_view {
                bool null;
                Datum d = SPI_getbinval(row, desc, col, &null);
                if (null) return std::string_view();
                char* c = TextDatumGetCString(d);
                return std::string_view(c, strlen(c));
            };
            EventFacts f{};
            f.event_id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
            f.time = DatumGetTimestampTz(SPI_getbinval(row, desc, 2, &isnull));
            f.kind = column_text(3) == "login" ? pii_audit::EventKind::kLogin : pii_audit::EventKind::kRead;
            std::string_view status = column_text(4);
            f.status = status == "completed" ? pii_audit::EventStatus::kCompleted
                       : status == "denied"  ? pii_audit::EventStatus::kDenied
                                             : pii_audit::EventStatus::kFailed;
            f.session_user = column_text(5);
            f.end_user = column_text(6);
            f.application = column_text(7);
            f.client_addr = column_text(8);
            Datum pid = SPI_getbinval(row, desc, 9, &isnull);
            f.backend_pid = isnull ? 0 : DatumGetInt32(pid);
            f.command = column_text(10);
            f.relation = column_text(11);
            s.categories.clear();
            Datum cats = SPI_getbinval(row, desc, 12, &isnull);
            if (!isnull) {
                Datum* items;
                bool* nulls;
                int count;
                deconstruct_array(DatumGetArrayTypeP(cats), TEXTOID, -1, false, TYPALIGN_INT,
                                  &items, &nulls, &count);
                for (int k = 0; k < count; ++k) {
                    if (nulls[k]) continue;
                    char* c = TextDatumGetCString(items[k]);
                    s.categories.emplace_back(c, strlen(c));
                }
            }
            Datum rows = SPI_getbinval(row, desc, 13, &isnull);
            f.rows = isnull ? 0 : DatumGetInt64(rows);
            s.subjects.clear();
            Datum subjects = SPI_getbinval(row, desc, 14, &isnull);
            if (!isnull) {
                Datum* items;
                bool* nulls;
                int count;
                deconstruct_array(DatumGetArrayTypeP(subjects), INT8OID, sizeof(int64),
                                  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &items, &nulls, &count);
                // The same 8 bytes the queue record carries (host order).
                int64* packed = static_cast<int64*>(palloc(sizeof(int64) * (count > 0 ? count : 1)));
                for (int k = 0; k < count; ++k) {
                    packed[k] = DatumGetInt64(items[k]);
                    s.subjects.emplace_back(reinterpret_cast<const char*>(&packed[k]),
                                            sizeof(int64));
                }
            }
            MemoryContextSwitchTo(old);
            if (!guarded("learning from the trail", [&] { feed(f); })) {
                report_failure();
                MemoryContextDelete(rows_context);
                return false;
            }
            MemoryContextReset(rows_context);
            ++learned;
        }
        SPI_freetuptable(table);
    }
    MemoryContextDelete(rows_context);
    s.scored_upto = std::max(s.scored_upto, last_event_id);
    if (learned > 0)
        ereport(LOG, (errmsg("pii_audit: learned again from %lld stored events after a restart",
                             static_cast<long long>(learned))));
    return true;
}

void save_baselines() {
    ScoringState& s = *scoring;
    // Serialised into a member, not a local: the palloc and SPI calls below may raise an
    // error, which must not jump over a live C++ object.
    if (!guarded("saving baselines", [&] { s.save_buffer = s.scorer->save_state(); })) {
        report_failure();
        return;
    }
    const size_t size = s.save_buffer.size();
    s.saved_bytes = static_cast<int64>(size);
    bytea* value = static_cast<bytea*>(palloc(VARHDRSZ + size));
    SET_VARSIZE(value, VARHDRSZ + size);
    memcpy(VARDATA(value), s.save_buffer.data(), size);
    guarded("saving baselines", [&] { std::string().swap(s.save_buffer); });
    Oid types[2] = {INT8OID, BYTEAOID};
    Datum args[2] = {Int64GetDatum(s.scored_upto), PointerGetDatum(value)};
    if (SPI_execute_with_args("UPDATE pii_audit.scorer_state SET scored_upto = $1, "
                              "saved_at = now(), state = $2",
                              2, types, args, nullptr, false, 0) != SPI_OK_UPDATE)
        elog(ERROR, "pii_audit: could not save insider baselines");
    s.saved_upto = s.scored_upto;
    s.last_save = GetCurrentTimestamp();
}

// Runs pii_audit.business_relations_query (inside a transaction, SPI connected) and feeds the
// rows it returns as declared relations. The DBA's query may fail or return the wrong shape:
// it runs in a subtransaction, and a failure is a WARNING, never the end of the worker.
void load_relations(const char* query) {
    ScoringState& s = *scoring;
    if (s.relations_query != query) {
        if (!guarded("remembering the business relations query",
                     [&] { s.relations_query = query; })) {
            report_failure();
            return;
        }
        s.relations_loaded = false;
        s.relations_since = 0;
    }
    if (!pii_audit_subject_key_loaded()) {
        if (!s.relations_failing)
            ereport(WARNING, (errmsg("pii_audit: business relations are not loaded: the server "
                                     "has no subject key to hash their subjects with")));
        s.relations_failing = true;
        return;
    }
    int64 loaded = 0;
    bool scorer_failed = false;
    // The DBA's query runs in a subtransaction: a failure rolls back only it.
    ErrorData* error = pii_audit::boundary::pg_subtransaction([&] {
        Oid types[1] = {TIMESTAMPTZOID};
        Datum args[1] = {TimestampTzGetDatum(s.relations_since)};
        char nulls[2] = {s.relations_loaded ? ' ' : 'n', '\0'};
        int rc = SPI_execute_with_args(query, 1, types, args, nulls, true, 0);
        if (rc != SPI_OK_SELECT)
            ereport(ERROR, (errmsg("it is not a query returning rows")));
        TupleDesc desc = SPI_tuptable->tupdesc;
        if (desc->natts != 3 || SPI_gettypeid(desc, 3) != TIMESTAMPTZOID)
            ereport(ERROR,
                    (errmsg("it must return three columns (actor, subject, since timestamptz)")));
        TimestampTz latest = s.relations_since;
        for (uint64 i = 0; i < SPI_processed; ++i) {
            HeapTuple row = SPI_tuptable->vals[i];
            bool null_since;
            Datum since = SPI_getbinval(row, desc, 3, &null_since);
            char* actor = SPI_getvalue(row, desc, 1);
            char* subject = SPI_getvalue(row, desc, 2);
            if (actor == nullptr || subject == nullptr || null_since || actor[0] == '\0')
                continue;
            // The same keyed hash the events carry for this subject identifier.
            int64 hash = pii_audit_subject_hash(subject, strlen(subject));
            analysis::RelationEvent e;
            e.time_us = DatumGetTimestampTz(since) + kUnixToPostgresMicros;
            e.actor = actor;
            e.subject = std::string_view(reinterpret_cast<const char*>(&hash), sizeof hash);
            if (!guarded("learning business relations", [&] { s.scorer->observe(e); })) {
                scorer_failed = true;
                break;
            }
            if (DatumGetTimestampTz(since) > latest) latest = DatumGetTimestampTz(since);
            ++loaded;
        }
        s.relations_since = latest;
        s.relations_loaded = true;
    });
    if (error != nullptr) {
        if (!s.relations_failing)
            ereport(WARNING,
                    (errmsg("pii_audit: pii_audit.business_relations_query failed: %s",
                            error->message),
                     errdetail("Lookups are judged with the relations loaded so far; the query "
                               "is tried again every pii_audit.business_relations_interval."),
                     errhint("The query runs in database \"%s\", receives $1 timestamptz "
                             "(NULL at first) and returns (actor, subject, since timestamptz).",
                             pii_audit_database)));
        s.relations_failing = true;
        snprintf(s.last_error, sizeof s.last_error, "business_relations_query: %s",
                 error->message);
        FreeErrorData(error);
        return;
    }
    if (scorer_failed) {
        report_failure();
        return;
    }
    if (s.relations_failing) {
        ereport(LOG, (errmsg("pii_audit: pii_audit.business_relations_query works again")));
        s.last_error[0] = '\0';
    }
    s.relations_failing = false;
    if (loaded > 0)
        ereport(DEBUG1, (errmsg("pii_audit: loaded %lld business relations",
                                static_cast<long long>(loaded))));
}

bool relations_due() {
    const char* query = pii_audit_business_relations_query;
    if (query == nullptr || query[0] == '\0' || !scoring_active()) return false;
    if (scoring->relations_query != query) return true;
    return TimestampDifferenceExceeds(scoring->relations_last_run, GetCurrentTimestamp(),
                                      pii_audit_business_relations_interval_s * 1000);
}

void start_scoring(int64 last_event_id) {
    ScoringState& s = *scoring;
    if (!pii_audit_scoring) {
        s.scored_upto = last_event_id;
        return;
    }
    // An installation whose SQL objects predate scoring: store events, score nothing.
    Oid nsp = get_namespace_oid("pii_audit", true);
    if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("alerts", nsp)) ||
        !OidIsValid(get_relname_relid("scorer_state", nsp))) {
        if (!s.warned_not_installed)
            ereport(WARNING,
                    (errmsg("pii_audit: insider scoring is off: the audit database lacks "
                            "pii_audit.alerts or pii_audit.scorer_state"),
                     errhint("Update the extension in database \"%s\".", pii_audit_database)));
        s.warned_not_installed = true;
        s.scored_upto = last_event_id;
        return;
    }
    SPI_connect();
    // The saved state stays in SPI's memory until SPI_finish; no C++ copy lives across SPI.
    const char* state_data = nullptr;
    size_t state_len = 0;
    int64 saved_upto = -1;
    TimestampTz saved_at = 0;
    if (SPI_execute("SELECT scored_upto, state, saved_at FROM pii_audit.scorer_state", true, 1) ==
            SPI_OK_SELECT &&
        SPI_processed == 1) {
        bool null_upto, null_state, null_at;
        Datum upto = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &null_upto);
        Datum bytes = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &null_state);
        Datum at = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &null_at);
        if (!null_upto) saved_upto = DatumGetInt64(upto);
        if (!null_at) saved_at = DatumGetTimestampTz(at);
        if (!null_state) {
            bytea* b = DatumGetByteaPP(bytes);
            state_data = VARDATA_ANY(b);
            state_len = VARSIZE_ANY_EXHDR(b);
        }
    }
    s.scorer.reset();
    if (!build_scorer(state_data, state_len)) {
        SPI_finish();
        return;
    }
    load_inputs();
    s.inputs_generation = pii_audit_scorer_inputs_generation();
    // Never saved: a fresh installation (or scoring newly switched on) learns from now on.
    s.scored_upto = saved_upto >= 0 ? saved_upto : last_event_id;
    s.saved_upto = saved_upto;
    s.started = true;
    if (!catch_up_from_trail(last_event_id)) {
        if (!s.broken) {
            snprintf(failure, sizeof failure, "reading the trail failed");
            report_failure();
        }
    }
    // When the saved baselines were written (scorer_status.last_save); never saved: now, so
    // that the first save comes one interval after the start.
    s.last_save = saved_at != 0 ? saved_at : GetCurrentTimestamp();
    SPI_finish();
}

}  // namespace

// Inside the worker's start-up transaction (SPI not connected). last_event_id: the highest id
// in the trail.
void pii_audit_scoring_start(int64 last_event_id) {
    if (scoring == nullptr) {
        void* memory = MemoryContextAlloc(TopMemoryContext, sizeof(ScoringState));
        scoring = new (memory) ScoringState();
    }
    ScoringState& s = *scoring;
    s.started = false;
    s.relations_loaded = false;
    s.relations_query.clear();
    start_scoring(last_event_id);
    publish();
}

// In the batch transaction, after the event was inserted with this id.
bool pii_audit_scoring_observing(int64 last_event_id) {
    if (scoring == nullptr) return false;
    if (scoring_active()) return true;
    scoring->scored_upto = last_event_id;
    return false;
}

void pii_audit_scoring_observe(int64 event_id, const pii_audit::EventView& event, bool same_group) {
    if (scoring == nullptr) return;
    if (!scoring_active()) {
        scoring->scored_upto = event_id;
        return;
    }
    ScoringState& s = *scoring;
    EventFacts& f = open_group.facts;
    if (!same_group) {
        const int encoding = event.header.source_encoding;
        f = EventFacts{};
        f.kind = static_cast<pii_audit::EventKind>(event.header.kind);
        f.session_user = in_audit_encoding(event.field[pii_audit::kSessionUser], encoding);
        f.end_user = in_audit_encoding(event.field[pii_audit::kEndUser], encoding);
        f.application = event.field[pii_audit::kApplicationName];
        f.client_addr = event.field[pii_audit::kClientAddr];
        f.command = event.field[pii_audit::kCommand];
        f.relation = event.field[pii_audit::kRelation];
        f.backend_pid = event.header.backend_pid;
    }
    f.event_id = event_id;
    f.time = event.header.event_time;
    f.status = static_cast<pii_audit::EventStatus>(event.header.status);
    f.rows = event.header.row_count;
    bool ok = guarded("scoring an event", [&] {
        if (!same_group) {
            s.categories.clear();
            pii_audit::for_each_list_item(event.field[pii_audit::kCategories],
                                          [&](std::string_view c) { s.categories.push_back(c); });
            derive_shared(f, open_group.shared);
        }
        s.subjects.clear();
        std::string_view packed = event.field[pii_audit::kSubjects];
        for (size_t at = 0; at + sizeof(int64) <= packed.size(); at += sizeof(int64))
            s.subjects.push_back(packed.substr(at, sizeof(int64)));
        feed_derived(f, open_group.shared);
    });
    if (!ok) report_failure();
}

// In the batch transaction, before commit: the alerts raised by this batch's events.
void pii_audit_scoring_store_alerts(void) {
    if (scoring == nullptr || scoring->pending.empty()) return;
    ScoringState& s = *scoring;
    SPI_connect();
    if (s.insert_alert == nullptr) {
        Oid types[8] = {TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID,
                        INT4OID,        TEXTOID, TEXTOID, INT8ARRAYOID};
        SPIPlanPtr plan = SPI_prepare(
            "WITH a AS (INSERT INTO pii_audit.alerts (alert_time, actor, peer_group, detector, "
            "score, severity, explanation, evidence) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "ON CONFLICT (actor, detector, alert_time, severity) DO NOTHING RETURNING alert_id) "
            "SELECT alert_id, pg_catalog.pg_notify('pii_audit_alerts', alert_id::text) FROM a",
            8, types);
        if (plan == nullptr || SPI_keepplan(plan) != 0)
            elog(ERROR, "pii_audit: could not prepare the alert insert");
        s.insert_alert = plan;
    }
    for (analysis::Alert& alert : s.pending) {
        std::string_view detector = analysis::detector_name(alert.detector);
        std::string_view severity = analysis::severity_name(alert.severity);
        Datum* evidence =
            static_cast<Datum*>(palloc(sizeof(Datum) * (alert.evidence.empty() ? 1 : alert.evidence.size())));
        for (size_t i = 0; i < alert.evidence.size(); ++i)
            evidence[i] = Int64GetDatum(static_cast<int64>(alert.evidence[i]));
        Datum args[8] = {
            TimestampTzGetDatum(alert.time_us - kUnixToPostgresMicros),
            PointerGetDatum(cstring_to_text_with_len(alert.actor.data(), alert.actor.size())),
            PointerGetDatum(
                cstring_to_text_with_len(alert.peer_group.data(), alert.peer_group.size())),
            PointerGetDatum(cstring_to_text_with_len(detector.data(), detector.size())),
            Int32GetDatum(alert.score),
            PointerGetDatum(cstring_to_text_with_len(severity.data(), severity.size())),
            PointerGetDatum(
                cstring_to_text_with_len(alert.explanation.data(), alert.explanation.size())),
            PointerGetDatum(construct_array(evidence, static_cast<int>(alert.evidence.size()),
                                            INT8OID, sizeof(int64), FLOAT8PASSBYVAL,
                                            TYPALIGN_DOUBLE)),
        };
        if (SPI_execute_plan(s.insert_alert, args, nullptr, false, 0) != SPI_OK_SELECT)
            elog(ERROR, "pii_audit: could not store an alert");
        if (SPI_processed == 1) {
            bool isnull;
            int64 id = DatumGetInt64(
                SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
            ++s.alerts_raised;
            if (!guarded("keeping an alert", [&] { s.stored.push_back({id, std::move(alert)}); }))
                report_failure();
        }
    }
    s.pending.clear();
    SPI_finish();
}

// After the batch committed: one WARNING line per new alert. Names and numbers only: the
// explanation never holds a subject's identifier.
void pii_audit_scoring_after_commit(void) {
    if (scoring == nullptr) return;
    for (const StoredAlert& a : scoring->stored) {
        std::string_view detector = analysis::detector_name(a.alert.detector);
        std::string_view severity = analysis::severity_name(a.alert.severity);
        ereport(WARNING,
                (errmsg("pii_audit alert %lld: %s (peer group %s), %.*s, score %d (%.*s): %s",
                        static_cast<long long>(a.alert_id), a.alert.actor.c_str(),
                        a.alert.peer_group.c_str(), static_cast<int>(detector.size()),
                        detector.data(), a.alert.score, static_cast<int>(severity.size()),
                        severity.data(), a.alert.explanation.c_str())));
    }
    if (!scoring->stored.empty()) publish();
    scoring->stored.clear();
}

// Between batches, outside any transaction: settings reloads, changed peer groups or departed
// accounts, the periodic save of baselines, and a restart of scoring that was off or failed.
// last_event_id: the highest id in the trail.
void pii_audit_scoring_maintain(int64 last_event_id, bool force_save) {
    if (scoring == nullptr || !pii_audit_scoring) return;
    ScoringState& s = *scoring;
    if (!s.started || s.broken) {
        // Missing tables are looked for again every 10 s. After a failure, scoring restarts
        // on a configuration reload, or by itself after 10 minutes (a failure that repeats
        // then costs a WARNING every 10 minutes, never the storing of events).
        TimestampTz now = GetCurrentTimestamp();
        bool retry = s.reloaded ||
                     TimestampDifferenceExceeds(s.last_start_attempt, now,
                                                s.broken ? 600000 : 10000);
        if (!retry) return;
        s.reloaded = false;
        s.last_start_attempt = now;
        // From the last saved baselines, learning again what was stored since.
        pii_audit_worker_begin_transaction();
        pii_audit_scoring_start(last_event_id);
        pii_audit_scoring_store_alerts();
        pii_audit_worker_commit_transaction();
        pii_audit_scoring_after_commit();
        return;
    }
    // Signals held for colleagues to follow are due even when no events come.
    if (scoring_active() && s.scorer->held() > 0) {
        const int64 now_us = GetCurrentTimestamp() + kUnixToPostgresMicros;
        if (!guarded("releasing held signals",
                     [&] { s.scorer->release_held(now_us, s.pending); })) {
            report_failure();
            return;
        }
        if (!s.pending.empty()) {
            pii_audit_worker_begin_transaction();
            pii_audit_scoring_store_alerts();
            pii_audit_worker_commit_transaction();
            pii_audit_scoring_after_commit();
        }
    }
    // What the team rules did in the last batches, for pii_audit.scorer_status.
    if (scoring_active()) {
        analysis::ScorerStats stats{};
        if (guarded("reading scorer statistics", [&] { stats = s.scorer->stats(false); }) &&
            team_signature(stats) != s.published_team) {
            publish();
        }
    }
    bool rebuild = settings_changed();
    bool reload = rebuild || s.inputs_generation != pii_audit_scorer_inputs_generation();
    bool relations = relations_due();
    bool save = s.scored_upto != s.saved_upto &&
                (force_save || TimestampDifferenceExceeds(
                                   s.last_save, GetCurrentTimestamp(),
                                   pii_audit_baseline_save_interval_s * 1000));
    if (!rebuild && !reload && !save && !relations) return;
    // A rebuilt scorer has forgotten the departed accounts: reload re-applies them.
    if (rebuild && !build_scorer(nullptr, 0)) return;
    s.inputs_generation = pii_audit_scorer_inputs_generation();
    if (relations) s.relations_last_run = GetCurrentTimestamp();
    pii_audit_worker_begin_transaction();
    SPI_connect();
    if (reload && scoring_active()) load_inputs();
    if (relations && scoring_active()) load_relations(pii_audit_business_relations_query);
    if (save && scoring_active()) save_baselines();
    SPI_finish();
    pii_audit_worker_commit_transaction();
    publish();
}

// A PostgreSQL error escaped a scoring step; the worker caught it and rolled back the step's
// (sub)transaction. Scoring stops like after a C++ failure; storing carries on.
void pii_audit_scoring_failed(const char* what, const char* message) {
    if (scoring == nullptr) return;
    snprintf(failure, sizeof failure, "%s: %s", what, message);
    scoring->pending.clear();
    scoring->stored.clear();
    // Plans prepared in a rolled-back step may be gone with it; prepare them again.
    scoring->insert_alert = nullptr;
    report_failure();
}

// A batch failed and was rolled back: alerts it raised or stored are gone with it.
void pii_audit_scoring_batch_failed(void) {
    if (scoring == nullptr) return;
    scoring->pending.clear();
    scoring->stored.clear();
}

// The worker reloaded its configuration (SIGHUP). A reload restarts scoring that failed or could
// not start; one that came while scoring ran must not restart a failure that comes later (an
// integration test saw a stale reload turn "stopped after a failure" back into "running" at once).
void pii_audit_scoring_config_reloaded(void) {
    if (scoring != nullptr && (scoring->broken || !scoring->started)) scoring->reloaded = true;
}
