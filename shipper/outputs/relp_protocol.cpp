#include "relp_protocol.h"

#include <stdexcept>

namespace shipper::relp {
namespace {

constexpr size_t kMaxDataLen = 16 << 20;  // far above any answer; a guard against garbage

std::string printable(std::string_view s) {
    std::string out;
    for (char c : s.substr(0, 60)) out += (c >= 32 && c < 127) ? c : '?';
    return out;
}

}  // namespace

void append_frame(std::string& out, uint32_t txnr, std::string_view command,
                  std::string_view data) {
    out += std::to_string(txnr);
    out += ' ';
    out += command;
    out += ' ';
    out += std::to_string(data.size());
    if (!data.empty()) {
        out += ' ';
        out += data;
    }
    out += '\n';
}

std::optional<Frame> FrameReader::next() {
    std::string_view rest(buffer_);
    rest.remove_prefix(start_);
    // Header: three space-separated fields, the last ended by SP or LF.
    size_t sp1 = rest.find(' ');
    if (sp1 == std::string_view::npos) {
        if (rest.size() > 9) throw std::runtime_error("malformed RELP frame: " + printable(rest));
        return std::nullopt;
    }
    size_t sp2 = rest.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos) {
        if (rest.size() > 64) throw std::runtime_error("malformed RELP frame: " + printable(rest));
        return std::nullopt;
    }
    size_t len_end = sp2 + 1;
    while (len_end < rest.size() && rest[len_end] >= '0' && rest[len_end] <= '9') ++len_end;
    if (len_end == rest.size()) {
        if (len_end - sp2 > 10)
            throw std::runtime_error("malformed RELP frame: " + printable(rest));
        return std::nullopt;
    }
    std::string_view txnr_text = rest.substr(0, sp1),
                     len_text = rest.substr(sp2 + 1, len_end - sp2 - 1);
    bool digits = !txnr_text.empty() && txnr_text.size() <= 9 && !len_text.empty() &&
                  len_text.size() <= 9 && (rest[len_end] == ' ' || rest[len_end] == '\n');
    for (char c : txnr_text) digits = digits && c >= '0' && c <= '9';
    if (!digits || sp2 == sp1 + 1)
        throw std::runtime_error("malformed RELP frame: " + printable(rest));
    size_t len = std::stoul(std::string(len_text));
    if (len > kMaxDataLen) throw std::runtime_error("RELP frame too large: " + printable(rest));
    size_t data_start = len_end + (len > 0 ? 1 : 0);
    if (len > 0 && rest[len_end] != ' ')
        throw std::runtime_error("malformed RELP frame: " + printable(rest));
    if (rest.size() < data_start + len + 1) return std::nullopt;
    if (rest[data_start + len] != '\n')
        throw std::runtime_error("RELP frame without its trailer: " + printable(rest));
    Frame f;
    f.txnr = static_cast<uint32_t>(std::stoul(std::string(txnr_text)));
    f.command = std::string(rest.substr(sp1 + 1, sp2 - sp1 - 1));
    f.data = std::string(rest.substr(data_start, len));
    start_ += data_start + len + 1;
    if (start_ == buffer_.size()) {
        buffer_.clear();
        start_ = 0;
    } else if (start_ > (64 << 10)) {
        buffer_.erase(0, start_);
        start_ = 0;
    }
    return f;
}

Response parse_response(std::string_view data) {
    if (data.size() < 3 || data[0] < '0' || data[0] > '9' || data[1] < '0' || data[1] > '9' ||
        data[2] < '0' || data[2] > '9' || (data.size() > 3 && data[3] != ' ' && data[3] != '\n'))
        throw std::runtime_error("malformed RELP response: " + printable(data));
    Response r;
    r.code = (data[0] - '0') * 100 + (data[1] - '0') * 10 + (data[2] - '0');
    std::string_view rest = data.size() > 4 && data[3] == ' ' ? data.substr(4) : std::string_view();
    if (data.size() > 3 && data[3] == '\n') rest = data.substr(3);
    size_t lf = rest.find('\n');
    r.text = std::string(rest.substr(0, lf));
    if (lf != std::string_view::npos) r.data = std::string(rest.substr(lf + 1));
    return r;
}

bool offers_command(std::string_view offers, std::string_view command) {
    while (!offers.empty()) {
        size_t lf = offers.find('\n');
        std::string_view line = offers.substr(0, lf);
        offers = lf == std::string_view::npos ? std::string_view() : offers.substr(lf + 1);
        if (line.substr(0, 9) != "commands=") continue;
        line.remove_prefix(9);
        while (!line.empty()) {
            size_t comma = line.find(',');
            if (line.substr(0, comma) == command) return true;
            line = comma == std::string_view::npos ? std::string_view() : line.substr(comma + 1);
        }
    }
    return false;
}

}  // namespace shipper::relp
