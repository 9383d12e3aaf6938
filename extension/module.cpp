// Entry point: settings, hooks, shared memory and the background worker are all set up here,
// once, while the postmaster loads shared_preload_libraries.
#include "pii_audit_internal.h"
#include "boundary.h"

extern "C" {
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/queryjumble.h"
}

#include <unistd.h>

#include <cstring>

extern "C" {
PG_MODULE_MAGIC;
PGDLLEXPORT void _PG_init(void);
}

bool pii_audit_enabled = true;
char* pii_audit_database = nullptr;
int pii_audit_queue_size_kb = 16384;
int pii_audit_on_queue_full = QUEUE_FULL_WAIT;
int pii_audit_queue_wait_timeout_ms = 1000;
char* pii_audit_end_user = nullptr;
int pii_audit_max_query_length = 4096;
int pii_audit_flush_interval_ms = 200;
int pii_audit_subject_index_slice = 65536;
char* pii_audit_retention = nullptr;
bool pii_audit_fail_on_error = false;
bool pii_audit_test_crash_while_queueing = false;
bool pii_audit_loaded_at_startup = false;
bool pii_audit_scoring = true;
int pii_audit_alert_threshold = 50;
int pii_audit_team_wait_min = 60;
int pii_audit_baseline_save_interval_s = 300;
char* pii_audit_highly_sensitive_categories = nullptr;
char* pii_audit_service_peer_groups = nullptr;
char* pii_audit_business_relations_query = nullptr;
int pii_audit_business_relations_interval_s = 30;
char* pii_audit_server_name_setting = nullptr;
char* pii_audit_forward_conninfo = nullptr;

