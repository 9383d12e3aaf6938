// The group payload codec (see include/pii_audit/trail_group.h for the format).
#include "pii_audit/trail_group.h"

#include <cstring>

namespace pii_audit {
namespace {

void put_varint(std::string& out, std::uint64_t v) {
    while (v >= 0x80) {
        out.push_back(static_cast<char>((v & 0x7f) | 0x80));
        v >>= 7;
    }
    out.push_back(static_cast<char>(v));
}

std::uint64_t zigzag(std::int64_t v) {
    return (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63);
}

std::int64_t unzigzag(std::uint64_t v) {
    return static_cast<std::int64_t>(v >> 1) ^ -static_cast<std::int64_t>(v & 1);
}

constexpr std::uint8_t kStatusMask = 0x07;
constexpr std::uint8_t kTracked = 1u << 3;
constexpr std::uint8_t kTruncated = 1u << 4;
constexpr std::uint8_t kEstimated = 1u << 5;
constexpr std::uint8_t kHasRowCount = 1u << 6;
constexpr std::uint8_t kHasDetail = 1u << 7;

}  // namespace

void GroupEncoder::reset(std::int64_t base_time) {
    body_.clear();
    base_time_ = previous_time_ = base_time;
    count_ = 0;
}

void GroupEncoder::add(const GroupEvent& e) {
    // An event is assembled here and appended once: appending it byte by byte was most of the
    // encoder's cost. Hashes and details that do not fit go straight to body_.
    char buf[64];
    std::size_t at = 0;
    auto varint = [&](std::uint64_t v) {
        while (v >= 0x80) {
            buf[at++] = static_cast<char>((v & 0x7f) | 0x80);
            v >>= 7;
        }
        buf[at++] = static_cast<char>(v);
    };
    // Wrapping arithmetic: any pair of times encodes, and decodes back exactly.
    std::int64_t delta = static_cast<std::int64_t>(static_cast<std::uint64_t>(e.event_time) -
                                                   static_cast<std::uint64_t>(previous_time_));
    previous_time_ = e.event_time;
    varint(zigzag(delta));
    if (count_ == 0) {
        first_time_ = e.event_time;
        first_delta_size_ = body_.size() + at;
    }
    std::uint8_t flags = e.status & kStatusMask;
    if (e.tracked) flags |= kTracked;
    if (e.tracked && e.truncated) flags |= kTruncated;
    if (e.tracked && e.estimated) flags |= kEstimated;
    if (e.has_row_count) flags |= kHasRowCount;
    if (e.has_detail) flags |= kHasDetail;
    buf[at++] = static_cast<char>(flags);
    if (e.has_row_count) varint(e.row_count < 0 ? 0 : static_cast<std::uint64_t>(e.row_count));
    if (e.tracked) {
        varint(e.subject_count < 0 ? 0 : static_cast<std::uint64_t>(e.subject_count));
        std::size_t n = e.subjects.size() / 8;
        varint(n);
        // 4 varints of at most 10 bytes and the flags byte are in buf: room for 2 hashes.
        if (n > 2) {
            body_.append(buf, at);
            at = 0;
        }
        for (std::size_t i = 0; i < n; ++i) {
            std::uint64_t h;
            std::memcpy(&h, e.subjects.data() + i * 8, 8);
            char le[8];
            for (int b = 0; b < 8; ++b) le[b] = static_cast<char>((h >> (8 * b)) & 0xff);
            if (n > 2) {
                body_.append(le, 8);
            } else {
                std::memcpy(buf + at, le, 8);
                at += 8;
            }
        }
    }
    if (e.has_detail) {
        if (at > sizeof buf - 10) {
            body_.append(buf, at);
            at = 0;
        }
        varint(e.detail.size());
        body_.append(buf, at);
        at = 0;
        body_.append(e.detail.data(), e.detail.size());
    }
    body_.append(buf, at);
    ++count_;
}

bool group_may_hold_subject(std::string_view payload, std::int64_t min_time,
                            std::int64_t hash) noexcept {
    GroupDecoder decoder(payload, min_time);
    GroupEvent e;
    while (decoder.next(e)) {
        if (!e.tracked) continue;
        if (e.truncated) return true;
        const std::size_t n = e.subjects.size() / 8;
        for (std::size_t i = 0; i < n; ++i)
            if (subject_at(e.subjects, i) == hash) return true;
    }
    return decoder.error() != nullptr;
}

const char* group_status_name(std::uint8_t status) noexcept {
    switch (status) {
        case 1: return "completed";
        case 2: return "failed";
        case 3: return "denied";
        case 4: return "lost";
        default: return nullptr;
    }
}

std::string_view GroupEncoder::finish(std::int64_t min_time) {
    out_.clear();
    out_.push_back(static_cast<char>(kGroupPayloadVersion));
    put_varint(out_, count_);
    if (count_ == 0) return out_;
    const std::int64_t delta = static_cast<std::int64_t>(static_cast<std::uint64_t>(first_time_) -
                                                         static_cast<std::uint64_t>(min_time));
    put_varint(out_, zigzag(delta));
    out_.append(body_, first_delta_size_, std::string::npos);
    return out_;
}

GroupDecoder::GroupDecoder(std::string_view payload, std::int64_t min_time) noexcept
    : at_(reinterpret_cast<const unsigned char*>(payload.data())),
      end_(reinterpret_cast<const unsigned char*>(payload.data()) + payload.size()),
      time_(min_time) {
    if (at_ == end_) {
        fail("empty group payload");
        return;
    }
    if (*at_ != kGroupPayloadVersion) {
        fail("group payload of an unknown version");
        return;
    }
    ++at_;
    std::uint64_t n;
    if (!varint(n)) return;
    if (n > kMaxGroupEvents) {
        fail("group payload claims more events than a group holds");
        return;
    }
    count_ = static_cast<std::uint32_t>(n);
}

bool GroupDecoder::fail(const char* why) noexcept {
    if (error_ == nullptr) error_ = why;
    at_ = end_;
    count_ = read_;
    return false;
}

bool GroupDecoder::varint(std::uint64_t& out) noexcept {
    out = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (at_ == end_) return fail("group payload ends inside a number");
        std::uint8_t byte = *at_++;
        out |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
        if ((byte & 0x80) == 0) return true;
    }
    return fail("group payload holds an overlong number");
}

