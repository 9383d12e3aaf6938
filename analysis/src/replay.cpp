#include "pii_audit/analysis/replay.h"

#include "pii_audit/civil_time.h"

#include <fmt/format.h>

#include <cmath>

namespace pii_audit::analysis {

namespace {

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's well-known derivation).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

bool digits(std::string_view s, std::size_t at, std::size_t n, int& out) {
    if (at + n > s.size()) return false;
    out = 0;
    for (std::size_t i = at; i < at + n; ++i) {
        if (s[i] < '0' || s[i] > '9') return false;
        out = out * 10 + (s[i] - '0');
    }
    return true;
}

bool equals_ignore_case(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
        if (x != y) return false;
    }
    return true;
}

}  // namespace

bool parse_iso8601(std::string_view s, std::int64_t& time_us) {
    int year, month, day, hour, minute, second;
    if (!digits(s, 0, 4, year) || s.size() < 19 || s[4] != '-' || !digits(s, 5, 2, month) ||
        s[7] != '-' || !digits(s, 8, 2, day) || (s[10] != 'T' && s[10] != ' ') ||
        !digits(s, 11, 2, hour) || s[13] != ':' || !digits(s, 14, 2, minute) || s[16] != ':' ||
        !digits(s, 17, 2, second)) {
        return false;
    }
    static constexpr int kDaysIn[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (month < 1 || month > 12 || day < 1 || day > kDaysIn[month - 1] || hour > 23 ||
        minute > 59 || second > 60) {
        return false;
    }
    const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (month == 2 && day == 29 && !leap) return false;
    std::size_t pos = 19;
    std::int64_t micros = 0;
    if (pos < s.size() && s[pos] == '.') {
        ++pos;
        int n = 0;
        while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
            if (n < 6) micros = micros * 10 + (s[pos] - '0');
            ++n;
            ++pos;
        }
        if (n == 0) return false;
        for (; n < 6; ++n) micros *= 10;
    }
    std::int64_t offset_s = 0;
    if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
        ++pos;
    } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
        const int sign = s[pos] == '-' ? -1 : 1;
        int oh, om = 0;
        if (!digits(s, pos + 1, 2, oh)) return false;
        pos += 3;
        if (pos < s.size() && s[pos] == ':') ++pos;
        if (pos < s.size()) {
            if (!digits(s, pos, 2, om)) return false;
            pos += 2;
        }
        if (oh > 23 || om > 59) return false;
        offset_s = sign * (oh * 3600 + om * 60);
    } else {
        return false;
    }
    if (pos != s.size()) return false;
    const std::int64_t days =
        days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day));
    const std::int64_t secs = days * 86400 + hour * 3600 + minute * 60 + second - offset_s;
    time_us = secs * 1000000 + micros;
    return true;
}

std::string format_iso8601(std::int64_t time_us) {
    const CivilTime c = civil_time(time_us);
    return fmt::format("{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}Z", c.year, c.month, c.day, c.hour,
                       c.minute, c.second);
}

namespace {

// The keys the replay format knows; one pass over a line's fields finds them all.
constexpr std::string_view kKeys[] = {
    "kind",     "time",    "actor",   "peer_group", "application", "client_addr", "command",
    "relation", "session", "columns", "categories", "subjects",    "rows",        "status",
    "event_id", "success", "subject", "name",       "until"};
constexpr std::size_t kKeyCount = sizeof kKeys / sizeof kKeys[0];

std::size_t key_index(std::string_view key) {
    for (std::size_t i = 0; i < kKeyCount; ++i) {
        // Length and first byte rule out almost every candidate before a full compare.
        if (kKeys[i].size() == key.size() && kKeys[i][0] == key[0] && kKeys[i] == key) return i;
    }
    return kKeyCount;
}

}  // namespace

