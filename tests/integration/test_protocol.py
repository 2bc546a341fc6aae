#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The line protocol (docs/protocol.md) against a real, standalone credgated."""

import os
import random
import re
import socket
import threading
import time
import unittest

import cgtest

POLICY = """\
default = "deny";
rules = (
  { action = "org.example.allowed"; effect = "allow"; anyone = true; },
  { action = "org.example.denied";  effect = "deny";  anyone = true; },
  { action = "org.example.root.*";  effect = "allow"; uids = ["0"]; },
  { action = "org.example.*.x";     effect = "allow"; anyone = true; }
);
"""

ROOT = os.geteuid() == 0


def my_creds_line(pid=None):
    groups = ",".join(str(g) for g in sorted(set(os.getgroups())))
    return (f"CREDS pid={pid if pid is not None else os.getpid()} uid={os.geteuid()} "
            f"gid={os.getegid()} groups={groups}")


# (request, reply) pairs that are valid requests, for the policy above.
GOOD = [
    ("PING", "PONG"),
    ("CHECK org.example.allowed", "ALLOW"),
    ("CHECK org.example.denied", "DENY"),
    ("CHECK org.example.unlisted", "DENY"),
    ("CHECK org.example.root.reboot", "ALLOW" if ROOT else "DENY"),
    ("CHECK org.example.a.b.x", "ALLOW"),
    ("CHECK org.example.x", "DENY"),          # "org.example." + "" + ".x" needs one more '.'
    ("CHECK Org.example.allowed", "DENY"),    # case-sensitive
    ("CHECK org.example.allowed.", "DENY"),   # exact rule, not a prefix
    ("CHECK a", "DENY"),
    ("CHECK " + "a" * 255, "DENY"),           # longest action
    ("CHECK A-Z_a.z:0/9-", "DENY"),           # every kind of action character
]


class DaemonTest(unittest.TestCase):
    """A fresh standalone daemon for every test: a crash cannot leak into
    the next test, and tearDown proves the daemon survived (exit 0 on
    SIGTERM)."""

    timeout = 30

    def setUp(self):
        self.d = cgtest.Daemon(POLICY, timeout=self.timeout)
        self.addCleanup(self.d.cleanup)
        self.d.start()
        self.sock = self.d.socket

    def tearDown(self):
        self.d.stop()

    def assert_serving(self):
        """A fresh client still gets correct answers."""
        self.assertTrue(self.d.alive(), "daemon died:\n" + self.d.stderr())
        with cgtest.Client(self.sock) as c:
            self.assertEqual(c.ask("PING"), "PONG")
            self.assertEqual(c.ask("CHECK org.example.allowed"), "ALLOW")
            self.assertEqual(c.ask("CHECK org.example.denied"), "DENY")
            self.assertEqual(c.ask("WHOAMI"), my_creds_line())

    def assert_err_and_close(self, data, reason, prefix=b""):
        """Send @data; the daemon must reply @prefix + ERR @reason and close."""
        with cgtest.Client(self.sock) as c:
            cgtest.send_ignoring_close(c.sock, data)
            got = c.read_to_eof()
        self.assertEqual(got, prefix + f"ERR {reason}\n".encode())
        self.assert_serving()


