#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Operations (issue 4), against the real credgated ($CREDGATED) and credgate eval
($CREDGATE_CLI): drop-in folders, ordering and masking; refusal of insecure
policy files and folders; reload (success, failure keeping the old policy,
settings, under load, with a 100,000-rule policy); connection quotas
(per uid, max_connections with the backlog); idle exit under socket
activation; the decision audit on stderr; sd_notify READY/STATUS/RELOADING/
STOPPING on a test notify socket.

Measured figures (reload counts, latencies, idle-exit timing) are printed as
TAP comments ("# ...")."""

import ctypes
import fcntl
import os
import re
import select
import shutil
import signal
import socket
import struct
import sys
import termios
import threading
import time
import unittest

import cgtest

_PR_SET_PDEATHSIG = 1
OTHER_UID = 1000  # needs no passwd entry (PLATFORM-NOTES.md)


def note(msg):
    """A TAP comment with a measured figure."""
    sys.stdout.write("".join(f"# {line}\n" for line in msg.split("\n")))
    sys.stdout.flush()


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def ask(path, line, timeout=5.0):
    return cgtest.request(path, line.encode() + b"\n", timeout=timeout, lines=1).decode().rstrip("\n")


def rule(action, effect, subject="anyone = true;"):
    return f'  {{ action = "{action}"; effect = "{effect}"; {subject} }}'


def rules_file(*rules):
    """A drop-in: 'rules = (' on line 1, rule i on line i + 2."""
    return "rules = (\n" + ",\n".join(rules) + "\n);\n"


def main_file(*rules, default="deny", settings=None):
    """A main file: line 1 default, line 2 'rules = (', rule i on line i + 3,
    then the settings group (if any)."""
    text = f'default = "{default}";\nrules = (\n' + ",\n".join(rules) + "\n);\n"
    if settings:
        text += "settings = { " + " ".join(f"{k} = {v};" for k, v in settings.items()) + " };\n"
    return text


def monotonic_usec():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


_libc = ctypes.CDLL(None, use_errno=True)
_SYS_pidfd_getfd = {"x86_64": 438, "aarch64": 438}.get(os.uname().machine, 438)


def pidfd_getfd(pid, fd):
    """A copy of process @pid's descriptor @fd (Linux >= 5.6; skip without)."""
    pidfd = os.pidfd_open(pid)
    try:
        r = _libc.syscall(_SYS_pidfd_getfd, pidfd, fd, 0)
    finally:
        os.close(pidfd)
    if r < 0:
        raise unittest.SkipTest(f"pidfd_getfd: {os.strerror(ctypes.get_errno())}")
    return r


def fionread(fd):
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


def parse_check_listing(out):
    """credgated -t stdout -> [(state, path, rest)] for the per-file lines."""
    res = []
    for line in out.splitlines():
        m = re.fullmatch(r"(loaded|mask|masked|skipped|failed)\s+(\S+?)(:? .*)?", line)
        if m:
            res.append((m.group(1), m.group(2), (m.group(3) or "").lstrip(": ")))
    return res


AUDIT_RE = re.compile(r"^credgated: audit: decision=(ALLOW|DENY) action=(\S+) rule=(\S+) pid=(-?\d+) uid=(\d+) "
                      r"gid=(\d+)(?: broker_pid=(-?\d+) broker_uid=(\d+))? revision=[0-9a-f]{64}$", re.M)
SUPPRESSED_RE = re.compile(r"^credgated: audit: suppressed=(\d+) uid=(\d+)$", re.M)


def audit_entries(stderr):
    return [dict(decision=m[0], action=m[1], rule=m[2], pid=int(m[3]), uid=int(m[4]), gid=int(m[5]),
                 broker_pid=int(m[6]) if m[6] else None, broker_uid=int(m[7]) if m[7] else None)
            for m in AUDIT_RE.findall(stderr)]


class TempDirTest(unittest.TestCase):
    def setUp(self):
        self.dir = cgtest.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        # An empty drop-in folder: keeps every daemon here away from the
        # configured (installed) folders.
        self.empty = self.mkdir("empty.d")

    def path(self, *names):
        return os.path.join(self.dir, *names)

    def mkdir(self, name, mode=0o755):
        p = self.path(name)
        os.mkdir(p)
        os.chmod(p, mode)
        return p

    def daemon(self, policy, *, args=(), rules_dirs=None, **kw):
        dirs = [self.empty] if rules_dirs is None else rules_dirs
        a = []
        for d in dirs:
            a += ["--rules-dir", d]
        d = cgtest.Daemon(policy, args=a + list(args), **kw)
        self.addCleanup(d.cleanup)
        return d

    def check_config(self, main, dirs=()):
        cmd = [cgtest.credgated(), "-t", "-c", main]
        for d in dirs:
            cmd += ["--rules-dir", d]
        return cgtest.run(cmd)

    def assert_refused(self, main, dirs, name, reason):
        """credgated -t exits 1 naming @name and @reason, and the daemon refuses to start."""
        r = self.check_config(main, dirs)
        self.assertEqual(r.returncode, 1, f"stdout={r.stdout!r} stderr={r.stderr!r}")
        self.assertRegex(r.stderr, re.compile("^" + re.escape(name) + ": .*" + reason, re.M))
        self.assertIn("policy refused", r.stderr)
        sock = self.path("refused.sock")
        cmd = [cgtest.credgated(), "-c", main, "-s", sock, "--log-target", "stderr"]
        for d in dirs:
            cmd += ["--rules-dir", d]
        r2 = cgtest.run(cmd, timeout=10)
        self.assertEqual(r2.returncode, 1, f"daemon did not refuse to start: {r2.stderr!r}")
        self.assertRegex(r2.stderr, re.compile("^credgated: " + re.escape(name) + ": .*" + reason, re.M))
        self.assertFalse(os.path.lexists(sock), "bound a socket with a refused policy")
        return r


# ---------------------------------------------------------------------------
# Drop-in folders: order and masking

MAIN = main_file(rule("x", "deny"),     # line 3: loses to A/10-x.conf
                 rule("y", "allow"),    # line 4: loses to B/50-y.conf
                 rule("main", "allow"))  # line 5


