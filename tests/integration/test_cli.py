#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The credgate command-line client.

check, whoami and ping against a real daemon (and against scripted fake
daemons for the error paths); eval offline, for first-match, default and
group cases with every way of giving an identity. As root, for several
identities, a child that dropped to that identity runs 'credgate check' and
its decisions must equal those of 'credgate eval' for the same uid, gid and
groups, and what the policy says.
"""

import grp
import os
import pwd
import re
import select
import shutil
import socket
import subprocess
import threading
import unittest

import cgtest

UNKNOWN_USER = "no-such-user-cgtest"


def cli(*args, env=None, **kw):
    """Run credgate with @args; CREDGATE_SOCKET only as given in @env."""
    e = dict(os.environ)
    e.pop("CREDGATE_SOCKET", None)
    e.pop("NOTIFY_SOCKET", None)
    e.update(env or {})
    return cgtest.run([cgtest.cli(), *args], env=e, **kw)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


def named_uid(uid):
    try:
        return f"{uid}({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return str(uid)


def named_gid(gid):
    try:
        return f"{gid}({grp.getgrgid(gid).gr_name})"
    except KeyError:
        return str(gid)


def unknown_uid():
    """A uid the user database does not know."""
    for uid in range(4000000001, 4000001000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise unittest.SkipTest("no unknown uid in 4000000001..4000000999")


def parse_check(out):
    """'ALLOW a' / 'DENY a' lines -> [(action, decision)]."""
    res = []
    for line in out.splitlines():
        m = re.fullmatch(r"(ALLOW|DENY) (\S+)", line)
        if not m:
            raise AssertionError(f"bad check output line {line!r}")
        res.append((m.group(2), m.group(1)))
    return res


def parse_eval(out):
    """'ALLOW a by FILE:LINE' / 'DENY a by default' lines -> [(action, decision, by)]."""
    res = []
    for line in out.splitlines():
        m = re.fullmatch(r"(ALLOW|DENY) (\S+) by (default|.+:\d+)", line)
        if not m:
            raise AssertionError(f"bad eval output line {line!r}")
        res.append((m.group(2), m.group(1), m.group(3)))
    return res


class Trap:
    """A listening socket nobody accepts on: tells whether anyone connected."""

    def __init__(self):
        self.dir = cgtest.mkdtemp()
        self.path = os.path.join(self.dir, "trap.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(16)

    def contacted(self):
        r, _, _ = select.select([self.sock], [], [], 0)
        return bool(r)

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class FakeDaemon:
    """Accepts one connection and answers each request line with the next
    scripted reply (bytes, sent as they are); closes when the script ends."""

    def __init__(self, replies):
        self.dir = cgtest.mkdtemp()
        self.path = os.path.join(self.dir, "fake.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(4)
        self.replies = list(replies)
        self.lines = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(20)
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(20)
            buf = b""
            try:
                while self.replies:
                    while b"\n" not in buf:
                        chunk = conn.recv(4096)
                        if not chunk:
                            return
                        buf += chunk
                    line, buf = buf.split(b"\n", 1)
                    self.lines.append(line)
                    conn.sendall(self.replies.pop(0))
            except OSError:
                return

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(30)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------
# Command line

class TestUsage(unittest.TestCase):
    def test_help(self):
        for args in (["--help"], ["-h"]):
            r = cli(*args)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("Usage: credgate", r.stdout)
            for cmd in ("check", "whoami", "ping", "eval"):
                self.assertIn(cmd, r.stdout)
            self.assertEqual(r.stderr, "")

    def test_command_help(self):
        """Every command has its own --help, which needs no daemon."""
        for cmd in ("check", "whoami", "ping", "eval"):
            for opt in ("--help", "-h"):
                with self.subTest(cmd=cmd, opt=opt):
                    r = cli("--socket", "/nonexistent/cg.sock", cmd, opt)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    self.assertRegex(r.stdout, rf"^Usage: credgate (\[--socket PATH\] )?{cmd}\b")
                    self.assertEqual(r.stderr, "")

    def test_version(self):
        want = cgtest.run([cgtest.credgated(), "--version"]).stdout.split()[-1]
        for opt in ("-V", "--version"):
            r = cli(opt)
            self.assertEqual((r.returncode, r.stdout, r.stderr), (0, f"credgate {want}\n", ""))

    def test_usage_errors(self):
        cases = [
            [],
            ["frobnicate"],
            ["CHECK", "a"],
            ["--frob", "check", "a"],
            ["-x", "ping"],
            ["--socket"],
            ["--socket", "", "ping"],
            ["check"],
            ["check", "--frob", "a"],
            ["check", "-x", "a"],
            ["whoami", "extra"],
            ["whoami", "--frob"],
            ["ping", "extra"],
            ["eval", "--uid", "0"],
            ["eval", "a"],
            ["eval", "--user", "root", "--uid", "0", "a"],
            ["eval", "--uid"],
            ["eval", "--frob", "--uid", "0", "a"],
            ["eval", "-c"],
            ["eval", "-c", "", "--uid", "0", "a"],
        ]
        for args in cases:
            with self.subTest(args=args):
                r = cli(*args)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertEqual(r.stdout, "")
                self.assertRegex(r.stderr, r"^credgate: ")
                self.assertIn("Usage: credgate", r.stderr)


# ---------------------------------------------------------------------------
# Asking the daemon

CHECK_POLICY = """\
default = "deny";
rules = (
  { action = "c.allow"; effect = "allow"; anyone = true; },
  { action = "c.allow2"; effect = "allow"; anyone = true; },
  { action = "-x"; effect = "allow"; anyone = true; },
  { action = "c.deny"; effect = "deny"; anyone = true; }
);
"""


class TestDaemonCommands(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.enterClassContext(cgtest.Daemon(CHECK_POLICY, timeout=30))

    def check(self, *args, **kw):
        return cli("--socket", self.d.socket, "check", *args, **kw)

    def test_check_allow(self):
        r = self.check("c.allow")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "ALLOW c.allow\n", ""))

    def test_check_deny(self):
        r = self.check("c.deny")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (1, "DENY c.deny\n", ""))
        r = self.check("c.unlisted")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (1, "DENY c.unlisted\n", ""))

    def test_check_several(self):
        r = self.check("c.allow", "c.deny", "c.allow2", "c.unlisted", "c.allow")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stdout, "ALLOW c.allow\nDENY c.deny\nALLOW c.allow2\nDENY c.unlisted\nALLOW c.allow\n")
        r = self.check("c.allow", "c.allow2", "c.allow")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "ALLOW c.allow\nALLOW c.allow2\nALLOW c.allow\n")

    def test_check_short_actions(self):
        """Requests of every small total size, so that an off-by-one in the
        request buffer lands on a heap chunk boundary and crashes."""
        for n in range(1, 9):
            for a in ("a", "ab", "abc", "c.allow"):
                with self.subTest(n=n, action=a):
                    r = self.check(*[a] * n)
                    want = ("ALLOW" if a == "c.allow" else "DENY") + f" {a}\n"
                    self.assertEqual((r.returncode, r.stdout, r.stderr), (0 if a == "c.allow" else 1, want * n, ""))

    def test_check_many(self):
        """Thousands of actions on one connection, answered in order."""
        actions = [("c.allow", "c.deny", "c.allow2", f"c.n{i}")[i % 4] for i in range(5000)]
        r = self.check(*actions)
        self.assertEqual(r.returncode, 1, r.stderr)
        want = [(a, "ALLOW" if a in ("c.allow", "c.allow2") else "DENY") for a in actions]
        self.assertEqual(parse_check(r.stdout), want)
        r = self.check("-q", *["c.allow"] * 3000)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "", ""))

    def test_check_quiet(self):
        for q in ("-q", "--quiet"):
            with self.subTest(q=q):
                r = self.check(q, "c.allow", "c.allow2")
                self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "", ""))
                r = self.check(q, "c.allow", "c.deny")
                self.assertEqual((r.returncode, r.stdout, r.stderr), (1, "", ""))
                # Options may follow the actions.
                r = self.check("c.deny", q)
                self.assertEqual((r.returncode, r.stdout, r.stderr), (1, "", ""))

    def test_check_dash_action(self):
        """An action starting with '-' (valid grammar) follows '--'."""
        r = self.check("--", "-x", "c.allow")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "ALLOW -x\nALLOW c.allow\n", ""))

    def test_check_bad_action_contacts_nobody(self):
        """A bad action is refused before any connection is made."""
        for bad in ("c.allow*", "", "a b", "a" * 256, "é", "c.allow\n"):
            with self.subTest(bad=bad):
                trap = Trap()
                try:
                    r = cli("--socket", trap.path, "check", "c.allow", bad, "c.allow2", timeout=20)
                    self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                    self.assertEqual(r.stdout, "")
                    self.assertRegex(r.stderr, r"^credgate: bad action")
                    self.assertFalse(trap.contacted(), "credgate connected despite a bad action")
                finally:
                    trap.close()
        # The longest valid action is fine.
        r = self.check("a" * 255)
        self.assertEqual((r.returncode, r.stdout), (1, "DENY " + "a" * 255 + "\n"), r.stderr)

    def test_no_daemon(self):
        missing = os.path.join(self.d.dir, "no-such.sock")
        for cmd in (["check", "c.allow"], ["check", "-q", "c.allow", "c.deny"], ["whoami"], ["ping"]):
            with self.subTest(cmd=cmd):
                r = cli("--socket", missing, *cmd)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertEqual(r.stdout, "")
                self.assertRegex(r.stderr, r"^credgate: .+: .+\n$")
                self.assertIn(missing, r.stderr)

    def test_socket_from_environment(self):
        missing = os.path.join(self.d.dir, "no-such.sock")
        r = cli("check", "c.allow", env={"CREDGATE_SOCKET": self.d.socket})
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "ALLOW c.allow\n", ""))
        r = cli("ping", env={"CREDGATE_SOCKET": self.d.socket})
        self.assertEqual((r.returncode, r.stdout), (0, "PONG\n"), r.stderr)
        # --socket wins over the environment, both ways.
        r = cli("--socket", self.d.socket, "check", "c.allow", env={"CREDGATE_SOCKET": missing})
        self.assertEqual((r.returncode, r.stdout), (0, "ALLOW c.allow\n"), r.stderr)
        r = cli("--socket", missing, "check", "c.allow", env={"CREDGATE_SOCKET": self.d.socket})
        self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
        self.assertIn(missing, r.stderr)
        r = cli("check", "c.allow", env={"CREDGATE_SOCKET": missing})
        self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
        self.assertIn(missing, r.stderr)

    def test_whoami(self):
        e = dict(os.environ)
        e.pop("CREDGATE_SOCKET", None)
        p = subprocess.Popen([cgtest.cli(), "--socket", self.d.socket, "whoami"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual(err, "")
        groups = ",".join(named_gid(g) for g in sorted(set(os.getgroups())))
        # The libtool wrapper execs the real program: same pid.
        want = f"pid={p.pid} uid={named_uid(os.getuid())} gid={named_gid(os.getgid())} groups={groups}\n"
        self.assertEqual(out, want)

    @cgtest.needs_root
    def test_whoami_root(self):
        r = cgtest.run_as(0, 0, [0], [cgtest.cli(), "--socket", self.d.socket, "whoami"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"^pid=\d+ uid=0\(root\) gid=0\(root\) groups=0\(root\)\n$")

    @cgtest.needs_root
    def test_whoami_without_names(self):
        """Ids the databases do not know print bare; no groups print as 'groups='."""
        uid = unknown_uid()
        gid = uid
        try:
            grp.getgrgid(gid)
            self.skipTest(f"gid {gid} has a name here")
        except KeyError:
            pass
        r = cgtest.run_as(uid, gid, [], [cgtest.cli(), "--socket", self.d.socket, "whoami"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, rf"^pid=\d+ uid={uid} gid={gid} groups=\n$")
        r = cgtest.run_as(uid, gid, [gid, 0], [cgtest.cli(), "--socket", self.d.socket, "whoami"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"^pid=\d+ " + re.escape(f"uid={uid} gid={gid} groups={named_gid(0)},{gid}\n") + "$")

    def test_ping(self):
        r = cli("--socket", self.d.socket, "ping")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "PONG\n", ""))

    def test_daemon_still_serving(self):
        self.assertTrue(self.d.alive(), self.d.stderr())
        self.assertEqual(cgtest.request(self.d.socket, b"PING\n", lines=1), b"PONG\n")


class TestBadReplies(unittest.TestCase):
    """Only an explicit ALLOW counts; every other reply is an error (exit 2)
    and nothing is printed on stdout, not even the decisions that came
    before it."""

    def run_fake(self, replies, *args):
        with FakeDaemon(replies) as f:
            r = cli("--socket", f.path, *args, timeout=30)
        return r, f

    def test_check_replies(self):
        cases = [
            ([b"ERR bad-action\n"], ["c.a"]),
            ([b"allow\n"], ["c.a"]),
            ([b"ALLOW \n"], ["c.a"]),
            ([b"ALLOWED\n"], ["c.a"]),
            ([b"PONG\n"], ["c.a"]),
            ([b"ALLOW\r\n"], ["c.a"]),
            ([], ["c.a"]),                                  # closed without a reply
            ([b"ALL"], ["c.a"]),                            # short reply, then closed
            ([b"ALLOW\n", b"MAYBE\n"], ["c.a", "c.b"]),
            ([b"ALLOW\n", b"DENY\n", b"ERR timeout\n"], ["c.a", "c.b", "c.c"]),
            ([b"ALLOW\n"], ["c.a", "c.b"]),                 # closed after the first
        ]
        for replies, actions in cases:
            with self.subTest(replies=replies, actions=actions):
                r, _ = self.run_fake(replies, "check", *actions)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertEqual(r.stdout, "")
                self.assertRegex(r.stderr, r"^credgate: .+: .+\n$")

    def test_check_more_replies_than_requests(self):
        # A reply beyond the last request: the daemon is out of step (or not
        # credgated); refused as by libcredgate and the Python module.
        for replies, actions in (([b"ALLOW\nALLOW\n"], ["c.a"]),
                                 ([b"ALLOW\n", b"DENY\nALLOW\n"], ["c.a", "c.b"]),
                                 ([b"DENY\nA"], ["c.a"])):
            with self.subTest(replies=replies, actions=actions):
                r, _ = self.run_fake(replies, "check", *actions)
                self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
                self.assertEqual(r.stderr, "credgate: check: malformed reply from credgated\n")

    def test_check_sends_the_protocol(self):
        r, f = self.run_fake([b"ALLOW\n", b"DENY\n"], "check", "c.a", "c.b")
        self.assertEqual((r.returncode, r.stdout), (1, "ALLOW c.a\nDENY c.b\n"), r.stderr)
        self.assertEqual(f.lines, [b"CHECK c.a", b"CHECK c.b"])

    def test_whoami_and_ping_replies(self):
        for replies, cmd in (([b"PING\n"], "ping"), ([b"ERR bad-request\n"], "ping"), ([], "ping"),
                             ([b"PONG\n"], "whoami"), ([b"CREDS pid=1 uid=x gid=0 groups=\n"], "whoami"),
                             ([b"ERR no-credentials\n"], "whoami")):
            with self.subTest(replies=replies, cmd=cmd):
                r, _ = self.run_fake(replies, cmd)
                self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
                self.assertRegex(r.stderr, r"^credgate: .+: .+\n$")


# ---------------------------------------------------------------------------
# eval

EVAL_POLICY = """\
default = "deny";
rules = (
  { action = "t.first"; effect = "deny"; uids = ["3900000001"]; },
  { action = "t.first"; effect = "allow"; anyone = true; },
  { action = "t.first"; effect = "deny"; anyone = true; },
  { action = "t.primary"; effect = "allow"; gids = ["3900000001"]; },
  { action = "t.supp"; effect = "allow"; gids = ["3900000002"]; },
  { action = "t.byname"; effect = "allow"; groups = ["@GROUP@"]; },
  { action = "t.user"; effect = "allow"; users = ["root"]; },
  {
    action = "t.pat.*";
    effect = "allow";
    uids = ["0"];
  },
  { action = "t.pat.x"; effect = "deny"; anyone = true; }
);
"""
L_FIRST_DENY, L_FIRST_ALLOW, L_PRIMARY, L_SUPP, L_BYNAME, L_USER, L_PAT = 3, 4, 6, 7, 8, 9, 10


def some_group():
    """(name, gid) of a group that exists here, preferring Debian's adm."""
    try:
        g = grp.getgrnam("adm")
        return g.gr_name, g.gr_gid
    except KeyError:
        pass
    for g in grp.getgrall():
        if g.gr_gid != 0 and re.fullmatch(r"[a-z_][a-z0-9_-]*", g.gr_name):
            return g.gr_name, g.gr_gid
    raise unittest.SkipTest("no group with a nonzero gid in the group database")