class TestRequests(DaemonTest):
    def test_ping(self):
        with cgtest.Client(self.sock) as c:
            c.send(b"PING\n")
            self.assertEqual(c.readline(), b"PONG\n")
            time.sleep(0.05)
            self.assertTrue(c.nothing_pending(), "exactly one reply line, connection stays open")
            self.assertEqual(c.ask("PING"), "PONG")

    def test_whoami(self):
        with cgtest.Client(self.sock) as c:
            self.assertEqual(c.ask("WHOAMI"), my_creds_line())

    @cgtest.needs_root
    def test_whoami_root(self):
        with cgtest.Client(self.sock) as c:
            line = c.ask("WHOAMI")
        self.assertRegex(line, r"^CREDS pid=\d+ uid=0 gid=0 groups=(\d+(,\d+)*)?$")
        self.assertEqual(line, my_creds_line())

    def test_check(self):
        with cgtest.Client(self.sock) as c:
            for req, rep in GOOD:
                with self.subTest(req=req):
                    self.assertEqual(c.ask(req), rep)

    def test_one_connection_per_request(self):
        for req, rep in GOOD:
            with self.subTest(req=req):
                self.assertEqual(cgtest.request(self.sock, req.encode() + b"\n", lines=1), rep.encode() + b"\n")

    def test_pipelining_1000(self):
        rnd = random.Random(1)
        pairs = [rnd.choice(GOOD + [("WHOAMI", my_creds_line())]) for _ in range(1000)]
        data = b"".join(q.encode() + b"\n" for q, _ in pairs)
        want = b"".join(a.encode() + b"\n" for _, a in pairs)
        with cgtest.Client(self.sock) as c:
            c.send(data)  # one write
            got = b"".join(c.readline() for _ in range(1000))
            self.assertEqual(got, want)
            time.sleep(0.05)
            self.assertTrue(c.nothing_pending(), "more replies than requests")
            self.assertEqual(c.ask("PING"), "PONG")

    def test_split_byte_by_byte(self):
        req = b"CHECK org.example.allowed\n"
        with cgtest.Client(self.sock) as c:
            for i in range(len(req) - 1):
                c.send(req[i:i + 1])
                time.sleep(0.005)
            time.sleep(0.05)
            self.assertTrue(c.nothing_pending(), "reply before the request's newline")
            c.send(b"\n")
            self.assertEqual(c.readline(), b"ALLOW\n")
            # Two requests and a half, one byte per write, then the rest.
            data = b"PING\nCHECK org.example.denied\nWHO"
            for i in range(len(data)):
                c.send(data[i:i + 1])
                time.sleep(0.002)
            self.assertEqual(c.readline(), b"PONG\n")
            self.assertEqual(c.readline(), b"DENY\n")
            time.sleep(0.05)
            self.assertTrue(c.nothing_pending())
            c.send(b"AMI\n")
            self.assertEqual(c.readline().decode().rstrip("\n"), my_creds_line())

    def test_split_random_chunks(self):
        rnd = random.Random(7)
        pairs = [rnd.choice(GOOD) for _ in range(200)]
        data = b"".join(q.encode() + b"\n" for q, _ in pairs)
        want = b"".join(a.encode() + b"\n" for _, a in pairs)
        with cgtest.Client(self.sock) as c:
            i = 0
            while i < len(data):
                n = rnd.randint(1, 40)
                c.send(data[i:i + n])
                i += n
            got = b"".join(c.readline() for _ in range(len(pairs)))
        self.assertEqual(got, want)

    def test_line_too_long_across_writes(self):
        with cgtest.Client(self.sock) as c:
            c.send(b"CHECK " + b"a" * 994)
            time.sleep(0.05)
            self.assertTrue(c.nothing_pending())
            c.send(b"a" * 23)  # 1023 bytes, no newline yet: still fine
            time.sleep(0.05)
            self.assertTrue(c.nothing_pending(), "line-too-long before 1024 bytes")
            cgtest.send_ignoring_close(c.sock, b"a")  # the 1024th byte
            self.assertEqual(c.read_to_eof(), b"ERR line-too-long\n")
        self.assert_serving()

    def test_longest_line_across_writes(self):
        with cgtest.Client(self.sock) as c:
            c.send(b"CHECK " + b"a" * 994)
            time.sleep(0.02)
            c.send(b"a" * 23 + b"\n")  # 1023 + newline: not too long
            self.assertEqual(c.read_to_eof(), b"ERR bad-action\n")

    def test_longest_line_is_accepted(self):
        # 1023 bytes + "\n" is exactly 1024: not line-too-long (the action is
        # too long for the grammar, so bad-action).
        line = b"CHECK " + b"a" * (1023 - 6)
        self.assertEqual(len(line) + 1, 1024)
        self.assert_err_and_close(line + b"\n", "bad-action")


