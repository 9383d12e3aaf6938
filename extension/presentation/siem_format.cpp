// SIEM export formats (see include/pii_audit/siem_format.h and the README, "For SIEM teams").
// PostgreSQL-free: no PostgreSQL header is included here.
#include "pii_audit/siem_format.h"

#include "pii_audit/civil_time.h"

#include <charconv>
#include <cstring>

namespace pii_audit::siem {

namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
constexpr std::string_view kProduct = "pii_audit";
// RFC 5424 structured data needs an SD-ID with an enterprise number: 32473 is the one RFC 5612
// reserves for documentation and examples, used until pii_audit has its own.
constexpr std::string_view kSdId = "pii_audit@32473";
constexpr int kSyslogFacility = 13;  // log audit

// The length of the UTF-8 character starting at s (1 to 4), or 0 when the bytes there are not
// one (a stray continuation byte, an overlong form, a surrogate, past U+10FFFF, cut short).
inline std::size_t utf8_length(const unsigned char* s, std::size_t n) noexcept {
    const unsigned c = s[0];
    if (c < 0x80) return 1;
    auto cont = [&](std::size_t i) { return i < n && (s[i] & 0xC0) == 0x80; };
    if (c < 0xC2) return 0;
    if (c < 0xE0) return cont(1) ? 2 : 0;
    if (c < 0xF0) {
        if (!cont(1) || !cont(2)) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0;   // overlong
        if (c == 0xED && s[1] >= 0xA0) return 0;  // surrogate
        return 3;
    }
    if (c < 0xF5) {
        if (!cont(1) || !cont(2) || !cont(3)) return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0;   // overlong
        if (c == 0xF4 && s[1] >= 0x90) return 0;  // past U+10FFFF
        return 4;
    }
    return 0;
}

// Walks text as UTF-8: runs of characters that need nothing are appended as they are, every
// ASCII byte for which special(b) is true goes to escape(out, b), every invalid byte becomes
// U+FFFD.
template <class Special, class Escape>
void escape_text(std::string& out, std::string_view text, Special special, Escape escape) {
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    std::size_t run = 0;
    std::size_t i = 0;
    while (i < n) {
        const unsigned char b = s[i];
        if (b < 0x80) {
            if (!special(b)) {
                ++i;
                continue;
            }
            out.append(text.data() + run, i - run);
            escape(out, b);
            run = ++i;
            continue;
        }
        const std::size_t len = utf8_length(s + i, n - i);
        if (len != 0) {
            i += len;
            continue;
        }
        out.append(text.data() + run, i - run);
        out.append(kReplacement);
        run = ++i;
    }
    out.append(text.data() + run, n - run);
}

inline bool is_control(unsigned char b) noexcept { return b < 0x20 || b == 0x7F; }

template <class Int>
void append_int(std::string& out, Int value) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, value);
    out.append(buf, static_cast<std::size_t>(r.ptr - buf));
}

void append_2(std::string& out, unsigned v) {
    out.push_back(static_cast<char>('0' + v / 10));
    out.push_back(static_cast<char>('0' + v % 10));
}

void append_year(std::string& out, std::int64_t year) {
    if (year >= 0 && year <= 9999) {
        append_2(out, static_cast<unsigned>(year / 100));
        append_2(out, static_cast<unsigned>(year % 100));
    } else {
        append_int(out, year);
    }
}

std::int64_t millis(std::int64_t unix_micros) {
    return unix_micros >= 0 ? unix_micros / 1000 : -((-unix_micros + 999) / 1000);
}

// Nov 30 2026 10:07:01.123 UTC: LEEF's devTime without a devTimeFormat.
void append_leef_time(std::string& out, std::int64_t unix_micros) {
    static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const CivilTime c = civil_time(unix_micros);
    out.append(kMonths[c.month - 1]);
    out.push_back(' ');
    append_2(out, c.day);
    out.push_back(' ');
    append_year(out, c.year);
    out.push_back(' ');
    append_2(out, c.hour);
    out.push_back(':');
    append_2(out, c.minute);
    out.push_back(':');
    append_2(out, c.second);
    out.push_back('.');
    const unsigned ms = c.micros / 1000;
    out.push_back(static_cast<char>('0' + ms / 100));
    append_2(out, ms % 100);
    out.append(" UTC");
}

// A list as one text field in the line formats: items separated by commas, an item that holds
// a comma, a double quote, a line break or leading or trailing spaces in double quotes with its
// double quotes doubled (CSV, RFC 4180). The format's own escaping applies on top.
std::string& csv_scratch() {
    thread_local std::string scratch;
    return scratch;
}

std::string_view csv(const TextList& list) {
    std::string& s = csv_scratch();
    s.clear();
    for (std::size_t i = 0; i < list.size; ++i) {
        if (i > 0) s.push_back(',');
        std::string_view item = list.items[i];
        bool quote = !item.empty() && (item.front() == ' ' || item.back() == ' ');
        for (char c : item)
            if (c == ',' || c == '"' || c == '\n' || c == '\r') quote = true;
        if (!quote) {
            s.append(item);
            continue;
        }
        s.push_back('"');
        for (char c : item) {
            if (c == '"') s.push_back('"');
            s.push_back(c);
        }
        s.push_back('"');
    }
    return s;
}

std::string& id_scratch() {
    thread_local std::string scratch;
    return scratch;
}

std::string_view id_list(const IdList& list) {
    std::string& s = id_scratch();
    s.clear();
    for (std::size_t i = 0; i < list.size; ++i) {
        if (i > 0) s.push_back(',');
        append_int(s, list.items[i]);
    }
    return s;
}

const char* kind_name(EventKind kind) {
    switch (kind) {
        case EventKind::read:
            return "read";
        case EventKind::login:
            return "login";
        case EventKind::label_change:
            return "label_change";
        case EventKind::gap:
            return "gap";
        case EventKind::removal:
            return "removal";
    }
    return "read";
}

bool succeeded(std::string_view status) { return status == "completed"; }

// ------------------------------------------------------------------ JSON writer
class Json {
  public:
    explicit Json(std::string& out) : out_(out) {
        out_.push_back('{');
        first_[0] = true;
    }
    void finish() { out_.push_back('}'); }

