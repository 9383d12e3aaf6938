// Turns a SQL statement into the literal-free text the audit trail stores: every constant
// becomes a $n placeholder and comments are dropped, so the trail never copies the personal
// data it protects.
#pragma once
#include "pii_audit/pg_free.h"

#include <cstddef>
#include <string>
#include <string_view>

namespace pii_audit {

struct NormalizedQuery {
    std::string text;       // normalized statement, at most max_bytes long
    int constants = 0;      // how many constants were replaced
    bool truncated = false;  // text was cut at max_bytes (on a UTF-8 character boundary)
};

// Normalizes one statement. Never fails on malformed input (an unterminated string or comment is
// treated as running to the end and replaced). standard_conforming_strings follows the server
// setting of that name: when off, a backslash escapes the next byte in plain '...' strings, so
// '555\' 1234' is one constant. May throw std::bad_alloc only.
NormalizedQuery normalize_query(std::string_view sql, std::size_t max_bytes,
                                bool standard_conforming_strings = true);

}  // namespace pii_audit
