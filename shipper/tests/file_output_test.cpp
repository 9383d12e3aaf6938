// The file destination's exactly-once rules, without a database: what a crash leaves behind is
// cut back to the checkpoint, and rotation keeps the checkpoint pointing at the right file.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "checkpoint.h"
#include "errors.h"
#include "output.h"

using namespace shipper;

namespace {

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

struct Dir {
    std::string path;
    Dir() {
        char tmpl[] = "/tmp/shipper_file.XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~Dir() { (void)system(("rm -rf " + path).c_str()); }
};

Options file_options(const std::string& path, uint64_t max_size = 0) {
    return parse_options({"--output", "file:" + path, "--checkpoint", path + ".cp",
                          "--file-max-size", std::to_string(max_size) + "B", "--file-keep", "2"});
}

// Writes events first..last as "e<id>" lines and flushes; returns the checkpoint to save.
Checkpoint ship(Output& out, Checkpoint c, int64_t first, int64_t last) {
    std::vector<std::string> lines;
    for (int64_t id = first; id <= last; ++id) lines.push_back("e" + std::to_string(id));
    for (size_t i = 0; i < lines.size(); ++i)
        out.write(Record{false, first + static_cast<int64_t>(i), lines[i]});
    out.flush(Position{last, 0});
    c.event_id = out.confirmed().event_id;
    out.describe(c);
    return c;
}

}  // namespace

TEST(FileOutput, LinesPastTheCheckpointAreCutAfterACrash) {
    Dir d;
    std::string path = d.path + "/trail.log";
    Options o = file_options(path);
    Checkpoint c;
    {
        auto out = make_output(o);
        EXPECT_TRUE(out->restore(c));  // a new file is recorded before anything goes in
        out->connect();
        c = ship(*out, c, 1, 3);
        // Written and fsynced, but the process dies before the checkpoint is saved:
        ship(*out, c, 4, 5);
    }
    EXPECT_EQ(read_file(path), "e1\ne2\ne3\ne4\ne5\n");
    auto out = make_output(o);
    out->restore(c);
    EXPECT_EQ(read_file(path), "e1\ne2\ne3\n");
    out->connect();
    c = ship(*out, c, 4, 5);
    EXPECT_EQ(read_file(path), "e1\ne2\ne3\ne4\ne5\n");
    EXPECT_EQ(c.file_offset, 15u);
}

TEST(FileOutput, AFailedBatchIsCutOffBeforeItIsWrittenAgain) {
    Dir d;
    std::string path = d.path + "/trail.log";
    Options o = file_options(path);
    Checkpoint c;
    auto out = make_output(o);
    out->restore(c);
    out->connect();
    c = ship(*out, c, 1, 2);
    // More than the 1 MB buffer reaches the file, then the batch fails before its flush.
    std::string big(1 << 20, 'x');
    out->write(Record{false, 3, big});
    out->write(Record{false, 4, big});
    out->disconnect();
    struct stat st;
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_GT(st.st_size, 1 << 20);
    out->connect();  // the retry
    EXPECT_EQ(read_file(path), "e1\ne2\n");
    c = ship(*out, c, 3, 3);
    EXPECT_EQ(read_file(path), "e1\ne2\ne3\n");
    EXPECT_EQ(c.file_offset, 9u);
}

TEST(FileOutput, ACheckpointThatFailedToSaveRewindsTheFile) {
    Dir d;
    std::string path = d.path + "/trail.log";
    Options o = file_options(path);
    Checkpoint saved;
    auto out = make_output(o);
    out->restore(saved);
    out->connect();
    saved = ship(*out, saved, 1, 2);
    ship(*out, saved, 3, 4);  // flushed, but saving its checkpoint fails (a full disk)
    out->disconnect();
    out->rewind(saved);
    EXPECT_EQ(out->confirmed().event_id, 2);
    out->connect();
    EXPECT_EQ(read_file(path), "e1\ne2\n");
    saved = ship(*out, saved, 3, 4);
    EXPECT_EQ(read_file(path), "e1\ne2\ne3\ne4\n");
}

TEST(FileOutput, RotationAndACrashInTheMiddleOfIt) {
    Dir d;
    std::string path = d.path + "/trail.log";
    Options o = file_options(path, 6);
    Checkpoint c;
    auto out = make_output(o);
    out->restore(c);
    out->connect();
    c = ship(*out, c, 1, 2);  // 6 bytes: due
    ASSERT_TRUE(out->rotate_if_due());
    Checkpoint after_rotation = c;
    out->describe(after_rotation);
    EXPECT_EQ(after_rotation.file_offset, 0u);
    EXPECT_EQ(read_file(path + ".1"), "e1\ne2\n");
    EXPECT_EQ(read_file(path), "");
    // Crash before the checkpoint that names the new file: the old checkpoint still names PATH.1.
    auto again = make_output(o);
    EXPECT_TRUE(again->restore(c));
    again->connect();
    c = ship(*again, c, 3, 4);
    EXPECT_EQ(read_file(path), "e3\ne4\n");
    ASSERT_TRUE(again->rotate_if_due());
    again->describe(c);
    c = ship(*again, c, 5, 5);
    ASSERT_FALSE(again->rotate_if_due());
    EXPECT_EQ(read_file(path + ".2"), "e1\ne2\n");
    EXPECT_EQ(read_file(path + ".1"), "e3\ne4\n");
    EXPECT_EQ(read_file(path), "e5\n");
}

TEST(FileOutput, AFileReplacedBehindItsBackIsRefused) {
    Dir d;
    std::string path = d.path + "/trail.log";
    Options o = file_options(path);
    Checkpoint c;
    auto out = make_output(o);
    out->restore(c);
    out->connect();
    c = ship(*out, c, 1, 3);
    out->disconnect();
    ASSERT_EQ(rename(path.c_str(), (path + ".moved").c_str()), 0);
    std::ofstream(path) << "someone else's\n";
    try {
        make_output(o)->restore(c);
        ADD_FAILURE() << "a replaced file was accepted";
    } catch (const FatalError& e) {
        EXPECT_NE(std::string(e.what()).find("was replaced"), std::string::npos) << e.what();
    }
    // A file cut shorter than the checkpoint says is refused too.
    ASSERT_EQ(rename((path + ".moved").c_str(), path.c_str()), 0);
    ASSERT_EQ(truncate(path.c_str(), 4), 0);
    try {
        make_output(o)->restore(c);
        ADD_FAILURE() << "a truncated file was accepted";
    } catch (const FatalError& e) {
        EXPECT_NE(std::string(e.what()).find("fewer than"), std::string::npos) << e.what();
    }
}

TEST(Syslog, OctetCountingAndWrapping) {
    std::string out;
    append_octet_counted(out, "héllo");
    EXPECT_EQ(out, "6 héllo");
    Options o = parse_options({"-o", "tcp://h:1", "--checkpoint", "c", "--format", "cef",
                               "--facility", "10", "--severity", "5"});
    SyslogWrapper w(o);
    std::string m(w.message(Record{false, 7, "CEF:0|x"}));
    EXPECT_EQ(m.rfind("<85>1 ", 0), 0u) << m;
    EXPECT_NE(m.find(" pii_audit - event - CEF:0|x"), std::string::npos) << m;
    EXPECT_NE(m.find("Z "), std::string::npos) << m;
    Options r = parse_options({"-o", "tcp://h:1", "--checkpoint", "c", "--format", "rfc5424"});
    SyslogWrapper as_is(r);
    EXPECT_EQ(as_is.message(Record{true, 1, "<110>1 line"}), "<110>1 line");
}
