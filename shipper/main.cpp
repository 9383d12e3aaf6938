// pii-audit-export: follows pii_audit's trail and pushes every event, in order, to a file or a
// SIEM receiver, keeping a checkpoint of what the receiver confirmed. See usage_text() and the
// README's "For SIEM teams".
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <random>

#include "checkpoint.h"
#include "errors.h"
#include "options.h"
#include "output.h"
#include "outputs/net.h"
#include "outputs/outputs.h"
#include "trail.h"
#include "verify.h"

#ifndef PII_AUDIT_VERSION
#error "PII_AUDIT_VERSION must be defined by the build"
#endif

namespace shipper {
namespace {

volatile sig_atomic_t stop_requested = 0;
volatile sig_atomic_t progress_requested = 0;
volatile sig_atomic_t reopen_requested = 0;

void on_stop(int) { stop_requested = 1; }
void on_progress(int) { progress_requested = 1; }
void on_reopen(int) { reopen_requested = 1; }

class Backoff {
  public:
    explicit Backoff(double max) : max_(max) {}
    // Sleeps (interruptibly), doubling from 0.2 s up to --retry-max, with jitter.
    void pause() {
        std::uniform_real_distribution<double> jitter(0.8, 1.2);
        double seconds = std::min(max_, delay_) * jitter(rng_);
        delay_ = std::min(max_, delay_ * 2);
        struct timespec ts;
        ts.tv_sec = static_cast<time_t>(seconds);
        ts.tv_nsec = static_cast<long>((seconds - static_cast<double>(ts.tv_sec)) * 1e9);
        while (!stop_requested && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
    void reset() { delay_ = 0.2; }
    double next() const { return std::min(max_, delay_); }

  private:
    double max_;
    double delay_ = 0.2;
    std::mt19937 rng_{std::random_device{}()};
};

class Shipper {
  public:
    explicit Shipper(const Options& o)
        : o_(o), trail_(o.conninfo), output_(make_output(o)), backoff_(o.retry_max) {}

    int run() {
        load_position();
        // At start, a database that cannot be reached or a role that may not read is an error
        // worth stopping for: the service manager restarts us, and a person sees why.
        try {
            trail_.connect(o_.alerts);
        } catch (const TransientError& e) {
            throw FatalError(e.what());
        }
        digests_on_ = o_.digest_every > 0 && trail_.has_digests();
        if (o_.digest_every > 0 && !digests_on_)
            log_warning(trail_.describe() +
                        " has no pii_audit.export_digests() (pii_audit before 0.3.0): the "
                        "stream carries no digest records");
        log_info("shipping " + o_.format + " from " + trail_.describe() + " to " + o_.output_spec +
                 " after event " + std::to_string(sent_.event_id) +
                 (o_.alerts ? " and alert event " + std::to_string(sent_.alert_id) : ""));
        started_ = last_report_ = monotonic_now();
        // Registered at once, so that retention keeps what this shipper has yet to deliver.
        db_checkpoint_due_ = true;
        while (!stop_requested) {
            try {
                if (reopen_requested) reopen_output();
                if (!step()) break;
                backoff_.reset();
            } catch (const DatabaseError& e) {
                // The destination keeps what it was sent; only the database is reconnected.
                ++failures_;
                trail_.disconnect();
                prefetching_ = false;
                log_warning(std::string(e.what()) + "; reconnecting in about " +
                            format_seconds(backoff_.next()));
                backoff_.pause();
            } catch (const TransientError& e) {
                recover(e.what());
            }
            report_progress_if_due();
        }
        // A clean stop still keeps what the destination has confirmed.
        try {
            settle_on_stop();
        } catch (const TransientError& e) {
            log_warning(std::string("stopping: ") + e.what());
        }
        report_progress("stopped");
        return 0;
    }

  private:
    void load_position() {
        std::optional<Checkpoint> saved;
        if (!o_.checkpoint.empty()) saved = load_checkpoint(o_.checkpoint);
        if (saved) {
            checkpoint_ = *saved;
            if (!checkpoint_.format.empty() && checkpoint_.format != o_.format)
                log_warning("the destination received " + checkpoint_.format +
                            " until now; from event " + std::to_string(checkpoint_.event_id + 1) +
                            " on it receives " + o_.format);
            log_info("resuming from the checkpoint " + o_.checkpoint + ": event " +
                     std::to_string(checkpoint_.event_id) + ", alert event " +
                     std::to_string(checkpoint_.alert_id));
        } else {
            checkpoint_.event_id = o_.start_after;
            checkpoint_.alert_id = 0;
        }
        checkpoint_.format = o_.format;
        bool changed = output_->restore(checkpoint_);
        delivered_ = sent_ = {checkpoint_.event_id, checkpoint_.alert_id};
        digests_covered_ = sent_.event_id;
        if (!o_.checkpoint.empty() && (changed || !saved))
            save_checkpoint(o_.checkpoint, checkpoint_);
    }

    // One round: fetch what follows, send it, move the checkpoint. False when --once is done.
    bool step() {
        if (!trail_.connected()) trail_.connect(o_.alerts);
        if (!output_connected_) {
            output_->connect();
            output_connected_ = true;
            if (reconnecting_)
                log_info("connected to " + o_.output_spec + " again; resuming after event " +
                         std::to_string(sent_.event_id));
            reconnecting_ = false;
        }
        Result events;
        if (prefetching_) {
            prefetching_ = false;
            events = trail_.finish_events();
        } else {
            events = trail_.fetch_events(sent_.event_id, o_.batch, o_.format);
        }
        register_checkpoint_if_due();
        Result alerts;
        if (o_.alerts) alerts = trail_.fetch_alerts(sent_.alert_id, o_.batch, o_.format);
        int nevents = PQntuples(events.get()), nalerts = alerts ? PQntuples(alerts.get()) : 0;
        // Digest records for the batches of the trail that end within these events (asked
        // for only when these events reach the next multiple of --digest-every).
        Result digests;
        int ndigests = 0;
        int64_t last_event =
            nevents > 0 ? std::strtoll(PQgetvalue(events.get(), nevents - 1, 0), nullptr, 10) : 0;
        if (digests_on_ && nevents > 0 &&
            last_event / o_.digest_every > digests_covered_ / o_.digest_every) {
            digests = trail_.fetch_digests(sent_.event_id, o_.digest_every, o_.format);
            ndigests = PQntuples(digests.get());
        }
        if (nevents == 0 && nalerts == 0) {
            advance_checkpoint();
            register_checkpoint_if_due();
            if (o_.once && output_->settled()) return false;
            // Nothing new: sleep until the worker announces events, or the poll interval ends,
            // or (tcp/tls) a sent batch can be confirmed.
            double wait = o_.poll_interval;
            if (!output_->settled()) wait = std::min(wait, std::max(0.02, o_.confirm_delay / 4));
            if (o_.progress_interval > 0) wait = std::min(wait, o_.progress_interval);
            trail_.wait(wait);
            return true;
        }
        // A full batch: more is likely waiting. The server formats it while this one is sent.
        if (nevents == o_.batch) {
            trail_.start_events(std::strtoll(PQgetvalue(events.get(), nevents - 1, 0), nullptr, 10),
                                o_.batch, o_.format);
            prefetching_ = true;
        }
        Position upto = sent_;
        sending_ = true;  // until the flush: a failure leaves part of this batch unconfirmed
        int next_digest = 0;
        // A digest record follows the last event of its batch (before any later event).
        auto write_digests_upto = [&](int64_t id) {
            for (; next_digest < ndigests; ++next_digest) {
                int64_t ends = std::strtoll(PQgetvalue(digests.get(), next_digest, 0), nullptr, 10);
                if (ends > id) break;
                Record d{false, ends,
                         std::string_view(
                             PQgetvalue(digests.get(), next_digest, 1),
                             static_cast<size_t>(PQgetlength(digests.get(), next_digest, 1))),
                         true};
                output_->write(d);
                digests_covered_ = std::max(digests_covered_, ends);
            }
        };
        for (int i = 0; i < nevents; ++i) {
            Record r{false, std::strtoll(PQgetvalue(events.get(), i, 0), nullptr, 10),
                     std::string_view(PQgetvalue(events.get(), i, 1),
                                      static_cast<size_t>(PQgetlength(events.get(), i, 1)))};
            if (r.id <= upto.event_id)
                throw FatalError("pii_audit.export() returned event " + std::to_string(r.id) +
                                 " after " + std::to_string(upto.event_id) + ": ids must rise");
            write_digests_upto(r.id - 1);
            output_->write(r);
            upto.event_id = r.id;
        }
        write_digests_upto(last_event);  // a batch that ends later is sent with a later fetch
        for (int i = 0; i < nalerts; ++i) {
            Record r{true, std::strtoll(PQgetvalue(alerts.get(), i, 0), nullptr, 10),
                     std::string_view(PQgetvalue(alerts.get(), i, 1),
                                      static_cast<size_t>(PQgetlength(alerts.get(), i, 1)))};
            if (r.id <= upto.alert_id)
                throw FatalError("pii_audit.export_alerts() returned " + std::to_string(r.id) +
                                 " after " + std::to_string(upto.alert_id) + ": ids must rise");
            output_->write(r);
            upto.alert_id = r.id;
        }
        output_->flush(upto);
        sending_ = false;
        sent_ = upto;
        sent_count_ += static_cast<uint64_t>(nevents + nalerts);
        advance_checkpoint();
        return true;
    }

    // Moves the checkpoint (file, then database) to what the destination confirmed.
    void advance_checkpoint() {
        Position confirmed = output_->confirmed();
        if (confirmed != delivered_) {
            Checkpoint next = checkpoint_;
            next.event_id = confirmed.event_id;
            next.alert_id = confirmed.alert_id;
            output_->describe(next);
            if (!o_.checkpoint.empty()) save_checkpoint(o_.checkpoint, next);
            checkpoint_ = next;  // only what was saved counts
            delivered_count_ += static_cast<uint64_t>(confirmed.event_id - delivered_.event_id) +
                                static_cast<uint64_t>(confirmed.alert_id - delivered_.alert_id);
            if (confirmed.event_id != delivered_.event_id) db_checkpoint_due_ = true;
            delivered_ = confirmed;
        }
        if (output_->rotate_if_due()) {
            Checkpoint next = checkpoint_;
            output_->describe(next);
            if (!o_.checkpoint.empty()) save_checkpoint(o_.checkpoint, next);
            checkpoint_ = next;
        }
    }

    // Tells retention what was delivered (between queries: never while a prefetch runs).
    void register_checkpoint_if_due() {
        if (db_checkpoint_due_ && trail_.connected() && !prefetching_) {
            trail_.register_checkpoint(o_.name, delivered_.event_id);
            db_checkpoint_due_ = false;
        }
    }

    void recover(const std::string& why) {
        ++failures_;
        // Keep what the destination confirmed before it failed (RELP knows part of a batch)...
        try {
            advance_checkpoint();
        } catch (const TransientError&) {
            // (the broken connection again, or the checkpoint's disk: the old position holds)
        }
        // ...and what was sent but not confirmed comes from the trail again (a batch fetched
        // ahead follows what failed: dropped with its connection).
        output_->disconnect();
        if (prefetching_) {
            trail_.disconnect();
            prefetching_ = false;
        }
        output_connected_ = false;
        if (sending_ || sent_ != delivered_)
            log_warning(
                why + "; what follows event " + std::to_string(delivered_.event_id) +
                (o_.alerts ? " and alert event " + std::to_string(delivered_.alert_id) : "") +
                " will be sent again; retrying in about " + format_seconds(backoff_.next()));
        else
            log_warning(why + "; retrying in about " + format_seconds(backoff_.next()));
        // The destination goes back to the saved checkpoint too (a file is cut back to its
        // length there, should the checkpoint itself have failed to save).
        output_->rewind(checkpoint_);
        sent_ = delivered_;
        digests_covered_ = delivered_.event_id;  // digest records not confirmed are sent again
        sending_ = false;
        reconnecting_ = true;
        backoff_.pause();
    }

    // SIGHUP: between batches, once everything sent is confirmed, the destination is closed and
    // opened again (a file that was moved away is started anew at its path and recorded in the
    // checkpoint before anything is written into it; a receiver gets a new connection).
    void reopen_output() {
        if (sending_ || !output_->settled()) return;  // later, between batches
        reopen_requested = 0;
        advance_checkpoint();
        bool changed = output_->reopen();
        output_connected_ = false;
        if (changed) {
            Checkpoint next = checkpoint_;
            output_->describe(next);
            if (!o_.checkpoint.empty()) save_checkpoint(o_.checkpoint, next);
            checkpoint_ = next;
        }
        log_info("SIGHUP: reopened " + o_.output_spec +
                 (changed ? " (a new file; the one before was moved away)" : ""));
    }

    void settle_on_stop() {
        if (!output_connected_) return;
        double deadline = monotonic_now() + o_.confirm_delay + 1;
        while (!output_->settled() && monotonic_now() < deadline) {
            ::usleep(20000);
            advance_checkpoint();
        }
        advance_checkpoint();
        if (prefetching_) {  // a batch fetched ahead and never sent
            prefetching_ = false;
            trail_.finish_events();
        }
        register_checkpoint_if_due();
    }

    static std::string format_seconds(double s) {
        char buf[32];
        snprintf(buf, sizeof buf, "%.1f s", s);
        return buf;
    }

    void report_progress_if_due() {
        double now = monotonic_now();
        if (progress_requested ||
            (o_.progress_interval > 0 && now - last_report_ >= o_.progress_interval)) {
            progress_requested = 0;
            report_progress("progress");
        }
    }

    void report_progress(const char* what) {
        double now = monotonic_now();
        double span = std::max(1e-3, now - last_report_);
        double rate = static_cast<double>(delivered_count_ - reported_count_) / span;
        int64_t latest = std::max(trail_.latest_announced(), sent_.event_id);
        char buf[512];
        snprintf(buf, sizeof buf,
                 "%s: delivered %" PRIu64
                 " events in %.0f s (%.0f/s over the last %.1f s); last "
                 "delivered event %" PRId64 ", sent %" PRId64 ", newest known %" PRId64
                 " (lag %" PRId64 " events); %" PRIu64 " retries",
                 what, delivered_count_, now - started_, rate, span, delivered_.event_id,
                 sent_.event_id, latest, latest - delivered_.event_id, failures_);
        log_info(buf);
        last_report_ = now;
        reported_count_ = delivered_count_;
    }

    const Options& o_;
    Trail trail_;
    std::unique_ptr<Output> output_;
    Backoff backoff_;
    Checkpoint checkpoint_;
    Position delivered_, sent_;
    bool output_connected_ = false, reconnecting_ = false, db_checkpoint_due_ = false,
         prefetching_ = false, sending_ = false, digests_on_ = false;
    int64_t digests_covered_ = 0;  // digest records of batches ending up to here were sent
    uint64_t sent_count_ = 0, delivered_count_ = 0, reported_count_ = 0, failures_ = 0;
    double started_ = 0, last_report_ = 0;
};

void install_signals() {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;  // no SA_RESTART: waits end at once
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    sa.sa_handler = on_progress;
    sigaction(SIGUSR1, &sa, nullptr);
    sa.sa_handler = on_reopen;
    sigaction(SIGHUP, &sa, nullptr);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, nullptr);
}

}  // namespace

}  // namespace shipper

int main(int argc, char** argv) {
    using namespace shipper;
    try {
        Options options = parse_options(std::vector<std::string>(argv + 1, argv + argc));
        if (options.help) {
            fputs(usage_text().c_str(), stdout);
            return 0;
        }
        if (options.version) {
            printf("pii-audit-export %s\n", PII_AUDIT_VERSION);
            return 0;
        }
        if (!options.verify_files.empty()) return run_verify(options);
        install_signals();
        Shipper shipper(options);
        return shipper.run();
    } catch (const UsageError& e) {
        fprintf(stderr, "pii-audit-export: %s\nTry 'pii-audit-export --help'.\n", e.what());
        return 2;
    } catch (const FatalError& e) {
        fprintf(stderr, "pii-audit-export: error: %s\n", e.what());
        return 1;
    } catch (const TransientError& e) {
        fprintf(stderr, "pii-audit-export: error: %s\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        fprintf(stderr, "pii-audit-export: unexpected error: %s\n", e.what());
        return 1;
    } catch (...) {
        fprintf(stderr, "pii-audit-export: unexpected error of unknown type\n");
        return 1;
    }
}
