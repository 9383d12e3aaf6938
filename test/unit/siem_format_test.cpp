// The SIEM export formats: each format's escaping rules, exactly, with hostile values in every
// field a user controls (application name, end user, role names, table and column names, the
// statement), read back with a parser of the format's own grammar; every ocsf event validated
// against the OCSF 1.3.0 schema's definition files (test/data/ocsf-1.3.0).
#include "pii_audit/siem_format.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ocsf_validator.h"

using namespace pii_audit::siem;
using nlohmann::json;

namespace {

const std::string kFffd = "\xEF\xBF\xBD";
const Origin kOrigin{"db-1.example", "0.3.0"};

// ------------------------------------------------------------------ readers of each format
// They follow the formats' grammars, not this project's writer, so a writer bug shows.

// CEF: 7 header fields split at unescaped |, then key=value pairs: a value runs to the space
// before the next key (a word followed by an unescaped =).
struct Cef {
    std::vector<std::string> header;
    std::map<std::string, std::string> ext;
};

std::string cef_unescape_value(const std::string& v) {
    std::string out;
    for (std::size_t i = 0; i < v.size(); ++i) {
        if (v[i] == '\\' && i + 1 < v.size()) {
            char n = v[++i];
            if (n == 'n')
                out.push_back('\n');
            else if (n == 'r')
                out.push_back('\r');
            else
                out.push_back(n);  // \\ and \=
        } else {
            out.push_back(v[i]);
        }
    }
    return out;
}

bool parse_cef(const std::string& line, Cef* cef) {
    std::size_t i = 0;
    std::string field;
    while (cef->header.size() < 7) {
        if (i >= line.size()) return false;
        if (line[i] == '\\' && i + 1 < line.size()) {
            field.push_back(line[i + 1]);
            i += 2;
        } else if (line[i] == '|') {
            cef->header.push_back(field);
            field.clear();
            ++i;
        } else {
            field.push_back(line[i++]);
        }
    }
    const std::string ext = line.substr(i);
    // Positions of unescaped '='.
    std::vector<std::size_t> eq;
    for (std::size_t k = 0; k < ext.size(); ++k) {
        if (ext[k] == '\\') {
            ++k;
            continue;
        }
        if (ext[k] == '=') eq.push_back(k);
    }
    for (std::size_t n = 0; n < eq.size(); ++n) {
        std::size_t key_start = ext.rfind(' ', eq[n]);
        key_start = key_start == std::string::npos ? 0 : key_start + 1;
        if (n == 0 && key_start != 0) return false;
        const std::string key = ext.substr(key_start, eq[n] - key_start);
        std::size_t value_end = ext.size();
        if (n + 1 < eq.size()) {
            value_end = ext.rfind(' ', eq[n + 1]);
            if (value_end == std::string::npos || value_end < eq[n]) return false;
        }
        cef->ext[key] = cef_unescape_value(ext.substr(eq[n] + 1, value_end - eq[n] - 1));
    }
    return true;
}

// LEEF 2.0: LEEF:2.0|vendor|product|version|event id|delimiter| then attributes split by the
// delimiter (a tab, declared x09), each key=value at its first =.
struct Leef {
    std::vector<std::string> header;
    std::map<std::string, std::string> attrs;
};

bool parse_leef(const std::string& line, Leef* leef) {
    std::size_t i = 0;
    std::string field;
    while (leef->header.size() < 6) {
        if (i >= line.size()) return false;
        if (line[i] == '\\' && i + 1 < line.size()) {
            field.push_back(line[i + 1]);
            i += 2;
        } else if (line[i] == '|') {
            leef->header.push_back(field);
            field.clear();
            ++i;
        } else {
            field.push_back(line[i++]);
        }
    }
    if (leef->header[5] != "x09") return false;
    std::size_t start = i;
    while (start <= line.size()) {
        std::size_t end = line.find('\t', start);
        if (end == std::string::npos) end = line.size();
        const std::string attr = line.substr(start, end - start);
        const std::size_t eq = attr.find('=');
        if (eq == std::string::npos) return false;
        std::string value;
        const std::string raw = attr.substr(eq + 1);
        for (std::size_t k = 0; k < raw.size(); ++k) {
            if (raw[k] == '\\' && k + 1 < raw.size()) {
                char n = raw[++k];
                value.push_back(n == 't' ? '\t' : n == 'n' ? '\n' : n == 'r' ? '\r' : n);
            } else {
                value.push_back(raw[k]);
            }
        }
        leef->attrs[attr.substr(0, eq)] = value;
        start = end + 1;
    }
    return true;
}

// RFC 5424: PRI VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID, one SD-ELEMENT, then MSG.
struct Syslog {
    int pri = -1;
    std::vector<std::string> header;  // timestamp, hostname, app, procid, msgid
    std::string sd_id;
    std::map<std::string, std::string> params;
    std::string msg;
};

bool parse_syslog(const std::string& line, Syslog* s) {
    if (line.empty() || line[0] != '<') return false;
    std::size_t close = line.find('>');
    s->pri = std::stoi(line.substr(1, close - 1));
    if (line.compare(close + 1, 2, "1 ") != 0) return false;
    std::size_t i = close + 3;
    for (int f = 0; f < 5; ++f) {
        std::size_t sp = line.find(' ', i);
        if (sp == std::string::npos) return false;
        s->header.push_back(line.substr(i, sp - i));
        i = sp + 1;
    }
    if (line[i] != '[') return false;
    ++i;
    std::size_t sp = line.find_first_of(" ]", i);
    s->sd_id = line.substr(i, sp - i);
    i = sp;
    while (line[i] == ' ') {
        ++i;
        std::size_t eq = line.find('=', i);
        const std::string name = line.substr(i, eq - i);
        if (name.size() > 32 || name.find_first_of(" =]\"") != std::string::npos) return false;
        if (line[eq + 1] != '"') return false;
        i = eq + 2;
        std::string value;
        while (true) {
            if (i >= line.size()) return false;
            char c = line[i];
            if (c == '\\' && i + 1 < line.size() &&
                (line[i + 1] == '"' || line[i + 1] == '\\' || line[i + 1] == ']')) {
                value.push_back(line[i + 1]);
                i += 2;
            } else if (c == '"') {
                ++i;
                break;
            } else if (c == ']') {
                return false;  // an unescaped ] inside a value
            } else {
                value.push_back(c);
                ++i;
            }
        }
        s->params[name] = value;
    }
    if (line.compare(i, 2, "] ") != 0) return false;
    s->msg = line.substr(i + 2);
    return true;
}

// RFC 4180 fields of a list written as one text value.
std::vector<std::string> parse_csv(const std::string& text) {
    std::vector<std::string> items;
    std::string item;
    bool quoted = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (quoted) {
            if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
                item.push_back('"');
                ++i;
            } else if (c == '"') {
                quoted = false;
            } else {
                item.push_back(c);
            }
        } else if (c == '"') {
            quoted = true;
        } else if (c == ',') {
            items.push_back(item);
            item.clear();
        } else {
            item.push_back(c);
        }
    }
    items.push_back(item);
    return items;
}

