// SIEM export formats: one trail event, or one alert event (an alert raised, or its status
// changed by an officer), becomes one line of text in the format a SIEM reads:
//
//   json     one JSON object, Elastic Common Schema names where ECS has one (@timestamp,
//            event.*, user.*, source.ip, host.name, db.*), the rest under pii_audit.*
//   ocsf     one JSON object of OCSF 1.3.0: Datastore Activity (6005) for reads, Entity
//            Management (3004) for label changes, Authentication (3002) for logins, Event Log
//            Activity (1008) for gaps and removals, Detection Finding (2004) for alerts
//   cef      ArcSight CEF 0 (header escaping: \ and |; extension escaping: \, = and newlines)
//   leef     IBM QRadar LEEF 2.0, tab-delimited attributes
//   rfc5424  a syslog message (RFC 5424) with the event as structured data
//
// The fields are what the trail holds, no more: subjects as their keyed hashes, statements with
// their constants already replaced by $n. Every text field is made valid UTF-8 first (a byte
// that is not part of a UTF-8 character becomes U+FFFD), then escaped as its format requires;
// a control character a format cannot escape becomes U+FFFD too, so a line never breaks.
// The README ("For SIEM teams") documents every field of every format.
//
// PostgreSQL-free: the extension's export functions, the shipper and the unit tests share it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "pii_audit/pg_free.h"

namespace pii_audit::siem {

enum class Format : std::uint8_t { json, ocsf, cef, leef, rfc5424 };

// The names export() accepts, for error messages.
inline constexpr const char* kFormatNames = "json, ocsf, cef, leef, rfc5424";
// The OCSF schema version the ocsf format follows (metadata.version).
inline constexpr const char* kOcsfVersion = "1.3.0";

// Case-sensitive, as SQL callers write them. False for anything else.
bool parse_format(std::string_view name, Format* format) noexcept;
const char* format_name(Format format) noexcept;

// Arrays handed in from the caller's memory (PostgreSQL arrays unpacked at the edge). Plain
// views: nothing here owns memory, so no destructor runs or is skipped.
struct TextList {
    const std::string_view* items = nullptr;
    std::size_t size = 0;
};
struct IdList {
    const std::int64_t* items = nullptr;
    std::size_t size = 0;
};

// removal: events left the trail (retention, or a superuser's pii_audit.remove_events): relation
// names the partition removed, row_count how many events, detail which ids and why.
enum class EventKind : std::uint8_t { read, login, label_change, gap, removal };
bool parse_event_kind(std::string_view name, EventKind* kind) noexcept;

// One row of pii_audit.events. Times are microseconds since 1970-01-01 UTC. Absent (SQL NULL)
// values are empty optionals and are left out of the line.
struct TrailEvent {
    std::int64_t event_id = 0;
    std::int64_t event_time = 0;
    std::optional<std::int64_t> recorded_at;
    EventKind kind = EventKind::read;
    std::string_view status;  // completed, failed, denied; lost for gaps
    std::optional<std::string_view> database_name;
    std::optional<std::string_view> session_user_name;
    std::optional<std::string_view> current_user_name;
    std::optional<std::string_view> end_user;
    std::optional<std::string_view> application_name;
    std::optional<std::string_view> client_addr;  // inet text; absent for Unix-socket clients
    std::optional<std::int32_t> backend_pid;
    std::optional<std::string_view> command;
    std::optional<std::string_view> relation;
    std::optional<TextList> columns;
    std::optional<TextList> categories;
    std::optional<std::int64_t> row_count;
    std::optional<std::int64_t> query_id;
    std::optional<std::string_view> query_text;
    std::optional<bool> query_truncated;
    std::optional<std::int32_t> nesting_level;
    std::optional<std::string_view> detail;
    std::optional<std::int64_t> subject_count;
    std::optional<IdList> subjects;  // keyed hashes, as pii_audit.subject_hash() returns them
    std::optional<bool> subjects_truncated;
    std::optional<bool> subject_count_estimated;
    // The server the event happened on (the primary, or the hot standby that forwarded it);
    // absent for events stored before 0.3.0, which are the trail's server's (Origin).
    std::optional<std::string_view> server_name;
};

// raised: the worker stored a new alert; status: an officer changed its status or note.
enum class AlertChange : std::uint8_t { raised, status };

// One row of pii_audit.alert_events with its alert.
struct AlertEvent {
    std::int64_t alert_event_id = 0;
    AlertChange change = AlertChange::raised;
    std::int64_t event_time = 0;  // when it was raised, or when its status changed
    std::int64_t alert_id = 0;
    std::int64_t alert_time = 0;  // time of the event that raised it
    std::int64_t raised_at = 0;   // when the worker stored it
    std::string_view actor;
    std::string_view peer_group;
    std::string_view detector;
    std::int32_t score = 0;
    std::string_view severity;  // low, medium, high, critical
    std::string_view explanation;
    IdList evidence;          // event ids, oldest first
    std::string_view status;  // open, acknowledged, closed (after this change)
    std::optional<std::string_view> status_by;
    std::optional<std::int64_t> status_at;
    std::optional<std::string_view> note;
};

// What every line says about where it comes from.
struct Origin {
    std::string_view server_name;      // the server storing the trail (cluster_name or host name)
    std::string_view product_version;  // pii_audit's version
};

// Appends one line (without a line end) to `out`. Throws only std::bad_alloc.
void format_event(Format format, const Origin& origin, const TrailEvent& event, std::string& out);
void format_alert(Format format, const Origin& origin, const AlertEvent& alert, std::string& out);

// The escaping primitives, exposed for the unit tests and the shipper.
// Valid UTF-8 of `text`, every invalid byte replaced by U+FFFD.
void append_utf8(std::string& out, std::string_view text);
// A JSON string literal (quotes included).
void append_json_string(std::string& out, std::string_view text);
// CEF header field: \ -> \\, | -> \|; line breaks and other control characters -> U+FFFD.
void append_cef_header(std::string& out, std::string_view text);
// CEF extension value: \ -> \\, = -> \=, LF -> \n, CR -> \r; other controls -> U+FFFD.
void append_cef_value(std::string& out, std::string_view text);
// LEEF header field: \ -> \\, | -> \|; control characters -> U+FFFD.
void append_leef_header(std::string& out, std::string_view text);
// LEEF attribute value: \ -> \\, tab -> \t, LF -> \n, CR -> \r; other controls -> U+FFFD.
void append_leef_value(std::string& out, std::string_view text);
// RFC 5424 PARAM-VALUE: \ -> \\, " -> \", ] -> \]; control characters -> U+FFFD.
void append_sd_value(std::string& out, std::string_view text);
// RFC 5424 HOSTNAME (PRINTUSASCII, 1 to 255 characters): others -> '_', empty -> "-".
void append_syslog_hostname(std::string& out, std::string_view text);

// 2026-11-30T10:07:01.123456Z for microseconds since 1970-01-01 UTC.
void append_iso8601(std::string& out, std::int64_t unix_micros);

}  // namespace pii_audit::siem
