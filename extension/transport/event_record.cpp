#include "pii_audit/event_record.h"

#include <cstring>

namespace pii_audit {

std::size_t encoded_size(const EventView& event) {
    std::size_t size = sizeof(EventHeader);
    for (const auto& f : event.field) size += f.size();
    return size;
}

void encode_event(const EventView& event, char* out) {
    EventHeader header = event.header;
    header.magic = kEventMagic;
    for (int i = 0; i < kFieldCount; ++i)
        header.field_length[i] = static_cast<std::uint32_t>(event.field[i].size());
    std::memcpy(out, &header, sizeof header);
    out += sizeof header;
    for (const auto& f : event.field) {
        if (!f.empty()) std::memcpy(out, f.data(), f.size());
        out += f.size();
    }
}

bool decode_event(const char* data, std::size_t size, EventView& out) {
    if (size < sizeof(EventHeader)) return false;
    std::memcpy(&out.header, data, sizeof(EventHeader));
    if (out.header.magic != kEventMagic) return false;
    std::size_t offset = sizeof(EventHeader);
    for (int i = 0; i < kFieldCount; ++i) {
        std::size_t len = out.header.field_length[i];
        if (len > size - offset) return false;
        out.field[i] = std::string_view(data + offset, len);
        offset += len;
    }
    return offset == size;
}

}  // namespace pii_audit
