#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Console conditions through the real daemon and the real sd-login (issue 14).

sd-login reads logind's state from fixed paths (/run/systemd/users/UID), so as
root this test runs itself again in a private mount namespace with a tmpfs of
its own on /run/systemd: logind's files there are written by the test, in the
format and the way logind writes them (a temporary file renamed into place),
and the daemon reads them with the real sd_uid_get_seats() and sees changes
through the real sd_login_monitor. Children that really hold uid 1000 and 1001
ask; a real logind is tested by the system-test stage (tests/system).

Covered: no logind at all (no consoles, not an error), logind appearing while
the daemon runs, active / present / a session being closed / seat-less (SSH),
a named seat, logout, unreadable state (allow rules fail closed, deny rules
match), EXPLAIN-PEER judging the peer's uid, and credgate eval --console
printing the decisions and rules the daemon gives.
"""

import os
import re
import sys
import unittest

import cgtest

sys.path.insert(0, os.environ.get("CREDGATE_PYTHONPATH") or os.path.join(cgtest.srcdir(), "src", "python"))
import credgate  # noqa: E402

ROOT = os.geteuid() == 0
NS_ENV = "CREDGATE_TEST_CONSOLE_NS"
RUN_SYSTEMD = "/run/systemd"
USERS = "/run/systemd/users"
NETDEV = 4711  # stands for the netdev group of the example

POLICY = f"""\
default = "deny";
rules = (
  {{ id = "wifi"; action = "org.example.wifi.*"; effect = "allow"; gids = ["{NETDEV}"]; console = "active";
    message = "Wi-Fi is for whoever sits at the machine"; }},
  {{ id = "power"; action = "org.example.power.off"; effect = "allow"; uids = ["1000-1999"]; console = "present"; }},
  {{ id = "kiosk"; action = "org.example.kiosk.use"; effect = "allow"; uids = ["1000-1999"]; console = "active";
    seat = "seat1"; }},
  {{ id = "no-lock-at-console"; action = "org.example.lock.*"; effect = "deny"; uids = ["1000-1999"];
    console = "active"; }},
  {{ id = "lock"; action = "org.example.lock.*"; effect = "allow"; uids = ["1000-1999"]; }}
);
settings = {{ brokers = {{ uids = ["0"]; }}; }};
"""

ACTIONS = ["org.example.wifi.connect", "org.example.power.off", "org.example.kiosk.use", "org.example.lock.screen"]


def write_user(uid, online=(), active=(), state="active"):
    """/run/systemd/users/UID as logind 252 writes it: to a temporary file,
    then renamed over the old one (what sd_login_monitor sees)."""
    text = (f"# This is private data. Do not parse.\nNAME=u{uid}\nSTATE={state}\nSTOPPING=no\n"
            f"ACTIVE_SEATS={' '.join(active)}\nONLINE_SEATS={' '.join(online)}\n")
    tmp = os.path.join(USERS, f".#{uid}tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(USERS, str(uid)))


def remove_user(uid):
    os.unlink(os.path.join(USERS, str(uid)))


def explain_as(sock, uid, groups, actions=ACTIONS):
    """EXPLAIN each action as a child holding uid (gid = uid) and @groups."""
    def fn():
        with credgate.Client(sock) as c:
            return [(e.allowed, e.ref) for e in (c.explain(a) for a in actions)]
    return cgtest.as_identity(uid, uid, groups, fn)


def eval_as(policy_path, rules_dir, uid, groups, console, actions=ACTIONS):
    """credgate eval with a simulated console: [(allowed, ref)] in EXPLAIN's terms."""
    args = [cgtest.cli(), "eval", "-c", policy_path, "--rules-dir", rules_dir, "--uid", str(uid), "--gid", str(uid),
            "--groups", ",".join(str(g) for g in groups), "--console", console] + list(actions)
    r = cgtest.run(args)
    if r.returncode not in (0, 1):
        raise AssertionError(f"credgate eval failed ({r.returncode}): {r.stderr}")
    lines = r.stdout.splitlines()
    if not lines or not lines[0].startswith(f"console: {console}"):
        raise AssertionError(f"eval does not say what it simulated: {r.stdout!r}")
    out = []
    for line in lines[1:]:
        m = re.fullmatch(r"(ALLOW|DENY) \S+ by (?:(default)|\S+:\d+ \(([^)]+)\).*)", line)
        if not m:
            raise AssertionError(f"unexpected eval line {line!r}")
        out.append((m.group(1) == "ALLOW", "default" if m.group(2) else f"id:{m.group(3)}"))
    return out