# Every ERR reason. name -> (bytes sent, reason)
LONG_1M = b"CHECK " + b"a" * (1024 * 1024)
ERRORS = {
    # line-too-long: 1024 bytes without a newline
    "too_long_1024_no_newline": (b"A" * 1024, "line-too-long"),
    "too_long_check_1024": (b"CHECK " + b"a" * 1018, "line-too-long"),
    "too_long_1024_then_newline": (b"P" * 1024 + b"\n", "line-too-long"),
    "too_long_1mb": (LONG_1M, "line-too-long"),
    "too_long_1mb_newline": (LONG_1M + b"\n", "line-too-long"),
    "too_long_binary": (b"\x00" * 1024, "line-too-long"),
    # bad-request: empty line, bytes outside printable ASCII, arguments
    "empty_line": (b"\n", "bad-request"),
    "nul": (b"PING\x00\n", "bad-request"),
    "nul_only": (b"\x00\n", "bad-request"),
    "tab": (b"CHECK\ta\n", "bad-request"),
    "cr": (b"PING\r\n", "bad-request"),
    "cr_check": (b"CHECK org.example.allowed\r\n", "bad-request"),
    "del": (b"PING\x7f\n", "bad-request"),
    "byte_0x80": (b"CHECK a\x80\n", "bad-request"),
    "byte_0xff": (b"\xffPING\n", "bad-request"),
    "utf8": ("CHECK caf\u00e9\n".encode(), "bad-request"),
    "escape": (b"PING\x1b[0m\n", "bad-request"),
    "ctrl_before_verb_check": (b"ping\x01\n", "bad-request"),
    "check_missing_arg": (b"CHECK\n", "bad-request"),
    "check_empty_arg": (b"CHECK \n", "bad-request"),
    "check_two_spaces": (b"CHECK  a\n", "bad-request"),
    "check_extra_arg": (b"CHECK a b\n", "bad-request"),
    "check_trailing_space": (b"CHECK a \n", "bad-request"),
    "ping_arg": (b"PING x\n", "bad-request"),
    "ping_trailing_space": (b"PING \n", "bad-request"),
    "whoami_arg": (b"WHOAMI root\n", "bad-request"),
    "whoami_trailing_space": (b"WHOAMI \n", "bad-request"),
    # bad-action
    "action_star": (b"CHECK org.example.*\n", "bad-action"),
    "action_256": (b"CHECK " + b"a" * 256 + b"\n", "bad-action"),
    "action_comma": (b"CHECK a,b\n", "bad-action"),
    "action_equals": (b"CHECK a=b\n", "bad-action"),
    "action_tilde": (b"CHECK ~\n", "bad-action"),
    "action_quote": (b"CHECK 'a'\n", "bad-action"),
    "action_question": (b"CHECK org.example.?\n", "bad-action"),
    # unknown-command, including lower case
    "lower_ping": (b"ping\n", "unknown-command"),
    "lower_check": (b"check org.example.allowed\n", "unknown-command"),
    "mixed_case": (b"Ping\n", "unknown-command"),
    "lower_whoami": (b"whoami\n", "unknown-command"),
    "foo_args": (b"FOO a b\n", "unknown-command"),
    "verb_prefix": (b"CHECKS a\n", "unknown-command"),
    "verb_short": (b"CHEC a\n", "unknown-command"),
    "leading_space": (b" PING\n", "unknown-command"),
    "lower_check_extra_args": (b"check a b\n", "unknown-command"),
    "star_verb": (b"*\n", "unknown-command"),
}


class TestErrors(DaemonTest):
    """Each bad input gets its ERR, then the daemon closes the connection,
    and a fresh client still gets correct answers."""


def _make_err_test(data, reason):
    def test(self):
        self.assert_err_and_close(data, reason)
    return test


for _name, (_data, _reason) in ERRORS.items():
    setattr(TestErrors, f"test_{_reason.replace('-', '_')}_{_name}", _make_err_test(_data, _reason))


