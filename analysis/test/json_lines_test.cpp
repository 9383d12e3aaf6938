#include "pii_audit/analysis/json_lines.h"

#include <gtest/gtest.h>

#include <string>

namespace pii_audit::analysis {
namespace {

TEST(JsonLine, ParsesTheReplaySubset) {
    JsonLine j;
    ASSERT_TRUE(j.parse(R"( {"a": "x\"y\u00e9\n", "n": -12, "f": 2.5e3, "t": true, "z": null,)"
                        R"( "arr": ["p", "q\t"], "e": [] } )"))
        << j.error();
    ASSERT_EQ(j.fields().size(), 7u);
    EXPECT_EQ(j.find("a")->string, "x\"y\xc3\xa9\n");
    EXPECT_TRUE(j.find("n")->is_integer);
    EXPECT_EQ(j.find("n")->integer, -12);
    EXPECT_FALSE(j.find("f")->is_integer);
    EXPECT_EQ(j.find("f")->number, 2500);
    EXPECT_TRUE(j.find("t")->boolean);
    EXPECT_EQ(j.find("z")->kind, JsonValue::Kind::null);
    const JsonValue* arr = j.find("arr");
    ASSERT_EQ(arr->array_size, 2u);
    EXPECT_EQ(j.array_items(*arr)[0], "p");
    EXPECT_EQ(j.array_items(*arr)[1], "q\t");
    EXPECT_EQ(j.find("e")->array_size, 0u);
    ASSERT_TRUE(j.parse(R"({"ids":[4, -2.5e1]})")) << j.error();
    EXPECT_EQ(j.find("ids")->kind, JsonValue::Kind::number_array);
    EXPECT_EQ(j.array_items(*j.find("ids"))[1], "-2.5e1");
    ASSERT_TRUE(j.parse(R"({"ids":[4, -2.5e1]})")) << j.error();
    EXPECT_EQ(j.find("ids")->kind, JsonValue::Kind::number_array);
    EXPECT_EQ(j.array_items(*j.find("ids"))[1], "-2.5e1");
    EXPECT_EQ(j.find("missing"), nullptr);
}

TEST(JsonLine, SurrogatePairs) {
    JsonLine j;
    ASSERT_TRUE(j.parse(R"({"s":"\ud83d\ude00"})")) << j.error();
    EXPECT_EQ(j.find("s")->string, "\xf0\x9f\x98\x80");
    EXPECT_FALSE(j.parse(R"({"s":"\ud83d"})"));
}

struct Bad {
    const char* line;
    const char* error;
};

class JsonLineErrors : public ::testing::TestWithParam<Bad> {};

TEST_P(JsonLineErrors, SayWhereAndWhat) {
    JsonLine j;
    EXPECT_FALSE(j.parse(GetParam().line));
    EXPECT_EQ(j.error(), GetParam().error);
}

INSTANTIATE_TEST_SUITE_P(
    Strict, JsonLineErrors,
    ::testing::Values(
        Bad{"", "column 1: expected '{' starting an object, found end of line"},
        Bad{"[1]", "column 1: expected '{' starting an object, found '['"},
        Bad{R"({"a" 1})", "column 6: expected ':' after a key, found '1'"},
        Bad{R"({"a":1,})", "column 8: expected '\"' starting a key, found '}'"},
        Bad{R"({"a":01})", "column 7: expected no leading zeros in a number, found '1'"},
        Bad{R"({"a":"x)", "column 8: expected '\"' closing the string, found end of line"},
        Bad{R"({"a":"\q"})",
            "column 8: expected one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u, found 'q'"},
        Bad{R"({"a":["x",1]})",
            "column 11: expected a string (arrays hold only strings or only numbers), found '1'"},
        Bad{R"({"a":[1,"x"]})",
            "column 9: expected a number (arrays hold only strings or only numbers), found '\"'"},
        Bad{R"({"a":[1,]})",
            "column 9: expected a number (arrays hold only strings or only numbers), found ']'"},
        Bad{R"({"a":{"b":1}})",
            "column 6: expected a string, number, boolean, null or array of strings (nested "
            "objects are not supported), found '{'"},
        Bad{R"({"a":1} x)", "column 9: expected end of line after the object, found 'x'"},
        Bad{R"({"a":tru})",
            "column 6: expected a value (string, number, true, false, null or array), found 't'"},
        Bad{R"({"a":1,"a":2})", "column 8: duplicate key \"a\""},
        Bad{"{\"a\":\"\x01\"}",
            "column 7: expected a control character to be escaped, found byte 0x01"}),
    [](const ::testing::TestParamInfo<Bad>& info) { return "case" + std::to_string(info.index); });

}  // namespace
}  // namespace pii_audit::analysis