bool valid_utf8(const std::string& s) {
    std::string repaired;
    append_utf8(repaired, s);
    return repaired == s;
}

// ------------------------------------------------------------------ hostile values
struct Hostile {
    const char* name;
    std::string raw;
    std::string json_value;  // what a JSON reader reads back: invalid bytes become U+FFFD
    std::string line_value;  // what the line formats read back: also controls they cannot escape
};

std::vector<Hostile> hostile_values() {
    const std::string big = std::string(4096, 'x') + "|=\\]\"\n" + std::string(4096, 'y');
    return {
        {"newline", "a\nb", "a\nb", "a\nb"},
        {"carriage return", "a\r\nb", "a\r\nb", "a\r\nb"},
        {"pipe", "a|b", "a|b", "a|b"},
        {"equals", "a=b", "a=b", "a=b"},
        {"backslash", "a\\b\\", "a\\b\\", "a\\b\\"},
        {"bracket", "a]b]", "a]b]", "a]b]"},
        {"quote", "a\"b\"", "a\"b\"", "a\"b\""},
        {"tab", "a\tb", "a\tb", "a\tb"},
        {"escape-like", "\\n\\=\\|\\]", "\\n\\=\\|\\]", "\\n\\=\\|\\]"},
        {"non-ASCII", "clerk-\xC3\xBC-\xE9\x93\xB6\xE8\xA1\x8C-\xF0\x9F\x98\x80",
         "clerk-\xC3\xBC-\xE9\x93\xB6\xE8\xA1\x8C-\xF0\x9F\x98\x80",
         "clerk-\xC3\xBC-\xE9\x93\xB6\xE8\xA1\x8C-\xF0\x9F\x98\x80"},
        {"invalid UTF-8",
         "a\xFF\xFE"
         "b\xC3",
         "a" + kFffd + kFffd + "b" + kFffd, "a" + kFffd + kFffd + "b" + kFffd},
        {"overlong and surrogate", "\xC0\xAF\xED\xA0\x80z",
         kFffd + kFffd + kFffd + kFffd + kFffd + "z", kFffd + kFffd + kFffd + kFffd + kFffd + "z"},
        {"other controls",
         std::string("a\x01"
                     "b\x1B"
                     "c\x7F",
                     6),
         std::string("a\x01"
                     "b\x1B"
                     "c\x7F",
                     6),
         "a" + kFffd + "b" + kFffd + "c" + kFffd},
        {"4 kB", big, big, big},
    };
}

// What each line format reads back where it cannot escape a character: RFC 5424 keeps no line
// break or tab (no escape for them), CEF no tab; LEEF and CEF keep \n and \r.
std::string expected_in(Format f, const Hostile& h) {
    if (f == Format::json || f == Format::ocsf) return h.json_value;
    std::string out;
    const std::string& v = h.line_value;
    for (std::size_t i = 0; i < v.size(); ++i) {
        const char c = v[i];
        const bool lost =
            (c == '\t' && f != Format::leef) || ((c == '\n' || c == '\r') && f == Format::rfc5424);
        if (lost)
            out += kFffd;
        else
            out.push_back(c);
    }
    return out;
}

struct EventFixture {
    std::vector<std::string_view> columns_storage;
    std::vector<std::string_view> categories_storage{"phone", "verification_code"};
    std::vector<std::int64_t> subjects_storage{-9223372036854775807LL - 1, 42,
                                               9223372036854775807LL};
    TrailEvent e;

