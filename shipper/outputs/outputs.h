// Constructors of the destinations (one file each) and what they share.
#pragma once

#include <memory>
#include <string>

#include "../output.h"

namespace shipper {

std::unique_ptr<Output> make_stdout_output(const Options& options);
std::unique_ptr<Output> make_file_output(const Options& options);
std::unique_ptr<Output> make_stream_output(const Options& options);  // tcp://, tls://
std::unique_ptr<Output> make_udp_output(const Options& options);
std::unique_ptr<Output> make_relp_output(const Options& options);

// Logging to stderr (the service's journal).
void log_info(const std::string& message);
void log_warning(const std::string& message);

}  // namespace shipper
