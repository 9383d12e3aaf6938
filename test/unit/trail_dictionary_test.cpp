#include <gtest/gtest.h>

#include <set>
#include <string>

#include "pii_audit/trail_dictionary.h"

using namespace pii_audit;

namespace {

EventView read_event() {
    EventView e;
    e.header.kind = static_cast<std::uint8_t>(EventKind::kRead);
    e.header.source_encoding = 6;  // UTF8
    e.header.relation_oid = 16384;
    e.header.query_id = 42;
    e.header.flags = kFlagClientAddrSet;
    e.field[kDatabaseName] = "app";
    e.field[kSessionUser] = "clerk";
    e.field[kCurrentUser] = "clerk";
    e.field[kEndUser] = "clerk-0999";
    e.field[kApplicationName] = "crm";
    e.field[kClientAddr] = "10.0.0.7";
    e.field[kServerName] = "db-prod-1";
    e.field[kCommand] = "SELECT";
    e.field[kRelation] = "public.customers";
    e.field[kColumns] = std::string_view("name\0phone\0", 11);
    e.field[kCategories] = std::string_view("name\0phone\0", 11);
    e.field[kQueryText] = "SELECT name, phone FROM customers WHERE id = $1";
    return e;
}

std::string skey(const EventView& e) {
    std::string k;
    session_key(e, k);
    return k;
}

std::string qkey(const EventView& e) {
    std::string k;
    statement_key(e, k);
    return k;
}

}  // namespace

TEST(TrailDictionaryKeys, EverySessionFieldMatters) {
    const EventView base = read_event();
    std::set<std::string> keys{skey(base)};
    for (EventField f : {kDatabaseName, kSessionUser, kCurrentUser, kEndUser, kApplicationName,
                         kClientAddr, kServerName}) {
        EventView e = base;
        e.field[f] = "other";
        EXPECT_TRUE(keys.insert(skey(e)).second) << "field " << f;
    }
    EventView other_encoding = base;
    other_encoding.header.source_encoding = 8;
    EXPECT_TRUE(keys.insert(skey(other_encoding)).second);
    // A Unix-socket connection (no address) is not the same as an empty address.
    EventView no_addr = base, empty_addr = base;
    no_addr.header.flags = 0;
    no_addr.field[kClientAddr] = "";
    empty_addr.field[kClientAddr] = "";
    EXPECT_NE(skey(no_addr), skey(empty_addr));
}

TEST(TrailDictionaryKeys, StatementFieldsDoNotChangeTheSessionAndBack) {
    const EventView base = read_event();
    EventView e = base;
    e.field[kQueryText] = "SELECT 1";
    e.header.row_count = 99;
    e.header.event_time = 12345;
    e.header.backend_pid = 777;
    e.header.nesting_level = 2;
    EXPECT_EQ(skey(base), skey(e));
    EXPECT_NE(qkey(base), qkey(e));
    EventView f = base;
    f.field[kEndUser] = "clerk-0001";
    EXPECT_EQ(qkey(base), qkey(f));
}

TEST(TrailDictionaryKeys, EveryStatementFieldMatters) {
    const EventView base = read_event();
    std::set<std::string> keys{qkey(base)};
    for (EventField f : {kCommand, kRelation, kColumns, kCategories, kQueryText}) {
        EventView e = base;
        e.field[f] = "other";
        EXPECT_TRUE(keys.insert(qkey(e)).second) << "field " << f;
    }
    EventView e = base;
    e.header.relation_oid = 1;
    EXPECT_TRUE(keys.insert(qkey(e)).second);
    e = base;
    e.header.query_id = 0;
    EXPECT_TRUE(keys.insert(qkey(e)).second);
    e = base;
    e.header.flags |= kFlagQueryTruncated;
    EXPECT_TRUE(keys.insert(qkey(e)).second);
    e = base;
    e.header.source_encoding = 8;
    EXPECT_TRUE(keys.insert(qkey(e)).second);
}

TEST(TrailDictionaryKeys, FieldBoundariesAreKept) {
    EventView a = read_event(), b = read_event();
    a.field[kSessionUser] = "ab";
    a.field[kCurrentUser] = "c";
    b.field[kSessionUser] = "a";
    b.field[kCurrentUser] = "bc";
    EXPECT_NE(skey(a), skey(b));
    a = read_event();
    b = read_event();
    a.field[kRelation] = "public.t";
    a.field[kColumns] = std::string_view("x\0", 2);
    b.field[kRelation] = "public.tx";
    b.field[kColumns] = std::string_view("\0", 1);
    EXPECT_NE(qkey(a), qkey(b));
}

TEST(TrailDictionaryKeys, LoginsAndGapsAreVariantsOfTheirOwn) {
    EventView login = read_event();
    login.header.kind = static_cast<std::uint8_t>(EventKind::kLogin);
    login.field[kCommand] = "LOGIN";
    EventView other_login = login;
    other_login.field[kQueryText] = "ignored";
    other_login.header.relation_oid = 7;
    // A login stores only its command.
    EXPECT_EQ(qkey(login), qkey(other_login));
    EventView read = read_event();
    read.field[kCommand] = "LOGIN";
    read.field[kRelation] = "";
    read.field[kColumns] = "";
    read.field[kCategories] = "";
    read.field[kQueryText] = "";
    read.header.relation_oid = 0;
    read.header.query_id = 0;
    EXPECT_NE(qkey(login), qkey(read));

    EventView only_db;
    only_db.field[kDatabaseName] = "postgres";
    std::string gap;
    gap_session_key("postgres", "db-prod-1", gap);
    EXPECT_NE(gap, skey(only_db));
    std::string other_gap;
    gap_session_key("audit", "db-prod-1", other_gap);
    EXPECT_NE(gap, other_gap);
    // A gap on a standby is not the primary's gap.
    std::string standby_gap;
    gap_session_key("postgres", "db-replica-1", standby_gap);
    EXPECT_NE(gap, standby_gap);
}

TEST(TrailDictionary, RemembersAndFinds) {
    TrailDictionary d(1 << 20);
    EXPECT_EQ(d.find("a"), 0);
    d.remember("a", 1);
    d.remember(std::string(100, 'b'), 2);
    EXPECT_EQ(d.find("a"), 1);
    EXPECT_EQ(d.find(std::string(100, 'b')), 2);
    EXPECT_EQ(d.find(std::string(99, 'b')), 0);
    d.remember("a", 3);
    EXPECT_EQ(d.find("a"), 3);
    EXPECT_EQ(d.size(), 2u);
    EXPECT_EQ(d.bytes(), 101u);
}

TEST(TrailDictionary, ForgetsEverythingPastItsBound) {
    TrailDictionary d(1000);
    for (int i = 1; i <= 10; ++i) d.remember(std::string(99, 'a') + static_cast<char>('0' + i % 10), i);
    EXPECT_EQ(d.size(), 10u);
    EXPECT_EQ(d.bytes(), 1000u);
    d.remember("next", 11);
    EXPECT_EQ(d.size(), 1u);
    EXPECT_EQ(d.find("next"), 11);
    EXPECT_EQ(d.find(std::string(99, 'a') + '1'), 0);
    // Many keys through a small bound: always bounded, the newest always found.
    for (int i = 0; i < 10000; ++i) {
        std::string key = "key-" + std::to_string(i);
        d.remember(key, i + 1);
        ASSERT_LE(d.bytes(), 1000u);
        ASSERT_EQ(d.find(key), i + 1);
    }
}