namespace {

const struct config_enum_entry queue_full_options[] = {
    {"wait", QUEUE_FULL_WAIT, false},
    {"drop", QUEUE_FULL_DROP, false},
    {nullptr, 0, false},
};

constexpr int kMaxEndUserBytes = 127;

// End users are names like "clerk-0421": printable, short, and never used to carry data.
bool check_end_user(char** newval, void**, GucSource) {
    const char* value = *newval;
    if (value == nullptr) return true;
    size_t len = strlen(value);
    if (len > kMaxEndUserBytes) {
        GUC_check_errdetail("pii_audit.end_user is %zu bytes long; at most %d are allowed.", len,
                            kMaxEndUserBytes);
        return false;
    }
    for (size_t i = 0; i < len; ++i) {
        unsigned char c = static_cast<unsigned char>(value[i]);
        if (c < 0x20 || c == 0x7f) {
            GUC_check_errdetail("pii_audit.end_user may not contain control characters.");
            return false;
        }
    }
    return true;
}

bool check_retention(char** newval, void**, GucSource) {
    pii_audit::Retention retention;
    char error[256] = "";
    bool ok = false;
    // The parser allocates: cpp_call keeps its exceptions on this side of the boundary.
    if (!pii_audit::boundary::cpp_call(nullptr, [&] {
            ok = pii_audit::parse_retention(*newval ? *newval : "", &retention, error,
                                            sizeof error);
        }, error, sizeof error))
        ok = false;
    if (!ok) {
        GUC_check_errdetail("%s.", error);
        GUC_check_errhint("For example '400 days', '13 months' or '7 years'; empty keeps every "
                          "event.");
    }
    return ok;
}

bool check_database(char** newval, void**, GucSource) {
    const char* value = *newval;
    if (value == nullptr || value[0] == '\0') {
        GUC_check_errdetail("pii_audit.database must name the database that stores the trail.");
        return false;
    }
    if (strlen(value) >= NAMEDATALEN) {
        GUC_check_errdetail("A database name is at most %d bytes.", NAMEDATALEN - 1);
        return false;
    }
    return true;
}

// Comma-separated names; with categories, each must have a category name's form (the table
// itself is in the audit database, which a setting check cannot read).
bool check_name_list(const char* setting, const char* value, bool category_syntax) {
    if (value == nullptr) return true;
    int count = 0;
    bool ok = true;
    pii_audit::for_each_listed_name(value, [&](std::string_view name) {
        if (!ok) return;
        if (category_syntax && !pii_audit::is_category_name(name)) {
            GUC_check_errdetail("%s lists category names (lowercase letters, digits and "
                                "underscores, starting with a letter), separated by commas; "
                                "\"%.*s\" is not one.",
                                setting, static_cast<int>(name.size()), name.data());
            ok = false;
        } else if (!category_syntax && name.size() >= 128) {
            GUC_check_errdetail("%s lists peer group names of at most 127 bytes.", setting);
            ok = false;
        } else if (++count > 64) {
            GUC_check_errdetail("%s lists at most 64 names.", setting);
            ok = false;
        }
    });
    return ok;
}

bool check_sensitive_categories(char** newval, void**, GucSource) {
    return check_name_list("pii_audit.highly_sensitive_categories", *newval, true);
}

bool check_service_groups(char** newval, void**, GucSource) {
    return check_name_list("pii_audit.service_peer_groups", *newval, false);
}

constexpr size_t kMaxServerNameBytes = 63;

// A server name goes into every event and every SIEM line (a host name field): short, and no
// control characters.
bool check_server_name(char** newval, void**, GucSource) {
    const char* value = *newval;
    if (value == nullptr) return true;
    size_t len = strlen(value);
    if (len > kMaxServerNameBytes) {
        GUC_check_errdetail("pii_audit.server_name is %zu bytes long; at most %zu are allowed.",
                            len, kMaxServerNameBytes);
        return false;
    }
    for (const char* c = value; *c != '\0'; ++c)
        if (static_cast<unsigned char>(*c) < 0x20 || *c == 0x7f) {
            GUC_check_errdetail("pii_audit.server_name must not contain control characters.");
            return false;
        }
    return true;
}

void define_settings() {
    DefineCustomBoolVariable(
        "pii_audit.enabled", "Records reads of columns labelled as personal data.",
        "Turning this off stops auditing; only superusers may change it.", &pii_audit_enabled,
        true, PGC_SUSET, 0, nullptr, nullptr, nullptr);
    DefineCustomStringVariable(
        "pii_audit.database", "Database in which the background worker stores the audit trail.",
        "CREATE EXTENSION pii_audit must be run in this database.", &pii_audit_database,
        "postgres", PGC_POSTMASTER, 0, check_database, nullptr, nullptr);
    DefineCustomIntVariable("pii_audit.queue_size",
                            "Size of the queue between backends and the worker (a file mapped into shared memory).",
                            nullptr, &pii_audit_queue_size_kb, 16384, 256, 1024 * 1024,
                            PGC_POSTMASTER, GUC_UNIT_KB, nullptr, nullptr, nullptr);
    DefineCustomEnumVariable(
        "pii_audit.on_queue_full", "What a backend does when the audit queue is full.",
        "wait: wait up to pii_audit.queue_wait_timeout for space, then drop and count; "
        "drop: drop and count at once.",
        &pii_audit_on_queue_full, QUEUE_FULL_WAIT, queue_full_options, PGC_SUSET, 0, nullptr,
        nullptr, nullptr);
    DefineCustomIntVariable("pii_audit.queue_wait_timeout",
                            "Longest a backend waits for queue space before dropping an event.",
                            nullptr, &pii_audit_queue_wait_timeout_ms, 1000, 0, 60000, PGC_SUSET,
                            GUC_UNIT_MS, nullptr, nullptr, nullptr);
    DefineCustomStringVariable(
        "pii_audit.end_user", "The human on whose behalf this session reads data.",
        "Set by applications that share one database role, e.g. SET pii_audit.end_user = "
        "'clerk-0421'.",
        &pii_audit_end_user, "", PGC_USERSET, 0, check_end_user, nullptr, nullptr);
    DefineCustomIntVariable("pii_audit.max_query_length",
                            "Longest normalized statement text stored per event, in bytes.",
                            nullptr, &pii_audit_max_query_length, 4096, 64, 65536, PGC_SUSET,
                            GUC_UNIT_BYTE, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("pii_audit.flush_interval",
                            "How often the worker wakes to persist events when not signalled.",
                            nullptr, &pii_audit_flush_interval_ms, 200, 10, 60000, PGC_SIGHUP,
                            GUC_UNIT_MS, nullptr, nullptr, nullptr);
    DefineCustomBoolVariable(
        "pii_audit.fail_on_error",
        "Fail the user's statement when its read cannot be audited.",
        "Off: the statement proceeds, a WARNING is logged and the failure is counted in "
        "pii_audit.status.",
        &pii_audit_fail_on_error, false, PGC_SUSET, 0, nullptr, nullptr, nullptr);
    // For the crash test (test/server/crash_queue.sh): superuser only, and a superuser can end
    // the server by other means anyway, so it gives nobody a new power.
    DefineCustomBoolVariable(
        "pii_audit.test_crash_while_queueing",
        "Testing only: the next event queued kills its backend half-written (the server "
        "restarts).",
        nullptr, &pii_audit_test_crash_while_queueing, false, PGC_SUSET,
        GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "pii_audit.max_subjects_per_event",
        "Most subject hashes stored per event; the exact subject count is always stored.",
        "Above this the event is marked subjects_truncated. 0 stores counts only.",
        &pii_audit_max_subjects_per_event, 1000, 0, 100000, PGC_SUSET, 0, nullptr, nullptr,
        nullptr);
    DefineCustomIntVariable(
        "pii_audit.subject_index_slice",
        "Subject entries the worker gathers before it writes them to the subject index.",
        "Reads after the last slice are found by reading their groups, so smaller slices make "
        "subject_access faster on a busy trail; the maintenance process merges 16 slices into "
        "one, twice over. A slice is also written after an hour.",
        &pii_audit_subject_index_slice, 65536, 100, 100000000, PGC_SIGHUP, 0, nullptr, nullptr,
        nullptr);
    DefineCustomStringVariable(
        "pii_audit.retention", "How long the trail keeps events, e.g. '400 days'.",
        "The worker removes whole months of events once all of them are older than this and "
        "every registered export checkpoint has delivered them; each removal is an event of "
        "the trail. Empty keeps every event.",
        &pii_audit_retention, "", PGC_SIGHUP, 0, check_retention, nullptr, nullptr);
    DefineCustomBoolVariable(
        "pii_audit.scoring", "Scores every stored event for insider patterns and raises alerts.",
        "Off: events are stored but not learned from; pii_audit.alerts gets nothing new.",
        &pii_audit_scoring, true, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "pii_audit.alert_threshold",
        "Lowest combined risk score (0-100) that raises an alert.",
        "Severity bands: low below 40, medium 40-69, high 70-89, critical 90 and above.",
        &pii_audit_alert_threshold, 50, 0, 100, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "pii_audit.team_wait",
        "How long a first mover's volume signal on a bulk day waits for colleagues to follow.",
        "When the same shift is made by enough colleagues meanwhile, it is the team's and is "
        "dropped; otherwise it is raised with its original time. 0 raises at once.",
        &pii_audit_team_wait_min, 60, 0, 24 * 60, PGC_SIGHUP, GUC_UNIT_MIN, nullptr, nullptr,
        nullptr);
    DefineCustomIntVariable(
        "pii_audit.baseline_save_interval",
        "How often the worker saves learned baselines to pii_audit.scorer_state.",
        "After a crash, events stored since the last save are learned again from the trail.",
        &pii_audit_baseline_save_interval_s, 300, 10, 86400, PGC_SIGHUP, GUC_UNIT_S, nullptr,
        nullptr, nullptr);
    DefineCustomStringVariable(
        "pii_audit.highly_sensitive_categories",
        "Categories whose reads are judged on their own (verification codes, credentials).",
        "Comma-separated category names.", &pii_audit_highly_sensitive_categories,
        "verification_code, credential", PGC_SIGHUP, 0, check_sensitive_categories, nullptr,
        nullptr);
    DefineCustomStringVariable(
        "pii_audit.service_peer_groups",
        "Peer groups of machine accounts, whose regular cadence is not suspicious.",
        "Comma-separated peer group names (login roles unless pii_audit.peer_groups maps "
        "actors elsewhere).",
        &pii_audit_service_peer_groups, "", PGC_SIGHUP, 0, check_service_groups, nullptr,
        nullptr);
    DefineCustomStringVariable(
        "pii_audit.business_relations_query",
        "Query giving actor-subject business relations (tickets, appointments) for scoring.",
        "Run by the worker in the audit database; returns (actor text, subject text, "
        "since timestamptz) and receives $1 timestamptz, the latest since already loaded "
        "(NULL at first). Empty: no relations, lookups are not checked for a reason.",
        &pii_audit_business_relations_query, "", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "pii_audit.business_relations_interval",
        "How often the worker runs pii_audit.business_relations_query.", nullptr,
        &pii_audit_business_relations_interval_s, 30, 1, 3600, PGC_SIGHUP, GUC_UNIT_S, nullptr,
        nullptr, nullptr);
    DefineCustomStringVariable(
        "pii_audit.server_name", "The name events of this server are stored with.",
        "Shown as server_name in every view and export, also for events a standby forwards to "
        "its primary. Empty: cluster_name, or the host name when cluster_name is empty.",
        &pii_audit_server_name_setting, "", PGC_SIGHUP, 0, check_server_name, nullptr, nullptr);
    DefineCustomStringVariable(
        "pii_audit.forward_conninfo",
        "On a standby: the connection to the primary that the worker hands events to.",
        "Empty: primary_conninfo, with user=pii_audit_forwarder and dbname=pii_audit.database.",
        &pii_audit_forward_conninfo, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY, nullptr, nullptr, nullptr);
    MarkGUCPrefixReserved("pii_audit");
}

}  // namespace

const char* pii_audit_local_server_name(void) {
    static char name[256];
    const char* chosen = pii_audit_server_name_setting;
    if (chosen == nullptr || chosen[0] == '\0')
        chosen = GetConfigOption("cluster_name", true, false);
    if (chosen != nullptr && chosen[0] != '\0') {
        if (strcmp(name, chosen) != 0) strlcpy(name, chosen, sizeof name);
        return name;
    }
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0')
        strlcpy(host, "localhost", sizeof host);
    if (strcmp(name, host) != 0) strlcpy(name, host, sizeof name);
    return name;
}

extern "C" void _PG_init(void) {
    // Loaded later (CREATE EXTENSION without preloading): install nothing, so the extension's
    // own check can refuse with a message that says what to configure.
    if (!process_shared_preload_libraries_in_progress) return;
    pii_audit_loaded_at_startup = true;

    define_settings();
    EnableQueryId();
    pii_audit_request_shmem();
    pii_audit_label_cache_init();
    pii_audit_install_capture_hooks();
    pii_audit_load_subject_key();
    pii_audit_install_subject_hooks();
    pii_audit_register_label_provider();
    pii_audit_register_worker();
}