    void begin(std::string_view k) {
        key(k);
        out_.push_back('{');
        first_[++depth_] = true;
    }
    void end() {
        out_.push_back('}');
        --depth_;
    }
    void str(std::string_view k, std::string_view v) {
        key(k);
        append_json_string(out_, v);
    }
    void str(std::string_view k, const std::optional<std::string_view>& v) {
        if (v) str(k, *v);
    }
    void str(std::string_view k, const std::string& v) { str(k, std::string_view(v)); }
    // Names this code chooses itself (no escaping needed).
    void raw_str(std::string_view k, std::string_view v) {
        key(k);
        out_.push_back('"');
        out_.append(v);
        out_.push_back('"');
    }
    void num(std::string_view k, std::int64_t v) {
        key(k);
        append_int(out_, v);
    }
    template <class T>
    void num(std::string_view k, const std::optional<T>& v) {
        if (v) num(k, static_cast<std::int64_t>(*v));
    }
    void num_str(std::string_view k, std::int64_t v) {
        key(k);
        out_.push_back('"');
        append_int(out_, v);
        out_.push_back('"');
    }
    void boolean(std::string_view k, bool v) {
        key(k);
        out_.append(v ? "true" : "false");
    }
    void boolean(std::string_view k, const std::optional<bool>& v) {
        if (v) boolean(k, *v);
    }
    void time(std::string_view k, std::int64_t unix_micros) {
        key(k);
        out_.push_back('"');
        append_iso8601(out_, unix_micros);
        out_.push_back('"');
    }
    void strings(std::string_view k, const TextList& list) {
        key(k);
        out_.push_back('[');
        for (std::size_t i = 0; i < list.size; ++i) {
            if (i > 0) out_.push_back(',');
            append_json_string(out_, list.items[i]);
        }
        out_.push_back(']');
    }
    void strings(std::string_view k, const std::optional<TextList>& list) {
        if (list) strings(k, *list);
    }
    // 64-bit hashes as strings: JSON readers that hold numbers as doubles would round them.
    void id_strings(std::string_view k, const IdList& list) {
        key(k);
        out_.push_back('[');
        for (std::size_t i = 0; i < list.size; ++i) {
            if (i > 0) out_.push_back(',');
            out_.push_back('"');
            append_int(out_, list.items[i]);
            out_.push_back('"');
        }
        out_.push_back(']');
    }
    void ids(std::string_view k, const IdList& list) {
        key(k);
        out_.push_back('[');
        for (std::size_t i = 0; i < list.size; ++i) {
            if (i > 0) out_.push_back(',');
            append_int(out_, list.items[i]);
        }
        out_.push_back(']');
    }
    // ["a","b"] of names this code chooses.
    void raw_array(std::string_view k, std::initializer_list<std::string_view> items) {
        key(k);
        out_.push_back('[');
        bool first = true;
        for (auto item : items) {
            if (!first) out_.push_back(',');
            first = false;
            out_.push_back('"');
            out_.append(item);
            out_.push_back('"');
        }
        out_.push_back(']');
    }
    // related.user: the distinct names present, or nothing.
    void related_users(std::initializer_list<std::optional<std::string_view>> names) {
        std::string_view seen[4];
        std::size_t count = 0;
        for (const auto& name : names) {
            if (!name) continue;
            bool dup = false;
            for (std::size_t i = 0; i < count; ++i) dup = dup || seen[i] == *name;
            if (!dup && count < 4) seen[count++] = *name;
        }
        if (count == 0) return;
        begin("related");
        strings("user", TextList{seen, count});
        end();
    }
    std::string& out() { return out_; }

  private:
    void key(std::string_view k) {
        if (!first_[depth_]) out_.push_back(',');
        first_[depth_] = false;
        out_.push_back('"');
        out_.append(k);
        out_.append("\":");
    }
    std::string& out_;
    bool first_[8] = {};
    int depth_ = 0;
};

// ------------------------------------------------------------------ json (ECS)
void ecs_event(const Origin& origin, const TrailEvent& e, std::string& out) {
    Json j(out);
    j.time("@timestamp", e.event_time);
    const bool ok = succeeded(e.status);
    j.begin("event");
    j.num_str("id", e.event_id);
    j.num("sequence", e.event_id);
    j.raw_str("kind", "event");
    j.raw_str("module", kProduct);
    j.raw_str("dataset", "pii_audit.trail");
    switch (e.kind) {
        case EventKind::read:
            j.raw_array("category", {"database"});
            j.raw_array("type", {"access"});
            j.raw_str("action", "read");
            break;
        case EventKind::login:
            j.raw_array("category", {"authentication"});
            j.raw_array("type", {"start"});
            j.raw_str("action", "login");
            break;
        case EventKind::label_change:
            j.raw_array("category", {"configuration", "database"});
            j.raw_array("type", {"change"});
            j.raw_str("action", "label_change");
            break;
        case EventKind::gap:
            j.raw_array("category", {"database"});
            j.raw_array("type", {"error"});
            j.raw_str("action", "events_lost");
            break;
        case EventKind::removal:
            j.raw_array("category", {"database"});
            j.raw_array("type", {"deletion"});
            j.raw_str("action", "events_removed");
            break;
    }
    j.raw_str("outcome", ok ? "success" : "failure");
    if (e.recorded_at) j.time("created", *e.recorded_at);
    j.end();
    // host: where the read happened; observer: the trail's server, named when it is another
    // (a read on a hot standby, stored by its primary).
    const std::string_view host = e.server_name.value_or(origin.server_name);
    j.begin("host");
    j.str("name", host);
    j.end();
    j.begin("observer");
    if (host != origin.server_name) j.str("name", origin.server_name);
    j.raw_str("vendor", kProduct);
    j.raw_str("product", kProduct);
    j.str("version", origin.product_version);
    j.end();
    if (e.session_user_name || e.current_user_name) {
        j.begin("user");
        j.str("name", e.session_user_name);
        if (e.current_user_name) {
            j.begin("effective");
            j.str("name", e.current_user_name);
            j.end();
        }
        j.end();
    }
    if (e.client_addr) {
        j.begin("source");
        j.str("ip", *e.client_addr);
        j.end();
    }
    if (e.backend_pid) {
        j.begin("process");
        j.num("pid", e.backend_pid);
        j.end();
    }
    if (e.database_name || e.command || e.relation || e.query_text) {
        j.begin("db");
        j.str("name", e.database_name);
        j.str("operation", e.command);
        if (e.relation) {
            j.begin("sql");
            j.str("table", *e.relation);
            j.end();
        }
        j.str("statement", e.query_text);
        j.end();
    }
    // Every name of a person or role the event mentions, for ECS's cross-source searches.
    j.related_users({e.session_user_name, e.current_user_name, e.end_user});
    j.begin("pii_audit");
    j.raw_str("kind", kind_name(e.kind));
    j.str("status", e.status);
    j.str("end_user", e.end_user);
    j.str("application_name", e.application_name);
    j.str("relation", e.relation);
    j.strings("columns", e.columns);
    j.strings("categories", e.categories);
    j.num("row_count", e.row_count);
    // A 64-bit identifier: a string, as JSON readers that hold numbers as doubles would round it.
    if (e.query_id) j.num_str("query_id", *e.query_id);
    j.boolean("query_truncated", e.query_truncated);
    j.num("nesting_level", e.nesting_level);
    j.str("detail", e.detail);
    j.num("subject_count", e.subject_count);
    if (e.subjects) j.id_strings("subjects", *e.subjects);
    j.boolean("subjects_truncated", e.subjects_truncated);
    j.boolean("subject_count_estimated", e.subject_count_estimated);
    j.str("server_name", host);
    j.end();
    j.finish();
}