class TestErrorOrdering(DaemonTest):
    def test_replies_before_err_nothing_after(self):
        data = b"PING\nCHECK org.example.allowed\nbogus\nPING\nCHECK org.example.allowed\n"
        self.assert_err_and_close(data, "unknown-command", prefix=b"PONG\nALLOW\n")

    def test_many_replies_before_err(self):
        data = b"CHECK org.example.denied\n" * 500 + b"CHECK \n" + b"PING\n" * 500
        self.assert_err_and_close(data, "bad-request", prefix=b"DENY\n" * 500)

    def test_replies_before_line_too_long(self):
        data = b"PING\nWHOAMI\n" + b"x" * 2000
        prefix = b"PONG\n" + my_creds_line().encode() + b"\n"
        self.assert_err_and_close(data, "line-too-long", prefix=prefix)

    def test_err_after_backpressure(self):
        """500 KB of replies are owed (more than the daemon buffers) when the
        bad line arrives: every one of them comes first, then the ERR."""
        n = 100000
        data = b"PING\n" * n + b"nope\n" + b"PING\n" * 10
        with cgtest.Client(self.sock, timeout=20) as c:
            t = threading.Thread(target=cgtest.send_ignoring_close, args=(c.sock, data))
            t.start()
            try:
                got = c.read_to_eof()
            finally:
                t.join(20)
        self.assertEqual(got.count(b"PONG\n"), n)
        self.assertEqual(got, b"PONG\n" * n + b"ERR unknown-command\n")
        self.assert_serving()

    def test_err_after_split_requests(self):
        with cgtest.Client(self.sock) as c:
            c.send(b"PI")
            c.send(b"NG\nCHE")
            self.assertEqual(c.readline(), b"PONG\n")
            c.send(b"CK org.example.*\nPING\n")
            self.assertEqual(c.read_to_eof(), b"ERR bad-action\n")
        self.assert_serving()

    def test_bad_line_after_good_conversation(self):
        with cgtest.Client(self.sock) as c:
            for _ in range(3):
                self.assertEqual(c.ask("CHECK org.example.allowed"), "ALLOW")
            c.send(b"CHECK a\tb\nPING\n")
            self.assertEqual(c.read_to_eof(), b"ERR bad-request\n")
        self.assert_serving()

    def test_random_junk(self):
        pat = re.compile(rb"^ERR (bad-request|line-too-long|unknown-command|bad-action)\n$")
        rnd = random.Random(2024)
        for i in range(30):
            junk = rnd.randbytes(rnd.choice([1, 7, 100, 1023, 1024, 5000, 70000]))
            if b"\n" not in junk[:1024] and len(junk) < 1024:
                junk += b"\n"  # make sure a line completes
            with self.subTest(i=i, size=len(junk)):
                with cgtest.Client(self.sock) as c:
                    cgtest.send_ignoring_close(c.sock, junk)
                    got = c.read_to_eof()
                self.assertRegex(got, pat)
        self.assert_serving()


