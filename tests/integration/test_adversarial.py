#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Adversarial suite (issue 6): attacks on a running credgated while a
control client keeps asking.

Every test starts its own daemon, warms it up with the control client,
records the daemon's fd count (/proc/PID/fd) and VmRSS, then runs one attack
while a control child (uid CTL_UID; one thread on a persistent connection, one
opening a new connection per request, about a third of the requests) asks
CHECK/PING and must get the right answer every time, with p99 <= 50 ms and no
error (the connect storm is the one exception for new connections, see
there). After the attack the
daemon's fd count must come back to the baseline exactly, and its RSS to
within RSS_SLACK_KB of it, within a bounded wait, and the daemon must still
answer. The figures of every attack are printed as TAP comments.

The attackers run in child processes (uid ATK_UID unless said otherwise)
so that neither the GIL nor the attack's own work skews the control
client's latencies beyond what the shared CPU does.
"""

import errno
import os
import random
import resource
import signal
import socket
import subprocess
import time
import unittest

import adversary
import cgtest
from adversary import (ATK_UID, CTL_UID, Child, FuseFdSender, FuseHang, control, cpu_seconds, fd_count,
                       fd_targets, helper_program, note, popen_as, proc_state, raise_nofile, recv_all, rss_kb,
                       stopped, summarize)

# Latency bounds scale with CK_TIMEOUT_MULTIPLIER, as the Check unit tests'
# timeouts do in sanitizer and valgrind runs.
TIME_FACTOR = float(os.environ.get("CK_TIMEOUT_MULTIPLIER") or 1)
P99_MAX_MS = 50.0 * TIME_FACTOR
# RSS "near baseline": within RSS_SLACK_KB after at most RSS_WAIT_S. The
# daemon frees what it allocated per connection; the slack covers what stays
# legitimately resident: the larger reply buffers and epoll/closer arrays a
# burst leaves behind, a reload thread's malloc arena, glibc's free lists
# (measured: +4 to +220 KiB). After many connections close the daemon calls
# malloc_trim() at its next 2 s status tick (before that fix, 5,000 closed
# slowloris connections kept 2.4 MB resident for good), so the wait covers
# three ticks. A leak of 100 bytes per connection in the 100,000-connection
# storm (10 MB), or of 2 KiB per reload in the SIGHUP storm (600 KiB), fails.
# Issue 10: the bounds a third uid's requests must meet while one uid
# attacks with a FUSE descriptor or a pipelined flood, and how fast SIGTERM
# must end the daemon.
FAIR_P99_MS = 10.0 * TIME_FACTOR
FAIR_P99_FRESH_MS = 20.0 * TIME_FACTOR
EXIT_MAX_S = 1.0 * TIME_FACTOR
RSS_SLACK_KB = 512
RSS_WAIT_S = 6.0
RECOVER_S = 15.0

POLICY = f"""\
default = "deny";
rules = (
  {{ action = "ctl.allow"; effect = "allow"; uids = ["{CTL_UID}"]; }},
  {{ action = "ctl.deny"; effect = "deny"; anyone = true; }},
  {{ action = "open.*"; effect = "allow"; anyone = true; }}
);
"""

# The SIGHUP attack: two valid policies that disagree on ctl.flip/ctl.flop,
# and invalid ones that would (if they were ever applied) grant ctl.never.
RELOAD_VALID = {}
for _name, _flip, _flop in (("P1", "allow", "deny"), ("P2", "deny", "allow")):
    RELOAD_VALID[_name] = f"""\
default = "deny";
rules = (
  {{ action = "ctl.allow"; effect = "allow"; uids = ["{CTL_UID}"]; }},
  {{ action = "ctl.flip"; effect = "{_flip}"; uids = ["{CTL_UID}"]; }},
  {{ action = "ctl.flop"; effect = "{_flop}"; uids = ["{CTL_UID}"]; }}
);
"""
RELOAD_INVALID = [
    # a bad effect after the granting rule
    """default = "deny";
rules = (
  { action = "ctl.never"; effect = "allow"; anyone = true; },
  { action = "ctl.allow"; effect = "allow"; anyone = true; },
  { action = "x"; effect = "permit"; anyone = true; }
);
""",
    # a syntax error (a truncated file)
    """default = "allow";
