// A destination of the shipped lines. The shipper writes a batch, flushes it with the position
// it reaches, and moves its checkpoint to what the destination has confirmed, never further:
// what is written but not confirmed is fetched from the trail again after a failure.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "checkpoint.h"
#include "options.h"

namespace shipper {

struct Position {
    int64_t event_id = 0;
    int64_t alert_id = 0;
    bool operator==(const Position& o) const {
        return event_id == o.event_id && alert_id == o.alert_id;
    }
    bool operator!=(const Position& o) const { return !(*this == o); }
};

struct Record {
    bool alert = false;
    int64_t id = 0;  // event_id, alert_event_id, or for a digest the event its batch ends at
    std::string_view line;
    bool digest = false;  // a digest record: moves no position
};

class Output {
  public:
    virtual ~Output() = default;
    // Once, before the first connect, with the checkpoint of the last run (or a fresh one).
    // Returns true if it changed the checkpoint, which must then be saved before anything is sent.
    virtual bool restore(Checkpoint& checkpoint) {
        confirmed_ = {checkpoint.event_id, checkpoint.alert_id};
        return false;
    }
    // After a failure, before the next connect: what was sent after `checkpoint` (the last one
    // saved) is sent again.
    virtual void rewind(const Checkpoint& checkpoint) {
        confirmed_ = {checkpoint.event_id, checkpoint.alert_id};
    }
    // Throws TransientError while the receiver cannot be reached.
    virtual void connect() = 0;
    virtual void write(const Record& record) = 0;
    // Sends everything written so far; `upto` is the position its last record reaches.
    virtual void flush(const Position& upto) = 0;
    // The last position the receiver confirmed; checks the connection (TransientError if it broke).
    virtual Position confirmed() { return confirmed_; }
    // Whether everything flushed is confirmed.
    virtual bool settled() const { return true; }
    // What the checkpoint must say about the destination at the confirmed position (a file's
    // identity and length); returns true if it must be saved again (a file was rotated).
    virtual void describe(Checkpoint&) const {}
    virtual bool rotate_if_due() { return false; }
    // SIGHUP, between batches with everything confirmed: close, and open again on the next
    // connect (a file: at its path, a new file if the old one was moved away). Returns true if
    // the checkpoint must be saved again (a new file).
    virtual bool reopen() {
        disconnect();
        return false;
    }
    virtual void disconnect() noexcept = 0;

  protected:
    Position confirmed_;
};

std::unique_ptr<Output> make_output(const Options& options);

// The syslog message for a record: an rfc5424 line as it is, any other format wrapped in an
// RFC 5424 header (PRI from --facility/--severity, the current time, this host, APP-NAME
// pii_audit, MSGID event, alert or digest).
class SyslogWrapper {
  public:
    explicit SyslogWrapper(const Options& options);
    std::string_view message(const Record& record);  // valid until the next call

  private:
    bool wrap_;
    std::string pri_host_;  // "<PRI>1 " and, after the timestamp, " HOST pii_audit - "
    std::string host_app_;
    std::string buffer_;
    int64_t stamp_second_ = -1;
    std::string stamp_;
};

// RFC 6587 octet counting (also RFC 5425): "LENGTH SP MESSAGE".
void append_octet_counted(std::string& out, std::string_view message);

}  // namespace shipper
