// What the tests on the main cluster (audit database postgres, default settings) share: the
// labelled table they read and checks of the whole trail.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>

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

}  // namespace pii_it
