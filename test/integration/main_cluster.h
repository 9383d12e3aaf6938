// What the tests on the main cluster (audit database postgres, default settings) share: the
// labelled table they read and checks of the whole trail.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "pg_client.h"

namespace pii_it {

constexpr int kCustomerRows = 100;

// Creates (once; idempotent) the extension and table public.customers(id, name, phone) with
// kCustomerRows rows, name labelled 'name' and phone labelled 'phone, subject_key'. Then waits
// until the worker is running and has persisted everything queued so far.
void ensure_customers_schema(Connection& conn);

// A marker unique to this process and call, for pii_audit.end_user values: rows written by one
// test (or one repetition of it) are told apart from everything else in the trail.
std::string unique_marker(const std::string& what);

// The highest event_id in the trail (0 when empty).
int64_t max_event_id(Connection& conn);

// Every event_id from 1 to max is present exactly once, and recorded_at never goes backwards as
// event_id grows (ids are handed out in the order rows become visible).
testing::AssertionResult trail_is_gapless_and_ordered(Connection& conn);

constexpr std::chrono::seconds kDrainTimeout{60};

// Runs SQL when it goes out of scope (errors ignored), so that a failed assertion never leaves
// the main cluster's trail with a test's constraint on it.
class SqlOnExit {
  public:
    SqlOnExit(Connection& conn, std::vector<std::string> statements)
        : conn_(conn), statements_(std::move(statements)) {}
    SqlOnExit(const SqlOnExit&) = delete;
    SqlOnExit& operator=(const SqlOnExit&) = delete;
    ~SqlOnExit() {
        for (const std::string& sql : statements_) {
            try {
                conn_.exec(sql);
            } catch (...) {
            }
        }
    }

  private:
    Connection& conn_;
    std::vector<std::string> statements_;
};

}  // namespace pii_it
