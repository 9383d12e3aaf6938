// A worker that stops draining (here: SIGSTOP) while on_queue_full = wait. Clients may pay one
// bounded wait (queue_wait_timeout) per stall, not one per statement: after the first wait
// times out, the queue drops and counts at once until the worker releases space again. The
// loss is then recorded as a gap, and the next stall again costs one wait.
//
// Runs on the "stall" cluster of run-integration.sh: a 256 kB queue, queue_wait_timeout = 3s.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <string>

#include "pg_client.h"

namespace pii_it {
namespace {

constexpr auto kSlow = std::chrono::milliseconds(1500);  // half the configured 3 s wait
constexpr int kMaxReads = 20000;                         // far more than 256 kB of events
constexpr int kReadsAfterFirstDrop = 300;

// Sends SIGCONT when it goes out of scope, so a failed assertion never leaves the worker stopped.
class StoppedProcess {
  public:
    explicit StoppedProcess(pid_t pid) : pid_(pid) { stopped_ = kill(pid_, SIGSTOP) == 0; }
    ~StoppedProcess() { resume(); }
    StoppedProcess(const StoppedProcess&) = delete;
    StoppedProcess& operator=(const StoppedProcess&) = delete;
    bool stopped() const { return stopped_; }
    void resume() {
        if (stopped_) kill(pid_, SIGCONT);
        stopped_ = false;
    }

  private:
    pid_t pid_;
    bool stopped_ = false;
};

struct StallRound {
    int reads = 0;
    int slow = 0;  // statements that waited for queue space
    int64_t dropped = 0;
    std::string state_during_stall;
};

// Reads until the queue is full and kReadsAfterFirstDrop more reads were dropped, counting the
// statements that took longer than kSlow. Stops early (to fail fast) after a few slow ones.
StallRound read_through_a_stall(Connection& app, Connection& observer, int64_t dropped_before) {
    StallRound round;
    int after_drop = 0;
    for (int i = 0; i < kMaxReads && after_drop < kReadsAfterFirstDrop && round.slow <= 3; ++i) {
        auto start = Clock::now();
        app.exec("SELECT phone FROM customers WHERE id = " + std::to_string(1 + i % 100));
        if (Clock::now() - start > kSlow) ++round.slow;
        ++round.reads;
        if (i % 50 == 0 || after_drop > 0) {
            AuditStatus s = read_status(observer);
            if (s.events_dropped > dropped_before) {
                ++after_drop;
                round.dropped = s.events_dropped - dropped_before;
                round.state_during_stall = s.state;
            }
        }
    }
    return round;
}

TEST(Stall, AStoppedWorkerCostsOneBoundedWaitPerStallThenDropsAndCounts) {
    Connection app(stall_cluster("postgres"));
    Connection observer(stall_cluster("postgres"));
    app.exec_script(
        "CREATE EXTENSION IF NOT EXISTS pii_audit;"
        "CREATE TABLE customers (id integer PRIMARY KEY, name text, phone text);"
        "INSERT INTO customers SELECT g, 'customer ' || g, '+86 139 0000 ' || g "
        "  FROM generate_series(1, 100) AS g;"
        "SECURITY LABEL FOR pii ON COLUMN customers.phone IS 'phone, subject_key';");
    ASSERT_EQ(app.text("SHOW pii_audit.on_queue_full"), "wait");

    for (int stall = 0; stall < 2; ++stall) {
        SCOPED_TRACE("stall " + std::to_string(stall + 1));
        AuditStatus before;
        ASSERT_TRUE(poll_until(std::chrono::seconds(30), [&] {
            before = read_status(observer);
            return before.state == "running" && before.worker_pid != 0 &&
                   before.queue_depth_bytes == 0;
        })) << describe(before);

        StoppedProcess worker(static_cast<pid_t>(before.worker_pid));
        ASSERT_TRUE(worker.stopped()) << "could not stop the worker, pid " << before.worker_pid;
        StallRound round = read_through_a_stall(app, observer, before.events_dropped);
        EXPECT_GT(round.dropped, 0) << "the queue never filled in " << round.reads << " reads";
        EXPECT_EQ(round.slow, 1) << "each stall may cost one wait, not one per statement ("
                                 << round.reads << " reads)";
        EXPECT_EQ(round.state_during_stall,
                  "worker not draining the queue: events are dropped and counted");
        worker.resume();

        // The worker stores what was queued and records the loss as a gap.
        bool drained = false;
        AuditStatus after = wait_for_drain(observer, 0, std::chrono::seconds(60), &drained);
        ASSERT_TRUE(drained) << describe(after);
        EXPECT_EQ(after.state, "running") << describe(after);
        EXPECT_EQ(after.events_dropped - before.events_dropped, round.dropped) << describe(after);
        ASSERT_TRUE(poll_until(std::chrono::seconds(10), [&] {
            return observer.int64("SELECT coalesce(sum(row_count), 0) FROM pii_audit.access_log "
                                  "WHERE kind = 'gap'") == after.events_dropped;
        })) << "the gap rows do not count every dropped event: " << describe(after);
    }
}

}  // namespace
}  // namespace pii_it
