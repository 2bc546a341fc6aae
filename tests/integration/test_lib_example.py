#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The libcredgate(3) example program (docs/example.c) against the real daemon.

Runs the built $CREDGATE_BUILDDIR/docs/example with CREDGATE_SOCKET pointing
at a throw-away credgated and checks its output and exit codes: 0 when every
action is allowed, 1 when any is denied, 2 on an error (no daemon, a bad
action). As root, also as other identities. And the program printed in the
man page's EXAMPLES is exactly docs/example.c.
"""

import os
import re
import socket
import subprocess
import unittest

import cgtest

POLICY = """\
default = "deny";
rules = (
  { action = "org.example.status"; effect = "allow"; anyone = true; },
  { action = "ex.allow"; effect = "allow"; anyone = true; },
  { action = "ex.deny"; effect = "deny"; anyone = true; },
  { action = "ex.u1000"; effect = "allow"; uids = ["1000"]; },
  { action = "ex.users"; effect = "allow"; groups = ["users"]; }
);
"""


def example():
    return cgtest.env_path("CREDGATE_EXAMPLE", os.path.join(cgtest.builddir(), "docs", "example"))


def run_example(args, socket_path, identity=None, timeout=30):
    """Run the example with CREDGATE_SOCKET=@socket_path, optionally as
    @identity = (uid, gid, groups). Return (pid, returncode, stdout, stderr)."""
    env = dict(os.environ)
    for k in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID"):
        env.pop(k, None)
    if socket_path is None:
        env.pop("CREDGATE_SOCKET", None)
    else:
        env["CREDGATE_SOCKET"] = socket_path
    kw = {}
    if identity is not None:
        uid, gid, groups = identity
        kw = {"user": uid, "group": gid, "extra_groups": list(groups), "cwd": "/"}
    p = subprocess.Popen([example()] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, **kw)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError(f"example {args} did not finish within {timeout} s")
    return p.pid, p.returncode, out, err


def whoami_line(pid, uid, gid, groups):
    return f"whoami: pid={pid} uid={uid} gid={gid} groups={','.join(str(g) for g in sorted(set(groups)))}"


class TestExample(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.enterClassContext(cgtest.Daemon(POLICY, timeout=30))

    def run_ok(self, args, want_rc, identity=None):
        """Run the example; assert the exit code, an empty stderr and the
        whoami line; return the decision lines."""
        pid, rc, out, err = run_example(args, self.d.socket, identity)
        self.assertEqual(rc, want_rc, f"example {args}: stdout {out!r}, stderr {err!r}")
        self.assertEqual(err, "")
        lines = out.splitlines()
        if identity is None:
            uid, gid, groups = os.getuid(), os.getgid(), os.getgroups()
        else:
            uid, gid, groups = identity
        self.assertEqual(lines[0], whoami_line(pid, uid, gid, groups))
        return lines[1:]

    def test_default_action(self):
        self.assertEqual(self.run_ok([], 0), ["org.example.status: allow"])

    def test_all_allowed(self):
        self.assertEqual(self.run_ok(["ex.allow", "org.example.status", "ex.allow"], 0),
                         ["ex.allow: allow", "org.example.status: allow", "ex.allow: allow"])

    def test_one_denied(self):
        self.assertEqual(self.run_ok(["ex.allow", "ex.deny", "org.example.status"], 1),
                         ["ex.allow: allow", "ex.deny: deny", "org.example.status: allow"])

    def test_no_rule_is_denied(self):
        self.assertEqual(self.run_ok(["ex.nothing.here"], 1), ["ex.nothing.here: deny"])

    def test_many_actions(self):
        actions = [f"ex.{'allow' if i % 2 else 'deny'}" for i in range(200)]
        got = self.run_ok(actions, 1)
        self.assertEqual(got, [f"{a}: {'allow' if a == 'ex.allow' else 'deny'}" for a in actions])

    def test_bad_action(self):
        """An invalid action is an error (2), reported on stderr; the answers
        before it were printed."""
        pid, rc, out, err = run_example(["ex.allow", "not an action"], self.d.socket)
        self.assertEqual(rc, 2, f"stdout {out!r}, stderr {err!r}")
        self.assertEqual(out.splitlines()[1:], ["ex.allow: allow"])
        self.assertRegex(err, r"^example: not an action: invalid argument")
        for bad in ("org.example.*", "x" * 256, ""):
            _, rc, out, err = run_example([bad], self.d.socket)
            self.assertEqual(rc, 2, f"action {bad!r}: stdout {out!r}")
            self.assertNotIn(": allow", out)

    def test_no_daemon(self):
        missing = os.path.join(self.d.dir, "missing.sock")
        _, rc, out, err = run_example(["org.example.status"], missing)
        self.assertEqual(rc, 2)
        self.assertEqual(out, "")
        self.assertRegex(err, r"^example: cannot connect to credgated: no credgate socket")

    def test_stale_socket(self):
        """A socket file nobody listens on: connection refused, exit 2."""
        path = os.path.join(self.d.dir, "stale.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()
        try:
            _, rc, out, err = run_example([], path)
        finally:
            os.unlink(path)
        self.assertEqual(rc, 2)
        self.assertEqual(out, "")
        self.assertRegex(err, r"^example: cannot connect to credgated: .*refused")

    @cgtest.needs_root
    def test_as_uid_1000(self):
        got = self.run_ok(["ex.u1000", "ex.users", "org.example.status"], 0, identity=(1000, 1000, [100]))
        self.assertEqual(got, ["ex.u1000: allow", "ex.users: allow", "org.example.status: allow"])

    @cgtest.needs_root
    def test_as_nobody(self):
        got = self.run_ok(["ex.u1000", "ex.users", "org.example.status"], 1, identity=(65534, 65534, []))
        self.assertEqual(got, ["ex.u1000: deny", "ex.users: deny", "org.example.status: allow"])

    @cgtest.needs_root
    def test_as_root(self):
        got = self.run_ok(["ex.u1000", "org.example.status"], 1)
        self.assertEqual(got, ["ex.u1000: deny", "org.example.status: allow"])


class TestManPage(unittest.TestCase):
    def test_man_page_shows_the_example(self):
        """libcredgate(3)'s EXAMPLES prints docs/example.c (from its first
        #include on) verbatim, so the two cannot drift apart."""
        with open(os.path.join(cgtest.srcdir(), "docs", "example.c")) as f:
            src = f.read()
        with open(os.path.join(cgtest.srcdir(), "docs", "libcredgate.3")) as f:
            man = f.read()
        want = src[src.index("#include <stdio.h>"):].rstrip("\n")
        blocks = re.findall(r"^\.EX\n(.*?)^\.EE\n", man, re.S | re.M)

        def unescape(text):
            text = re.sub(r"^\\&", "", text, flags=re.M)
            return text.replace("\\-", "-").replace("\\e", "\\").rstrip("\n")

        self.assertIn(want, [unescape(b) for b in blocks],
                      "docs/libcredgate.3 EXAMPLES is out of date with docs/example.c")


if __name__ == "__main__":
    cgtest.main()
