// The three kinds of input the scorer learns from. They hold views only: the caller (the
// background worker or the replay tool) owns the bytes for the duration of one observe() call,
// so feeding an event costs no allocation.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "pii_audit/pg_free.h"

namespace pii_audit::analysis {

// A read-only view over a contiguous array; C++17 has no std::span.
template <class T>
struct Span {
    const T* data = nullptr;
    std::size_t size = 0;

    const T* begin() const { return data; }
    const T* end() const { return data + size; }
    bool empty() const { return size == 0; }
};

enum class Command : std::uint8_t { select, copy, insert, update, delete_, other };
enum class AccessStatus : std::uint8_t { ok, denied, error };

// One statement execution that read labelled columns of one relation (a row of the access trail).
struct AccessEvent {
    std::int64_t time_us = 0;     // microseconds since the Unix epoch, UTC
    std::uint64_t event_id = 0;   // reported back as alert evidence; 0 if unknown
    std::string_view actor;       // end user if the application set one, else the role
    std::string_view peer_group;  // empty: keep the actor's previous group (or "default")
    std::string_view application;
    std::string_view client_addr;
    std::string_view relation;
    std::string_view
        session;  // any stable id of the connection (e.g. pid + backend start); may be empty
    Command command = Command::select;
    Span<std::string_view> categories;  // category names of the columns read
    Span<std::string_view> subjects;    // opaque ids of the people whose rows were read
    std::int64_t rows = 0;
    AccessStatus status = AccessStatus::ok;
};

// A connection attempt, from the ClientAuthentication hook.
struct LoginEvent {
    std::int64_t time_us = 0;
    std::uint64_t event_id = 0;
    std::string_view actor;
    std::string_view peer_group;
    std::string_view client_addr;
    bool success = false;
};

// A declared business reason: this actor has a ticket, appointment, ... concerning this subject.
struct RelationEvent {
    std::int64_t time_us = 0;
    std::string_view actor;
    std::string_view subject;
};

}  // namespace pii_audit::analysis
