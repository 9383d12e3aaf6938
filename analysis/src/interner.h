// Dense ids for names (actors, peer groups, categories). Lookups take a string_view and never
// allocate; only a first sighting copies the name.
#pragma once
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "pii_audit/analysis/sketches.h"

namespace pii_audit::analysis {

class StringInterner {
  public:
    static constexpr std::uint32_t kAbsent = 0xffffffffu;

    std::uint32_t find(std::string_view s) const { return find_hashed(s, hash_bytes(s)); }

    std::uint32_t intern(std::string_view s) {
        const std::uint64_t h = hash_bytes(s);
        const std::uint32_t found = find_hashed(s, h);
        if (found != kAbsent) return found;
        if ((names_.size() + 1) * 4 > slots_.size() * 3) grow();
        const auto id = static_cast<std::uint32_t>(names_.size());
        names_.emplace_back(s);  // deque: earlier strings never move, views stay valid
        place(id, h);
        return id;
    }

    std::string_view name(std::uint32_t id) const { return names_[id]; }
    std::size_t size() const { return names_.size(); }

  private:
    std::uint32_t find_hashed(std::string_view s, std::uint64_t h) const {
        if (slots_.empty()) return kAbsent;
        const std::size_t mask = slots_.size() - 1;
        for (std::size_t i = h & mask;; i = (i + 1) & mask) {
            const std::uint32_t slot = slots_[i];
            if (slot == 0) return kAbsent;
            if (names_[slot - 1] == s) return slot - 1;
        }
    }
    void place(std::uint32_t id, std::uint64_t h) {
        const std::size_t mask = slots_.size() - 1;
        std::size_t i = h & mask;
        while (slots_[i] != 0) i = (i + 1) & mask;
        slots_[i] = id + 1;
    }
    void grow() {
        slots_.assign(slots_.empty() ? 16 : slots_.size() * 2, 0);
        for (std::uint32_t id = 0; id < names_.size(); ++id) place(id, hash_bytes(names_[id]));
    }

    std::deque<std::string> names_;
    std::vector<std::uint32_t> slots_;  // id + 1; 0 = empty
};

}  // namespace pii_audit::analysis