const char* alert_change_name(AlertChange change) {
    return change == AlertChange::raised ? "raised" : "status";
}

// Elastic's convention for event.severity of alerts (its detection rules use the same bands).
int ecs_alert_severity(std::string_view severity) {
    if (severity == "critical") return 99;
    if (severity == "high") return 73;
    if (severity == "medium") return 47;
    return 21;
}

void ecs_alert(const Origin& origin, const AlertEvent& a, std::string& out) {
    Json j(out);
    j.time("@timestamp", a.event_time);
    j.begin("event");
    j.num_str("id", a.alert_event_id);
    j.num("sequence", a.alert_event_id);
    j.raw_str("kind", "alert");
    j.raw_str("module", kProduct);
    j.raw_str("dataset", "pii_audit.alerts");
    j.raw_array("category", {"intrusion_detection"});
    j.raw_array("type", {"info"});
    j.raw_str("action", a.change == AlertChange::raised ? "alert_raised" : "alert_status_changed");
    j.num("risk_score", a.score);
    j.num("severity", ecs_alert_severity(a.severity));
    j.time("start", a.alert_time);
    j.end();
    j.str("message", a.explanation);
    j.begin("rule");
    j.str("name", a.detector);
    j.end();
    j.begin("user");
    j.str("name", a.actor);
    j.end();
    j.begin("host");
    j.str("name", origin.server_name);
    j.end();
    j.begin("observer");
    j.raw_str("vendor", kProduct);
    j.raw_str("product", kProduct);
    j.str("version", origin.product_version);
    j.end();
    j.begin("pii_audit");
    j.raw_str("kind", "alert");
    j.raw_str("change", alert_change_name(a.change));
    j.num("alert_id", a.alert_id);
    j.str("actor", a.actor);
    j.str("peer_group", a.peer_group);
    j.str("detector", a.detector);
    j.num("score", a.score);
    j.str("severity", a.severity);
    j.ids("evidence", a.evidence);
    j.str("status", a.status);
    j.str("status_by", a.status_by);
    if (a.status_at) j.time("status_at", *a.status_at);
    j.str("note", a.note);
    j.str("server_name", origin.server_name);
    j.end();
    j.finish();
}

// ------------------------------------------------------------------ ocsf 1.3.0
struct OcsfClass {
    int category_uid;
    const char* category_name;
    int class_uid;
    const char* class_name;
};
constexpr OcsfClass kDatastoreActivity{6, "Application Activity", 6005, "Datastore Activity"};
constexpr OcsfClass kAuthentication{3, "Identity & Access Management", 3002, "Authentication"};
constexpr OcsfClass kEntityManagement{3, "Identity & Access Management", 3004, "Entity Management"};
constexpr OcsfClass kEventLogActivity{1, "System Activity", 1008, "Event Log Activity"};
constexpr OcsfClass kDetectionFinding{2, "Findings", 2004, "Detection Finding"};

const char* ocsf_severity_name(int id) {
    switch (id) {
        case 1:
            return "Informational";
        case 2:
            return "Low";
        case 3:
            return "Medium";
        case 4:
            return "High";
        case 5:
            return "Critical";
        default:
            return "Unknown";
    }
}

// class, activity, type_uid = class_uid * 100 + activity_id, severity, time, metadata.
void ocsf_head(Json& j, const Origin& origin, const OcsfClass& c, int activity_id,
               const char* activity_name, int severity_id, std::int64_t time_micros,
               std::int64_t uid, std::optional<std::int64_t> logged_micros, const char* log_name) {
    j.num("category_uid", c.category_uid);
    j.raw_str("category_name", c.category_name);
    j.num("class_uid", c.class_uid);
    j.raw_str("class_name", c.class_name);
    j.num("activity_id", activity_id);
    j.raw_str("activity_name", activity_name);
    j.num("type_uid", static_cast<std::int64_t>(c.class_uid) * 100 + activity_id);
    std::string& out = j.out();
    out.append(",\"type_name\":\"");
    out.append(c.class_name);
    out.append(": ");
    // type_uid's caption names the activity by its id's caption: 99 is always Other, whatever
    // activity_name says.
    out.append(activity_id == 99 ? "Other" : activity_name);
    out.push_back('"');
    j.num("severity_id", severity_id);
    j.raw_str("severity", ocsf_severity_name(severity_id));
    j.num("time", millis(time_micros));
    j.begin("metadata");
    j.raw_str("version", kOcsfVersion);
    j.num_str("uid", uid);
    j.raw_str("log_name", log_name);
    j.raw_str("log_provider", kProduct);
    if (logged_micros) j.num("logged_time", millis(*logged_micros));
    // In the IAM classes actor comes with the host profile: say it is used.
    if (c.category_uid == 3) j.raw_array("profiles", {"host"});
    j.begin("product");
    j.raw_str("name", kProduct);
    j.raw_str("vendor_name", kProduct);
    j.str("version", origin.product_version);
    j.end();
    j.end();
}

void ocsf_status(Json& j, std::string_view status) {
    const bool ok = succeeded(status);
    j.num("status_id", ok ? 1 : 2);
    j.raw_str("status", ok ? "Success" : "Failure");
    if (!ok) j.str("status_detail", status);
}

// A client: its address, or "[local]" for a Unix-socket connection (no address), as psql shows.
void ocsf_src_endpoint(Json& j, const TrailEvent& e) {
    j.begin("src_endpoint");
    if (e.client_addr)
        j.str("ip", *e.client_addr);
    else
        j.raw_str("name", "[local]");
    j.end();
}