class TestDropIns(TempDirTest):
    def build_tree(self):
        A = self.mkdir("A")
        B = self.mkdir("B")
        main = self.path("main.conf")
        write(main, MAIN)
        files = {
            # B/05 sorts before A/10: order is by name across both folders.
            "B/05-early.conf": rules_file(rule("order", "allow")),
            "A/10-x.conf": rules_file(rule("x", "allow"), rule("order", "deny")),
            "B/20-m.conf": rules_file(rule("m", "allow")),        # masked by an empty A/20-m.conf
            "B/30-n.conf": rules_file(rule("n", "allow")),        # masked by A/30-n.conf -> /dev/null
            "A/40-o.conf": rules_file(rule("o", "deny")),         # replaces B/40-o.conf entirely
            "B/40-o.conf": rules_file(rule("o", "allow"), rule("o2", "allow")),
            "B/50-y.conf": rules_file(rule("x", "deny"), rule("y", "deny")),
            # Byte order, not locale or numeric order: "200" < "3", "Z" < "a".
            "B/200-num.conf": rules_file(rule("num", "deny")),
            "A/3-num.conf": rules_file(rule("num", "allow")),
            "B/Z-up.conf": rules_file(rule("case", "allow")),
            "A/a-low.conf": rules_file(rule("case", "deny")),
            # Ignored (dotfiles, not even listed) and skipped (not *.conf).
            "A/.hidden.conf": rules_file(rule("hidden", "allow")),
            "B/.broken.conf": "this is not { a policy\n",
            "A/60-z.conf.disabled": rules_file(rule("disabled", "allow")),
            "A/README": "not a policy\n",
            "B/70-upper.CONF": "not a policy either\n",
        }
        for name, text in files.items():
            write(self.path(name), text)
        write(self.path("A/20-m.conf"), "")
        os.symlink("/dev/null", self.path("A/30-n.conf"))
        return main, A, B

    # action -> (decision, deciding rule relative to self.dir or "default")
    EXPECTED = {
        "x": ("ALLOW", "A/10-x.conf:2"),          # drop-in beats the main file
        "y": ("DENY", "B/50-y.conf:3"),           # drop-in beats the main file
        "order": ("ALLOW", "B/05-early.conf:2"),  # 05 (folder B) before 10 (folder A)
        "main": ("ALLOW", "main.conf:5"),
        "m": ("DENY", "default"),                 # masked by an empty file
        "n": ("DENY", "default"),                 # masked by a /dev/null symlink
        "o": ("DENY", "A/40-o.conf:2"),           # A's file replaces B's
        "o2": ("DENY", "default"),                # ... all of it
        "num": ("DENY", "B/200-num.conf:2"),
        "case": ("ALLOW", "B/Z-up.conf:2"),
        "hidden": ("DENY", "default"),
        "disabled": ("DENY", "default"),
        "other": ("DENY", "default"),
    }

    def rel(self, by):
        return by if by == "default" else self.path(by)

    def test_check_config_lists_every_file(self):
        main, A, B = self.build_tree()
        r = self.check_config(main, [A, B])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        listing = parse_check_listing(r.stdout)
        states = {p: s for s, p, _ in listing}
        want = {
            "loaded": ["B/05-early.conf", "A/10-x.conf", "B/200-num.conf", "A/3-num.conf", "A/40-o.conf",
                       "B/50-y.conf", "B/Z-up.conf", "A/a-low.conf"],
            "mask": ["A/20-m.conf", "A/30-n.conf"],
            "masked": ["B/20-m.conf", "B/30-n.conf"],
            "skipped": ["B/40-o.conf", "A/60-z.conf.disabled", "A/README", "B/70-upper.CONF"],
        }
        expect = {self.path(n): s for s, names in want.items() for n in names}
        expect[main] = "loaded"
        self.assertEqual(states, expect, r.stdout)
        self.assertEqual(len(listing), len(expect), f"a file listed twice:\n{r.stdout}")
        for hidden in ("A/.hidden.conf", "B/.broken.conf"):
            self.assertNotIn(self.path(hidden), r.stdout, "a dotfile must be ignored, not listed")
        # Drop-ins in byte order of their names (masks included), then the main file.
        order = [p for s, p, _ in listing if s in ("loaded", "mask")]
        names = sorted(["05-early.conf", "10-x.conf", "20-m.conf", "200-num.conf", "3-num.conf", "30-n.conf",
                        "40-o.conf", "50-y.conf", "Z-up.conf", "a-low.conf"], key=lambda n: n.encode())
        self.assertEqual([os.path.basename(p) for p in order[:-1]], names, r.stdout)
        self.assertEqual(order[-1], main)
        notes = {p: rest for _, p, rest in listing}
        self.assertIn(self.path("A/20-m.conf"), notes[self.path("B/20-m.conf")])
        self.assertIn(self.path("A/30-n.conf"), notes[self.path("B/30-n.conf")])
        self.assertIn(self.path("A/40-o.conf"), notes[self.path("B/40-o.conf")])
        self.assertIn("not a .conf file", notes[self.path("A/README")])
        self.assertRegex(r.stdout, r"policy OK, 13 rules from 9 files")

    def test_daemon_answers(self):
        main, A, B = self.build_tree()
        d = self.daemon(MAIN, rules_dirs=[A, B])
        d.policy_path = main  # use the tree's main file
        d.start()
        for action, (decision, _) in self.EXPECTED.items():
            with self.subTest(action=action):
                self.assertEqual(ask(d.socket, "CHECK " + action), decision)
        d.stop()

    def test_daemon_answers_with_folders_swapped(self):
        # B first: now B's files win the name clashes and A's empty file is masked by B's.
        main, A, B = self.build_tree()
        r = self.check_config(main, [B, A])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        states = {p: s for s, p, _ in parse_check_listing(r.stdout)}
        self.assertEqual(states[self.path("B/20-m.conf")], "loaded")
        self.assertEqual(states[self.path("A/20-m.conf")], "skipped")
        self.assertEqual(states[self.path("B/40-o.conf")], "loaded")
        d = self.daemon(MAIN, rules_dirs=[B, A])
        d.policy_path = main
        d.start()
        self.assertEqual(ask(d.socket, "CHECK m"), "ALLOW")
        self.assertEqual(ask(d.socket, "CHECK n"), "ALLOW")
        self.assertEqual(ask(d.socket, "CHECK o"), "ALLOW")
        self.assertEqual(ask(d.socket, "CHECK o2"), "ALLOW")
        self.assertEqual(ask(d.socket, "CHECK order"), "ALLOW")
        d.stop()

    def test_eval_names_deciding_file_line(self):
        main, A, B = self.build_tree()
        actions = list(self.EXPECTED)
        r = cgtest.run([cgtest.cli(), "eval", "-c", main, "--rules-dir", A, "--rules-dir", B, "--uid", "0"]
                       + actions)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)  # some are denied
        got = r.stdout.splitlines()
        want = [f"{dec} {a} by {self.rel(by)}" for a, (dec, by) in self.EXPECTED.items()]
        self.assertEqual(got, want)

    def test_dropin_with_default_or_settings_is_an_error(self):
        main = self.path("main.conf")
        write(main, MAIN)
        for i, text in enumerate(['default = "allow";\nrules = ();\n',
                                  'rules = ();\nsettings = { log = "all"; };\n']):
            with self.subTest(text=text):
                D = self.mkdir(f"D{i}")
                bad = os.path.join(D, "60-bad.conf")
                write(bad, text)
                line = 1 if i == 0 else 2
                r = self.check_config(main, [D])
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertRegex(r.stderr, re.compile("^" + re.escape(f"{bad}:{line}: ") + r"\S", re.M))
                self.assertIn(("failed", bad, ""), parse_check_listing(r.stdout))
                d = self.daemon(MAIN, rules_dirs=[D], wait=False)
                d.policy_path = main
                d.start()
                self.assertEqual(d.wait_exit(10), 1, d.stderr())
                self.assertIn(f"{bad}:{line}: ", d.stderr())


# ---------------------------------------------------------------------------
# Insecure files and folders

SIMPLE = main_file(rule("x", "allow"))


