// The replay format (analysis/README.md): turns parsed JSON lines into scorer events and alerts
// back into JSON lines. Shared by pii-audit-score, the tests and the bench.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "pii_audit/analysis/events.h"
#include "pii_audit/analysis/json_lines.h"
#include "pii_audit/analysis/scorer.h"
#include "pii_audit/pg_free.h"

namespace pii_audit::analysis {

enum class RecordKind : std::uint8_t { access, login, relation, departed, known_event };

struct Record {
    RecordKind kind = RecordKind::access;
    AccessEvent access;      // kind == access
    LoginEvent login;        // kind == login
    RelationEvent relation;  // kind == relation
    std::int64_t time_us = 0;
    std::string_view actor;  // every kind but known_event
    // kind == known_event: a declared period [time_us, until_us) for peer_group (empty: all).
    std::string_view name;
    std::string_view peer_group;
    std::int64_t until_us = 0;
};

// Fills `out` with views into `line`; returns false with a message naming the field and what was
// expected. Unknown keys are ignored so that exports with extra columns replay unchanged.
bool decode_record(const JsonLine& line, Record& out, std::string& error);

// "2024-03-01T09:15:00Z", "2024-03-01T09:15:00.123456+08:00", "2024-03-01 09:15:00Z".
// A missing offset is an error: local times are ambiguous.
bool parse_iso8601(std::string_view text, std::int64_t& time_us);
std::string format_iso8601(std::int64_t time_us);  // UTC, seconds, "Z"

// {"time","actor","peer_group","detector","score","severity","explanation","evidence"}
std::string alert_json(const Alert& alert);
void append_json_string(std::string& out, std::string_view s);

}  // namespace pii_audit::analysis