bool GroupDecoder::next(GroupEvent& e) noexcept {
    if (error_ != nullptr || read_ >= count_) {
        if (error_ == nullptr && at_ != end_) fail("group payload has bytes after its last event");
        return false;
    }
    std::uint64_t v;
    if (!varint(v)) return false;
    time_ = static_cast<std::int64_t>(static_cast<std::uint64_t>(time_) +
                                      static_cast<std::uint64_t>(unzigzag(v)));
    e = GroupEvent{};
    e.event_time = time_;
    if (at_ == end_) return fail("group payload ends inside an event");
    std::uint8_t flags = *at_++;
    e.status = flags & kStatusMask;
    e.tracked = (flags & kTracked) != 0;
    e.truncated = (flags & kTruncated) != 0;
    e.estimated = (flags & kEstimated) != 0;
    e.has_row_count = (flags & kHasRowCount) != 0;
    e.has_detail = (flags & kHasDetail) != 0;
    if (e.has_row_count) {
        if (!varint(v)) return false;
        e.row_count = static_cast<std::int64_t>(v);
    }
    if (e.tracked) {
        if (!varint(v)) return false;
        e.subject_count = static_cast<std::int64_t>(v);
        if (!varint(v)) return false;
        if (v > static_cast<std::uint64_t>(end_ - at_) / 8)
            return fail("group payload ends inside its subject hashes");
        e.subjects = std::string_view(reinterpret_cast<const char*>(at_), v * 8);
        at_ += v * 8;
    }
    if (e.has_detail) {
        if (!varint(v)) return false;
        if (v > static_cast<std::uint64_t>(end_ - at_))
            return fail("group payload ends inside a detail text");
        e.detail = std::string_view(reinterpret_cast<const char*>(at_), v);
        at_ += v;
    }
    ++read_;
    return true;
}

std::int64_t subject_at(std::string_view subjects, std::size_t i) noexcept {
    std::uint64_t h = 0;
    for (int b = 7; b >= 0; --b)
        h = (h << 8) | static_cast<unsigned char>(subjects[i * 8 + static_cast<std::size_t>(b)]);
    return static_cast<std::int64_t>(h);
}

}  // namespace pii_audit