    explicit EventFixture(EventKind kind = EventKind::read, const char* status = "completed") {
        e.event_id = 1234567;
        e.event_time = 1796034069721566;  // 2026-11-30T10:21:09.721566Z
        e.recorded_at = 1796034069728369;
        e.kind = kind;
        e.status = status;
        e.database_name = "shop";
        e.session_user_name = "counter_app";
        e.current_user_name = "reader";
        e.end_user = "clerk-0421";
        e.application_name = "crm";
        e.client_addr = "10.1.2.3";
        e.backend_pid = 4711;
        e.command = "SELECT";
        e.relation = "public.customers";
        columns_storage = {"name", "phone"};
        e.columns = TextList{columns_storage.data(), columns_storage.size()};
        e.categories = TextList{categories_storage.data(), categories_storage.size()};
        e.row_count = 1;
        e.query_id = -8906077902670405810LL;
        e.query_text = "SELECT name, phone FROM customers WHERE id = $1";
        e.query_truncated = false;
        e.nesting_level = 0;
        e.subject_count = 3;
        e.subjects = IdList{subjects_storage.data(), subjects_storage.size()};
        e.subjects_truncated = false;
        e.subject_count_estimated = false;
        if (kind == EventKind::login) {
            e.command = "LOGIN";
            e.relation.reset();
            e.columns.reset();
            e.categories.reset();
            e.row_count.reset();
            e.query_id.reset();
            e.query_text.reset();
            e.subject_count.reset();
            e.subjects.reset();
            e.subjects_truncated.reset();
            e.subject_count_estimated.reset();
            e.end_user.reset();
        }
        if (kind == EventKind::label_change) {
            e.command = "SECURITY LABEL";
            columns_storage = {"phone"};
            e.columns = TextList{columns_storage.data(), 1};
            e.detail = "label changed from 'phone' to 'phone, subject_key'";
            e.query_text = "SECURITY LABEL FOR pii ON COLUMN customers.phone IS $1";
            e.row_count.reset();
            e.subject_count.reset();
            e.subjects.reset();
        }
        if (kind == EventKind::removal) {
            e = TrailEvent{};
            e.event_id = 100;
            e.event_time = 1796034069721566;
            e.kind = kind;
            e.status = status;
            e.database_name = "postgres";
            e.session_user_name = "postgres";
            e.relation = "pii_audit.trail_groups_p202501";
            e.row_count = 123456;
            e.detail = "123456 events with ids from 1 to 123456 removed: retention";
        }
        if (kind == EventKind::gap) {
            e = TrailEvent{};
            e.event_id = 99;
            e.event_time = 1796034069721566;
            e.kind = kind;
            e.status = "lost";
            e.database_name = "postgres";
            e.row_count = 17;
            e.detail = "events dropped: the queue was full";
        }
    }
};

std::string format(Format f, const TrailEvent& e, const Origin& origin = kOrigin) {
    std::string out;
    format_event(f, origin, e, out);
    return out;
}

struct AlertFixture {
    std::vector<std::int64_t> evidence{5, 6, 9000000000LL};
    AlertEvent a;
    explicit AlertFixture(AlertChange change = AlertChange::raised, const char* status = "open") {
        a.alert_event_id = 7;
        a.change = change;
        a.event_time = 1796034083088383;
        a.alert_id = 3;
        a.alert_time = 1796034083065516;
        a.raised_at = 1796034083065999;
        a.actor = "clerk-0999";
        a.peer_group = "counter_app";
        a.detector = "sensitive_categories";
        a.score = 71;
        a.severity = "high";
        a.explanation = "read verification_code of 23 subjects today";
        a.evidence = IdList{evidence.data(), evidence.size()};
        a.status = status;
        if (change == AlertChange::status) {
            a.status_by = "officer";
            a.status_at = a.event_time;
            a.note = "asked the branch manager";
        }
    }
};

std::string format(Format f, const AlertEvent& a) {
    std::string out;
    format_alert(f, kOrigin, a, out);
    return out;
}

const Format kAll[] = {Format::json, Format::ocsf, Format::cef, Format::leef, Format::rfc5424};

// One line, no line end, valid UTF-8: what every format promises.
void expect_one_line(const std::string& line) {
    EXPECT_EQ(line.find('\n'), std::string::npos) << line.substr(0, 200);
    EXPECT_EQ(line.find('\r'), std::string::npos) << line.substr(0, 200);
    EXPECT_TRUE(valid_utf8(line)) << line.substr(0, 200);
}

std::string ocsf_dir() { return PII_AUDIT_OCSF_SCHEMA_DIR; }

}  // namespace

// ------------------------------------------------------------------ primitives, exactly
TEST(SiemEscaping, JsonString) {
    std::string out;
    append_json_string(out, std::string("a\"b\\c\n\r\t\b\f\x01\x1f\x7f/\xC3\xBC", 16));
    EXPECT_EQ(out, "\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0001\\u001f\x7f/\xC3\xBC\"");
    out.clear();
    append_json_string(out, "\xFF");
    EXPECT_EQ(out, "\"" + kFffd + "\"");
}

TEST(SiemEscaping, CefHeaderAndExtension) {
    std::string out;
    append_cef_header(out, "a|b\\c=d\ne");
    EXPECT_EQ(out, "a\\|b\\\\c=d" + kFffd + "e");
    out.clear();
    append_cef_value(out, "a|b\\c=d\ne\rf\tg h");
    EXPECT_EQ(out, "a|b\\\\c\\=d\\ne\\rf" + kFffd + "g h");
}

TEST(SiemEscaping, LeefHeaderAndValue) {
    std::string out;
    append_leef_header(out, "a|b\\c");
    EXPECT_EQ(out, "a\\|b\\\\c");
    out.clear();
    append_leef_value(out, std::string("a=b|c\\d\te\nf\rg\x02h", 15));
    EXPECT_EQ(out, "a=b|c\\\\d\\te\\nf\\rg" + kFffd + "h");
}