class TestRobustness(DaemonTest):
    def test_disconnect_before_reading(self):
        for i in range(200):
            s = cgtest.connect(self.sock)
            s.sendall(b"CHECK org.example.allowed\n")
            s.close()
        self.assert_serving()

    def test_disconnect_with_many_replies_owed(self):
        # Enough replies to overflow the socket buffer, so that the daemon is
        # mid-write when the client vanishes (EPIPE must not kill it).
        for i in range(50):
            s = cgtest.connect(self.sock)
            cgtest.send_ignoring_close(s, b"WHOAMI\n" * 20000)
            s.close()
        self.assert_serving()

    def test_shutdown_write_still_answered_or_closed(self):
        # Half-close after a request: the daemon must not crash or hang the
        # connection forever; whatever it sends must be the reply.
        with cgtest.Client(self.sock) as c:
            c.send(b"PING\n")
            c.sock.shutdown(socket.SHUT_WR)
            got = c.read_to_eof()
        self.assertIn(got, (b"", b"PONG\n"))
        self.assert_serving()

    def test_300_concurrent_connections(self):
        conns = []
        try:
            for i in range(300):
                conns.append(cgtest.connect(self.sock))
            # All 300 are connected at once before any reply is read.
            for i, s in enumerate(conns):
                s.sendall(b"CHECK org.example.allowed\n" if i % 2 else b"CHECK org.example.denied\n")
            for i, s in enumerate(conns):
                got, _ = cgtest.recv_all(s, timeout=5, lines=1)
                self.assertEqual(got, b"ALLOW\n" if i % 2 else b"DENY\n", f"connection {i}")
            # And each connection still works.
            for s in conns:
                s.sendall(b"PING\n")
            for i, s in enumerate(conns):
                got, _ = cgtest.recv_all(s, timeout=5, lines=1)
                self.assertEqual(got, b"PONG\n", f"connection {i}")
        finally:
            for s in conns:
                s.close()
        self.assert_serving()

    def test_non_reading_client_does_not_block_others(self):
        hog = cgtest.connect(self.sock)
        try:
            hog.setblocking(False)
            chunk = b"WHOAMI\n" * 4096
            sent = 0
            deadline = time.monotonic() + 10
            # Write requests (never reading) until the kernel pushes back:
            # the daemon has stopped reading us.
            stalls = 0
            while time.monotonic() < deadline and sent < 64 * 1024 * 1024:
                try:
                    sent += hog.send(chunk[sent % len(b"WHOAMI\n"):])
                    stalls = 0
                except BlockingIOError:
                    stalls += 1
                    if stalls >= 20:
                        break
                    time.sleep(0.01)
            self.assertGreater(stalls, 0, "the daemon never pushed back on a client that does not read")

            # Another client is answered promptly.
            t0 = time.monotonic()
            with cgtest.Client(self.sock, timeout=1.0) as c:
                self.assertEqual(c.ask("PING", timeout=1.0), "PONG")
                self.assertEqual(c.ask("CHECK org.example.allowed", timeout=1.0), "ALLOW")
            self.assertLess(time.monotonic() - t0, 1.0)

            # The hog gets its replies, in order, once it reads.
            hog.setblocking(True)
            n_lines = sent // len(b"WHOAMI\n")
            want = (my_creds_line() + "\n").encode()
            got = bytearray()
            hog.settimeout(10)
            while got.count(b"\n") < n_lines:
                b = hog.recv(1 << 20)
                if not b:
                    break
                got += b
            lines = bytes(got).split(b"\n")[:-1]
            self.assertEqual(len(lines), n_lines)
            self.assertTrue(all(line + b"\n" == want for line in lines), "hog's replies are not all CREDS lines")
        finally:
            hog.close()
        self.assert_serving()


class TestTimeout(DaemonTest):
    timeout = 1

    def assert_timeout(self, c, t0, lo=0.9, hi=3.0):
        got = c.read_to_eof(timeout=5)
        took = time.monotonic() - t0
        self.assertEqual(got, b"ERR timeout\n")
        self.assertGreaterEqual(took, lo, "closed too early")
        self.assertLessEqual(took, hi, "closed too late")

    def test_silent_client(self):
        t0 = time.monotonic()
        with cgtest.Client(self.sock) as c:
            self.assert_timeout(c, t0)
        self.assert_serving()

    def test_active_client_stays_open(self):
        with cgtest.Client(self.sock) as c:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 3.0:
                self.assertEqual(c.ask("PING"), "PONG")
                time.sleep(0.3)
            self.assertEqual(c.ask("CHECK org.example.allowed"), "ALLOW")

    def test_half_request_then_silence(self):
        t0 = time.monotonic()
        with cgtest.Client(self.sock) as c:
            c.send(b"CHECK org.exa")
            self.assert_timeout(c, t0)
        self.assert_serving()

    def test_trickling_bytes_do_not_restart_timeout(self):
        t0 = time.monotonic()
        with cgtest.Client(self.sock) as c:
            # One byte every 0.2 s of a line that never ends.
            for i in range(25):
                if not c.nothing_pending():
                    break
                try:
                    c.send(b"C")
                except (BrokenPipeError, ConnectionResetError):
                    break
                time.sleep(0.2)
            self.assert_timeout(c, t0)

    def test_timeout_counts_from_last_request(self):
        with cgtest.Client(self.sock) as c:
            time.sleep(0.6)
            self.assertEqual(c.ask("PING"), "PONG")
            t1 = time.monotonic()
            self.assert_timeout(c, t1)

    def test_timeout_after_pipelined_replies(self):
        t0 = time.monotonic()
        with cgtest.Client(self.sock) as c:
            c.send(b"PING\nPING\n")
            self.assertEqual(c.readline(), b"PONG\n")
            self.assertEqual(c.readline(), b"PONG\n")
            self.assert_timeout(c, t0)


if __name__ == "__main__":
    cgtest.main()
