#include "outputs/relp_protocol.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace shipper::relp {
namespace {

TEST(RelpProtocol, FramesAsTheSpecWritesThem) {
    std::string out;
    append_frame(out, 1, "open", "relp_version=0");
    append_frame(out, 2, "syslog", "a b\nc");
    append_frame(out, 3, "close", "");
    EXPECT_EQ(out, "1 open 14 relp_version=0\n2 syslog 5 a b\nc\n3 close 0\n");
}

TEST(RelpProtocol, TxnrWrapsToOne) {
    EXPECT_EQ(next_txnr(1), 2u);
    EXPECT_EQ(next_txnr(kMaxTxnr), 1u);
}

TEST(RelpProtocol, ReadsFramesCutAnywhere) {
    std::string stream = "2 rsp 6 200 OK\n0 serverclose 0\n3 rsp 10 200 OK\nx y\n";
    // Every split point, byte by byte: a frame is returned only once complete.
    for (size_t cut = 0; cut <= stream.size(); ++cut) {
        FrameReader r;
        std::vector<Frame> got;
        r.feed(stream.data(), cut);
        while (auto f = r.next()) got.push_back(*f);
        r.feed(stream.data() + cut, stream.size() - cut);
        while (auto f = r.next()) got.push_back(*f);
        ASSERT_EQ(got.size(), 3u) << "cut at " << cut;
        EXPECT_EQ(got[0].txnr, 2u);
        EXPECT_EQ(got[0].command, "rsp");
        EXPECT_EQ(got[0].data, "200 OK");
        EXPECT_EQ(got[1].command, "serverclose");
        EXPECT_EQ(got[1].data, "");
        EXPECT_EQ(got[2].txnr, 3u);
        EXPECT_EQ(got[2].data, "200 OK\nx y");
    }
}

TEST(RelpProtocol, RefusesMalformedFrames) {
    for (std::string bad : {"x rsp 6 200 OK\n", "2 rsp 6 200 OKK\n", "2 rsp 6x200 OK\n",
                            "2  6 200 OK\n", "1234567890 rsp 0\n", "2 rsp 99999999 \n"}) {
        FrameReader r;
        r.feed(bad.data(), bad.size());
        EXPECT_THROW(r.next(), std::runtime_error) << bad;
    }
}

TEST(RelpProtocol, Responses) {
    Response ok = parse_response("200 OK\nrelp_version=0\ncommands=syslog");
    EXPECT_EQ(ok.code, 200);
    EXPECT_EQ(ok.text, "OK");
    EXPECT_EQ(ok.data, "relp_version=0\ncommands=syslog");
    Response refused = parse_response("500 queue full");
    EXPECT_EQ(refused.code, 500);
    EXPECT_EQ(refused.text, "queue full");
    EXPECT_EQ(parse_response("200").code, 200);
    EXPECT_THROW(parse_response("20"), std::runtime_error);
    EXPECT_THROW(parse_response("OK 200"), std::runtime_error);
    EXPECT_THROW(parse_response("2000 OK"), std::runtime_error);
}

TEST(RelpProtocol, Offers) {
    EXPECT_TRUE(offers_command("relp_version=0\ncommands=syslog", "syslog"));
    EXPECT_TRUE(offers_command("commands=foo,syslog,bar\nrelp_software=x", "syslog"));
    EXPECT_FALSE(offers_command("commands=syslogx", "syslog"));
    EXPECT_FALSE(offers_command("relp_version=0\nrelp_software=syslog", "syslog"));
    EXPECT_FALSE(offers_command("", "syslog"));
}

}  // namespace
}  // namespace shipper::relp