ALLOW_WIFI = (True, "id:wifi")
DENY = (False, "default")


@unittest.skipUnless(ROOT, "needs root: a private mount namespace for logind's files, children of other uids")
class TestConsole(unittest.TestCase):
    """One daemon through a sequence of login states; methods run in name order."""

    @classmethod
    def setUpClass(cls):
        if os.environ.get(NS_ENV) != "1":
            raise unittest.SkipTest("not in a private mount namespace")
        if os.listdir(RUN_SYSTEMD):
            raise AssertionError(f"{RUN_SYSTEMD} is not the test's own empty tmpfs")
        cls.d = cgtest.Daemon(POLICY, args=["--log", "all", "--log-target", "stderr"])
        cls.d.start()
        cls.rules_dir = os.path.join(cls.d.dir, "rules.d")

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def ask(self, uid, groups=(NETDEV,)):
        return explain_as(self.d.socket, uid, list(groups))

    def same_as_eval(self, uid, console, got, groups=(NETDEV,)):
        self.assertEqual(eval_as(self.d.policy_path, self.rules_dir, uid, groups, console), got,
                         f"credgate eval --console {console} disagrees with the daemon for uid {uid}")

    def test_1_without_logind(self):
        """No /run/systemd/users: no seats anywhere, no error. The deny rule's
        condition does not hold either, so the lock rule below it allows."""
        want = [DENY, DENY, DENY, (True, "id:lock")]
        for uid in (1000, 1001):
            got = self.ask(uid)
            self.assertEqual(got, want, f"uid {uid}")
            self.same_as_eval(uid, "none", got)
        self.assertTrue(self.d.alive())

    def test_2_logind_appears(self):
        """logind starts while the daemon runs: 1000 on seat0 in the foreground,
        1001 with a seat-less (SSH) session, which logind also calls active."""
        os.mkdir(USERS, 0o755)
        write_user(1000, online=["seat0"], active=["seat0"])
        write_user(1001)
        got = self.ask(1000)
        self.assertEqual(got, [ALLOW_WIFI, (True, "id:power"), DENY, (False, "id:no-lock-at-console")])
        self.same_as_eval(1000, "active", got)
        got = self.ask(1001)
        self.assertEqual(got, [DENY, DENY, DENY, (True, "id:lock")])
        self.same_as_eval(1001, "none", got)
        # Not in the group: the subject still counts.
        self.assertEqual(self.ask(1000, groups=())[0], DENY)

    def test_3_switched_away(self):
        """Another session took seat0's foreground: 1000 is present, not active."""
        write_user(1000, online=["seat0"], active=[])
        got = self.ask(1000)
        self.assertEqual(got, [DENY, (True, "id:power"), DENY, (True, "id:lock")])
        self.same_as_eval(1000, "present", got)

    def test_4_session_closing(self):
        """Logged out, a process left behind: logind keeps the session as the
        seat's active one but no longer online. Not a console."""
        write_user(1000, online=[], active=["seat0"], state="closing")
        self.assertEqual(self.ask(1000), [DENY, DENY, DENY, (True, "id:lock")])

    def test_5_named_seat(self):
        """Active on seat1 (and present on seat0): the seat1 rule holds, and
        'active' without a seat holds on any seat."""
        write_user(1000, online=["seat0", "seat1"], active=["seat1"])
        got = self.ask(1000)
        self.assertEqual(got, [ALLOW_WIFI, (True, "id:power"), (True, "id:kiosk"), (False, "id:no-lock-at-console")])
        write_user(1000, online=["seat0", "seat1"], active=["seat0"])
        self.assertEqual(self.ask(1000)[2], DENY)

    def test_6_peer_judged_by_its_uid(self):
        """EXPLAIN-PEER from root (a broker, on no seat) for a peer of uid 1000."""
        write_user(1000, online=["seat0"], active=["seat0"])
        with cgtest.peer_connection(self.d.dir, 1000, 1000, [NETDEV]) as conn:
            with credgate.Client(self.d.socket) as c:
                e = c.explain_peer(conn, "org.example.wifi.connect")
                self.assertEqual((e.allowed, e.ref), ALLOW_WIFI)
                self.assertFalse(c.check("org.example.wifi.connect"))  # root itself is at no seat

    def test_7_logout(self):
        remove_user(1000)
        self.assertEqual(self.ask(1000), [DENY, DENY, DENY, (True, "id:lock")])

    def test_8_unreadable_state_fails_closed(self):
        """logind's file for 1000 cannot be read (a folder in its place, renamed
        in as logind renames): the allow rules with a console condition do not
        match, the deny rule with one does. 1001's state still reads."""
        tmp = os.path.join(USERS, ".#1000dir")
        os.mkdir(tmp)
        os.rename(tmp, os.path.join(USERS, "1000"))
        try:
            self.assertEqual(self.ask(1000), [DENY, DENY, DENY, (False, "id:no-lock-at-console")])
            self.assertEqual(self.ask(1001)[3], (True, "id:lock"))
        finally:
            os.rmdir(os.path.join(USERS, "1000"))
        self.assertEqual(self.ask(1000)[3], (True, "id:lock"))

    def test_9_still_serving(self):
        self.assertTrue(self.d.alive())
        self.assertEqual(cgtest.request(self.d.socket, b"PING\n", lines=1), b"PONG\n")
        self.assertNotIn("cannot watch logind", self.d.stderr())


