// Connection attempts, for insider detection (credential stuffing: a burst of failures, then a
// success). PostgreSQL calls ClientAuthentication_hook once authentication is decided, before it
// reports a failure to the client; the attempt goes into the audit queue like any event.
#include "pii_audit_internal.h"

// The Port struct keeps a pointer-sized GSSAPI slot whether or not GSSAPI is compiled in (see
// libpq-be.h), so its layout does not depend on the GSSAPI headers, which need not be installed.
#undef ENABLE_GSS
extern "C" {
#include "libpq/auth.h"
#include "libpq/libpq-be.h"
#include "miscadmin.h"
#include "utils/timestamp.h"
}

#include <netdb.h>

namespace {

ClientAuthentication_hook_type prev_client_authentication = nullptr;

void record_login(Port* port, int status) {
    // STATUS_EOF: the client hung up before answering the password request, as psql does before
    // it prompts. That is not a failed attempt.
    if (status != STATUS_OK && status != STATUS_ERROR) return;
    if (!pii_audit_enabled || port == nullptr) return;
    char client_addr[NI_MAXHOST];
    pii_audit_format_client_addr(&port->raddr.addr, static_cast<int>(port->raddr.salen),
                                 client_addr, sizeof client_addr);
    pii_audit::EventView event;
    event.header.kind = static_cast<uint8>(pii_audit::EventKind::kLogin);
    event.header.status = static_cast<uint8>(status == STATUS_OK ? pii_audit::EventStatus::kCompleted
                                                                 : pii_audit::EventStatus::kFailed);
    event.header.event_time = GetCurrentTimestamp();
    event.header.backend_pid = MyProcPid;
    // No database is connected yet; names from the startup packet are passed through as bytes.
    event.header.source_encoding = PG_SQL_ASCII;
    const char* user = port->user_name ? port->user_name : "";
    event.field[pii_audit::kDatabaseName] = port->database_name ? port->database_name : "";
    event.field[pii_audit::kSessionUser] = user;
    event.field[pii_audit::kCurrentUser] = user;
    event.field[pii_audit::kApplicationName] = port->application_name ? port->application_name : "";
    event.field[pii_audit::kCommand] = "LOGIN";
    if (client_addr[0] != '\0') {
        event.field[pii_audit::kClientAddr] = client_addr;
        event.header.flags |= pii_audit::kFlagClientAddrSet;
    }
    // Never make a login wait for the audit queue: a full queue drops and counts instead.
    (void)pii_audit_enqueue(event, false);
}

void audit_client_authentication(Port* port, int status) {
    if (prev_client_authentication) prev_client_authentication(port, status);
    record_login(port, status);
}

}  // namespace

void pii_audit_install_login_hook(void) {
    prev_client_authentication = ClientAuthentication_hook;
    ClientAuthentication_hook = audit_client_authentication;
}