bool decode_record(const JsonLine& line, Record& out, std::string& error) {
    out = Record();
    using Kind = JsonValue::Kind;
    const JsonValue* found[kKeyCount] = {};
    for (const JsonField& f : line.fields()) {
        if (f.key.empty()) continue;
        const std::size_t i = key_index(f.key);
        if (i < kKeyCount) found[i] = &f.value;
    }
    auto find = [&](std::string_view key) -> const JsonValue* {
        for (std::size_t i = 0; i < kKeyCount; ++i) {
            if (kKeys[i] == key) return found[i];
        }
        return nullptr;
    };
    auto text = [&](std::string_view key, bool required, std::string_view& into) {
        const JsonValue* v = find(key);
        if (v == nullptr || v->kind == Kind::null) {
            if (required) error = fmt::format("missing field \"{}\" (a string)", key);
            return !required;
        }
        if (v->kind != Kind::string) {
            error = fmt::format("field \"{}\" must be a string", key);
            return false;
        }
        into = v->string;
        return true;
    };
    auto strings = [&](std::string_view key, Span<std::string_view>& into) {
        const JsonValue* v = find(key);
        if (v == nullptr || v->kind == Kind::null) return true;
        // Numeric ids are accepted as their text: subject 42 and "42" are the same person.
        if (v->kind != Kind::string_array && v->kind != Kind::number_array) {
            error = fmt::format("field \"{}\" must be an array of strings", key);
            return false;
        }
        into = Span<std::string_view>{line.array_items(*v), v->array_size};
        return true;
    };

    std::string_view kind = "access";
    if (!text("kind", false, kind)) return false;
    if (kind == "access") {
        out.kind = RecordKind::access;
    } else if (kind == "login") {
        out.kind = RecordKind::login;
    } else if (kind == "relation") {
        out.kind = RecordKind::relation;
    } else if (kind == "departed") {
        out.kind = RecordKind::departed;
    } else if (kind == "known_event") {
        out.kind = RecordKind::known_event;
    } else {
        error = fmt::format(
            "field \"kind\" must be \"access\", \"login\", \"relation\", \"departed\" or "
            "\"known_event\", not \"{}\"",
            kind);
        return false;
    }
    std::string_view time;
    if (!text("time", true, time)) return false;
    if (!parse_iso8601(time, out.time_us)) {
        error = fmt::format(
            "field \"time\" must be ISO-8601 with an offset, like 2024-03-01T09:15:00Z or "
            "2024-03-01T17:15:00.25+08:00, not \"{}\"",
            time);
        return false;
    }
    if (out.kind == RecordKind::known_event) {
        std::string_view until;
        if (!text("name", true, out.name) || !text("until", true, until) ||
            !text("peer_group", false, out.peer_group)) {
            return false;
        }
        if (out.name.empty()) {
            error = "field \"name\" must not be empty";
            return false;
        }
        if (!parse_iso8601(until, out.until_us) || out.until_us <= out.time_us) {
            error = fmt::format(
                "field \"until\" must be an ISO-8601 time with an offset after \"time\", not "
                "\"{}\"",
                until);
            return false;
        }
        return true;
    }
    if (!text("actor", true, out.actor)) return false;
    if (out.actor.empty()) {
        error = "field \"actor\" must not be empty";
        return false;
    }
    std::uint64_t event_id = 0;
    if (const JsonValue* v = find("event_id"); v != nullptr && v->kind != Kind::null) {
        if (v->kind != Kind::number || !v->is_integer || v->integer < 0) {
            error = "field \"event_id\" must be a non-negative integer";
            return false;
        }
        event_id = static_cast<std::uint64_t>(v->integer);
    }

    switch (out.kind) {
        case RecordKind::access: {
            AccessEvent& e = out.access;
            e.time_us = out.time_us;
            e.actor = out.actor;
            e.event_id = event_id;
            std::string_view command = "SELECT", status = "ok";
            if (!text("peer_group", false, e.peer_group) ||
                !text("application", false, e.application) ||
                !text("client_addr", false, e.client_addr) ||
                !text("relation", false, e.relation) || !text("session", false, e.session) ||
                !text("command", false, command) || !text("status", false, status) ||
                !strings("categories", e.categories) || !strings("subjects", e.subjects)) {
                return false;
            }
            Span<std::string_view> columns;
            if (!strings("columns", columns)) return false;
            if (equals_ignore_case(command, "select")) {
                e.command = Command::select;
            } else if (equals_ignore_case(command, "copy")) {
                e.command = Command::copy;
            } else if (equals_ignore_case(command, "insert")) {
                e.command = Command::insert;
            } else if (equals_ignore_case(command, "update")) {
                e.command = Command::update;
            } else if (equals_ignore_case(command, "delete")) {
                e.command = Command::delete_;
            } else {
                e.command = Command::other;
            }
            if (equals_ignore_case(status, "ok") || equals_ignore_case(status, "success")) {
                e.status = AccessStatus::ok;
            } else if (equals_ignore_case(status, "denied")) {
                e.status = AccessStatus::denied;
            } else if (equals_ignore_case(status, "error")) {
                e.status = AccessStatus::error;
            } else {
                error = fmt::format(
                    "field \"status\" must be \"ok\", \"denied\" or \"error\", not \"{}\"", status);
                return false;
            }
            if (const JsonValue* v = find("rows"); v != nullptr && v->kind != Kind::null) {
                if (v->kind != Kind::number || !v->is_integer || v->integer < 0) {
                    error = "field \"rows\" must be a non-negative integer";
                    return false;
                }
                e.rows = v->integer;
            } else {
                e.rows = static_cast<std::int64_t>(e.subjects.size);
            }
            return true;
        }
        case RecordKind::login: {
            LoginEvent& e = out.login;
            e.time_us = out.time_us;
            e.actor = out.actor;
            e.event_id = event_id;
            if (!text("peer_group", false, e.peer_group) ||
                !text("client_addr", false, e.client_addr)) {
                return false;
            }
            const JsonValue* v = find("success");
            if (v == nullptr || v->kind != Kind::boolean) {
                error = "field \"success\" must be true or false";
                return false;
            }
            e.success = v->boolean;
            return true;
        }
        case RecordKind::relation: {
            RelationEvent& e = out.relation;
            e.time_us = out.time_us;
            e.actor = out.actor;
            return text("subject", true, e.subject);
        }
        case RecordKind::departed:
        case RecordKind::known_event:
            return true;
    }
    return true;
}

void append_json_string(std::string& out, std::string_view s) {
    out += '"';
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (u < 0x20) {
            fmt::format_to(std::back_inserter(out), "\\u{:04x}", u);
        } else {
            out += c;
        }
    }
    out += '"';
}

std::string alert_json(const Alert& alert) {
    std::string out = "{\"time\":";
    append_json_string(out, format_iso8601(alert.time_us));
    out += ",\"actor\":";
    append_json_string(out, alert.actor);
    out += ",\"peer_group\":";
    append_json_string(out, alert.peer_group);
    out += ",\"detector\":";
    append_json_string(out, detector_name(alert.detector));
    fmt::format_to(std::back_inserter(out), ",\"score\":{},\"severity\":", alert.score);
    append_json_string(out, severity_name(alert.severity));
    out += ",\"explanation\":";
    append_json_string(out, alert.explanation);
    out += ",\"evidence\":[";
    for (std::size_t i = 0; i < alert.evidence.size(); ++i) {
        if (i) out += ',';
        fmt::format_to(std::back_inserter(out), "{}", alert.evidence[i]);
    }
    out += "]}";
    return out;
}

}  // namespace pii_audit::analysis