TEST(SiemEscaping, SyslogParamValueAndHostname) {
    std::string out;
    append_sd_value(out, "a\"b\\c]d=e|f\ng");
    EXPECT_EQ(out, "a\\\"b\\\\c\\]d=e|f" + kFffd + "g");
    out.clear();
    append_syslog_hostname(out, "db 1\xC3\xBC");
    EXPECT_EQ(out, "db_1__");
    out.clear();
    append_syslog_hostname(out, "");
    EXPECT_EQ(out, "-");
    out.clear();
    append_syslog_hostname(out, std::string(300, 'h'));
    EXPECT_EQ(out, std::string(255, 'h'));
}

TEST(SiemEscaping, Utf8Repair) {
    struct Case {
        std::string in, out;
    } cases[] = {
        {"plain", "plain"},
        {"\xC3\xBC\xE2\x82\xAC\xF0\x9F\x98\x80", "\xC3\xBC\xE2\x82\xAC\xF0\x9F\x98\x80"},
        {"\x80", kFffd},                                      // stray continuation
        {"\xC3", kFffd},                                      // cut short at the end
        {"\xC3(", kFffd + "("},                               // cut short before ASCII
        {"\xC1\xBF", kFffd + kFffd},                          // overlong 2-byte
        {"\xE0\x80\xAF", kFffd + kFffd + kFffd},              // overlong 3-byte
        {"\xED\xBF\xBF", kFffd + kFffd + kFffd},              // surrogate
        {"\xF4\x90\x80\x80", kFffd + kFffd + kFffd + kFffd},  // past U+10FFFF
        {"\xF5", kFffd},
        {"\xEF\xBF\xBF", "\xEF\xBF\xBF"},  // U+FFFF is a character
    };
    for (const auto& c : cases) {
        std::string out;
        append_utf8(out, c.in);
        EXPECT_EQ(out, c.out) << "input bytes: " << c.in.size();
    }
}

TEST(SiemEscaping, Times) {
    std::string out;
    append_iso8601(out, 0);
    EXPECT_EQ(out, "1970-01-01T00:00:00.000000Z");
    out.clear();
    append_iso8601(out, 1709164800000001);  // leap day
    EXPECT_EQ(out, "2024-02-29T00:00:00.000001Z");
    out.clear();
    append_iso8601(out, -1);
    EXPECT_EQ(out, "1969-12-31T23:59:59.999999Z");
    out.clear();
    append_iso8601(out, 946684799999999);
    EXPECT_EQ(out, "1999-12-31T23:59:59.999999Z");
    out.clear();
    append_iso8601(out, 4107542400000000);  // 2100-03-01: 2100 is not a leap year
    EXPECT_EQ(out, "2100-03-01T00:00:00.000000Z");
}

TEST(SiemEscaping, FormatNames) {
    Format f;
    for (Format want : kAll) {
        ASSERT_TRUE(parse_format(format_name(want), &f));
        EXPECT_EQ(f, want);
    }
    EXPECT_FALSE(parse_format("JSON", &f));
    EXPECT_FALSE(parse_format("", &f));
    EXPECT_FALSE(parse_format("syslog", &f));
}

// ------------------------------------------------------------------ whole lines
TEST(SiemFormat, JsonFieldsFollowEcs) {
    EventFixture f;
    json j = json::parse(format(Format::json, f.e));
    EXPECT_EQ(j["@timestamp"], "2026-11-30T10:21:09.721566Z");
    EXPECT_EQ(j["event"]["id"], "1234567");
    EXPECT_EQ(j["event"]["sequence"], 1234567);
    EXPECT_EQ(j["event"]["kind"], "event");
    EXPECT_EQ(j["event"]["category"], json::array({"database"}));
    EXPECT_EQ(j["event"]["type"], json::array({"access"}));
    EXPECT_EQ(j["event"]["action"], "read");
    EXPECT_EQ(j["event"]["outcome"], "success");
    EXPECT_EQ(j["event"]["created"], "2026-11-30T10:21:09.728369Z");
    EXPECT_EQ(j["user"]["name"], "counter_app");
    EXPECT_EQ(j["user"]["effective"]["name"], "reader");
    EXPECT_EQ(j["related"]["user"], json::array({"counter_app", "reader", "clerk-0421"}));
    EXPECT_EQ(j["source"]["ip"], "10.1.2.3");
    EXPECT_EQ(j["host"]["name"], "db-1.example");
    EXPECT_EQ(j["process"]["pid"], 4711);
    EXPECT_EQ(j["db"]["name"], "shop");
    EXPECT_EQ(j["db"]["operation"], "SELECT");
    EXPECT_EQ(j["db"]["sql"]["table"], "public.customers");
    EXPECT_EQ(j["db"]["statement"], "SELECT name, phone FROM customers WHERE id = $1");
    const json& p = j["pii_audit"];
    EXPECT_EQ(p["end_user"], "clerk-0421");
    EXPECT_EQ(p["application_name"], "crm");
    EXPECT_EQ(p["columns"], json::array({"name", "phone"}));
    EXPECT_EQ(p["categories"], json::array({"phone", "verification_code"}));
    EXPECT_EQ(p["row_count"], 1);
    EXPECT_EQ(p["query_id"], "-8906077902670405810");
    EXPECT_EQ(p["subject_count"], 3);
    EXPECT_EQ(p["subjects"], json::array({"-9223372036854775808", "42", "9223372036854775807"}));
    EXPECT_EQ(p["subjects_truncated"], false);

    EventFixture denied(EventKind::read, "denied");
    EXPECT_EQ(json::parse(format(Format::json, denied.e))["event"]["outcome"], "failure");
    EventFixture login(EventKind::login, "failed");
    json l = json::parse(format(Format::json, login.e));
    EXPECT_EQ(l["event"]["category"], json::array({"authentication"}));
    EXPECT_EQ(l["event"]["outcome"], "failure");
    EXPECT_FALSE(l.contains("source") && !l["source"].contains("ip"));
    EventFixture gap(EventKind::gap);
    json g = json::parse(format(Format::json, gap.e));
    EXPECT_EQ(g["event"]["action"], "events_lost");
    EXPECT_EQ(g["pii_audit"]["row_count"], 17);
    EXPECT_FALSE(g.contains("user"));
    EventFixture removal(EventKind::removal);
    json r = json::parse(format(Format::json, removal.e));
    EXPECT_EQ(r["event"]["action"], "events_removed");
    EXPECT_EQ(r["event"]["type"], json::array({"deletion"}));
    EXPECT_EQ(r["user"]["name"], "postgres");
    EXPECT_EQ(r["pii_audit"]["relation"], "pii_audit.trail_groups_p202501");
    EXPECT_EQ(r["pii_audit"]["row_count"], 123456);
    Cef rc;
    ASSERT_TRUE(parse_cef(format(Format::cef, removal.e), &rc));
    EXPECT_EQ(rc.header[4], "removal");
    EXPECT_EQ(rc.header[5], "Audit events removed");
    EXPECT_EQ(rc.ext["reason"], "123456 events with ids from 1 to 123456 removed: retention");
}

