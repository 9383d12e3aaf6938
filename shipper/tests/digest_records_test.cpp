#include "digest_records.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace shipper {
namespace {

const std::string kDigest = "66002c941a01107802f6abbda19c006e680faa7efcc0dce73279526b339bdf83";
const std::string kPrevious = "5ae0203b19b007827b991a4d0f0f49b7760fb201995f4cd48fea2f40b156d14b";

// As pii_audit.export_digests() writes them (lines taken from a real server).
std::string json_line(const std::string& digest = kDigest, const std::string& id = "5") {
    return R"({"@timestamp" : "2026-11-30T16:35:58.836265Z", "event" : {"id" : "digest-5", "kind" : "state", "module" : "pii_audit", "dataset" : "pii_audit.digests", "action" : "trail_digest"}, "host" : {"name" : "vm"}, "observer" : {"vendor" : "pii_audit", "product" : "pii_audit", "version" : "0.3.0"}, "pii_audit" : {"kind" : "digest", "event_id" : )" +
           id + R"(, "first_event_id" : 5, "digest" : ")" + digest + R"(", "previous_digest" : ")" +
           kPrevious + R"(", "chain_version" : 1, "server_name" : "vm"}})";
}
const std::string kOcsf =
    R"({"category_uid" : 1, "class_uid" : 1008, "time" : 1796056558836, "log_name" : "pii_audit.digests", "log_provider" : "pii_audit", "metadata" : {"version" : "1.3.0", "uid" : "digest-5", "log_name" : "pii_audit.digests"}, "unmapped" : {"pii_audit" : {"kind" : "digest", "event_id" : 5, "first_event_id" : 5, "digest" : ")" +
    kDigest + R"(", "previous_digest" : ")" + kPrevious + R"(", "chain_version" : 1}}})";
const std::string kCef =
    "CEF:0|pii_audit|pii_audit|0.3.0|digest|Trail digest|1|rt=1796056558836 externalId=digest-5 "
    "dvchost=vm cat=digest cn1Label=eventId cn1=5 cn2Label=firstEventId cn2=5 cs1Label=digest "
    "cs1=" +
    kDigest + " cs2Label=previousDigest cs2=" + kPrevious;
const std::string kLeef =
    "LEEF:2.0|pii_audit|pii_audit|0.3.0|digest|x09|devTime=Nov 30 2026 16:35:58.836 "
    "UTC\tcat=digest\teventId=5\tfirstEventId=5\tdigest=" +
    kDigest + "\tpreviousDigest=" + kPrevious + "\tserverName=vm";
const std::string kRfc5424 =
    R"(<110>1 2026-11-30T16:35:58.836265Z vm pii_audit - digest [pii_audit@32473 event_id="5" first_event_id="5" digest=")" +
    kDigest + R"(" previous_digest=")" + kPrevious + R"(" server_name="vm"] trail digest)";

TEST(DigestRecords, EveryFormat) {
    for (const std::string& line : {json_line(), kOcsf, kCef, kLeef, kRfc5424}) {
        auto r = parse_digest_record(line);
        ASSERT_TRUE(r.has_value()) << line;
        EXPECT_EQ(r->event_id, 5);
        EXPECT_EQ(r->digest, kDigest) << line;  // not the previous digest
    }
}

TEST(DigestRecords, WrappedInTheShippersSyslogHeader) {
    for (const std::string& line : {json_line(), kOcsf, kCef, kLeef}) {
        auto r = parse_digest_record(
            "<110>1 2026-11-30T10:29:50.523806Z host pii_audit - digest - " + line + "\n");
        ASSERT_TRUE(r.has_value()) << line;
        EXPECT_EQ(r->digest, kDigest);
    }
}

TEST(DigestRecords, EventsAreNotDigests) {
    EXPECT_FALSE(parse_digest_record(
        R"({"@timestamp":"2026-11-30T16:35:57.794359Z","event":{"id":"1","dataset":"pii_audit.trail"},"user":{"name":"pii_audit.digests"}})"));
    EXPECT_FALSE(
        parse_digest_record("CEF:0|pii_audit|pii_audit|0.3.0|read|Personal data read|3|suser=x "
                            "msg=|digest|Trail digest|"));
    EXPECT_FALSE(parse_digest_record("LEEF:2.0|pii_audit|pii_audit|0.3.0|read|x09|usrName=digest"));
    EXPECT_FALSE(parse_digest_record(
        R"(<110>1 2026-11-30T16:35:58Z vm pii_audit 22316 read [pii_audit@32473 event_id="7" digest="x"] a read)"));
    EXPECT_FALSE(
        parse_digest_record("<110>1 2026-11-30T10:29:50Z host pii_audit - event - CEF:0|x"));
    EXPECT_FALSE(parse_digest_record(""));
    EXPECT_FALSE(parse_digest_record("plain text"));
}

TEST(DigestRecords, DamagedRecordsSayWhatIsWrong) {
    auto error_of = [](const std::string& line) {
        try {
            parse_digest_record(line);
        } catch (const std::runtime_error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    EXPECT_EQ(error_of(json_line(kDigest.substr(1))), "a damaged digest record: the digest '" +
                                                          kDigest.substr(1) +
                                                          "' is not 64 lowercase hex digits");
    EXPECT_EQ(error_of(json_line(kDigest, "\"5\"")),
              "a damaged digest record: no integer event_id");
    EXPECT_EQ(error_of(json_line().substr(0, 200)), "a damaged digest record: not valid JSON");
    std::string cef = kCef;
    cef.replace(cef.find(" cn1=5"), 6, " cn1=5x");
    EXPECT_EQ(error_of(cef), "a damaged digest record: the event id '5x' is not a number");
    std::string leef = kLeef;
    leef.replace(leef.find("\tdigest="), 8, "\tdigestt=");
    EXPECT_EQ(error_of(leef), "a damaged digest record: no eventId or digest attribute");
    std::string syslog = kRfc5424;
    syslog.replace(syslog.find(kDigest), 2, "XY");
    EXPECT_NE(error_of(syslog).find("is not 64 lowercase hex digits"), std::string::npos);
}

}  // namespace
}  // namespace shipper
