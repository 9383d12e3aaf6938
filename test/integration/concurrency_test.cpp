// Many clients read labelled columns at once, with and without the worker being stopped in the
// middle: every statement execution must end up in the trail exactly once, in order, with
// event_id gapless across the whole trail.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "main_cluster.h"
#include "pg_client.h"

namespace pii_it {
namespace {

constexpr int kClients = 8;
constexpr int kReadsPerClient = 2000;
constexpr int64_t kTotalReads = int64_t{kClients} * kReadsPerClient;
constexpr const char* kReadSql = "SELECT name, phone FROM customers WHERE id = $1";
constexpr std::chrono::seconds kLoadTimeout{120};

// kClients threads, each with its own connection and its own pii_audit.end_user (prefix + i),
// each running kReadsPerClient prepared labelled reads. Optional gates: before read number
// gates[g] every client waits until gate g is opened.
class ReadLoad {
  public:
    ReadLoad(std::string end_user_prefix, std::vector<int> gates)
        : prefix_(std::move(end_user_prefix)),
          gates_(std::move(gates)),
          gate_open_(gates_.size(), false),
          errors_(kClients) {}

    ~ReadLoad() {
        stop_ = true;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            std::fill(gate_open_.begin(), gate_open_.end(), true);
            started_ = true;
        }
        changed_.notify_all();
        for (auto& thread : threads_)
            if (thread.joinable()) thread.join();
    }

    // Connects every client, then lets them all start reading at the same moment.
    void start() {
        for (int i = 0; i < kClients; ++i) threads_.emplace_back([this, i] { run_client(i); });
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait(lock, [&] { return connected_ == kClients; });
        started_ = true;
        lock.unlock();
        changed_.notify_all();
    }

    void open_gate(size_t gate) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            gate_open_.at(gate) = true;
        }
        changed_.notify_all();
    }

    int64_t completed() const { return completed_.load(); }

    // Waits until at least n reads completed (or a client failed, or the timeout passed).
    bool wait_completed(int64_t n) {
        return poll_until(
                   kLoadTimeout, [&] { return completed_.load() >= n || failed_.load() > 0; },
                   std::chrono::milliseconds(1)) &&
               completed_.load() >= n;
    }

    void join() {
        for (auto& thread : threads_) thread.join();
        threads_.clear();
    }

    // One line per client that failed.
    std::string errors() {
        std::lock_guard<std::mutex> lock(mutex_);
        std::string all;
        for (int i = 0; i < kClients; ++i)
            if (!errors_[i].empty())
                all += "client " + std::to_string(i) + ": " + errors_[i] + "\n";
        return all;
    }

    std::string end_user(int client) const { return prefix_ + std::to_string(client); }

  private:
    void run_client(int index) {
        bool counted_connected = false;
        try {
            Connection conn(main_cluster());
            conn.exec("SET pii_audit.end_user = " + quote_literal(end_user(index)));
            Result prepared(PQprepare(conn.get(), "read", kReadSql, 1, nullptr));
            if (prepared.status() != PGRES_COMMAND_OK)
                throw std::runtime_error("PQprepare: " + prepared.error());
            {
                std::unique_lock<std::mutex> lock(mutex_);
                ++connected_;
                counted_connected = true;
                changed_.notify_all();
                changed_.wait(lock, [&] { return started_; });
            }
            for (int j = 0; j < kReadsPerClient && !stop_; ++j) {
                for (size_t g = 0; g < gates_.size(); ++g) {
                    if (gates_[g] != j) continue;
                    std::unique_lock<std::mutex> lock(mutex_);
                    if (!changed_.wait_for(lock, kLoadTimeout, [&] { return gate_open_[g]; }))
                        throw std::runtime_error("gate " + std::to_string(g) + " never opened");
                }
                std::string id = std::to_string(1 + (index * 7 + j) % kCustomerRows);
                const char* values[] = {id.c_str()};
                Result r(PQexecPrepared(conn.get(), "read", 1, values, nullptr, nullptr, 0));
                if (r.status() != PGRES_TUPLES_OK)
                    throw std::runtime_error("read " + std::to_string(j) + " failed: " + r.error());
                if (r.rows() != 1)
                    throw std::runtime_error("read " + std::to_string(j) + " returned " +
                                             std::to_string(r.rows()) + " rows");
                ++completed_;
            }
        } catch (const std::exception& e) {
            {
                std::lock_guard<std::mutex> lock(mutex_);
                errors_[index] = e.what();
                if (!counted_connected) ++connected_;  // so that start() does not wait forever
            }
            ++failed_;
            changed_.notify_all();
        }
    }

    const std::string prefix_;
    const std::vector<int> gates_;
    std::vector<bool> gate_open_;      // guarded by mutex_
    std::vector<std::string> errors_;  // guarded by mutex_
    std::vector<std::thread> threads_;
    std::mutex mutex_;
    std::condition_variable changed_;
    int connected_ = 0;     // guarded by mutex_
    bool started_ = false;  // guarded by mutex_
    std::atomic<bool> stop_{false};
    std::atomic<int64_t> completed_{0};
    std::atomic<int64_t> failed_{0};
};

