#include "pii_audit/analysis/json_lines.h"

#include <fmt/format.h>

#include <array>
#include <charconv>

namespace pii_audit::analysis {

namespace {

std::string describe(std::string_view in, std::size_t pos) {
    if (pos >= in.size()) return "end of line";
    const unsigned char c = static_cast<unsigned char>(in[pos]);
    if (c >= 0x20 && c < 0x7f) return fmt::format("'{}'", static_cast<char>(c));
    return fmt::format("byte 0x{:02x}", c);
}

// Bytes that need no attention inside a string: not a quote, backslash or control character.
constexpr std::array<bool, 256> kPlain = [] {
    std::array<bool, 256> table{};
    for (int i = 0; i < 256; ++i) table[i] = i >= 0x20 && i != '"' && i != '\\';
    return table;
}();

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xc0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xe0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
        out += static_cast<char>(0xf0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    }
}

}  // namespace

bool JsonLine::fail(std::size_t pos, std::string_view what) {
    error_ = fmt::format("column {}: expected {}, found {}", pos + 1, what, describe(in_, pos));
    return false;
}

void JsonLine::skip_space() {
    // Compact lines (the common case) have no whitespace between tokens.
    if (pos_ < in_.size() && static_cast<unsigned char>(in_[pos_]) > ' ') return;
    while (pos_ < in_.size() &&
           (in_[pos_] == ' ' || in_[pos_] == '\t' || in_[pos_] == '\r' || in_[pos_] == '\n')) {
        ++pos_;
    }
}

const JsonValue* JsonLine::find(std::string_view key) const {
    for (const JsonField& f : fields_) {
        if (f.key == key) return &f.value;
    }
    return nullptr;
}

bool JsonLine::parse_string(std::string_view& out) {
    if (pos_ >= in_.size() || in_[pos_] != '"') return fail(pos_, "'\"' starting a string");
    const std::size_t start = ++pos_;
    // Fast path: no escapes, the view points into the line itself. One table lookup per byte.
    while (pos_ < in_.size() && kPlain[static_cast<unsigned char>(in_[pos_])]) ++pos_;
    if (pos_ < in_.size()) {
        const char c = in_[pos_];
        if (c == '"') {
            out = in_.substr(start, pos_ - start);
            ++pos_;
            return true;
        }
        if (c != '\\') return fail(pos_, "a control character to be escaped");
    }
    if (pos_ >= in_.size()) return fail(pos_, "'\"' closing the string");
    const std::size_t scratch_start = scratch_.size();
    scratch_.append(in_.data() + start, pos_ - start);
    while (pos_ < in_.size()) {
        const char c = in_[pos_];
        if (c == '"') {
            out =
                std::string_view(scratch_.data() + scratch_start, scratch_.size() - scratch_start);
            ++pos_;
            return true;
        }
        if (static_cast<unsigned char>(c) < 0x20)
            return fail(pos_, "a control character to be escaped");
        if (c != '\\') {
            scratch_ += c;
            ++pos_;
            continue;
        }
        if (++pos_ >= in_.size()) return fail(pos_, "an escape character after '\\'");
        switch (in_[pos_]) {
            case '"':
                scratch_ += '"';
                break;
            case '\\':
                scratch_ += '\\';
                break;
            case '/':
                scratch_ += '/';
                break;
            case 'b':
                scratch_ += '\b';
                break;
            case 'f':
                scratch_ += '\f';
                break;
            case 'n':
                scratch_ += '\n';
                break;
            case 'r':
                scratch_ += '\r';
                break;
            case 't':
                scratch_ += '\t';
                break;
            case 'u': {
                auto read4 = [&](std::size_t at, std::uint32_t& cp) {
                    if (at + 4 > in_.size()) return false;
                    cp = 0;
                    for (std::size_t i = at; i < at + 4; ++i) {
                        const int d = hex_digit(in_[i]);
                        if (d < 0) return false;
                        cp = cp * 16 + static_cast<std::uint32_t>(d);
                    }
                    return true;
                };
                std::uint32_t cp;
                if (!read4(pos_ + 1, cp)) return fail(pos_ + 1, "four hex digits after '\\u'");
                pos_ += 4;
                if (cp >= 0xd800 && cp < 0xdc00) {
                    std::uint32_t low;
                    if (pos_ + 2 < in_.size() && in_[pos_ + 1] == '\\' && in_[pos_ + 2] == 'u' &&
                        read4(pos_ + 3, low) && low >= 0xdc00 && low < 0xe000) {
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                        pos_ += 6;
                    } else {
                        return fail(pos_ + 1,
                                    "a low surrogate '\\uDC00'-'\\uDFFF' after a high one");
                    }
                } else if (cp >= 0xdc00 && cp < 0xe000) {
                    return fail(pos_ - 3, "a code point, not a lone low surrogate");
                }
                append_utf8(scratch_, cp);
                break;
            }
            default:
                return fail(pos_, "one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u");
        }
        ++pos_;
    }
    return fail(pos_, "'\"' closing the string");
}

