// Unit tests for the PostgreSQL-free query normalizer: every constant must become a $n
// placeholder and every comment must go, while the rest of the statement stays as written.
#include "pii_audit/query_normalizer.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace pii_audit {
namespace {

std::string norm(std::string_view sql, std::size_t max_bytes = 0) {
    return normalize_query(sql, max_bytes).text;
}

// The personal datum planted in the adversarial cases; none of its digits may survive.
constexpr std::string_view kPhone = "13800138000";

bool leaks_phone(const std::string& text) { return text.find("138") != std::string::npos; }

// True if text ends in the middle of a UTF-8 character (text itself is otherwise valid).
bool ends_inside_utf8_character(const std::string& text) {
    std::size_t i = text.size();
    std::size_t continuation = 0;
    while (i > 0 && (static_cast<unsigned char>(text[i - 1]) & 0xC0) == 0x80) {
        --i;
        ++continuation;
    }
    if (i == 0) return continuation > 0;
    const auto lead = static_cast<unsigned char>(text[i - 1]);
    std::size_t expected = 0;
    if (lead >= 0xF0) {
        expected = 3;
    } else if (lead >= 0xE0) {
        expected = 2;
    } else if (lead >= 0xC0) {
        expected = 1;
    }
    return continuation != expected;
}

// ---------------------------------------------------------------------------------------------
// Basics

TEST(QueryNormalizer, EmptyInput) {
    const NormalizedQuery r = normalize_query("", 0);
    EXPECT_EQ(r.text, "");
    EXPECT_EQ(r.constants, 0);
    EXPECT_FALSE(r.truncated);
}

TEST(QueryNormalizer, WhitespaceOnlyInputIsKept) { EXPECT_EQ(norm(" \n\t"), " \n\t"); }

TEST(QueryNormalizer, StatementWithoutConstantsIsUnchanged) {
    const std::string sql = "SELECT a, b.c, count(*) FROM s.t AS b\n\tWHERE a <> b.c ORDER BY 1;";
    // ORDER BY 1 is a constant too, lexically.
    EXPECT_EQ(norm("SELECT a, b.c, count(*) FROM s.t AS b\n\tWHERE a <> b.c;"),
              "SELECT a, b.c, count(*) FROM s.t AS b\n\tWHERE a <> b.c;");
    EXPECT_EQ(norm(sql), "SELECT a, b.c, count(*) FROM s.t AS b\n\tWHERE a <> b.c ORDER BY $1;");
}

TEST(QueryNormalizer, RealisticStatement) {
    const NormalizedQuery r = normalize_query(
        "SELECT name, phone FROM customers WHERE phone = '13800138000' AND id IN (1, 2, 3) "
        "LIMIT 10",
        0);
    EXPECT_EQ(r.text,
              "SELECT name, phone FROM customers WHERE phone = $1 AND id IN ($2, $3, $4) LIMIT $5");
    EXPECT_EQ(r.constants, 5);
    EXPECT_FALSE(r.truncated);
}

TEST(QueryNormalizer, RealisticMultiLineStatement) {
    EXPECT_EQ(norm("UPDATE customers  -- fix the number\n"
                   "   SET phone = '13800138000',\n"
                   "       note = $$called 13800138000$$ /* ticket 138 */\n"
                   " WHERE id = 42;\n"),
              "UPDATE customers\n"
              "   SET phone = $1,\n"
              "       note = $2\n"
              " WHERE id = $3;\n");
}

// ---------------------------------------------------------------------------------------------
// String constants

TEST(QueryNormalizer, StandardString) {
    EXPECT_EQ(norm("SELECT 'a'"), "SELECT $1");
    EXPECT_EQ(norm("SELECT ''"), "SELECT $1");
    EXPECT_EQ(norm("WHERE name = 'O''Brien' AND x = 'y'"), "WHERE name = $1 AND x = $2");
    EXPECT_EQ(norm("WHERE a='''' OR b=''''''"), "WHERE a=$1 OR b=$2");
}

TEST(QueryNormalizer, BackslashIsOrdinaryInStandardString) {
    // standard_conforming_strings: 'C:\' ends at its second quote.
    EXPECT_EQ(norm("SELECT 'C:\\' AS path, 'x'"), "SELECT $1 AS path, $2");
}

TEST(QueryNormalizer, EscapeString) {
    EXPECT_EQ(norm("SELECT E'a\\nb'"), "SELECT $1");
    EXPECT_EQ(norm("SELECT e'a'"), "SELECT $1");
    EXPECT_EQ(norm("SELECT E'\\\\' AS b"), "SELECT $1 AS b");
    EXPECT_EQ(norm("SELECT E'it''s', E'it\\'s'"), "SELECT $1, $2");
}

TEST(QueryNormalizer, PhoneNumberInEscapeStringWithEscapedQuote) {
    const std::string r =
        norm("SELECT E'call \\'138\\' 00138000' FROM t WHERE b = E'\\'13800138000\\''");
    EXPECT_EQ(r, "SELECT $1 FROM t WHERE b = $2");
    EXPECT_FALSE(leaks_phone(r));
}

TEST(QueryNormalizer, NationalString) {
    EXPECT_EQ(norm("INSERT INTO t VALUES (N'13800138000', n'x')"), "INSERT INTO t VALUES ($1, $2)");
}

TEST(QueryNormalizer, BitStrings) {
    EXPECT_EQ(norm("SELECT B'1010', b'1', X'1F', x'ff'"), "SELECT $1, $2, $3, $4");
    // '' does not double in a bit string: B'1' and '0' are two constants to PostgreSQL.
    const NormalizedQuery r = normalize_query("SELECT B'1''0'", 0);
    EXPECT_EQ(r.text, "SELECT $1 $2");
    EXPECT_EQ(r.constants, 2);
}

TEST(QueryNormalizer, PrefixLettersOnlyCountAtTokenStart) {
    // "abe" is an identifier; the string after it is an ordinary one, kept apart from it.
    EXPECT_EQ(norm("SELECT abe'x'"), "SELECT abe $1");
    EXPECT_EQ(norm("SELECT ex, bx, nx, ux FROM e, b, x, n, u"),
              "SELECT ex, bx, nx, ux FROM e, b, x, n, u");
    EXPECT_EQ(norm("SELECT u&x"), "SELECT u&x");
}

TEST(QueryNormalizer, UnicodeString) {
    EXPECT_EQ(norm("SELECT U&'\\0031\\0033 800138000'"), "SELECT $1");
    EXPECT_EQ(norm("SELECT u&'d\\0061t\\+000061'"), "SELECT $1");
    EXPECT_FALSE(leaks_phone(norm("SELECT U&'13800138000' AS p")));
}

TEST(QueryNormalizer, UnicodeStringWithUescapeIsOneConstant) {
    const NormalizedQuery r = normalize_query("SELECT U&'d!0061t!+000061' UESCAPE '!' AS x", 0);
    EXPECT_EQ(r.text, "SELECT $1 AS x");
    EXPECT_EQ(r.constants, 1);
    EXPECT_EQ(norm("SELECT U&'1380'uescape'!', 2"), "SELECT $1, $2");
    EXPECT_EQ(norm("SELECT U&'1380' /* 138 */ UESCAPE -- 138\n '#' FROM t"), "SELECT $1 FROM t");
    // Without a string after it, UESCAPE is left to the normal rules.
    EXPECT_EQ(norm("SELECT U&'x' uescape"), "SELECT $1 uescape");
    EXPECT_EQ(norm("SELECT U&'x' uescaped"), "SELECT $1 uescaped");
}

TEST(QueryNormalizer, UnicodeIdentifierIsKeptWithItsEscapeCharacter) {
    EXPECT_EQ(norm("SELECT U&\"d\\0061t\\+000061\" FROM t"),
              "SELECT U&\"d\\0061t\\+000061\" FROM t");
    const NormalizedQuery r = normalize_query("SELECT U&\"d!0061t\" UESCAPE '!' FROM t", 0);
    EXPECT_EQ(r.text, "SELECT U&\"d!0061t\" UESCAPE '!' FROM t");
    EXPECT_EQ(r.constants, 0);
    // Anything longer than one byte is not a valid escape character: it is replaced.
    EXPECT_EQ(norm("SELECT U&\"x\" UESCAPE '138' FROM t"), "SELECT U&\"x\" UESCAPE $1 FROM t");
}

TEST(QueryNormalizer, DollarQuotedString) {
    EXPECT_EQ(norm("SELECT $$13800138000$$"), "SELECT $1");
    EXPECT_EQ(norm("SELECT $$$$, $a$x$a$"), "SELECT $1, $2");
    // Inner $$ and a different tag do not end a tagged body; tags are case-sensitive.
    const std::string body =
        "DO $fn$ BEGIN RAISE NOTICE $$13800138000$$; $x$ $FN$ 'it''s' -- 138\n END $fn$;";
    EXPECT_EQ(norm(body), "DO $1;");
    EXPECT_EQ(norm("SELECT $tag_1$ a $tag_ $tag_1$ FROM t"), "SELECT $1 FROM t");
    EXPECT_EQ(norm("SELECT $é$13800138000$é$"), "SELECT $1");
}

TEST(QueryNormalizer, DollarNotOpeningAQuote) {
    // A lone $ and $ before a non-identifier character are plain characters.
    EXPECT_EQ(norm("SELECT a$b, c$$d$$ FROM t$1"), "SELECT a$b, c$$d$$ FROM t$1");
    EXPECT_EQ(norm("SELECT $ + 1"), "SELECT $ + $1");
    // $1x$ is not a delimiter (tags cannot start with a digit): $1 is a parameter.
    EXPECT_EQ(norm("SELECT $1x$"), "SELECT $1x$");
}

TEST(QueryNormalizer, AdjacentStringsSplitByNewlineAreOneConstant) {
    const NormalizedQuery r = normalize_query("SELECT 'foo'\n'bar' , 'a'  \r\n\t 'b', 3", 0);
    EXPECT_EQ(r.text, "SELECT $1 , $2, $3");
    EXPECT_EQ(r.constants, 3);
    // A -- comment may sit between the segments; all of it goes with the constant.
    const std::string s = norm("SELECT '138' -- 00138\n  -- 000\n  '000' AS phone");
    EXPECT_EQ(s, "SELECT $1 AS phone");
    // The continuation keeps the first segment's rules: \' does not end an E'' segment.
    EXPECT_EQ(norm("SELECT E'a'\n'13800\\'138000' AS x"), "SELECT $1 AS x");
}

TEST(QueryNormalizer, AdjacentStringsOnOneLineAreSeparateConstants) {
    // A syntax error in PostgreSQL, but still nothing of them may remain.
    const NormalizedQuery r = normalize_query("SELECT '138' '00138000'", 0);
    EXPECT_EQ(r.text, "SELECT $1 $2");
    EXPECT_EQ(r.constants, 2);
    // A block comment does not allow continuation either.
    EXPECT_EQ(norm("SELECT '138' /* x */\n'000'"), "SELECT $1\n$2");
}

TEST(QueryNormalizer, QuotedIdentifiersAreKept) {
    EXPECT_EQ(norm("SELECT \"x1\", \"we\"\"ird 'name'\" FROM \"Tab 2\" WHERE \"x1\" = 'v'"),
              "SELECT \"x1\", \"we\"\"ird 'name'\" FROM \"Tab 2\" WHERE \"x1\" = $1");
    EXPECT_EQ(norm("SELECT \"-- not a comment\", \"/* nor this */\""),
              "SELECT \"-- not a comment\", \"/* nor this */\"");
}

// ---------------------------------------------------------------------------------------------
// Numbers

TEST(QueryNormalizer, NumericConstants) {
    const NormalizedQuery r =
        normalize_query("SELECT 42, 3.5, 4., .001, 5e2, 1.925e-3, 1E+5, 0.0, 007", 0);
    EXPECT_EQ(r.text, "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9");
    EXPECT_EQ(r.constants, 9);
}

TEST(QueryNormalizer, SignStaysAnOperator) {
    EXPECT_EQ(norm("SELECT -5, +3.5, a-1, 2-.5e-1"), "SELECT -$1, +$2, a-$3, $4-$5");
}

TEST(QueryNormalizer, DigitsInIdentifiersAreNotConstants) {
    EXPECT_EQ(norm("SELECT t1.col_2, \"x1\", a$1 FROM t2 WHERE col_2=5 AND t1.c3>t2.c4"),
              "SELECT t1.col_2, \"x1\", a$1 FROM t2 WHERE col_2=$1 AND t1.c3>t2.c4");
    EXPECT_EQ(norm("SELECT t1.a2+3*c_4"), "SELECT t1.a2+$1*c_4");
}

TEST(QueryNormalizer, NumberGluedToLettersIsDroppedWhole) {
    // "Trailing junk" in PostgreSQL 15, a number in 16 (0x1F, 1_000): nothing of it survives.
    EXPECT_EQ(norm("SELECT 0x1F, 0b101, 1_000_000, 138abc, 1e, 2e+x"),
              "SELECT $1, $2, $3, $4, $5, $6+x");
}

TEST(QueryNormalizer, NumberEdgeCases) {
    // 1..5 is the integer 1, a dot and .5 (PostgreSQL's decimalfail).
    EXPECT_EQ(norm("SELECT a[1:2], 1..5"), "SELECT a[$1:$2], $3.$4");
    // ".5" after a name is a number of its own to PostgreSQL, so it is kept apart from the name.
    EXPECT_EQ(norm("SELECT x.5"), "SELECT x $1");
}

// ---------------------------------------------------------------------------------------------
// Parameters

TEST(QueryNormalizer, ExistingParametersAreKeptAndNewOnesFollowThem) {
    EXPECT_EQ(norm("WHERE a = $1 AND b = 'x'"), "WHERE a = $1 AND b = $2");
    EXPECT_EQ(norm("WHERE a = 'x' AND b = $2 AND c = 7"), "WHERE a = $3 AND b = $2 AND c = $4");
    const NormalizedQuery r = normalize_query("SELECT $1, $2, $3", 0);
    EXPECT_EQ(r.text, "SELECT $1, $2, $3");
    EXPECT_EQ(r.constants, 0);
    EXPECT_EQ(norm("SELECT $10::int, 5"), "SELECT $10::int, $11");
}

TEST(QueryNormalizer, DollarDigitsInsideConstantsOrCommentsAreNotParameters) {
    EXPECT_EQ(norm("WHERE a = '$5' AND b = 7 /* $9 */ -- $8"), "WHERE a = $1 AND b = $2");
    EXPECT_EQ(norm("WHERE a$7 = 1"), "WHERE a$7 = $1");
}

TEST(QueryNormalizer, HugeParameterNumberDoesNotOverflow) {
    const std::string r = norm("SELECT $99999999999999999999999999, 1");
    EXPECT_EQ(r.rfind("SELECT $99999999999999999999999999, $", 0), 0u);
    EXPECT_EQ(r.find('-'), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Comments

TEST(QueryNormalizer, LineComment) {
    EXPECT_EQ(norm("SELECT a -- phone 13800138000\nFROM t"), "SELECT a\nFROM t");
    EXPECT_EQ(norm("SELECT a -- phone 13800138000\r\nFROM t"), "SELECT a\r\nFROM t");
    EXPECT_EQ(norm("SELECT a FROM t -- 13800138000"), "SELECT a FROM t");
    EXPECT_EQ(norm("SELECT a--13800138000\n,b"), "SELECT a\n,b");
}

TEST(QueryNormalizer, BlockComment) {
    EXPECT_EQ(norm("SELECT /* 13800138000 */ a FROM t"), "SELECT a FROM t");
    EXPECT_EQ(norm("SELECT a /* 13800138000 */"), "SELECT a");
    EXPECT_EQ(norm("SELECT a/* 138 */FROM t"), "SELECT a FROM t");
    EXPECT_EQ(norm("SELECT a /*x*/FROM t"), "SELECT a FROM t");
    EXPECT_EQ(norm("SELECT a/*x*/ FROM t"), "SELECT a FROM t");
    EXPECT_EQ(norm("SELECT 1/*x*/2"), "SELECT $1 $2");
    EXPECT_EQ(norm("SELECT a /*x*/ /*y*/ FROM t"), "SELECT a FROM t");
}

TEST(QueryNormalizer, LeadingCommentsLeaveNothingBehind) {
    EXPECT_EQ(norm("/* app=web, user=13800138000 */ SELECT 1"), "SELECT $1");
    EXPECT_EQ(norm("-- header 138\n-- more\nSELECT 1"), "SELECT $1");
}

TEST(QueryNormalizer, CommentsKeepLineStructure) {
    EXPECT_EQ(norm("SELECT a, -- first\n       b\n  FROM t"), "SELECT a,\n       b\n  FROM t");
    EXPECT_EQ(norm("SELECT a\n/* 138 */ FROM t"), "SELECT a\nFROM t");
}

TEST(QueryNormalizer, NestedBlockComments) {
    const std::string r = norm("SELECT /* a /* 138 */ 00138 /* /* 000 */ */ */ x FROM t");
    EXPECT_EQ(r, "SELECT x FROM t");
    EXPECT_EQ(norm("SELECT /*/ 138 */ x"), "SELECT x");  // "/*/" does not close
    EXPECT_EQ(norm("SELECT /**/ x, a*/**/b"), "SELECT x, a* b");
}

TEST(QueryNormalizer, CommentRemovalNeverMergesTokens) {
    // "--" would turn the rest of the statement into a comment.
    EXPECT_EQ(norm("SELECT 1 -/**/- 2"), "SELECT $1 - - $2");
    EXPECT_EQ(norm("SELECT a/**/b"), "SELECT a b");
    EXPECT_EQ(norm("SELECT $/**/1"), "SELECT $ $1");
}

TEST(QueryNormalizer, CommentMarkersInsideConstantsAreData) {
    EXPECT_EQ(norm("SELECT '-- 138', '/* 138', $$*/ 138$$ FROM t"), "SELECT $1, $2, $3 FROM t");
}

// ---------------------------------------------------------------------------------------------
// Typed literals, keywords and text kept as written

TEST(QueryNormalizer, TypedLiteralsKeepTheirType) {
    EXPECT_EQ(norm("SELECT DATE '2021-01-01', 'x'::text, interval '1 day', INTERVAL '1' DAY"),
              "SELECT DATE $1, $2::text, interval $3, INTERVAL $4 DAY");
    EXPECT_EQ(norm("SELECT CAST('5' AS int), 5::numeric(10,2)"),
              "SELECT CAST($1 AS int), $2::numeric($3,$4)");
}

TEST(QueryNormalizer, PlaceholdersNeverMergeWithNeighbours) {
    EXPECT_EQ(norm("SELECT date'2021-01-01'"), "SELECT date $1");
    EXPECT_EQ(norm("SELECT 'x'AS y"), "SELECT $1 AS y");
    EXPECT_EQ(norm("SELECT 'x'||'y'"), "SELECT $1||$2");
}

TEST(QueryNormalizer, BooleanAndNullKeywordsAreKept) {
    EXPECT_EQ(norm("SELECT TRUE, false, NULL WHERE a IS NOT null"),
              "SELECT TRUE, false, NULL WHERE a IS NOT null");
}

TEST(QueryNormalizer, MultibyteUtf8IsKept) {
    EXPECT_EQ(norm("SELECT \"名前\", 年齢 FROM 顧客 WHERE 住所 = '東京都 13800138000'"),
              "SELECT \"名前\", 年齢 FROM 顧客 WHERE 住所 = $1");
    EXPECT_EQ(norm("SELECT café2 FROM ñ WHERE x = 'é'"), "SELECT café2 FROM ñ WHERE x = $1");
}

TEST(QueryNormalizer, OtherCharactersAreKept) {
    EXPECT_EQ(norm("SELECT a->>'k', b @> c, d::jsonb #> e, f ~* g, (h).i, j[k];"),
              "SELECT a->>$1, b @> c, d::jsonb #> e, f ~* g, (h).i, j[k];");
}

// ---------------------------------------------------------------------------------------------
// Malformed input

TEST(QueryNormalizer, UnterminatedConstantsRunToTheEnd) {
    const NormalizedQuery r = normalize_query("SELECT 'it is 13800138000", 0);
    EXPECT_EQ(r.text, "SELECT $1");
    EXPECT_EQ(r.constants, 1);
    EXPECT_EQ(norm("SELECT E'13800138000\\'"), "SELECT $1");
    EXPECT_EQ(norm("SELECT E'\\"), "SELECT $1");
    EXPECT_EQ(norm("SELECT $x$13800138000$y$"), "SELECT $1");
    EXPECT_EQ(norm("SELECT B'1"), "SELECT $1");
    EXPECT_EQ(norm("SELECT 'a'\n'138"), "SELECT $1");
    EXPECT_EQ(norm("SELECT '"), "SELECT $1");
}

TEST(QueryNormalizer, UnterminatedCommentsRunToTheEnd) {
    EXPECT_EQ(norm("SELECT a /* 13800138000"), "SELECT a");
    EXPECT_EQ(norm("SELECT a /* x /* y */ 13800138000"), "SELECT a");
    EXPECT_EQ(norm("SELECT a --"), "SELECT a");
}

TEST(QueryNormalizer, UnterminatedQuotedIdentifierIsDropped) {
    // What follows an unclosed name may be data; a valid statement never has one.
    EXPECT_EQ(norm("SELECT \"x FROM t WHERE p = '13800138000'"), "SELECT");
}

// ---------------------------------------------------------------------------------------------
// Truncation

TEST(QueryNormalizer, NoLimitWhenMaxBytesIsZero) {
    std::string sql = "SELECT ";
    for (int i = 0; i < 5000; ++i) sql += "col, ";
    sql += "x";
    const NormalizedQuery r = normalize_query(sql, 0);
    EXPECT_EQ(r.text, sql);
    EXPECT_FALSE(r.truncated);
}

TEST(QueryNormalizer, ExactFitIsNotTruncated) {
    const NormalizedQuery r = normalize_query("SELECT 'x'", 9);
    EXPECT_EQ(r.text, "SELECT $1");
    EXPECT_FALSE(r.truncated);
}

TEST(QueryNormalizer, TruncatesAtMaxBytes) {
    const NormalizedQuery r = normalize_query("SELECT abcdef FROM t", 10);
    EXPECT_EQ(r.text, "SELECT abc");
    EXPECT_TRUE(r.truncated);
}

TEST(QueryNormalizer, TruncationNeverSplitsAUtf8Character) {
    // "SELECT " is 7 bytes; 名 and 前 are 3 bytes each.
    const std::string sql = "SELECT 名前 FROM t";
    for (std::size_t max : {7u, 8u, 9u}) {
        const NormalizedQuery r = normalize_query(sql, max);
        EXPECT_EQ(r.text, "SELECT ") << max;
        EXPECT_TRUE(r.truncated);
    }
    EXPECT_EQ(norm(sql, 10), "SELECT 名");
    EXPECT_EQ(norm(sql, 12), "SELECT 名");
    EXPECT_EQ(norm(sql, 13), "SELECT 名前");
    // A four-byte character inside a quoted identifier.
    EXPECT_EQ(norm("SELECT \"😀\"", 9), "SELECT \"");
    EXPECT_EQ(norm("SELECT \"😀\"", 12), "SELECT \"😀");
}

TEST(QueryNormalizer, TruncationNeverSplitsAPlaceholder) {
    // "$10" cut to "$1" would name a different parameter.
    const NormalizedQuery r = normalize_query("WHERE a = $9 AND b = 'x'", 23);
    EXPECT_EQ(r.text, "WHERE a = $9 AND b = ");
    EXPECT_TRUE(r.truncated);
    EXPECT_EQ(norm("WHERE a = $9 AND b = 'x'", 24), "WHERE a = $9 AND b = $10");
}

TEST(QueryNormalizer, ConstantsAreCountedForTheWholeStatement) {
    const NormalizedQuery r = normalize_query("SELECT 1, 2, 3, 4", 9);
    EXPECT_EQ(r.text, "SELECT $1");
    EXPECT_EQ(r.constants, 4);
    EXPECT_TRUE(r.truncated);
}

TEST(QueryNormalizer, TruncatedStatementStillLeaksNothing) {
    const std::string sql = "SELECT * FROM t WHERE p = '13800138000' /* 13800138000 */";
    for (std::size_t max = 1; max <= sql.size() + 2; ++max) {
        const NormalizedQuery r = normalize_query(sql, max);
        EXPECT_LE(r.text.size(), max);
        EXPECT_FALSE(leaks_phone(r.text)) << max;
    }
}

// ---------------------------------------------------------------------------------------------
// Properties over generated input

// Statements assembled from tokens that hide the phone number in every kind of constant and
// comment, joined by whitespace as PostgreSQL requires: the number must never come through.
TEST(QueryNormalizer, GeneratedStatementsNeverLeakConstants) {
    const std::string phone(kPhone);
    const std::vector<std::string> secrets = {
        "'" + phone + "'",
        "'a''" + phone + "'",
        "E'\\'" + phone + "\\''",
        "e'\\\\' || E'" + phone + "'",
        "N'" + phone + "'",
        "B'" + phone + "'",
        "X'" + phone + "'",
        "U&'" + phone + "'",
        "U&'" + phone + "' UESCAPE '!'",
        "$$" + phone + "$$",
        "$q$ $$ " + phone + " $q$",
        "'x'\n'" + phone + "'",
        "'x' -- c\n '" + phone + "'",
        phone,
        phone + ".5e-3",
        "." + phone,
        "-" + phone,
        "/* " + phone + " */",
        "/* /* */ " + phone + " */",
        "-- " + phone + "\n",
        "DATE '" + phone + "'",
        "'" + phone + "'::text",
    };
    const std::vector<std::string> plain = {
        "SELECT", "a", "t1", "col_2", "\"x1\"", "$1",   "=",    "(",       ")", ",",
        "::",     "-", "/",  "*",     "名前",   "TRUE", "NULL", "U&\"a\"", "E", "||",
    };
    const std::vector<std::string> blanks = {" ", "\n", "\t", "  \n  "};
    std::mt19937 rng(12345);
    for (int round = 0; round < 3000; ++round) {
        std::string sql;
        const int tokens = 1 + static_cast<int>(rng() % 12);
        for (int t = 0; t < tokens; ++t) {
            if (rng() % 2 == 0) {
                sql += secrets[rng() % secrets.size()];
            } else {
                sql += plain[rng() % plain.size()];
            }
            sql += blanks[rng() % blanks.size()];
        }
        const NormalizedQuery r = normalize_query(sql, 0);
        ASSERT_FALSE(leaks_phone(r.text)) << sql << "\n->\n" << r.text;
        ASSERT_FALSE(r.truncated);
    }
}

// Random byte soup: normalization must not crash, must be idempotent (its output holds no
// constants or comments) and must truncate to a prefix of the full result.
TEST(QueryNormalizer, RandomInputIsIdempotentAndTruncatesToAPrefix) {
    const std::vector<std::string> pieces = {
        " ", "\n", "a", "E",  "e", "U", "&",  "B",  "N",  "x", "1", "9", ".",       "'", "''", "\"",
        "$", "$$", "-", "--", "/", "*", "/*", "*/", "\\", "_", "é", "😀", "UESCAPE", ":", "+",
    };
    std::mt19937 rng(42);
    for (int round = 0; round < 20000; ++round) {
        std::string sql;
        const int length = static_cast<int>(rng() % 24);
        for (int k = 0; k < length; ++k) sql += pieces[rng() % pieces.size()];

        const NormalizedQuery full = normalize_query(sql, 0);
        ASSERT_FALSE(full.truncated);
        const NormalizedQuery again = normalize_query(full.text, 0);
        ASSERT_EQ(again.text, full.text) << "input: " << sql;
        ASSERT_EQ(again.constants, 0) << "input: " << sql;

        const std::size_t max = 1 + rng() % 30;
        const NormalizedQuery cut = normalize_query(sql, max);
        ASSERT_LE(cut.text.size(), max) << sql;
        ASSERT_EQ(cut.truncated, full.text.size() > max) << sql;
        ASSERT_EQ(full.text.compare(0, cut.text.size(), cut.text), 0) << sql;
        ASSERT_EQ(cut.constants, full.constants) << sql;
        ASSERT_FALSE(ends_inside_utf8_character(cut.text)) << sql;
    }
}

}  // namespace
}  // namespace pii_audit

TEST(QueryNormalizer, BackslashEscapesWhenStandardConformingStringsIsOff) {
    // With the server setting off, '555\' 1234' is one string: nothing of it may remain.
    auto off = pii_audit::normalize_query("SELECT '555\\' 1234' AS x", 0, false);
    EXPECT_EQ(off.text, "SELECT $1 AS x");
    auto on = pii_audit::normalize_query("SELECT '555\\' 1234' AS x", 0, true);
    EXPECT_EQ(on.text.find("555"), std::string::npos);
}
