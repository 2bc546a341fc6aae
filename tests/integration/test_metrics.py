#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Metrics (issue 15) through the real daemon: the OpenMetrics document on the
metrics socket (standalone --metrics-socket, and socket-activated with the
name "metrics"), counts that match the requests made (allow, deny, each ERR
reason, quota refusals, reloads good and bad), promtool check metrics, a
reader that never reads not slowing decisions, per-rule counts, the policy
revision (changes when and only when a loaded file changes; the documented
recipe; in -t, STATUS=, audit entries and the document), and credgate stats."""

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import unittest

import cgtest

ROOT = os.geteuid() == 0
PROMTOOL = shutil.which("promtool")
USER = 1000  # a second identity (root runs the test)

POLICY = f"""\
default = "deny";
rules = (
  {{ id = "status"; action = "t.status"; effect = "allow"; anyone = true; }},
  {{ action = "t.admin"; effect = "allow"; uids = ["0"]; }}, {{ action = "t.admin"; effect = "deny"; anyone = true; }},
  {{ id = "never"; action = "t.never"; effect = "allow"; uids = ["4242"]; }}
);
settings = {{ rule_stats = true; brokers = {{ uids = ["0"]; }}; max_connections_per_uid = 4; }};
"""


def read_doc(path, timeout=10):
    return cgtest.read_document(path, timeout)


def samples(doc):
    """{(name, labels): value} of the document's samples."""
    out = {}
    for line in doc.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if not m:
            raise AssertionError(f"unreadable sample line {line!r}")
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def revision_of(files):
    """credgated(8), "Policy revision": SHA-256 over each loaded file as its
    length in decimal, a newline, and its bytes, in evaluation order."""
    h = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        h.update(b"%d\n" % len(data) + data)
    return h.hexdigest()


class Case(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cgtest.Daemon(POLICY, timeout=1, args=["--log", "all", "--log-target", "stderr"])
        cls.msock = os.path.join(cls.d.dir, "metrics.sock")
        cls.d.args += ["--metrics-socket", cls.msock]
        cls.d.start()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def doc(self):
        return read_doc(self.msock)

    def reload(self, text=None, ok=True):
        before = self.d.stderr().count("reloaded: " if ok else "reload failed")
        if text is not None:
            self.d.write_policy(text)
        self.d.kill(signal.SIGHUP)
        cgtest.wait_until(lambda: self.d.stderr().count("reloaded: " if ok else "reload failed") > before,
                          what="the reload")


class TestDocument(Case):
    def test_socket_mode_and_document(self):
        st = os.stat(self.msock)
        self.assertEqual(oct(st.st_mode & 0o777), "0o600", "the metrics socket is the daemon user's alone")
        doc = self.doc()
        self.assertTrue(doc.endswith("\n# EOF\n"), doc[-200:])
        s = samples(doc)
        self.assertEqual(s[("credgate_policy_rules", "")], 4)
        self.assertEqual(s[("credgate_policy_files", "")], 1)
        self.assertAlmostEqual(s[("credgate_start_time_seconds", "")], time.time(), delta=120)
        keys = {kv.split("=", 1)[0] for _, labels in s for kv in labels.split(",") if kv}
        self.assertEqual(keys, {"result", "reason", "revision", "le", "rule"}, "no per-uid series")

    @unittest.skipUnless(PROMTOOL, "promtool missing (Debian package prometheus; .ci/dev installs it)")
    def test_promtool(self):
        with cgtest.Client(self.d.socket) as c:
            c.ask("CHECK t.status")
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=self.doc(), capture_output=True, text=True,
                           timeout=60)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "", ""))

    def test_clients_never_choose_labels(self):
        """Actions are the clients' text: none may become a label or a series."""
        with cgtest.Client(self.d.socket) as c:
            c.ask("CHECK t.evil_label_x")
        self.assertNotIn("evil_label", self.doc())


