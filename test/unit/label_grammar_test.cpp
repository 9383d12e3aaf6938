#include "pii_audit/label_grammar.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

using pii_audit::parse_label;

TEST(LabelGrammar, SingleCategory) {
    auto r = parse_label("phone");
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.label.categories, std::vector<std::string>{"phone"});
    EXPECT_FALSE(r.label.subject_key);
}

TEST(LabelGrammar, CategoriesAndSubjectKeyAreTrimmedAndLowerCased) {
    auto r = parse_label("  Phone ,SUBJECT_KEY,  id_number ");
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.label.categories, (std::vector<std::string>{"phone", "id_number"}));
    EXPECT_TRUE(r.label.subject_key);
    EXPECT_EQ(pii_audit::format_label(r.label), "phone, id_number, subject_key");
}

TEST(LabelGrammar, SubjectKeyAlone) {
    auto r = parse_label("subject_key");
    ASSERT_TRUE(r.ok);
    EXPECT_TRUE(r.label.categories.empty());
    EXPECT_TRUE(r.label.subject_key);
}

TEST(LabelGrammar, EmptyLabelExplainsRemoval) {
    for (const char* text : {"", "   ", "\t\n"}) {
        auto r = parse_label(text);
        EXPECT_FALSE(r.ok);
        EXPECT_NE(r.error.find("IS NULL"), std::string::npos) << r.error;
    }
}

TEST(LabelGrammar, EmptyTokenNamesItsPosition) {
    auto r = parse_label("phone,,name");
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.error.find("token 2"), std::string::npos) << r.error;
    EXPECT_FALSE(parse_label("phone,").ok);
    EXPECT_FALSE(parse_label(",phone").ok);
}

TEST(LabelGrammar, GarbageIsRefused) {
    for (const char* text : {"ph one", "9phone", "phone;drop", "phöne", "'phone'", "phone-number",
                             "_phone"}) {
        auto r = parse_label(text);
        EXPECT_FALSE(r.ok) << text;
        EXPECT_NE(r.error.find("not a valid pii label token"), std::string::npos) << r.error;
    }
}

TEST(LabelGrammar, TooLongTokenIsRefused) {
    std::string longest(63, 'a');
    EXPECT_TRUE(parse_label(longest).ok);
    EXPECT_FALSE(parse_label(longest + "a").ok);
}

TEST(LabelGrammar, DuplicatesAreRefused) {
    EXPECT_NE(parse_label("phone, PHONE").error.find("twice"), std::string::npos);
    EXPECT_NE(parse_label("subject_key,subject_key").error.find("twice"), std::string::npos);
}

TEST(LabelGrammar, ParseIntoWritesNulSeparatedCategories) {
    const char* text = "phone, verification_code, subject_key";
    char out[64];
    size_t len = 0;
    bool key = false;
    char error[128];
    ASSERT_TRUE(pii_audit::parse_label_into(text, out, strlen(text) + 1, &len, &key, error,
                                            sizeof error));
    EXPECT_EQ(std::string(out, len), std::string("phone\0verification_code\0", 24));
    EXPECT_TRUE(key);
}

TEST(LabelGrammar, ParseIntoReportsErrorsWithinCapacity) {
    char out[8];
    size_t len = 0;
    bool key = false;
    char error[16];
    EXPECT_FALSE(pii_audit::parse_label_into("bad token", out, sizeof out, &len, &key, error,
                                             sizeof error));
    EXPECT_EQ(strlen(error), sizeof error - 1);  // cut, still terminated
}

TEST(NameList, ItemsAreTrimmedAndEmptyOnesSkipped) {
    std::vector<std::string> seen;
    pii_audit::for_each_listed_name(" verification_code,, credential ,",
                                    [&](std::string_view n) { seen.emplace_back(n); });
    EXPECT_EQ(seen, (std::vector<std::string>{"verification_code", "credential"}));
    seen.clear();
    pii_audit::for_each_listed_name("", [&](std::string_view n) { seen.emplace_back(n); });
    EXPECT_TRUE(seen.empty());
}

TEST(NameList, CategoryNameForm) {
    EXPECT_TRUE(pii_audit::is_category_name("verification_code"));
    EXPECT_TRUE(pii_audit::is_category_name("a1_b"));
    EXPECT_FALSE(pii_audit::is_category_name("Credential"));
    EXPECT_FALSE(pii_audit::is_category_name("bank account"));
    EXPECT_FALSE(pii_audit::is_category_name("1phone"));
    EXPECT_FALSE(pii_audit::is_category_name(""));
    EXPECT_FALSE(pii_audit::is_category_name(std::string(64, 'a')));
    EXPECT_TRUE(pii_audit::is_category_name(std::string(63, 'a')));
}
