#include "pii_audit/label_grammar.h"

#include "pii_audit/cpp_call.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace pii_audit {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

}  // namespace

bool is_category_name(std::string_view t) noexcept {
    if (t.empty() || t.size() > kMaxTokenLength) return false;
    if (!(t[0] >= 'a' && t[0] <= 'z')) return false;
    return std::all_of(t.begin(), t.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    });
}

LabelParseResult parse_label(std::string_view text) {
    LabelParseResult result;
    if (trim(text).empty()) {
        result.error =
            "a pii label must name one or more categories and/or subject_key, e.g. 'phone' or "
            "'phone, subject_key' (to remove a label use IS NULL)";
        return result;
    }
    std::size_t position = 0;
    std::size_t start = 0;
    while (start <= text.size()) {
        std::size_t comma = text.find(',', start);
        if (comma == std::string_view::npos) comma = text.size();
        ++position;
        std::string_view raw = trim(text.substr(start, comma - start));
        std::string token(raw.size(), '\0');
        std::transform(raw.begin(), raw.end(), token.begin(), lower);
        if (token.empty()) {
            result.error = fmt::format(
                "token {} of the pii label is empty: separate category names with single commas",
                position);
            return result;
        }
        if (!is_category_name(token)) {
            result.error = fmt::format(
                "\"{}\" is not a valid pii label token: category names are letters, digits and "
                "underscores, start with a letter and are at most {} characters",
                std::string(raw), kMaxTokenLength);
            return result;
        }
        if (token == kSubjectKeyToken) {
            if (result.label.subject_key) {
                result.error = "subject_key appears twice in the pii label";
                return result;
            }
            result.label.subject_key = true;
        } else {
            auto& cats = result.label.categories;
            if (std::find(cats.begin(), cats.end(), token) != cats.end()) {
                result.error = fmt::format("category \"{}\" appears twice in the pii label", token);
                return result;
            }
            cats.push_back(std::move(token));
        }
        start = comma + 1;
    }
    result.ok = true;
    return result;
}

bool parse_label_into(std::string_view text, char* categories, std::size_t capacity,
                      std::size_t* categories_len, bool* subject_key, char* error,
                      std::size_t error_capacity) noexcept {
    auto set_error = [&](std::string_view message) {
        if (error_capacity == 0) return;
        std::size_t n = std::min(message.size(), error_capacity - 1);
        std::memcpy(error, message.data(), n);
        error[n] = '\0';
    };
    bool ok = false;
    char failure[256];
    bool completed = pii_audit::boundary::cpp_call(nullptr, [&] {
        LabelParseResult parsed = parse_label(text);
        if (!parsed.ok) {
            set_error(parsed.error);
            return;
        }
        std::size_t used = 0;
        for (const auto& category : parsed.label.categories) {
            if (used + category.size() + 1 > capacity) {
                set_error("pii label output buffer too small");
                return;
            }
            std::memcpy(categories + used, category.c_str(), category.size() + 1);
            used += category.size() + 1;
        }
        *categories_len = used;
        *subject_key = parsed.label.subject_key;
        ok = true;
    }, failure, sizeof failure);
    if (!completed) set_error(failure);
    return ok;
}

std::string format_label(const ParsedLabel& label) {
    std::string out;
    for (const auto& c : label.categories) {
        if (!out.empty()) out += ", ";
        out += c;
    }
    if (label.subject_key) {
        if (!out.empty()) out += ", ";
        out += kSubjectKeyToken;
    }
    return out;
}

}  // namespace pii_audit
