// Syslog over TCP (RFC 6587 octet counting) and over TLS (RFC 5425, OpenSSL).
//
// Plain syslog has no acknowledgement, so a batch counts as delivered only when (1) the
// receiver's TCP stack has acknowledged every byte (the socket's send queue, SIOCOUTQ, is
// empty) and (2) the connection then stayed up for --confirm-delay seconds. A receiver that
// stops closes its connections: bytes it had acknowledged but not yet read are then lost, and
// the close arrives within that delay, so the batch is sent again after reconnecting (at least
// once; event_id tells the duplicates). Without (2) every receiver restart could lose a batch.
#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>

#include "../errors.h"
#include "net.h"
#include "outputs.h"

namespace shipper {
namespace {

std::string openssl_errors() {
    std::string out;
    while (unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (!out.empty()) out += "; ";
        out += buf;
    }
    return out.empty() ? "unknown TLS error" : out;
}

class StreamOutput : public Output {
  public:
    explicit StreamOutput(const Options& o)
        : options_(o),
          wrapper_(o),
          tls_(o.output == OutputKind::Tls),
          what_((tls_ ? "tls://" : "tcp://") + o.host + ":" + o.port) {
        if (tls_) make_context();
    }
    ~StreamOutput() override {
        disconnect();
        if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    }

    void connect() override {
        if (fd_ >= 0) return;
        fd_ = connect_socket(options_.host, options_.port, SOCK_STREAM, options_.timeout, what_);
        int one = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (tls_) {
            try {
                handshake();
            } catch (...) {
                disconnect();
                throw;
            }
        }
    }

    void write(const Record& r) override {
        append_octet_counted(buffer_, wrapper_.message(r));
        if (buffer_.size() >= (256 << 10)) send_buffer();
    }

    void flush(const Position& upto) override {
        check_connection();
        send_buffer();
        // (1) every byte acknowledged by the receiver's TCP stack.
        double deadline = monotonic_now() + options_.timeout;
        for (;;) {
            int queued = 0;
            if (::ioctl(fd_, SIOCOUTQ, &queued) != 0) fail("cannot read the socket's send queue");
            if (queued == 0) break;
            check_connection();
            if (monotonic_now() > deadline)
                fail("the receiver did not acknowledge " + std::to_string(queued) + " bytes in " +
                     std::to_string(options_.timeout) + " s");
            ::usleep(queued > 65536 ? 2000 : 200);
        }
        pending_.push_back({upto, monotonic_now()});
    }

    Position confirmed() override {
        if (pending_.empty()) return confirmed_;
        check_connection();
        // (2) the connection stayed up long enough for a stopping receiver's close to arrive.
        double now = monotonic_now();
        while (!pending_.empty() && now - pending_.front().at >= options_.confirm_delay) {
            confirmed_ = pending_.front().upto;
            pending_.pop_front();
        }
        return confirmed_;
    }

    bool settled() const override { return pending_.empty(); }

    bool reopen() override {
        disconnect();
        if (tls_) {
            // Certificates and CA files are read again (renewed ones are taken up); if they
            // no longer load, the ones loaded before stay in use.
            SSL_CTX* old = ctx_;
            try {
                make_context();
                SSL_CTX_free(old);
            } catch (const FatalError& e) {
                if (ctx_ != old) SSL_CTX_free(ctx_);
                ctx_ = old;
                log_warning(std::string("SIGHUP: keeping the TLS files loaded before: ") +
                            e.what());
            }
        }
        return false;
    }

    void disconnect() noexcept override {
        if (ssl_ != nullptr) {
            // Best effort: a close_notify tells the receiver this is an orderly close.
            if (fd_ >= 0 && SSL_is_init_finished(ssl_)) {
                ERR_clear_error();
                SSL_shutdown(ssl_);
            }
            ERR_clear_error();
            SSL_free(ssl_);
            ssl_ = nullptr;
        }
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
        buffer_.clear();
        pending_.clear();  // never confirmed: sent again from the checkpoint
    }

  private:
    struct Pending {
        Position upto;
        double at;
    };

    [[noreturn]] void fail(const std::string& why) {
        disconnect();
        throw TransientError(what_ + ": " + why);
    }

    void make_context() {
        ctx_ = SSL_CTX_new(TLS_client_method());
        if (ctx_ == nullptr) throw FatalError("cannot create a TLS context: " + openssl_errors());
        SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
        SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
        if (SSL_CTX_load_verify_locations(ctx_, options_.tls_ca.c_str(), nullptr) != 1)
            throw FatalError("cannot load --tls-ca " + options_.tls_ca + ": " + openssl_errors());
        if (!options_.tls_cert.empty()) {
            if (SSL_CTX_use_certificate_chain_file(ctx_, options_.tls_cert.c_str()) != 1)
                throw FatalError("cannot load --tls-cert " + options_.tls_cert + ": " +
                                 openssl_errors());
            if (SSL_CTX_use_PrivateKey_file(ctx_, options_.tls_key.c_str(), SSL_FILETYPE_PEM) != 1)
                throw FatalError("cannot load --tls-key " + options_.tls_key + ": " +
                                 openssl_errors());
            if (SSL_CTX_check_private_key(ctx_) != 1)
                throw FatalError("--tls-key does not belong to --tls-cert: " + openssl_errors());
        }
        SSL_CTX_set_mode(ctx_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }

    void handshake() {
        ssl_ = SSL_new(ctx_);
        if (ssl_ == nullptr) fail("cannot create a TLS session: " + openssl_errors());
        SSL_set_fd(ssl_, fd_);
        const std::string& name =
            options_.tls_server_name.empty() ? options_.host : options_.tls_server_name;
        unsigned char ip[16];
        bool is_ip =
            inet_pton(AF_INET, name.c_str(), ip) == 1 || inet_pton(AF_INET6, name.c_str(), ip) == 1;
        if (is_ip) {
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), name.c_str());
        } else {
            SSL_set_tlsext_host_name(ssl_, name.c_str());
            SSL_set1_host(ssl_, name.c_str());
        }
        double deadline = monotonic_now() + options_.timeout;
        for (;;) {
            ERR_clear_error();
            int rc = SSL_connect(ssl_);
            if (rc == 1) break;
            int err = SSL_get_error(ssl_, rc);
            short events = err == SSL_ERROR_WANT_READ    ? POLLIN
                           : err == SSL_ERROR_WANT_WRITE ? POLLOUT
                                                         : 0;
            if (events == 0) {
                std::string why = openssl_errors();
                long verify = SSL_get_verify_result(ssl_);
                if (verify != X509_V_OK)
                    why = std::string("the receiver's certificate is not trusted: ") +
                          X509_verify_cert_error_string(verify);
                fail("TLS handshake failed: " + why);
            }
            if (!wait_fd(fd_, events, deadline)) fail("TLS handshake timed out");
        }
    }