class TestEvalSimulation(unittest.TestCase):
    """eval and test say what they simulate, and refuse what makes no sense."""

    def setUp(self):
        self.dir = cgtest.mkdtemp()
        self.policy = os.path.join(self.dir, "p.conf")
        with open(self.policy, "w") as f:
            f.write(POLICY)
        self.rules = os.path.join(self.dir, "rules.d")

    def eval(self, *args):
        return cgtest.run([cgtest.cli(), "eval", "-c", self.policy, "--rules-dir", self.rules, *args])

    def test_note_without_console(self):
        r = self.eval("--uid", "1000", "--gid", "1000", "--groups", str(NETDEV), "org.example.wifi.connect")
        self.assertEqual((r.returncode, r.stdout), (1, "DENY org.example.wifi.connect by default\n"))
        self.assertIn("console conditions judged as without a session on any seat", r.stderr)

    def test_simulated(self):
        r = self.eval("--uid", "1000", "--gid", "1000", "--groups", str(NETDEV), "--console", "active", "--seat",
                      "seat1", "org.example.wifi.connect", "org.example.kiosk.use")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), [
            "console: active on seat1 (simulated)",
            f"ALLOW org.example.wifi.connect by {self.policy}:3 (wifi): Wi-Fi is for whoever sits at the machine",
            f"ALLOW org.example.kiosk.use by {self.policy}:6 (kiosk)"])

    def test_usage_errors(self):
        for args, msg in ((["--console", "remote"], "not active, present or none"),
                          (["--seat", "seat0"], "--seat needs --console"),
                          (["--console", "none", "--seat", "seat0"], "--seat needs --console"),
                          (["--console", "active", "--seat", "tty1"], "not a seat name")):
            r = self.eval("--uid", "1000", "--gid", "1000", *args, "org.example.wifi.connect")
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(msg, r.stderr)

    def test_test_file(self):
        t = os.path.join(self.dir, "c.test")
        with open(t, "w") as f:
            f.write(f"""cases = (
  {{ uid = "1000"; gid = "1000"; gids = ["{NETDEV}"]; console = "active"; action = "org.example.wifi.connect";
    expect = "allow"; rule = "wifi"; }},
  {{ uid = "1001"; gid = "1001"; gids = ["{NETDEV}"]; action = "org.example.wifi.connect"; expect = "deny";
    rule = "default"; }},
  {{ uid = "1000"; gid = "1000"; console = "present"; seat = "seat1"; action = "org.example.kiosk.use";
    expect = "deny"; }},
  {{ uid = "1000"; gid = "1000"; action = "org.example.lock.screen"; expect = "deny"; }}
);
""")
        r = cgtest.run([cgtest.cli(), "test", "-c", self.policy, "--rules-dir", self.rules, "-v", t])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        out = r.stdout.splitlines()
        self.assertIn("PASS", out[0])
        self.assertIn("uid 1000 (console active on seat0) org.example.wifi.connect: allow by wifi", out[0])
        self.assertTrue(out[3].startswith("FAIL") and "got allow by lock" in out[3], out)
        self.assertEqual(out[-1], "3 passed, 1 failed")
        # --console sets the state of the cases that give none.
        r = cgtest.run([cgtest.cli(), "test", "-c", self.policy, "--rules-dir", self.rules, "--console", "active", t])
        out = r.stdout.splitlines()
        self.assertEqual(out[0], "console: active on seat0 (simulated, for cases that give none)")
        self.assertEqual(len(out), 3, out)
        self.assertTrue(out[1].startswith("FAIL") and "uid 1001 (console active on seat0)" in out[1] and
                        "got allow by wifi" in out[1], out)
        self.assertEqual(out[-1], "3 passed, 1 failed")


if __name__ == "__main__":
    cgtest.reenter_with_private_run_systemd(NS_ENV)
    cgtest.main()
