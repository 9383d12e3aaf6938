// What events of one connection and of one statement have in common is stored once, in
// pii_audit.trail_sessions and pii_audit.trail_statements, and each event row refers to it by id.
// The worker remembers which ids it has stored for which values, so a repeated session or
// statement costs a hash lookup instead of a row. Keys are the exact bytes an event carries for
// that part (with its source encoding, since stored text is converted from it), so two events
// share an id only if they would have stored the same values.
#pragma once
#include "pii_audit/pg_free.h"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>

#include "pii_audit/event_record.h"

namespace pii_audit {

// The session part: database, session and current user, end user, application, client address,
// server.
void session_key(const EventView& event, std::string& out);
// The session of a gap row the worker writes itself: the audit database's name and the server's.
void gap_session_key(std::string_view database_name, std::string_view server_name,
                     std::string& out);
// The statement part: command, relation, columns, categories, query id, text and truncation. A
// login has only a command.
void statement_key(const EventView& event, std::string& out);

// Value -> id for the rows already stored. Bounded: once the remembered keys pass max_bytes the
// dictionary forgets everything and starts again; a value seen again then gets a new row and
// id, which costs a row but never a wrong answer.
class TrailDictionary {
public:
    explicit TrailDictionary(std::size_t max_bytes) : max_bytes_(max_bytes) {}

    // The id stored for key, or 0 if none is known.
    std::int64_t find(std::string_view key) const;
    // Remembers that key's row was stored with id (> 0).
    void remember(std::string_view key, std::int64_t id);
    void clear();

    std::size_t size() const { return ids_.size(); }
    std::size_t bytes() const { return bytes_; }

private:
    // The map's keys view the strings in keys_, which a deque never moves.
    std::deque<std::string> keys_;
    std::unordered_map<std::string_view, std::int64_t> ids_;
    std::size_t bytes_ = 0;
    std::size_t max_bytes_;
};

}  // namespace pii_audit
