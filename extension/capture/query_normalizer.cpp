// Replaces every constant of a SQL statement with a $n placeholder and drops its comments,
// following the lexical rules of PostgreSQL 15 (src/backend/parser/scan.l) without using
// PostgreSQL. Anything that might hold personal data (string, bit-string, dollar-quoted and numeric
// constants, comments) is never copied; everything else is copied byte for byte.
#include "pii_audit/query_normalizer.h"

#include <climits>
#include <cstdint>
#include <string>
#include <string_view>

namespace pii_audit {
namespace {

constexpr std::size_t kNpos = std::string_view::npos;

// Character classes of scan.l. Every byte >= 0x80 is an identifier character there, so a
// multibyte UTF-8 character outside quotes always stays whole inside the identifier it belongs to.
constexpr bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}
constexpr bool is_horiz_space(char c) { return c == ' ' || c == '\t' || c == '\f'; }
constexpr bool is_newline(char c) { return c == '\n' || c == '\r'; }
constexpr bool is_digit(char c) { return c >= '0' && c <= '9'; }
constexpr bool is_ident_start(char c) {
    const auto u = static_cast<unsigned char>(c);
    return (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || u == '_' || u >= 0x80;
}
constexpr bool is_dolq_cont(char c) { return is_ident_start(c) || is_digit(c); }
constexpr bool is_ident_cont(char c) { return is_dolq_cont(c) || c == '$'; }
constexpr bool is_utf8_continuation(char c) {
    return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}
// Lower-cases ASCII letters; only ever compared with lower-case letters, so other bytes may map
// to anything that is not one.
constexpr char lower(char c) { return static_cast<char>(c | 0x20); }

// How the body of a quoted constant is read.
enum class Quote {
    kStandard,  // '...', N'...', U&'...': '' is a quote; backslash is an ordinary character
    kEscape,    // E'...': backslash escapes the next byte, '' is a quote too
    kBit,       // B'...', X'...': no escapes at all, the first quote ends it
};

// Parameter numbers are capped so that placeholder numbers can never overflow.
constexpr std::uint64_t kMaxParam = 1'000'000'000'000'000'000ULL;

// One left-to-right pass over a statement. Without an output string it only looks for the highest
// existing $n parameter, so that new placeholders can be numbered after it.
class Normalizer {
  public:
    Normalizer(std::string_view sql, std::size_t max_bytes, std::uint64_t first_placeholder,
               std::string* out, bool standard_conforming_strings)
        : s_(sql),
          plain_quote_(standard_conforming_strings ? Quote::kStandard : Quote::kEscape),
          limit_(max_bytes),
          next_placeholder_(first_placeholder),
          out_(out) {}

    void run();

    std::uint64_t max_param() const { return max_param_; }
    int constants() const { return constants_; }
    bool truncated() const { return full_; }

  private:
    char peek(std::size_t i) const { return i < s_.size() ? s_[i] : '\0'; }

    // Scanners for one token starting at i; each returns the index just past it.
    std::size_t whitespace(std::size_t i);
    std::size_t word(std::size_t i);
    std::size_t number(std::size_t i);
    std::size_t dollar(std::size_t i);
    std::size_t string_constant(std::size_t quote, Quote mode, bool unicode);
    std::size_t quoted_identifier(std::size_t start, std::size_t quote, bool unicode);

    // Pure look-ups that never emit anything.
    std::size_t end_of_line_comment(std::size_t i) const;
    std::size_t end_of_block_comment(std::size_t i) const;
    std::size_t end_of_quoted(std::size_t i, Quote mode) const;
    std::size_t end_of_dollar_delimiter(std::size_t i) const;
    std::size_t end_of_dollar_quoted(std::size_t open, std::size_t body) const;
    std::size_t continuation(std::size_t i) const;
    std::size_t skip_blank(std::size_t i) const;
    bool is_uescape_at(std::size_t i) const;
    std::size_t end_of_uescape(std::size_t i) const;
    void note_identifier_uescape(std::size_t i);

    // Output.
    void flush_separator();
    void emit_token(std::size_t begin, std::size_t end);
    void emit_placeholder();
    void append(const char* p, std::size_t len);
    void append_whole(const char* p, std::size_t len);

    const std::string_view s_;
    // With standard_conforming_strings off, backslashes escape inside plain '...' strings too.
    const Quote plain_quote_;
    const std::size_t limit_;
    std::uint64_t next_placeholder_;
    std::string* const out_;

    std::uint64_t max_param_ = 0;
    int constants_ = 0;
    bool full_ = false;  // something did not fit within limit_; nothing more is appended

    // Whitespace since the last emitted token is held back, so that the gap a dropped comment
    // leaves can be closed up instead of leaving runs of blanks behind.
    std::string_view first_blank_;    // first whitespace run since the last token
    std::string_view newline_blank_;  // last run holding a newline since the last token
    bool dropped_ = false;            // a comment was dropped since the last token
    bool after_placeholder_ = false;  // the last thing emitted was a placeholder
    // Quote of the one-byte UESCAPE string after a U&"..." identifier: it belongs to the name.
    std::size_t verbatim_quote_ = kNpos;
};

void Normalizer::run() {
    const std::size_t n = s_.size();
    std::size_t i = 0;
    while (i < n) {
        const char c = s_[i];
        if (is_space(c)) {
            i = whitespace(i);
        } else if (c == '-' && peek(i + 1) == '-') {
            i = end_of_line_comment(i);
            dropped_ = true;
        } else if (c == '/' && peek(i + 1) == '*') {
            i = end_of_block_comment(i);
            dropped_ = true;
        } else if (c == '\'') {
            if (i == verbatim_quote_) {
                emit_token(i, i + 3);
                i += 3;
            } else {
                i = string_constant(i, plain_quote_, false);
            }
        } else if (c == '"') {
            i = quoted_identifier(i, i, false);
        } else if (is_ident_start(c)) {
            i = word(i);
        } else if (is_digit(c) || (c == '.' && is_digit(peek(i + 1)))) {
            i = number(i);
        } else if (c == '$') {
            i = dollar(i);
        } else {
            emit_token(i, i + 1);
            ++i;
        }
    }
    // Trailing whitespace is kept as it was, unless a comment was dropped after the last token.
    if (!dropped_ && out_ != nullptr && !first_blank_.empty()) {
        append(first_blank_.data(), first_blank_.size());
    }
}

std::size_t Normalizer::whitespace(std::size_t i) {
    std::size_t j = i;
    bool newline = false;
    while (j < s_.size() && is_space(s_[j])) {
        newline = newline || is_newline(s_[j]);
        ++j;
    }
    const std::string_view run = s_.substr(i, j - i);
    if (first_blank_.empty()) first_blank_ = run;
    if (newline) newline_blank_ = run;
    return j;
}

// An identifier or keyword, or one of the one-letter prefixes that open a special string: those
// count only at the start of a token (scan.l's xestart, xbstart, xhstart, xnstart, xusstart,
// xuistart).
std::size_t Normalizer::word(std::size_t i) {
    const char c = lower(s_[i]);
    const char next = peek(i + 1);
    if (next == '\'') {
        // The prefix goes with the constant: "E$1" would read as an identifier.
        if (c == 'e') return string_constant(i + 1, Quote::kEscape, false);
        if (c == 'b' || c == 'x') return string_constant(i + 1, Quote::kBit, false);
        if (c == 'n') return string_constant(i + 1, plain_quote_, false);
    }
    if (c == 'u' && next == '&') {
        if (peek(i + 2) == '\'') return string_constant(i + 2, Quote::kStandard, true);
        if (peek(i + 2) == '"') return quoted_identifier(i, i + 2, true);
    }
    std::size_t j = i + 1;
    while (j < s_.size() && is_ident_cont(s_[j])) ++j;
    emit_token(i, j);
    return j;
}

// 42, 3.5, 4., .001, 5e2, 1.925e-3. A sign is a separate operator token and stays.
std::size_t Normalizer::number(std::size_t i) {
    // PostgreSQL 16 also allows 1_000; accepting it costs nothing and drops more, never less.
    const auto digits = [this](std::size_t j) {
        while (is_digit(peek(j)) || (peek(j) == '_' && is_digit(peek(j + 1)))) ++j;
        return j;
    };
    std::size_t j = digits(i);
    // "1..5" is the integer 1 followed by "..": scan.l's decimalfail.
    if (peek(j) == '.' && peek(j + 1) != '.') j = digits(j + 1);
    if (lower(peek(j)) == 'e') {
        std::size_t k = j + 1;
        if (peek(k) == '+' || peek(k) == '-') ++k;
        if (is_digit(peek(k))) j = digits(k);
    }
    // Identifier characters glued to a number are an error in PostgreSQL 15 ("trailing junk") and
    // part of the number in 16 (0x1F, 0o17, 0b101): dropping them never leaks a digit.
    while (is_ident_cont(peek(j))) ++j;
    emit_placeholder();
    return j;
}

// $1 (kept, it is already a parameter), $tag$...$tag$ (a constant) or a lone $.
std::size_t Normalizer::dollar(std::size_t i) {
    if (is_digit(peek(i + 1))) {
        std::size_t j = i + 1;
        std::uint64_t value = 0;
        for (; is_digit(peek(j)); ++j) {
            const auto digit = static_cast<std::uint64_t>(s_[j] - '0');
            value = value > (kMaxParam - digit) / 10 ? kMaxParam : value * 10 + digit;
        }
        if (value > max_param_) max_param_ = value;
        emit_token(i, j);
        return j;
    }
    const std::size_t body = end_of_dollar_delimiter(i);
    if (body == kNpos) {
        // scan.l's dolqfailed: the $ is a token of its own and what follows is read anew.
        emit_token(i, i + 1);
        return i + 1;
    }
    const std::size_t end = end_of_dollar_quoted(i, body);
    emit_placeholder();
    return end == kNpos ? s_.size() : end;
}

// A quoted constant whose opening quote is at `quote`, with any continuation segments and, for a
// U&'...' string, its UESCAPE clause: all of it becomes one placeholder, as it is one constant.
std::size_t Normalizer::string_constant(std::size_t quote, Quote mode, bool unicode) {
    std::size_t end = end_of_quoted(quote + 1, mode);
    while (end != kNpos) {
        const std::size_t next = continuation(end);
        if (next == kNpos) break;
        end = end_of_quoted(next + 1, mode);
    }
    if (end == kNpos) {
        end = s_.size();
    } else if (unicode) {
        end = end_of_uescape(end);
    }
    emit_placeholder();
    return end;
}

// "..." and U&"..." are names, not data, and are kept as written.
std::size_t Normalizer::quoted_identifier(std::size_t start, std::size_t quote, bool unicode) {
    std::size_t j = quote + 1;
    for (;;) {
        const std::size_t q = s_.find('"', j);
        if (q == kNpos) {
            // Unterminated: the rest may well be data that was meant to follow the name.
            dropped_ = true;
            return s_.size();
        }
        if (peek(q + 1) != '"') {
            j = q + 1;
            break;
        }
        j = q + 2;
    }
    emit_token(start, j);
    if (unicode) note_identifier_uescape(j);
    return j;
}

std::size_t Normalizer::end_of_line_comment(std::size_t i) const {
    const std::size_t nl = s_.find_first_of("\r\n", i + 2);
    return nl == kNpos ? s_.size() : nl;
}

// Block comments nest in PostgreSQL; an unterminated one runs to the end.
std::size_t Normalizer::end_of_block_comment(std::size_t i) const {
    int depth = 1;
    std::size_t j = i + 2;
    while (j < s_.size()) {
        if (s_[j] == '/' && peek(j + 1) == '*') {
            ++depth;
            j += 2;
        } else if (s_[j] == '*' && peek(j + 1) == '/') {
            j += 2;
            if (--depth == 0) return j;
        } else {
            ++j;
        }
    }
    return s_.size();
}

// Index just past the closing quote of a body starting at i, or npos if it never closes.
std::size_t Normalizer::end_of_quoted(std::size_t i, Quote mode) const {
    const char* stops = mode == Quote::kEscape ? "'\\" : "'";
    for (std::size_t j = s_.find_first_of(stops, i); j != kNpos; j = s_.find_first_of(stops, j)) {
        if (s_[j] == '\\') {
            j += 2;  // \' and \\ included: an escape never ends the string
        } else if (mode != Quote::kBit && peek(j + 1) == '\'') {
            j += 2;
        } else {
            return j + 1;
        }
    }
    return kNpos;
}

// For a $ at i that opens a dollar quote ($$ or $tag$), the index just past the delimiter.
std::size_t Normalizer::end_of_dollar_delimiter(std::size_t i) const {
    std::size_t j = i + 1;
    if (is_ident_start(peek(j))) {
        ++j;
        while (is_dolq_cont(peek(j))) ++j;
    }
    return peek(j) == '$' ? j + 1 : kNpos;
}

// Index just past the closing delimiter, or npos. The tag cannot contain $, so the first exact
// occurrence of the delimiter is where scan.l's xdolq state ends too.
std::size_t Normalizer::end_of_dollar_quoted(std::size_t open, std::size_t body) const {
    const std::string_view delimiter = s_.substr(open, body - open);
    const std::size_t close = s_.find(delimiter, body);
    return close == kNpos ? kNpos : close + delimiter.size();
}

// Quote continuing a string constant that ended at i, or npos: in scan.l two quoted segments
// separated by whitespace that holds a newline (and possibly -- comments) are one constant.
std::size_t Normalizer::continuation(std::size_t i) const {
    bool newline = false;
    std::size_t j = i;
    while (j < s_.size()) {
        const char c = s_[j];
        if (is_horiz_space(c)) {
            ++j;
        } else if (is_newline(c)) {
            newline = true;
            ++j;
        } else if (c == '-' && peek(j + 1) == '-') {
            j = end_of_line_comment(j);
        } else {
            break;
        }
    }
    return newline && peek(j) == '\'' ? j : kNpos;
}

// Skips whitespace and comments of both kinds, as the lexer does between tokens.
std::size_t Normalizer::skip_blank(std::size_t i) const {
    std::size_t j = i;
    while (j < s_.size()) {
        if (is_space(s_[j])) {
            ++j;
        } else if (s_[j] == '-' && peek(j + 1) == '-') {
            j = end_of_line_comment(j);
        } else if (s_[j] == '/' && peek(j + 1) == '*') {
            j = end_of_block_comment(j);
        } else {
            break;
        }
    }
    return j;
}

bool Normalizer::is_uescape_at(std::size_t i) const {
    constexpr std::string_view kWord = "uescape";
    if (s_.size() - i < kWord.size()) return false;
    for (std::size_t k = 0; k < kWord.size(); ++k) {
        if (lower(s_[i + k]) != kWord[k]) return false;
    }
    return !is_ident_cont(peek(i + kWord.size()));
}

// The end of a UESCAPE clause following a U&'...' constant that ends at i, or i if there is none.
// PostgreSQL's grammar wants a plain string constant after UESCAPE.
std::size_t Normalizer::end_of_uescape(std::size_t i) const {
    std::size_t k = skip_blank(i);
    if (k >= s_.size() || !is_uescape_at(k)) return i;
    k = skip_blank(k + 7);
    std::size_t end;
    if (peek(k) == '\'') {
        end = end_of_quoted(k + 1, Quote::kStandard);
    } else if (lower(peek(k)) == 'e' && peek(k + 1) == '\'') {
        end = end_of_quoted(k + 2, Quote::kEscape);
    } else if (peek(k) == '$' && end_of_dollar_delimiter(k) != kNpos) {
        end = end_of_dollar_quoted(k, end_of_dollar_delimiter(k));
    } else {
        return i;  // not a UESCAPE clause after all; the main loop reads it as ordinary text
    }
    return end == kNpos ? s_.size() : end;
}

// A U&"..." identifier's UESCAPE 'c' spells part of the name, so that one-byte string (all that
// PostgreSQL accepts there, and too short to be personal data) is kept instead of replaced.
void Normalizer::note_identifier_uescape(std::size_t i) {
    std::size_t k = skip_blank(i);
    if (k >= s_.size() || !is_uescape_at(k)) return;
    k = skip_blank(k + 7);
    if (peek(k) == '\'' && peek(k + 1) != '\'' && k + 2 < s_.size() && s_[k + 2] == '\'' &&
        peek(k + 3) != '\'') {
        verbatim_quote_ = k;
    }
}

// Writes the whitespace held back since the last token. Where a comment was dropped, its gap
// becomes the run holding a newline if there is one (keeping line structure), else the first
// run, else one space so that the tokens on either side cannot merge (think "-/**/-").
void Normalizer::flush_separator() {
    std::string_view sep = first_blank_;
    if (dropped_) {
        if (!newline_blank_.empty()) sep = newline_blank_;
        if (sep.empty()) sep = " ";
        if (out_->empty()) sep = {};  // nothing to separate from: a leading comment
    }
    if (!sep.empty()) {
        append(sep.data(), sep.size());
        after_placeholder_ = false;
    }
    first_blank_ = {};
    newline_blank_ = {};
    dropped_ = false;
}

void Normalizer::emit_token(std::size_t begin, std::size_t end) {
    if (out_ == nullptr) return;
    flush_separator();
    // "'x'AS y" must not become "$1AS y".
    if (after_placeholder_ && is_ident_cont(s_[begin])) append(" ", 1);
    after_placeholder_ = false;
    append(s_.data() + begin, end - begin);
}

void Normalizer::emit_placeholder() {
    if (out_ == nullptr) return;
    if (constants_ < INT_MAX) ++constants_;
    const std::uint64_t number = next_placeholder_++;
    flush_separator();
    // "date'2021-01-01'" must not become the identifier "date$1".
    if (!out_->empty() && is_ident_cont(out_->back())) append(" ", 1);
    char buf[24];
    char* const end = buf + sizeof buf;
    char* p = end;
    std::uint64_t v = number;
    do {
        *--p = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v != 0);
    *--p = '$';
    append_whole(p, static_cast<std::size_t>(end - p));
    after_placeholder_ = true;
}

// Appends as much as fits, cutting before a UTF-8 character rather than inside it.
void Normalizer::append(const char* p, std::size_t len) {
    if (full_) return;
    const std::size_t room = limit_ == 0 ? len : limit_ - out_->size();
    if (len <= room) {
        out_->append(p, len);
        return;
    }
    // p[room] is the first byte that does not fit; a UTF-8 character has at most three
    // continuation bytes, so look back no further than that.
    std::size_t cut = room;
    for (int back = 0; back < 3 && cut > 0 && is_utf8_continuation(p[cut]); ++back) --cut;
    if (is_utf8_continuation(p[cut])) cut = room;  // not UTF-8: a byte cut is all we can do
    out_->append(p, cut);
    full_ = true;
}

// Appends all or nothing, so that a placeholder is never cut into a different one ($12 -> $1).
void Normalizer::append_whole(const char* p, std::size_t len) {
    if (full_) return;
    if (limit_ != 0 && len > limit_ - out_->size()) {
        full_ = true;
        return;
    }
    out_->append(p, len);
}

// Whether the statement may contain a $n parameter; if not, the pass that looks for them is
// skipped, which is the common case.
bool may_have_parameters(std::string_view sql) {
    for (std::size_t p = sql.find('$'); p != kNpos; p = sql.find('$', p + 1)) {
        if (p + 1 < sql.size() && is_digit(sql[p + 1])) return true;
    }
    return false;
}

}  // namespace

NormalizedQuery normalize_query(std::string_view sql, std::size_t max_bytes,
                                bool standard_conforming_strings) {
    NormalizedQuery result;
    std::uint64_t first_placeholder = 1;
    if (may_have_parameters(sql)) {
        Normalizer probe(sql, 0, 1, nullptr, standard_conforming_strings);
        probe.run();
        first_placeholder = probe.max_param() + 1;
    }
    // Replacing constants mostly shrinks a statement; short numbers grow a little ("1" -> "$12").
    std::size_t capacity = sql.size() + sql.size() / 8 + 16;
    if (max_bytes != 0 && max_bytes < capacity) capacity = max_bytes;
    if (capacity > result.text.max_size()) capacity = result.text.max_size();
    result.text.reserve(capacity);

    Normalizer normalizer(sql, max_bytes, first_placeholder, &result.text,
                          standard_conforming_strings);
    normalizer.run();
    result.constants = normalizer.constants();
    result.truncated = normalizer.truncated();
    return result;
}

}  // namespace pii_audit