class TestEval(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = cgtest.mkdtemp()
        cls.group, cls.group_gid = some_group()
        cls.policy = write(os.path.join(cls.dir, "policy.conf"), EVAL_POLICY.replace("@GROUP@", cls.group))
        cls.uid = unknown_uid()
        # eval must never talk to a daemon: point every way of finding one at a trap.
        cls.trap = Trap()

    @classmethod
    def tearDownClass(cls):
        try:
            assert not cls.trap.contacted(), "credgate eval connected to a daemon socket"
        finally:
            cls.trap.close()
            shutil.rmtree(cls.dir, ignore_errors=True)

    def eval(self, *args, policy=None, **kw):
        return cli("--socket", self.trap.path, "eval", "-c", policy or self.policy, *args,
                   env={"CREDGATE_SOCKET": self.trap.path}, **kw)

    def by(self, line, policy=None):
        return f"{policy or self.policy}:{line}"

    def assertEval(self, r, code, lines):
        """@lines: [(decision, action, line number or 'default')]."""
        want = "".join(f"{d} {a} by {self.by(n) if n != 'default' else 'default'}\n" for d, a, n in lines)
        self.assertEqual((r.stdout, r.returncode), (want, code), r.stderr)

    def write_policy(self, name, text):
        return write(os.path.join(self.dir, name), text)

    def test_first_match(self):
        u = ["--uid", "3900000001", "--gid", "5", "--groups", ""]
        self.assertEval(self.eval(*u, "t.first"), 1, [("DENY", "t.first", L_FIRST_DENY)])
        # Rules 2 and 3 both match another uid: the first one decides.
        u = ["--uid", str(self.uid), "--gid", "5"]
        self.assertEval(self.eval(*u, "t.first"), 0, [("ALLOW", "t.first", L_FIRST_ALLOW)])
        # A pattern rule (multi-line: its opening brace's line) before a later exact rule.
        self.assertEval(self.eval("--uid", "0", "--gid", "0", "--groups", "", "t.pat.x", "t.pat.y"), 0,
                        [("ALLOW", "t.pat.x", L_PAT), ("ALLOW", "t.pat.y", L_PAT)])
        self.assertEval(self.eval(*u, "t.pat.x", "t.pat.y"), 1,
                        [("DENY", "t.pat.x", L_PAT + 5), ("DENY", "t.pat.y", "default")])

    def test_default(self):
        u = ["--uid", str(self.uid), "--gid", "5"]
        self.assertEval(self.eval(*u, "t.none"), 1, [("DENY", "t.none", "default")])
        allow = self.write_policy("allow.conf", 'default = "allow";\nrules = (\n'
                                  '  { action = "t.no"; effect = "deny"; anyone = true; }\n);\n')
        r = self.eval(*u, "t.none", "t.other", policy=allow)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "ALLOW t.none by default\nALLOW t.other by default\n", ""))
        r = self.eval(*u, "t.none", "t.no", policy=allow)
        self.assertEqual((r.returncode, r.stdout), (1, f"ALLOW t.none by default\nDENY t.no by {allow}:3\n"), r.stderr)

    def test_several_actions(self):
        u = ["--uid", str(self.uid), "--gid", "3900000001", "--groups", "3900000002"]
        r = self.eval(*u, "t.primary", "t.none", "t.supp", "t.first", "t.primary")
        self.assertEval(r, 1, [("ALLOW", "t.primary", L_PRIMARY), ("DENY", "t.none", "default"),
                               ("ALLOW", "t.supp", L_SUPP), ("ALLOW", "t.first", L_FIRST_ALLOW),
                               ("ALLOW", "t.primary", L_PRIMARY)])
        r = self.eval(*u, "t.primary", "t.supp")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")

    def test_primary_group(self):
        self.assertEval(self.eval("--uid", str(self.uid), "--gid", "3900000001", "t.primary"), 0,
                        [("ALLOW", "t.primary", L_PRIMARY)])
        self.assertEval(self.eval("--uid", str(self.uid), "--gid", "3900000002", "t.primary", "t.supp"), 1,
                        [("DENY", "t.primary", "default"), ("ALLOW", "t.supp", L_SUPP)])

    def test_supplementary_groups_by_id(self):
        u = ["--uid", str(self.uid), "--gid", "5"]
        self.assertEval(self.eval(*u, "--groups", "3900000002", "t.supp"), 0, [("ALLOW", "t.supp", L_SUPP)])
        # gids match supplementary groups as well as the primary one.
        self.assertEval(self.eval(*u, "--groups", "7,3900000001", "t.primary", "t.supp"), 1,
                        [("ALLOW", "t.primary", L_PRIMARY), ("DENY", "t.supp", "default")])
        # Unsorted with duplicates: handed to the policy sorted and unique.
        self.assertEval(self.eval(*u, "--groups", "4294967294,3900000002,0,3900000002,7", "t.supp", "t.primary"), 1,
                        [("ALLOW", "t.supp", L_SUPP), ("DENY", "t.primary", "default")])
        # An unknown uid has no groups unless --groups gives some.
        self.assertEval(self.eval(*u, "t.supp"), 1, [("DENY", "t.supp", "default")])

    def test_groups_by_name(self):
        u = ["--uid", str(self.uid), "--gid", "5"]
        self.assertEval(self.eval(*u, "--groups", self.group, "t.byname"), 0, [("ALLOW", "t.byname", L_BYNAME)])
        self.assertEval(self.eval(*u, "--groups", str(self.group_gid), "t.byname"), 0,
                        [("ALLOW", "t.byname", L_BYNAME)])
        self.assertEval(self.eval(*u, "--groups", f"3900000002,{self.group},{self.group_gid}", "t.supp", "t.byname"),
                        0, [("ALLOW", "t.supp", L_SUPP), ("ALLOW", "t.byname", L_BYNAME)])
        self.assertEval(self.eval(*u, "--groups", "", "t.byname"), 1, [("DENY", "t.byname", "default")])
        # A named group as the primary gid.
        self.assertEval(self.eval("--uid", str(self.uid), "--gid", str(self.group_gid), "t.byname"), 0,
                        [("ALLOW", "t.byname", L_BYNAME)])

    def test_bad_groups(self):
        u = ["--uid", str(self.uid), "--gid", "5"]
        for bad, what in ((UNKNOWN_USER, UNKNOWN_USER), (f"{self.group},{UNKNOWN_USER}", UNKNOWN_USER),
                          ("1,,2", "empty"), ("1,", "empty"), (",1", "empty"), (",", "empty"),
                          ("4294967295", "4294967295"), ("99999999999", "99999999999"), ("-1", "-1"),
                          ("1 ", "1 ")):
            with self.subTest(groups=bad):
                r = self.eval(*u, "--groups", bad, "t.supp")
                self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
                self.assertRegex(r.stderr, r"^credgate: --groups: ")
                self.assertIn(what, r.stderr)

    def test_bad_ids(self):
        for bad in ("4294967295", "4294967296", "99999999999", "-1", "+5", " 5", "5 ", "0x10", "12a", "", "1e3"):
            with self.subTest(id=bad):
                r = self.eval("--uid", bad, "--gid", "5", "t.none")
                self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
                self.assertRegex(r.stderr, r"^credgate: --uid: ")
                r = self.eval("--uid", "0", "--gid", bad, "t.none")
                self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
                self.assertRegex(r.stderr, r"^credgate: --gid: ")
        # The top of the range is an id.
        r = self.eval("--uid", "4294967294", "--gid", "4294967294", "--groups", "4294967294", "t.none")
        self.assertEval(r, 1, [("DENY", "t.none", "default")])
        r = self.eval("--uid", "0000", "--gid", "0", "--groups", "", "t.user")
        self.assertEval(r, 0, [("ALLOW", "t.user", L_USER)])

    def test_user_from_database(self):
        root = pwd.getpwnam("root")
        self.assertEqual(root.pw_uid, 0)
        self.assertEval(self.eval("--user", "root", "t.user", "t.pat.a", "t.first"), 0,
                        [("ALLOW", "t.user", L_USER), ("ALLOW", "t.pat.a", L_PAT), ("ALLOW", "t.first", L_FIRST_ALLOW)])
        r = self.eval("--user", UNKNOWN_USER, "t.user")
        self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
        self.assertIn(UNKNOWN_USER, r.stderr)

    def a_user(self):
        """A user other than root from the database."""
        for name in ("nobody", "daemon", "bin"):
            try:
                return pwd.getpwnam(name)
            except KeyError:
                pass
        for pw in pwd.getpwall():
            if pw.pw_uid != 0:
                return pw
        self.skipTest("no user but root in the user database")

    def test_user_primary_group_from_database(self):
        pw = self.a_user()
        p = self.write_policy("primary.conf", "rules = (\n"
                              f'  {{ action = "p.gid"; effect = "allow"; gids = ["{pw.pw_gid}"]; }},\n'
                              f'  {{ action = "p.uid"; effect = "allow"; uids = ["{pw.pw_uid}"]; }}\n);\n')
        want_ok = f"ALLOW p.gid by {p}:2\nALLOW p.uid by {p}:3\n"
        for ident in (["--user", pw.pw_name], ["--uid", str(pw.pw_uid)]):
            with self.subTest(ident=ident):
                r = self.eval(*ident, "p.gid", "p.uid", policy=p)
                self.assertEqual((r.returncode, r.stdout, r.stderr), (0, want_ok, ""))
                # --gid and --groups replace what the database says; the uid stays.
                r = self.eval(*ident, "--gid", "3900000009", "--groups", "", "p.gid", "p.uid", policy=p)
                self.assertEqual((r.returncode, r.stdout), (1, f"DENY p.gid by default\nALLOW p.uid by {p}:3\n"),
                                 r.stderr)

    def test_user_supplementary_groups_from_database(self):
        found = None
        for pw in pwd.getpwall():
            extra = sorted(set(os.getgrouplist(pw.pw_name, pw.pw_gid)) - {pw.pw_gid})
            if extra and pw.pw_uid <= 4294967294:
                found = (pw, extra[0])
                break
        if not found:
            self.skipTest("no user in the user database has a supplementary group")
        pw, extra = found
        p = self.write_policy("supp.conf", "rules = (\n"
                              f'  {{ action = "s.gid"; effect = "allow"; gids = ["{extra}"]; }}\n);\n')
        for ident in (["--user", pw.pw_name], ["--uid", str(pw.pw_uid)]):
            with self.subTest(user=pw.pw_name, gid=extra, ident=ident):
                r = self.eval(*ident, "s.gid", policy=p)
                self.assertEqual((r.returncode, r.stdout, r.stderr), (0, f"ALLOW s.gid by {p}:2\n", ""))
                # --gid alone keeps the database's supplementary groups.
                r = self.eval(*ident, "--gid", "3900000009", "s.gid", policy=p)
                self.assertEqual((r.returncode, r.stdout), (0, f"ALLOW s.gid by {p}:2\n"), r.stderr)
                r = self.eval(*ident, "--groups", "", "s.gid", policy=p)
                self.assertEqual((r.returncode, r.stdout), (1, "DENY s.gid by default\n"), r.stderr)

    def test_unknown_uid_needs_gid(self):
        r = self.eval("--uid", str(self.uid), "t.primary")
        self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
        self.assertIn(str(self.uid), r.stderr)
        self.assertIn("--gid", r.stderr)
        r = self.eval("--uid", str(self.uid), "--groups", "3900000001", "t.primary")
        self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
        self.assertEval(self.eval("--uid", str(self.uid), "--gid", "3900000001", "t.primary", "t.supp"), 1,
                        [("ALLOW", "t.primary", L_PRIMARY), ("DENY", "t.supp", "default")])

    def test_bad_action(self):
        for bad in ("t.*", "", "a b", "a" * 256, "ü"):
            with self.subTest(bad=bad):
                r = self.eval("--uid", "0", "--gid", "0", "t.user", bad)
                self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
                self.assertRegex(r.stderr, r"^credgate: bad action")
        self.assertEval(self.eval("--uid", "0", "--gid", "0", "a" * 255), 1, [("DENY", "a" * 255, "default")])
        self.assertEval(self.eval("--uid", "0", "--gid", "0", "--groups", "", "--", "-t", "t.user"), 1,
                        [("DENY", "-t", "default"), ("ALLOW", "t.user", L_USER)])

    def test_broken_policy(self):
        broken = self.write_policy("broken.conf", """\
rules = (
  { action = "a"; effect = "allow"; anyone = true; },
  { action = "b"; effect = "permit"; anyone = true; },
  { action = "c"; effect = "allow"; uids = [1000]; },
  {
    action = "d";
    effect = "allow";
    users = [];
  },
  { action = "e"; effect = "deny"; users = ["%s"]; }
);
""" % UNKNOWN_USER)
        r = self.eval("--uid", "0", "--gid", "0", "a", policy=broken)
        self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
        for line in (3, 4, 5, 10):
            self.assertRegex(r.stderr, rf"(?m)^{re.escape(broken)}:{line}: ")
        self.assertNotRegex(r.stderr, r"(?m)^ALLOW|^DENY")

    def test_syntax_error(self):
        bad = self.write_policy("syntax.conf", 'rules = (\n  { action = "a"; effect = "allow"; anyone = true; },\n);\n')
        r = self.eval("--uid", "0", "--gid", "0", "a", policy=bad)
        self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
        self.assertRegex(r.stderr, rf"(?m)^{re.escape(bad)}:3: ")

    def test_missing_policy(self):
        missing = os.path.join(self.dir, "missing.conf")
        r = self.eval("--uid", "0", "--gid", "0", "a", policy=missing)
        self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
        self.assertRegex(r.stderr, rf"(?m)^{re.escape(missing)}: ")

    def test_rule_ids(self):
        """A rule's id follows its FILE:LINE in eval's answer; an id taken by a
        drop-in and again by the main file refuses the policy, naming both."""
        main = self.write_policy("ids.conf", 'rules = (\n'
                                 '  { id = "site-backup"; action = "t.id"; effect = "allow"; uids = ["7"]; },\n'
                                 '  { action = "t.id"; effect = "deny"; anyone = true; }\n'
                                 ');\n')
        r = self.eval("--uid", "7", "--gid", "7", "t.id", policy=main)
        self.assertEqual((r.stdout, r.returncode), (f"ALLOW t.id by {main}:2 (site-backup)\n", 0), r.stderr)
        r = self.eval("--uid", "8", "--gid", "8", "t.id", policy=main)
        self.assertEqual((r.stdout, r.returncode), (f"DENY t.id by {main}:3\n", 1), r.stderr)
        d = os.path.join(self.dir, "ids.d")
        os.makedirs(d, exist_ok=True)
        drop = write(os.path.join(d, "10-dup.conf"),
                     'rules = (\n  { id = "site-backup"; action = "t.other"; effect = "deny"; anyone = true; }\n);\n')
        r = self.eval("--rules-dir", d, "--uid", "7", "--gid", "7", "t.id", policy=main)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn(f"{main}:2: duplicate rule id 'site-backup': also the rule at {drop}:2", r.stderr)

    def test_warning_still_evaluates(self):
        p = self.write_policy("warn.conf", """\
rules = (
  { action = "w.a"; effect = "allow"; users = ["%s"]; },
  { action = "w.a"; effect = "allow"; uids = ["0"]; }
);
""" % UNKNOWN_USER)
        r = self.eval("--uid", "0", "--gid", "0", "w.a", "w.b", policy=p)
        self.assertEqual((r.returncode, r.stdout), (1, f"ALLOW w.a by {p}:3\nDENY w.b by default\n"), r.stderr)
        self.assertRegex(r.stderr, rf"(?m)^{re.escape(p)}:2: warning: .*{UNKNOWN_USER}")
        empty = self.write_policy("empty.conf", 'default = "allow";\nrules = ();\n')
        r = self.eval("--uid", "0", "--gid", "0", "w.a", policy=empty)
        self.assertEqual((r.returncode, r.stdout), (0, "ALLOW w.a by default\n"), r.stderr)
        self.assertRegex(r.stderr, rf"(?m)^{re.escape(empty)}:2: warning: ")

    def test_file_shown_as_given(self):
        """FILE is the path as given, relative stays relative."""
        r = cli("eval", "-c", "policy.conf", "--uid", "0", "--gid", "0", "t.user", cwd=self.dir)
        self.assertEqual((r.returncode, r.stdout), (0, f"ALLOW t.user by policy.conf:{L_USER}\n"), r.stderr)
        r = cli("eval", "--config", "./policy.conf", "--uid", "0", "--gid", "0", "t.user", cwd=self.dir)
        self.assertEqual((r.returncode, r.stdout), (0, f"ALLOW t.user by ./policy.conf:{L_USER}\n"), r.stderr)

    def test_no_ownership_checks(self):
        """A draft owned by anyone, even group-writable, is evaluated."""
        p = self.write_policy("draft.conf", 'rules = ( { action = "d.a"; effect = "allow"; anyone = true; } );\n')
        os.chmod(p, 0o666)
        if cgtest.is_root():
            os.chown(p, 4000000000, 4000000000)
        r = self.eval("--uid", "0", "--gid", "0", "d.a", policy=p)
        self.assertEqual((r.returncode, r.stdout), (0, f"ALLOW d.a by {p}:1\n"), r.stderr)


