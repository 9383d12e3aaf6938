// Microseconds since 1970-01-01 UTC as a proleptic Gregorian date and time of day, without the
// C library's time zone machinery. Shared by the SIEM formats and the scorer's replay output.
#pragma once
#include "pii_audit/pg_free.h"

#include <cstdint>

namespace pii_audit {

struct CivilTime {
    std::int64_t year;
    unsigned month, day, hour, minute, second, micros;
};

// The era-based method: 400-year eras of 146097 days, March-based years so that the leap day
// comes last. Correct for negative times too (before 1970).
inline CivilTime civil_time(std::int64_t unix_micros) {
    std::int64_t secs = unix_micros / 1000000;
    std::int64_t us = unix_micros % 1000000;
    if (us < 0) {
        us += 1000000;
        --secs;
    }
    std::int64_t days = secs / 86400;
    std::int64_t sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        --days;
    }
    days += 719468;
    const std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    const auto doe = static_cast<unsigned>(days - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    CivilTime c;
    c.day = doy - (153 * mp + 2) / 5 + 1;
    c.month = mp < 10 ? mp + 3 : mp - 9;
    c.year = static_cast<std::int64_t>(yoe) + era * 400 + (c.month <= 2 ? 1 : 0);
    c.hour = static_cast<unsigned>(sod / 3600);
    c.minute = static_cast<unsigned>(sod % 3600 / 60);
    c.second = static_cast<unsigned>(sod % 60);
    c.micros = static_cast<unsigned>(us);
    return c;
}

}  // namespace pii_audit