    // Detects a receiver that closed or reset the connection (it never sends anything else).
    void check_connection() {
        if (fd_ < 0) fail("not connected");
        struct pollfd p = {fd_, static_cast<short>(POLLIN | POLLRDHUP), 0};
        if (::poll(&p, 1, 0) <= 0) return;
        if (p.revents & (POLLERR | POLLHUP | POLLRDHUP)) fail("the receiver closed the connection");
        if (!(p.revents & POLLIN)) return;
        char buf[4096];
        if (tls_) {
            // TLS 1.3 receivers send session tickets after the handshake: not a close.
            ERR_clear_error();
            int n = SSL_read(ssl_, buf, sizeof buf);
            if (n > 0) return;
            int err = SSL_get_error(ssl_, n);
            if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return;
            fail("the receiver closed the TLS session");
        }
        ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0) fail("the receiver closed the connection");
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            fail(std::string("connection error: ") + std::strerror(errno));
    }

    void send_buffer() {
        size_t done = 0;
        double deadline = monotonic_now() + options_.timeout;
        while (done < buffer_.size()) {
            short want = POLLOUT;
            if (tls_) {
                ERR_clear_error();
                int n =
                    SSL_write(ssl_, buffer_.data() + done,
                              static_cast<int>(std::min<size_t>(buffer_.size() - done, 1 << 20)));
                if (n > 0) {
                    done += static_cast<size_t>(n);
                    continue;
                }
                int err = SSL_get_error(ssl_, n);
                if (err == SSL_ERROR_WANT_READ)
                    want = POLLIN;
                else if (err != SSL_ERROR_WANT_WRITE)
                    fail("TLS write failed: " + openssl_errors());
            } else {
                ssize_t n = ::send(fd_, buffer_.data() + done, buffer_.size() - done, MSG_NOSIGNAL);
                if (n > 0) {
                    done += static_cast<size_t>(n);
                    continue;
                }
                if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                    fail(std::string("write failed: ") + std::strerror(errno));
            }
            if (!wait_fd(fd_, want, deadline))
                fail("the receiver took no data for " + std::to_string(options_.timeout) + " s");
        }
        buffer_.clear();
    }

    const Options& options_;
    SyslogWrapper wrapper_;
    bool tls_;
    std::string what_;
    SSL_CTX* ctx_ = nullptr;
    SSL* ssl_ = nullptr;
    int fd_ = -1;
    std::string buffer_;
    std::deque<Pending> pending_;
};

// One datagram per event (RFC 5426); nothing confirms them: best effort, as UDP is.
class UdpOutput : public Output {
  public:
    explicit UdpOutput(const Options& o)
        : options_(o), wrapper_(o), what_("udp://" + o.host + ":" + o.port) {}
    ~UdpOutput() override { disconnect(); }
    void connect() override {
        if (fd_ < 0)
            fd_ = connect_socket(options_.host, options_.port, SOCK_DGRAM, options_.timeout, what_);
    }
    void write(const Record& r) override {
        std::string_view m = wrapper_.message(r);
        double deadline = monotonic_now() + options_.timeout;
        for (;;) {
            if (::send(fd_, m.data(), m.size(), MSG_NOSIGNAL) >= 0) return;
            if (errno == EINTR) continue;
            if ((errno == EAGAIN || errno == ENOBUFS) && wait_fd(fd_, POLLOUT, deadline)) continue;
            if (errno == EMSGSIZE) {
                // Larger than a datagram can be: sent cut, and said so.
                ++cut_;
                m = m.substr(0, 65000);
                continue;
            }
            std::string why = std::strerror(errno);
            disconnect();
            throw TransientError(what_ + ": send failed: " + why);
        }
    }
    void flush(const Position& upto) override {
        if (cut_ > 0)
            log_warning(what_ + ": " + std::to_string(cut_) +
                        " messages longer than a datagram were cut to 65000 bytes");
        cut_ = 0;
        confirmed_ = upto;
    }
    void disconnect() noexcept override {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

  private:
    const Options& options_;
    SyslogWrapper wrapper_;
    std::string what_;
    int fd_ = -1;
    uint64_t cut_ = 0;
};

}  // namespace

std::unique_ptr<Output> make_stream_output(const Options& o) {
    return std::make_unique<StreamOutput>(o);
}
std::unique_ptr<Output> make_udp_output(const Options& o) { return std::make_unique<UdpOutput>(o); }

}  // namespace shipper
