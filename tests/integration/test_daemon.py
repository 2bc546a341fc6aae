#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""credgated's life cycle: command line, policy check, binding the socket
standalone, socket activation, sd_notify, signals and reload."""

import array
import os
import re
import shutil
import signal
import socket
import stat
import time
import unittest

import cgtest

POLICY = """\
default = "deny";
rules = (
  { action = "org.example.status"; effect = "allow"; anyone = true; },
  { action = "org.example.reload"; effect = "allow"; anyone = true; }
);
"""

# Same file, answers changed: reload flips org.example.reload and adds one.
POLICY_CHANGED = """\
default = "deny";
rules = (
  { action = "org.example.status"; effect = "allow"; anyone = true; },
  { action = "org.example.reload"; effect = "deny"; anyone = true; },
  { action = "org.example.new"; effect = "allow"; anyone = true; }
);
"""

# Errors on lines 3, 4, 5 (the rule's opening brace) and 10.
BROKEN = """\
rules = (
  { action = "a"; effect = "allow"; anyone = true; },
  { action = "b"; effect = "permit"; anyone = true; },
  { action = "c"; effect = "allow"; uids = [1000]; },
  {
    action = "d";
    effect = "allow";
    users = [];
  },
  { action = "e"; effect = "deny"; users = ["no-such-user-cgtest"]; }
);
"""
BROKEN_LINES = [3, 4, 5, 10]


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def ask(path, line):
    return cgtest.request(path, line.encode() + b"\n", lines=1).decode().rstrip("\n")


class TempDirTest(unittest.TestCase):
    def setUp(self):
        self.dir = cgtest.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def daemon(self, policy=POLICY, **kw):
        d = cgtest.Daemon(policy, **kw)
        self.addCleanup(d.cleanup)
        return d


class TestCommandLine(TempDirTest):
    def test_help(self):
        for opt in ("-h", "--help"):
            r = cgtest.run([cgtest.credgated(), opt])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("Usage", r.stdout)
            self.assertIn("--timeout", r.stdout)

    def test_version(self):
        for opt in ("-V", "--version"):
            r = cgtest.run([cgtest.credgated(), opt])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertRegex(r.stdout, r"^credgated \S+\n$")

    def test_usage_errors_exit_2(self):
        policy = self.path("p.conf")
        write(policy, POLICY)
        sock = self.path("s.sock")
        for args in (["--bogus"], ["-x"], ["unexpected-arg"], ["--timeout", "0"], ["--timeout", "abc"],
                     ["--timeout", "-1"], ["--timeout", ""], ["--timeout", "1x"], ["--timeout"], ["-c"]):
            with self.subTest(args=args):
                r = cgtest.run([cgtest.credgated(), "-c", policy, "-s", sock, "--rules-dir", self.path("rules.d")]
                               + args, timeout=10)
                self.assertEqual(r.returncode, 2, f"stdout={r.stdout!r} stderr={r.stderr!r}")
                self.assertNotEqual(r.stderr, "", "a usage error must say why")
                self.assertFalse(os.path.lexists(sock), "bound a socket despite a usage error")

    def test_check_shipped_policy(self):
        # A copy: the source tree may sit below a folder others can write
        # (a clone in /tmp), which credgated rightly refuses.
        conf = self.path("credgate.conf")
        shutil.copyfile(os.path.join(cgtest.srcdir(), "conf", "credgate.conf"), conf)
        os.chmod(conf, 0o644)
        rules = self.path("rules.d")
        r = cgtest.run([cgtest.credgated(), "-t", "-c", conf, "--rules-dir", rules])
        self.assertEqual(r.returncode, 0, r.stderr)
        r = cgtest.run([cgtest.credgated(), "--check-config", "--config", conf, "--rules-dir", rules])
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_check_broken_policy(self):
        policy = self.path("broken.conf")
        write(policy, BROKEN)
        r = cgtest.run([cgtest.credgated(), "-t", "-c", policy, "--rules-dir", self.path("rules.d")])
        self.assertEqual(r.returncode, 1, r.stderr)
        for line in BROKEN_LINES:
            self.assertRegex(r.stderr, re.compile("^" + re.escape(f"{policy}:{line}: ") + r"\S", re.M))
        self.assertRegex(r.stderr, re.escape(f"{policy}:4: ") + r".*quot", "bare integer: say to quote it")

    def test_check_syntax_error(self):
        policy = self.path("syntax.conf")
        write(policy, 'rules = (\n  { action = "a"; effect = "allow"; anyone = true; },\n);\n')
        r = cgtest.run([cgtest.credgated(), "-t", "-c", policy, "--rules-dir", self.path("rules.d")])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, re.compile("^" + re.escape(policy) + r":3: ", re.M))

    def test_check_missing_rules_and_file(self):
        policy = self.path("norules.conf")
        write(policy, 'default = "deny";\n')
        missing = self.path("missing.conf")
        for p in (policy, missing):
            with self.subTest(policy=p):
                r = cgtest.run([cgtest.credgated(), "-t", "-c", p, "--rules-dir", self.path("rules.d")])
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertRegex(r.stderr, re.compile("^" + re.escape(p) + r": \S", re.M))

    def test_check_warnings_only(self):
        policy = self.path("empty.conf")
        write(policy, "rules = ();\n")
        r = cgtest.run([cgtest.credgated(), "-t", "-c", policy, "--rules-dir", self.path("rules.d")])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stderr, re.escape(f"{policy}:1: ") + ".*warning|warning.*" + re.escape(policy))

    def test_refuses_to_start_on_invalid_policy(self):
        for activate in (False, True):
            with self.subTest(activate=activate):
                d = self.daemon(BROKEN, activate=activate, wait=False)
                d.start()
                if activate:
                    # systemd-socket-activate starts the daemon on the first
                    # connection; it must take it and then die.
                    cgtest.wait_until(lambda: os.path.exists(d.socket), what="the activation socket")
                    s = cgtest.connect(d.socket)
                    self.addCleanup(s.close)
                rc = d.wait_exit(10)
                self.assertEqual(rc, 1, d.stderr())
                self.assertIn(f"{d.policy_path}:3: ", d.stderr())
                if not activate:
                    self.assertFalse(os.path.lexists(d.socket), "bound a socket with an invalid policy")


class TestStandalone(TempDirTest):
    def assert_socket(self, path):
        st = os.lstat(path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode), f"{path} is not a socket")
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o666, f"socket mode {oct(stat.S_IMODE(st.st_mode))}")

    def assert_reachable_by_nobody(self, path):
        if not cgtest.is_root():
            return
        who = cgtest.as_identity(65534, 65534, [], lambda: ask(path, "WHOAMI"))
        self.assertRegex(who, r"^CREDS pid=\d+ uid=65534 gid=65534 groups=$")

    def test_socket_mode_0666(self):
        with self.daemon() as d:
            self.assert_socket(d.socket)
            self.assertEqual(ask(d.socket, "CHECK org.example.status"), "ALLOW")
            self.assert_reachable_by_nobody(d.socket)

    def test_creates_missing_parent_dir(self):
        sock = self.path("run/credgate/cg.sock")
        os.mkdir(self.path("run"), 0o755)
        with self.daemon(socket_path=sock) as d:
            st = os.stat(os.path.dirname(sock))
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o755)
            self.assert_socket(sock)
            self.assertEqual(ask(sock, "PING"), "PONG")
            self.assert_reachable_by_nobody(sock)
        self.assertFalse(os.path.lexists(sock))

    def test_parent_dir_mode_under_umask_077(self):
        # The shipped unit runs with UMask=0077; the documented 0755 must not
        # depend on the umask, or non-root clients cannot reach the 0666 socket.
        sock = self.path("sub/cg.sock")
        with self.daemon(socket_path=sock, umask=0o077) as d:
            st = os.stat(os.path.dirname(sock))
            self.assertEqual(oct(stat.S_IMODE(st.st_mode)), oct(0o755), "parent dir mode")
            self.assert_reachable_by_nobody(sock)

    def test_socket_mode_under_umask_077(self):
        with self.daemon(umask=0o077) as d:
            self.assert_socket(d.socket)
            self.assert_reachable_by_nobody(d.socket)

    def test_replaces_stale_socket(self):
        sock = self.path("cg.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(sock)
        s.close()  # the file stays, nobody listens
        with self.assertRaises(ConnectionRefusedError):
            cgtest.connect(sock)
        with self.daemon(socket_path=sock) as d:
            self.assertEqual(ask(sock, "PING"), "PONG")
            self.assert_socket(sock)
            self.assertNotIn("already running", d.stderr())
        self.assertFalse(os.path.lexists(sock))

    def test_refuses_live_socket(self):
        first = self.daemon()
        first.start()
        before = os.lstat(first.socket)
        second = self.daemon(socket_path=first.socket, wait=False)
        second.start()
        rc = second.wait_exit(10)
        self.assertEqual(rc, 1, second.stderr())
        self.assertIn("already running", second.stderr())
        # The first daemon and its socket file are untouched.
        after = os.lstat(first.socket)
        self.assertEqual((after.st_ino, after.st_mode), (before.st_ino, before.st_mode))
        self.assertTrue(first.alive())
        self.assertEqual(ask(first.socket, "CHECK org.example.status"), "ALLOW")
        first.stop()
        self.assertFalse(os.path.lexists(first.socket))

    def test_refuses_live_foreign_socket(self):
        sock = self.path("cg.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(sock)
        listener.listen(16)
        ino = os.lstat(sock).st_ino
        d = self.daemon(socket_path=sock, wait=False)
        d.start()
        self.assertEqual(d.wait_exit(10), 1, d.stderr())
        self.assertIn("already running", d.stderr())
        self.assertEqual(os.lstat(sock).st_ino, ino)
        c = cgtest.connect(sock)  # still ours
        c.close()

    def test_refuses_live_socket_with_full_backlog(self):
        # A listener that never accepts, its backlog full: probing it must
        # not hang the daemon's startup.
        sock = self.path("cg.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(sock)
        listener.listen(0)
        fillers = []
        while True:
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.addCleanup(c.close)
            c.setblocking(False)
            try:
                c.connect(sock)
            except BlockingIOError:
                break
            fillers.append(c)
            self.assertLess(len(fillers), 100, "backlog never filled")
        d = self.daemon(socket_path=sock, wait=False)
        d.start()
        self.assertEqual(d.wait_exit(5), 1, d.stderr())
        self.assertIn("already running", d.stderr())
        self.assertTrue(stat.S_ISSOCK(os.lstat(sock).st_mode))

    def test_refuses_regular_file(self):
        sock = self.path("cg.sock")
        write(sock, "precious\n", 0o600)
        before = os.lstat(sock)
        d = self.daemon(socket_path=sock, wait=False)
        d.start()
        self.assertEqual(d.wait_exit(10), 1, d.stderr())
        self.assertIn(sock, d.stderr())
        after = os.lstat(sock)
        self.assertEqual((after.st_ino, after.st_mode, after.st_size, after.st_mtime_ns),
                         (before.st_ino, before.st_mode, before.st_size, before.st_mtime_ns))
        with open(sock) as f:
            self.assertEqual(f.read(), "precious\n")

    def test_refuses_symlink(self):
        target = self.path("target")
        write(target, "precious\n", 0o600)
        sock = self.path("cg.sock")
        os.symlink(target, sock)
        d = self.daemon(socket_path=sock, wait=False)
        d.start()
        self.assertEqual(d.wait_exit(10), 1, d.stderr())
        self.assertTrue(os.path.islink(sock))
        self.assertEqual(os.readlink(sock), target)
        with open(target) as f:
            self.assertEqual(f.read(), "precious\n")

    def test_socket_path_too_long(self):
        sock = os.path.join(self.dir, "x" * 120)
        d = self.daemon(socket_path=sock, wait=False)
        d.start()
        self.assertEqual(d.wait_exit(10), 1, d.stderr())
        self.assertIn("too long", d.stderr())
        self.assertFalse(os.path.lexists(sock))

    def test_sigterm_removes_socket(self):
        d = self.daemon()
        d.start()
        self.assertEqual(ask(d.socket, "PING"), "PONG")
        d.stop(signal.SIGTERM)
        self.assertFalse(os.path.lexists(d.socket), "socket file left behind after SIGTERM")

    def test_sigint_removes_socket(self):
        d = self.daemon()
        d.start()
        self.assertEqual(ask(d.socket, "PING"), "PONG")
        d.stop(signal.SIGINT)
        self.assertFalse(os.path.lexists(d.socket), "socket file left behind after SIGINT")

    def test_sigterm_with_clients_connected(self):
        d = self.daemon()
        d.start()
        clients = [cgtest.Client(d.socket) for _ in range(10)]
        for c in clients:
            self.addCleanup(c.close)
        clients[0].send(b"CHECK org.exa")  # one mid-request
        d.stop(signal.SIGTERM)
        self.assertFalse(os.path.lexists(d.socket))
        for c in clients:
            self.assertEqual(c.read_to_eof(), b"")


class TestActivated(TempDirTest):
    def test_serves_and_leaves_socket_alone(self):
        d = self.daemon(activate=True)
        d.start()
        before = os.lstat(d.socket)
        self.assertEqual(ask(d.socket, "CHECK org.example.status"), "ALLOW")
        self.assertEqual(ask(d.socket, "CHECK org.example.other"), "DENY")
        with open(f"/proc/{d.pid}/environ", "rb") as f:
            self.assertIn(b"LISTEN_FDS=1", f.read().split(b"\0"))
        d.stop(signal.SIGTERM)
        after = os.lstat(d.socket)  # raises if removed
        self.assertEqual((after.st_ino, after.st_mode, after.st_uid, after.st_gid),
                         (before.st_ino, before.st_mode, before.st_uid, before.st_gid))

    def test_sigint_leaves_socket_alone(self):
        d = self.daemon(activate=True)
        d.start()
        d.stop(signal.SIGINT)
        self.assertTrue(stat.S_ISSOCK(os.lstat(d.socket).st_mode))

    def test_ignores_socket_option_when_activated(self):
        other = self.path("other.sock")
        d = self.daemon(activate=True, args=["-s", other])
        d.start()
        self.assertEqual(ask(d.socket, "PING"), "PONG")
        self.assertFalse(os.path.lexists(other), "bound --socket although systemd handed one over")
        d.stop()

    def _bad_socket_type(self, flag, sock_type):
        d = self.daemon(activate=True, activate_args=[flag], wait=False)
        d.start()
        cgtest.wait_until(lambda: os.path.exists(d.socket), what="the activation socket")
        # Poke the socket so that systemd-socket-activate starts the daemon.
        s = socket.socket(socket.AF_UNIX, sock_type)
        self.addCleanup(s.close)
        if sock_type == socket.SOCK_DGRAM:
            s.sendto(b"PING\n", d.socket)
        else:
            s.connect(d.socket)
            s.send(b"PING\n")
        rc = d.wait_exit(10)
        err = d.stderr()
        self.assertNotEqual(rc, 0, err)
        self.assertGreater(rc, 0, f"killed by a signal ({rc}):\n{err}")
        self.assertRegex(err, r"credgated: .*(stream|SOCK_STREAM)", "a clear error naming the problem")
        self.assertTrue(os.path.lexists(d.socket), "removed a socket systemd owns")

    def test_rejects_datagram_socket(self):
        self._bad_socket_type("--datagram", socket.SOCK_DGRAM)

    def test_rejects_seqpacket_socket(self):
        self._bad_socket_type("--seqpacket", socket.SOCK_SEQPACKET)

    def test_sd_notify_ready_and_status(self):
        notify_path = self.path("notify")
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(ns.close)
        ns.bind(notify_path)
        ns.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        d = self.daemon(activate=True, activate_args=["-E", f"NOTIFY_SOCKET={notify_path}"])
        d.start()  # serves: READY=1 must have been sent by now

        msgs = []
        deadline = time.monotonic() + 5
        fields = {}
        while time.monotonic() < deadline and not ("READY" in fields and "STATUS" in fields):
            ns.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data, anc, _, _ = ns.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                break
            pid = None
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                    pid = array.array("i", cdata[:12])[0]
            msgs.append((pid, data))
            for line in data.decode().split("\n"):
                if "=" in line:
                    k, v = line.split("=", 1)
                    fields[k] = v
                    self.assertEqual(pid, d.pid, f"notification {line!r} not from the daemon (pid {pid})")
        self.assertEqual(fields.get("READY"), "1", f"messages: {msgs}")
        self.assertTrue(fields.get("STATUS"), f"no STATUS=: {msgs}")
        self.assertEqual(ask(d.socket, "PING"), "PONG")
        d.stop()


class TestReload(TempDirTest):
    def wait_answer(self, d, action, want):
        cgtest.wait_until(lambda: ask(d.socket, "CHECK " + action) == want, what=f"CHECK {action} -> {want}")

    def reload_cases(self, activate):
        d = self.daemon(activate=activate)
        d.start()
        self.assertEqual(ask(d.socket, "CHECK org.example.reload"), "ALLOW")
        self.assertEqual(ask(d.socket, "CHECK org.example.new"), "DENY")
        idle = cgtest.Client(d.socket)
        self.addCleanup(idle.close)
        self.assertEqual(idle.ask("PING"), "PONG")

        d.write_policy(POLICY_CHANGED)
        d.kill(signal.SIGHUP)
        self.wait_answer(d, "org.example.reload", "DENY")
        self.assertEqual(ask(d.socket, "CHECK org.example.new"), "ALLOW")
        self.assertEqual(ask(d.socket, "CHECK org.example.status"), "ALLOW")
        # A connection opened before the reload is judged by the new policy too.
        self.assertEqual(idle.ask("CHECK org.example.reload"), "DENY")
        self.assertTrue(d.alive())
        d.stop()

    def test_sighup_valid_policy(self):
        self.reload_cases(False)

    def test_sighup_valid_policy_activated(self):
        self.reload_cases(True)

    def test_sighup_invalid_policy_keeps_old(self):
        d = self.daemon()
        d.start()
        self.assertEqual(ask(d.socket, "CHECK org.example.reload"), "ALLOW")
        d.write_policy(BROKEN)
        d.kill(signal.SIGHUP)
        marker = f"{d.policy_path}:3: "
        cgtest.wait_until(lambda: marker in d.stderr(), what=f"'{marker}' on stderr")
        for line in BROKEN_LINES:
            self.assertIn(f"{d.policy_path}:{line}: ", d.stderr())
        self.assertTrue(d.alive(), d.stderr())
        self.assertEqual(ask(d.socket, "CHECK org.example.reload"), "ALLOW")
        self.assertEqual(ask(d.socket, "CHECK org.example.status"), "ALLOW")
        self.assertEqual(ask(d.socket, "CHECK org.example.new"), "DENY")
        # A later good policy still loads.
        d.write_policy(POLICY_CHANGED)
        d.kill(signal.SIGHUP)
        self.wait_answer(d, "org.example.reload", "DENY")
        d.stop()

    def test_sighup_missing_policy_keeps_old(self):
        d = self.daemon()
        d.start()
        os.unlink(d.policy_path)
        d.kill(signal.SIGHUP)
        marker = f"{d.policy_path}: "
        cgtest.wait_until(lambda: marker in d.stderr(), what=f"'{marker}' on stderr")
        self.assertEqual(ask(d.socket, "CHECK org.example.reload"), "ALLOW")
        d.stop()


if __name__ == "__main__":
    cgtest.main()