// A DNS host name (OCSF's hostname_t): labels of letters, digits and inner hyphens.
bool is_hostname(std::string_view name) {
    if (name.empty() || name.size() > 253) return false;
    std::size_t label = 0;
    char previous = '.';
    for (char c : name) {
        const bool alnum =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (c == '.') {
            if (label == 0 || previous == '-') return false;
            label = 0;
        } else if (alnum || (c == '-' && label > 0)) {
            ++label;
        } else {
            return false;
        }
        previous = c;
    }
    return label > 0 && previous != '-';
}

// The server as an endpoint or device: hostname when its name is one, else name.
void ocsf_server_name(Json& j, const Origin& origin) {
    if (is_hostname(origin.server_name))
        j.str("hostname", origin.server_name);
    else
        j.str("name", origin.server_name);
}

void ocsf_dst_endpoint(Json& j, const Origin& origin) {
    j.begin("dst_endpoint");
    ocsf_server_name(j, origin);
    j.raw_str("svc_name", "postgresql");
    j.end();
}

// What OCSF has no attribute for, under unmapped.pii_audit (the json format's names).
void ocsf_unmapped(Json& j, const Origin& origin, const TrailEvent& e) {
    j.begin("unmapped");
    j.begin("pii_audit");
    j.num("event_id", e.event_id);
    j.raw_str("kind", kind_name(e.kind));
    j.str("status", e.status);
    j.str("database_name", e.database_name);
    j.str("session_user_name", e.session_user_name);
    j.str("current_user_name", e.current_user_name);
    j.str("end_user", e.end_user);
    j.str("application_name", e.application_name);
    j.num("backend_pid", e.backend_pid);
    j.str("command", e.command);
    j.strings("columns", e.columns);
    j.strings("categories", e.categories);
    j.num("row_count", e.row_count);
    j.boolean("query_truncated", e.query_truncated);
    j.num("nesting_level", e.nesting_level);
    j.str("detail", e.detail);
    j.num("subject_count", e.subject_count);
    if (e.subjects) j.id_strings("subjects", *e.subjects);
    j.boolean("subjects_truncated", e.subjects_truncated);
    j.boolean("subject_count_estimated", e.subject_count_estimated);
    j.str("server_name", origin.server_name);
    j.end();
    j.end();
}

void ocsf_actor(Json& j, const TrailEvent& e) {
    if (!e.session_user_name && !e.application_name) return;
    j.begin("actor");
    if (e.session_user_name) {
        j.begin("user");
        j.str("name", *e.session_user_name);
        j.end();
    }
    j.str("app_name", e.application_name);
    j.end();
}

void ocsf_event(const Origin& origin, const TrailEvent& e, std::string& out) {
    Json j(out);
    const bool ok = succeeded(e.status);
    switch (e.kind) {
        case EventKind::read: {
            ocsf_head(j, origin, kDatastoreActivity, 1, "Read", e.status == "denied" ? 3 : 1,
                      e.event_time, e.event_id, e.recorded_at, "pii_audit.events");
            ocsf_status(j, e.status);
            // actor is required: the login role, else the application, else "unknown".
            if (e.session_user_name || e.application_name) {
                ocsf_actor(j, e);
            } else {
                j.begin("actor");
                j.begin("user");
                j.raw_str("name", "unknown");
                j.end();
                j.end();
            }
            ocsf_src_endpoint(j, e);
            ocsf_dst_endpoint(j, origin);
            j.begin("database");
            if (e.database_name) j.str("name", *e.database_name);
            j.num("type_id", 1);
            j.raw_str("type", "Relational");
            j.end();
            if (e.relation) {
                j.begin("table");
                j.str("name", *e.relation);
                j.end();
            }
            j.num("type_id", 3);
            j.raw_str("type", "Table");
            if (e.query_text) {
                j.begin("query_info");
                j.str("query_string", *e.query_text);
                if (e.query_id) j.num_str("uid", *e.query_id);
                j.end();
            }
            break;
        }
        case EventKind::login:
            ocsf_head(j, origin, kAuthentication, 1, "Logon", ok ? 1 : 2, e.event_time, e.event_id,
                      e.recorded_at, "pii_audit.events");
            ocsf_status(j, e.status);
            j.begin("user");
            j.str("name", e.session_user_name.value_or(std::string_view("unknown")));
            j.end();
            if (e.application_name) {
                j.begin("actor");
                j.str("app_name", *e.application_name);
                j.end();
            }
            ocsf_src_endpoint(j, e);
            ocsf_dst_endpoint(j, origin);
            break;
        case EventKind::label_change: {
            ocsf_head(j, origin, kEntityManagement, 3, "Update", 3, e.event_time, e.event_id,
                      e.recorded_at, "pii_audit.events");
            ocsf_status(j, e.status);
            ocsf_actor(j, e);
            ocsf_src_endpoint(j, e);
            j.begin("entity");
            // relation.column: the labelled column.
            thread_local std::string name;
            name.assign(e.relation.value_or(std::string_view()));
            if (e.columns && e.columns->size > 0) {
                name.push_back('.');
                name.append(e.columns->items[0]);
            }
            j.str("name", name);
            j.raw_str("type", "Security Label");
            j.end();
            j.str("comment", e.detail);
            break;
        }
        case EventKind::gap:
            ocsf_head(j, origin, kEventLogActivity, 99, "Events Lost", 4, e.event_time, e.event_id,
                      e.recorded_at, "pii_audit.events");
            ocsf_status(j, e.status);
            j.begin("actor");
            j.raw_str("app_name", "pii_audit worker");
            j.end();
            j.begin("device");
            ocsf_server_name(j, origin);
            j.num("type_id", 1);
            j.raw_str("type", "Server");
            j.end();
            j.raw_str("log_name", "pii_audit.events");
            j.raw_str("log_provider", kProduct);
            if (e.row_count && *e.row_count >= 0 && *e.row_count <= 2147483647)
                j.num("count", *e.row_count);
            j.str("message", e.detail);
            break;
        case EventKind::removal:
            // Old events deleted from the trail: the log's Delete activity.
            ocsf_head(j, origin, kEventLogActivity, 2, "Delete", 3, e.event_time, e.event_id,
                      e.recorded_at, "pii_audit.events");
            ocsf_status(j, e.status);
            j.begin("actor");
            if (e.session_user_name) {
                j.begin("user");
                j.str("name", *e.session_user_name);
                j.end();
            }
            j.raw_str("app_name", e.session_user_name ? "pii_audit" : "pii_audit worker");
            j.end();
            j.begin("device");
            ocsf_server_name(j, origin);
            j.num("type_id", 1);
            j.raw_str("type", "Server");
            j.end();
            j.raw_str("log_name", "pii_audit.events");
            j.raw_str("log_provider", kProduct);
            if (e.row_count && *e.row_count >= 0 && *e.row_count <= 2147483647)
                j.num("count", *e.row_count);
            j.str("message", e.detail);
            break;
    }
    ocsf_unmapped(j, origin, e);
    j.finish();
}

