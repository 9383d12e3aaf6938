// RELP (librelp): rsyslog's acknowledged protocol. librelp keeps the frames the receiver has
// not answered and resends them after a reconnect, but tells its caller nothing about which
// were answered. A RELP receiver answers frames in order, and answers "close" only after every
// frame before it; librelp reports a negative answer, a broken session or a timeout through
// its error callback. So each batch is one session: open, send every frame, close. A batch
// whose session closed without a single error report was acknowledged in full; any report
// fails the batch, which is then sent again from the checkpoint (at least once).
#include <cstddef>  // librelp.h uses size_t without including it
// librelp.h declares C functions without extern "C".
extern "C" {
#include <librelp.h>
}
#include <sys/socket.h>

#include <cstring>

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
        relpEngineSetDnsLookupMode(engine_, 0);
        relpEngineSetEnableCmd(engine_, reinterpret_cast<unsigned char*>(const_cast<char*>("syslog")),
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
        relpCltSetTimeout(client_, static_cast<unsigned>(options_.timeout + 0.999));
        relpCltSetConnTimeout(client_, static_cast<int>(options_.timeout + 0.999));
        relpRetVal rc = relpCltConnect(client_, AF_UNSPEC,
                                       reinterpret_cast<unsigned char*>(const_cast<char*>(options_.port.c_str())),
                                       reinterpret_cast<unsigned char*>(const_cast<char*>(options_.host.c_str())));
        if (rc != RELP_RET_OK) fail("cannot open a RELP session (librelp error " + std::to_string(rc) + ")");
        in_session_ = true;
    }

    void write(const Record& r) override {
        if (!in_session_) connect();
        std::string_view m = wrapper_.message(r);
        relpRetVal rc = relpCltSendSyslog(client_, reinterpret_cast<unsigned char*>(const_cast<char*>(m.data())), m.size());
        if (rc != RELP_RET_OK) fail("sending failed (librelp error " + std::to_string(rc) + ")");
        if (!error_.empty()) fail(error_);
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
            self->error_ = std::string(message) + " (" + object + ", librelp error " + std::to_string(code) + ")";
    }
    static void on_generic_error(char* object, char* message, relpRetVal code) {
        log_warning(std::string("librelp: ") + message + " (" + object + ", error " + std::to_string(code) + ")");
    }

    const Options& options_;
    SyslogWrapper wrapper_;
    std::string what_;
    relpEngine_t* engine_ = nullptr;
    relpClt_t* client_ = nullptr;
    bool in_session_ = false;
    std::string error_;
};

}  // namespace

std::unique_ptr<Output> make_relp_output(const Options& o) { return std::make_unique<RelpOutput>(o); }

}  // namespace shipper
