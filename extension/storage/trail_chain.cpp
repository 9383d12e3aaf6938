// The trail's hash chain (see include/pii_audit/trail_chain.h for the layout).
// SHA256_Init and friends are deprecated in OpenSSL 3 in favour of EVP, which allocates a
// context per digest; the low-level calls need none and use the same SHA extensions.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "pii_audit/trail_chain.h"

#include <openssl/sha.h>

namespace pii_audit::chain {
namespace {

static_assert(sizeof(SHA256_CTX) <= 128, "Hasher::state_ is too small for SHA256_CTX");

SHA256_CTX* ctx(unsigned char* state) { return reinterpret_cast<SHA256_CTX*>(state); }

constexpr unsigned char kNull = 0x00;
constexpr unsigned char kPresent = 0x01;

}  // namespace

Hasher::Hasher(Tag tag) noexcept {
    SHA256_Init(ctx(state_));
    const unsigned char head[2] = {static_cast<unsigned char>(tag), kVersion};
    raw(head, 2);
}

void Hasher::raw(const void* data, std::size_t size) noexcept {
    SHA256_Update(ctx(state_), data, size);
}

void Hasher::u32(std::uint32_t v) noexcept {
    unsigned char b[4];
    for (int i = 0; i < 4; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
    raw(b, 4);
}

void Hasher::null() noexcept { raw(&kNull, 1); }

void Hasher::int64(std::int64_t v) noexcept {
    unsigned char b[9];
    b[0] = kPresent;
    const auto u = static_cast<std::uint64_t>(v);
    for (int i = 0; i < 8; ++i) b[1 + i] = static_cast<unsigned char>(u >> (8 * i));
    raw(b, 9);
}

void Hasher::int32(std::int32_t v) noexcept {
    raw(&kPresent, 1);
    u32(static_cast<std::uint32_t>(v));
}

void Hasher::boolean(bool v) noexcept {
    const unsigned char b[2] = {kPresent, static_cast<unsigned char>(v ? 1 : 0)};
    raw(b, 2);
}

void Hasher::text(std::string_view v) noexcept {
    raw(&kPresent, 1);
    item(v);
}

void Hasher::begin_list(std::uint32_t n) noexcept {
    raw(&kPresent, 1);
    u32(n);
}

void Hasher::item(std::string_view v) noexcept {
    u32(static_cast<std::uint32_t>(v.size()));
    raw(v.data(), v.size());
}

void Hasher::int64_item(std::int64_t v) noexcept {
    unsigned char b[8];
    const auto u = static_cast<std::uint64_t>(v);
    for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(u >> (8 * i));
    raw(b, 8);
}

void Hasher::inet(std::uint8_t family, std::uint8_t bits, const unsigned char* address,
                  std::size_t size) noexcept {
    const unsigned char head[3] = {kPresent, family, bits};
    raw(head, 3);
    raw(address, size);
}

void Hasher::digest(const Digest& d) noexcept {
    raw(&kPresent, 1);
    raw(d.bytes, kDigestSize);
}

Digest Hasher::finish() noexcept {
    Digest d;
    SHA256_Final(d.bytes, ctx(state_));
    return d;
}

Digest group_digest(const GroupFields& g) noexcept {
    Hasher h(Tag::kGroup);
    h.int64(g.first_event_id);
    h.int32(g.event_count);
    h.int64(g.min_time);
    h.int64(g.max_time);
    h.int64(g.recorded_at);
    h.text(g.kind);
    if (g.has_backend_pid)
        h.int32(g.backend_pid);
    else
        h.null();
    if (g.has_nesting_level)
        h.int32(g.nesting_level);
    else
        h.null();
    h.digest(g.session);
    if (g.has_statement)
        h.digest(g.statement);
    else
        h.null();
    h.text(g.payload);
    return h.finish();
}

Digest batch_digest(const Digest& previous, std::int64_t first_event_id, std::int64_t last_event_id,
                    const Digest* groups, std::size_t ngroups) noexcept {
    Hasher h(Tag::kBatch);
    h.digest(previous);
    h.int64(first_event_id);
    h.int64(last_event_id);
    h.int32(static_cast<std::int32_t>(ngroups));
    for (std::size_t i = 0; i < ngroups; ++i) h.digest(groups[i]);
    return h.finish();
}

std::uint64_t digest_prefix(const Digest& d) noexcept {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | d.bytes[i];
    return v;
}

void group_entry(std::uint32_t event_count, const Digest& group, unsigned char* out) noexcept {
    out[0] = static_cast<unsigned char>(event_count & 0xff);
    out[1] = static_cast<unsigned char>((event_count >> 8) & 0xff);
    std::memcpy(out + 2, group.bytes, 8);
}

bool read_group_entry(std::string_view entries, std::size_t i, std::uint32_t* event_count,
                      std::uint64_t* prefix) noexcept {
    if (i >= entries.size() / kGroupEntrySize) return false;
    const auto* p = reinterpret_cast<const unsigned char*>(entries.data()) + i * kGroupEntrySize;
    *event_count = static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8;
    std::uint64_t v = 0;
    for (int b = 7; b >= 0; --b) v = (v << 8) | p[2 + b];
    *prefix = v;
    return true;
}

void to_hex(const Digest& d, char* out) noexcept {
    static const char digits[] = "0123456789abcdef";
    for (std::size_t i = 0; i < kDigestSize; ++i) {
        out[2 * i] = digits[d.bytes[i] >> 4];
        out[2 * i + 1] = digits[d.bytes[i] & 0xf];
    }
    out[2 * kDigestSize] = '\0';
}

bool from_hex(std::string_view hex, Digest* d) noexcept {
    if (hex.size() != 2 * kDigestSize) return false;
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    for (std::size_t i = 0; i < kDigestSize; ++i) {
        int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        d->bytes[i] = static_cast<unsigned char>(hi << 4 | lo);
    }
    return true;
}

}  // namespace pii_audit::chain