# ---------------------------------------------------------------------------
# check (as each identity) == eval (for that identity) == the policy

MATRIX_POLICY = """\
default = "deny";
rules = (
  { action = "x.user"; effect = "allow"; users = ["bin", "nobody"]; },
  { action = "x.group"; effect = "allow"; groups = ["adm"]; },
  { action = "x.group"; effect = "allow"; groups = ["users"]; },
  { action = "x.primary"; effect = "allow"; groups = ["nogroup", "bin"]; },
  { action = "x.uids"; effect = "allow"; uids = ["1000-1999", "4000000000"]; },
  { action = "x.gids"; effect = "allow"; gids = ["40-60", "4000000000"]; },
  { action = "x.order"; effect = "deny"; gids = ["100"]; },
  { action = "x.order"; effect = "allow"; anyone = true; },
  { action = "x.pat.*"; effect = "deny"; uids = ["65534"]; },
  { action = "x.pat.*"; effect = "allow"; anyone = true; },
  { action = "x.root"; effect = "allow"; uids = ["0"]; },
  { action = "x.late.*"; effect = "deny"; anyone = true; },
  { action = "x.late.x"; effect = "allow"; anyone = true; }
);
"""

# The Debian names MATRIX_POLICY and the expectations rely on.
DEBIAN_USERS = {"bin": 2, "nobody": 65534, "root": 0}
DEBIAN_GROUPS = {"adm": 4, "staff": 50, "users": 100, "nogroup": 65534, "bin": 2, "root": 0}

