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

// The canonical spelling ("phone, subject_key"), used when a label is shown back to a user.
std::string format_label(const ParsedLabel& label);

}  // namespace pii_audit