int ocsf_alert_severity(std::string_view severity) {
    if (severity == "critical") return 5;
    if (severity == "high") return 4;
    if (severity == "medium") return 3;
    return 2;
}

void ocsf_alert(const Origin& origin, const AlertEvent& a, std::string& out) {
    Json j(out);
    int activity = 1;
    const char* activity_name = "Create";
    if (a.change == AlertChange::status) {
        activity = a.status == "closed" ? 3 : 2;
        activity_name = a.status == "closed" ? "Close" : "Update";
    }
    ocsf_head(j, origin, kDetectionFinding, activity, activity_name,
              ocsf_alert_severity(a.severity), a.event_time, a.alert_event_id, std::nullopt,
              "pii_audit.alerts");
    j.str("message", a.explanation);
    if (a.status == "acknowledged") {
        j.num("status_id", 2);
        j.raw_str("status", "In Progress");
    } else if (a.status == "closed") {
        j.num("status_id", 4);
        j.raw_str("status", "Resolved");
    } else {
        j.num("status_id", 1);
        j.raw_str("status", "New");
    }
    j.num("risk_score", a.score);
    j.str("comment", a.note);
    j.begin("finding_info");
    j.num_str("uid", a.alert_id);
    j.str("title", a.detector);
    j.str("desc", a.explanation);
    j.strings("types", TextList{&a.detector, 1});
    j.num("created_time", millis(a.raised_at));
    j.num("first_seen_time", millis(a.alert_time));
    if (a.status_at) j.num("modified_time", millis(*a.status_at));
    if (a.evidence.size > 0) {
        std::string& o = j.out();
        o.append(",\"related_events\":[");
        for (std::size_t i = 0; i < a.evidence.size; ++i) {
            if (i > 0) o.push_back(',');
            o.append("{\"uid\":\"");
            append_int(o, a.evidence.items[i]);
            o.append("\"}");
        }
        o.push_back(']');
    }
    j.end();
    {
        std::string& o = j.out();
        o.append(",\"evidences\":[{\"actor\":{\"user\":{\"name\":");
        append_json_string(o, a.actor);
        o.append("}}}]");
    }
    j.begin("unmapped");
    j.begin("pii_audit");
    j.num("alert_event_id", a.alert_event_id);
    j.raw_str("change", alert_change_name(a.change));
    j.num("alert_id", a.alert_id);
    j.str("actor", a.actor);
    j.str("peer_group", a.peer_group);
    j.str("detector", a.detector);
    j.num("score", a.score);
    j.str("severity", a.severity);
    j.ids("evidence", a.evidence);
    j.str("status", a.status);
    j.str("status_by", a.status_by);
    if (a.status_at) j.time("status_at", *a.status_at);
    j.str("note", a.note);
    j.str("server_name", origin.server_name);
    j.end();
    j.end();
    j.finish();
}

// ------------------------------------------------------------------ key=value writers
// What the three key=value line formats share: a field whose value is absent is left out,
// numbers and booleans are written as they are. Each format says how a field opens (separator,
// key, '='), closes, and escapes a value.
template <class Line>
class KeyValues {
  public:
    void kv(std::string_view key, std::string_view value) {
        line().open(key);
        line().escape(value);
        line().close();
    }
    void kv(std::string_view key, const std::optional<std::string_view>& value) {
        if (value) kv(key, *value);
    }
    void kv(std::string_view key, const char* value) { kv(key, std::string_view(value)); }
    void num(std::string_view key, std::int64_t value) {
        line().open(key);
        append_int(out_, value);
        line().close();
    }
    template <class T>
    void num(std::string_view key, const std::optional<T>& value) {
        if (value) num(key, static_cast<std::int64_t>(*value));
    }
    void boolean(std::string_view key, const std::optional<bool>& value) {
        if (value) kv(key, *value ? "true" : "false");
    }

  protected:
    explicit KeyValues(std::string& out) : out_(out) {}
    std::string& out_;

  private:
    Line& line() { return static_cast<Line&>(*this); }
};

// CEF: header fields separated by |, then extension pairs separated by spaces.
class Cef : public KeyValues<Cef> {
  public:
    Cef(std::string& out, const Origin& origin, std::string_view signature, std::string_view name,
        int severity)
        : KeyValues(out) {
        out_.append("CEF:0|");
        append_cef_header(out_, kProduct);
        out_.push_back('|');
        append_cef_header(out_, kProduct);
        out_.push_back('|');
        append_cef_header(out_, origin.product_version);
        out_.push_back('|');
        append_cef_header(out_, signature);
        out_.push_back('|');
        append_cef_header(out_, name);
        out_.push_back('|');
        append_int(out_, severity);
        out_.push_back('|');
    }
    // A custom field and its label (cs1Label=endUser cs1=...).
    void labelled(std::string_view key, std::string_view label, std::string_view value) {
        kv(label_key(key), label);
        kv(key, value);
    }
    void labelled(std::string_view key, std::string_view label,
                  const std::optional<std::string_view>& value) {
        if (value) labelled(key, label, *value);
    }
    void labelled_num(std::string_view key, std::string_view label, std::int64_t value) {
        kv(label_key(key), label);
        num(key, value);
    }
    template <class T>
    void labelled_num(std::string_view key, std::string_view label, const std::optional<T>& value) {
        if (value) labelled_num(key, label, static_cast<std::int64_t>(*value));
    }

  private:
    friend class KeyValues<Cef>;
    void open(std::string_view key) {
        if (!first_) out_.push_back(' ');
        first_ = false;
        out_.append(key);
        out_.push_back('=');
    }
    void close() {}
    void escape(std::string_view value) { append_cef_value(out_, value); }
    static std::string_view label_key(std::string_view key) {
        thread_local std::string label;
        label.assign(key);
        label.append("Label");
        return label;
    }
    bool first_ = true;
};