# name: (uid, gid, groups given to setgroups())
MATRIX_IDS = {
    "u1000": (1000, 1000, [100]),
    "bin": (2, 2, [4, 50]),
    "nobody": (65534, 65534, []),
    "root": (0, 0, [0]),
    "big": (4000000000, 4000000000, []),
    # unsorted, with a duplicate and an id above 2^31
    "multi": (1, 1, [100, 4000000000, 4, 50, 4]),
}
ALL_IDS = set(MATRIX_IDS)

# action -> {identity: deciding line}; identities not listed get the default (DENY).
MATRIX = {
    "x.user": {"bin": 3, "nobody": 3},
    "x.group": {"bin": 4, "multi": 4, "u1000": 5},
    "x.primary": {"nobody": 6, "bin": 6},
    "x.uids": {"u1000": 7, "big": 7},
    "x.gids": {"bin": 8, "multi": 8, "big": 8},
    "x.order": {n: 9 if n in ("u1000", "multi") else 10 for n in ALL_IDS},
    "x.pat.a": {n: 11 if n == "nobody" else 12 for n in ALL_IDS},
    "x.root": {"root": 13},
    "x.late.x": {n: 14 for n in ALL_IDS},
    "x.none": {},
}
# Lines whose rule denies.
DENY_LINES = {9, 11, 14}


