// RELP, rsyslog's acknowledged protocol: an event counts as delivered once the receiver has
// answered its frame "200 OK", and not before.
//
// This is a RELP client of its own (frames in relp_protocol.h) rather than librelp's, because
// librelp's client never tells its caller which frames were answered, and its session close
// returns without any error report when the receiver sends the "serverclose" hint instead of
// answering (what rsyslog's imrelp does when rsyslog stops): frames that had been sent but not
// answered were then silently dropped. Inferring delivery from its window and a clean close
// lost events when rsyslog restarted in the middle of a batch (test/server/relp_ack.sh shows
// each case with a scripted receiver).
//
// Here every frame sent is remembered with the position of its event until its answer
// arrives; answers move the confirmed position frame by frame. A session stays open between
// batches; a flush waits until every frame is answered (at most --timeout without progress).
// A refusal (any code but 200), a "serverclose" with frames unanswered, a broken connection or
// a timeout ends the session with a TransientError: the shipper then sends everything after
// the confirmed position again (at least once; event_id tells the duplicates).
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <optional>
#include <stdexcept>

#include "../errors.h"
#include "net.h"
#include "outputs.h"
#include "relp_protocol.h"

#ifndef PII_AUDIT_VERSION
#error "PII_AUDIT_VERSION must be defined by the build"
#endif

namespace shipper {
namespace {

class RelpOutput : public Output {
  public:
    explicit RelpOutput(const Options& o)
        : options_(o), wrapper_(o), what_("relp://" + o.host + ":" + o.port) {}
    ~RelpOutput() override { disconnect(); }

    void connect() override {
        if (fd_ >= 0) return;
        fd_ = connect_socket(options_.host, options_.port, SOCK_STREAM, options_.timeout, what_);
        int one = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        reader_ = relp::FrameReader();
        unanswered_.clear();
        out_.clear();
        sent_ = 0;
        position_ = confirmed_;
        // "open": the receiver must offer the syslog command.
        open_answered_ = false;
        relp::append_frame(out_, 1, "open",
                           "relp_version=0\nrelp_software=pii-audit-export," PII_AUDIT_VERSION
                           "\ncommands=syslog");
        txnr_ = 2;
        double deadline = monotonic_now() + options_.timeout;
        while (!open_answered_) {
            if (!pump(deadline, true))
                fail("no answer to \"open\" in " + seconds(options_.timeout));
        }
    }

    void write(const Record& r) override {
        if (fd_ >= 0 && unanswered_.empty() && sent_ == out_.size()) {
            // A new batch: if the receiver closed the idle session, start a new one.
            pump(0, false);
            if (closed_by_receiver_) disconnect();
        }
        if (fd_ < 0) connect();
        if (!r.digest) (r.alert ? position_.alert_id : position_.event_id) = r.id;
        relp::append_frame(out_, txnr_, "syslog", wrapper_.message(r));
        unanswered_.push_back({txnr_, position_});
        txnr_ = relp::next_txnr(txnr_);
        // Keep the window and the buffer bounded: send, and read answers, as we go.
        if (unanswered_.size() >= kWindow || out_.size() - sent_ >= (256u << 10)) {
            double deadline = monotonic_now() + options_.timeout;
            while (unanswered_.size() >= kWindow || out_.size() - sent_ >= (256u << 10)) {
                if (!pump(deadline, true)) timed_out();
                if (progressed_) deadline = monotonic_now() + options_.timeout;
            }
        }
    }

    void flush(const Position& upto) override {
        if (fd_ < 0) {  // nothing was written since the last flush
            confirmed_ = upto;
            return;
        }
        double deadline = monotonic_now() + options_.timeout;
        while (sent_ < out_.size() || !unanswered_.empty()) {
            if (!pump(deadline, true)) timed_out();
            if (progressed_) deadline = monotonic_now() + options_.timeout;
        }
        confirmed_ = upto;
        if (closed_by_receiver_) disconnect();  // everything answered: the next batch reconnects
    }

    void disconnect() noexcept override {
        if (fd_ >= 0) {
            if (unanswered_.empty() && sent_ == out_.size() && !closed_by_receiver_) {
                // Best effort: tell the receiver this is an orderly end of the session.
                char close[32];
                int n = snprintf(close, sizeof close, "%u close 0\n", txnr_);
                if (n > 0 && static_cast<size_t>(n) < sizeof close)
                    (void)::send(fd_, close, static_cast<size_t>(n), MSG_NOSIGNAL | MSG_DONTWAIT);
            }
            ::close(fd_);
        }
        fd_ = -1;
        closed_by_receiver_ = false;
        unanswered_.clear();  // never answered: sent again from the checkpoint
        out_.clear();
        sent_ = 0;
    }

  private:
    struct Sent {
        uint32_t txnr;
        Position position;
    };

    [[noreturn]] void fail(const std::string& why) {
        disconnect();
        throw TransientError(what_ + ": " + why);
    }

