// The grammar of a `pii` security label: comma-separated tokens, each a category name or
// `subject_key`. Whether a category exists is the caller's question (it lives in a table).
#pragma once
#include "pii_audit/pg_free.h"

#include <string>
#include <string_view>
#include <vector>

namespace pii_audit {

inline constexpr std::string_view kSubjectKeyToken = "subject_key";
inline constexpr std::size_t kMaxTokenLength = 63;  // a category name must fit a PostgreSQL name

struct ParsedLabel {
    std::vector<std::string> categories;  // lower-cased, in the order written, no duplicates
    bool subject_key = false;
};

struct LabelParseResult {
    bool ok = false;
    ParsedLabel label;
    std::string error;  // why the label was refused, when !ok
};

LabelParseResult parse_label(std::string_view text);

// For callers that must not hold C++ objects (PostgreSQL code that may longjmp): parses `text`
// and writes its categories as NUL-terminated items into `categories` (capacity at least
// text.size() + 1 bytes), or the reason for refusal into `error`. Never throws.
bool parse_label_into(std::string_view text, char* categories, std::size_t capacity,
                      std::size_t* categories_len, bool* subject_key, char* error,
                      std::size_t error_capacity) noexcept;

// Whether `token` has the form of a category name (or subject_key): a lowercase letter, then
// lowercase letters, digits and underscores, at most kMaxTokenLength bytes.
bool is_category_name(std::string_view token) noexcept;

// Calls visit(item) for each item of a comma-separated list of names (settings such as
// pii_audit.highly_sensitive_categories), with the spaces around it removed; empty items are
// skipped. Allocates nothing.
template <typename Visit>
void for_each_listed_name(std::string_view list, Visit&& visit) {
    std::size_t start = 0;
    while (start <= list.size()) {
        std::size_t comma = list.find(',', start);
        if (comma == std::string_view::npos) comma = list.size();
        std::string_view item = list.substr(start, comma - start);
        while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
        while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
        if (!item.empty()) visit(item);
        start = comma + 1;
    }
}

// The canonical spelling ("phone, subject_key"), used when a label is shown back to a user.
std::string format_label(const ParsedLabel& label);

}  // namespace pii_audit
