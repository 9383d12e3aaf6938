#include "options.h"

#include <gtest/gtest.h>

#include "errors.h"

using shipper::OutputKind;
using shipper::parse_options;
using shipper::UsageError;

namespace {

std::string refusal(std::vector<std::string> args) {
    try {
        parse_options(args);
    } catch (const UsageError& e) {
        return e.what();
    }
    return "accepted";
}

}  // namespace

TEST(Options, Defaults) {
    auto o = parse_options({"--output", "stdout"});
    EXPECT_EQ(o.output, OutputKind::Stdout);
    EXPECT_EQ(o.format, "json");
    EXPECT_EQ(o.batch, 10000);
    EXPECT_EQ(o.name, "pii-audit-export");
    EXPECT_TRUE(o.checkpoint.empty());
}

TEST(Options, Destinations) {
    auto o = parse_options({"--output=relp://siem.example.org:2514", "--checkpoint", "/tmp/cp"});
    EXPECT_EQ(o.output, OutputKind::Relp);
    EXPECT_EQ(o.host, "siem.example.org");
    EXPECT_EQ(o.port, "2514");
    o = parse_options({"-o", "tcp://[::1]:514", "--checkpoint", "cp"});
    EXPECT_EQ(o.output, OutputKind::Tcp);
    EXPECT_EQ(o.host, "::1");
    o = parse_options({"-o", "file:/var/log/pii.log", "--checkpoint", "cp", "--file-max-size",
                       "100MB", "--file-keep", "3"});
    EXPECT_EQ(o.output, OutputKind::File);
    EXPECT_EQ(o.file_path, "/var/log/pii.log");
    EXPECT_EQ(o.file_max_size, 100u * 1024 * 1024);
    EXPECT_EQ(o.file_keep, 3);
    o = parse_options({"-o", "tls://127.0.0.1:6514", "--checkpoint", "cp", "--tls-ca", "ca.pem"});
    EXPECT_EQ(o.output, OutputKind::Tls);
}

TEST(Options, RefusalsSayWhatIsAllowed) {
    EXPECT_NE(refusal({}).find("--output is required"), std::string::npos);
    EXPECT_NE(refusal({"-o", "stdout", "--format", "xml"}).find("json, ocsf, cef, leef, rfc5424"),
              std::string::npos);
    EXPECT_NE(refusal({"-o", "kafka://x:1"}).find("is not one of: stdout, file:PATH"),
              std::string::npos);
    EXPECT_NE(refusal({"-o", "tcp://host"}).find("HOST:PORT"), std::string::npos);
    EXPECT_NE(refusal({"-o", "tcp://host:0", "--checkpoint", "c"}).find("from 1 to 65535"),
              std::string::npos);
    EXPECT_NE(refusal({"-o", "tcp://::1:514", "--checkpoint", "c"}).find("brackets"),
              std::string::npos);
    EXPECT_NE(refusal({"-o", "relp://h:1"}).find("--checkpoint FILE is required"),
              std::string::npos);
    EXPECT_NE(refusal({"-o", "stdout", "--batch", "0"}).find("from 1 to 1000000"),
              std::string::npos);
    EXPECT_NE(refusal({"-o", "stdout", "--batch", "12x"}).find("not '12x'"), std::string::npos);
    EXPECT_NE(refusal({"-o", "stdout", "--bogus"}).find("unknown option '--bogus'"),
              std::string::npos);
    EXPECT_NE(refusal({"-o", "stdout", "--batch"}).find("--batch needs a value"),
              std::string::npos);
    EXPECT_NE(refusal({"-o", "stdout", "-o", "stdout"}).find("given twice"), std::string::npos);
    EXPECT_NE(refusal({"-o", "tls://h:1", "--checkpoint", "c"}).find("--tls-ca"),
              std::string::npos);
    EXPECT_NE(refusal({"-o", "tcp://h:1", "--checkpoint", "c", "--tls-ca", "x"})
                  .find("apply to --output tls://"),
              std::string::npos);
    EXPECT_NE(refusal({"-o", "tls://h:1", "--checkpoint", "c", "--tls-ca", "x", "--tls-cert", "y"})
                  .find("go together"),
              std::string::npos);
    EXPECT_NE(refusal({"-o", "stdout", "--file-max-size", "1MB"}).find("file:PATH only"),
              std::string::npos);
    EXPECT_NE(
        refusal({"-o", "file:x", "--checkpoint", "c", "--file-max-size", "1TB"}).find("500kB"),
        std::string::npos);
    EXPECT_NE(refusal({"-o", "file:x", "--checkpoint", "x"}).find("the same file"),
              std::string::npos);
    EXPECT_NE(refusal({"-o", "stdout", "--name", "a b"}).find("--name may hold"),
              std::string::npos);
    EXPECT_NE(refusal({"-o", "stdout", "--name", "-siem"}).find("starting with a letter"),
              std::string::npos);
    EXPECT_NE(refusal({"-o", "stdout", "--name", std::string(64, 'a')}).find("up to 63"),
              std::string::npos);
    EXPECT_NE(refusal({"-o", "stdout", "--poll-interval", "nan"}).find("seconds"),
              std::string::npos);
    EXPECT_NE(refusal({"-o", "stdout", "extra"}).find("unexpected argument 'extra'"),
              std::string::npos);
    EXPECT_NE(refusal({"-o", "stdout", "--once=yes"}).find("takes no value"), std::string::npos);
}

TEST(Options, HelpNeedsNothingElse) {
    EXPECT_TRUE(parse_options({"--help"}).help);
    EXPECT_TRUE(parse_options({"--version"}).version);
}

TEST(Options, DigestRecords) {
    EXPECT_EQ(parse_options({"-o", "stdout"}).digest_every, 10000);
    EXPECT_EQ(parse_options({"-o", "stdout", "--digest-every", "0"}).digest_every, 0);
    EXPECT_EQ(parse_options({"-o", "stdout", "--digest-every=500"}).digest_every, 500);
    EXPECT_NE(
        refusal({"-o", "stdout", "--digest-every", "-1"}).find("--digest-every must be an integer"),
        std::string::npos);
    EXPECT_NE(refusal({"-o", "stdout", "--digest-every", "often"}).find("not 'often'"),
              std::string::npos);
}

TEST(Options, Verify) {
    auto o = parse_options({"-d", "dbname=x", "--verify", "a.log", "--verify=b.log"});
    ASSERT_EQ(o.verify_files.size(), 2u);
    EXPECT_EQ(o.verify_files[1], "b.log");
    EXPECT_NE(refusal({"--verify", "a.log", "-o", "stdout"}).find("ships nothing: drop --output"),
              std::string::npos);
    EXPECT_NE(refusal({"--verify", "a.log", "--once"}).find("drop --once"), std::string::npos);
    EXPECT_NE(refusal({"--verify", ""}).find("--verify needs a file"), std::string::npos);
    EXPECT_NE(refusal({"--verify"}).find("--verify needs a value"), std::string::npos);
}