// LEEF 2.0 with a tab between attributes (declared as x09 in the header).
class Leef : public KeyValues<Leef> {
  public:
    Leef(std::string& out, const Origin& origin, std::string_view event_id) : KeyValues(out) {
        out_.append("LEEF:2.0|");
        append_leef_header(out_, kProduct);
        out_.push_back('|');
        append_leef_header(out_, kProduct);
        out_.push_back('|');
        append_leef_header(out_, origin.product_version);
        out_.push_back('|');
        append_leef_header(out_, event_id);
        out_.append("|x09|");
    }
    void time(std::string_view key, std::int64_t unix_micros) {
        open(key);
        append_leef_time(out_, unix_micros);
        close();
    }

  private:
    friend class KeyValues<Leef>;
    void open(std::string_view key) {
        if (!first_) out_.push_back('\t');
        first_ = false;
        out_.append(key);
        out_.push_back('=');
    }
    void close() {}
    void escape(std::string_view value) { append_leef_value(out_, value); }
    bool first_ = true;
};

// RFC 5424: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID PARAM="VALUE" ...] MSG
class Syslog : public KeyValues<Syslog> {
  public:
    Syslog(std::string& out, const Origin& origin, int severity, std::int64_t time_micros,
           std::optional<std::int32_t> procid, std::string_view msgid)
        : KeyValues(out) {
        out_.push_back('<');
        append_int(out_, kSyslogFacility * 8 + severity);
        out_.append(">1 ");
        append_iso8601(out_, time_micros);
        out_.push_back(' ');
        append_syslog_hostname(out_, origin.server_name);
        out_.push_back(' ');
        out_.append(kProduct);
        out_.push_back(' ');
        if (procid)
            append_int(out_, *procid);
        else
            out_.push_back('-');
        out_.push_back(' ');
        out_.append(msgid);
        out_.append(" [");
        out_.append(kSdId);
    }
    void time(std::string_view key, std::int64_t unix_micros) {
        open(key);
        append_iso8601(out_, unix_micros);
        close();
    }
    // Ends the structured data; msg is text this code writes (ASCII, no user values).
    void finish(std::string_view msg) {
        out_.append("] ");
        out_.append(msg);
    }
    std::string& out() { return out_; }

  private:
    friend class KeyValues<Syslog>;
    void open(std::string_view key) {
        out_.push_back(' ');
        out_.append(key);
        out_.append("=\"");
    }
    void close() { out_.push_back('"'); }
    void escape(std::string_view value) { append_sd_value(out_, value); }
};

bool is_ipv6(std::string_view addr) { return addr.find(':') != std::string_view::npos; }

int cef_event_severity(const TrailEvent& e) {
    switch (e.kind) {
        case EventKind::read:
            return e.status == "denied" ? 5 : 3;
        case EventKind::login:
            return succeeded(e.status) ? 3 : 5;
        case EventKind::label_change:
            return 5;
        case EventKind::gap:
            return 8;
        case EventKind::removal:
            return 5;
    }
    return 3;
}

const char* event_title(EventKind kind) {
    switch (kind) {
        case EventKind::read:
            return "Read of personal data";
        case EventKind::login:
            return "Login";
        case EventKind::label_change:
            return "Personal data label change";
        case EventKind::gap:
            return "Audit events lost";
        case EventKind::removal:
            return "Audit events removed";
    }
    return "";
}

// Flags that are set, comma-separated.
std::string_view event_flags(const TrailEvent& e) {
    thread_local std::string flags;
    flags.clear();
    auto add = [&](const std::optional<bool>& v, std::string_view name) {
        if (v && *v) {
            if (!flags.empty()) flags.push_back(',');
            flags.append(name);
        }
    };
    add(e.query_truncated, "query_truncated");
    add(e.subjects_truncated, "subjects_truncated");
    add(e.subject_count_estimated, "subject_count_estimated");
    return flags;
}

void cef_event(const Origin& origin, const TrailEvent& e, std::string& out) {
    Cef c(out, origin, kind_name(e.kind), event_title(e.kind), cef_event_severity(e));
    c.num("rt", millis(e.event_time));
    c.num("externalId", e.event_id);
    c.kv("dvchost", origin.server_name);
    c.kv("cat", kind_name(e.kind));
    c.kv("outcome", e.status);
    c.kv("suser", e.session_user_name);
    c.labelled("cs1", "currentUser", e.current_user_name);
    c.labelled("cs2", "endUser", e.end_user);
    c.kv("requestClientApplication", e.application_name);
    if (e.client_addr) {
        if (is_ipv6(*e.client_addr))
            c.labelled("c6a2", "Source IPv6 Address", *e.client_addr);
        else
            c.kv("src", *e.client_addr);
    }
    c.num("dvcpid", e.backend_pid);
    c.kv("act", e.command);
    c.labelled("cs3", "relation", e.relation);
    if (e.columns) c.labelled("cs4", "columns", csv(*e.columns));
    if (e.categories) c.labelled("cs5", "categories", csv(*e.categories));
    c.labelled("cs6", "database", e.database_name);
    c.labelled_num("cn1", "rowCount", e.row_count);
    c.labelled_num("cn2", "subjectCount", e.subject_count);
    c.labelled_num("cn3", "queryId", e.query_id);
    c.labelled_num("flexNumber1", "nestingLevel", e.nesting_level);
    if (e.subjects) c.labelled("flexString1", "subjects", id_list(*e.subjects));
    std::string_view flags = event_flags(e);
    if (!flags.empty()) c.labelled("flexString2", "flags", flags);
    c.kv("reason", e.detail);
    c.kv("msg", e.query_text);
}

int cef_alert_severity(std::string_view severity) {
    if (severity == "critical") return 10;
    if (severity == "high") return 8;
    if (severity == "medium") return 5;
    return 3;
}

void cef_alert(const Origin& origin, const AlertEvent& a, std::string& out) {
    thread_local std::string signature;
    signature.assign("alert.");
    signature.append(a.detector);
    Cef c(out, origin, signature,
          a.change == AlertChange::raised ? "Insider alert raised" : "Insider alert status changed",
          cef_alert_severity(a.severity));
    c.num("rt", millis(a.event_time));
    c.num("externalId", a.alert_event_id);
    c.kv("dvchost", origin.server_name);
    c.kv("cat", "alert");
    c.kv("act", alert_change_name(a.change));
    c.kv("suser", a.actor);
    c.num("start", millis(a.alert_time));
    c.labelled_num("cn1", "score", a.score);
    c.labelled_num("cn2", "alertId", a.alert_id);
    c.labelled("cs1", "detector", a.detector);
    c.labelled("cs2", "peerGroup", a.peer_group);
    c.labelled("cs3", "status", a.status);
    c.labelled("cs4", "statusBy", a.status_by);
    c.labelled("cs5", "note", a.note);
    c.labelled("cs6", "evidence", id_list(a.evidence));
    c.labelled("flexString1", "severity", a.severity);
    if (a.status_at) c.labelled_num("deviceCustomDate1", "statusAt", millis(*a.status_at));
    c.kv("msg", a.explanation);
}

