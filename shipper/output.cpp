#include "output.h"

#include "errors.h"
#include "outputs/outputs.h"

namespace shipper {

std::unique_ptr<Output> make_output(const Options& o) {
    switch (o.output) {
        case OutputKind::Stdout:
            return make_stdout_output(o);
        case OutputKind::File:
            return make_file_output(o);
        case OutputKind::Tcp:
        case OutputKind::Tls:
            return make_stream_output(o);
        case OutputKind::Udp:
            return make_udp_output(o);
        case OutputKind::Relp:
            return make_relp_output(o);
    }
    throw FatalError("unknown output");
}

}  // namespace shipper
