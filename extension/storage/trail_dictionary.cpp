#include "pii_audit/trail_dictionary.h"

#include <cstring>

namespace pii_audit {
namespace {

template <class T>
void append_fixed(std::string& out, T value) {
    char bytes[sizeof value];
    std::memcpy(bytes, &value, sizeof value);
    out.append(bytes, sizeof value);
}

// Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
void append_field(std::string& out, std::string_view value) {
    append_fixed(out, static_cast<std::uint32_t>(value.size()));
    out.append(value);
}

// Which variant of a part the key describes: rows of different variants store different
// columns as NULL and must never share an id.
constexpr char kEventSession = 'S';
constexpr char kGapSession = 'G';
constexpr char kLoginStatement = 'L';
constexpr char kStatement = 'Q';

}  // namespace

void session_key(const EventView& event, std::string& out) {
    out.clear();
    out.push_back(kEventSession);
    append_fixed(out, event.header.source_encoding);
    for (EventField f : {kDatabaseName, kSessionUser, kCurrentUser, kEndUser, kApplicationName})
        append_field(out, event.field[f]);
    // An address that is not set (a Unix socket) is stored as NULL, unlike an empty one.
    out.push_back((event.header.flags & kFlagClientAddrSet) != 0 ? '1' : '0');
    append_field(out, event.field[kClientAddr]);
    append_field(out, event.field[kServerName]);
}

void gap_session_key(std::string_view database_name, std::string_view server_name,
                     std::string& out) {
    out.clear();
    out.push_back(kGapSession);
    append_field(out, database_name);
    append_field(out, server_name);
}

void statement_key(const EventView& event, std::string& out) {
    out.clear();
    bool login = event.header.kind == static_cast<std::uint8_t>(EventKind::kLogin);
    out.push_back(login ? kLoginStatement : kStatement);
    append_fixed(out, event.header.source_encoding);
    append_field(out, event.field[kCommand]);
    if (login) return;
    append_fixed(out, event.header.relation_oid);
    append_fixed(out, event.header.query_id);
    out.push_back((event.header.flags & kFlagQueryTruncated) != 0 ? '1' : '0');
    for (EventField f : {kRelation, kColumns, kCategories, kQueryText}) append_field(out, event.field[f]);
}

std::int64_t TrailDictionary::find(std::string_view key) const {
    auto it = ids_.find(key);
    return it == ids_.end() ? 0 : it->second;
}

void TrailDictionary::remember(std::string_view key, std::int64_t id) {
    if (auto it = ids_.find(key); it != ids_.end()) {
        it->second = id;
        return;
    }
    if (bytes_ + key.size() > max_bytes_) clear();
    const std::string& stored = keys_.emplace_back(key);
    ids_.emplace(stored, id);
    bytes_ += stored.size();
}

void TrailDictionary::clear() {
    ids_.clear();
    keys_.clear();
    bytes_ = 0;
}

}  // namespace pii_audit