@unittest.skipUnless(ROOT, "needs root: requests as another uid")
class TestCounts(Case):
    def test_counts_match_requests(self):
        before = samples(self.doc())

        def delta(after, name, labels=""):
            return after[(name, labels)] - before.get((name, labels), 0)

        with cgtest.Client(self.d.socket) as c:
            self.assertEqual([c.ask("CHECK t.status") for _ in range(5)], ["ALLOW"] * 5)
            self.assertEqual([c.ask("CHECK t.nothing") for _ in range(3)], ["DENY"] * 3)
            self.assertEqual(c.ask("EXPLAIN t.admin"), f"ALLOW {self.d.policy_path}:4")
        # One connection per error reason the protocol can be made to give.
        errs = {"bad-request": b"CHECK\n", "unknown-command": b"FROB x\n", "bad-action": b"CHECK a*b\n",
                "line-too-long": b"CHECK " + b"a" * 2000 + b"\n", "bad-peer-fd": b"CHECK-PEER t.status\n"}
        for reason, line in errs.items():
            self.assertEqual(cgtest.request(self.d.socket, line, lines=1).decode(), f"ERR {reason}\n")
        # timeout: --timeout 1 and a connection that never sends.
        with cgtest.Client(self.d.socket) as c:
            self.assertEqual(c.readline(timeout=5), b"ERR timeout\n")
        # not-a-broker and the per-uid quota (4) as uid 1000.
        sock = self.d.socket

        def as_user():
            out = [cgtest.request(sock, b"CHECK-PEER t.status\n", lines=1).decode()]
            held = [cgtest.connect(sock) for _ in range(4)]
            for h in held:
                h.sendall(b"PING\n")
                h.recv(16)
            out.append(cgtest.request(sock, b"PING\n", lines=1).decode())
            for h in held:
                h.close()
            return out

        self.assertEqual(cgtest.as_identity(USER, USER, [], as_user), ["ERR not-a-broker\n",
                                                                       "ERR too-many-connections\n"])
        after = samples(self.doc())
        self.assertEqual(delta(after, "credgate_decisions_total", 'result="allow"'), 6)
        self.assertEqual(delta(after, "credgate_decisions_total", 'result="deny"'), 3)
        for reason in list(errs) + ["timeout", "not-a-broker", "too-many-connections"]:
            self.assertEqual(delta(after, "credgate_errors_total", f'reason="{reason}"'), 1, reason)
        self.assertEqual(delta(after, "credgate_errors_total", 'reason="no-credentials"'), 0)
        self.assertEqual(delta(after, "credgate_connections_refused_total", 'reason="uid-quota"'), 1)
        # Every request line answered once read counts once in the latency
        # histogram: 9 decisions, the 5 lines answered with ERR (not the
        # over-long one, the timeout or the refused connection), 4 PINGs.
        self.assertEqual(delta(after, "credgate_decision_duration_seconds_count"), 9 + 5 + 4)
        self.assertEqual(after[("credgate_decision_duration_seconds_bucket", 'le="+Inf"')],
                         after[("credgate_decision_duration_seconds_count", "")])

    def test_reloads(self):
        before = samples(self.doc())
        self.reload()
        self.reload(POLICY.replace('uids = ["4242"]', 'users = ["no-such-user-cg"]').replace(
            'effect = "allow"; users', 'effect = "deny"; users'), ok=False)
        after = samples(self.doc())
        self.assertEqual(after[("credgate_reloads_total", 'result="success"')] -
                         before[("credgate_reloads_total", 'result="success"')], 1)
        self.assertEqual(after[("credgate_reloads_total", 'result="failure"')] -
                         before[("credgate_reloads_total", 'result="failure"')], 1)
        self.reload(POLICY)

    def test_rule_stats_and_cli(self):
        self.reload(POLICY)  # counts start at the load
        t0 = time.time()
        with cgtest.Client(self.d.socket) as c:
            for _ in range(7):
                c.ask("CHECK t.status")
            c.ask("CHECK t.admin")
        got = cgtest.as_identity(USER, USER, [], lambda: cgtest.request(self.d.socket, b"CHECK t.admin\n", lines=1))
        self.assertEqual(got, b"DENY\n")
        s = samples(self.doc())
        path = self.d.policy_path
        self.assertEqual(s[("credgate_rule_hits_total", 'rule="id:status"')], 7)
        self.assertEqual(s[("credgate_rule_hits_total", f'rule="{path}:4"')], 1)
        self.assertEqual(s[("credgate_rule_hits_total", f'rule="{path}:4#2"')], 1)
        self.assertEqual(s[("credgate_rule_hits_total", 'rule="id:never"')], 0)
        self.assertNotIn(("credgate_rule_last_hit_timestamp_seconds", 'rule="id:never"'), s)
        self.assertAlmostEqual(s[("credgate_rule_last_hit_timestamp_seconds", 'rule="id:status"')], t0, delta=5)
        r = cgtest.run([cgtest.cli(), "stats", "--metrics-socket", self.msock, "--rules"])
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertRegex(lines[0], r"^\s+HITS\s+LAST HIT\s+RULE$")
        self.assertRegex(lines[1], r"^\s+7  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d  id:status$")
        self.assertRegex(lines[4], r"^\s+0  never\s+id:never$")
        self.assertTrue(lines[-1].startswith("counted since "))
        r = cgtest.run([cgtest.cli(), "stats", "--metrics-socket", self.msock])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^policy:      4 rules from 1 files, revision [0-9a-f]{12}, loaded ")
        self.assertRegex(r.stdout, r"(?m)^rule counts: on ")
        r = cgtest.run([cgtest.cli(), "stats", "--metrics-socket", self.msock, "--openmetrics"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("# TYPE credgate_decisions_total counter\n") and
                        r.stdout.endswith("# EOF\n"))
        # A reload starts the counts afresh.
        self.reload(POLICY)
        self.assertEqual(samples(self.doc())[("credgate_rule_hits_total", 'rule="id:status"')], 0)


class TestRevision(unittest.TestCase):
    """The revision changes when and only when a loaded file changes."""

    def setUp(self):
        self.dir = cgtest.mkdtemp()
        self.rules = os.path.join(self.dir, "rules.d")
        os.mkdir(self.rules, 0o755)
        self.main = os.path.join(self.dir, "main.conf")
        with open(self.main, "w") as f:
            f.write('rules = ( { action = "a"; effect = "allow"; anyone = true; } );\n')

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def rev(self):
        r = cgtest.run([cgtest.credgated(), "-t", "-c", self.main, "--rules-dir", self.rules])
        self.assertEqual(r.returncode, 0, r.stderr)
        m = re.search(r"(?m)^revision ([0-9a-f]{64})$", r.stdout)
        self.assertTrue(m, r.stdout)
        return m.group(1)

    def write(self, name, text):
        with open(os.path.join(self.rules, name), "w") as f:
            f.write(text)

    def test_when_and_only_when(self):
        r0 = self.rev()
        self.assertEqual(r0, revision_of([self.main]), "the documented recipe")
        os.utime(self.main, (0, 0))
        self.assertEqual(self.rev(), r0, "a new mtime is no change")
        self.write("README", "not a .conf file\n")
        self.write("50-x.conf.disabled", 'rules = ();\n')
        self.assertEqual(self.rev(), r0, "skipped files are not loaded")
        self.write("60-nothing.conf", "")
        self.assertEqual(self.rev(), r0, "a mask that masks nothing loads nothing")
        self.write("10-site.conf", 'rules = ( { action = "b"; effect = "deny"; anyone = true; } );\n')
        r1 = self.rev()
        self.assertNotEqual(r1, r0)
        self.assertEqual(r1, revision_of([os.path.join(self.rules, "10-site.conf"), self.main]))
        self.write("10-site.conf", 'rules = ( { action = "b"; effect = "deny"; anyone = true; } );\n ')
        self.assertNotEqual(self.rev(), r1, "one byte more")
        self.write("10-site.conf", 'rules = ( { action = "b"; effect = "deny"; anyone = true; } );\n')
        self.assertEqual(self.rev(), r1, "the same bytes again: the same revision")
        # Bytes moved from one file to the next change both files, and the revision.
        self.write("10-site.conf", 'rules = ( { action = "b"; effect = "deny"; anyone = true; } );')
        with open(self.main, "a") as f:
            f.write("")
        with open(self.main) as f:
            main_text = f.read()
        with open(self.main, "w") as f:
            f.write("\n" + main_text)
        self.assertNotEqual(self.rev(), r1)

    def test_status_audit_and_document(self):
        # Under systemd-socket-activate: the decision socket, the metrics socket
        # (named "metrics") and a notification socket of our own.
        d = cgtest.Daemon('rules = ( { id = "a"; action = "a"; effect = "allow"; anyone = true; } );\n',
                          activate=True, args=["--log", "all", "--log-target", "stderr"])
        msock = os.path.join(d.dir, "m.sock")
        npath = os.path.join(d.dir, "notify")
        n = cgtest.Notify(npath)
        self.addCleanup(n.close)
        d.activate_args = ["-l", msock, "--fdname=credgated.socket:metrics", "-E", f"NOTIFY_SOCKET={npath}"]
        d.start()
        self.addCleanup(d.stop)
        want = revision_of([d.policy_path])
        with cgtest.Client(d.socket) as c:
            self.assertEqual(c.ask("CHECK a"), "ALLOW")
        cgtest.wait_until(lambda: "audit:" in d.stderr(), what="the audit entry")
        self.assertRegex(d.stderr(), rf"audit: decision=ALLOW action=a rule=\S+:1 rule_id=a pid=\d+ uid=\d+ gid=\d+ "
                                     rf"revision={want}\n")
        self.assertIn(f'credgate_policy_info{{revision="{want}"}} 1\n', read_doc(msock))
        _, f, _ = n.next(lambda f: "STATUS" in f, "STATUS=")
        self.assertTrue(f["STATUS"].endswith(f"; revision {want[:12]}"), f["STATUS"])


class TestSlowReaders(unittest.TestCase):
    """Readers that never read, and more of them than the daemon serves at
    once, on a policy whose document is megabytes long: decisions go on."""

    def test_stalled_readers(self):
        n = 20000
        rules = ",\n".join(f'  {{ action = "r.{i}"; effect = "allow"; anyone = true; }}' for i in range(n))
        d = cgtest.Daemon(f"rules = (\n{rules}\n);\nsettings = {{ rule_stats = true; }};\n",
                          args=["--log", "none"])
        msock = os.path.join(d.dir, "m.sock")
        d.args += ["--metrics-socket", msock]
        d.start()
        self.addCleanup(d.stop)
        with cgtest.Client(d.socket) as c:
            for i in range(0, n, 97):
                c.ask(f"CHECK r.{i}")
        stalled = []
        for _ in range(12):  # 8 are taken, the rest closed at once
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(msock)
            stalled.append(s)
        self.addCleanup(lambda: [s.close() for s in stalled])
        lat = []
        with cgtest.Client(d.socket) as c:
            t_end = time.monotonic() + 1.5
            while time.monotonic() < t_end:
                t = time.perf_counter()
                self.assertEqual(c.ask("CHECK r.1"), "ALLOW")
                lat.append(time.perf_counter() - t)
        lat.sort()
        p99 = lat[int(len(lat) * 0.99)]
        self.assertLess(p99, 0.01, f"p99 {p99 * 1e3:.2f} ms over {len(lat)} requests with stalled readers")
        # A reader that then reads gets its document whole, or (stalled past
        # 5 s) the connection ends without "# EOF": never a mix of documents.
        time.sleep(5.5)
        got = []
        for s in stalled:
            s.settimeout(5)
            data = b""
            while True:
                b = s.recv(1 << 20)
                if not b:
                    break
                data += b
            got.append(data)
        self.assertTrue(all(not g.endswith(b"# EOF\n") for g in got), "a stalled reader was kept past 5 s")
        self.assertEqual(sum(1 for g in got if g == b""), 4, "beyond 8 at a time, closed at once")
        doc = read_doc(msock)
        self.assertTrue(doc.endswith("# EOF\n"))
        self.assertEqual(len([l for l in doc.splitlines() if l.startswith("credgate_rule_hits_total{")]), n)
        self.assertGreater(len(doc), 1_000_000)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


class TestOutOfDescriptors(unittest.TestCase):
    def test_metrics_client_while_out_of_fds(self):
        """RLIMIT_NOFILE 40 and 60 decision connections held: a metrics client
        waiting in the backlog must not make the loop spin on accept()
        (under 0.3 s of CPU in 2 s; a spinning loop takes a whole core), and
        gets its document once descriptors are free again."""
        import resource
        d = cgtest.Daemon('rules = ( { action = "a"; effect = "allow"; anyone = true; } );\n',
                          args=["--log", "none", "--log-target", "stderr", "--max-connections-per-uid", "1000"])
        msock = os.path.join(d.dir, "m.sock")
        d.args += ["--metrics-socket", msock]
        d.start()
        self.addCleanup(d.stop)
        resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (40, 40))
        held = []
        self.addCleanup(lambda: [h.close() for h in held])
        for _ in range(60):
            h = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            h.setblocking(False)
            try:
                h.connect(d.socket)
            except BlockingIOError:
                pass
            held.append(h)
        cgtest.wait_until(lambda: len(os.listdir(f"/proc/{d.pid}/fd")) >= 38, timeout=10,
                          what="the daemon near its descriptor limit")
        m = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        m.settimeout(15)
        m.connect(msock)  # into the backlog
        time.sleep(0.3)
        cpu0 = cpu_seconds(d.pid)
        time.sleep(2.0)
        used = cpu_seconds(d.pid) - cpu0
        self.assertLess(used, 0.3, f"the daemon used {used:.2f} s of CPU in 2 s out of descriptors")
        for h in held:
            h.close()
        held.clear()
        data = b""
        while True:
            b = m.recv(1 << 20)
            if not b:
                break
            data += b
        m.close()
        self.assertTrue(data.endswith(b"# EOF\n"), data[-200:])
        with cgtest.Client(d.socket) as c:
            self.assertEqual(c.ask("CHECK a"), "ALLOW")


