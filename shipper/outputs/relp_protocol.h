// RELP frames (rsyslog's Reliable Event Logging Protocol, https://www.rsyslog.com/doc/relp.html):
//   TXNR SP COMMAND SP DATALEN [SP DATA] LF
// TXNR counts 1..999999999 and wraps to 1; a receiver answers each command with
// "TXNR rsp DATALEN CODE SP TEXT[LF DATA]" (CODE 200: accepted) and may send the hint
// "0 serverclose 0" before it closes the connection. No I/O here: unit-tested on its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace shipper::relp {

constexpr uint32_t kMaxTxnr = 999999999;
inline uint32_t next_txnr(uint32_t t) { return t >= kMaxTxnr ? 1 : t + 1; }

void append_frame(std::string& out, uint32_t txnr, std::string_view command, std::string_view data);

struct Frame {
    uint32_t txnr = 0;
    std::string command;
    std::string data;
};

// Collects received bytes and cuts them into frames. Throws std::runtime_error naming what is
// wrong with a malformed frame (the session is then unusable).
class FrameReader {
  public:
    void feed(const char* data, size_t n) { buffer_.append(data, n); }
    std::optional<Frame> next();

  private:
    std::string buffer_;
    size_t start_ = 0;
};

// A response's first line: "200 OK" -> {200, "OK"}. Throws std::runtime_error if malformed.
struct Response {
    int code = 0;
    std::string text;  // the rest of the first line
    std::string data;  // after the first LF (the offers of an "open" response)
};
Response parse_response(std::string_view data);

// Whether the offers of an "open" response (lines "name=value,value") enable `command`.
bool offers_command(std::string_view offers, std::string_view command);

}  // namespace shipper::relp
