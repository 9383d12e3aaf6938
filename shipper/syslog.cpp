#include <sys/time.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>

#include "output.h"

namespace shipper {

SyslogWrapper::SyslogWrapper(const Options& options) : wrap_(options.format != "rfc5424") {
    char pri[16];
    snprintf(pri, sizeof pri, "<%d>1 ", options.facility * 8 + options.severity);
    pri_host_ = pri;
    // RFC 5424 HOSTNAME: printable US-ASCII without spaces, at most 255 characters.
    char name[256] = "";
    std::string host = "-";
    if (gethostname(name, sizeof name - 1) == 0 && name[0] != '\0') {
        host = name;
        for (char& c : host)
            if (c < 33 || c > 126) c = '_';
    }
    host_app_ = " " + host + " pii_audit - ";
}

std::string_view SyslogWrapper::message(const Record& record) {
    if (!wrap_) return record.line;
    struct timeval now;
    gettimeofday(&now, nullptr);
    if (now.tv_sec != stamp_second_) {
        struct tm tm;
        gmtime_r(&now.tv_sec, &tm);
        char buf[32];
        strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
        stamp_ = buf;
        stamp_second_ = now.tv_sec;
    }
    char micros[16];
    snprintf(micros, sizeof micros, ".%06ldZ", static_cast<long>(now.tv_usec));
    buffer_.clear();
    buffer_.append(pri_host_).append(stamp_).append(micros).append(host_app_);
    buffer_.append(record.digest ? "digest - " : record.alert ? "alert - " : "event - ");
    buffer_.append(record.line);
    return buffer_;
}

void append_octet_counted(std::string& out, std::string_view message) {
    char len[24];
    int n = snprintf(len, sizeof len, "%zu ", message.size());
    out.append(len, static_cast<size_t>(n));
    out.append(message);
}

}  // namespace shipper