def expected(name):
    """action -> (decision, 'by' part of eval's line, without the file)."""
    out = {}
    for action, who in MATRIX.items():
        line = who.get(name)
        if line is None:
            out[action] = ("DENY", "default")
        else:
            out[action] = ("DENY" if line in DENY_LINES else "ALLOW", line)
    return out


@cgtest.needs_root
class TestCheckEqualsEval(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        wrong = [f"user {n} is not uid {i}" for n, i in DEBIAN_USERS.items() if _uid_of(n) != i]
        wrong += [f"group {n} is not gid {i}" for n, i in DEBIAN_GROUPS.items() if _gid_of(n) != i]
        if wrong:
            raise unittest.SkipTest("needs Debian's base users and groups: " + "; ".join(wrong))
        cls.d = cls.enterClassContext(cgtest.Daemon(MATRIX_POLICY, timeout=30))

    def check_as(self, uid, gid, groups, actions):
        r = cgtest.run_as(uid, gid, groups, [cgtest.cli(), "--socket", self.d.socket, "check", *actions])
        self.assertIn(r.returncode, (0, 1), r.stderr)
        self.assertEqual(r.stderr, "")
        got = parse_check(r.stdout)
        self.assertEqual([a for a, _ in got], actions)
        self.assertEqual(r.returncode, 0 if all(d == "ALLOW" for _, d in got) else 1)
        return dict(got)

    def whoami_as(self, uid, gid, groups):
        r = cgtest.run_as(uid, gid, groups, [cgtest.cli(), "--socket", self.d.socket, "whoami"])
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        return r.stdout

    def eval_for(self, ident, actions):
        r = cli("eval", "-c", self.d.policy_path, *ident, *actions)
        self.assertIn(r.returncode, (0, 1), r.stderr)
        self.assertEqual(r.stderr, "")
        got = parse_eval(r.stdout)
        self.assertEqual([a for a, _, _ in got], actions)
        self.assertEqual(r.returncode, 0 if all(d == "ALLOW" for _, d, _ in got) else 1)
        return {a: (d, by) for a, d, by in got}

    def check_identity(self, name):
        uid, gid, groups = MATRIX_IDS[name]
        actions = list(MATRIX)
        shown = ",".join(named_gid(g) for g in sorted(set(groups)))
        self.assertRegex(self.whoami_as(uid, gid, groups),
                         "^pid=\\d+ " + re.escape(f"uid={named_uid(uid)} gid={named_gid(gid)} groups={shown}") + "\n$")
        checked = self.check_as(uid, gid, groups, actions)
        evaluated = self.eval_for(["--uid", str(uid), "--gid", str(gid), "--groups", ",".join(map(str, groups))],
                                  actions)
        want = expected(name)
        path = self.d.policy_path
        want_eval = {a: (d, by if by == "default" else f"{path}:{by}") for a, (d, by) in want.items()}
        self.assertEqual(evaluated, want_eval, f"eval for {name}")
        self.assertEqual(checked, {a: d for a, (d, _) in want.items()}, f"check as {name}")
        self.assertEqual(checked, {a: d for a, (d, _) in evaluated.items()}, f"check == eval for {name}")

    def test_user_sessions(self):
        """eval --user NAME decides as the daemon does for a process that
        holds NAME's database identity (what initgroups() gives a login)."""
        actions = list(MATRIX)
        for name in ("root", "bin", "nobody"):
            with self.subTest(user=name):
                pw = pwd.getpwnam(name)
                groups = os.getgrouplist(name, pw.pw_gid)
                checked = self.check_as(pw.pw_uid, pw.pw_gid, groups, actions)
                for ident in (["--user", name], ["--uid", str(pw.pw_uid)]):
                    evaluated = self.eval_for(ident, actions)
                    self.assertEqual(checked, {a: d for a, (d, _) in evaluated.items()}, f"{ident}")


def _uid_of(name):
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _gid_of(name):
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _make(name):
    def test(self):
        self.check_identity(name)
    test.__name__ = f"test_{name}"
    return test


for _n in MATRIX_IDS:
    setattr(TestCheckEqualsEval, f"test_{_n}", _make(_n))



# ---------------------------------------------------------------------------
# test: expected decisions in test files, coverage, JUnit

TEST_POLICY = """\
rules = (
  { id = "ops"; action = "t.a"; effect = "allow"; uids = ["7"]; },
  { action = "t.a"; effect = "allow"; gids = ["3900000001"]; },
  { action = "t.*"; effect = "deny"; anyone = true; },
  { id = "never"; action = "t.never"; effect = "allow"; uids = ["3900000099"]; },
  { action = "u.never"; effect = "allow"; uids = ["3900000099"]; }
);
"""


class TestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = cgtest.mkdtemp()
        cls.policy = write(os.path.join(cls.dir, "p.conf"), TEST_POLICY)
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def tfile(self, text, name=None):
        TestTest.n += 1
        return write(os.path.join(self.dir, name or f"t{TestTest.n}.test"), text)

    def run_test(self, *args, policy="p.conf"):
        """Run in self.dir so that file names are short and as given. The
        lint's warnings about the policy (test_lint.py checks them; 'never'
        is shadowed on purpose) are taken out of stderr and kept in r.lint."""
        r = cli("test", "-c", policy, "--rules-dir", "none.d", *args, cwd=self.dir)
        lines = r.stderr.splitlines(keepends=True)
        r.lint = [l for l in lines if re.match(r"p\.conf:\d+: warning: ", l)]
        r.stderr = "".join(l for l in lines if l not in r.lint)
        return r

    def test_pass_and_fail(self):
        t = self.tfile('cases = (\n'
                       '  { uid = "7"; gid = "7"; action = "t.a"; expect = "allow"; rule = "ops"; },\n'
                       '  { uid = "8"; gid = "8"; gids = []; action = "t.a"; expect = "allow"; },\n'
                       '  { uid = "8"; gid = "8"; gids = ["3900000001"]; action = "t.a"; expect = "allow"; rule = "p.conf:3"; },\n'
                       '  { uid = "7"; gid = "7"; action = "x.y"; expect = "deny"; rule = "default"; }\n'
                       ');\n', "site.test")
        r = self.run_test("site.test")
        self.assertEqual((r.returncode, r.stdout, r.stderr),
                         (1, "FAIL site.test:3: uid 8 t.a: expected allow, got deny by p.conf:4\n"
                             "3 passed, 1 failed\n", ""))
        r = self.run_test("-v", "site.test")
        self.assertEqual((r.returncode, r.stdout),
                         (1, "PASS site.test:2: uid 7 t.a: allow by ops\n"
                             "FAIL site.test:3: uid 8 t.a: expected allow, got deny by p.conf:4\n"
                             "PASS site.test:4: uid 8 t.a: allow by p.conf:3\n"
                             "PASS site.test:5: uid 7 x.y: deny by default\n"
                             "3 passed, 1 failed\n"), r.stderr)
        # The lint runs too: 'never' sits behind the deny-anyone 't.*' rule.
        self.assertIn("p.conf:5: warning: rule 'never' can never decide: the rule at p.conf:4 comes first", "".join(r.lint))

    def test_all_pass(self):
        t = self.tfile('cases = ( { user = "root"; action = "t.b"; expect = "deny"; } );\n')
        r = self.run_test(t)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "1 passed, 0 failed\n", ""))
        empty = self.tfile("cases = ();\n")
        r = self.run_test(empty)
        self.assertEqual((r.returncode, r.stdout), (0, "0 passed, 0 failed\n"), r.stderr)

    def test_multiple_actions(self):
        t = self.tfile('cases = (\n'
                       '  { uid = "7"; gid = "7"; actions = ["t.a", "t.b", "x"]; expect = "deny"; }\n'
                       ');\n', "multi.test")
        r = self.run_test("-v", "multi.test")
        self.assertEqual((r.returncode, r.stdout),
                         (1, "FAIL multi.test:2: uid 7 t.a: expected deny, got allow by ops\n"
                             "PASS multi.test:2: uid 7 t.b: deny by p.conf:4\n"
                             "PASS multi.test:2: uid 7 x: deny by default\n"
                             "2 passed, 1 failed\n"), r.stderr)

    def test_rule_mismatch(self):
        """The right decision by the wrong rule fails; each form of 'rule'."""
        self.tfile('cases = (\n'
                   '  { uid = "8"; gid = "3900000001"; action = "t.a"; expect = "allow"; rule = "ops"; },\n'
                   '  { uid = "7"; gid = "7"; action = "t.a"; expect = "allow"; rule = "p.conf:2"; },\n'
                   '  { uid = "7"; gid = "7"; action = "t.b"; expect = "deny"; rule = "default"; },\n'
                   '  { uid = "7"; gid = "7"; action = "x"; expect = "deny"; rule = "p.conf:4"; }\n'
                   ');\n', "rules.test")
        r = self.run_test("rules.test")
        self.assertEqual((r.returncode, r.stdout),
                         (1, "FAIL rules.test:2: uid 8 t.a: expected allow by ops, got allow by p.conf:3\n"
                             "FAIL rules.test:4: uid 7 t.b: expected deny by default, got deny by p.conf:4\n"
                             "FAIL rules.test:5: uid 7 x: expected deny by p.conf:4, got deny by default\n"
                             "1 passed, 3 failed\n"), r.stderr)

    def test_user_from_database(self):
        """user: uid, gid and groups from the database, as eval --user."""
        p = write(os.path.join(self.dir, "root.conf"),
                  'rules = ( { action = "r.gid"; effect = "allow"; gids = ["0"]; } );\n')
        self.tfile('cases = (\n'
                   '  { user = "root"; action = "r.gid"; expect = "allow"; },\n'
                   '  { user = "root"; gid = "3900000009"; gids = []; action = "r.gid"; expect = "deny"; },\n'
                   '  { uid = "0"; action = "r.gid"; expect = "allow"; rule = "root.conf:1"; }\n'
                   ');\n', "root.test")
        r = self.run_test("-v", "root.test", policy="root.conf")
        self.assertEqual((r.returncode, r.stdout),
                         (0, "PASS root.test:2: user root r.gid: allow by root.conf:1\n"
                             "PASS root.test:3: user root r.gid: deny by default\n"
                             "PASS root.test:4: uid 0 r.gid: allow by root.conf:1\n"
                             "3 passed, 0 failed\n"), r.stderr)

    def test_file_errors(self):
        g, _ = some_group()
        bad = [
            ('{ uid = "7"; gid = "7"; action = "t.a"; expect = "allow"; colour = "x"; }', "unknown key 'colour'"),
            ('{ user = "root"; uid = "0"; action = "t.a"; expect = "allow"; }', "exactly one of 'user' and 'uid'"),
            ('{ gid = "0"; action = "t.a"; expect = "allow"; }', "exactly one of 'user' and 'uid'"),
            ('{ uid = 7; gid = "7"; action = "t.a"; expect = "allow"; }', "'uid' must be a string"),
            ('{ uid = "4294967295"; gid = "7"; action = "t.a"; expect = "allow"; }', "uid: '4294967295'"),
            ('{ uid = "7"; gid = "-1"; action = "t.a"; expect = "allow"; }', "gid: '-1'"),
            ('{ uid = "7"; gid = "7"; gids = ["x"]; action = "t.a"; expect = "allow"; }', "gids: 'x'"),
            ('{ uid = "7"; gid = "7"; gids = "1"; action = "t.a"; expect = "allow"; }', "'gids' must be a list"),
            ('{ uid = "7"; gid = "7"; groups = [1]; action = "t.a"; expect = "allow"; }', "'groups' must be a list of strings"),
            (f'{{ uid = "7"; gid = "7"; groups = ["{g}", "{UNKNOWN_USER}"]; action = "t.a"; expect = "allow"; }}',
             f"groups: unknown group '{UNKNOWN_USER}'"),
            (f'{{ uid = "7"; group = "{UNKNOWN_USER}"; action = "t.a"; expect = "allow"; }}',
             f"group: unknown group '{UNKNOWN_USER}'"),
            ('{ uid = "7"; gid = "7"; group = "root"; action = "t.a"; expect = "allow"; }', "at most one of 'gid' and 'group'"),
            (f'{{ user = "{UNKNOWN_USER}"; action = "t.a"; expect = "allow"; }}', f"unknown user '{UNKNOWN_USER}'"),
            ('{ uid = "3900000077"; action = "t.a"; expect = "allow"; }', "not in the user database"),
            ('{ uid = "7"; gid = "7"; action = "t.*"; expect = "allow"; }', "bad action 't.*'"),
            ('{ uid = "7"; gid = "7"; actions = ["t.a", "a b"]; expect = "allow"; }', "bad action 'a b'"),
            ('{ uid = "7"; gid = "7"; actions = []; expect = "allow"; }', "'actions' is empty"),
            ('{ uid = "7"; gid = "7"; action = "t.a"; actions = ["t.b"]; expect = "allow"; }', "exactly one of 'action' and 'actions'"),
            ('{ uid = "7"; gid = "7"; expect = "allow"; }', "exactly one of 'action' and 'actions'"),
            ('{ uid = "7"; gid = "7"; action = "t.a"; }', "missing 'expect'"),
            ('{ uid = "7"; gid = "7"; action = "t.a"; expect = "permit"; }', "'expect' must be \"allow\" or \"deny\""),
            ('{ uid = "7"; gid = "7"; action = "t.a"; expect = "allow"; rule = "nope"; }', "rule 'nope'"),
            ('{ uid = "7"; gid = "7"; action = "t.a"; expect = "allow"; rule = "p.conf:9"; }', "rule 'p.conf:9'"),
            ('"x"', "must be a group"),
        ]
        for case, msg in bad:
            with self.subTest(case=case):
                name = f"bad{TestTest.n}.test"
                self.tfile(f'# a comment\ncases = (\n  {{ uid = "7"; gid = "7"; action = "t.a"; expect = "allow"; }},\n'
                           f'  {case}\n);\n', name)
                r = self.run_test(name)
                self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
                # libconfig gives a scalar list element the line where it ended
                self.assertRegex(r.stderr, rf"^{re.escape(name)}:{4 if case[0] == '{' else '[45]'}: ")
                self.assertIn(msg, r.stderr.splitlines()[0])
        for text, line, msg in (('cases = (\n  { uid = "7"; },\n);\n', 3, ""),
                                ('cases = ();\nextra = 1;\n', 2, "unknown setting 'extra'"),
                                ('cases = { };\n', 1, "'cases' must be a list"),
                                ('# nothing\n', None, "no 'cases' list")):
            with self.subTest(text=text):
                t = self.tfile(text, f"top{TestTest.n}.test")
                r = self.run_test(os.path.basename(t))
                self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
                where = os.path.basename(t) + (f":{line}: " if line else ": ")
                self.assertTrue(r.stderr.startswith(where), r.stderr)
                self.assertIn(msg, r.stderr)
        r = self.run_test("missing.test")
        self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
        self.assertRegex(r.stderr, r"^missing\.test: ")

    def test_policy_error(self):
        write(os.path.join(self.dir, "broken.conf"), 'rules = ( { action = "a"; effect = "permit"; anyone = true; } );\n')
        t = self.tfile('cases = ( { uid = "7"; gid = "7"; action = "a"; expect = "allow"; } );\n')
        r = self.run_test(t, policy="broken.conf")
        self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
        self.assertRegex(r.stderr, r"(?m)^broken\.conf:1: ")
        r = self.run_test(t, policy="missing.conf")
        self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)

    def test_usage(self):
        for args in ([], ["--bogus", "x.test"], ["--junit"], ["--junit", "", "x.test"]):
            with self.subTest(args=args):
                r = self.run_test(*args)
                self.assertEqual((r.returncode, r.stdout), (2, ""), r.stderr)
                self.assertIn("Usage: credgate test", r.stderr)
        r = cli("test", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--coverage", r.stdout)

    def test_coverage(self):
        self.tfile('cases = (\n'
                   '  { uid = "7"; gid = "7"; actions = ["t.a", "t.b"]; expect = "allow"; }\n'
                   ');\n', "cov.test")
        r = self.run_test("--coverage", "cov.test")
        self.assertEqual((r.returncode, r.stdout),
                         (1, "FAIL cov.test:2: uid 7 t.b: expected allow, got deny by p.conf:4\n"
                             "rules that decided no case:\n"
                             "  p.conf:3\n"
                             "  p.conf:5 never\n"
                             "  p.conf:6\n"
                             "coverage: 2 of 5 rules (40%)\n"
                             "1 passed, 1 failed\n"), r.stderr)

    def test_junit(self):
        import xml.etree.ElementTree as ET
        self.tfile('cases = (\n'
                   '  { uid = "7"; gid = "7"; actions = ["t.a", "t.b"]; expect = "allow"; rule = "ops"; }\n'
                   ');\n', "j1.test")
        self.tfile('cases = (\n'
                   '  { uid = "8"; gid = "8"; action = "x"; expect = "deny"; },\n'
                   '  { uid = "8"; gid = "8"; action = "x.y"; expect = "allow"; rule = "default"; }\n'
                   ');\n', "j&<2>.test")
        out = os.path.join(self.dir, "junit.xml")
        r = self.run_test("--junit", out, "j1.test", "j&<2>.test")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertTrue(r.stdout.endswith("2 passed, 2 failed\n"), r.stdout)
        root = ET.parse(out).getroot()
        self.assertEqual((root.tag, root.get("tests"), root.get("failures")), ("testsuites", "4", "2"))
        suites = root.findall("testsuite")
        self.assertEqual([(s.get("name"), s.get("tests"), s.get("failures")) for s in suites],
                         [("j1.test", "2", "1"), ("j&<2>.test", "2", "1")])
        cases = suites[0].findall("testcase")
        self.assertEqual(len(cases), 2)
        self.assertIsNone(cases[0].find("failure"))
        self.assertEqual(cases[1].find("failure").get("message"), "expected allow by ops, got deny by p.conf:4")
        self.assertEqual(suites[1].findall("testcase")[1].find("failure").get("message"),
                         "expected allow by default, got deny by default")
        r = self.run_test("--junit", os.path.join(self.dir, "no", "such", "dir.xml"), "j1.test")
        self.assertEqual(r.returncode, 2, r.stderr)

    def test_shipped_example(self):
        """conf/credgate.test covers every rule of conf/credgate.conf, and passes."""
        r = cli("test", "-c", "conf/credgate.conf", "--rules-dir", "conf/rules.d", "--coverage",
                "conf/credgate.test", cwd=cgtest.srcdir())
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("FAIL", r.stdout)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[-2], "coverage: 8 of 8 rules (100%)")
        self.assertRegex(lines[-1], r"^[1-9]\d* passed, 0 failed$")

    def test_agrees_with_eval(self):
        """For generated policies and identities, test's verdicts are eval's."""
        import random
        rnd = random.Random(12)
        actions = ["a.b", "a.c", "b.x", "a.b.c"]
        patterns = actions + ["a.*", "*.c", "*", "b.*"]
        for n in range(4):
            rules = []
            for i in range(rnd.randint(1, 8)):
                subj = rnd.choice([f'uids = ["{rnd.randint(1, 4)}"];', f'gids = ["{rnd.randint(10, 13)}"];',
                                   'anyone = true;', f'uids = ["1-2"]; gids = ["12"];'])
                idp = f'id = "r{i}"; ' if rnd.random() < 0.5 else ""
                rules.append(f'  {{ {idp}action = "{rnd.choice(patterns)}"; '
                             f'effect = "{rnd.choice(["allow", "deny"])}"; {subj} }}')
            default = rnd.choice(["allow", "deny"])
            pname = f"gen{n}.conf"
            write(os.path.join(self.dir, pname), f'default = "{default}";\nrules = (\n' + ",\n".join(rules) + "\n);\n")
            idents = [(str(rnd.randint(1, 5)), str(rnd.randint(10, 13)), [str(rnd.randint(10, 13))]) for _ in range(5)]
            cases, want = [], []
            for uid, gid, gids in idents:
                e = cli("eval", "-c", pname, "--rules-dir", "none.d", "--uid", uid, "--gid", gid,
                        "--groups", ",".join(gids), *actions, cwd=self.dir)
                self.assertIn(e.returncode, (0, 1), e.stderr)
                # 'by FILE:LINE (ID)' names the rule by its id in test's output
                ids = dict(re.findall(r"^\S+ \S+ by (\S+:\d+) \((\S+)\)$", e.stdout, flags=re.M))
                for action, dec, by in parse_eval(re.sub(r" \(\S+\)$", "", e.stdout, flags=re.M)):
                    # the opposite expectation: every case fails and shows what test got
                    exp = "allow" if dec == "DENY" else "deny"
                    cases.append(f'  {{ uid = "{uid}"; gid = "{gid}"; gids = ["{gids[0]}"]; action = "{action}"; '
                                 f'expect = "{exp}"; }}')
                    want.append((uid, action, dec.lower(), ids.get(by, by)))
            tname = f"gen{n}.test"
            write(os.path.join(self.dir, tname), "cases = (\n" + ",\n".join(cases) + "\n);\n")
            r = self.run_test(tname, policy=pname)
            self.assertEqual(r.returncode, 1, r.stderr)
            got = [re.fullmatch(r"FAIL \S+: uid (\d+) (\S+): expected \w+, got (\w+) by (\S+)", line).groups()
                   for line in r.stdout.splitlines()[:-1]]
            self.assertEqual(got, want)
            self.assertEqual(r.stdout.splitlines()[-1], f"0 passed, {len(want)} failed")


if __name__ == "__main__":
    cgtest.main()
