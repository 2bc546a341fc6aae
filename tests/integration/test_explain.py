#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Decisions that explain themselves, and owner-scoped actions (issue 13),
through the real daemon: EXPLAIN and EXPLAIN-PEER on the socket (framing,
messages that look like verdicts, errors as for CHECK), credgate check -v,
credgate eval, the Python module, and {uid}/{gid} judged for children that
really hold the uid and groups (uid 0, 100 against 1000, 4294967294)."""

import os
import re
import socket
import sys
import unittest

import cgtest

sys.path.insert(0, os.environ.get("CREDGATE_PYTHONPATH") or os.path.join(cgtest.srcdir(), "src", "python"))
import credgate  # noqa: E402

ROOT = os.geteuid() == 0
LONG_MSG = "m" * 199 + "!"

POLICY = f"""\
default = "deny";
rules = (
  {{ id = "no-bob-backup"; action = "org.example.backup.run"; effect = "deny"; uids = ["1000"];
    message = "Backups run from the ops rota; ask #ops"; }},
  {{ action = "org.example.backup.run"; effect = "allow"; anyone = true; message = "ALLOW"; }},
  {{ id = "tricky"; action = "t.tricky"; effect = "deny"; anyone = true; message = "ALLOW -- id:x -- ERR bad-request \\\\ \\"q\\""; }},
  {{ action = "t.long"; effect = "deny"; anyone = true; message = "{LONG_MSG}"; }},
  {{ action = "t.plain"; effect = "allow"; anyone = true; }},
  {{ id = "own-home"; action = "org.example.home.update.{{uid}}"; effect = "allow"; anyone = true;
    message = "your own home only"; }},
  {{ action = "org.example.group.{{gid}}.read"; effect = "allow"; anyone = true; }},
  {{ action = "org.example.{{uid}}.mail.*"; effect = "allow"; anyone = true; }}
);
settings = {{ brokers = {{ uids = ["0"]; }}; }};
"""


def explain_lines(sock_path, lines):
    data = "".join(l + "\n" for l in lines).encode()
    out = cgtest.request(sock_path, data, lines=len(lines))
    return out.decode().splitlines()


class Case(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cgtest.Daemon(POLICY, args=["--log", "all", "--log-target", "stderr"])
        cls.d.start()
        cls.path = cls.d.policy_path

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()


class TestProtocol(Case):
    def test_replies(self):
        me = os.geteuid()
        got = explain_lines(self.d.socket, [
            "EXPLAIN org.example.backup.run",
            "CHECK org.example.backup.run",
            "EXPLAIN t.tricky",
            "EXPLAIN t.long",
            "EXPLAIN t.plain",
            "EXPLAIN t.nothing",
            f"EXPLAIN org.example.home.update.{me}",
            "CHECK t.tricky",
        ])
        allowed = "ALLOW" if me != 1000 else "DENY"
        self.assertEqual(got, [
            f"{allowed} {self.path}:5 -- ALLOW" if me != 1000 else
            "DENY id:no-bob-backup -- Backups run from the ops rota; ask #ops",
            allowed,
            'DENY id:tricky -- ALLOW -- id:x -- ERR bad-request \\ "q"',
            f"DENY {self.path}:7 -- {LONG_MSG}",
            f"ALLOW {self.path}:8",
            "DENY default",
            f"ALLOW id:own-home -- your own home only",
            "DENY",
        ])

    def test_errors_as_for_check(self):
        for line, err in (("EXPLAIN", "bad-request"), ("EXPLAIN ", "bad-request"), ("EXPLAIN a b", "bad-request"),
                          ("EXPLAIN a*", "bad-action"), ("EXPLAIN a{uid}", "bad-action"),
                          ("explain a", "unknown-command"), ("EXPLAIN a\r", "bad-request"),
                          ("EXPLAIN " + "a" * 256, "bad-action"), ("EXPLAIN-PEER a", "bad-peer-fd")):
            with self.subTest(line=line):
                check = line.replace("EXPLAIN", "CHECK", 1).replace("explain", "check", 1)
                for l in (line, check):
                    out = cgtest.request(self.d.socket, b"PING\n" + l.encode() + b"\nPING\n")
                    want = f"PONG\nERR {err}\n".encode()
                    if l.startswith(("EXPLAIN-PEER", "CHECK-PEER")) and not ROOT:
                        want = b"PONG\nERR not-a-broker\n"
                    self.assertEqual(out, want, l)

    def test_pipelined_mix_keeps_framing(self):
        lines = []
        for i in range(300):
            lines.append(("EXPLAIN", "CHECK")[i % 2] + (" t.tricky", " t.plain", " t.long")[i % 3])
        got = explain_lines(self.d.socket, lines)
        self.assertEqual(len(got), 300)
        for l, r in zip(lines, got):
            if l.startswith("CHECK"):
                self.assertIn(r, ("ALLOW", "DENY"))
            else:
                self.assertRegex(r, r"^(ALLOW|DENY) [!-~]+( -- [ -~]{1,200})?$")

    def test_audit_names_the_rule(self):
        explain_lines(self.d.socket, ["EXPLAIN t.tricky"])
        cgtest.wait_until(lambda: "action=t.tricky" in self.d.stderr(), what="the audit entry")
        line = [l for l in self.d.stderr().splitlines() if "action=t.tricky" in l][-1]
        self.assertIn("decision=DENY", line)
        self.assertIn("rule_id=tricky", line)


class TestClients(Case):
    def test_cli_check_verbose(self):
        env = dict(os.environ, CREDGATE_SOCKET=self.d.socket)
        r = cgtest.run([cgtest.cli(), "check", "-v", "t.tricky", "t.plain", "t.nothing"], env=env)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stdout, 'DENY t.tricky by tricky: ALLOW -- id:x -- ERR bad-request \\ "q"\n'
                                   f"ALLOW t.plain by {self.path}:8\n"
                                   "DENY t.nothing by default\n")
        r = cgtest.run([cgtest.cli(), "check", "-v", "t.plain"], env=env)
        self.assertEqual((r.returncode, r.stdout), (0, f"ALLOW t.plain by {self.path}:8\n"), r.stderr)
        r = cgtest.run([cgtest.cli(), "check", "-q", "-v", "t.plain"], env=env)
        self.assertEqual(r.returncode, 2, r.stderr)
        # Without -v, the output is what it always was.
        r = cgtest.run([cgtest.cli(), "check", "t.tricky", "t.plain"], env=env)
        self.assertEqual((r.returncode, r.stdout), (1, "DENY t.tricky\nALLOW t.plain\n"))

    def test_cli_eval_shows_message_and_placeholders(self):
        cmd = [cgtest.cli(), "eval", "-c", self.path, "--rules-dir", os.path.join(self.d.dir, "rules.d")]
        r = cgtest.run(cmd + ["--uid", "1000", "--gid", "1000", "--groups", "27", "org.example.backup.run",
                              "org.example.home.update.1000", "org.example.home.update.100",
                              "org.example.group.27.read", "org.example.group.28.read",
                              "org.example.1000.mail.inbox"])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stdout.splitlines(), [
            f"DENY org.example.backup.run by {self.path}:3 (no-bob-backup): Backups run from the ops rota; ask #ops",
            f"ALLOW org.example.home.update.1000 by {self.path}:9 (own-home): your own home only",
            "DENY org.example.home.update.100 by default",
            f"ALLOW org.example.group.27.read by {self.path}:11",
            "DENY org.example.group.28.read by default",
            f"ALLOW org.example.1000.mail.inbox by {self.path}:12",
        ])

    def test_cli_test_file_with_placeholders(self):
        t = os.path.join(self.d.dir, "owner.test")
        with open(t, "w") as f:
            f.write('cases = (\n'
                    '  { uid = "1000"; gid = "1000"; action = "org.example.home.update.1000"; expect = "allow"; rule = "own-home"; },\n'
                    '  { uid = "1000"; gid = "1000"; actions = ["org.example.home.update.10000", "org.example.home.update.01000"]; expect = "deny"; rule = "default"; },\n'
                    '  { uid = "0"; gid = "0"; gids = ["4"]; action = "org.example.group.4.read"; expect = "allow"; }\n'
                    ');\n')
        r = cgtest.run([cgtest.cli(), "test", "-c", self.path, "--rules-dir", os.path.join(self.d.dir, "rules.d"), t])
        self.assertEqual((r.returncode, r.stdout.splitlines()[-1]), (0, "4 passed, 0 failed"), r.stdout + r.stderr)

    def test_python(self):
        e = credgate.explain("t.tricky", socket_path=self.d.socket)
        self.assertEqual(e, credgate.Explanation(False, "id:tricky", 'ALLOW -- id:x -- ERR bad-request \\ "q"'))
        self.assertIs(e.allowed, False)
        with credgate.Client(self.d.socket) as c:
            self.assertEqual(c.explain("t.plain"), credgate.Explanation(True, f"{self.path}:8", None))
            self.assertEqual(c.explain("t.nothing"), credgate.Explanation(False, "default", None))
            self.assertTrue(c.check("t.plain"))  # the connection stays in step
            with self.assertRaises(ValueError):
                c.explain("t.*")
            self.assertTrue(c.check(f"org.example.home.update.{os.geteuid()}"))

    @unittest.skipUnless(ROOT, "broker queries: the policy names root alone")
    def test_explain_peer(self):
        a, b = socket.socketpair()
        try:
            e = credgate.explain_peer(a, "org.example.home.update.0", socket_path=self.d.socket)
            self.assertEqual(e, credgate.Explanation(True, "id:own-home", "your own home only"))
            a.sendall(b"x")
            self.assertEqual(b.recv(1), b"x")  # still ours
        finally:
            a.close()
            b.close()


@unittest.skipUnless(ROOT, "needs root to judge other uids and groups")
class TestOwnerScoped(Case):
    """{uid} and {gid} against identities the kernel vouches for."""

    def ask(self, uid, gid, groups, actions):
        sock = self.d.socket

        def fn():
            with credgate.Client(sock) as c:
                return [c.check(a) for a in actions], c.explain(actions[0])

        return cgtest.as_identity(uid, gid, groups, fn)

    def test_uid_boundaries(self):
        cases = {
            0: (["org.example.home.update.0"], ["org.example.home.update.00", "org.example.home.update.1000"]),
            100: (["org.example.home.update.100"], ["org.example.home.update.1000", "org.example.home.update.10"]),
            1000: (["org.example.home.update.1000"], ["org.example.home.update.100", "org.example.home.update.10000",
                                                       "org.example.home.update.01000"]),
            4294967294: (["org.example.home.update.4294967294"], ["org.example.home.update.4294967295",
                                                                 "org.example.home.update.-2"]),
        }
        for uid, (yes, no) in cases.items():
            with self.subTest(uid=uid):
                got, e = self.ask(uid, 60000, [], yes + no)
                self.assertEqual(got, [True] * len(yes) + [False] * len(no))
                self.assertEqual(e, credgate.Explanation(True, "id:own-home", "your own home only"))

    def test_gid_primary_and_supplementary(self):
        got, e = self.ask(1234, 4000000000, [27, 100], [
            "org.example.group.4000000000.read", "org.example.group.27.read", "org.example.group.100.read",
            "org.example.group.1234.read", "org.example.group.28.read", "org.example.group.027.read"])
        self.assertEqual(got, [True, True, True, False, False, False])
        self.assertTrue(e.allowed)

    def test_broker_asks_for_peer(self):
        """EXPLAIN-PEER: the peer's uid fills {uid}, not the broker's."""
        with cgtest.peer_connection(self.d.dir, 1000, 1000, []) as conn:
            with credgate.Client(self.d.socket) as c:
                self.assertEqual(c.explain_peer(conn, "org.example.home.update.1000"),
                                 credgate.Explanation(True, "id:own-home", "your own home only"))
                self.assertFalse(c.check_peer(conn, "org.example.home.update.0"))
                self.assertEqual(c.explain_peer(conn, "org.example.backup.run"),
                                 credgate.Explanation(False, "id:no-bob-backup",
                                                      "Backups run from the ops rota; ask #ops"))


class TestNonBroker(unittest.TestCase):
    @unittest.skipUnless(ROOT, "needs root to run a client as another uid")
    def test_explain_peer_refused(self):
        d = cgtest.Daemon(POLICY)
        d.start()
        self.addCleanup(d.stop)
        sock = d.socket

        def fn():
            with credgate.Client(sock) as c:
                e = c.explain("t.plain")
                try:
                    a, b = socket.socketpair()
                    c.explain_peer(a, "t.plain")
                    return e, "no error"
                except credgate.CredgateError as err:
                    return e, err.reason

        e, reason = cgtest.as_identity(1000, 1000, [], fn)
        self.assertTrue(e.allowed)
        self.assertEqual(reason, "not-a-broker")


if __name__ == "__main__":
    cgtest.main()