class ConcurrentReads : public testing::Test {
  protected:
    void SetUp() override {
        ASSERT_TRUE(PQisthreadsafe()) << "libpq was built without thread safety";
        admin_ = std::make_unique<Connection>(main_cluster());
        ensure_customers_schema(*admin_);
        before_ = read_status(*admin_);
        max_id_before_ = max_event_id(*admin_);
    }

    // Everything the trail must say about a finished load whose clients used `load`'s end users.
    void expect_exact_trail(ReadLoad& load, const std::string& prefix) {
        Connection& c = *admin_;
        bool drained = false;
        AuditStatus after = wait_for_drain(c, before_.events_enqueued, kDrainTimeout, &drained);
        ASSERT_TRUE(drained) << "the queue did not drain within " << kDrainTimeout.count()
                             << " s: " << describe(after);

        // Counters: exactly our reads (and the clients' logins) went through the queue, none
        // was lost.
        const int64_t logins = c.int64(
            "SELECT count(*) FROM pii_audit.login_log WHERE event_id > $1",
            {std::to_string(max_id_before_)});
        EXPECT_EQ(after.events_enqueued - before_.events_enqueued, kTotalReads + logins)
            << describe(after);
        EXPECT_EQ(after.events_persisted, after.events_enqueued) << describe(after);
        EXPECT_EQ(after.events_dropped, 0) << describe(after);
        EXPECT_EQ(after.capture_errors, 0) << describe(after);
        EXPECT_EQ(after.queue_depth_bytes, 0) << describe(after);

        const std::vector<std::string> p{prefix};
        const std::string ours =
            " FROM pii_audit.access_log WHERE kind = 'read' AND starts_with(end_user, $1)";

        // Exactly one row per statement execution, per client.
        EXPECT_EQ(c.int64("SELECT count(*)" + ours, p), kTotalReads);
        Result per_client =
            c.exec("SELECT end_user, count(*)" + ours + " GROUP BY end_user ORDER BY end_user", p);
        std::set<std::string> expected_users, seen_users;
        for (int i = 0; i < kClients; ++i) expected_users.insert(load.end_user(i));
        for (int row = 0; row < per_client.rows(); ++row) {
            seen_users.insert(per_client.text(row, 0));
            EXPECT_EQ(per_client.int64(row, 1), kReadsPerClient)
                << "end_user " << per_client.text(row, 0);
        }
        EXPECT_EQ(seen_users, expected_users);

        // Nothing else was added to the trail meanwhile: no duplicates hiding under other ids.
        EXPECT_EQ(c.int64("SELECT count(*) FROM pii_audit.access_log WHERE event_id > $1",
                          {std::to_string(max_id_before_)}),
                  kTotalReads);
        EXPECT_EQ(c.int64("SELECT count(*) FROM pii_audit.access_log WHERE event_id > $2::bigint "
                          "AND event_id < (SELECT min(event_id)" + ours + ")",
                          {prefix, std::to_string(max_id_before_)}),
                  0);
        // No statement execution was recorded twice: (backend, start time) is unique.
        EXPECT_EQ(c.int64("SELECT count(DISTINCT (backend_pid, event_time))" + ours, p),
                  kTotalReads);
        EXPECT_EQ(c.int64("SELECT count(DISTINCT backend_pid)" + ours, p), kClients);

        // Each row describes the read as it happened.
        EXPECT_EQ(c.int64("SELECT count(*)" + ours +
                              " AND status = 'completed' AND command = 'SELECT'"
                              " AND relation = 'public.customers'"
                              " AND columns = ARRAY['name', 'phone']"
                              " AND categories @> ARRAY['name', 'phone']"
                              " AND categories <@ ARRAY['name', 'phone']"
                              " AND row_count = 1 AND query_text = $2"
                              " AND database_name = 'postgres' AND session_user_name = 'postgres'",
                          {prefix, kReadSql}),
                  kTotalReads);

        // Within one backend, event_id follows the order the statements ran in.
        EXPECT_EQ(c.int64("SELECT count(*) FROM (SELECT event_time, lag(event_time) OVER "
                          "(PARTITION BY backend_pid ORDER BY event_id) AS previous" +
                              ours + ") s WHERE event_time <= previous",
                          p),
                  0);

        // The whole trail: ids 1..max without holes, no gap rows.
        EXPECT_TRUE(trail_is_gapless_and_ordered(c));
        EXPECT_EQ(c.int64("SELECT count(*) FROM pii_audit.access_log WHERE kind = 'gap'"), 0);
    }

