#include "digest_records.h"

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <vector>

namespace shipper {
namespace {

[[noreturn]] void damaged(const std::string& why) {
    throw std::runtime_error("a damaged digest record: " + why);
}

int64_t event_id_of(std::string_view text) {
    if (text.empty() || text.size() > 18)
        damaged("the event id '" + std::string(text) + "' is not a number");
    int64_t v = 0;
    for (char c : text) {
        if (c < '0' || c > '9') damaged("the event id '" + std::string(text) + "' is not a number");
        v = v * 10 + (c - '0');
    }
    if (v <= 0) damaged("the event id is 0");
    return v;
}

std::string digest_of(std::string_view text) {
    bool ok = text.size() == 64;
    for (char c : text) ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
    if (!ok)
        damaged("the digest '" + std::string(text.substr(0, 80)) +
                "' is not 64 lowercase hex digits");
    return std::string(text);
}

// The value after `key` (which includes its '='), up to `end` or the end of the line.
std::optional<std::string_view> field(std::string_view s, std::string_view key, char end) {
    size_t at = s.find(key);
    if (at == std::string_view::npos) return std::nullopt;
    std::string_view v = s.substr(at + key.size());
    return v.substr(0, v.find(end));
}

// Header fields of CEF/LEEF: split on '|' not escaped by '\', at most n.
std::vector<std::string_view> header_fields(std::string_view s, size_t n) {
    std::vector<std::string_view> out;
    size_t start = 0;
    for (size_t i = 0; i < s.size() && out.size() < n; ++i) {
        if (s[i] == '\\') {
            ++i;
        } else if (s[i] == '|') {
            out.push_back(s.substr(start, i - start));
            start = i + 1;
        }
    }
    return out;
}

std::optional<DigestRecord> from_json(std::string_view line) {
    // Cheap test first: every digest record names its dataset.
    if (line.find("pii_audit.digests") == std::string_view::npos) return std::nullopt;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) damaged("not valid JSON");
    const nlohmann::json* p = nullptr;
    if (j.contains("pii_audit") && j["pii_audit"].is_object())
        p = &j["pii_audit"];  // json (ECS)
    else if (j.contains("unmapped") && j["unmapped"].is_object() &&
             j["unmapped"].contains("pii_audit") && j["unmapped"]["pii_audit"].is_object())
        p = &j["unmapped"]["pii_audit"];  // ocsf
    bool dataset = (j.contains("event") && j["event"].is_object() &&
                    j["event"].value("dataset", "") == "pii_audit.digests") ||
                   (j.contains("metadata") && j["metadata"].is_object() &&
                    j["metadata"].value("log_name", "") == "pii_audit.digests");
    if (!dataset) return std::nullopt;  // an event whose text mentions the name
    if (p == nullptr || !p->contains("kind") || (*p)["kind"] != "digest")
        damaged("no pii_audit object of kind digest");
    if (!p->contains("event_id") || !(*p)["event_id"].is_number_integer())
        damaged("no integer event_id");
    if (!p->contains("digest") || !(*p)["digest"].is_string()) damaged("no digest");
    int64_t id = (*p)["event_id"].get<int64_t>();
    if (id <= 0) damaged("the event id is not positive");
    return DigestRecord{id, digest_of((*p)["digest"].get<std::string>())};
}

std::optional<DigestRecord> from_cef(std::string_view line) {
    auto h = header_fields(line, 7);
    if (h.size() < 7 || h[1] != "pii_audit" || h[4] != "digest") return std::nullopt;
    std::string_view ext = line.substr(h[6].data() + h[6].size() + 1 - line.data());
    if (ext.find("cn1Label=eventId") == std::string_view::npos ||
        ext.find("cs1Label=digest") == std::string_view::npos)
        damaged("no cn1Label=eventId and cs1Label=digest");
    auto id = field(ext, " cn1=", ' '), digest = field(ext, " cs1=", ' ');
    if (!id || !digest) damaged("no cn1 (event id) or cs1 (digest)");
    return DigestRecord{event_id_of(*id), digest_of(*digest)};
}

std::optional<DigestRecord> from_leef(std::string_view line) {
    auto h = header_fields(line, 6);
    if (h.size() < 5 || h[1] != "pii_audit" || h[4] != "digest") return std::nullopt;
    auto id = field(line, "\teventId=", '\t'), digest = field(line, "\tdigest=", '\t');
    if (!id || !digest) damaged("no eventId or digest attribute");
    return DigestRecord{event_id_of(*id), digest_of(*digest)};
}

// "<PRI>1 TIMESTAMP HOST APP-NAME PROCID MSGID REST": the fields up to MSGID, and REST.
bool syslog_header(std::string_view line, std::string_view& app, std::string_view& msgid,
                   std::string_view& rest) {
    if (line.size() < 4 || line[0] != '<') return false;
    size_t close = line.find('>');
    if (close == std::string_view::npos || close > 4 || line.substr(close + 1, 2) != "1 ")
        return false;
    std::string_view s = line.substr(close + 3);
    std::string_view f[5];
    for (int k = 0; k < 5; ++k) {
        size_t sp = s.find(' ');
        if (sp == std::string_view::npos) return false;
        f[k] = s.substr(0, sp);
        s = s.substr(sp + 1);
    }
    app = f[2];
    msgid = f[4];
    rest = s;
    return true;
}

}  // namespace

std::optional<DigestRecord> parse_digest_record(std::string_view line) {
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
    std::string_view app, msgid, rest;
    if (syslog_header(line, app, msgid, rest)) {
        if (app != "pii_audit") return std::nullopt;
        if (rest.rfind("[pii_audit@32473 ", 0) == 0) {  // an rfc5424 line as exported
            if (msgid != "digest") return std::nullopt;
            std::string_view sd = rest.substr(0, rest.find("] "));
            auto id = field(sd, " event_id=\"", '"'), digest = field(sd, " digest=\"", '"');
            if (!id || !digest) damaged("no event_id or digest in its structured data");
            return DigestRecord{event_id_of(*id), digest_of(*digest)};
        }
        // Another format wrapped by the shipper: "- LINE" (no structured data).
        if (rest.rfind("- ", 0) != 0) return std::nullopt;
        line = rest.substr(2);
        if (msgid != "digest") return std::nullopt;
        if (!line.empty() && line[0] == '{') {
            auto r = from_json(line);
            if (!r) damaged("MSGID digest, but the JSON is no digest record");
            return r;
        }
    }
    if (!line.empty() && line[0] == '{') return from_json(line);
    if (line.rfind("CEF:", 0) == 0) return from_cef(line);
    if (line.rfind("LEEF:", 0) == 0) return from_leef(line);
    return std::nullopt;
}

}  // namespace shipper
