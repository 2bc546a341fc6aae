#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""One credgated run for 'make check-valgrind' (tests/check-valgrind.sh).

$CREDGATED is tests/valgrind-credgated.sh, so the daemon runs under
memcheck. One daemon serves every step below, in order, so that a single
valgrind log covers them all: checks as several identities, CHECK-PEER with
passed fds (good and bad), malformed and oversized input, many connections,
a SIGHUP reload with a valid and with invalid policies, then SIGTERM and an
exit status of 0 (valgrind exits 1 on an error or a definite leak).

Bounded: every wait has a timeout, generous for valgrind's slowdown; the
whole run takes well under a minute. Needs root for the other identities
(skipped otherwise, the rest still runs).
"""

import os
import signal
import socket
import subprocess
import unittest

import cgtest

POLICY = """\
default = "deny";
rules = (
  { action = "vg.any"; effect = "allow"; anyone = true; },
  { action = "vg.root"; effect = "allow"; uids = ["0"]; },
  { action = "vg.u1000"; effect = "allow"; uids = ["1000"]; },
  { action = "vg.users"; effect = "allow"; groups = ["users"]; },
  { action = "vg.bin"; effect = "allow"; users = ["bin"]; },
  { action = "vg.low.*"; effect = "allow"; uids = ["0-10"]; },
  { action = "vg.nobody"; effect = "deny"; users = ["nobody"]; },
  { action = "vg.nobody"; effect = "allow"; anyone = true; },
  { action = "vg.reload"; effect = "allow"; anyone = true; }
);
"""
POLICY_NEW = POLICY.replace('"vg.reload"; effect = "allow"', '"vg.reload"; effect = "deny"')
# A syntax error right after a string (libconfig 1.5 leaks 64 bytes there,
# see tests/valgrind.supp) and a semantic error (an id out of range).
POLICY_SYNTAX = 'default = "deny";\nrules = ( { action = "vg.any" 1; effect = "allow"; } );\n'
POLICY_BAD_ID = 'default = "deny";\nrules = ( { action = "vg.any"; effect = "allow"; uids = ["99999999999"]; } );\n'

ACTIONS = ["vg.any", "vg.root", "vg.u1000", "vg.users", "vg.bin", "vg.low.x", "vg.nobody", "vg.none"]
IDENTITIES = {
    "root": ((0, 0, []), {"vg.any", "vg.root", "vg.low.x", "vg.nobody"}),
    "u1000": ((1000, 1000, [100]), {"vg.any", "vg.u1000", "vg.users", "vg.nobody"}),
    "bin": ((2, 2, []), {"vg.any", "vg.bin", "vg.low.x", "vg.nobody"}),
    "nobody": ((65534, 65534, []), {"vg.any"}),
}
SLOW = 30.0  # seconds for any single answer under valgrind


def ask_all(path, actions):
    with cgtest.Client(path, SLOW) as c:
        return {a: c.ask(f"CHECK {a}") for a in actions}, c.ask("WHOAMI")


class Run(unittest.TestCase):
    """The steps share one daemon; the methods run in name order."""

    @classmethod
    def setUpClass(cls):
        cls.empty = cgtest.mkdtemp("cg-vgrd-")
        cls.addClassCleanup(os.rmdir, cls.empty)
        cls.d = cgtest.Daemon(POLICY, timeout=60, wait=False,
                              args=["--rules-dir", cls.empty, "--log", "all", "--log-target", "stderr"])
        cls.addClassCleanup(cls.d.cleanup)
        cls.d.start()
        cls.d.wait_ready(timeout=120)

    def client(self):
        return cgtest.Client(self.d.socket, SLOW)

    def expect(self, data, want, eof=True):
        out = cgtest.request(self.d.socket, data, timeout=SLOW, lines=None if eof else want.count(b"\n"))
        self.assertEqual(out, want)

    # -- decisions ---------------------------------------------------------
    def test_1_identities(self):
        for name, ((uid, gid, groups), allowed) in IDENTITIES.items():
            with self.subTest(name):
                if uid != os.getuid() and not cgtest.is_root():
                    continue
                got, who = cgtest.as_identity(uid, gid, groups, lambda: ask_all(self.d.socket, ACTIONS),
                                              timeout=120)
                self.assertEqual({a for a, v in got.items() if v == "ALLOW"}, allowed, got)
                self.assertEqual({v for v in got.values()} - {"ALLOW"}, {"DENY"})
                self.assertRegex(who, rf"^CREDS pid=\d+ uid={uid} gid={gid} ")

    def test_2_check_peer(self):
        with self.client() as c:
            # The peer of a socketpair is this process.
            a, b = socket.socketpair()
            with a, b:
                socket.send_fds(c.sock, [b"CHECK-PEER vg.any\n"], [b.fileno()])
                self.assertEqual(c.readline(), b"ALLOW\n")
                socket.send_fds(c.sock, [b"CHECK-PEER vg.u1000\n"], [b.fileno()])
                self.assertEqual(c.readline(), b"ALLOW\n" if os.getuid() == 1000 else b"DENY\n")
        if cgtest.is_root():
            # A peer of another identity: a child as uid 1000 connects to us.
            d = cgtest.mkdtemp("cg-vgpeer-")
            path = os.path.join(d, "svc")
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            srv.bind(path)
            os.chmod(path, 0o666)
            srv.listen(1)
            srv.settimeout(SLOW)
            child = subprocess.Popen(["/usr/bin/python3", "-c",
                                      "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
                                      " s.recv(1)", path], user=1000, group=1000, extra_groups=[100], cwd="/")
            try:
                conn, _ = srv.accept()
                with conn, self.client() as c:
                    for action, want in (("vg.u1000", b"ALLOW\n"), ("vg.users", b"ALLOW\n"), ("vg.root", b"DENY\n")):
                        socket.send_fds(c.sock, [f"CHECK-PEER {action}\n".encode()], [conn.fileno()])
                        self.assertEqual(c.readline(), want, action)
            finally:
                child.kill()
                child.wait()
                srv.close()
                os.unlink(path)
                os.rmdir(d)
        # Bad fds: none, two, on another line, a pipe. Each ends the connection.
        r, w = os.pipe()
        a, b = socket.socketpair()
        try:
            for what, data, fds in (("no fd", b"CHECK-PEER vg.any\n", []),
                                    ("two fds", b"CHECK-PEER vg.any\n", [a.fileno(), b.fileno()]),
                                    ("fd on PING", b"PING\n", [a.fileno()]),
                                    ("a pipe", b"CHECK-PEER vg.any\n", [r]),
                                    ("many fds", b"CHECK-PEER vg.any\n", [r, w] * 100)):
                with self.subTest(what), self.client() as c:
                    if fds:
                        socket.send_fds(c.sock, [data], fds)
                    else:
                        c.send(data)
                    self.assertEqual(c.read_to_eof(), b"ERR bad-peer-fd\n")
            # fds left unread in the queue of a connection that closes.
            with self.client() as c:
                socket.send_fds(c.sock, [b"CHECK vg.any"], [r, w, a.fileno()])
        finally:
            for fd in (r, w):
                os.close(fd)
            a.close()
            b.close()

    # -- bad input ---------------------------------------------------------
    def test_3_malformed(self):
        cases = [
            (b"\n", b"ERR bad-request\n"),
            (b"PING\r\n", b"ERR bad-request\n"),
            (b"ping\n", b"ERR unknown-command\n"),
            (b"CHECK a b\n", b"ERR bad-request\n"),
            (b"CHECK org.example.*\n", b"ERR bad-action\n"),
            (b"CHECK " + b"a" * 256 + b"\n", b"ERR bad-action\n"),
            (b"CHECK \x00\xff\n", b"ERR bad-request\n"),
            (b"PING\nPING\nFOO\nPING\n", b"PONG\nPONG\nERR unknown-command\n"),
            (b"x" * 1023 + b"\n", b"ERR unknown-command\n"),
        ]
        for data, want in cases:
            with self.subTest(data[:40]):
                out = cgtest.request(self.d.socket, data, timeout=SLOW)
                self.assertEqual(out[:len(want)], want)
                self.assertTrue(out.startswith(b"PONG") or out.startswith(b"ERR "), out)
        # Oversized: 1 MB without a newline, and random binary.
        for data in (b"C" * (1 << 20), os.urandom(256 * 1024)):
            out = cgtest.request(self.d.socket, data, timeout=SLOW)
            self.assertTrue(out.startswith(b"ERR "), out[:80])
        # A request split byte by byte, and a half line then a close.
        with self.client() as c:
            for ch in b"CHECK vg.any\n":
                c.send(bytes([ch]))
            self.assertEqual(c.readline(), b"ALLOW\n")
            c.send(b"CHECK vg.a")
        # Many connections at once, closed without a word.
        socks = [cgtest.connect(self.d.socket, SLOW) for _ in range(50)]
        for s in socks:
            s.close()
        self.assertEqual(cgtest.request(self.d.socket, b"PING\n", timeout=SLOW, lines=1), b"PONG\n")

    # -- reloads -----------------------------------------------------------
    def wait_answer(self, action, want):
        def ok():
            with self.client() as c:
                return c.ask(f"CHECK {action}") == want
        cgtest.wait_until(ok, timeout=120, interval=0.2, what=f"CHECK {action} -> {want}")

    def test_4_reload(self):
        d = self.d
        d.write_policy(POLICY_NEW)
        d.kill(signal.SIGHUP)
        self.wait_answer("vg.reload", "DENY")
        for bad, why in ((POLICY_SYNTAX, "syntax error"), (POLICY_BAD_ID, "99999999999")):
            n = d.stderr().count("reload failed")
            d.write_policy(bad)
            d.kill(signal.SIGHUP)
            cgtest.wait_until(lambda: d.stderr().count("reload failed") > n, timeout=120, interval=0.2,
                              what="a failed reload")
            self.assertIn(why, d.stderr().rpartition("reload failed")[0].rpartition("reloaded: ")[2])
            self.assertEqual(cgtest.request(d.socket, b"CHECK vg.reload\n", timeout=SLOW, lines=1), b"DENY\n")
        d.write_policy(POLICY)
        d.kill(signal.SIGHUP)
        self.wait_answer("vg.reload", "ALLOW")

    # -- exit ----------------------------------------------------------------
    def test_5_sigterm(self):
        d = self.d
        d.kill(signal.SIGTERM)
        rc = d.wait_exit(timeout=120)
        self.assertEqual(rc, 0, f"credgated under valgrind exited with {rc} (1: memcheck found an error or a "
                                f"definite leak; see vg-logs/credgated.{d.pid}.log):\n{d.stderr()[-3000:]}")
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    cgtest.main()
