#include "pii_audit/retention.h"

#include <gtest/gtest.h>

#include <string>

using pii_audit::parse_retention;
using pii_audit::Retention;

namespace {

Retention parsed(const char* text) {
    Retention r;
    char error[256] = "";
    EXPECT_TRUE(parse_retention(text, &r, error, sizeof error)) << text << ": " << error;
    return r;
}

std::string refused(const char* text) {
    Retention r;
    r.keep_everything = false;
    r.days = 42;
    char error[256] = "";
    EXPECT_FALSE(parse_retention(text, &r, error, sizeof error)) << text;
    EXPECT_EQ(r.days, 42) << "a refused value leaves the result alone";
    return error;
}

}  // namespace

TEST(Retention, EmptyKeepsEverything) {
    EXPECT_TRUE(parsed("").keep_everything);
    EXPECT_TRUE(parsed("   ").keep_everything);
    EXPECT_EQ(parsed("").interval_text(), "");
}

TEST(Retention, UnitsAddUp) {
    Retention r = parsed("400 days");
    EXPECT_FALSE(r.keep_everything);
    EXPECT_EQ(r.months, 0);
    EXPECT_EQ(r.days, 400);
    EXPECT_EQ(r.interval_text(), "0 months 400 days");
    r = parsed("2 years 6 Months 1 week 3 DAY");
    EXPECT_EQ(r.months, 30);
    EXPECT_EQ(r.days, 10);
    EXPECT_EQ(parsed("1 day").days, 1);
    EXPECT_EQ(parsed("13months").months, 13);
    EXPECT_EQ(parsed(" 1 year ").months, 12);
}

TEST(Retention, RefusesWhatIsNotADuration) {
    EXPECT_NE(refused("400").find("needs a unit"), std::string::npos);
    EXPECT_NE(refused("400 hours").find("unknown unit \"hours\""), std::string::npos);
    EXPECT_NE(refused("forever").find("expected a number"), std::string::npos);
    EXPECT_NE(refused("-5 days").find("expected a number"), std::string::npos);
    EXPECT_NE(refused("5 days;").find("unexpected \";\""), std::string::npos);
    EXPECT_NE(refused("1.5 years").find("needs a unit"), std::string::npos);
    EXPECT_NE(refused("400 days'; DROP TABLE x").find("unexpected"), std::string::npos);
}

TEST(Retention, RefusesTooShortAndTooLong) {
    EXPECT_NE(refused("0 days").find("at least one day"), std::string::npos);
    EXPECT_NE(refused("0 months 0 days").find("at least one day"), std::string::npos);
    EXPECT_NE(refused("101 years").find("longer than 100 years"), std::string::npos);
    EXPECT_NE(refused("99999999999 days").find("too large"), std::string::npos);
    EXPECT_FALSE(parsed("100 years").keep_everything);
    EXPECT_FALSE(parsed("36524 days").keep_everything);
    EXPECT_NE(refused("1200 months 1 day").find("longer than 100 years"), std::string::npos);
}
