// Parsing of pii_audit.retention (see retention.h).
#include "pii_audit/retention.h"

#include <fmt/format.h>

#include <cctype>
#include <cstdio>

namespace pii_audit {
namespace {

bool fail(char* error, std::size_t size, const std::string& message) {
    if (size > 0) std::snprintf(error, size, "%s", message.c_str());
    return false;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string lower(std::string_view word) {
    std::string out(word);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

}  // namespace

std::string Retention::interval_text() const {
    if (keep_everything) return std::string();
    return fmt::format("{} months {} days", months, days);
}

bool parse_retention(std::string_view text, Retention* out, char* error, std::size_t error_size) {
    Retention result;
    std::size_t at = 0;
    long long months = 0, days = 0;
    bool any = false;
    for (;;) {
        while (at < text.size() && is_space(text[at])) ++at;
        if (at == text.size()) break;
        if (!std::isdigit(static_cast<unsigned char>(text[at])))
            return fail(error, error_size,
                        fmt::format("expected a number at \"{}\"", text.substr(at, 20)));
        long long count = 0;
        while (at < text.size() && std::isdigit(static_cast<unsigned char>(text[at]))) {
            count = count * 10 + (text[at] - '0');
            if (count > 1000000)
                return fail(error, error_size, "the number is too large");
            ++at;
        }
        while (at < text.size() && is_space(text[at])) ++at;
        std::size_t word_start = at;
        while (at < text.size() && std::isalpha(static_cast<unsigned char>(text[at]))) ++at;
        std::string unit = lower(text.substr(word_start, at - word_start));
        if (unit.empty())
            return fail(error, error_size,
                        fmt::format("{} needs a unit: days, weeks, months or years", count));
        if (unit == "day" || unit == "days")
            days += count;
        else if (unit == "week" || unit == "weeks")
            days += 7 * count;
        else if (unit == "month" || unit == "months")
            months += count;
        else if (unit == "year" || unit == "years")
            months += 12 * count;
        else
            return fail(error, error_size,
                        fmt::format("unknown unit \"{}\": use days, weeks, months or years",
                                    text.substr(word_start, at - word_start)));
        if (at < text.size() && !is_space(text[at]))
            return fail(error, error_size,
                        fmt::format("unexpected \"{}\"", text.substr(at, 20)));
        any = true;
        if (months > 12LL * kMaxRetentionYears || days > 366LL * kMaxRetentionYears) break;
    }
    if (!any) {
        *out = result;  // keep everything
        return true;
    }
    // For the bounds a month counts as an average Gregorian month.
    constexpr double kDaysPerMonth = 365.2425 / 12;
    double total_days = static_cast<double>(months) * kDaysPerMonth + static_cast<double>(days);
    if (total_days < kMinRetentionDays)
        return fail(error, error_size, "a retention must keep events for at least one day");
    if (total_days > 365.2425 * kMaxRetentionYears + 0.5)
        return fail(error, error_size,
                    fmt::format("a retention longer than {} years is not accepted (leave the "
                                "setting empty to keep everything)",
                                kMaxRetentionYears));
    result.keep_everything = false;
    result.months = static_cast<int>(months);
    result.days = static_cast<int>(days);
    *out = result;
    return true;
}

}  // namespace pii_audit