TEST(SiemFormat, CefFields) {
    EventFixture f;
    f.e.client_addr = "2001:db8::1";
    Cef c;
    ASSERT_TRUE(parse_cef(format(Format::cef, f.e), &c));
    EXPECT_EQ(c.header, (std::vector<std::string>{"CEF:0", "pii_audit", "pii_audit", "0.3.0",
                                                  "read", "Read of personal data", "3"}));
    EXPECT_EQ(c.ext["rt"], "1796034069721");
    EXPECT_EQ(c.ext["externalId"], "1234567");
    EXPECT_EQ(c.ext["suser"], "counter_app");
    EXPECT_EQ(c.ext["cs1Label"], "currentUser");
    EXPECT_EQ(c.ext["cs2"], "clerk-0421");
    EXPECT_EQ(c.ext["c6a2"], "2001:db8::1");
    EXPECT_EQ(c.ext.count("src"), 0u);
    EXPECT_EQ(c.ext["act"], "SELECT");
    EXPECT_EQ(c.ext["cs4"], "name,phone");
    EXPECT_EQ(c.ext["cn3"], "-8906077902670405810");
    EXPECT_EQ(c.ext["flexString1"], "-9223372036854775808,42,9223372036854775807");
    EXPECT_EQ(c.ext["msg"], "SELECT name, phone FROM customers WHERE id = $1");
    EventFixture gap(EventKind::gap);
    Cef g;
    ASSERT_TRUE(parse_cef(format(Format::cef, gap.e), &g));
    EXPECT_EQ(g.header[4], "gap");
    EXPECT_EQ(g.header[6], "8");
    EXPECT_EQ(g.ext["reason"], "events dropped: the queue was full");
}

TEST(SiemFormat, LeefFields) {
    EventFixture f;
    Leef l;
    ASSERT_TRUE(parse_leef(format(Format::leef, f.e), &l));
    EXPECT_EQ(l.header, (std::vector<std::string>{"LEEF:2.0", "pii_audit", "pii_audit", "0.3.0",
                                                  "read", "x09"}));
    EXPECT_EQ(l.attrs["devTime"], "Nov 30 2026 10:21:09.721 UTC");
    EXPECT_EQ(l.attrs["usrName"], "counter_app");
    EXPECT_EQ(l.attrs["src"], "10.1.2.3");
    EXPECT_EQ(l.attrs["resource"], "public.customers");
    EXPECT_EQ(l.attrs["subjects"], "-9223372036854775808,42,9223372036854775807");
    EXPECT_EQ(l.attrs["sev"], "3");
}

TEST(SiemFormat, SyslogFields) {
    EventFixture f;
    Syslog s;
    ASSERT_TRUE(parse_syslog(format(Format::rfc5424, f.e), &s));
    EXPECT_EQ(s.pri, 13 * 8 + 6);
    EXPECT_EQ(s.header, (std::vector<std::string>{"2026-11-30T10:21:09.721566Z", "db-1.example",
                                                  "pii_audit", "4711", "read"}));
    EXPECT_EQ(s.sd_id, "pii_audit@32473");
    EXPECT_EQ(s.params["event_id"], "1234567");
    EXPECT_EQ(s.params["end_user"], "clerk-0421");
    EXPECT_EQ(s.msg, "read completed");
    EventFixture login(EventKind::login, "failed");
    Syslog ls;
    ASSERT_TRUE(parse_syslog(format(Format::rfc5424, login.e), &ls));
    EXPECT_EQ(ls.pri, 13 * 8 + 5);
    EXPECT_EQ(ls.msg, "login failed");
}