    // Runs a load to its end and waits until the worker stored it; before_ then counts it.
    void load_and_drain(const std::string& name) {
        ReadLoad load(unique_marker(name), {});
        load.start();
        load.join();
        ASSERT_EQ(load.errors(), "");
        bool drained = false;
        AuditStatus after =
            wait_for_drain(*admin_, before_.events_enqueued, kDrainTimeout, &drained);
        ASSERT_TRUE(drained) << describe(after);
        before_ = after;
    }

    std::unique_ptr<Connection> admin_;
    AuditStatus before_;
    int64_t max_id_before_ = 0;
};

TEST_F(ConcurrentReads, EveryReadIsRecordedExactlyOnceWithGaplessIds) {
    const std::string prefix = unique_marker("conc");
    ReadLoad load(prefix, {});
    load.start();
    load.join();
    ASSERT_EQ(load.errors(), "");
    ASSERT_EQ(load.completed(), kTotalReads);
    expect_exact_trail(load, prefix);
}

// Every event is found through the trail's indexes: by id (the groups' first_event_id, as
// _events_in and events_after read it), and, for events with subjects, through the subject index,
// both from its slices (written every 100 entries here) and from the groups after the last slice.
TEST_F(ConcurrentReads, TrailIndexesFindEveryEvent) {
    Connection& c = *admin_;
    c.exec("ALTER SYSTEM SET pii_audit.subject_index_slice = 100");
    c.exec("SELECT pg_reload_conf()");
    SqlOnExit reset(c, {"ALTER SYSTEM RESET pii_audit.subject_index_slice",
                        "SELECT pg_reload_conf()"});
    const int64_t first = max_event_id(c) + 1;
    ASSERT_NO_FATAL_FAILURE(load_and_drain("idx1"));
    ASSERT_NO_FATAL_FAILURE(load_and_drain("idx2"));
    const int64_t last = max_event_id(c);
    ASSERT_GE(last - first, 2 * kTotalReads);
    EXPECT_GT(c.int64("SELECT count(*) FROM pii_audit.trail_subject_slices "
                      "WHERE last_event_id >= $1",
                      {std::to_string(first)}),
              1)
        << "no slice of the subject index was written";
    int missing_by_id = 0, missing_by_subject = 0, checked = 0, with_subjects = 0;
    for (int64_t id = first; id <= last; id += 37, ++checked) {
        const std::string ids = std::to_string(id);
        Result r = c.exec("SELECT event_id, subjects[1] FROM "
                          "pii_audit._events_in($1::bigint - 1, $1::bigint)",
                          {ids});
        if (r.rows() != 1 || r.int64(0, 0) != id) {
            ++missing_by_id;
            continue;
        }
        if (r.is_null(0, 1)) continue;
        ++with_subjects;
        if (c.int64("SELECT count(*) FROM pii_audit._subject_groups($1::bigint) s "
                    "JOIN pii_audit.trail_groups g ON g.first_event_id = s.first_event_id "
                    "WHERE $2::bigint BETWEEN g.first_event_id "
                    "AND g.first_event_id + g.event_count - 1",
                    {r.text(0, 1), ids}) < 1)
            ++missing_by_subject;
    }
    EXPECT_EQ(missing_by_id, 0) << "of " << checked << " events looked up by event_id";
    EXPECT_GT(with_subjects, 10) << "the load read too few keyed rows to test the subject index";
    EXPECT_EQ(missing_by_subject, 0) << "of " << with_subjects << " events looked up by subject";
    // events_after hands out the same events in id order, without gaps.
    Result after = c.exec("SELECT min(event_id), max(event_id), count(*) FROM "
                          "pii_audit.events_after($1, 500)",
                          {std::to_string(first - 1)});
    EXPECT_EQ(after.int64(0, 0), first);
    EXPECT_EQ(after.int64(0, 1), first + 499);
    EXPECT_EQ(after.int64(0, 2), 500);
}