int event_leef_severity(const TrailEvent& e) { return cef_event_severity(e); }

void leef_event(const Origin& origin, const TrailEvent& e, std::string& out) {
    Leef l(out, origin, kind_name(e.kind));
    l.time("devTime", e.event_time);
    l.kv("cat", kind_name(e.kind));
    l.num("sev", event_leef_severity(e));
    l.num("eventId", e.event_id);
    l.kv("status", e.status);
    l.kv("usrName", e.session_user_name);
    l.kv("currentUser", e.current_user_name);
    l.kv("endUser", e.end_user);
    l.kv("applicationName", e.application_name);
    l.kv("src", e.client_addr);
    l.num("backendPid", e.backend_pid);
    l.kv("database", e.database_name);
    l.kv("command", e.command);
    l.kv("resource", e.relation);
    if (e.columns) l.kv("columns", csv(*e.columns));
    if (e.categories) l.kv("categories", csv(*e.categories));
    l.num("rowCount", e.row_count);
    l.num("queryId", e.query_id);
    l.kv("query", e.query_text);
    l.boolean("queryTruncated", e.query_truncated);
    l.num("nestingLevel", e.nesting_level);
    l.kv("detail", e.detail);
    l.num("subjectCount", e.subject_count);
    if (e.subjects) l.kv("subjects", id_list(*e.subjects));
    l.boolean("subjectsTruncated", e.subjects_truncated);
    l.boolean("subjectCountEstimated", e.subject_count_estimated);
    if (e.recorded_at) l.time("recordedAt", *e.recorded_at);
    l.kv("serverName", origin.server_name);
}

void leef_alert(const Origin& origin, const AlertEvent& a, std::string& out) {
    thread_local std::string event_id;
    event_id.assign("alert.");
    event_id.append(a.detector);
    Leef l(out, origin, event_id);
    l.time("devTime", a.event_time);
    l.kv("cat", "alert");
    l.num("sev", cef_alert_severity(a.severity));
    l.num("eventId", a.alert_event_id);
    l.kv("change", alert_change_name(a.change));
    l.num("alertId", a.alert_id);
    l.kv("usrName", a.actor);
    l.kv("peerGroup", a.peer_group);
    l.kv("detector", a.detector);
    l.num("score", a.score);
    l.kv("severity", a.severity);
    l.kv("explanation", a.explanation);
    l.kv("evidence", id_list(a.evidence));
    l.kv("status", a.status);
    l.kv("statusBy", a.status_by);
    if (a.status_at) l.time("statusAt", *a.status_at);
    l.kv("note", a.note);
    l.time("alertTime", a.alert_time);
    l.kv("serverName", origin.server_name);
}

int syslog_event_severity(const TrailEvent& e) {
    switch (e.kind) {
        case EventKind::read:
            return e.status == "denied" ? 5 : 6;
        case EventKind::login:
            return succeeded(e.status) ? 6 : 5;
        case EventKind::label_change:
            return 5;
        case EventKind::gap:
            return 4;
        case EventKind::removal:
            return 5;
    }
    return 6;
}

void syslog_event(const Origin& origin, const TrailEvent& e, std::string& out) {
    Syslog s(out, origin, syslog_event_severity(e), e.event_time, e.backend_pid, kind_name(e.kind));
    s.num("event_id", e.event_id);
    s.kv("status", e.status);
    s.kv("database_name", e.database_name);
    s.kv("session_user_name", e.session_user_name);
    s.kv("current_user_name", e.current_user_name);
    s.kv("end_user", e.end_user);
    s.kv("application_name", e.application_name);
    s.kv("client_addr", e.client_addr);
    s.kv("command", e.command);
    s.kv("relation", e.relation);
    if (e.columns) s.kv("columns", csv(*e.columns));
    if (e.categories) s.kv("categories", csv(*e.categories));
    s.num("row_count", e.row_count);
    s.num("query_id", e.query_id);
    s.kv("query_text", e.query_text);
    s.boolean("query_truncated", e.query_truncated);
    s.num("nesting_level", e.nesting_level);
    s.kv("detail", e.detail);
    s.num("subject_count", e.subject_count);
    if (e.subjects) s.kv("subjects", id_list(*e.subjects));
    s.boolean("subjects_truncated", e.subjects_truncated);
    s.boolean("subject_count_estimated", e.subject_count_estimated);
    if (e.recorded_at) s.time("recorded_at", *e.recorded_at);
    s.kv("server_name", origin.server_name);
    std::string& o = s.out();
    o.append("] ");
    o.append(kind_name(e.kind));
    o.push_back(' ');
    // status is one of the trail's own words; escape anyway so that nothing breaks the line.
    escape_text(o, e.status, is_control,
                [](std::string& x, unsigned char) { x.append(kReplacement); });
}

int syslog_alert_severity(std::string_view severity) {
    if (severity == "critical") return 2;
    if (severity == "high") return 3;
    if (severity == "medium") return 4;
    return 5;
}

void syslog_alert(const Origin& origin, const AlertEvent& a, std::string& out) {
    Syslog s(out, origin, syslog_alert_severity(a.severity), a.event_time, std::nullopt, "alert");
    s.num("alert_event_id", a.alert_event_id);
    s.kv("change", alert_change_name(a.change));
    s.num("alert_id", a.alert_id);
    s.time("alert_time", a.alert_time);
    s.time("raised_at", a.raised_at);
    s.kv("actor", a.actor);
    s.kv("peer_group", a.peer_group);
    s.kv("detector", a.detector);
    s.num("score", a.score);
    s.kv("severity", a.severity);
    s.kv("explanation", a.explanation);
    s.kv("evidence", id_list(a.evidence));
    s.kv("status", a.status);
    s.kv("status_by", a.status_by);
    if (a.status_at) s.time("status_at", *a.status_at);
    s.kv("note", a.note);
    s.kv("server_name", origin.server_name);
    s.finish(a.change == AlertChange::raised ? "alert raised" : "alert status changed");
}

}  // namespace

