// RELP (librelp): rsyslog's acknowledged protocol. librelp keeps the frames the receiver has
// not answered and resends them after a reconnect, but does not tell its caller which were
// answered. Two of its rules tell us instead:
//   - it sends a frame only while fewer than WINDOW frames are unanswered, and a RELP receiver
//     answers frames in order, so once frame k is sent, every frame up to k - WINDOW has been
//     answered;
//   - a receiver answers "close" only after every frame before it.
// A negative answer, a broken session or a timeout reaches us through librelp's error
// callback. So a batch is one session (open, frames, close): a batch whose session closed with
// no error report was acknowledged in full, and when a session breaks, the events up to
// k - WINDOW count as delivered and the rest is sent again (at most WINDOW duplicates).
#include <cstddef>  // librelp.h uses size_t without including it
// librelp.h declares C functions without extern "C".
extern "C" {
#include <librelp.h>
}
#include <sys/socket.h>

#include <cstring>
#include <deque>

#include "../errors.h"
#include "outputs.h"

namespace shipper {
namespace {

class RelpOutput : public Output {
  public:
    explicit RelpOutput(const Options& o)
        : options_(o), wrapper_(o), what_("relp://" + o.host + ":" + o.port) {
        if (relpEngineConstruct(&engine_) != RELP_RET_OK)
            throw FatalError("cannot create the RELP engine (librelp)");
        relpEngineSetDbgprint(engine_, &RelpOutput::ignore_debug);  // librelp calls it unset
        relpEngineSetDnsLookupMode(engine_, 0);
        relpEngineSetEnableCmd(engine_,
                               reinterpret_cast<unsigned char*>(const_cast<char*>("syslog")),
                               eRelpCmdState_Required);
        relpEngineSetOnErr(engine_, &RelpOutput::on_error);
        relpEngineSetOnGenericErr(engine_, &RelpOutput::on_generic_error);
    }
    ~RelpOutput() override {
        disconnect();
        relpEngineDestruct(&engine_);
    }

    void connect() override {
        if (client_ != nullptr) return;
        error_.clear();
        if (relpEngineCltConstruct(engine_, &client_) != RELP_RET_OK) {
            client_ = nullptr;
            throw TransientError(what_ + ": cannot create a RELP client");
        }
        relpCltSetUsrPtr(client_, this);
        relpCltSetWindowSize(client_, kWindow);
        relpCltSetTimeout(client_, static_cast<unsigned>(options_.timeout + 0.999));
        relpCltSetConnTimeout(client_, static_cast<int>(options_.timeout + 0.999));
        relpRetVal rc = relpCltConnect(
            client_, AF_UNSPEC,
            reinterpret_cast<unsigned char*>(const_cast<char*>(options_.port.c_str())),
            reinterpret_cast<unsigned char*>(const_cast<char*>(options_.host.c_str())));
        if (rc != RELP_RET_OK)
            fail("cannot open a RELP session (librelp error " + std::to_string(rc) + ")");
        in_session_ = true;
        position_ = confirmed_;
        unanswered_.clear();
    }

    void write(const Record& r) override {
        if (!in_session_) connect();
        std::string_view m = wrapper_.message(r);
        relpRetVal rc = relpCltSendSyslog(
            client_, reinterpret_cast<unsigned char*>(const_cast<char*>(m.data())), m.size());
        if (rc != RELP_RET_OK) fail("sending failed (librelp error " + std::to_string(rc) + ")");
        if (!error_.empty()) fail(error_);
        (r.alert ? position_.alert_id : position_.event_id) = r.id;
        unanswered_.push_back(position_);
        if (unanswered_.size() > kWindow) {  // see the top of the file
            confirmed_ = unanswered_.front();
            unanswered_.pop_front();
        }
    }

    void flush(const Position& upto) override {
        if (!in_session_) {  // nothing was written since the last flush
            confirmed_ = upto;
            return;
        }
        // Closing waits for the answers to every frame sent, then for the answer to "close".
        relpEngineCltDestruct(engine_, &client_);
        client_ = nullptr;
        in_session_ = false;
        if (!error_.empty()) fail(error_);
        confirmed_ = upto;
        unanswered_.clear();
    }

    void disconnect() noexcept override {
        if (client_ != nullptr) relpEngineCltDestruct(engine_, &client_);
        client_ = nullptr;
        in_session_ = false;
    }

  private:
    [[noreturn]] void fail(const std::string& why) {
        std::string message = what_ + ": " + why;
        disconnect();
        error_.clear();
        throw TransientError(message);
    }

    static void on_error(void* user, char* object, char* message, relpRetVal code) {
        auto* self = static_cast<RelpOutput*>(user);
        if (self != nullptr && self->error_.empty())
            self->error_ = std::string(message) + " (" + object + ", librelp error " +
                           std::to_string(code) + ")";
    }
    static void ignore_debug(char*, ...) {}
    static void on_generic_error(char* object, char* message, relpRetVal code) {
        log_warning(std::string("librelp: ") + message + " (" + object + ", error " +
                    std::to_string(code) + ")");
    }

    static constexpr size_t kWindow = 128;

    const Options& options_;
    SyslogWrapper wrapper_;
    std::string what_;
    Position position_;                // of the last frame sent
    std::deque<Position> unanswered_;  // positions of the last kWindow frames sent
    relpEngine_t* engine_ = nullptr;
    relpClt_t* client_ = nullptr;
    bool in_session_ = false;
    std::string error_;
};

}  // namespace

std::unique_ptr<Output> make_relp_output(const Options& o) {
    return std::make_unique<RelpOutput>(o);
}

}  // namespace shipper
