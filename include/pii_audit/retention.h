// pii_audit.retention: how long the trail keeps events. The setting is a duration in
// PostgreSQL's interval words ("400 days", "13 months", "2 years 6 months"), or empty to keep
// everything. Parsed here, without PostgreSQL, so that a bad value is refused with a message
// before it takes effect, and turned into a canonical interval text that PostgreSQL's interval
// input always accepts.
#pragma once
#include "pii_audit/pg_free.h"

#include <cstddef>
#include <string>
#include <string_view>

namespace pii_audit {

struct Retention {
    bool keep_everything = true;
    int months = 0;  // years count as 12 months
    int days = 0;    // weeks count as 7 days
    // "13 months 5 days": PostgreSQL interval input, for now() - interval.
    std::string interval_text() const;
};

// The shortest and longest retention accepted.
inline constexpr int kMinRetentionDays = 1;
inline constexpr int kMaxRetentionYears = 100;

// False, with the reason in error, when text is not a retention: a sum of parts "<count> <unit>"
// with unit year(s), month(s), week(s) or day(s) (case-insensitive), between one day and 100
// years in total; empty or blank keeps everything.
bool parse_retention(std::string_view text, Retention* out, char* error, std::size_t error_size);

}  // namespace pii_audit