// Every user-controlled field, every hostile value, every format: the line stays one line of
// valid UTF-8, and the format's own reader gets the value back exactly (with what the format
// cannot carry replaced by U+FFFD).
TEST(SiemFormat, HostileValuesInEveryUserField) {
    struct Field {
        const char* name;
        std::function<void(TrailEvent&, std::string_view)> set;
        std::function<std::string(Format, const std::string&)> read_back;
    };
    std::vector<std::string_view> one_column(1);
    auto from_json = [](const std::string& line, std::initializer_list<const char*> path) {
        json j = json::parse(line);
        for (const char* k : path) j = j.at(k);
        return j.get<std::string>();
    };
    auto field = [&](Format f, const std::string& line, const char* json_path_a,
                     const char* json_path_b, const char* ocsf_a, const char* ocsf_b,
                     const char* ocsf_c, const char* cef_key, const char* leef_key,
                     const char* sd_key) -> std::string {
        switch (f) {
            case Format::json:
                return from_json(line, {json_path_a, json_path_b});
            case Format::ocsf:
                return ocsf_c ? from_json(line, {ocsf_a, ocsf_b, ocsf_c})
                              : from_json(line, {ocsf_a, ocsf_b});
            case Format::cef: {
                Cef c;
                EXPECT_TRUE(parse_cef(line, &c)) << line.substr(0, 300);
                return c.ext[cef_key];
            }
            case Format::leef: {
                Leef l;
                EXPECT_TRUE(parse_leef(line, &l)) << line.substr(0, 300);
                return l.attrs[leef_key];
            }
            case Format::rfc5424: {
                Syslog s;
                EXPECT_TRUE(parse_syslog(line, &s)) << line.substr(0, 300);
                return s.params[sd_key];
            }
        }
        return {};
    };
    std::vector<Field> fields = {
        {"application_name", [](TrailEvent& e, std::string_view v) { e.application_name = v; },
         [&](Format f, const std::string& line) {
             return field(f, line, "pii_audit", "application_name", "actor", "app_name", nullptr,
                          "requestClientApplication", "applicationName", "application_name");
         }},
        {"end_user", [](TrailEvent& e, std::string_view v) { e.end_user = v; },
         [&](Format f, const std::string& line) {
             return field(f, line, "pii_audit", "end_user", "unmapped", "pii_audit", "end_user",
                          "cs2", "endUser", "end_user");
         }},
        {"session_user_name", [](TrailEvent& e, std::string_view v) { e.session_user_name = v; },
         [&](Format f, const std::string& line) {
             if (f == Format::json) return from_json(line, {"user", "name"});
             if (f == Format::ocsf) return from_json(line, {"actor", "user", "name"});
             return field(f, line, nullptr, nullptr, nullptr, nullptr, nullptr, "suser", "usrName",
                          "session_user_name");
         }},
        {"current_user_name", [](TrailEvent& e, std::string_view v) { e.current_user_name = v; },
         [&](Format f, const std::string& line) {
             if (f == Format::json) return from_json(line, {"user", "effective", "name"});
             return field(f, line, nullptr, nullptr, "unmapped", "pii_audit", "current_user_name",
                          "cs1", "currentUser", "current_user_name");
         }},
        {"relation", [](TrailEvent& e, std::string_view v) { e.relation = v; },
         [&](Format f, const std::string& line) {
             return field(f, line, "pii_audit", "relation", "table", "name", nullptr, "cs3",
                          "resource", "relation");
         }},
        {"column",
         [&](TrailEvent& e, std::string_view v) {
             one_column[0] = v;
             e.columns = TextList{one_column.data(), 1};
         },
         [&](Format f, const std::string& line) {
             if (f == Format::json)
                 return json::parse(line)["pii_audit"]["columns"][0].get<std::string>();
             if (f == Format::ocsf)
                 return json::parse(line)["unmapped"]["pii_audit"]["columns"][0].get<std::string>();
             std::string list = field(f, line, nullptr, nullptr, nullptr, nullptr, nullptr, "cs4",
                                      "columns", "columns");
             auto items = parse_csv(list);
             EXPECT_EQ(items.size(), 1u) << list.substr(0, 200);
             return items.empty() ? std::string() : items[0];
         }},
        {"query_text", [](TrailEvent& e, std::string_view v) { e.query_text = v; },
         [&](Format f, const std::string& line) {
             if (f == Format::json) return from_json(line, {"db", "statement"});
             return field(f, line, nullptr, nullptr, "query_info", "query_string", nullptr, "msg",
                          "query", "query_text");
         }},
        {"database_name", [](TrailEvent& e, std::string_view v) { e.database_name = v; },
         [&](Format f, const std::string& line) {
             if (f == Format::json) return from_json(line, {"db", "name"});
             return field(f, line, nullptr, nullptr, "database", "name", nullptr, "cs6", "database",
                          "database_name");
         }},
    };
    ocsf_test::Validator validator(ocsf_dir());
    for (const Hostile& h : hostile_values()) {
        for (const Field& fld : fields) {
            EventFixture fx;
            fld.set(fx.e, h.raw);
            for (Format f : kAll) {
                const std::string line = format(f, fx.e);
                SCOPED_TRACE(std::string(format_name(f)) + ", " + fld.name + ", " + h.name);
                expect_one_line(line);
                EXPECT_EQ(fld.read_back(f, line), expected_in(f, h));
                if (f == Format::ocsf) {
                    auto problems = validator.validate(json::parse(line));
                    EXPECT_TRUE(problems.empty()) << problems.front();
                }
            }
        }
    }
}