class TestInsecure(TempDirTest):
    def setUp(self):
        super().setUp()
        self.main = self.path("main.conf")
        write(self.main, SIMPLE)
        self.A = self.mkdir("A")
        self.dropin = os.path.join(self.A, "10-a.conf")
        write(self.dropin, rules_file(rule("a", "allow")))

    def assert_ok(self, dirs=None):
        r = self.check_config(self.main, [self.A] if dirs is None else dirs)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r

    def test_baseline_is_secure(self):
        self.assert_ok()

    def test_main_file_group_writable(self):
        os.chmod(self.main, 0o664)
        self.assert_refused(self.main, [self.A], self.main, r"writable by group \(mode 0664\)")

    def test_main_file_world_writable(self):
        os.chmod(self.main, 0o646)
        self.assert_refused(self.main, [self.A], self.main, r"writable by others \(mode 0646\)")

    @cgtest.needs_root
    def test_main_file_owned_by_other_uid(self):
        os.chown(self.main, OTHER_UID, OTHER_UID)
        self.assert_refused(self.main, [self.A], self.main, f"owned by uid {OTHER_UID}")

    def test_dropin_file_writable(self):
        os.chmod(self.dropin, 0o666)
        r = self.assert_refused(self.main, [self.A], self.dropin, r"writable by others")
        self.assertIn(("failed", self.dropin, ""), parse_check_listing(r.stdout))

    @cgtest.needs_root
    def test_dropin_file_owned_by_other_uid(self):
        os.chown(self.dropin, OTHER_UID, OTHER_UID)
        self.assert_refused(self.main, [self.A], self.dropin, f"owned by uid {OTHER_UID}")

    def test_dropin_folder_group_writable(self):
        os.chmod(self.A, 0o775)
        r = self.assert_refused(self.main, [self.A], self.A, r"writable by group \(mode 0775\)")
        self.assertRegex(r.stdout, re.compile("^failed +" + re.escape(self.A) + r"\b", re.M))

    @cgtest.needs_root
    def test_dropin_folder_owned_by_other_uid(self):
        os.chown(self.A, OTHER_UID, OTHER_UID)
        self.assert_refused(self.main, [self.A], self.A, f"owned by uid {OTHER_UID}")

    def test_second_folder_insecure(self):
        B = self.mkdir("B", 0o757)
        self.assert_refused(self.main, [self.A, B], B, "writable by others")

    def test_symlink_judged_by_target(self):
        target = self.path("target.conf")
        write(target, SIMPLE, 0o666)
        link = self.path("link.conf")
        os.symlink(target, link)
        self.assert_refused(link, [self.A], link, "writable by others")
        # A drop-in symlink to an insecure target.
        os.symlink(target, os.path.join(self.A, "20-link.conf"))
        write(target, rules_file(rule("l", "allow")), 0o666)
        self.assert_refused(self.main, [self.A], os.path.join(self.A, "20-link.conf"), "writable by others")
        # A secure target makes the same symlink acceptable.
        os.chmod(target, 0o644)
        self.assert_ok()

    def test_folder_symlink_judged_by_target(self):
        real = self.mkdir("real.d", 0o777)
        write(os.path.join(real, "10-r.conf"), rules_file(rule("r", "allow")))
        link = self.path("link.d")
        os.symlink(real, link)
        self.assert_refused(self.main, [link], link, r"writable by others \(mode 0777\)")
        os.chmod(real, 0o755)
        self.assert_ok([link])

    @cgtest.needs_root
    def test_symlink_target_owned_by_other_uid(self):
        target = self.path("target.conf")
        write(target, SIMPLE)
        os.chown(target, OTHER_UID, OTHER_UID)
        link = self.path("link.conf")
        os.symlink(target, link)
        self.assert_refused(link, [self.A], link, f"owned by uid {OTHER_UID}")
        # The link's own owner does not matter: a root-owned target is fine.
        os.chown(target, 0, 0)
        os.lchown(link, OTHER_UID, OTHER_UID)
        r = self.check_config(link, [self.A])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_masks_are_exempt(self):
        B = self.mkdir("B")
        write(os.path.join(B, "10-a.conf"), rules_file(rule("a", "allow")))
        # What a mask masks is not read, so not judged either.
        write(os.path.join(B, "20-b.conf"), "broken { \n", 0o666)
        os.unlink(self.dropin)
        write(self.dropin, "", 0o666)  # an empty, world-writable mask
        if cgtest.is_root():
            os.chown(self.dropin, OTHER_UID, OTHER_UID)
        os.symlink("/dev/null", os.path.join(self.A, "20-b.conf"))
        r = self.assert_ok([self.A, B])
        states = {p: s for s, p, _ in parse_check_listing(r.stdout)}
        self.assertEqual(states[self.dropin], "mask")
        self.assertEqual(states[os.path.join(self.A, "20-b.conf")], "mask")
        self.assertEqual(states[os.path.join(B, "10-a.conf")], "masked")
        self.assertEqual(states[os.path.join(B, "20-b.conf")], "masked")

    def test_eval_skips_ownership_check(self):
        os.chmod(self.main, 0o666)
        os.chmod(self.A, 0o777)
        os.chmod(self.dropin, 0o666)
        if cgtest.is_root():
            os.chown(self.main, OTHER_UID, OTHER_UID)
            os.chown(self.dropin, OTHER_UID, OTHER_UID)
        self.assertEqual(self.check_config(self.main, [self.A]).returncode, 1)
        r = cgtest.run([cgtest.cli(), "eval", "-c", self.main, "--rules-dir", self.A, "--uid", "0", "a", "x"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout, f"ALLOW a by {self.dropin}:2\nALLOW x by {self.main}:3\n")


# ---------------------------------------------------------------------------
# Reload

P1 = main_file(rule("stable", "allow"),  # line 3
               rule("flip", "allow"),    # line 4
               rule("flop", "deny"))     # line 5
P2 = main_file(rule("stable", "allow"),
               rule("flip", "deny"),
               rule("flop", "allow"))
BAD = main_file(rule("stable", "allow"),
                rule("flip", "permit"))  # error on line 4
BAD_LINE = 4
BATCH = b"CHECK flip\nCHECK flop\nCHECK stable\nCHECK never\n"
ANSWERS = {("ALLOW", "DENY", "ALLOW", "DENY"): "P1", ("DENY", "ALLOW", "ALLOW", "DENY"): "P2"}


def stderr_count(d, text):
    return d.stderr().count(text)


class TestReload(TempDirTest):
    def reload(self, d, want_ok=True, timeout=10.0):
        """SIGHUP and wait until the daemon logged the outcome of that reload."""
        key = "credgated: reloaded: " if want_ok else "reload failed"
        other = "reload failed" if want_ok else "credgated: reloaded: "
        n, m = stderr_count(d, key), stderr_count(d, other)
        d.kill(signal.SIGHUP)
        cgtest.wait_until(lambda: stderr_count(d, key) > n or stderr_count(d, other) > m, timeout=timeout,
                          what="the reload's outcome on stderr")
        self.assertEqual(stderr_count(d, other), m, f"unexpected reload outcome:\n{d.stderr()}")

    def test_reload_valid_policy_and_dropins(self):
        D = self.mkdir("D")
        d = self.daemon(P1, rules_dirs=[D], args=["--log", "none"])
        d.start()
        c = cgtest.Client(d.socket)
        self.addCleanup(c.close)
        self.assertEqual(c.ask("CHECK flip"), "ALLOW")
        d.write_policy(P2)
        self.reload(d)
        self.assertEqual(c.ask("CHECK flip"), "DENY", "an open connection gets the new policy too")
        self.assertEqual(ask(d.socket, "CHECK flop"), "ALLOW")
        # Drop-ins are re-read too.
        write(os.path.join(D, "10-new.conf"), rules_file(rule("flip", "allow")))
        self.reload(d)
        self.assertEqual(c.ask("CHECK flip"), "ALLOW")
        os.unlink(os.path.join(D, "10-new.conf"))
        self.reload(d)
        self.assertEqual(c.ask("CHECK flip"), "DENY")
        d.stop()

    def test_reload_invalid_keeps_old(self):
        D = self.mkdir("D")
        d = self.daemon(P1, rules_dirs=[D], args=["--log", "none"])
        d.start()
        d.write_policy(BAD)
        self.reload(d, want_ok=False)
        err = d.stderr()
        self.assertRegex(err, re.compile("^credgated: " + re.escape(f"{d.policy_path}:{BAD_LINE}: ") + r"\S", re.M))
        self.assertIn("previous policy stays in force", err)
        self.assertTrue(d.alive())
        self.assertEqual(ask(d.socket, "CHECK flip"), "ALLOW")
        self.assertEqual(ask(d.socket, "CHECK flop"), "DENY")
        # A good reload after a bad one works.
        d.write_policy(P2)
        self.reload(d)
        self.assertEqual(ask(d.socket, "CHECK flip"), "DENY")
        # A bad drop-in is named with its FILE:LINE and keeps P2 in force.
        bad = os.path.join(D, "10-bad.conf")
        write(bad, rules_file(rule("flip", "allow"), rule("x", "allow", 'uids = [1000];')))
        self.reload(d, want_ok=False)
        self.assertRegex(d.stderr(), re.compile("^credgated: " + re.escape(f"{bad}:3: "), re.M))
        self.assertEqual(ask(d.socket, "CHECK flip"), "DENY")
        # An insecure file on reload: refused, old policy stays.
        os.unlink(bad)
        d.write_policy(P1)
        os.chmod(d.policy_path, 0o666)
        self.reload(d, want_ok=False)
        self.assertRegex(d.stderr(), re.compile("^credgated: " + re.escape(d.policy_path) + ": .*writable", re.M))
        self.assertEqual(ask(d.socket, "CHECK flip"), "DENY")
        os.chmod(d.policy_path, 0o644)
        self.reload(d)
        self.assertEqual(ask(d.socket, "CHECK flip"), "ALLOW")
        d.stop()

    def test_reload_lowered_timeout_applies_at_once(self):
        """request_timeout lowered from 10 s to 2 s by a reload applies to
        every connection, counted from its last request: to one opened
        before the reload and to the first one opened after it, even though
        the timer was last set for a connection that closed under 10 s."""
        d = self.daemon(main_file(rule("a", "allow"), settings={"request_timeout": 10}), args=["--log", "none"])
        d.start()
        self.assertEqual(ask(d.socket, "PING"), "PONG")  # leaves the timer set 10 s ahead
        t_old = time.monotonic()
        old = cgtest.Client(d.socket)
        self.addCleanup(old.close)
        self.assertEqual(old.ask("PING"), "PONG")
        d.write_policy(main_file(rule("a", "allow"), settings={"request_timeout": 2}))
        self.reload(d)
        t_new = time.monotonic()
        new = cgtest.Client(d.socket)
        self.addCleanup(new.close)
        got_old = old.read_to_eof(timeout=15)
        took_old = time.monotonic() - t_old
        got_new = new.read_to_eof(timeout=15)
        took_new = time.monotonic() - t_new
        note(f"timeout lowered 10 -> 2 s by reload: open connection timed out {took_old:.2f} s after its "
             f"last request, the first new one after {took_new:.2f} s")
        self.assertEqual(got_old, b"ERR timeout\n")
        self.assertEqual(got_new, b"ERR timeout\n")
        self.assertTrue(1.5 <= took_old <= 3.5, f"open connection: {took_old:.2f} s")
        self.assertTrue(1.5 <= took_new <= 3.5, f"new connection: {took_new:.2f} s")
        d.stop()

    def test_settings_reread_on_reload(self):
        rules = [rule("a", "allow")]
        # File settings without command-line overrides: re-read on reload.
        d = self.daemon(main_file(*rules, settings={"log": '"none"', "max_connections_per_uid": 1}),
                        args=["--log-target", "stderr"])
        d.start()
        c1 = cgtest.Client(d.socket)
        self.addCleanup(c1.close)
        self.assertEqual(c1.ask("CHECK a"), "ALLOW")
        self.assertEqual(cgtest.request(d.socket, b"PING\n"), b"ERR too-many-connections\n")
        self.assertEqual(audit_entries(d.stderr()), [])
        d.write_policy(main_file(*rules, settings={"log": '"all"', "max_connections_per_uid": 2}))
        self.reload(d)
        self.assertEqual(c1.ask("CHECK a"), "ALLOW")
        self.assertEqual([e["action"] for e in audit_entries(d.stderr())], ["a"])
        with cgtest.Client(d.socket) as c2:
            self.assertEqual(c2.ask("PING"), "PONG")
        c1.close()
        d.stop()

        # The same changes with command-line overrides: the options keep winning.
        d = self.daemon(main_file(*rules, settings={"log": '"all"', "max_connections_per_uid": 2}),
                        args=["--log-target", "stderr", "--log", "none", "--max-connections-per-uid", "1"])
        d.start()
        c1 = cgtest.Client(d.socket)
        self.addCleanup(c1.close)
        self.assertEqual(c1.ask("CHECK a"), "ALLOW")
        self.assertEqual(cgtest.request(d.socket, b"PING\n"), b"ERR too-many-connections\n")
        d.write_policy(main_file(*rules, settings={"log": '"all"', "max_connections_per_uid": 3}))
        self.reload(d)
        self.assertEqual(c1.ask("CHECK a"), "ALLOW")
        self.assertEqual(cgtest.request(d.socket, b"PING\n"), b"ERR too-many-connections\n")
        self.assertEqual(audit_entries(d.stderr()), [], "--log none lost to the file's log = \"all\"")
        c1.close()
        d.stop()

    def test_reload_under_load(self):
        """Clients hammer CHECK (persistent and new connections, 4-request
        batches in one write) while SIGHUP every ~20 ms cycles P1, BAD, P2,
        BAD. Every request gets exactly one reply, no error, and every batch
        is answered wholly by P1 or wholly by P2."""
        d = self.daemon(P1, args=["--log", "none"])
        d.start()
        stop = threading.Event()
        lock = threading.Lock()
        stats = {"sent": 0, "replied": 0, "P1": 0, "P2": 0, "conns": 0}
        errors = []

        def exchange(c):
            c.send(BATCH)
            with lock:
                stats["sent"] += 4
            got = tuple(c.readline(5.0).decode().rstrip("\n") for _ in range(4))
            with lock:
                stats["replied"] += 4
            which = ANSWERS.get(got)
            if which is None:
                raise AssertionError(f"answers {got} are neither P1's nor P2's")
            with lock:
                stats[which] += 1

        def persistent():
            try:
                with cgtest.Client(d.socket) as c:
                    while not stop.is_set():
                        exchange(c)
                    if not c.nothing_pending():
                        raise AssertionError("extra reply data")
            except BaseException as e:
                errors.append(f"persistent client: {e!r}")

        def fresh():
            try:
                while not stop.is_set():
                    with cgtest.Client(d.socket) as c:
                        exchange(c)
                        if not c.nothing_pending():
                            raise AssertionError("extra reply data")
                        with lock:
                            stats["conns"] += 1
            except BaseException as e:
                errors.append(f"new-connection client: {e!r}")

        threads = [threading.Thread(target=persistent) for _ in range(4)]
        threads += [threading.Thread(target=fresh) for _ in range(2)]
        for t in threads:
            t.start()
        cycle = [P1, BAD, P2, BAD]
        sighups = 0
        t_end = time.monotonic() + 3.0
        try:
            while time.monotonic() < t_end and not errors:
                d.write_policy(cycle[sighups % 4])
                d.kill(signal.SIGHUP)
                sighups += 1
                time.sleep(0.02)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(stats["sent"], stats["replied"], "lost requests")
        err = d.stderr()
        ok, failed = err.count("credgated: reloaded: "), err.count("reload failed")
        note(f"reload under load: {sighups} SIGHUPs -> {ok} good reloads, {failed} failed; "
             f"{stats['replied']} requests answered ({stats['P1']} batches by P1, {stats['P2']} by P2, "
             f"{stats['conns']} new connections), 0 lost, 0 wrong")
        self.assertGreater(stats["P1"], 0)
        self.assertGreater(stats["P2"], 0, "the P2 reloads never took effect")
        self.assertGreater(ok, 10)
        self.assertGreater(failed, 10)
        self.assertIn(f"{d.policy_path}:{BAD_LINE}: ", err)
        self.assertTrue(d.alive())
        d.stop()

    def test_reload_held_back_requests_keep_their_policy(self):
        """Requests the daemon has already read but holds back (back-pressure:
        the client does not read its replies) were received before the
        reload, so the old policy answers them (issue 4: "requests already
        received are answered by whichever policy was current when they
        arrived"). The daemon's unread input is measured with FIONREAD on a
        copy of its end of the connection (pidfd_getfd)."""
        d = self.daemon(P1, args=["--log", "none"])
        d.start()

        def sockets():
            """{"socket:[inode]": fd} of the daemon's sockets."""
            res = {}
            for f in os.listdir(f"/proc/{d.pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{d.pid}/fd/{f}")
                except OSError:
                    continue
                if link.startswith("socket:"):
                    res[link] = int(f)
            return res

        before = sockets()
        c = cgtest.Client(d.socket)
        self.addCleanup(c.close)
        self.assertEqual(c.ask("PING"), "PONG")
        new = [fd for link, fd in sockets().items() if link not in before]
        self.assertEqual(len(new), 1, "cannot tell the daemon's end of the connection")
        daemon_end = pidfd_getfd(d.pid, new[0])
        self.addCleanup(os.close, daemon_end)

        line = b"CHECK flip\n"
        data = line * 60000
        sent = 0
        c.sock.setblocking(False)
        last = time.monotonic()
        while sent < len(data) and time.monotonic() - last < 0.3:
            try:
                sent += c.sock.send(data[sent:sent + 65536])
                last = time.monotonic()
            except BlockingIOError:
                time.sleep(0.01)
        # Wait until the daemon stopped reading (it waits for us to read).
        prev = None
        while True:
            cur = (fionread(daemon_end), fionread(c.sock.fileno()))
            if cur == prev:
                break
            prev = cur
            time.sleep(0.2)
        received = (sent - cur[0]) // len(line)  # complete lines the daemon has read
        answered = cur[1] // len(b"ALLOW\n")     # replies already in our socket
        if received <= answered:
            self.skipTest("the daemon held back no request it had read; nothing to test")

        d.write_policy(P2)
        self.reload(d)
        c.sock.setblocking(True)
        rest = (-sent) % len(line)  # complete a partial last line
        n_lines = (sent + rest) // len(line)
        # The socket is full until the daemon reads again, which it does only
        # once we read: read while completing the line.
        got = {}
        reader = threading.Thread(target=lambda: got.update(r=cgtest.recv_all(c.sock, 10, lines=n_lines)))
        reader.start()
        c.sock.sendall(data[sent:sent + rest])
        reader.join(15)
        out, how = got.get("r", (b"", "the reader did not finish"))
        self.assertEqual(out.count(b"\n"), n_lines, f"lost replies ({how})")
        answers = out.decode().split("\n")[:n_lines]
        old = next((i for i, a in enumerate(answers) if a != "ALLOW"), len(answers))
        self.assertEqual(set(answers[old:]), {"DENY"}, "after the first new answer, only new answers")
        note(f"held-back requests: {n_lines} pipelined, {received} read by the daemon before the reload, "
             f"{old} answered by the old policy, {n_lines - old} by the new one")
        self.assertGreaterEqual(old, received, f"{received - old} requests read before the reload were answered "
                                "by the new policy")
        d.stop()

    @unittest.skipIf(os.environ.get("CREDGATE_SANITIZERS"),
                     "a latency test; under ASan libconfig's 16-at-a-time list growth (realloc always copies) "
                     "makes a 100,000-rule parse take ~20-30 s")
    def test_big_reload_does_not_stall_answers(self):
        n_rules = 100_000
        texts = []
        for last in ("allow", "deny"):
            parts = ['default = "deny";\nrules = (\n']
            parts.append(",\n".join(f'  {{ action = "big.r{i}"; effect = "allow"; anyone = true; }}'
                                    for i in range(n_rules - 1)))
            parts.append(f',\n  {{ action = "flip"; effect = "{last}"; anyone = true; }}\n);\n')
            texts.append("".join(parts))
        d = self.daemon(P1, args=["--log", "none"])
        files = []
        for i, text in enumerate(texts):
            p = os.path.join(d.dir, f"big{i}.conf")
            write(p, text)
            files.append(p)

        def point_to(i):
            tmp = d.policy_path + ".lnk"
            os.symlink(files[i], tmp)
            os.replace(tmp, d.policy_path)

        point_to(0)
        t0 = time.monotonic()
        d.start()
        note(f"big policy: {n_rules} rules, {len(texts[0]) / 1e6:.1f} MB; first load + start took "
             f"{time.monotonic() - t0:.2f} s")
        self.assertEqual(ask(d.socket, "CHECK flip"), "ALLOW")

        stop = threading.Event()
        lat = {"persistent": [], "new": []}
        errors = []

        def persistent():
            try:
                with cgtest.Client(d.socket) as c:
                    while not stop.is_set():
                        t = time.monotonic()
                        a = c.ask("CHECK flip", 5.0)
                        lat["persistent"].append(time.monotonic() - t)
                        if a not in ("ALLOW", "DENY"):
                            raise AssertionError(f"bad answer {a!r}")
                        time.sleep(0.001)
            except BaseException as e:
                errors.append(repr(e))

        def fresh():
            try:
                while not stop.is_set():
                    t = time.monotonic()
                    a = ask(d.socket, "CHECK big.r99990")
                    lat["new"].append(time.monotonic() - t)
                    if a != "ALLOW":
                        raise AssertionError(f"bad answer {a!r}")
                    time.sleep(0.002)
            except BaseException as e:
                errors.append(repr(e))

        threads = [threading.Thread(target=persistent), threading.Thread(target=fresh)]
        for t in threads:
            t.start()
        reloads = 0
        t_start = time.monotonic()
        try:
            while (time.monotonic() - t_start < 3.0 or reloads < 3) and not errors:
                point_to((reloads + 1) % 2)
                n = stderr_count(d, "credgated: reloaded: ")
                d.kill(signal.SIGHUP)
                cgtest.wait_until(lambda: stderr_count(d, "credgated: reloaded: ") > n, timeout=20,
                                  what="a big reload")
                reloads += 1
        finally:
            took = time.monotonic() - t_start
            stop.set()
            for t in threads:
                t.join(30)
        self.assertEqual(errors, [])
        mx_p, mx_n = max(lat["persistent"]), max(lat["new"])
        note(f"big reload: {reloads} reloads of {n_rules} rules in {took:.1f} s ({took / reloads:.2f} s each); "
             f"max CHECK latency {mx_p * 1000:.1f} ms on a persistent connection ({len(lat['persistent'])} "
             f"requests), {mx_n * 1000:.1f} ms with a new connection each ({len(lat['new'])} requests)")
        self.assertLess(mx_p, 0.100)
        self.assertLess(mx_n, 0.100)
        self.assertEqual(ask(d.socket, "CHECK flip"), "ALLOW" if reloads % 2 == 0 else "DENY")
        d.stop()


# ---------------------------------------------------------------------------
# Connection limits

LIMITS = main_file(rule("a", "allow"))


class TestLimits(TempDirTest):
    def test_per_uid_quota(self):
        d = self.daemon(LIMITS, args=["--max-connections-per-uid", "3"])
        d.start()
        me = os.geteuid()
        conns = [cgtest.Client(d.socket) for _ in range(3)]
        for c in conns:
            self.addCleanup(c.close)
            self.assertEqual(c.ask("PING"), "PONG")
        with cgtest.Client(d.socket) as c4:
            self.assertEqual(c4.read_to_eof(), b"ERR too-many-connections\n",
                             f"uid {me} got a 4th connection (uid 0 must count like any uid)")
        # The 3 are still served.
        for c in conns:
            self.assertEqual(c.ask("CHECK a"), "ALLOW")
        # Closing one frees a slot (once the daemon has seen the close).
        conns[0].close()

        def fourth():
            c = cgtest.Client(d.socket)
            try:
                c.send(b"PING\n")
                line = c.readline(2.0)
            except AssertionError:
                c.close()
                return None
            if line != b"PONG\n":
                c.close()
                return None
            return c

        c = cgtest.wait_until(fourth, what="a slot freed by closing a connection")
        self.addCleanup(c.close)
        with cgtest.Client(d.socket) as c5:
            self.assertEqual(c5.read_to_eof(), b"ERR too-many-connections\n")
        d.stop()

    @cgtest.needs_root
    def test_per_uid_quota_other_uid_served(self):
        """Root (uid 0) at its quota does not starve another uid, which has a quota of its own."""
        d = self.daemon(LIMITS, args=["--max-connections-per-uid", "3"])
        d.start()
        conns = [cgtest.Client(d.socket) for _ in range(3)]
        for c in conns:
            self.addCleanup(c.close)
            self.assertEqual(c.ask("PING"), "PONG")
        self.assertEqual(cgtest.request(d.socket, b"PING\n"), b"ERR too-many-connections\n")

        def other():
            cs = [cgtest.Client(d.socket) for _ in range(3)]
            res = [c.ask("WHOAMI").split(" ")[2] for c in cs]
            with cgtest.Client(d.socket) as c4:
                res.append(c4.read_to_eof().decode())
            for c in cs:
                c.close()
            return res

        res = cgtest.as_identity(OTHER_UID, OTHER_UID, [], other)
        self.assertEqual(res, [f"uid={OTHER_UID}"] * 3 + ["ERR too-many-connections\n"])
        for c in conns:
            self.assertEqual(c.ask("CHECK a"), "ALLOW")
        d.stop()

    def test_max_connections_backlog(self):
        d = self.daemon(LIMITS, args=["--max-connections", "2"])
        d.start()
        c1, c2 = cgtest.Client(d.socket), cgtest.Client(d.socket)
        for c in (c1, c2):
            self.addCleanup(c.close)
            self.assertEqual(c.ask("PING"), "PONG")
        c3 = cgtest.Client(d.socket)  # connect succeeds: it waits in the backlog
        self.addCleanup(c3.close)
        c3.send(b"PING\n")
        data, how = cgtest.recv_all(c3.sock, 0.5)
        self.assertEqual((data, how), (b"", "timeout"), "a 3rd connection was served beyond max_connections")
        t = time.monotonic()
        c1.close()
        self.assertEqual(c3.readline(5.0), b"PONG\n")
        note(f"max_connections: the backlogged client was served {1000 * (time.monotonic() - t):.1f} ms "
             "after a slot was freed")
        self.assertEqual(c3.ask("CHECK a"), "ALLOW")
        self.assertEqual(c2.ask("CHECK a"), "ALLOW")
        # And again: at the limit, the next one waits without an ERR.
        c4 = cgtest.Client(d.socket)
        self.addCleanup(c4.close)
        c4.send(b"CHECK a\n")
        self.assertEqual(cgtest.recv_all(c4.sock, 0.3), (b"", "timeout"))
        c2.close()
        self.assertEqual(c4.readline(5.0), b"ALLOW\n")
        d.stop()


# ---------------------------------------------------------------------------
# Idle exit under (emulated) socket activation

class Activated:
    """Runs credgated as systemd would: on a listening socket the test owns,
    passed as fd 3 with LISTEN_FDS=1 and LISTEN_PID=<the daemon's pid>."""

    def __init__(self, listener, policy_path, args, stderr_path):
        """stderr goes to @stderr_path, or to a pipe read by wait_output() when it is None."""
        self.stderr_path = stderr_path
        self.out = b""
        pr = pw = None
        if stderr_path is None:
            pr, pw = os.pipe()
        argv = [cgtest.credgated(), "-c", policy_path, "--log-target", "stderr"] + list(args)
        env = {k: v for k, v in os.environ.items()
               if k not in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "JOURNAL_STREAM")}
        lfd = listener.fileno()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                cgtest._libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                out = pw if pw is not None else os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                null = os.open("/dev/null", os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(out, 1)
                os.dup2(out, 2)
                os.dup2(lfd, 3)
                os.set_inheritable(3, True)
                os.closerange(4, 65536)
                env["LISTEN_FDS"] = "1"
                env["LISTEN_PID"] = str(os.getpid())  # computed after fork
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid = pid
        self.status = None
        self.pipe = pr
        if pw is not None:
            os.close(pw)

    def wait_output(self, text, timeout=5.0):
        """Wait (select, no polling delay) until @text appeared on the pipe."""
        deadline = time.monotonic() + timeout
        while text.encode() not in self.out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} from credgated within {timeout} s: {self.out!r}")
            r, _, _ = select.select([self.pipe], [], [], left)
            if r:
                chunk = os.read(self.pipe, 65536)
                if not chunk:
                    raise AssertionError(f"credgated closed stderr without {text!r}: {self.out!r}")
                self.out += chunk

    def poll(self):
        if self.status is None:
            p, st = os.waitpid(self.pid, os.WNOHANG)
            if p:
                self.status = os.waitstatus_to_exitcode(st)
        return self.status

    def wait(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"activated credgated did not exit within {timeout} s:\n{self.stderr()}")
            time.sleep(0.002)
        return self.status

    def kill(self, sig=signal.SIGKILL):
        if self.poll() is None:
            os.kill(self.pid, sig)
            if sig == signal.SIGKILL:
                os.waitpid(self.pid, 0)
                self.status = -9

    def close(self):
        self.kill()
        if self.pipe is not None:
            os.close(self.pipe)
            self.pipe = None

    def stderr(self):
        if self.pipe is not None:
            while select.select([self.pipe], [], [], 0)[0]:
                chunk = os.read(self.pipe, 65536)
                if not chunk:
                    break
                self.out += chunk
            return self.out.decode("utf-8", "replace")
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


