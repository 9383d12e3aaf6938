#include <cstdio>
#include <string>

#include "outputs/outputs.h"

namespace shipper {
namespace {

// One line per message on stderr, as the journal wants them (it adds the time).
void log_line(const char* level, const std::string& message) {
    fprintf(stderr, "pii-audit-export: %s%s\n", level, message.c_str());
    fflush(stderr);
}

}  // namespace

void log_info(const std::string& message) { log_line("", message); }
void log_warning(const std::string& message) { log_line("warning: ", message); }

}  // namespace shipper