// Column lists keep their items apart in the line formats, whatever the names hold.
TEST(SiemFormat, ListsOfHostileNames) {
    EventFixture fx;
    std::vector<std::string_view> columns = {"a,b", "\"q\"", " padded ", "plain", "", "x\ny"};
    fx.e.columns = TextList{columns.data(), columns.size()};
    std::vector<std::string> want = {"a,b", "\"q\"", " padded ", "plain", "", "x\ny"};
    Cef c;
    ASSERT_TRUE(parse_cef(format(Format::cef, fx.e), &c));
    EXPECT_EQ(parse_csv(c.ext["cs4"]), want);
    Leef l;
    ASSERT_TRUE(parse_leef(format(Format::leef, fx.e), &l));
    EXPECT_EQ(parse_csv(l.attrs["columns"]), want);
    Syslog s;
    ASSERT_TRUE(parse_syslog(format(Format::rfc5424, fx.e), &s));
    want.back() = "x" + kFffd + "y";
    EXPECT_EQ(parse_csv(s.params["columns"]), want);
}

TEST(SiemFormat, HostileAlertFields) {
    for (const Hostile& h : hostile_values()) {
        AlertFixture fx(AlertChange::status, "acknowledged");
        fx.a.actor = h.raw;
        fx.a.note = h.raw;
        fx.a.explanation = h.raw;
        for (Format f : kAll) {
            SCOPED_TRACE(std::string(format_name(f)) + ", " + h.name);
            const std::string line = format(f, fx.a);
            expect_one_line(line);
            const std::string want = expected_in(f, h);
            if (f == Format::json) {
                json j = json::parse(line);
                EXPECT_EQ(j["user"]["name"], want);
                EXPECT_EQ(j["pii_audit"]["note"], want);
                EXPECT_EQ(j["message"], want);
            } else if (f == Format::ocsf) {
                json j = json::parse(line);
                EXPECT_EQ(j["evidences"][0]["actor"]["user"]["name"], want);
                EXPECT_EQ(j["comment"], want);
                EXPECT_EQ(j["finding_info"]["desc"], want);
            } else if (f == Format::cef) {
                Cef c;
                ASSERT_TRUE(parse_cef(line, &c));
                EXPECT_EQ(c.ext["suser"], want);
                EXPECT_EQ(c.ext["cs5"], want);
                EXPECT_EQ(c.ext["msg"], want);
            } else if (f == Format::leef) {
                Leef l;
                ASSERT_TRUE(parse_leef(line, &l));
                EXPECT_EQ(l.attrs["usrName"], want);
                EXPECT_EQ(l.attrs["note"], want);
                EXPECT_EQ(l.attrs["explanation"], want);
            } else {
                Syslog s;
                ASSERT_TRUE(parse_syslog(line, &s));
                EXPECT_EQ(s.params["actor"], want);
                EXPECT_EQ(s.params["note"], want);
                EXPECT_EQ(s.params["explanation"], want);
            }
        }
    }
}

TEST(SiemFormat, ServerNameThatIsNoHostName) {
    EventFixture fx;
    const Origin odd{"prod cluster|1", "0.3.0"};
    std::string line;
    format_event(Format::rfc5424, odd, fx.e, line);
    Syslog s;
    ASSERT_TRUE(parse_syslog(line, &s));
    EXPECT_EQ(s.header[1], "prod_cluster|1");
    EXPECT_EQ(s.params["server_name"], "prod cluster|1");
    line.clear();
    format_event(Format::ocsf, odd, fx.e, line);
    json j = json::parse(line);
    EXPECT_EQ(j["dst_endpoint"]["name"], "prod cluster|1");
    EXPECT_FALSE(j["dst_endpoint"].contains("hostname"));
    ocsf_test::Validator validator(ocsf_dir());
    auto problems = validator.validate(j);
    EXPECT_TRUE(problems.empty()) << problems.front();
}

// A read on a hot standby, stored by its primary: every format names the standby as the host
// of the event; ECS names the primary (the trail's server) as the observer.
TEST(SiemFormat, EventOfAnotherServer) {
    EventFixture fx;
    fx.e.server_name = "db-replica-2";
    json j = json::parse(format(Format::json, fx.e));
    EXPECT_EQ(j["host"]["name"], "db-replica-2");
    EXPECT_EQ(j["observer"]["name"], "db-1.example");
    EXPECT_EQ(j["pii_audit"]["server_name"], "db-replica-2");
    json o = json::parse(format(Format::ocsf, fx.e));
    EXPECT_EQ(o["dst_endpoint"]["hostname"], "db-replica-2");
    EXPECT_EQ(o["unmapped"]["pii_audit"]["server_name"], "db-replica-2");
    ocsf_test::Validator validator(ocsf_dir());
    auto problems = validator.validate(o);
    for (const auto& p : problems) ADD_FAILURE() << p;
    Cef c;
    ASSERT_TRUE(parse_cef(format(Format::cef, fx.e), &c));
    EXPECT_EQ(c.ext["dvchost"], "db-replica-2");
    Leef l;
    ASSERT_TRUE(parse_leef(format(Format::leef, fx.e), &l));
    EXPECT_EQ(l.attrs["serverName"], "db-replica-2");
    Syslog s;
    ASSERT_TRUE(parse_syslog(format(Format::rfc5424, fx.e), &s));
    EXPECT_EQ(s.header[1], "db-replica-2");
    EXPECT_EQ(s.params["server_name"], "db-replica-2");
    // The primary's own event: no observer name, the host is the trail's server.
    fx.e.server_name = "db-1.example";
    json own = json::parse(format(Format::json, fx.e));
    EXPECT_EQ(own["host"]["name"], "db-1.example");
    EXPECT_FALSE(own["observer"].contains("name"));
}

