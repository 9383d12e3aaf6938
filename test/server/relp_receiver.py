#!/usr/bin/env python3
"""A RELP receiver whose misbehaviour is scripted, for test/server/relp_ack.sh.

rsyslog's imrelp shows the cases below only by chance (a restart at the right moment); here
each one happens on purpose, one per connection, in the order given:

  ack          answer every frame (200 OK), and "close" as RELP says;
  ack:N        answer the first N syslog frames, read the rest without answering, and once the
               client has been quiet for 0.5 s (or sends "close") send the "serverclose" hint
               and close the connection (what imrelp does when rsyslog stops; with N above
               the frames sent, a receiver that closes an idle session);
  eof:N        as ack:N, but close the connection without the hint (a receiver that dies);
  nak:N        answer the first N syslog frames, answer the next one "500 ...", then behave
               as ack:N;
  mute         answer "open", then read everything and answer nothing (a receiver that hangs).

Connections after the last plan entry get "ack". Every syslog message it answered 200 is
appended to LOG (one line each, as received): what a real receiver would have kept. Usage:
relp_receiver.py PORT-FILE LOG PLAN...   (writes the port it listens on to PORT-FILE)
"""
import socket
import sys


def frames(conn, pending, quiet):
    """Yields (txnr, command, data); None after `quiet` seconds without a byte; stops at EOF."""
    conn.settimeout(quiet)
    while True:
        while True:
            parts = pending.split(b" ", 3)
            if len(parts) < 3:
                break
            txnr, command, rest = parts[0], parts[1], b" ".join(parts[2:])
            length_text = rest.split(b" ", 1)[0].split(b"\n", 1)[0]
            if len(length_text) == len(rest):  # DATALEN not complete yet
                break
            if not length_text.isdigit():
                raise SystemExit("relp_receiver: malformed frame: %r" % bytes(pending[:80]))
            length = int(length_text)
            head = len(txnr) + 1 + len(command) + 1 + len(length_text)
            data_start = head + (1 if length > 0 else 0)
            end = data_start + length
            if len(pending) < end + 1:
                break
            if pending[end:end + 1] != b"\n":
                raise SystemExit("relp_receiver: malformed frame: %r" % bytes(pending[:80]))
            data = pending[data_start:end]
            del pending[:end + 1]
            yield int(txnr), command.decode(), data
        try:
            chunk = conn.recv(65536)
        except socket.timeout:
            yield None
            continue
        except ConnectionError:
            return
        if not chunk:
            return
        pending += chunk


def send(conn, txnr, command, data=b""):
    frame = b"%d %s %d" % (txnr, command.encode(), len(data))
    if data:
        frame += b" " + data
    try:
        conn.sendall(frame + b"\n")
    except OSError:
        pass


def serve(conn, plan, log):
    kind, _, count = plan.partition(":")
    limit = int(count) if count else None
    answered = 0
    pending = bytearray()
    def leave():
        if kind != "eof":
            send(conn, 0, "serverclose")

    for item in frames(conn, pending, 0.5 if limit is not None else None):
        if item is None:  # quiet: the client waits for answers that will not come
            if limit is not None:
                leave()
                return
            continue
        txnr, command, data = item
        if command == "open":
            send(conn, txnr, "rsp", b"200 OK\nrelp_version=0\nrelp_software=pii_audit-test\ncommands=syslog")
        elif command == "close":
            if kind == "mute":
                continue
            if limit is not None and answered >= limit:
                leave()
            else:
                send(conn, txnr, "rsp", b"200 OK")
            return
        elif command == "syslog":
            if kind == "mute":
                continue
            if limit is None or answered < limit:
                log.write(data + b"\n")
                log.flush()
                send(conn, txnr, "rsp", b"200 OK")
                answered += 1
            elif kind == "nak" and answered == limit:
                send(conn, txnr, "rsp", b"500 test receiver refuses this frame")
                answered += 1  # later frames are read and left unanswered
        else:
            send(conn, txnr, "rsp", b"500 unknown command")


def main():
    port_file, log_path, plans = sys.argv[1], sys.argv[2], sys.argv[3:]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    with open(port_file + ".tmp", "w") as f:
        f.write("%d\n" % listener.getsockname()[1])
    import os
    os.rename(port_file + ".tmp", port_file)
    with open(log_path, "ab") as log:
        n = 0
        while True:
            conn, _ = listener.accept()
            plan = plans[n] if n < len(plans) else "ack"
            n += 1
            sys.stderr.write("relp_receiver: connection %d: %s\n" % (n, plan))
            sys.stderr.flush()
            try:
                serve(conn, plan, log)
            finally:
                conn.close()


if __name__ == "__main__":
    main()