class TestActivated(unittest.TestCase):
    def test_named_sockets(self):
        """systemd hands both sockets; the one named "metrics" serves documents."""
        d = cgtest.Daemon('rules = ( { action = "a"; effect = "allow"; anyone = true; } );\n', activate=True,
                          args=["--log", "none"])
        msock = os.path.join(d.dir, "m.sock")
        d.activate_args = ["-l", msock, "--fdname=credgated.socket:metrics"]
        d.start()
        self.addCleanup(d.stop)
        with cgtest.Client(d.socket) as c:
            self.assertEqual(c.ask("CHECK a"), "ALLOW")
        doc = read_doc(msock)
        self.assertIn('credgate_decisions_total{result="allow"} 1\n', doc)
        self.assertTrue(doc.endswith("# EOF\n"))


class TestStatsErrors(unittest.TestCase):
    def test_no_socket(self):
        r = cgtest.run([cgtest.cli(), "stats", "--metrics-socket", "/nonexistent/m.sock"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("credgated-metrics.socket", r.stderr)
        r = cgtest.run([cgtest.cli(), "stats", "--rules", "--openmetrics"])
        self.assertEqual(r.returncode, 2)

    def test_rules_off(self):
        d = cgtest.Daemon('rules = ( { action = "a"; effect = "allow"; anyone = true; } );\n', args=["--log", "none"])
        msock = os.path.join(d.dir, "m.sock")
        d.args += ["--metrics-socket", msock]
        d.start()
        self.addCleanup(d.stop)
        r = cgtest.run([cgtest.cli(), "stats", "--metrics-socket", msock, "--rules"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("rule_stats = true", r.stderr)
        self.assertNotIn("credgate_rule_", read_doc(msock))


if __name__ == "__main__":
    cgtest.main()