// ------------------------------------------------------------------ public
bool parse_format(std::string_view name, Format* format) noexcept {
    static constexpr std::pair<std::string_view, Format> kNames[] = {
        {"json", Format::json}, {"ocsf", Format::ocsf},       {"cef", Format::cef},
        {"leef", Format::leef}, {"rfc5424", Format::rfc5424},
    };
    for (const auto& [n, f] : kNames)
        if (n == name) {
            *format = f;
            return true;
        }
    return false;
}

const char* format_name(Format format) noexcept {
    switch (format) {
        case Format::json:
            return "json";
        case Format::ocsf:
            return "ocsf";
        case Format::cef:
            return "cef";
        case Format::leef:
            return "leef";
        case Format::rfc5424:
            return "rfc5424";
    }
    return "json";
}

bool parse_event_kind(std::string_view name, EventKind* kind) noexcept {
    if (name == "read")
        *kind = EventKind::read;
    else if (name == "login")
        *kind = EventKind::login;
    else if (name == "label_change")
        *kind = EventKind::label_change;
    else if (name == "gap")
        *kind = EventKind::gap;
    else if (name == "removal")
        *kind = EventKind::removal;
    else
        return false;
    return true;
}

void format_event(Format format, const Origin& origin, const TrailEvent& event, std::string& out) {
    // The server an event happened on is its host (dvchost, HOSTNAME, the OCSF endpoint, ...);
    // events from before server names were recorded are the trail's server's.
    Origin where = origin;
    if (event.server_name) where.server_name = *event.server_name;
    switch (format) {
        case Format::json:
            ecs_event(origin, event, out);  // names both (host and observer)
            return;
        case Format::ocsf:
            ocsf_event(where, event, out);
            return;
        case Format::cef:
            cef_event(where, event, out);
            return;
        case Format::leef:
            leef_event(where, event, out);
            return;
        case Format::rfc5424:
            syslog_event(where, event, out);
            return;
    }
}

void format_alert(Format format, const Origin& origin, const AlertEvent& alert, std::string& out) {
    switch (format) {
        case Format::json:
            ecs_alert(origin, alert, out);
            return;
        case Format::ocsf:
            ocsf_alert(origin, alert, out);
            return;
        case Format::cef:
            cef_alert(origin, alert, out);
            return;
        case Format::leef:
            leef_alert(origin, alert, out);
            return;
        case Format::rfc5424:
            syslog_alert(origin, alert, out);
            return;
    }
}

void append_utf8(std::string& out, std::string_view text) {
    escape_text(
        out, text, [](unsigned char) { return false; }, [](std::string&, unsigned char) {});
}

void append_json_string(std::string& out, std::string_view text) {
    out.push_back('"');
    escape_text(
        out, text, [](unsigned char b) { return b < 0x20 || b == '"' || b == '\\'; },
        [](std::string& o, unsigned char b) {
            switch (b) {
                case '"':
                    o.append("\\\"");
                    return;
                case '\\':
                    o.append("\\\\");
                    return;
                case '\n':
                    o.append("\\n");
                    return;
                case '\r':
                    o.append("\\r");
                    return;
                case '\t':
                    o.append("\\t");
                    return;
                case '\b':
                    o.append("\\b");
                    return;
                case '\f':
                    o.append("\\f");
                    return;
                default: {
                    static constexpr char kHex[] = "0123456789abcdef";
                    o.append("\\u00");
                    o.push_back(kHex[b >> 4]);
                    o.push_back(kHex[b & 15]);
                }
            }
        });
    out.push_back('"');
}

void append_cef_header(std::string& out, std::string_view text) {
    escape_text(
        out, text, [](unsigned char b) { return is_control(b) || b == '|' || b == '\\'; },
        [](std::string& o, unsigned char b) {
            if (b == '|')
                o.append("\\|");
            else if (b == '\\')
                o.append("\\\\");
            else
                o.append(kReplacement);
        });
}

void append_cef_value(std::string& out, std::string_view text) {
    escape_text(
        out, text, [](unsigned char b) { return is_control(b) || b == '=' || b == '\\'; },
        [](std::string& o, unsigned char b) {
            if (b == '=')
                o.append("\\=");
            else if (b == '\\')
                o.append("\\\\");
            else if (b == '\n')
                o.append("\\n");
            else if (b == '\r')
                o.append("\\r");
            else
                o.append(kReplacement);
        });
}

void append_leef_header(std::string& out, std::string_view text) { append_cef_header(out, text); }

void append_leef_value(std::string& out, std::string_view text) {
    escape_text(
        out, text, [](unsigned char b) { return is_control(b) || b == '\\'; },
        [](std::string& o, unsigned char b) {
            if (b == '\\')
                o.append("\\\\");
            else if (b == '\t')
                o.append("\\t");
            else if (b == '\n')
                o.append("\\n");
            else if (b == '\r')
                o.append("\\r");
            else
                o.append(kReplacement);
        });
}

void append_sd_value(std::string& out, std::string_view text) {
    escape_text(
        out, text,
        [](unsigned char b) { return is_control(b) || b == '"' || b == '\\' || b == ']'; },
        [](std::string& o, unsigned char b) {
            if (b == '"')
                o.append("\\\"");
            else if (b == '\\')
                o.append("\\\\");
            else if (b == ']')
                o.append("\\]");
            else
                o.append(kReplacement);
        });
}

void append_syslog_hostname(std::string& out, std::string_view text) {
    if (text.empty()) {
        out.push_back('-');
        return;
    }
    const std::size_t n = text.size() < 255 ? text.size() : 255;
    for (std::size_t i = 0; i < n; ++i) {
        const auto b = static_cast<unsigned char>(text[i]);
        out.push_back(b >= 33 && b <= 126 ? static_cast<char>(b) : '_');
    }
}

void append_iso8601(std::string& out, std::int64_t unix_micros) {
    const CivilTime c = civil_time(unix_micros);
    append_year(out, c.year);
    out.push_back('-');
    append_2(out, c.month);
    out.push_back('-');
    append_2(out, c.day);
    out.push_back('T');
    append_2(out, c.hour);
    out.push_back(':');
    append_2(out, c.minute);
    out.push_back(':');
    append_2(out, c.second);
    out.push_back('.');
    char digits[6];
    unsigned us = c.micros;
    for (int i = 5; i >= 0; --i) {
        digits[i] = static_cast<char>('0' + us % 10);
        us /= 10;
    }
    out.append(digits, 6);
    out.push_back('Z');
}

}  // namespace pii_audit::siem