// The worker is stopped (SIGTERM, through pg_terminate_backend) twice while clients read; the
// postmaster restarts it and the new worker must carry on where the old one stopped.
TEST_F(ConcurrentReads, WorkerStoppedDuringLoadLosesAndDuplicatesNothing) {
    const std::string prefix = unique_marker("term");
    const int64_t pid0 = before_.worker_pid;
    ASSERT_NE(pid0, 0) << describe(before_);

    // Clients pause at 1/3 and 2/3 of their reads until the restarted worker is seen, so that
    // both stops fall inside the load whatever the machine's speed.
    const int gate1 = kReadsPerClient / 3, gate2 = 2 * kReadsPerClient / 3;
    ReadLoad load(prefix, {gate1, gate2});
    load.start();

    auto stop_worker_and_wait_for_new_one = [&](int64_t old_pid) -> int64_t {
        int64_t at_kill = load.completed();
        EXPECT_LT(at_kill, kTotalReads) << "the load was over before the worker was stopped";
        EXPECT_EQ(admin_->text("SELECT pg_terminate_backend($1)", {std::to_string(old_pid)}), "t")
            << "pg_terminate_backend(" << old_pid << ") did not signal the worker";
        AuditStatus status;
        bool restarted = poll_until(std::chrono::seconds(30), [&] {
            status = read_status(*admin_);
            return status.worker_pid != 0 && status.worker_pid != old_pid &&
                   status.state == "running";
        });
        EXPECT_TRUE(restarted) << "no new worker within 30 s after stopping " << old_pid << ": "
                               << describe(status);
        // The old process is gone, the new one is the pii_audit worker.
        EXPECT_EQ(admin_->int64("SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                                {std::to_string(old_pid)}),
                  0);
        EXPECT_EQ(admin_->text("SELECT backend_type FROM pg_stat_activity WHERE pid = $1",
                               {std::to_string(status.worker_pid)}),
                  "pii_audit worker");
        return restarted ? status.worker_pid : 0;
    };

    // First stop: while clients run between the start and the first gate.
    ASSERT_TRUE(load.wait_completed(int64_t{kClients} * gate1 / 2)) << load.errors();
    int64_t pid1 = stop_worker_and_wait_for_new_one(pid0);
    load.open_gate(0);
    ASSERT_NE(pid1, 0);

    // Second stop: while clients run between the two gates.
    ASSERT_TRUE(load.wait_completed(int64_t{kClients} * (gate1 + gate2) / 2)) << load.errors();
    int64_t pid2 = stop_worker_and_wait_for_new_one(pid1);
    load.open_gate(1);
    ASSERT_NE(pid2, 0);
    EXPECT_NE(pid2, pid0);

    load.join();
    ASSERT_EQ(load.errors(), "");
    ASSERT_EQ(load.completed(), kTotalReads);
    expect_exact_trail(load, prefix);
    EXPECT_EQ(read_status(*admin_).worker_pid, pid2) << "the worker restarted once more";
}

}  // namespace
}  // namespace pii_it