class TestIdleExit(TempDirTest):
    def listen(self):
        """The listening socket systemd would hold, and the policy. Return: its path."""
        self.policy = self.path("policy.conf")
        write(self.policy, LIMITS)
        sock = self.path("act.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(self.listener.close)
        self.listener.bind(sock)
        self.listener.listen(128)
        return sock

    def start(self, n=None):
        a = Activated(self.listener, self.policy, ["--idle-exit", "1", "--rules-dir", self.empty],
                      self.path(f"stderr.{n}") if n is not None else None)
        self.addCleanup(a.close)
        return a

    def test_idle_exit_socket_activated(self):
        # Standalone, --idle-exit is ignored: this one must still be up at the end.
        standalone = self.daemon(LIMITS, args=["--idle-exit", "1"])
        standalone.start()
        t_standalone = time.monotonic()

        sock = self.listen()

        first = self.start(1)
        t_first = time.monotonic()
        with cgtest.Client(sock) as c:
            self.assertEqual(c.ask("CHECK a"), "ALLOW")
            # Not while a connection is open, even an idle one; and the idle
            # time counts from the close, not from the last request (5.2 s
            # ago: past the 5 s a daemon lives at least, see below).
            time.sleep(max(0.0, 5.2 - (time.monotonic() - t_first)))
            self.assertIsNone(first.poll(), f"exited with a connection open:\n{first.stderr()}")
            t_close = time.monotonic()
        rc = first.wait(5)
        waited = time.monotonic() - t_close
        self.assertEqual(rc, 0, first.stderr())
        self.assertIn("idle for 1 s; exiting", first.stderr())
        self.assertGreaterEqual(waited, 0.99, "exited before the idle time ran out")
        self.assertLess(waited, 2.0, "idle exit took far longer than 1 s")

        # A client arriving after the exit waits in the listener's backlog
        # and is answered by the next instance on the same socket.
        late = cgtest.Client(sock)
        self.addCleanup(late.close)
        late.send(b"PING\n")
        self.assertEqual(cgtest.recv_all(late.sock, 0.2), (b"", "timeout"))
        second = self.start()
        self.assertEqual(late.readline(5.0), b"PONG\n")
        late.close()

        # Clients connecting in a loop from the moment the daemon decides to
        # exit (its "exiting" log line, read from a pipe) until it is gone,
        # while the test (as systemd) keeps the listener: none is lost, the
        # next instance on the same socket answers them all. Two rounds.
        daemon = second
        n_racers = n_before = 0
        for rnd in range(2):
            daemon.wait_output("idle for 1 s; exiting", timeout=10)  # lives 5 s at least
            racers, before = [], 0
            while True:
                exited = daemon.poll() is not None
                c = cgtest.Client(sock)
                self.addCleanup(c.close)
                c.send(b"PING\n")
                racers.append(c)
                before += not exited
                if exited or len(racers) >= 100:
                    break
            self.assertEqual(daemon.wait(5), 0, daemon.stderr())
            daemon = self.start()  # what systemd does on a readable listener
            for i, c in enumerate(racers):
                self.assertEqual(c.readline(5.0), b"PONG\n", f"round {rnd}, racer {i}")
                self.assertTrue(c.nothing_pending())
                c.close()
            n_racers += len(racers)
            n_before += before
        note(f"idle exit: first instance exited {waited:.3f} s after its last client left; "
             f"{n_racers} clients connected during two later exits ({n_before} of them before the old "
             f"instance was gone), all answered by the next instance")
        daemon.kill(signal.SIGTERM)
        self.assertEqual(daemon.wait(5), 0)

        # The standalone daemon ignored --idle-exit.
        time.sleep(max(0.0, 2.2 - (time.monotonic() - t_standalone)))
        self.assertTrue(standalone.alive(), "a standalone daemon must ignore --idle-exit")
        self.assertEqual(ask(standalone.socket, "PING"), "PONG")
        standalone.stop()


    def test_idle_exit_not_within_5_s_of_start(self):
        """systemd fails a socket whose service started more than 5 times in
        10 s. With --idle-exit 1 and a client every 1.3 s, a daemon that
        exited after every idle second would be started 6 times in 8 s; it
        must live at least 5 s per start, so no more than 2 starts happen
        (the test starts an instance, as systemd does, whenever a client
        waits and none runs). Every request is answered."""
        sock = self.listen()
        starts, answered, daemon = 0, 0, None
        t0 = time.monotonic()
        for i in range(7):
            time.sleep(max(0.0, t0 + i * 1.3 - time.monotonic()))
            c = cgtest.Client(sock)
            self.addCleanup(c.close)
            c.send(b"PING\n")
            got = b""
            for _ in range(20):
                if daemon is None or daemon.poll() is not None:
                    if daemon is not None:
                        self.assertEqual(daemon.wait(5), 0, daemon.stderr())
                    daemon = self.start()
                    starts += 1
                # A daemon that is just exiting leaves the client in the
                # backlog for the next one.
                got, _ = cgtest.recv_all(c.sock, 0.5, lines=1)
                if got:
                    break
            self.assertEqual(got, b"PONG\n", f"request {i}")
            answered += 1
            c.close()
        note(f"idle exit 1 s, a client every 1.3 s for {time.monotonic() - t0:.1f} s: {starts} starts, "
             f"{answered} answered")
        self.assertLessEqual(starts, 2)
        daemon.kill(signal.SIGTERM)
        self.assertEqual(daemon.wait(5), 0)

# ---------------------------------------------------------------------------
# Audit entries on stderr

AUDIT = main_file(rule("audit.allow", "allow"),               # line 3
                  rule("audit.deny", "deny"),                 # line 4
                  rule("peer.*", "allow", 'uids = ["1000"];'))  # line 5


class PeerProcess:
    """A process as another identity connected to a service socket of the
    test; self.conn is the accepted end, the fd a broker passes."""

    def __init__(self, dir, uid, gid):
        path = os.path.join(dir, "svc.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        os.chmod(path, 0o666)
        self.listener.listen(1)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                cgtest._libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                os.closerange(3, 65536)
                os.setgroups([])
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                s.settimeout(30)
                s.recv(1)  # until the parent closes
            finally:
                os._exit(0)
        self.pid = pid
        self.listener.settimeout(5)
        self.conn, _ = self.listener.accept()

    def close(self):
        self.conn.close()
        self.listener.close()
        os.waitpid(self.pid, 0)


class TestAudit(TempDirTest):
    def audit_daemon(self, level):
        args = ["--log-target", "stderr"] + (["--log", level] if level else [])
        d = self.daemon(AUDIT, args=args)
        d.start()
        return d

    def ask_all(self, d):
        with cgtest.Client(d.socket) as c:
            got = [c.ask("CHECK " + a) for a in ("audit.allow", "audit.deny", "audit.other")]
        self.assertEqual(got, ["ALLOW", "DENY", "DENY"])

    def test_log_all(self):
        d = self.audit_daemon("all")
        self.ask_all(d)
        me = os.getpid()
        want = [
            dict(decision="ALLOW", action="audit.allow", rule=f"{d.policy_path}:3"),
            dict(decision="DENY", action="audit.deny", rule=f"{d.policy_path}:4"),
            dict(decision="DENY", action="audit.other", rule="default"),
        ]
        got = audit_entries(d.stderr())
        self.assertEqual(len(got), 3, d.stderr())
        for g, w in zip(got, want):
            w.update(pid=me, uid=os.geteuid(), gid=os.getegid(), broker_pid=None, broker_uid=None)
            self.assertEqual(g, w)
        d.stop()

    @cgtest.needs_root
    def test_log_all_other_identity(self):
        d = self.audit_daemon("all")

        def child():
            with cgtest.Client(d.socket) as c:
                return os.getpid(), c.ask("CHECK audit.deny"), c.ask("CHECK audit.allow")

        pid, deny, allow = cgtest.as_identity(OTHER_UID, 4242, [], child)
        self.assertEqual((deny, allow), ("DENY", "ALLOW"))
        got = [(e["decision"], e["rule"], e["pid"], e["uid"], e["gid"], e["broker_pid"])
               for e in audit_entries(d.stderr())]
        self.assertEqual(got, [("DENY", f"{d.policy_path}:4", pid, OTHER_UID, 4242, None),
                               ("ALLOW", f"{d.policy_path}:3", pid, OTHER_UID, 4242, None)])
        d.stop()

    def test_log_deny(self):
        d = self.audit_daemon("deny")
        self.ask_all(d)
        got = audit_entries(d.stderr())
        self.assertEqual([(e["decision"], e["action"], e["rule"]) for e in got],
                         [("DENY", "audit.deny", f"{d.policy_path}:4"), ("DENY", "audit.other", "default")])
        d.stop()

    def test_log_default_is_deny(self):
        d = self.audit_daemon(None)
        self.ask_all(d)
        self.assertEqual([e["action"] for e in audit_entries(d.stderr())], ["audit.deny", "audit.other"])
        d.stop()

    def test_log_none(self):
        d = self.audit_daemon("none")
        self.ask_all(d)
        self.assertNotIn("audit:", d.stderr())
        d.stop()

    def test_check_peer_carries_broker(self):
        d = self.audit_daemon("all")
        if cgtest.is_root():
            peer = PeerProcess(self.dir, OTHER_UID, OTHER_UID)
            self.addCleanup(peer.close)
            fd, subject = peer.conn.fileno(), (peer.pid, OTHER_UID, OTHER_UID)
            want = ("ALLOW", f"{d.policy_path}:5")
        else:
            a, b = socket.socketpair()
            self.addCleanup(a.close)
            self.addCleanup(b.close)
            fd, subject = b.fileno(), (os.getpid(), os.geteuid(), os.getegid())
            want = ("DENY", "default")
        with cgtest.Client(d.socket) as c:
            socket.send_fds(c.sock, [b"CHECK-PEER peer.read\n"], [fd])
            self.assertEqual(c.readline(5.0), (want[0] + "\n").encode())
        got = audit_entries(d.stderr())
        self.assertEqual(len(got), 1, d.stderr())
        g = got[0]
        self.assertEqual((g["decision"], g["action"], g["rule"]), (want[0], "peer.read", want[1]))
        self.assertEqual((g["pid"], g["uid"], g["gid"]), subject)
        self.assertEqual((g["broker_pid"], g["broker_uid"]), (os.getpid(), os.geteuid()))
        d.stop()

    def test_rate_limit_per_uid(self):
        """500 decisions from one uid within 10 s: at most 200 lines; the rest
        are counted in a 'suppressed=' summary logged after the 10-s window
        (by the 2-s status timer), so this test waits up to ~13 s."""
        d = self.audit_daemon("all")
        me = os.geteuid()
        t0 = time.monotonic()
        with cgtest.Client(d.socket) as c:
            for _ in range(50):
                c.send(b"CHECK audit.allow\n" * 10)
                for _ in range(10):
                    self.assertEqual(c.readline(5.0), b"ALLOW\n")
        flood = time.monotonic() - t0
        self.assertLess(flood, 9, "the flood was too slow to fall in one window")
        mine = [e for e in audit_entries(d.stderr()) if e["uid"] == me]
        self.assertEqual(len(mine), 200, "the first 200 entries of a window pass, the rest are held back")
        if cgtest.is_root():
            # Another uid has its own allowance.
            def child():
                with cgtest.Client(d.socket) as c:
                    return c.ask("CHECK audit.deny")

            self.assertEqual(cgtest.as_identity(OTHER_UID, OTHER_UID, [], child), "DENY")
            other = [e for e in audit_entries(d.stderr()) if e["uid"] == OTHER_UID]
            self.assertEqual(len(other), 1, "another uid's entry was suppressed by root's flood")
        else:
            note("not root: the other-uid part of the rate-limit test was skipped")
        m = cgtest.wait_until(lambda: SUPPRESSED_RE.search(d.stderr()), timeout=14, interval=0.1,
                              what="the suppressed= summary")
        waited = time.monotonic() - t0
        self.assertEqual((int(m[1]), int(m[2])), (300, me), "logged + suppressed must add up to 500")
        self.assertGreaterEqual(waited, 9.9, "summary before the window ended")
        mine = [e for e in audit_entries(d.stderr()) if e["uid"] == me]
        self.assertEqual(len(mine), 200)
        note(f"audit rate limit: 200 lines + 'suppressed=300' summary {waited:.1f} s after the flood began")
        d.stop()


# ---------------------------------------------------------------------------
# sd_notify

Notify = cgtest.Notify


STATUS_RE = (r"(\d+) rules from (\d+) files; requests (\d+) \(allowed (\d+), denied (\d+), errors (\d+)\); "
             r"(\d+) connections")


class TestNotify(TempDirTest):
    def test_ready_status_reloading_stopping(self):
        npath = self.path("notify")
        n = Notify(npath)
        self.addCleanup(n.close)
        D = self.mkdir("D")
        write(os.path.join(D, "10-d.conf"), rules_file(rule("d", "allow")))
        d = self.daemon(P1, rules_dirs=[D], activate=True, activate_args=["-E", f"NOTIFY_SOCKET={npath}"],
                        args=["--log", "none"])
        d.start()
        pid, f, _ = n.next(lambda f: f.get("READY") == "1", "READY=1")
        self.assertEqual(pid, d.pid)
        status = [m[1]["STATUS"] for m in n.msgs[:n.seen] if "STATUS" in m[1]]
        self.assertTrue(status, f"no STATUS= with or before READY=1: {[m[2] for m in n.msgs]}")
        f = {"STATUS": status[-1]}
        self.assertRegex(f["STATUS"], "^serving " + STATUS_RE)
        self.assertRegex(f["STATUS"], r"^serving 4 rules from 2 files")

        with cgtest.Client(d.socket) as c:
            self.assertEqual([c.ask("CHECK flip"), c.ask("CHECK flop"), c.ask("PING")], ["ALLOW", "DENY", "PONG"])
            # Good reload: RELOADING=1 and MONOTONIC_USEC= in one datagram, then READY=1.
            d.write_policy(P2)
            before = monotonic_usec()
            d.kill(signal.SIGHUP)
            pid, f, raw = n.next(lambda f: "RELOADING" in f, "RELOADING=1")
            after = monotonic_usec()
            self.assertEqual(pid, d.pid)
            self.assertEqual(f["RELOADING"], "1")
            self.assertIn("MONOTONIC_USEC", f, f"RELOADING=1 without MONOTONIC_USEC= in one message: {raw!r}")
            self.assertTrue(before <= int(f["MONOTONIC_USEC"]) <= after,
                            f"MONOTONIC_USEC={f['MONOTONIC_USEC']} not within [{before}, {after}]")
            self.assertNotIn("READY", f)
            pid, f, _ = n.next(lambda f: f.get("STATUS", "").startswith("serving "), "STATUS= after the reload")
            if "READY" not in f:
                n.next(lambda f: f.get("READY") == "1", "READY=1 after the reload")
            m = re.match("^serving " + STATUS_RE, f["STATUS"])
            self.assertTrue(m, f["STATUS"])
            self.assertEqual(int(m[1]), 4)
            self.assertGreaterEqual(int(m[3]), 3, "requests counter")
            self.assertGreaterEqual(int(m[4]), 1, "allowed counter")
            self.assertGreaterEqual(int(m[5]), 1, "denied counter")
            self.assertEqual(int(m[7]), 1, "open connections")
            self.assertEqual(c.ask("CHECK flip"), "DENY")

            # Failed reload: STATUS= says so, naming FILE:LINE, and READY=1 follows.
            d.write_policy(BAD)
            d.kill(signal.SIGHUP)
            n.next(lambda f: "RELOADING" in f and "MONOTONIC_USEC" in f, "RELOADING=1 + MONOTONIC_USEC=")
            pid, f, _ = n.next(lambda f: f.get("STATUS", "").startswith("reload failed: "),
                               "STATUS=reload failed: ...")
            self.assertTrue(f["STATUS"].startswith(f"reload failed: {d.policy_path}:{BAD_LINE}: "), f["STATUS"])
            self.assertRegex(f["STATUS"], "; serving " + STATUS_RE)
            if "READY" not in f:
                n.next(lambda f: f.get("READY") == "1", "READY=1 after the failed reload")
            self.assertEqual(c.ask("CHECK flip"), "DENY")
            # The failure shows until the next good reload: the periodic
            # STATUS= (sent every 2 s when a counter changed) still says so.
            pid, f, _ = n.next(lambda f: "STATUS" in f, "a periodic STATUS=", timeout=5)
            self.assertTrue(f["STATUS"].startswith(f"reload failed: {d.policy_path}:{BAD_LINE}: "), f["STATUS"])
            self.assertRegex(f["STATUS"], r"requests [1-9]\d* ")

            d.write_policy(P1)
            d.kill(signal.SIGHUP)
            n.next(lambda f: "RELOADING" in f, "RELOADING=1")
            pid, f, _ = n.next(lambda f: f.get("STATUS", "").startswith("serving "), "STATUS=serving ...")
            if "READY" not in f:
                n.next(lambda f: f.get("READY") == "1", "READY=1 after the good reload")
            self.assertEqual(c.ask("CHECK flip"), "ALLOW")

        d.kill(signal.SIGTERM)
        pid, f, _ = n.next(lambda f: "STOPPING" in f, "STOPPING=1")
        self.assertEqual((pid, f["STOPPING"]), (d.pid, "1"))
        d.stop()
        for pid, _, raw in n.msgs:
            self.assertEqual(pid, d.pid, f"{raw!r} not from the daemon")


if __name__ == "__main__":
    cgtest.main()
