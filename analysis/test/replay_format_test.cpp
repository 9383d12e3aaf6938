#include <gtest/gtest.h>

#include "pii_audit/analysis/replay.h"

namespace pii_audit::analysis {
namespace {

TEST(Iso8601, ParsesOffsetsAndFractions) {
    std::int64_t t;
    ASSERT_TRUE(parse_iso8601("2024-03-01T09:15:00Z", t));
    EXPECT_EQ(t, 1709284500LL * 1000000);
    ASSERT_TRUE(parse_iso8601("2024-03-01T17:15:00.25+08:00", t));
    EXPECT_EQ(t, 1709284500LL * 1000000 + 250000);
    ASSERT_TRUE(parse_iso8601("2024-03-01 09:15:00-0100", t));
    EXPECT_EQ(t, (1709284500LL + 3600) * 1000000);
    EXPECT_EQ(format_iso8601(1709284500LL * 1000000), "2024-03-01T09:15:00Z");
    EXPECT_EQ(format_iso8601(-1), "1969-12-31T23:59:59Z");
}

TEST(Iso8601, RejectsAmbiguousOrInvalid) {
    std::int64_t t;
    EXPECT_FALSE(parse_iso8601("2024-03-01T09:15:00", t));  // no offset
    EXPECT_FALSE(parse_iso8601("2023-02-29T09:15:00Z", t));
    EXPECT_FALSE(parse_iso8601("2024-13-01T09:15:00Z", t));
    EXPECT_FALSE(parse_iso8601("2024-03-01T09:15Z", t));
    EXPECT_FALSE(parse_iso8601("2024-03-01T09:15:00Zjunk", t));
}

TEST(DecodeRecord, AccessWithDefaults) {
    JsonLine j;
    ASSERT_TRUE(
        j.parse(R"({"time":"2024-03-01T09:15:00Z","actor":"clerk-0421","peer_group":"clerk",)"
                R"("application":"counter","client_addr":"10.1.2.3","command":"select",)"
                R"("relation":"public.customers","columns":["phone"],)"
                R"("categories":["phone","verification_code"],"subjects":["c1","c2"],)"
                R"("status":"ok","extra":1})"));
    Record r;
    std::string error;
    ASSERT_TRUE(decode_record(j, r, error)) << error;
    EXPECT_EQ(r.kind, RecordKind::access);
    EXPECT_EQ(r.access.actor, "clerk-0421");
    EXPECT_EQ(r.access.categories.size, 2u);
    EXPECT_EQ(r.access.subjects.size, 2u);
    EXPECT_EQ(r.access.rows, 2);  // defaults to the number of subjects
    EXPECT_EQ(r.access.command, Command::select);
}

TEST(DecodeRecord, OtherKinds) {
    JsonLine j;
    Record r;
    std::string error;
    ASSERT_TRUE(
        j.parse(R"({"kind":"login","time":"2024-03-01T09:15:00Z","actor":"a","success":false})"));
    ASSERT_TRUE(decode_record(j, r, error)) << error;
    EXPECT_EQ(r.kind, RecordKind::login);
    EXPECT_FALSE(r.login.success);
    ASSERT_TRUE(
        j.parse(R"({"kind":"relation","time":"2024-03-01T09:15:00Z","actor":"a","subject":"s"})"));
    ASSERT_TRUE(decode_record(j, r, error)) << error;
    EXPECT_EQ(r.relation.subject, "s");
    ASSERT_TRUE(j.parse(R"({"kind":"departed","time":"2024-03-01T09:15:00Z","actor":"a"})"));
    ASSERT_TRUE(decode_record(j, r, error)) << error;
    EXPECT_EQ(r.kind, RecordKind::departed);
}

TEST(DecodeRecord, ErrorsNameTheField) {
    JsonLine j;
    Record r;
    std::string error;
    auto fails = [&](const char* line) {
        EXPECT_TRUE(j.parse(line)) << j.error();
        EXPECT_FALSE(decode_record(j, r, error));
        return error;
    };
    EXPECT_EQ(fails(R"({"actor":"a"})"), "missing field \"time\" (a string)");
    EXPECT_EQ(fails(R"({"time":"2024-03-01T09:15:00Z","actor":"a","rows":-1})"),
              "field \"rows\" must be a non-negative integer");
    EXPECT_EQ(fails(R"({"time":"2024-03-01T09:15:00Z","actor":"a","subjects":"x"})"),
              "field \"subjects\" must be an array of strings");
    EXPECT_EQ(
        fails(R"({"time":"yesterday","actor":"a"})").rfind("field \"time\" must be ISO-8601", 0),
        0u);
    EXPECT_EQ(fails(R"({"kind":"logout","time":"2024-03-01T09:15:00Z","actor":"a"})")
                  .rfind("field \"kind\" must be", 0),
              0u);
    EXPECT_EQ(fails(R"({"kind":"login","time":"2024-03-01T09:15:00Z","actor":"a"})"),
              "field \"success\" must be true or false");
}

TEST(AlertJson, EscapesAndFields) {
    Alert a;
    a.time_us = 1709284500LL * 1000000;
    a.actor = "clerk \"7\"";
    a.peer_group = "clerk";
    a.detector = Detector::sensitive_categories;
    a.score = 83;
    a.severity = Severity::high;
    a.explanation = "read x";
    a.evidence = {4, 9};
    EXPECT_EQ(alert_json(a),
              R"({"time":"2024-03-01T09:15:00Z","actor":"clerk \"7\"","peer_group":"clerk",)"
              R"("detector":"sensitive_categories","score":83,"severity":"high",)"
              R"("explanation":"read x","evidence":[4,9]})");
}

}  // namespace
}  // namespace pii_audit::analysis