    [[noreturn]] void timed_out() {
        fail("no answer from the receiver in " + seconds(options_.timeout) + " (" +
             std::to_string(unanswered_.size()) + " events unanswered)");
    }

    static std::string seconds(double s) {
        char buf[32];
        snprintf(buf, sizeof buf, "%.1f s", s);
        return buf;
    }

    // Sends what is buffered and reads answers. With `wait`, waits until something was sent or
    // read, or the deadline passed (then returns false); without, does what it can at once.
    bool pump(double deadline, bool wait) {
        progressed_ = false;
        for (;;) {
            short events = POLLIN;
            if (sent_ < out_.size()) events |= POLLOUT;
            int timeout_ms = 0;
            if (wait) {
                double left = deadline - monotonic_now();
                if (left <= 0) return false;
                timeout_ms = static_cast<int>(left * 1000) + 1;
            }
            struct pollfd p = {fd_, events, 0};
            int n = ::poll(&p, 1, timeout_ms);
            if (n < 0) {
                if (errno == EINTR) continue;
                fail(std::string("poll failed: ") + std::strerror(errno));
            }
            if (n > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR))) read_answers();
            if (n > 0 && (p.revents & POLLOUT) && sent_ < out_.size()) {
                ssize_t w = ::send(fd_, out_.data() + sent_, out_.size() - sent_, MSG_NOSIGNAL);
                if (w > 0) {
                    sent_ += static_cast<size_t>(w);
                    progressed_ = true;
                    if (sent_ == out_.size()) {
                        out_.clear();
                        sent_ = 0;
                    }
                } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    fail(std::string("write failed: ") + std::strerror(errno) + unanswered_text());
                }
            }
            if (progressed_ || !wait) return true;
        }
    }

    void read_answers() {
        char buf[65536];
        ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
            fail(std::string("connection error: ") + std::strerror(errno) + unanswered_text());
        }
        if (n == 0) {
            if (!unanswered_.empty() || !open_answered_)
                fail("the receiver closed the connection" + unanswered_text());
            closed_by_receiver_ = true;
            progressed_ = true;
            return;
        }
        progressed_ = true;
        reader_.feed(buf, static_cast<size_t>(n));
        for (;;) {
            std::optional<relp::Frame> f;
            try {
                f = reader_.next();
            } catch (const std::runtime_error& e) {  // a malformed frame
                fail(e.what());
            }
            if (!f) break;
            answer(*f);
        }
    }

    void answer(const relp::Frame& f) {
        if (f.command == "serverclose") {
            // The receiver is going away: whatever it has not answered is not delivered.
            if (!unanswered_.empty() || !open_answered_)
                fail("the receiver ended the session (serverclose)" + unanswered_text());
            closed_by_receiver_ = true;
            return;
        }
        if (f.command != "rsp") fail("unexpected RELP command from the receiver: " + f.command);
        relp::Response r;
        try {
            r = relp::parse_response(f.data);
        } catch (const std::runtime_error& e) {
            fail(e.what());
        }
        if (!open_answered_) {
            if (f.txnr != 1)
                fail("answer " + std::to_string(f.txnr) + " before the answer to \"open\"");
            if (r.code != 200)
                fail("the receiver refused the session: " + std::to_string(r.code) + " " + r.text);
            if (!relp::offers_command(r.data, "syslog"))
                fail("the receiver does not offer RELP's syslog command");
            open_answered_ = true;
            return;
        }
        // A RELP receiver answers in order; anything else means we no longer know what it has.
        if (unanswered_.empty() || unanswered_.front().txnr != f.txnr)
            fail("answer for frame " + std::to_string(f.txnr) + " out of order" +
                 unanswered_text());
        if (r.code != 200) {
            const Position& p = unanswered_.front().position;
            fail("the receiver refused event " + std::to_string(p.event_id) + ": " +
                 std::to_string(r.code) + " " + r.text);
        }
        confirmed_ = unanswered_.front().position;
        unanswered_.pop_front();
    }

    std::string unanswered_text() const {
        if (unanswered_.empty()) return "";
        return " (" + std::to_string(unanswered_.size()) + " events sent and not answered)";
    }

    // Frames in flight before the sender waits for answers: plenty for a fast receiver, and
    // the most a break can cause to be sent twice.
    static constexpr size_t kWindow = 1024;

    const Options& options_;
    SyslogWrapper wrapper_;
    std::string what_;
    int fd_ = -1;
    relp::FrameReader reader_;
    std::string out_;  // frames not yet fully sent, from sent_ on
    size_t sent_ = 0;
    std::deque<Sent> unanswered_;
    uint32_t txnr_ = 1;
    Position position_;  // of the last frame written
    bool open_answered_ = false, closed_by_receiver_ = false, progressed_ = false;
};

}  // namespace

std::unique_ptr<Output> make_relp_output(const Options& o) {
    return std::make_unique<RelpOutput>(o);
}

}  // namespace shipper
