#include "checkpoint.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "errors.h"

using shipper::Checkpoint;

namespace {

std::string temp_dir() {
    char tmpl[] = "/tmp/shipper_test.XXXXXX";
    return mkdtemp(tmpl);
}

}  // namespace

TEST(Checkpoint, RoundTrip) {
    Checkpoint c;
    c.event_id = 123456789012;
    c.alert_id = 42;
    c.format = "cef";
    c.file_device = 2049;
    c.file_inode = 77;
    c.file_offset = 1 << 30;
    EXPECT_EQ(shipper::parse_checkpoint(shipper::serialize_checkpoint(c), "t"), c);
}

TEST(Checkpoint, DamagedIsRefusedWithItsName) {
    Checkpoint c;
    std::string good = shipper::serialize_checkpoint(c);
    for (std::string bad : {std::string(""), std::string("garbage\n"),
                            good.substr(0, good.size() - 4),  // no "end": cut short
                            good.replace(good.find("event_id 0"), 10, "event_id x")}) {
        try {
            shipper::parse_checkpoint(bad, "/var/lib/x/checkpoint");
            ADD_FAILURE() << "accepted: " << bad;
        } catch (const shipper::FatalError& e) {
            EXPECT_NE(std::string(e.what()).find("/var/lib/x/checkpoint is damaged"),
                      std::string::npos);
        }
    }
}

TEST(Checkpoint, SaveReplacesAtomicallyAndLoads) {
    std::string dir = temp_dir(), path = dir + "/cp";
    EXPECT_FALSE(shipper::load_checkpoint(path).has_value());
    Checkpoint c;
    c.event_id = 5;
    shipper::save_checkpoint(path, c);
    c.event_id = 6;
    shipper::save_checkpoint(path, c);
    auto loaded = shipper::load_checkpoint(path);
    ASSERT_TRUE(loaded.has_value());
    EXPECT_EQ(loaded->event_id, 6);
    EXPECT_NE(access((path + ".tmp").c_str(), F_OK), 0);  // renamed, not left behind
    // A leftover temporary file (a crash before the rename) does not matter.
    std::ofstream(path + ".tmp") << "half";
    EXPECT_EQ(shipper::load_checkpoint(path)->event_id, 6);
    std::string cmd = "rm -rf " + dir;
    EXPECT_EQ(system(cmd.c_str()), 0);
}
