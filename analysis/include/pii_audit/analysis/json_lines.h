// A small, strict reader for one JSON object per line: the subset the replay format needs
// (strings with escapes, numbers, true/false/null, arrays of strings or of numbers) and nothing
// else. It keeps
// its buffers between lines, so parsing a line does not allocate once they have grown.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pii_audit/pg_free.h"

namespace pii_audit::analysis {

struct JsonValue {
    enum class Kind : std::uint8_t { null, boolean, number, string, string_array, number_array };
    Kind kind = Kind::null;
    bool boolean = false;
    bool is_integer = false;   // number written without fraction or exponent
    std::int64_t integer = 0;  // valid when is_integer (and it fits)
    double number = 0;
    std::string_view string;        // valid until the next parse()
    std::uint32_t array_begin = 0;  // into JsonLine::array_items(); numbers as their text
    std::uint32_t array_size = 0;
};

struct JsonField {
    std::string_view key;
    JsonValue value;
};

class JsonLine {
  public:
    // Parses one line (without its newline). On failure returns false and error() says where
    // (1-based column) and what was expected.
    bool parse(std::string_view line);

    const std::vector<JsonField>& fields() const { return fields_; }
    const JsonValue* find(std::string_view key) const;
    const std::string_view* array_items(const JsonValue& v) const {
        return items_.data() + v.array_begin;
    }
    const std::string& error() const { return error_; }

  private:
    bool fail(std::size_t pos, std::string_view what);
    void skip_space();
    bool parse_string(std::string_view& out);
    bool parse_number(JsonValue& out);
    bool parse_value(JsonValue& out);

    std::string_view in_;
    std::size_t pos_ = 0;
    std::vector<JsonField> fields_;
    std::vector<std::string_view> items_;
    std::string scratch_;  // unescaped strings; reserved to the line length so views stay valid
    std::string error_;
};

}  // namespace pii_audit::analysis