rules = (
  { action = "ctl.never"; effect = "allow"; anyone = true; },
  { action = "ctl.flip"; effect = "allow"; anyone = true; },
  { action = "ctl.flop"; effect = "al""",
    # an unknown top-level setting
    """default = "allow";
rules = ( { action = "*"; effect = "allow"; anyone = true; } );
bogus = 1;
""",
    # an empty file (no rules)
    "",
]
RELOAD_BATCH = ["CHECK ctl.flip", "CHECK ctl.flop", "CHECK ctl.never", "CHECK ctl.allow"]
RELOAD_ANSWERS = {("ALLOW", "DENY", "DENY", "ALLOW"): "P1", ("DENY", "ALLOW", "DENY", "ALLOW"): "P2"}


def sanitized():
    """Is credgated built with AddressSanitizer?"""
    with open(cgtest.credgated(), "rb") as f:
        return b"__asan_init" in f.read()


def check_reload_batch(got):
    lab = RELOAD_ANSWERS.get(tuple(got))
    if lab is None:
        raise AssertionError(f"answers {got} follow no valid policy")
    return lab


def quiet_close(s):
    try:
        s.close()
    except OSError:
        pass


def read_reply(s, timeout=5.0):
    data, how = recv_all(s, timeout)
    return data, how


class AdversarialTest(unittest.TestCase):
    # -- scaffolding -----------------------------------------------------------
    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root (control and attackers run as other uids)")
        raise_nofile(20000)
        self.children = []

    def tearDown(self):
        for c in self.children:
            c.cleanup()

    def daemon(self, *args, timeout=None, policy=POLICY, env=None):
        d = cgtest.Daemon(policy, timeout=timeout, args=list(args), env=env)
        self.addCleanup(d.cleanup)
        d.start()
        return d

    def child(self, fn, uid=ATK_UID):
        c = Child(fn, uid=uid)
        self.children.append(c)
        return c

    def wait_fds(self, d, want, timeout=RECOVER_S):
        t0 = time.monotonic()
        while True:
            n = fd_count(d.pid)
            if n == want:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"daemon fd count {n} did not return to {want} within {timeout} s; "
                                     f"fds: {sorted(fd_targets(d.pid))}")
            time.sleep(0.02)

    def settle_fds(self, d):
        return adversary.settle_fds(d, timeout=5, quiet=0.3)

    def control_child(self, d, **kw):
        return self.child(control(d.socket, **kw), uid=CTL_UID)

    def run_attack(self, name, d, attack, control_kw=None, p99_max=P99_MAX_MS, p99_fresh_max=None, warmup=None):
        """Warm up, take the baseline, run @attack(d) with the control client
        going, then check recovery. Return attack()'s dict."""
        control_kw = control_kw or {}
        # Warm-up: the control client's own allocations, a first reload if
        # asked, so that the baseline is the steady state.
        w = self.control_child(d, **control_kw)
        if warmup:
            warmup(d)
        time.sleep(0.5)
        wres = w.result()
        self.assertEqual((wres["errors"], wres["wrong"]), (0, 0), f"warm-up control failed: {wres}")
        fd0 = self.settle_fds(d)
        rss0 = rss_kb(d.pid)
        self.fd_baseline = fd0

        ctl = self.control_child(d, **control_kw)
        time.sleep(0.2)
        t0 = time.monotonic()
        info = attack(d) or {}
        took = time.monotonic() - t0
        res = ctl.result()
        self.last_control = res
        s = summarize(res)

        fd_wait = self.wait_fds(d, fd0)
        # RSS: bounded wait for it to come back near the baseline.
        deadline = time.monotonic() + RSS_WAIT_S
        rss1 = rss_kb(d.pid)
        while rss1 > rss0 + RSS_SLACK_KB and time.monotonic() < deadline:
            time.sleep(0.1)
            rss1 = rss_kb(d.pid)
        fd1 = fd_count(d.pid)

        # Still alive and answering, for the control identity too.
        self.assertTrue(d.alive(), f"daemon died during {name}:\n{d.stderr()[-3000:]}")
        after = self.control_child(d, **control_kw)
        time.sleep(0.3)
        ares = after.result()

        extra = " ".join(f"{k}={v}" for k, v in info.items() if not k.startswith("_"))
        note(f"{name}: attack {took:.1f} s; {extra}\n"
             f"  control: {s['n']} requests ({s['fresh']} on new connections), p50 {s['p50']:.2f} ms, "
             f"p99 {s['p99']:.2f} ms (persistent {s['p99_persistent']:.2f}, new {s['p99_fresh']:.2f}), "
             f"max {s['max']:.2f} ms, errors {s['errors']}, wrong {s['wrong']}"
             f"{'; answered by ' + str(res['labels']) if res['labels'] else ''}\n"
             f"  daemon: fds {fd0} before, {info.get('_fds_peak', '-')} peak, {fd1} after "
             f"(back in {fd_wait:.2f} s); RSS {rss0} KiB before, {info.get('_rss_peak', '-')} peak, "
             f"{rss1} KiB after ({rss1 - rss0:+d} KiB)")
        self.assertEqual(res["wrong"], 0, f"wrong control answers: {res['wrong_list']}")
        self.assertEqual(res["errors"], 0, f"control errors: {res['error_list']}")
        self.assertGreaterEqual(s["n"], 100, "the control client hardly ran")
        if p99_fresh_max is None:
            self.assertLessEqual(s["p99"], p99_max, f"control p99 {s['p99']:.2f} ms > {p99_max} ms")
        else:
            self.assertLessEqual(s["p99_persistent"], p99_max,
                                 f"control p99 (persistent) {s['p99_persistent']:.2f} ms > {p99_max} ms")
            self.assertLessEqual(s["p99_fresh"], p99_fresh_max,
                                 f"control p99 (new connections) {s['p99_fresh']:.2f} ms > {p99_fresh_max} ms")
        self.assertEqual(fd1, fd0)
        if sanitized():
            note("  (AddressSanitizer build: its quarantine keeps freed memory; RSS not checked)")
        else:
            self.assertLessEqual(rss1, rss0 + RSS_SLACK_KB, f"RSS {rss0} -> {rss1} KiB")
        self.assertEqual((ares["errors"], ares["wrong"]), (0, 0), f"control after the attack: {ares}")
        self.assertGreater(ares["n"], 10)
        d.stop()
        return info

    def peak(self, d, info):
        """Record the daemon's peak fds/RSS seen so far in @info."""
        try:
            info["_fds_peak"] = max(info.get("_fds_peak", 0), fd_count(d.pid))
            info["_rss_peak"] = max(info.get("_rss_peak", 0), rss_kb(d.pid))
        except OSError:
            pass

    def watch(self, d, child, info, timeout=60.0):
        """Sample the daemon while @child runs; return its result."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.peak(d, info)
            try:
                pid, _ = os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:
                pid = child.pid
            if pid == child.pid:
                child._reaped = True
                break
            time.sleep(0.05)
        return child.result(timeout=max(1.0, deadline - time.monotonic()))

    # -- attacks ---------------------------------------------------------------
    def test_01_per_uid_quota(self):
        """ATK_UID opens connections far beyond its quota of 32 for 3 s and
        holds the ones it gets; exactly 32 are served, every other one is
        refused with ERR too-many-connections (or closed), and the control
        uid is not affected."""
        quota = 32
        d = self.daemon("--max-connections-per-uid", str(quota))

        def attack(d):
            def hog(stop_fd):
                held, refused, closed, other = [], 0, 0, []
                t_end = time.monotonic() + 3.0
                while time.monotonic() < t_end:
                    s = cgtest.connect(d.socket)
                    cgtest.send_ignoring_close(s, b"PING\n")
                    data, how = recv_all(s, 5.0, lines=1)
                    if data == b"PONG\n":
                        held.append(s)
                        continue
                    s.close()
                    if data == b"ERR too-many-connections\n":
                        refused += 1
                    elif data == b"":
                        closed += 1
                    elif len(other) < 5:
                        other.append(data)
                # The held ones are still served.
                ok = 0
                for s in held:
                    s.sendall(b"CHECK ctl.allow\nCHECK open.x\n")
                    data, _ = recv_all(s, 5.0, lines=2)
                    ok += data == b"DENY\nALLOW\n"
                    s.close()
                return dict(held=len(held), served_after=ok, refused=refused, closed=closed, other=other)

            info = {}
            c = self.child(hog)
            r = self.watch(d, c, info)
            info.update(r)
            self.assertEqual(r["held"], quota)
            self.assertEqual(r["served_after"], quota)
            self.assertGreater(r["refused"], 100)
            self.assertEqual(r["other"], [])
            return info

        self.run_attack("per-uid quota", d, attack)

    def test_02_slowloris(self):
        """5,000 connections of ATK_UID sending one byte per second of a line
        that never ends, for 7 s, against --timeout 3: every one gets
        ERR timeout at its deadline and the attacker reconnects it."""
        n_conns = 5000
        d = self.daemon("--max-connections-per-uid", "20000", "--max-connections", "20000", timeout=3)
        resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (20000, 20000))

        def attack(d):
            def loris(stop_fd):
                def new():
                    s = cgtest.connect(d.socket, timeout=10)
                    s.setblocking(False)
                    return [s, 0]

                conns = [new() for _ in range(n_conns)]
                line = b"CHECK open." + b"a" * 200
                stats = dict(bytes=0, timeouts=0, reconnects=0, other=0)
                t0 = time.monotonic()
                t_end = t0 + 7.0
                slices = 10
                k = 0
                while time.monotonic() < t_end:
                    # One byte per connection per second, in 10 slices.
                    part = range(k % slices, n_conns, slices)
                    for i in part:
                        s, pos = conns[i]
                        try:
                            s.send(line[pos:pos + 1])
                            conns[i][1] = pos + 1
                            stats["bytes"] += 1
                        except (BrokenPipeError, ConnectionResetError, BlockingIOError):
                            try:
                                data = s.recv(100)
                            except OSError:
                                data = b""
                            if data == b"ERR timeout\n":
                                stats["timeouts"] += 1
                            else:
                                stats["other"] += 1
                            s.close()
                            conns[i] = new()
                            stats["reconnects"] += 1
                    k += 1
                    time.sleep(max(0.0, t0 + k / slices - time.monotonic()))
                # Those the daemon closed meanwhile and we did not notice yet.
                for s, _ in conns:
                    s.close()
                return stats

            info = {}
            c = self.child(loris)
            r = self.watch(d, c, info)
            info.update(r)
            self.assertGreaterEqual(info["_fds_peak"], n_conns, "the slowloris connections were not all open")
            # --timeout 3 over 7 s: at least the first wave timed out.
            self.assertGreaterEqual(r["timeouts"], n_conns)
            self.assertEqual(r["other"], 0)
            return info

        self.run_attack("slowloris 5000", d, attack)

    def test_03_megabyte_lines(self):
        """1 MB lines, with and without a newline, alone or after a valid
        request: ERR line-too-long after 1024 bytes, nothing else."""
        d = self.daemon()
        mb = 1 << 20

        def attack(d):
            def big(stop_fd):
                kinds = [
                    (b"A" * mb, b"ERR line-too-long\n"),
                    (b"a" * (mb - 1) + b"\n", b"ERR line-too-long\n"),
                    (b"CHECK open.x\n" + b"B" * mb, b"ALLOW\nERR line-too-long\n"),
                    (b"CHECK " + b"x" * mb + b"\n", b"ERR line-too-long\n"),
                    (b"PING\n" * 3 + b"\xff" * mb, b"PONG\n" * 3 + b"ERR line-too-long\n"),
                ]
                stats = dict(lines=0, bytes_offered=0, bytes_sent=0, wrong=[])
                t_end = time.monotonic() + 3.0
                i = 0
                while time.monotonic() < t_end:
                    data, want = kinds[i % len(kinds)]
                    with cgtest.connect(d.socket) as s:
                        stats["bytes_sent"] += cgtest.send_ignoring_close(s, data)
                        got, _ = recv_all(s, 5.0)
                    stats["lines"] += 1
                    stats["bytes_offered"] += len(data)
                    if got != want and len(stats["wrong"]) < 5:
                        stats["wrong"].append((i % len(kinds), got))
                    i += 1
                return stats

            info = {}
            r = self.watch(d, self.child(big), info)
            info.update(r)
            self.assertEqual(r["wrong"], [])
            self.assertGreater(r["lines"], 50)
            return info

        self.run_attack("1 MB lines", d, attack)

    def test_04_random_binary(self):
        """Random bytes (NULs, bytes >= 0x80, invalid UTF-8, with or without
        newlines, sometimes after a valid request), then EOF: the reply is
        exactly what the protocol says for the first line, never ALLOW for
        the junk."""
        d = self.daemon()

        def attack(d):
            def junk(stop_fd):
                rnd = random.Random(6)
                bad_first = [b"\x00", b"\xff", b"\xc3\x28", b"\x80", b"\r", b"\t", b"\x7f", b"\xed\xa0\x80"]
                stats = dict(sent=0, bytes=0, by_reply={}, wrong=[])
                t_end = time.monotonic() + 3.0
                while time.monotonic() < t_end:
                    n = rnd.choice([rnd.randint(1, 100), rnd.randint(1, 2000), rnd.randint(1000, 70000)])
                    body = rnd.choice(bad_first) + rnd.randbytes(n)
                    if rnd.random() < 0.3:
                        body = body.replace(b"\n", b"")
                    prefix, want_prefix = rnd.choice([(b"", b""), (b"CHECK open.y\n", b"ALLOW\n"),
                                                      (b"CHECK ctl.allow\nPING\n", b"DENY\nPONG\n")])
                    i = body.find(b"\n")
                    if 0 <= i < 1024:
                        want = b"ERR bad-request\n"
                    elif len(body) >= 1024:
                        want = b"ERR line-too-long\n"
                    else:
                        want = b""
                    want = want_prefix + want
                    with cgtest.connect(d.socket) as s:
                        stats["bytes"] += cgtest.send_ignoring_close(s, prefix + body)
                        try:
                            s.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                        got, how = recv_all(s, 5.0)
                    stats["sent"] += 1
                    key = got.split(b"\n")[-2].decode("ascii", "replace") if got else "(closed)"
                    stats["by_reply"][key] = stats["by_reply"].get(key, 0) + 1
                    if (got != want or how != "eof") and len(stats["wrong"]) < 5:
                        stats["wrong"].append((prefix + body[:40], len(body), got, want, how))
                return stats

            info = {}
            r = self.watch(d, self.child(junk), info)
            info.update(r)
            self.assertEqual(r["wrong"], [])
            self.assertGreater(r["sent"], 100)
            return info

        self.run_attack("random binary", d, attack)

    def test_05_fds_on_plain_lines(self):
        """At least 1,000 fds (pipe write ends and socketpair ends) sent with
        SCM_RIGHTS on non-CHECK-PEER lines, 1 to 253 per message: each gets
        ERR bad-peer-fd (after the replies to earlier lines), and the daemon
        keeps none: every pipe's read end sees EOF and every socketpair's
        other end sees EOF once we closed our copies. The sender is root,
        a broker under the default `brokers` setting (issue 10): the
        daemon takes in a broker's descriptors and must close them all;
        a non-broker's are refused before that (test_10*)."""
        d = self.daemon()

        def attack(d):
            def sender(stop_fd):
                plans = [  # (lines, fds, expected reply)
                    (b"PING\n", 1, b"ERR bad-peer-fd\n"),
                    (b"CHECK open.z\n", 2, b"ERR bad-peer-fd\n"),
                    (b"PING\nPING\n", 1, b"PONG\nERR bad-peer-fd\n"),
                    (b"WHOAMI\n", 16, b"ERR bad-peer-fd\n"),
                    (b"CHECK open.z\n", 17, b"ERR bad-peer-fd\n"),
                    (b"PING\n", 253, b"ERR bad-peer-fd\n"),
                    (b"CHECK-PEER open.z\n", 2, b"ERR bad-peer-fd\n"),
                ]
                watch = []  # our ends: must all see EOF at the end
                stats = dict(messages=0, fds=0, inodes=[], wrong=[], gone_unread=0)
                i = 0
                t_end = time.monotonic() + 2.0
                while stats["fds"] < 1500 or (time.monotonic() < t_end and stats["fds"] < 6000):
                    lines, k, want = plans[i % len(plans)]
                    sent = []
                    for j in range(k):
                        if j % 2 == 0:
                            r, w = os.pipe()
                            watch.append(r)
                            sent.append(w)
                        else:
                            a, b = socket.socketpair()
                            watch.append(a.detach())
                            sent.append(b.detach())
                    stats["inodes"] += [os.fstat(f).st_ino for f in sent]
                    with cgtest.connect(d.socket) as s:
                        socket.send_fds(s, [lines], sent)
                        for f in sent:
                            os.close(f)
                        stats["fds"] += k
                        stats["messages"] += 1
                        time.sleep(0.01)  # spread over ~2 s, with the control going
                        if i % 10 == 9:
                            # Close without reading: the fds may still wait
                            # in the daemon's receive queue.
                            stats["gone_unread"] += 1
                        else:
                            got, _ = recv_all(s, 5.0)
                            if got != want and len(stats["wrong"]) < 5:
                                stats["wrong"].append((lines, k, got, want))
                    i += 1
                # Every copy the daemon got must be closed: EOF on our ends.
                deadline = time.monotonic() + 10
                open_ = list(watch)
                while open_ and time.monotonic() < deadline:
                    still = []
                    for f in open_:
                        os.set_blocking(f, False)
                        try:
                            b = os.read(f, 1)
                        except BlockingIOError:
                            still.append(f)
                            continue
                        if b != b"":
                            still.append(f)
                            continue
                        os.close(f)
                    open_ = still
                    if open_:
                        time.sleep(0.05)
                stats["not_closed_by_daemon"] = len(open_)
                for f in open_:
                    os.close(f)
                return stats

            info = {}
            r = self.watch(d, self.child(sender, uid=0), info)
            inodes = set(r.pop("inodes"))
            info.update(r)
            self.assertEqual(r["wrong"], [])
            self.assertGreaterEqual(r["fds"], 1000)
            self.assertEqual(r["not_closed_by_daemon"], 0, "the daemon kept fds a client sent")
            kept = [t for t in fd_targets(d.pid) if t.startswith(("pipe:[", "socket:[")) and
                    int(t.split("[")[1].rstrip("]")) in inodes]
            self.assertEqual(kept, [])
            return info

        self.run_attack("1000+ fds on plain lines", d, attack)

    def test_06_connect_storm(self):
        """100,000 connect-and-close from two ATK_UID processes (every 10th
        sends a CHECK and closes without reading the reply).

        The attackers connect faster than the daemon accepts, so the
        listener's backlog stays full: a new connection of any uid waits in
        connect() for a free slot (the kernel's backlog is shared and knows
        nothing of uids; the per-uid quota only applies after accept). So
        p99 <= 50 ms is required of the persistent control connection, and
        of the control's new connections only that they succeed, answer
        right, and have p99 <= 1 s (measured: 100-200 ms on 2 busy cores);
        a starved client (seconds, or a connect timeout) fails."""
        total, procs = 100_000, 2
        d = self.daemon()

        def attack(d):
            def storm(stop_fd):
                n = total // procs
                refused = 0
                t0 = time.monotonic()
                for i in range(n):
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.connect(d.socket)  # blocking: waits while the backlog is full
                    if i % 10 == 0:
                        try:
                            s.send(b"CHECK open.s\n")
                        except OSError:
                            refused += 1
                    s.close()
                return dict(n=n, secs=time.monotonic() - t0, send_failed=refused)

            info = {}
            t0 = time.monotonic()
            cpu0 = cpu_seconds(d.pid)
            cs = [self.child(storm) for _ in range(procs)]
            rs = []
            for c in cs:
                rs.append(self.watch(d, c, info, timeout=120))
            info["connections"] = sum(r["n"] for r in rs)
            info["storm_s"] = round(time.monotonic() - t0, 2)
            info["rate_per_s"] = int(info["connections"] / info["storm_s"])
            info["daemon_cpu_pct"] = round(100 * (cpu_seconds(d.pid) - cpu0) / info["storm_s"])
            self.assertEqual(info["connections"], total)
            return info

        self.run_attack("connect storm", d, attack, p99_fresh_max=1000.0 * TIME_FACTOR)

    def test_07_emfile(self):
        """RLIMIT_NOFILE 64 for the daemon; ATK_UID opens 300 connections
        and holds them: the daemon runs out of fds, leaves the rest in the
        backlog and must not spin: its CPU time over 3 s of EMFILE pressure
        stays under 0.3 s (10%; a spinning accept loop uses ~100% of a core,
        the measured figure is a few ms). The control client keeps its
        persistent connection (new connections cannot be accepted while the
        fds are gone: they wait in the backlog, by design, see LIMITS in
        credgated(8)); after the pressure it is served on new connections
        again."""
        d = self.daemon(timeout=30)
        resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (64, 64))
        n_atk = 300

        def attack(d):
            def hold(stop_fd):
                conns = []
                for _ in range(n_atk):
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.setblocking(False)
                    try:
                        s.connect(d.socket)
                    except BlockingIOError:
                        pass
                    conns.append(s)
                # Hold until told to stop.
                while not stopped(stop_fd):
                    time.sleep(0.02)
                for s in conns:
                    s.close()
                return dict(n=len(conns))

            info = {}
            c = self.child(hold)
            cgtest.wait_until(lambda: fd_count(d.pid) >= 60, timeout=10, what="the daemon near its fd limit")
            time.sleep(0.3)
            cpu0, t0 = cpu_seconds(d.pid), time.monotonic()
            time.sleep(3.0)
            cpu1, t1 = cpu_seconds(d.pid), time.monotonic()
            self.peak(d, info)
            info["cpu_s"] = round(cpu1 - cpu0, 3)
            info["cpu_pct"] = round(100 * (cpu1 - cpu0) / (t1 - t0), 1)
            r = c.result()
            info["attack_conns"] = r["n"]
            self.assertIn("Too many open files", d.stderr(), "the daemon never hit EMFILE")
            self.assertLess(cpu1 - cpu0, 0.3, f"daemon used {cpu1 - cpu0:.2f} s CPU in 3 s of EMFILE")
            return info

        self.run_attack("EMFILE (RLIMIT_NOFILE 64)", d, attack, control_kw=dict(fresh_every=0))
        # (run_attack's after-check uses the same control without new
        # connections; serve new ones too, now that the pressure is gone.)

    def test_07b_emfile_recovery_fresh(self):
        """Same as test_07 but shorter, and the check after the pressure uses
        new connections: the daemon accepts again once the fds are back."""
        d = self.daemon(timeout=30)
        resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (64, 64))
        fd0 = self.settle_fds(d)

        def hold(stop_fd):
            conns = [cgtest.connect(d.socket) for _ in range(200)]
            while not stopped(stop_fd):
                time.sleep(0.02)
            for s in conns:
                s.close()
            return len(conns)

        c = self.child(hold)
        cgtest.wait_until(lambda: fd_count(d.pid) >= 60, timeout=10, what="the daemon near its fd limit")
        time.sleep(1.0)
        self.assertEqual(c.result(), 200)
        t = self.wait_fds(d, fd0)
        ctl = self.control_child(d, fresh_every=2)
        time.sleep(1.0)
        s = summarize(ctl.result())
        note(f"EMFILE recovery: fds back to {fd0} in {t:.2f} s; control after: {s['n']} requests "
             f"({s['fresh']} new connections), p99 {s['p99']:.2f} ms, max {s['max']:.2f} ms, "
             f"errors {s['errors']}, wrong {s['wrong']}")
        self.assertEqual((s["errors"], s["wrong"]), (0, 0))
        self.assertGreater(s["fresh"], 50)
        self.assertLessEqual(s["p99"], P99_MAX_MS)
        d.stop()

    def test_08_sighup_storm(self):
        """SIGHUP every 10 ms for 3 s while the policy file alternates
        (atomic rename) between valid P1/P2 and invalid policies that would
        grant ctl.never: every control batch is answered wholly by P1 or by
        P2, never an ALLOW for ctl.never, no error."""
        d = self.daemon(policy=RELOAD_VALID["P1"])
        counts = {}

        def warm(d):
            d.kill(signal.SIGHUP)  # a first reload: its thread's arena is part of the baseline

        def attack(d):
            info = {}
            seq = []
            for i in range(8):
                seq.append(RELOAD_VALID["P1" if i % 4 < 2 else "P2"])
                seq.append(RELOAD_INVALID[i % len(RELOAD_INVALID)])
            n = 0
            t0 = time.monotonic()
            while time.monotonic() < t0 + 3.0:
                d.write_policy(seq[n % len(seq)])
                d.kill(signal.SIGHUP)
                n += 1
                if n % 20 == 0:
                    self.peak(d, info)
                time.sleep(max(0.0, t0 + n * 0.01 - time.monotonic()))
            # End on a valid policy, and let the last reloads finish.
            d.write_policy(RELOAD_VALID["P1"])
            d.kill(signal.SIGHUP)
            time.sleep(0.5)
            err = d.stderr()
            info["sighups"] = n + 1
            info["reloads_ok"] = err.count("credgated: reloaded: ")
            info["reloads_failed"] = err.count("reload failed")
            counts.update(info)
            return info

        self.run_attack("SIGHUP storm", d, attack, warmup=warm,
                        control_kw=dict(batch=RELOAD_BATCH, check_batch=check_reload_batch))
        labels = self.last_control["labels"]
        self.assertGreater(labels.get("P1", 0), 0)
        self.assertGreater(labels.get("P2", 0), 0, "the P2 reloads never took effect")
        self.assertGreater(counts["reloads_ok"], 10)
        self.assertGreater(counts["reloads_failed"], 10)

    def test_09_sigstop_client(self):
        """An ATK_UID client with 10 connections stopped half-way through a
        line and 10 that pipelined requests without reading the replies (the
        daemon's back-pressure holds them), then SIGSTOPs itself. The daemon
        serves the control client meanwhile; after SIGKILL of the client
        its fds come back to the baseline. (--timeout 60, so that the
        SIGKILL and not the request timeout frees them.)"""
        d = self.daemon(timeout=60)

        def attack(d):
            def victim(stop_fd):
                conns = []
                for _ in range(10):
                    s = cgtest.connect(d.socket)
                    s.sendall(b"CHECK open.half")
                    conns.append(s)
                for _ in range(10):
                    s = cgtest.connect(d.socket)
                    s.setblocking(False)
                    batch = b"CHECK open.p\n" * 4096
                    try:
                        while True:
                            s.send(batch)
                    except BlockingIOError:
                        pass
                    conns.append(s)
                os.kill(os.getpid(), signal.SIGSTOP)
                return len(conns)

            info = {}
            c = self.child(victim)
            cgtest.wait_until(lambda: proc_state(c.pid) == "T", timeout=15, what="the client stopped")
            # connect() returns once the kernel queued the connection; a slow
            # (sanitizer, valgrind) daemon may not have accepted all of them yet.
            cgtest.wait_until(lambda: fd_count(d.pid) >= self.fd_baseline + 1 + 20, timeout=15,
                              what="the daemon accepted the stopped client's 20 connections")
            t0 = time.monotonic()
            low = None
            while time.monotonic() < t0 + 2.5:
                self.peak(d, info)
                n = fd_count(d.pid)
                low = n if low is None else min(low, n)
                time.sleep(0.1)
            # The baseline, the control's persistent connection (and maybe
            # one new one), and the stopped client's 20 all the time.
            info["fds_while_stopped_min"] = low
            self.assertGreaterEqual(low, self.fd_baseline + 1 + 20,
                                    "the stopped client's connections were not all open in the daemon")
            c.kill(signal.SIGKILL)
            c.reap()
            return info

        self.run_attack("SIGSTOP client", d, attack)

    # -- issue 10 --------------------------------------------------------------
    def fuse_descriptor(self, portable):
        """Issue 10, part 1: one descriptor of a file whose FLUSH is never
        answered (tests/integration/fuse-hang) must not wedge the daemon.

        An ATK_UID client opens the file and sends that descriptor three
        times with "CHECK-PEER x" and three times with "PING", each on a new
        connection. ATK_UID is no broker (the default brokers = root only),
        so each send must end in ERR not-a-broker (CHECK-PEER) or ERR
        bad-peer-fd (PING), or in sendmsg() failing with EPERM where the
        kernel has SO_PASSRIGHTS and the daemon uses it. Then 1,000 ATK_UID
        connections over 1.5 s that each end in ERR unknown-command, while the control
        client (CTL_UID) asks. Required: the control's p99 <= 10 ms without
        error, the daemon's fd count back at its baseline exactly, no FLUSH
        from any thread of the daemon (it never installed the descriptor),
        and SIGTERM ending the daemon (status 0) within 1 s.

        The daemon before issue 10 installed the descriptor, answered
        ERR bad-peer-fd and closed it on its closer thread, which blocked in
        FLUSH for ever: every connection closed after that leaked its
        socket, and the process could not exit until the FUSE server died.

        @portable: the daemon runs with CREDGATED_NO_PASSRIGHTS=1, i.e.
        without SO_PASSRIGHTS as on Debian 12's kernel; there every send
        must reach the daemon and be refused by it (no EPERM)."""
        fuse = FuseHang()  # SkipTest where no FUSE mount is possible
        self.addCleanup(fuse.stop)
        env = dict(os.environ)
        env.pop("CREDGATED_NO_PASSRIGHTS", None)
        if portable:
            env["CREDGATED_NO_PASSRIGHTS"] = "1"
        d = self.daemon(env=env)
        # Cleanups run last-added first: the FUSE server must be gone
        # before anything waits for the sender or the daemon, which may be
        # stuck in FLUSH until then.
        self.addCleanup(fuse.stop)
        name = "FUSE descriptor" + (" (CREDGATED_NO_PASSRIGHTS=1)" if portable else "")

        w = self.control_child(d)
        time.sleep(0.5)
        wres = w.result()
        self.assertEqual((wres["errors"], wres["wrong"]), (0, 0), f"warm-up control failed: {wres}")
        fd0 = self.settle_fds(d)
        rss0 = rss_kb(d.pid)
        info = {}

        ctl = self.control_child(d)
        time.sleep(0.2)
        t0 = time.monotonic()
        lines = ["CHECK-PEER x", "PING"] * 3
        sender = FuseFdSender(ATK_UID, fuse.path, d.socket, lines)
        self.addCleanup(sender.reap)
        self.addCleanup(fuse.stop)  # runs before sender.reap
        sent = sender.result()
        self.peak(d, info)

        n_err = 1000

        def err_conns(stop_fd):
            got = {}
            t_start = time.monotonic()
            for i in range(n_err):
                # Spread over 1.5 s, with the control client asking throughout.
                time.sleep(max(0.0, t_start + i * 0.0015 - time.monotonic()))
                with cgtest.connect(d.socket) as s:
                    cgtest.send_ignoring_close(s, b"bogus\n")
                    data, how = recv_all(s, 5.0, lines=1)  # a line, not EOF: see above
                key = data.decode("ascii", "replace").rstrip("\n") or f"({how})"
                got[key] = got.get(key, 0) + 1
            return got

        errs = self.watch(d, self.child(err_conns), info)
        took = time.monotonic() - t0
        # Enough control requests for a p99: keep asking for 2.5 s in all.
        while time.monotonic() < t0 + 2.5:
            self.peak(d, info)
            time.sleep(0.05)
        res = ctl.result()
        s = summarize(res)
        try:
            fd_wait = self.wait_fds(d, fd0, timeout=5.0)
        except AssertionError:
            fd_wait = None
        fd1 = fd_count(d.pid)
        rss1 = rss_kb(d.pid)
        try:
            tids = {int(t) for t in os.listdir(f"/proc/{d.pid}/task")}
        except OSError:
            tids = set()
        daemon_flushes = [(p, g) for p, g in fuse.flushes() if g == d.pid or p == d.pid or p in tids]

        # SIGTERM: measured here, not by d.stop(), which would wait for ever
        # on a daemon stuck in FLUSH.
        t_term = time.monotonic()
        d.kill(signal.SIGTERM)
        try:
            rc = d.proc.wait(max(3.0, 3 * EXIT_MAX_S))
            exit_s = time.monotonic() - t_term
        except subprocess.TimeoutExpired:
            rc, exit_s = None, None
            state = proc_state(d.pid) if os.path.exists(f"/proc/{d.pid}/stat") else "?"

        # The attacker's own close blocks in FLUSH too: proof that the
        # descriptor was a trap. Kill it (it dies closing the descriptor),
        # see its FLUSH, and only then stop the server and reap everything.
        sender.kill()
        try:
            cgtest.wait_until(lambda: any(g == sender.pid or p == sender.pid for p, g in fuse.flushes()),
                              timeout=5, what="the sender's own FLUSH")
            sender_flush = True
        except AssertionError:
            sender_flush = False
        fuse.stop()
        sender.reap()
        if rc is None:
            rc = d.proc.wait(30)  # released by the FUSE server's end

        note(f"{name}: attack {took:.1f} s; sends {list(zip(lines, sent['replies']))}; "
             f"then {n_err} ERR connections: {errs}\n"
             f"  control: {s['n']} requests ({s['fresh']} on new connections), p50 {s['p50']:.2f} ms, "
             f"p99 {s['p99']:.2f} ms (persistent {s['p99_persistent']:.2f}, new {s['p99_fresh']:.2f}), "
             f"max {s['max']:.2f} ms, errors {s['errors']}, wrong {s['wrong']}\n"
             f"  daemon: fds {fd0} before, {info.get('_fds_peak', '-')} peak, {fd1} after"
             f"{f' (back in {fd_wait:.2f} s)' if fd_wait is not None else ' (not back within 5 s)'}; "
             f"RSS {rss0} KiB before, {info.get('_rss_peak', '-')} peak, {rss1} KiB after\n"
             f"  FLUSH requests from the daemon: {len(daemon_flushes)}; the sender's own close blocked in "
             f"FLUSH: {'yes' if sender_flush else 'no'}\n"
             f"  SIGTERM: " + (f"exit status {rc} after {exit_s:.3f} s" if exit_s is not None else
                               f"still running after {max(3.0, 3 * EXIT_MAX_S):.0f} s (state {state}); "
                               f"exited with status {rc} once the FUSE server was gone"))

        problems = []
        ok_reply = {"CHECK-PEER x": "ERR not-a-broker", "PING": "ERR bad-peer-fd"}
        for line, got in zip(lines, sent["replies"]):
            if got == "sendmsg: EPERM" and not portable:
                continue
            if got != ok_reply[line]:
                problems.append(f"{line!r} with the FUSE descriptor got {got!r}, expected "
                                f"{ok_reply[line]!r}{'' if portable else ' or sendmsg() failing with EPERM'}")
        if errs != {"ERR unknown-command": n_err}:
            problems.append(f"the {n_err} ERR connections got {errs}")
        if res["errors"] or res["wrong"]:
            problems.append(f"control client: errors {res['error_list']}, wrong {res['wrong_list']}")
        if s["n"] < 100:
            problems.append("the control client hardly ran")
        if s["p99"] > FAIR_P99_MS:
            problems.append(f"control p99 {s['p99']:.2f} ms > {FAIR_P99_MS} ms")
        if fd1 != fd0:
            problems.append(f"daemon fd count {fd1}, baseline {fd0}")
        if daemon_flushes:
            problems.append(f"the daemon closed the FUSE descriptor (FLUSH from pid/tgid {daemon_flushes})")
        if exit_s is None or exit_s > EXIT_MAX_S:
            problems.append("SIGTERM did not end the daemon within " + str(EXIT_MAX_S) + " s" +
                            (f" (took {exit_s:.3f} s)" if exit_s is not None else ""))
        if rc != 0:
            problems.append(f"exit status {rc} after SIGTERM:\n{d.stderr()[-3000:]}")
        if not sender_flush:
            problems.append("the sender's own close of the descriptor never reached the FUSE server: "
                            "the test did not set the trap it meant to")
        if problems:
            self.fail("\n".join(problems))
        d.stop()

    def test_10a_fuse_descriptor(self):
        self.fuse_descriptor(portable=False)

    def test_10b_fuse_descriptor_no_passrights(self):
        self.fuse_descriptor(portable=True)

    def test_10c_broker_fuse_descriptor_reported(self):
        """A broker the policy names may still pass a FUSE file whose close
        never returns (a protocol error: it is no socket). The daemon closes
        it on the thread kept for such files, which then hangs in FLUSH. It
        must keep serving everyone (its own connection sockets are closed
        as ever), say so in STATUS= and the log within a few seconds, and
        report the close's return once the FUSE server is gone."""
        fuse = FuseHang()
        self.addCleanup(fuse.stop)
        npath = os.path.join(fuse.dir, "notify")
        notify = cgtest.Notify(npath)
        self.addCleanup(notify.close)
        policy = POLICY + f'settings = {{ brokers = {{ uids = ["{ATK_UID}"]; }}; }};\n'
        d = cgtest.Daemon(policy, activate=True, activate_args=["-E", f"NOTIFY_SOCKET={npath}"])
        self.addCleanup(d.cleanup)
        d.start()
        self.addCleanup(fuse.stop)  # before the daemon's cleanup: it may wait in FLUSH until then
        notify.next(lambda f: f.get("READY") == "1", "READY=1")
        w = self.control_child(d)
        time.sleep(0.3)
        w.result()
        fd0 = self.settle_fds(d)

        sender = FuseFdSender(ATK_UID, fuse.path, d.socket, ["CHECK-PEER x"])
        self.addCleanup(sender.reap)
        self.addCleanup(fuse.stop)
        sent = sender.result()
        self.assertEqual(sent["replies"], ["ERR bad-peer-fd"], "a FUSE file is no connected Unix socket")
        tids = {int(t) for t in os.listdir(f"/proc/{d.pid}/task")}
        cgtest.wait_until(lambda: any(g == d.pid or p in tids for p, g in fuse.flushes()), timeout=5,
                          what="the daemon's close of the broker's FUSE file (its FLUSH)")

        # Everybody else is served, and connections close as ever.
        ctl = self.control_child(d)

        def err_conns(stop_fd):
            for _ in range(200):
                with cgtest.connect(d.socket) as c:
                    cgtest.send_ignoring_close(c, b"bogus\n")
                    recv_all(c, 5.0)
            return True

        self.child(err_conns).result(timeout=60)
        res = ctl.result()
        s = summarize(res)
        self.assertEqual((res["errors"], res["wrong"]), (0, 0), f"control client: {res}")
        self.assertLessEqual(s["p99"], FAIR_P99_MS)
        self.wait_fds(d, fd0, timeout=5.0)

        _, f, _ = notify.next(lambda f: "stuck" in f.get("STATUS", ""), "a stuck close in STATUS=", timeout=8)
        self.assertRegex(f["STATUS"], r"; a descriptor close has been stuck for \d+ s; revision [0-9a-f]{12}$")
        cgtest.wait_until(lambda: "has not returned for" in d.stderr(), timeout=5, what="the warning")

        # The FUSE server goes: the close returns, and the daemon says so.
        sender.kill()
        fuse.stop()
        sender.reap()
        cgtest.wait_until(lambda: "the stuck descriptor close has returned" in d.stderr(), timeout=5,
                          what="the close's return in the log")
        notify.next(lambda f: "STATUS" in f and "stuck" not in f["STATUS"], "STATUS= without the stuck close",
                    timeout=8)
        note(f"broker's FUSE file: control p99 {s['p99']:.2f} ms while the close hung; fds back to {fd0}; "
             f"STATUS= said: {f['STATUS']}")
        t = time.monotonic()
        d.stop()
        self.assertLess(time.monotonic() - t, EXIT_MAX_S + 1)

    def test_11_pipelined_flood(self):
        """Issue 10, part 2: ATK_UID opens 1,000 connections (its quota is
        1,024) and keeps 2,048 pipelined "CHECK a" lines (16 KiB) in flight
        on each for 5 s, reading every reply (tests/integration/flood, in
        C). Meanwhile the control client (CTL_UID) must see p99 <= 10 ms on
        its persistent connection and <= 20 ms on new connections. The
        daemon before issue 10 answered every complete line of a 16 KiB
        read before it served the next connection: 98-346 ms and 197-509 ms."""
        d = self.daemon()
        flood = helper_program("CREDGATE_FLOOD", "flood")
        n_conns, depth, secs = 1000, 2048, 5

        def attack(d):
            info = {}
            p = popen_as(ATK_UID, [flood, "--socket", d.socket, "--connections", str(n_conns),
                                   "--depth", str(depth), "--duration", str(secs)])
            self.addCleanup(p.wait)
            self.addCleanup(p.kill)
            first = p.stdout.readline()
            self.assertTrue(first.startswith("flooding"), f"flood did not start: {first!r}")
            # "during": once the daemon has accepted the flood's connections.
            try:
                cgtest.wait_until(lambda: p.poll() is not None or fd_count(d.pid) >= self.fd_baseline + n_conns,
                                  timeout=3, interval=0.02)
            except AssertionError:
                pass
            fds, rss = [], []
            while p.poll() is None:
                self.peak(d, info)
                try:
                    fds.append(fd_count(d.pid))
                    rss.append(rss_kb(d.pid))
                except OSError:
                    pass
                time.sleep(0.25)
            out = p.stdout.read().strip()
            self.assertEqual(p.wait(), 0, f"flood failed: {out}")
            r = dict(kv.split("=", 1) for kv in out.split())
            info["attacker_requests"] = int(r["requests"])
            info["attacker_rate_per_s"] = int(float(r["rate"]))
            info["attacker_errors"] = int(r["errors"])
            if fds:
                info["fds_during"] = f"{min(fds)}..{max(fds)}"
                info["rss_during_kib"] = f"{min(rss)}..{max(rss)}"
            # The flood was real: far more than the control client asks
            # (measured: 9 to 19 million requests/s on 2 cores).
            self.assertGreaterEqual(info["attacker_rate_per_s"], 100_000 / TIME_FACTOR,
                                    "the attacker hardly flooded")
            return info

        self.run_attack("pipelined flood (1,000 connections x 2,048 lines)", d, attack,
                        p99_max=FAIR_P99_MS, p99_fresh_max=FAIR_P99_FRESH_MS)


if __name__ == "__main__":
    cgtest.main()