// ------------------------------------------------------------------ OCSF against the schema
TEST(SiemOcsf, EveryKindIsValidOcsf) {
    ocsf_test::Validator validator(ocsf_dir());
    struct Case {
        EventKind kind;
        const char* status;
        int class_uid, activity_id;
    } cases[] = {
        {EventKind::read, "completed", 6005, 1},
        {EventKind::read, "failed", 6005, 1},
        {EventKind::read, "denied", 6005, 1},
        {EventKind::login, "completed", 3002, 1},
        {EventKind::login, "failed", 3002, 1},
        {EventKind::label_change, "completed", 3004, 3},
        {EventKind::label_change, "failed", 3004, 3},
        {EventKind::gap, "lost", 1008, 99},
        {EventKind::removal, "completed", 1008, 2},
        {EventKind::removal, "failed", 1008, 2},
    };
    for (const auto& c : cases) {
        EventFixture fx(c.kind, c.status);
        json j = json::parse(format(Format::ocsf, fx.e));
        SCOPED_TRACE(j.dump());
        EXPECT_EQ(j["class_uid"], c.class_uid);
        EXPECT_EQ(j["activity_id"], c.activity_id);
        EXPECT_EQ(j["metadata"]["version"], "1.3.0");
        auto problems = validator.validate(j);
        for (const auto& p : problems) ADD_FAILURE() << p;
        // Without the optional parts (a Unix-socket client, no application, no statement).
        fx.e.client_addr.reset();
        fx.e.application_name.reset();
        fx.e.query_text.reset();
        fx.e.recorded_at.reset();
        problems = validator.validate(json::parse(format(Format::ocsf, fx.e)));
        for (const auto& p : problems) ADD_FAILURE() << "minimal: " << p;
    }
    struct AlertCase {
        AlertChange change;
        const char* status;
        int activity_id, status_id;
    } alerts[] = {
        {AlertChange::raised, "open", 1, 1},
        {AlertChange::status, "acknowledged", 2, 2},
        {AlertChange::status, "closed", 3, 4},
        {AlertChange::status, "open", 2, 1},
    };
    for (const auto& c : alerts) {
        for (const char* severity : {"low", "medium", "high", "critical"}) {
            AlertFixture fx(c.change, c.status);
            fx.a.severity = severity;
            json j = json::parse(format(Format::ocsf, fx.a));
            SCOPED_TRACE(j.dump());
            EXPECT_EQ(j["class_uid"], 2004);
            EXPECT_EQ(j["activity_id"], c.activity_id);
            EXPECT_EQ(j["status_id"], c.status_id);
            auto problems = validator.validate(j);
            for (const auto& p : problems) ADD_FAILURE() << p;
        }
    }
}

// The validator must be able to fail: each broken event names its problem.
TEST(SiemOcsf, ValidatorRejectsBrokenEvents) {
    ocsf_test::Validator validator(ocsf_dir());
    EventFixture fx;
    const json good = json::parse(format(Format::ocsf, fx.e));
    ASSERT_TRUE(validator.validate(good).empty());
    auto expect_problem = [&](const json& event, const std::string& needle) {
        auto problems = validator.validate(event);
        bool found = false;
        for (const auto& p : problems) found = found || p.find(needle) != std::string::npos;
        EXPECT_TRUE(found) << "no problem mentioning \"" << needle << "\" in " << event.dump();
    };
    json e = good;
    e.erase("metadata");
    expect_problem(e, "metadata: required");
    e = good;
    e["metadata"].erase("version");
    expect_problem(e, "metadata.version: required");
    e = good;
    e["type_uid"] = 600502;
    expect_problem(e, "type_uid");
    e = good;
    e["category_uid"] = 3;
    expect_problem(e, "category_uid");
    e = good;
    e["activity_id"] = 42;
    expect_problem(e, "activity_id: 42 is not one of its enum values");
    e = good;
    e["activity_name"] = "Write";
    expect_problem(e, "activity_name");
    e = good;
    e["time"] = "yesterday";
    expect_problem(e, "time: not an integer");
    e = good;
    e["severity_id"] = 4294967296LL;
    expect_problem(e, "severity_id: not a 32-bit integer");
    e = good;
    e["src_endpoint"]["ip"] = "10.1.2";
    expect_problem(e, "src_endpoint.ip");
    e = good;
    e["table"]["colour"] = "red";
    expect_problem(e, "table.colour: not an attribute");
    e = good;
    e.erase("database");
    e.erase("table");
    expect_problem(e, "needs at least one of");
    e = good;
    e["actor"]["user"] = "counter_app";
    expect_problem(e, "actor.user: not an object");
    e = good;
    e["class_name"] = "Datastore";
    expect_problem(e, "class_name");
    e = good;
    e["class_uid"] = 6099;
    expect_problem(e, "no OCSF class");
}

// Only the definition files the validator reads are vendored.
TEST(SiemOcsf, VendoredFilesAreAllNeeded) {
    ocsf_test::Validator validator(ocsf_dir());
    for (EventKind kind : {EventKind::read, EventKind::login, EventKind::label_change,
                           EventKind::gap, EventKind::removal}) {
        EventFixture fx(kind);
        validator.validate(json::parse(format(Format::ocsf, fx.e)));
    }
    AlertFixture alert;
    validator.validate(json::parse(format(Format::ocsf, alert.a)));
    std::set<std::string> vendored;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(ocsf_dir())) {
        if (entry.path().extension() != ".json") continue;
        vendored.insert(std::filesystem::relative(entry.path(), ocsf_dir()).string());
    }
    EXPECT_EQ(vendored, validator.files_read());
}