bool JsonLine::parse_number(JsonValue& out) {
    const std::size_t start = pos_;
    if (pos_ < in_.size() && in_[pos_] == '-') ++pos_;
    if (pos_ >= in_.size() || in_[pos_] < '0' || in_[pos_] > '9') return fail(pos_, "a digit");
    if (in_[pos_] == '0') {
        ++pos_;
        if (pos_ < in_.size() && in_[pos_] >= '0' && in_[pos_] <= '9') {
            return fail(pos_, "no leading zeros in a number");
        }
    } else {
        while (pos_ < in_.size() && in_[pos_] >= '0' && in_[pos_] <= '9') ++pos_;
    }
    bool integer = true;
    if (pos_ < in_.size() && in_[pos_] == '.') {
        integer = false;
        ++pos_;
        if (pos_ >= in_.size() || in_[pos_] < '0' || in_[pos_] > '9')
            return fail(pos_, "a digit after '.'");
        while (pos_ < in_.size() && in_[pos_] >= '0' && in_[pos_] <= '9') ++pos_;
    }
    if (pos_ < in_.size() && (in_[pos_] == 'e' || in_[pos_] == 'E')) {
        integer = false;
        ++pos_;
        if (pos_ < in_.size() && (in_[pos_] == '+' || in_[pos_] == '-')) ++pos_;
        if (pos_ >= in_.size() || in_[pos_] < '0' || in_[pos_] > '9')
            return fail(pos_, "a digit in the exponent");
        while (pos_ < in_.size() && in_[pos_] >= '0' && in_[pos_] <= '9') ++pos_;
    }
    const char* first = in_.data() + start;
    const char* last = in_.data() + pos_;
    out.kind = JsonValue::Kind::number;
    out.is_integer = false;
    if (integer) {
        auto r = std::from_chars(first, last, out.integer);
        if (r.ec == std::errc() && r.ptr == last) {
            out.is_integer = true;
            out.number = static_cast<double>(out.integer);
            return true;
        }
    }
    auto r = std::from_chars(first, last, out.number);
    if (r.ec != std::errc() || r.ptr != last) return fail(start, "a number within double range");
    return true;
}

bool JsonLine::parse_value(JsonValue& out) {
    skip_space();
    if (pos_ >= in_.size()) return fail(pos_, "a value");
    const char c = in_[pos_];
    out = JsonValue();
    if (c == '"') {
        out.kind = JsonValue::Kind::string;
        return parse_string(out.string);
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(out);
    if (in_.compare(pos_, 4, "true") == 0) {
        out.kind = JsonValue::Kind::boolean;
        out.boolean = true;
        pos_ += 4;
        return true;
    }
    if (in_.compare(pos_, 5, "false") == 0) {
        out.kind = JsonValue::Kind::boolean;
        pos_ += 5;
        return true;
    }
    if (in_.compare(pos_, 4, "null") == 0) {
        pos_ += 4;
        return true;
    }
    if (c == '[') {
        ++pos_;
        out.kind = JsonValue::Kind::string_array;
        out.array_begin = static_cast<std::uint32_t>(items_.size());
        skip_space();
        if (pos_ < in_.size() && in_[pos_] == ']') {
            ++pos_;
            return true;
        }
        for (;;) {
            skip_space();
            // Arrays hold strings, or numbers (kept as their text), never a mix.
            const bool is_string = pos_ < in_.size() && in_[pos_] == '"';
            const bool is_number =
                pos_ < in_.size() && (in_[pos_] == '-' || (in_[pos_] >= '0' && in_[pos_] <= '9'));
            if (out.array_size == 0 && is_number) out.kind = JsonValue::Kind::number_array;
            std::string_view item;
            if (out.kind == JsonValue::Kind::string_array) {
                if (!is_string)
                    return fail(pos_, "a string (arrays hold only strings or only numbers)");
                if (!parse_string(item)) return false;
            } else {
                if (!is_number)
                    return fail(pos_, "a number (arrays hold only strings or only numbers)");
                const std::size_t start = pos_;
                JsonValue number;
                if (!parse_number(number)) return false;
                item = in_.substr(start, pos_ - start);
            }
            items_.push_back(item);
            ++out.array_size;
            skip_space();
            if (pos_ < in_.size() && in_[pos_] == ',') {
                ++pos_;
                continue;
            }
            if (pos_ < in_.size() && in_[pos_] == ']') {
                ++pos_;
                return true;
            }
            return fail(pos_, "',' or ']' in an array");
        }
    }
    if (c == '{')
        return fail(pos_,
                    "a string, number, boolean, null or array of strings (nested objects are not "
                    "supported)");
    return fail(pos_, "a value (string, number, true, false, null or array)");
}

bool JsonLine::parse(std::string_view line) {
    in_ = line;
    pos_ = 0;
    fields_.clear();
    items_.clear();
    scratch_.clear();
    if (scratch_.capacity() < line.size()) scratch_.reserve(line.size());
    error_.clear();
    skip_space();
    if (pos_ >= in_.size() || in_[pos_] != '{') return fail(pos_, "'{' starting an object");
    ++pos_;
    skip_space();
    if (pos_ < in_.size() && in_[pos_] == '}') {
        ++pos_;
    } else {
        for (;;) {
            skip_space();
            JsonField field;
            if (pos_ >= in_.size() || in_[pos_] != '"') return fail(pos_, "'\"' starting a key");
            const std::size_t key_pos = pos_;
            if (!parse_string(field.key)) return false;
            if (find(field.key) != nullptr) {
                error_ = fmt::format("column {}: duplicate key \"{}\"", key_pos + 1, field.key);
                return false;
            }
            skip_space();
            if (pos_ >= in_.size() || in_[pos_] != ':') return fail(pos_, "':' after a key");
            ++pos_;
            if (!parse_value(field.value)) return false;
            fields_.push_back(field);
            skip_space();
            if (pos_ < in_.size() && in_[pos_] == ',') {
                ++pos_;
                continue;
            }
            if (pos_ < in_.size() && in_[pos_] == '}') {
                ++pos_;
                break;
            }
            return fail(pos_, "',' or '}' after a value");
        }
    }
    skip_space();
    if (pos_ != in_.size()) return fail(pos_, "end of line after the object");
    return true;
}

}  // namespace pii_audit::analysis
