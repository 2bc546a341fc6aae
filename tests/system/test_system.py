#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""credgate under a real systemd: boot systemd as PID 1 in a throw-away container.

Run by `make check-system` (never by `make check`); docs/testing.md describes
the stage. Standard library only; prints TAP, one result per check.

Setup:
  * a private temporary folder with a tmpfs holding the upper and work layers
    of an overlay mount whose lower layer is the host's / (nspawn refuses /
    itself); the host's top-level symlinks (/lib -> usr/lib, ...) are copied
    into the upper layer first, so that what `make install` puts there does
    not hide them;
  * `make install DESTDIR=<upper layer>` of a build configured with
    --prefix=/usr --sysconfdir=/etc (the build this runs from if it is one,
    else a build of the same sources in BUILD/system-build);
  * a fresh /etc/machine-id, the host image's heavy units masked, and
    `systemctl --root enable credgated.socket`;
  * systemd-nspawn --boot in the background, commands run inside with
    nsenter into the container's PID 1; systemctl is-system-running --wait.
Teardown, on every exit path (also on a failed check, an exception,
SIGINT, SIGTERM or SIGHUP): poweroff inside, nspawn killed if it has not
ended after a few seconds, the overlay and the tmpfs unmounted (lazily as a
last resort), what nspawn leaves in /run/systemd/nspawn removed when the
host's /run is not a tmpfs, the temporary folder removed, and all of it
verified (the last TAP result).

Where no container can be booted (not root, no CAP_SYS_ADMIN,
systemd-nspawn or nsenter missing, no overlayfs), the whole stage is
reported as skipped (`1..0 # SKIP reason`), never as passed.
"""

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid

T_START = time.monotonic()
BUDGET = float(os.environ.get("CREDGATE_SYSTEM_BUDGET", "175"))  # seconds for setup + checks
SOCK = "/run/credgate/credgate.sock"
CONF = "/etc/credgate/credgate.conf"
DROPIN_DIR = "/etc/systemd/system/credgated.service.d"
AUDIT_ID = "b7a3c1e2d4f6480f9a1b2c3d4e5f6a71"
UNIT_EXIT_ID = "98e322203f7a4ed290d09fe03c09fe15"  # systemd: "Main process exited"
ALICE, BOB = "cgsys-alice", "cgsys-bob"
HELPER_DIR = "/var/lib/cgsys"  # inside the container
IN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# Units of the host image that must not start in the container. Besides
# these, every unit the host's administrator enabled (/etc/systemd/system/
# *.wants, *.requires) is masked; the list is printed.
MASK_ALWAYS = [
    "getty@.service", "serial-getty@.service", "console-getty.service", "container-getty@.service",
    "apt-daily.timer", "apt-daily-upgrade.timer", "apt-daily.service", "apt-daily-upgrade.service",
    "man-db.timer", "man-db.service", "dpkg-db-backup.timer", "dpkg-db-backup.service",
    "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer", "logrotate.timer",
    "cron.service", "anacron.timer", "anacron.service", "ssh.service", "ssh.socket",
    "exim4.service", "postfix.service", "postgresql.service", "mariadb.service", "mysql.service",
    "redis-server.service", "docker.service", "docker.socket", "containerd.service",
    "systemd-timesyncd.service", "systemd-pstore.service", "var-lib-machines.mount", "machines.target",
    "systemd-networkd-wait-online.service", "NetworkManager-wait-online.service",
]


# ---------------------------------------------------------------------------
# TAP

class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0
        self.broken = False  # stdout gone (the driver ended, e.g. on Ctrl-C)

    def out(self, text):
        if self.broken:
            return
        try:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            self.broken = True

    def note(self, text):
        for line in str(text).splitlines() or [""]:
            self.out("# " + line)

    def result(self, ok, name, reason=None):
        self.n += 1
        if not ok:
            self.failed += 1
        if reason:
            self.note(reason)
        self.out(f"{'ok' if ok else 'not ok'} {self.n} - {name}")


TAP = Tap()
note = TAP.note


class Interrupted(BaseException):
    pass


class Deadline(BaseException):
    pass


class CheckFailed(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def elapsed():
    return time.monotonic() - T_START


# ---------------------------------------------------------------------------
# Processes with hard time limits

class Result:
    def __init__(self, cmd, rc, out, err, secs):
        self.cmd, self.rc, self.out, self.err, self.secs = cmd, rc, out, err, secs

    def __repr__(self):
        return (f"$ {' '.join(shlex.quote(c) for c in self.cmd)}\n[status {self.rc}, {self.secs:.2f} s]\n"
                f"stdout: {self.out[-2000:]!r}\nstderr: {self.err[-2000:]!r}")


def run(cmd, timeout=30, input=None, env=None, cwd=None):
    """Run @cmd in its own session; on timeout kill its whole process group."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
                         start_new_session=True)
    try:
        out, err = p.communicate(input=input.encode() if input is not None else None, timeout=timeout)
    except BaseException as e:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            out, err = p.communicate(timeout=5)
        except BaseException:
            out, err = b"", b""
        if isinstance(e, subprocess.TimeoutExpired):
            return Result(cmd, -1, out.decode(errors="replace"),
                          err.decode(errors="replace") + f"\n[killed after the {timeout} s limit]",
                          time.monotonic() - t0)
        raise
    return Result(cmd, p.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
                  time.monotonic() - t0)


def make_env():
    env = dict(os.environ)
    # A sub-make must not try to join make check's jobserver or inherit its
    # command-line variables (TESTS=...).
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GNUMAKEFLAGS", "TESTS", "DESTDIR"):
        env.pop(k, None)
    return env


def read_make_vars(makefile, names):
    """Values of simple variables of an automake Makefile, ${x}/$(x) expanded."""
    raw = {}
    with open(makefile) as f:
        for line in f:
            m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*) = ?(.*)$", line.rstrip("\n"))
            if m and m.group(1) not in raw:
                raw[m.group(1)] = m.group(2)

    def expand(v, depth=0):
        if depth > 10:
            return v
        return re.sub(r"\$[({]([A-Za-z_][A-Za-z0-9_]*)[)}]", lambda m: expand(raw.get(m.group(1), ""), depth + 1), v)

    return {n: expand(raw.get(n, "")) for n in names}


# ---------------------------------------------------------------------------
# Can this machine boot a container?

def preflight():
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn, mount); run: sudo make check-system"
    try:
        with open("/proc/self/status") as f:
            capeff = int(re.search(r"^CapEff:\s*([0-9a-f]+)", f.read(), re.M).group(1), 16)
    except (OSError, AttributeError):
        capeff = 0
    if not capeff & (1 << 21):
        return "no CAP_SYS_ADMIN: this machine cannot mount or boot a container"
    for tool, pkg in (("systemd-nspawn", "systemd-container"), ("nsenter", "util-linux"),
                      ("mount", "mount"), ("systemctl", "systemd")):
        if not shutil.which(tool):
            return f"{tool} is missing (Debian package {pkg})"
    try:
        with open("/proc/filesystems") as f:
            fs = f.read()
    except OSError:
        fs = ""
    if "overlay" not in fs:
        run(["modprobe", "overlay"], timeout=10)
        with open("/proc/filesystems") as f:
            if "overlay" not in f.read():
                return "the kernel has no overlayfs"
    return None


def is_mountpoint_under(prefix):
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4].replace("\\040", " ")
                if mp == prefix or mp.startswith(prefix.rstrip("/") + "/"):
                    out.append(mp)
    except OSError:
        pass
    return out


def fstype_of(path):
    best, typ = "", None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            mp = parts[4]
            fst = parts[parts.index("-") + 1]
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                best, typ = mp, fst
    return typ


# ---------------------------------------------------------------------------
# The client helper that runs inside the container (python3, stdlib only)

CLIENT = r'''
import json, os, select, socket, subprocess, sys, time
SOCK = "/run/credgate/credgate.sock"

def request(line, timeout=6.0):
    r = {"line": line, "t_start": time.time()}
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(SOCK)
        r["t_connect"] = time.time()
        s.sendall(line.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            d = s.recv(4096)
            if not d:
                break
            buf += d
        r["t_reply"] = time.time()
        if buf.endswith(b"\n"):
            r["reply"] = buf.decode(errors="replace").strip()
        else:
            r["error"] = "connection closed before a reply (got %r)" % buf
    except OSError as e:
        r["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        s.close()
    return r

def cursor():
    out = subprocess.run(["journalctl", "-o", "json", "-n", "1", "--no-pager"], capture_output=True,
                         text=True, timeout=10).stdout.strip().splitlines()
    return json.loads(out[-1])["__CURSOR"] if out else None

def journal_after(cur, *match):
    # journalctl 252 prints nothing for -o json with both --after-cursor and a
    # match: filter here.
    cmd = ["journalctl", "-o", "json", "--no-pager"] + (["--after-cursor=" + cur] if cur else ["-b"])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    ents = [json.loads(l) for l in out.splitlines() if l.strip()]
    for m in match:
        k, v = m.split("=", 1)
        ents = [e for e in ents if e.get(k) == v]
    return ents

def msg(e):
    m = e.get("MESSAGE", "")
    return m if isinstance(m, str) else str(m)

def cmd_req(args):
    return [request(a) for a in args]

def cmd_series(args):
    n, interval, prefix = int(args[0]), float(args[1]), args[2]
    t0 = time.time()
    res = []
    for i in range(n):
        delay = t0 + i * interval - time.time()
        if delay > 0:
            time.sleep(delay)
        r = request("CHECK %s%d" % (prefix, i), timeout=5.0)
        try:
            r["socket_failed"] = subprocess.run(["systemctl", "is-failed", "credgated.socket"],
                                                capture_output=True, text=True, timeout=5).stdout.strip()
        except Exception as e:
            r["socket_failed"] = "unknown: %s" % e
        r["exists"] = os.path.exists(SOCK)
        res.append(r)
    return res

def cmd_idle_watch(args):
    # Ask once more on the running instance, then wait for that process to
    # exit when idle (a pidfd turns readable the moment it has exited) and ask
    # at once: the request lands while systemd takes the socket back and
    # starts the next instance.
    idle, action1, action2 = float(args[0]), args[1], args[2]
    before = request("CHECK " + action1)
    pid = int(subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", "credgated.service"],
                             capture_output=True, text=True, timeout=10).stdout.strip() or 0)
    res = {"before": before, "pid": pid, "during": None, "t_exit": None}
    if pid <= 0:
        return res
    fd = os.pidfd_open(pid)
    try:
        r, _, _ = select.select([fd], [], [], idle + 8)
        if not r:
            return res
        res["t_exit"] = time.time()
        res["during"] = request("CHECK " + action2, timeout=10)
        res["state_after"] = subprocess.run(["systemctl", "show", "-p", "ActiveState", "--value", "credgated.service"],
                                            capture_output=True, text=True, timeout=10).stdout.strip()
    finally:
        os.close(fd)
    return res

def cmd_hold(args):
    n, wait, prefix = int(args[0]), float(args[1]), args[2]
    conns, errors = [], []
    for i in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(3)
        try:
            s.connect(SOCK)
            conns.append((i, s))
        except OSError as e:
            errors.append("%d: %s" % (i, e))
            s.close()
    time.sleep(wait)
    for i, s in conns:
        try:
            s.sendall(("CHECK %s%d\n" % (prefix, i)).encode())
        except OSError as e:
            errors.append("send %d: %s" % (i, e))
    replies = {}
    pending = {s.fileno(): (i, s) for i, s in conns}
    bufs = {}
    deadline = time.time() + 2.5
    while pending and time.time() < deadline:
        r, _, _ = select.select(list(pending), [], [], 0.1)
        for fd in r:
            i, s = pending[fd]
            try:
                d = s.recv(4096)
            except OSError as e:
                d = b""
            if not d:
                replies[i] = None
                del pending[fd]
                continue
            bufs[i] = bufs.get(i, b"") + d
            if bufs[i].endswith(b"\n"):
                replies[i] = bufs[i].decode(errors="replace").strip()
                del pending[fd]
    for i, s in conns:
        s.close()
    time.sleep(0.3)
    after = request("CHECK %safter" % prefix)
    return {"connected": len(conns), "errors": errors[:5], "n_errors": len(errors),
            "replies": {str(k): v for k, v in replies.items()}, "after": after}

def cmd_timeouts(args):
    newpolicy = args[0]
    res = {}
    res["warmup"] = request("PING")
    p = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    p.connect(SOCK)
    t_p = time.time()
    cur = cursor()
    with open(newpolicy) as f:
        text = f.read()
    tmp = "/etc/credgate/.credgate.conf.new"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.rename(tmp, "/etc/credgate/credgate.conf")
    rl = subprocess.run(["systemctl", "reload", "credgated.service"], capture_output=True, text=True, timeout=20)
    res["reload_rc"] = rl.returncode
    t_reload = time.time()
    res["reloaded"] = None
    while time.time() < t_reload + 8:
        ents = [msg(e) for e in journal_after(cur, "SYSLOG_IDENTIFIER=credgated")]
        hit = [m for m in ents if m.startswith("reloaded") or "reload failed" in m]
        if hit:
            res["reloaded"] = hit[0]
            break
        time.sleep(0.05)
    t_ok = time.time()
    res["reload_wait"] = t_ok - t_reload
    socks = {"pre_reload": (p, t_p)}
    a = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    a.connect(SOCK)
    socks["first_after"] = (a, time.time())
    time.sleep(0.1)
    b = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    b.connect(SOCK)
    socks["second_after"] = (b, time.time())
    pending = {s.fileno(): name for name, (s, t) in socks.items()}
    bufs = {name: b"" for name in socks}
    out = {}
    deadline = time.time() + 13
    while pending and time.time() < deadline:
        r, _, _ = select.select(list(pending), [], [], 0.1)
        for fd in r:
            name = pending[fd]
            s, t = socks[name]
            d = s.recv(4096)
            bufs[name] += d
            if not d or bufs[name].endswith(b"\n"):
                out[name] = {"reply": bufs[name].decode(errors="replace").strip() if d else
                             ("EOF after %r" % bufs[name]), "secs": time.time() - t,
                             "secs_after_reload": time.time() - t_ok}
                del pending[fd]
    for name in pending.values():
        out[name] = {"reply": None, "secs": None}
    for s, t in socks.values():
        s.close()
    res["conns"] = out
    return res

cmd = sys.argv[1].replace("-", "_")
print(json.dumps(globals()["cmd_" + cmd](sys.argv[2:])))
'''


# ---------------------------------------------------------------------------
# The test policy

BASE_RULES = [
    '{ action = "org.test.status"; effect = "allow"; anyone = true; }',
    '{ action = "org.test.logs.read"; effect = "deny"; users = ["%s"]; }' % BOB,
    '{ action = "org.test.logs.*"; effect = "allow"; groups = ["adm"]; }',
    '{ action = "org.test.backup.run"; effect = "allow"; uids = ["0"]; }',
    '{ action = "org.test.desktop.admin"; effect = "deny"; users = ["%s"]; }' % ALICE,
    '{ action = "org.test.desktop.*"; effect = "allow"; users = ["%s", "%s"]; }' % (ALICE, BOB),
    '{ action = "org.test.u.*"; effect = "allow"; anyone = true; }',
]
ACTIONS = ["org.test.status", "org.test.logs.read", "org.test.logs.rotate", "org.test.backup.run",
           "org.test.desktop.admin", "org.test.desktop.theme", "org.test.unknown"]
# What the policy says, worked out by hand: (decision, index of the rule or None for the default).
EXPECTED = {
    "root": ["ALLOW", "DENY", "DENY", "ALLOW", "DENY", "DENY", "DENY"],
    ALICE: ["ALLOW", "ALLOW", "ALLOW", "DENY", "DENY", "ALLOW", "DENY"],
    BOB: ["ALLOW", "DENY", "DENY", "DENY", "ALLOW", "ALLOW", "DENY"],
}


def policy(settings=None, extra_rules=()):
    s = {"log": '"all"'}
    s.update(settings or {})
    rules = BASE_RULES + list(extra_rules)
    return ("# credgate policy of the system test (tests/system/test_system.py)\n"
            'default = "deny";\n'
            "rules = (\n  " + ",\n  ".join(rules) + "\n);\n"
            "settings = { " + " ".join(f"{k} = {v};" for k, v in s.items()) + " };\n")


# ---------------------------------------------------------------------------
# The container

class Stage:
    def __init__(self):
        self.srcdir = os.path.abspath(os.environ.get("CREDGATE_SRCDIR") or
                                      os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
        self.builddir = os.path.abspath(os.environ.get("CREDGATE_BUILDDIR") or os.getcwd())
        self.make = shlex.split(os.environ.get("MAKE") or "make")
        self.tmp = None
        self.layers = self.upper = self.root = None
        self.mounted = []  # mount points, in mount order
        self.nspawn = None
        self.nspawn_log = None
        self.pid1 = None
        self.machine = f"cgsys-{os.getpid()}"
        self.root_lock = None
        self.run_is_tmpfs = fstype_of("/run") == "tmpfs"
        self.had = {p: os.path.exists(p) for p in ("/run/systemd", "/run/systemd/nspawn", "/run/mount")}
        self.expected_kill_cursors = set()
        self.uids = {}
        self.n_rules = len(BASE_RULES)
        self.decisions = {"ALLOW": 0, "DENY": 0}
        self.check_cursor = None

    # -- setup ---------------------------------------------------------------

    def setup(self):
        t0 = time.monotonic()
        os.umask(0o022)
        self.tmp = tempfile.mkdtemp(prefix="credgate-system-")
        os.chmod(self.tmp, 0o700)
        self.layers = os.path.join(self.tmp, "layers")
        self.root = os.path.join(self.tmp, "root")
        os.mkdir(self.layers)
        os.mkdir(self.root, 0o755)
        self.mount(["-t", "tmpfs", "-o", "mode=0755,size=1g", "cgsys-layers", self.layers])
        self.upper = os.path.join(self.layers, "upper")
        os.mkdir(self.upper, 0o755)
        os.mkdir(os.path.join(self.layers, "work"), 0o755)
        # make install follows /lib -> usr/lib etc.: copy the host's
        # top-level symlinks so that no real folder in the upper layer hides one.
        for name in sorted(os.listdir("/")):
            p = os.path.join("/", name)
            if os.path.islink(p):
                os.symlink(os.readlink(p), os.path.join(self.upper, name))
        self.install()
        shadow = []
        for d, dirs, files in os.walk(self.upper):
            for x in dirs:
                rel = os.path.relpath(os.path.join(d, x), self.upper)
                if os.path.islink("/" + rel) and not os.path.islink(os.path.join(d, x)):
                    shadow.append("/" + rel)
        if shadow:
            raise RuntimeError(f"the install would hide host symlinks: {shadow}")
        self.mount(["-t", "overlay", "-o", f"lowerdir=/,upperdir={self.upper},"
                    f"workdir={os.path.join(self.layers, 'work')}", "cgsys-root", self.root])
        st = os.stat(self.root)
        self.root_lock = f"inode-{st.st_dev}:{st.st_ino}"
        self.write("/etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
        masked = self.mask_units()
        note(f"masked {len(masked)} units of the host image: {' '.join(masked)}")
        r = run(["systemctl", f"--root={self.root}", "enable", "credgated.socket"], timeout=30)
        if r.rc != 0:
            raise RuntimeError(f"systemctl --root enable credgated.socket failed:\n{r!r}")
        self.write(f"{HELPER_DIR}/cgclient.py", CLIENT, 0o644, dirmode=0o755)
        self.write(CONF, policy(), 0o644)
        t1 = time.monotonic()
        self.boot()
        # The policy names these users: they must exist before the first client.
        for u, groups in ((ALICE, ["-G", "adm"]), (BOB, [])):
            r = self.c(["useradd", "-M", "-s", "/bin/sh"] + groups + [u])
            if r.rc != 0:
                raise RuntimeError(f"useradd {u} failed:\n{r!r}")
        for u in ("root", ALICE, BOB):
            self.uids[u] = self.c(["id", u]).out.strip()
        note(f"setup: install and layers {t1 - t0:.1f} s, boot {time.monotonic() - t1:.1f} s")

    def mount(self, args):
        r = run(["mount"] + args, timeout=30)
        if r.rc != 0:
            raise RuntimeError(f"mount failed:\n{r!r}")
        self.mounted.append(args[-1])

    def host(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def write(self, path, text, mode=0o644, dirmode=0o755):
        """Write a file of the container (through the overlay), root-owned, atomically."""
        p = self.host(path)
        d = os.path.dirname(p)
        if not os.path.isdir(d):
            os.makedirs(d, mode=dirmode)
        tmp = os.path.join(d, f".{os.path.basename(p)}.cgsys-tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.rename(tmp, p)

    def remove(self, path):
        try:
            os.unlink(self.host(path))
        except FileNotFoundError:
            pass

    def install(self):
        v = read_make_vars(os.path.join(self.builddir, "Makefile"),
                           ["prefix", "exec_prefix", "sysconfdir", "sbindir", "bindir", "SANITIZER_CFLAGS",
                            "CC", "CFLAGS"])
        usable = (v["prefix"] == "/usr" and v["exec_prefix"] == "/usr" and v["sysconfdir"] == "/etc"
                  and v["sbindir"] == "/usr/sbin" and not v["SANITIZER_CFLAGS"].strip())
        env = make_env()
        if usable:
            build = self.builddir
            note(f"installing the build in {build} (prefix /usr, sysconfdir /etc)")
        else:
            build = os.path.join(self.builddir, "system-build")
            args = ["--prefix=/usr", "--sysconfdir=/etc", "--localstatedir=/var"]
            for k in ("CC", "CFLAGS"):
                if v[k]:
                    args.append(f"{k}={v[k]}")
            note(f"the build in {self.builddir} has prefix={v['prefix']!r} sysconfdir={v['sysconfdir']!r}"
                 f"{' and sanitizers' if v['SANITIZER_CFLAGS'].strip() else ''}; "
                 f"building the same sources in {build} with {' '.join(args[:3])}")
            os.makedirs(build, exist_ok=True)
            stamp = os.path.join(build, ".cgsys-configure")
            want = json.dumps([os.path.join(self.srcdir, "configure")] + args)
            have = open(stamp).read() if os.path.exists(stamp) else None
            if have != want or not os.path.exists(os.path.join(build, "Makefile")):
                r = run([os.path.join(self.srcdir, "configure"), "-q"] + args, timeout=300, env=env, cwd=build)
                if r.rc != 0:
                    raise RuntimeError(f"configure of {build} failed:\n{r!r}")
                with open(stamp, "w") as f:
                    f.write(want)
            r = run(self.make + ["-s", f"-j{os.cpu_count() or 2}"], timeout=600, env=env, cwd=build)
            if r.rc != 0:
                raise RuntimeError(f"make in {build} failed:\n{r!r}")
        r = run(self.make + ["-s", "-C", build, "install", f"DESTDIR={self.upper}"], timeout=600, env=env)
        if r.rc != 0:
            raise RuntimeError(f"make install DESTDIR={self.upper} failed:\n{r!r}")

    def mask_units(self):
        names = set(MASK_ALWAYS)
        for top in ("/etc/systemd/system",):
            for d in os.listdir(top):
                if d.endswith((".wants", ".requires")) and os.path.isdir(os.path.join(top, d)):
                    names.update(os.listdir(os.path.join(top, d)))
        names.discard("credgated.socket")
        names.discard("credgated.service")
        masked = []
        for n in sorted(names):
            p = self.host(f"/etc/systemd/system/{n}")
            if os.path.lexists(p):
                if os.path.isdir(p) and not os.path.islink(p):
                    continue
                os.unlink(p)
            os.symlink("/dev/null", p)
            masked.append(n)
        return masked

    def boot(self):
        cmd = ["systemd-nspawn", "--quiet", "--boot", f"--directory={self.root}", f"--machine={self.machine}",
               "--register=no", "--private-network", "--console=read-only", "--link-journal=no",
               "--settings=false", "--resolv-conf=off", "--timezone=off"]
        if not os.path.isdir("/run/systemd/system"):
            # No systemd on the host: nspawn can neither register nor get a scope.
            cmd.insert(2, "--keep-unit")
        self.nspawn_log = open(os.path.join(self.tmp, "console.log"), "wb")
        self.nspawn = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.nspawn_log,
                                       stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
        deadline = time.monotonic() + 20
        while self.pid1 is None:
            if self.nspawn.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited with status {self.nspawn.returncode}:\n"
                                   f"{self.console_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the container's PID 1 did not appear:\n{self.console_tail()}")
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        s = f.read()
                    ppid = int(s[s.rindex(")") + 2:].split()[1])
                    if ppid == self.nspawn.pid:
                        with open(f"/proc/{pid}/comm") as f:
                            if f.read().strip() == "systemd":
                                self.pid1 = int(pid)
                except (OSError, ValueError):
                    pass
            time.sleep(0.05)
        # systemctl needs PID 1's private socket: wait until it exists.
        while not os.path.exists(f"/proc/{self.pid1}/root/run/systemd/private"):
            if self.nspawn.poll() is not None or time.monotonic() > deadline + 20:
                raise RuntimeError(f"systemd in the container did not open its control socket:\n"
                                   f"{self.console_tail()}")
            time.sleep(0.05)
        for attempt in range(20):
            r = self.c(["systemctl", "is-system-running", "--wait"], timeout=90)
            state = r.out.strip()
            if state or "bus" not in r.err:
                break
            time.sleep(0.2)
        if state not in ("running", "degraded"):
            raise RuntimeError(f"the container did not come up (state {state!r}):\n{r!r}\n{self.console_tail()}")
        failed = self.c(["systemctl", "--failed", "--no-legend", "--plain"]).out.strip()
        note(f"container {self.machine}: PID 1 is host pid {self.pid1}, state {state}"
             + (f"; failed units: {failed}" if failed else ""))

    def console_tail(self, n=40):
        try:
            with open(os.path.join(self.tmp, "console.log"), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    # -- commands inside ------------------------------------------------------

    def c(self, cmd, timeout=30, user=None, input=None):
        if self.pid1 is None:
            raise RuntimeError("no container")
        if user and user != "root":
            cmd = ["runuser", "-u", user, "--"] + cmd
        env = {"PATH": IN_PATH, "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb", "SYSTEMD_PAGER": "",
               "SYSTEMD_COLORS": "0", "SYSTEMD_LOG_COLOR": "0"}
        return run(["nsenter", f"--target={self.pid1}", "--mount", "--uts", "--ipc", "--net", "--pid",
                    "--cgroup", "--root", "--wd"] + cmd, timeout=timeout, input=input, env=env)

    def ok(self, cmd, **kw):
        r = self.c(cmd, **kw)
        if r.rc != 0:
            raise CheckFailed(f"command failed:\n{r!r}")
        return r.out

    def sysctl(self, *args, timeout=30):
        return self.c(["systemctl", "--no-pager"] + list(args), timeout=timeout)

    def show(self, unit, *props):
        r = self.c(["systemctl", "show", unit] + [f"--property={p}" for p in props])
        d = {}
        for line in r.out.splitlines():
            k, _, v = line.partition("=")
            d[k] = v
        return d

    def show_session(self, sid):
        r = self.c(["loginctl", "show-session", sid, "--property=Seat", "--property=Active", "--property=State"])
        return dict(line.partition("=")[::2] for line in r.out.splitlines())

    def main_pid(self):
        return int(self.show("credgated.service", "MainPID").get("MainPID") or 0)

    @contextlib.contextmanager
    def dropin(self, name, text):
        """credgated.service restarted with the drop-in @name (@text), and
        restarted without it afterwards, whatever happened meanwhile."""
        path = f"{DROPIN_DIR}/{name}"
        self.write(path, text, 0o644)
        try:
            self.ok(["systemctl", "daemon-reload"])
            self.reset()
            self.ok(["systemctl", "restart", "credgated.service"], timeout=40)
            yield
        finally:
            self.remove(path)
            self.c(["systemctl", "daemon-reload"])
            self.reset()
            self.c(["systemctl", "restart", "credgated.service"], timeout=40)

    def client(self, *args, user=None, timeout=60):
        r = self.c(["python3", f"{HELPER_DIR}/cgclient.py"] + [str(a) for a in args], user=user, timeout=timeout)
        if r.rc != 0:
            raise CheckFailed(f"client helper failed:\n{r!r}")
        return json.loads(r.out.strip().splitlines()[-1])

    def cursor(self):
        r = self.c(["journalctl", "-o", "json", "-n", "1", "--no-pager"])
        lines = r.out.strip().splitlines()
        return json.loads(lines[-1])["__CURSOR"] if lines else None

    def journal(self, cursor=None, *match):
        """Entries of this boot (after @cursor), as dicts; @match: FIELD=VALUE, all must hold
        (several of one field: any of them)."""
        args = ["journalctl", "-o", "json", "--no-pager"]
        if cursor:
            # journalctl 252 prints nothing for -o json with both --after-cursor
            # and a match: filter here.
            args.append(f"--after-cursor={cursor}")
        else:
            args += ["-b"] + list(match)
        r = self.c(args, timeout=30)
        out = []
        for line in r.out.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        if cursor and match:
            want = {}
            for m in match:
                k, _, v = m.partition("=")
                want.setdefault(k, set()).add(v)
            out = [e for e in out if all(e.get(k) in vs for k, vs in want.items())]
        return out

    def wait_journal(self, pred, cursor=None, match=(), timeout=6.0):
        deadline = time.monotonic() + timeout
        while True:
            ents = self.journal(cursor, *match)
            hits = [e for e in ents if pred(e)]
            if hits or time.monotonic() > deadline:
                return hits, ents
            time.sleep(0.25)

    def reset(self):
        self.sysctl("reset-failed", "credgated.service", "credgated.socket")

    def ensure_socket(self):
        """Bring credgated.socket back if an earlier check left it failed or stopped."""
        st = self.show("credgated.socket", "ActiveState")["ActiveState"]
        if st != "active":
            note(f"credgated.socket was {st}; reset-failed and start it before this check")
            self.reset()
            self.sysctl("start", "credgated.socket")

    def set_policy(self, text):
        self.write(CONF, text, 0o644)

    def restart_fresh(self):
        """Stop the service so that the next client starts a new process on the current files."""
        self.reset()
        self.sysctl("stop", "credgated.service", timeout=40)
        self.reset()

    def check_actions(self, user, actions):
        r = self.c(["credgate", "check"] + actions, user=user)
        if r.rc not in (0, 1):
            raise CheckFailed(f"credgate check as {user} failed:\n{r!r}")
        got = []
        for line in r.out.splitlines():
            d, _, a = line.partition(" ")
            got.append((d, a))
            if d in self.decisions:
                self.decisions[d] += 1
        return got

    def dump_journal(self, n=30):
        """After a failed check: the journal lines about credgated since the check began."""
        try:
            ents = [e for e in self.journal(self.check_cursor)
                    if e.get("_SYSTEMD_UNIT") == "credgated.service" or e.get("SYSLOG_IDENTIFIER") == "credgated"
                    or e.get("UNIT") in ("credgated.service", "credgated.socket")][-n:]
            if not ents:
                return
            note(f"journal since the check began (last {len(ents)} entries about credgated):")
            for e in ents:
                t = int(e.get("__REALTIME_TIMESTAMP", "0")) / 1e6
                note("  %s.%03d %s[%s]: %s" % (time.strftime("%H:%M:%S", time.gmtime(t)), int(t * 1000) % 1000,
                                               e.get("SYSLOG_IDENTIFIER", "?"), e.get("_PID", "?"),
                                               e.get("MESSAGE", "")))
        except Exception as e:
            note(f"(journal not available: {e})")

    # -- teardown -------------------------------------------------------------

    def teardown(self):
        problems = []
        t0 = time.monotonic()
        if self.nspawn is not None and self.nspawn.poll() is None:
            if self.pid1:
                try:
                    r = run(["nsenter", f"--target={self.pid1}", "--mount", "--pid", "--root", "--wd",
                             "systemctl", "poweroff", "--no-block"], timeout=5, env={"PATH": IN_PATH})
                    if r.rc != 0:
                        os.kill(self.pid1, signal.SIGRTMIN + 4)  # systemd: power off
                except Exception:
                    pass
            for sig, wait in ((None, 8.0), (signal.SIGTERM, 4.0), (signal.SIGKILL, 5.0)):
                if sig == signal.SIGKILL:
                    problems.append("systemd-nspawn did not end after poweroff and SIGTERM: SIGKILL")
                if sig is not None:
                    try:
                        self.nspawn.send_signal(sig)
                        if sig == signal.SIGKILL and self.pid1:
                            os.kill(self.pid1, signal.SIGKILL)
                    except OSError:
                        pass
                try:
                    self.nspawn.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if self.nspawn.poll() is None:
                problems.append("systemd-nspawn did not end")
            else:
                note(f"container powered off: systemd-nspawn exited with status {self.nspawn.returncode} "
                     f"after {time.monotonic() - t0:.1f} s")
        elif self.nspawn is not None:
            problems.append(f"systemd-nspawn had ended early with status {self.nspawn.returncode}:\n"
                            f"{self.console_tail(15)}")
        if self.nspawn_log:
            self.nspawn_log.close()
        # Anything still running inside the container's root?
        if self.root:
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        if os.readlink(f"/proc/{pid}/root").startswith(self.root):
                            os.kill(int(pid), signal.SIGKILL)
                            problems.append(f"killed leftover process {pid}")
                    except OSError:
                        pass
        for mp in reversed(self.mounted):
            done = False
            for i in range(10):
                if not is_mountpoint_under(mp):
                    done = True
                    break
                if run(["umount", mp], timeout=20).rc == 0:
                    done = True
                    break
                time.sleep(0.3)
            if not done:
                problems.append(f"{mp} busy: lazy unmount")
                run(["umount", "-l", mp], timeout=20)
        self.mounted = []
        if not self.run_is_tmpfs:
            # nspawn leaves /run/systemd/nspawn behind when /run is not a tmpfs.
            ns = "/run/systemd/nspawn"
            for p in (f"{ns}/propagate/{self.machine}", f"{ns}/locks/{self.root_lock}" if self.root_lock else None):
                if p and os.path.lexists(p):
                    try:
                        shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
                    except OSError as e:
                        problems.append(f"cannot remove {p}: {e}")
            for p in (f"{ns}/propagate", f"{ns}/locks", ns, "/run/mount", "/run/systemd"):
                if not self.had.get(p, True) or p.startswith(ns):
                    try:
                        os.rmdir(p)  # only if empty: another container may be using it
                    except OSError:
                        pass
        if self.tmp and os.path.isdir(self.tmp):
            left = is_mountpoint_under(self.tmp)
            if left:
                problems.append(f"still mounted, temporary folder kept: {left}")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
                if os.path.exists(self.tmp):
                    problems.append(f"could not remove {self.tmp}")
        # Verify.
        if self.tmp and is_mountpoint_under(self.tmp):
            problems.append("mounts left: " + " ".join(is_mountpoint_under(self.tmp)))
        if self.nspawn is not None and self.nspawn.poll() is None:
            problems.append(f"nspawn pid {self.nspawn.pid} still running")
        if self.pid1 and os.path.exists(f"/proc/{self.pid1}"):
            problems.append(f"container PID 1 (host pid {self.pid1}) still running")
        if not self.run_is_tmpfs and os.path.exists(f"/run/systemd/nspawn/propagate/{self.machine}"):
            problems.append("/run/systemd/nspawn/propagate entry left")
        return problems, time.monotonic() - t0


# ---------------------------------------------------------------------------
# The checks

def rule_of(line):
    # "ALLOW a by /etc/credgate/credgate.conf:5" -> ("ALLOW", "a", "/etc/...:5")
    m = re.match(r"^(ALLOW|DENY) (\S+) by (\S+)$", line.strip())
    return m.groups() if m else None


def check_socket(S):
    expect(S.sysctl("is-enabled", "credgated.socket").out.strip() == "enabled", "credgated.socket is not enabled")
    sk = S.show("credgated.socket", "ActiveState", "SubState", "Listen")
    expect(sk["ActiveState"] == "active" and sk["SubState"] == "listening", f"credgated.socket: {sk}")
    st = S.ok(["stat", "-c", "%F %a %U", SOCK]).strip()
    expect(st == "socket 666 root", f"{SOCK}: {st!r}, expected a socket, mode 666, owned by root")
    sv = S.show("credgated.service", "ActiveState", "MainPID")
    expect(sv["ActiveState"] == "inactive" and sv["MainPID"] == "0",
           f"credgated.service should be inactive before the first client: {sv}")
    out = S.ok(["credgate", "ping"]).strip()
    expect(out == "PONG", f"credgate ping: {out!r}")
    sv = S.show("credgated.service", "ActiveState", "SubState", "MainPID", "TriggeredBy")
    expect(sv["ActiveState"] == "active" and int(sv["MainPID"]) > 0 and "credgated.socket" in sv["TriggeredBy"],
           f"after the first client: {sv}")
    note(f"socket {sk['Listen']} listening; service started by the first client, MainPID {sv['MainPID']}")


def check_decisions(S):
    note("identities: " + "; ".join(S.uids[u] for u in ("root", ALICE, BOB)))
    expect("(adm)" in S.uids[ALICE] and "(adm)" not in S.uids[BOB], "group membership is not as set up")
    S.evals = {}
    mismatches = []
    table = []
    for u in ("root", ALICE, BOB):
        r = S.c(["credgate", "eval", "--user", u] + ACTIONS)
        expect(r.rc in (0, 1), f"credgate eval --user {u}:\n{r!r}")
        evals = [rule_of(l) for l in r.out.splitlines() if l.strip()]
        expect(len(evals) == len(ACTIONS) and all(evals), f"eval output:\n{r.out}")
        got = S.check_actions(u, ACTIONS)
        expect(len(got) == len(ACTIONS), f"credgate check as {u}: {got}")
        row = []
        for i, a in enumerate(ACTIONS):
            d_eval, a_eval, rule = evals[i]
            d_live, a_live = got[i]
            S.evals[(u, a)] = (d_eval, rule)
            row.append(d_live[0])
            if a_eval != a or a_live != a or d_eval != d_live or d_live != EXPECTED[u][i]:
                mismatches.append(f"{u} {a}: daemon {d_live}, eval {d_eval} by {rule}, policy says {EXPECTED[u][i]}")
        table.append(f"{u}: {''.join(row)}")
    note(f"decisions (A/D per action of {' '.join(ACTIONS)}): " + "; ".join(table))
    expect(not mismatches, "disagreements:\n" + "\n".join(mismatches))


STATUS_RE = re.compile(r"^(?:reload failed: .*; )?serving (\d+) rules from (\d+) files; requests (\d+) "
                       r"\(allowed (\d+), denied (\d+), errors (\d+)\); (\d+) connections")


def check_status(S):
    want_a, want_d = S.decisions["ALLOW"], S.decisions["DENY"]
    deadline = time.monotonic() + 7
    while True:
        text = S.show("credgated.service", "StatusText")["StatusText"]
        m = STATUS_RE.match(text)
        if m and (int(m.group(4)), int(m.group(5)), int(m.group(7))) == (want_a, want_d, 0):
            break
        if time.monotonic() > deadline:
            raise CheckFailed(f"StatusText {text!r}; expected {S.n_rules} rules from 1 files, "
                              f"allowed {want_a}, denied {want_d}, 0 connections")
        time.sleep(0.3)
    n, files, req, a, d, e, conns = map(int, m.groups())
    note(f"StatusText: {text}")
    expect((n, files) == (S.n_rules, 1), f"policy size {n} rules from {files} files, expected {S.n_rules} from 1")
    expect(e == 0 and req >= a + d, f"counters: requests {req}, errors {e}")


def check_journal_fields(S):
    want = {k: v for k, v in S.evals.items()}
    uid_of = {u: re.search(r"uid=(\d+)", S.uids[u]).group(1) for u in S.uids}
    gid_of = {u: re.search(r"gid=(\d+)", S.uids[u]).group(1) for u in S.uids}

    def collect():
        ents = S.journal(None, f"MESSAGE_ID={AUDIT_ID}", "SYSLOG_IDENTIFIER=credgated")
        return {(e.get("CREDGATE_PEER_UID"), e.get("CREDGATE_ACTION")): e for e in ents}

    deadline = time.monotonic() + 6
    while True:
        have = collect()
        missing = [(u, a) for (u, a) in want if (uid_of[u], a) not in have]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    expect(not missing, f"no audit entry for {missing[:5]} ({len(missing)} of {len(want)})")
    bad = []
    for (u, a), (d, rule) in want.items():
        e = have[(uid_of[u], a)]
        prio = "6" if d == "ALLOW" else "5"
        for k, v in (("CREDGATE_DECISION", d), ("CREDGATE_RULE", rule), ("CREDGATE_PEER_GID", gid_of[u]),
                     ("PRIORITY", prio)):
            if e.get(k) != v:
                bad.append(f"{u} {a}: {k}={e.get(k)!r}, expected {v!r}")
        if not str(e.get("CREDGATE_PEER_PID", "")).isdigit():
            bad.append(f"{u} {a}: CREDGATE_PEER_PID={e.get('CREDGATE_PEER_PID')!r}")
        if e.get("_SYSTEMD_UNIT") != "credgated.service":
            bad.append(f"{u} {a}: _SYSTEMD_UNIT={e.get('_SYSTEMD_UNIT')!r}")
    sample = have[(uid_of[ALICE], "org.test.logs.read")]
    note("sample entry: " + json.dumps({k: v for k, v in sample.items()
                                         if k.startswith("CREDGATE_") or k in ("MESSAGE", "PRIORITY")}))
    expect(not bad, "\n".join(bad[:10]))
    note(f"{len(want)} decisions, each with an audit entry naming the rule that eval names")


def check_reload(S):
    S.ensure_socket()
    out = S.check_actions("root", ["org.test.reload.new"])
    expect(out == [("DENY", "org.test.reload.new")], f"before the reload: {out}")
    pid = S.main_pid()
    cur = S.cursor()
    S.set_policy(policy(extra_rules=['{ action = "org.test.reload.new"; effect = "allow"; anyone = true; }']))
    r = S.sysctl("reload", "credgated.service")
    expect(r.rc == 0, f"systemctl reload:\n{r!r}")
    hits, _ = S.wait_journal(lambda e: str(e.get("MESSAGE", "")).startswith("reloaded"), cur,
                             ("SYSLOG_IDENTIFIER=credgated",))
    expect(hits, "no 'reloaded: ...' in the journal")
    note(f"journal: {hits[0]['MESSAGE']}")
    out = S.check_actions("root", ["org.test.reload.new"])
    expect(out == [("ALLOW", "org.test.reload.new")], f"after the reload: {out}")
    expect(S.main_pid() == pid, f"MainPID changed: {pid} -> {S.main_pid()}")
    # A broken policy: an unknown user in a deny rule is refused.
    cur = S.cursor()
    S.set_policy(policy(extra_rules=['{ action = "org.test.reload.new"; effect = "allow"; anyone = true; }',
                                     '{ action = "org.test.x"; effect = "deny"; users = ["no-such-user-cgsys"]; }']))
    S.sysctl("reload", "credgated.service")
    deadline = time.monotonic() + 6
    while True:
        text = S.show("credgated.service", "StatusText")["StatusText"]
        if text.startswith("reload failed:") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    note(f"StatusText after the broken policy: {text}")
    expect(text.startswith("reload failed:") and "no-such-user-cgsys" in text
           and f"serving {S.n_rules + 1} rules" in text, "StatusText does not say the reload failed")
    hits, _ = S.wait_journal(lambda e: "reload failed" in str(e.get("MESSAGE", "")), cur,
                             ("SYSLOG_IDENTIFIER=credgated",))
    expect(hits, "no 'reload failed' in the journal")
    out = S.check_actions("root", ["org.test.reload.new"])
    expect(out == [("ALLOW", "org.test.reload.new")], f"the old policy is not in force: {out}")
    expect(S.main_pid() == pid, f"MainPID changed: {pid} -> {S.main_pid()}")
    expect(S.show("credgated.service", "ActiveState")["ActiveState"] == "active", "service not active")
    # Back to the base policy.
    S.set_policy(policy())
    S.sysctl("reload", "credgated.service")
    deadline = time.monotonic() + 6
    while not S.show("credgated.service", "StatusText")["StatusText"].startswith(f"serving {S.n_rules} rules"):
        expect(time.monotonic() < deadline, "the base policy did not come back")
        time.sleep(0.2)
    note(f"same MainPID {pid} throughout")


def answered(r, want="ALLOW"):
    return r and not r.get("error") and r.get("reply") == want


def pid_of_action(S, action, cursor=None):
    hits, _ = S.wait_journal(lambda e: e.get("CREDGATE_ACTION") == action, cursor,
                             (f"MESSAGE_ID={AUDIT_ID}",), timeout=5)
    return hits[0].get("_PID") if hits else None


def check_idle_exit(S):
    idle = 3
    S.ensure_socket()
    S.set_policy(policy({"idle_exit": idle}))
    try:
        idle_exit_checks(S, idle)
    finally:
        S.set_policy(policy())


def idle_exit_checks(S, idle):
    S.restart_fresh()
    cur = S.cursor()
    first = S.client("req", "CHECK org.test.u.idle-first")[0]
    time.sleep(1)
    res = S.client("idle-watch", idle, "org.test.u.idle-before", "org.test.u.idle-during", timeout=40)
    # Wait for the instance that answered 'during' to exit as well, then ask again.
    deadline = time.monotonic() + idle + 10
    while S.show("credgated.service", "ActiveState")["ActiveState"] != "inactive":
        if time.monotonic() > deadline:
            raise CheckFailed("the daemon did not exit when idle")
        time.sleep(0.2)
    after = S.client("req", "CHECK org.test.u.idle-after")[0]
    reqs = [("first", first), ("before", res["before"]), ("during", res["during"]), ("after", after)]
    errs = [f"{n}: {r}" for n, r in reqs if not answered(r)]
    pids = {n: pid_of_action(S, f"org.test.u.idle-{n}", cur) for n, _ in reqs}
    ents = S.journal(cur)
    exits = [e for e in ents if e.get("SYSLOG_IDENTIFIER") == "credgated" and "exiting" in str(e.get("MESSAGE", ""))]
    starts = [e for e in ents if e.get("_PID") == "1" and e.get("UNIT") == "credgated.service"
              and str(e.get("MESSAGE", "")).startswith("Started ")]
    deact = [int(e["__REALTIME_TIMESTAMP"]) / 1e6 for e in ents if e.get("_PID") == "1"
             and e.get("UNIT") == "credgated.service" and "Deactivated successfully" in str(e.get("MESSAGE", ""))]
    note(f"idle_exit = {idle}: {len(exits)} idle exits, {len(starts)} starts; answering pids {pids}")
    d = res["during"]
    if d and res["t_exit"]:
        t_deact = min((t for t in deact if t >= res["t_exit"] - 1), default=None)
        note(f"'during': connected {1000 * (d.get('t_connect', d['t_start']) - res['t_exit']):.1f} ms after process "
             f"{res['pid']} exited"
             + (f" (systemd logged its deactivation {1000 * (t_deact - res['t_exit']):+.1f} ms from the exit)"
                if t_deact else "")
             + f", answered {1000 * (d.get('t_reply', d['t_start']) - d['t_start']):.0f} ms later by a new instance")
    expect(not errs, "requests lost: " + "; ".join(errs))
    expect(res["t_exit"], f"the daemon (pid {res['pid']}) did not exit within {idle + 8} s")
    expect(pids["first"] and pids["first"] == pids["before"], f"first/before not served by one instance: {pids}")
    expect(pids["during"] and pids["during"] != pids["before"], f"'during' not served by a new instance: {pids}")
    expect(pids["after"] and pids["after"] != pids["during"], f"'after' not served by a new instance: {pids}")
    expect(len(exits) >= 2, f"expected two idle exits in the journal, saw {len(exits)}")
    expect(S.c(["systemctl", "is-failed", "--quiet", "credgated.socket"]).rc != 0, "credgated.socket failed")


def check_watchdog(S):
    S.ensure_socket()
    S.set_policy(policy())
    with S.dropin("50-cgsys-watchdog.conf", "[Service]\nWatchdogSec=2s\n"):
        expect(S.show("credgated.service", "WatchdogUSec")["WatchdogUSec"] == "2s", "WatchdogSec= not applied")
        out = S.check_actions("root", ["org.test.u.wd-before"])
        expect(out == [("ALLOW", "org.test.u.wd-before")], f"before: {out}")
        old = S.main_pid()
        cur = S.cursor()
        time.sleep(2.5)  # the daemon keeps pinging: it must survive longer than WatchdogSec
        expect(S.main_pid() == old, "the daemon was restarted although it was not stopped")
        t0 = time.monotonic()
        S.ok(["kill", "-STOP", str(old)])
        new = 0
        while time.monotonic() < t0 + 15:
            new = S.main_pid()
            if new not in (0, old):
                break
            time.sleep(0.1)
        t_new = time.monotonic() - t0
        ents = S.journal(cur, "UNIT=credgated.service")
        msgs = [str(e.get("MESSAGE", "")) for e in ents]
        wd = [m for m in msgs if "Watchdog timeout" in m]
        kill_i = [i for i, m in enumerate(msgs) if f"Killing process {old} " in m]
        exit_e = [e for e in ents[(kill_i[0] if kill_i else 0):] if e.get("MESSAGE_ID") == UNIT_EXIT_ID]
        if kill_i and exit_e:
            S.expected_kill_cursors.add(exit_e[0]["__CURSOR"])
            note(f"expected: {msgs[kill_i[0]]} / {exit_e[0].get('MESSAGE')}")
        expect(new not in (0, old), f"no new MainPID {t_new:.1f} s after SIGSTOP of {old}")
        expect(wd, "no 'Watchdog timeout' in the journal")
        expect(kill_i and exit_e, "no kill of the stopped process in the journal:\n" + "\n".join(msgs[-10:]))
        expect(not S.c(["test", "-e", f"/proc/{old}"]).rc == 0, f"process {old} still exists")
        out = S.check_actions(BOB, ["org.test.u.wd-after"])
        expect(out == [("ALLOW", "org.test.u.wd-after")], f"after: {out}")
        p = pid_of_action(S, "org.test.u.wd-after", cur)
        expect(p == str(S.main_pid()) and p != str(old), f"answered by pid {p}; MainPID {S.main_pid()}, old {old}")
        note(f"SIGSTOP of {old}: new MainPID {new} after {t_new:.1f} s (WatchdogSec=2s); {wd[0]}")


def check_stop_start(S):
    S.ensure_socket()
    S.reset()
    out = S.ok(["credgate", "ping"]).strip()
    expect(out == "PONG", f"ping: {out!r}")
    r = S.sysctl("stop", "credgated.socket", timeout=40)
    expect(r.rc == 0, f"stop:\n{r!r}")
    sv = S.show("credgated.service", "ActiveState")["ActiveState"]
    sk = S.show("credgated.socket", "ActiveState")["ActiveState"]
    gone = S.c(["test", "-e", SOCK]).rc != 0
    ping = S.c(["credgate", "ping"])
    note(f"after stop: service {sv}, socket {sk}, socket file {'removed' if not gone else 'gone'}; "
         f"credgate ping: status {ping.rc} {ping.err.strip()[:100]!r}")
    expect(sv == "inactive" and sk == "inactive", f"service {sv}, socket {sk}")
    expect(gone, f"{SOCK} still exists")
    expect(ping.rc == 2, "credgate ping did not fail")
    r = S.sysctl("start", "credgated.socket")
    expect(r.rc == 0, f"start:\n{r!r}")
    expect(S.ok(["stat", "-c", "%F", SOCK]).strip() == "socket", "no socket file after start")
    expect(S.show("credgated.service", "ActiveState")["ActiveState"] == "inactive", "service started without a client")
    out = S.check_actions(ALICE, ["org.test.status"])
    expect(out == [("ALLOW", "org.test.status")], f"after start: {out}")
    expect(S.show("credgated.service", "ActiveState")["ActiveState"] == "active", "service not active")


def check_security(S):
    S.ensure_socket()
    S.c(["credgate", "ping"])
    r = S.c(["systemd-analyze", "security", "--no-pager", "credgated.service"], timeout=60)
    m = re.search(r"Overall exposure level for credgated\.service:\s*([0-9.]+)\s*(\S+)", r.out)
    expect(m, f"no exposure level:\n{r!r}")
    note(f"live exposure: {m.group(1)} {m.group(2)}")
    worst = [l.strip() for l in r.out.splitlines() if l.strip().startswith("✗")]
    if worst:
        note("not satisfied: " + "; ".join(re.sub(r"\s{2,}", " ", w)[:80] for w in worst[:8]))
    expect(float(m.group(1)) <= 0.5, f"exposure {m.group(1)} > 0.5")


def check_python(S):
    S.ensure_socket()
    code = ("import credgate, os, sys; assert 'PYTHONPATH' not in os.environ; "
            "print(credgate.__file__); print(credgate.check('org.test.status')); "
            "print(credgate.check('org.test.backup.run'))")
    r = S.c(["python3", "-c", code], user=BOB)
    if r.rc != 0:
        where = S.c(["sh", "-c", "find /usr -name credgate.py -newer /etc/machine-id 2>/dev/null; "
                     "find /usr -name credgate.py 2>/dev/null | head -5"]).out.split()
        path = S.c(["python3", "-c", "import sys; print(' '.join(p for p in sys.path if p))"], user=BOB).out.strip()
        raise CheckFailed(f"python3 as {BOB}: {r.err.strip().splitlines()[-1] if r.err.strip() else r.rc}\n"
                          f"credgate.py installed at {sorted(set(where))}; python3 imports from {path}")
    lines = r.out.split()
    note(f"imported {lines[0]} as {BOB}")
    expect(lines[1:] == ["True", "False"], f"answers: {lines[1:]}, expected True False")


def check_example(S):
    S.ensure_socket()
    with open(os.path.join(S.srcdir, "docs", "example.c")) as f:
        S.write(f"{HELPER_DIR}/example.c", f.read(), 0o644)
    flags = S.ok(["pkg-config", "--cflags", "--libs", "credgate"]).strip()
    ver = S.ok(["pkg-config", "--modversion", "credgate"]).strip()
    r = S.c(["sh", "-c", f"cc -o {HELPER_DIR}/example {HELPER_DIR}/example.c $(pkg-config --cflags --libs credgate)"],
            timeout=120)
    expect(r.rc == 0, f"compile:\n{r!r}")
    ldd = [l.strip() for l in S.ok(["ldd", f"{HELPER_DIR}/example"]).splitlines() if "credgate" in l]
    note(f"credgate.pc {ver}: {flags or '(no flags)'}; {'; '.join(ldd)}")
    bob_uid = re.search(r"uid=(\d+)", S.uids[BOB]).group(1)
    r = S.c([f"{HELPER_DIR}/example", "org.test.status", "org.test.desktop.theme"], user=BOB)
    expect(r.rc == 0 and f"uid={bob_uid} " in r.out and "org.test.status: allow" in r.out
           and "org.test.desktop.theme: allow" in r.out, f"example as {BOB}:\n{r!r}")
    r2 = S.c([f"{HELPER_DIR}/example", "org.test.backup.run"], user=BOB)
    expect(r2.rc == 1 and "org.test.backup.run: deny" in r2.out, f"example as {BOB}, denied action:\n{r2!r}")
    r3 = S.c([f"{HELPER_DIR}/example", "org.test.backup.run"])
    expect(r3.rc == 0 and "org.test.backup.run: allow" in r3.out, f"example as root:\n{r3!r}")
    note("example: " + r.out.strip().replace("\n", " | "))


WIFI_RULE = ('{ id = "netdev-wifi"; action = "org.example.wifi.*"; effect = "allow"; groups = ["netdev"]; '
             'console = "active"; }')


def sessions(S):
    """{user: (session id, seat, active)} from loginctl."""
    out = {}
    for line in S.c(["loginctl", "list-sessions", "--no-legend", "--no-pager"]).out.splitlines():
        f = line.split()
        if len(f) >= 3:
            sid, user = f[0], f[2]
            p = S.show_session(sid)
            out[user] = (sid, p.get("Seat", ""), p.get("Active") == "yes", p.get("State", ""))
    return out


def check_console(S):
    """Issue 14 against the real logind: ALICE holds the foreground session of
    seat0, BOB (both in netdev) a seat-less one as SSH would give him. The
    asking processes (runuser -u) belong to no session at all: the decision
    follows the uid, as documented."""
    S.ensure_socket()
    S.c(["groupadd", "-f", "netdev"])
    for u in (ALICE, BOB):
        S.ok(["usermod", "-aG", "netdev", u])
    S.set_policy(policy(extra_rules=[WIFI_RULE]))
    S.restart_fresh()
    try:
        action = "org.example.wifi.connect"
        before = {u: S.check_actions(u, [action])[0][0] for u in (ALICE, BOB)}
        expect(before == {ALICE: "DENY", BOB: "DENY"}, f"before any session: {before}")
        # pam_systemd (runuser -l) registers the sessions; on a seat without VTs
        # (a container) logind activates a new seat0 session at once.
        S.ok(["sh", "-c", f"XDG_SEAT=seat0 XDG_SESSION_CLASS=user XDG_SESSION_TYPE=tty setsid runuser -l {ALICE} "
                          "-c 'exec sleep 600' </dev/null >/dev/null 2>&1 &"])
        S.ok(["sh", "-c", f"setsid runuser -l {BOB} -c 'exec sleep 600' </dev/null >/dev/null 2>&1 &"])
        deadline = time.monotonic() + 10
        while True:
            ss = sessions(S)
            if ALICE in ss and BOB in ss and ss[ALICE][2]:
                break
            expect(time.monotonic() < deadline, f"sessions did not appear (is libpam-systemd installed?): {ss}")
            time.sleep(0.05)
        note(f"sessions: {ALICE} {ss[ALICE]}, {BOB} {ss[BOB]} (id, seat, active, state)")
        expect(ss[ALICE][1] == "seat0" and ss[BOB][1] == "" and ss[BOB][2],
               f"want {ALICE} on seat0 and {BOB} seat-less but active: {ss}")
        got = {u: S.check_actions(u, [action])[0][0] for u in (ALICE, BOB)}
        expect(got == {ALICE: "ALLOW", BOB: "DENY"}, f"with the sessions: {got}")
        # The daemon's reasons, and credgate eval simulating the same state.
        for u, console, want in ((ALICE, "active", "ALLOW"), (BOB, "none", "DENY")):
            live = S.c(["credgate", "check", "-v", action], user=u).out.strip()
            ev = S.c(["credgate", "eval", "--user", u, "--console", console, action]).out.strip().splitlines()
            expect(ev[0] == f"console: {console} (simulated)" if console == "none" else
                   ev[0] == f"console: {console} on seat0 (simulated)", f"eval's first line: {ev}")
            by = "netdev-wifi" if want == "ALLOW" else "default"
            expect(live == f"{want} {action} by {by}", f"credgate check -v as {u}: {live!r}")
            expect(ev[1].startswith(f"{want} {action} by ") and (by == "default") == ev[1].endswith("by default")
                   and (by == "default" or "(netdev-wifi)" in ev[1]), f"credgate eval for {u}: {ev}")
        note(f"{ALICE} at seat0: {S.c(['credgate', 'check', '-v', action], user=ALICE).out.strip()}; "
             f"{BOB} over 'SSH': DENY by default")
        # The session ends: the decision follows within the monitor's reach.
        S.ok(["loginctl", "terminate-session", ss[ALICE][0]])
        t0 = time.monotonic()
        while True:
            now = S.check_actions(ALICE, [action])[0][0]
            if now == "DENY":
                break
            expect(time.monotonic() - t0 < 10, f"{ALICE} still ALLOWed {time.monotonic() - t0:.1f} s after logout")
            time.sleep(0.05)
        note(f"after {ALICE}'s session ended: DENY within {time.monotonic() - t0:.2f} s of terminate-session")
    finally:
        S.c(["loginctl", "terminate-user", ALICE])
        S.c(["loginctl", "terminate-user", BOB])
        S.set_policy(policy())
        S.restart_fresh()


def check_metrics(S):
    """Issue 15 under the real systemd: credgated-metrics.socket enabled next to
    credgated.socket, handed to the same service by name; the document (root
    only), promtool on it, credgate stats, and the node_exporter textfile pair."""
    S.ensure_socket()
    S.set_policy(policy(settings={"rule_stats": "true"}))
    S.restart_fresh()
    try:
        S.ok(["systemctl", "enable", "--now", "credgated-metrics.socket"])
        st = S.ok(["stat", "-c", "%F %a %U", "/run/credgate/metrics.sock"]).strip()
        expect(st == "socket 600 root", f"metrics socket: {st!r}")
        got = S.check_actions(ALICE, ["org.test.status", "org.test.status", "org.test.backup.run"])
        expect([g[0] for g in got] == ["ALLOW", "ALLOW", "DENY"], f"decisions: {got}")
        pid = S.main_pid()
        r = S.c(["credgate", "stats", "--openmetrics"])
        expect(r.rc == 0 and r.out.endswith("# EOF\n"), f"credgate stats --openmetrics:\n{r!r}")
        doc = r.out
        expect(S.main_pid() == pid, "the metrics socket started another process")
        for line in ('credgate_decisions_total{result="allow"} 2', 'credgate_decisions_total{result="deny"} 1',
                     'credgate_rule_hits_total{rule="/etc/credgate/credgate.conf:4"} 2'):
            expect(f"\n{line}\n" in doc, f"no '{line}' in the document:\n{doc}")
        rev = re.search(r'credgate_policy_info\{revision="([0-9a-f]{64})"\} 1', doc)
        t = S.ok(["credgated", "-t"])
        expect(rev and f"revision {rev.group(1)}" in t, f"the document's revision is not credgated -t's:\n{t}")
        status = S.show("credgated.service", "StatusText")["StatusText"]
        expect(status.endswith(f"; revision {rev.group(1)[:12]}"), f"StatusText {status!r}")
        if shutil.which("promtool"):
            p = S.c(["promtool", "check", "metrics"], input=doc)
            expect(p.rc == 0, f"promtool check metrics:\n{p!r}")
        summary = S.ok(["credgate", "stats"])
        expect(re.search(r"(?m)^decisions:   2 allowed, 1 denied$", summary), f"credgate stats:\n{summary}")
        r = S.c(["credgate", "stats"], user=BOB)
        expect(r.rc == 2 and "Permission denied" in r.err, f"credgate stats as {BOB} must be refused:\n{r!r}")
        # The textfile example pair, as a Debian node_exporter host would run it.
        S.ok(["mkdir", "-p", "/var/lib/prometheus/node-exporter"])
        S.ok(["systemctl", "start", "credgate-textfile.service"], timeout=40)
        prom = S.ok(["cat", "/var/lib/prometheus/node-exporter/credgate.prom"])
        mode = S.ok(["stat", "-c", "%a", "/var/lib/prometheus/node-exporter/credgate.prom"]).strip()
        expect(prom.endswith("# EOF\n") and "credgate_decisions_total" in prom and mode == "644",
               f"credgate.prom (mode {mode}):\n{prom[-300:]}")
        expect(S.sysctl("is-enabled", "credgate-textfile.timer").rc in (0, 1), "no credgate-textfile.timer")
        note(f"metrics socket 0600 root, {len(doc)} bytes, revision {rev.group(1)[:12]}; StatusText ends "
             f"'{status[-22:]}'; credgate-textfile.service wrote {len(prom)} bytes")
    finally:
        S.c(["systemctl", "disable", "--now", "credgated-metrics.socket"])
        S.set_policy(policy())
        S.restart_fresh()


def check_f1_start_limit(S):
    S.ensure_socket()
    S.set_policy(policy({"idle_exit": 1}))
    S.restart_fresh()
    cur = S.cursor()
    res = S.client("series", 15, 1.3, "org.test.u.f1-", user=BOB, timeout=60)
    ok = [r for r in res if answered(r)]
    first_bad = next((i for i, r in enumerate(res) if not answered(r)), None)
    failed_seen = [i for i, r in enumerate(res) if r.get("socket_failed") == "failed"]
    ents = S.journal(cur, "_PID=1")
    msgs = [str(e.get("MESSAGE", "")) for e in ents]
    too_quick = [m for m in msgs if "Start request repeated too quickly" in m]
    sock_failed = [m for m in msgs if m.startswith("credgated.socket: Failed with result")]
    starts = [m for m in msgs if m.startswith("Started credgated.service")]
    note(f"15 requests as {BOB}, one every 1.3 s, idle_exit = 1: {len(ok)} answered, {len(starts)} service starts"
         + (f"; first unanswered: request {first_bad + 1} ({res[first_bad].get('error') or res[first_bad].get('reply')})"
            if first_bad is not None else ""))
    for m in (too_quick[:1] + sock_failed[:1]):
        note(f"journal: {m}")
    try:
        expect(len(ok) == 15, f"{15 - len(ok)} of 15 requests unanswered")
        expect(not failed_seen and not sock_failed, f"credgated.socket entered failed (after requests "
               f"{[i + 1 for i in failed_seen]})")
        expect(not too_quick, "'Start request repeated too quickly' in the journal")
        expect(S.c(["systemctl", "is-failed", "--quiet", "credgated.socket"]).rc != 0, "credgated.socket is failed")
    finally:
        S.set_policy(policy())
        S.ensure_socket()


def check_f2_fd_pressure(S):
    S.ensure_socket()
    S.set_policy(policy())
    with S.dropin("50-cgsys-nofile.conf", "[Service]\nLimitNOFILE=40\n"):
        pid = S.main_pid()
        lim = S.ok(["sh", "-c", f"grep 'Max open files' /proc/{pid}/limits"]).split()
        expect(lim[3:5] == ["40", "40"], f"LimitNOFILE not applied: {lim}")
        nfd = S.ok(["sh", "-c", f"ls /proc/{pid}/fd | wc -l"]).strip()
        cur = S.cursor()
        res = S.client("hold", 60, 0.7, "org.test.u.f2-", timeout=40)
        replies = {int(k): v for k, v in res["replies"].items()}
        allowed = sorted(i for i, v in replies.items() if v == "ALLOW")
        expect(answered(res["after"]), f"request after the pressure: {res['after']}")
        hits, ents = S.wait_journal(lambda e: "accept() failed" in str(e.get("MESSAGE", "")), cur,
                                    ("SYSLOG_IDENTIFIER=credgated",), timeout=4)
        audit = {e.get("CREDGATE_ACTION") for e in S.journal(cur, f"MESSAGE_ID={AUDIT_ID}")}
        missing = [i for i in allowed if f"org.test.u.f2-{i}" not in audit]
        status = S.show("credgated.service", "StatusText")["StatusText"]
        texts = [str(e.get("MESSAGE", "")) for e in ents] + [status]
        accounted = None
        lost = sum(int(e.get("CREDGATE_LOST", 0) or 0) for e in ents
                   if str(e.get("CREDGATE_LOST", "")).isdigit())
        if missing and lost >= len(missing):
            accounted = f"CREDGATE_LOST={lost} in the journal"
        for t in texts:
            if accounted:
                break
            if re.search(r"lost|drop|unwritten|could not|couldn't|failed to (write|log|send)|not (be )?written", t, re.I):
                nums = [int(x) for x in re.findall(r"\b(\d+)\b", t)]
                if any(n >= len(missing) for n in nums):
                    accounted = t
        note(f"daemon with LimitNOFILE=40 ({nfd} fds open at start); {res['connected']} connections held; "
             f"{len(allowed)} answered during the pressure; audit entries for {len(allowed) - len(missing)} of them")
        note(f"accept() warning in the journal: {hits[0]['MESSAGE'] if hits else 'NO'}")
        if missing:
            note(f"audit entries missing: {len(missing)}; accounted for by: {accounted or 'nothing'}")
        note(f"StatusText: {status}")
        expect(allowed, "no request was answered while the connections were held")
        expect(hits, "no 'accept() failed: Too many open files' warning in the journal")
        expect(not missing or accounted, f"{len(missing)} audit entries lost silently")


def check_f5_watchdog_fd_pressure(S):
    """Found by this stage: sd_notify() opens a socket per message, so a
    daemon whose descriptors were all taken by clients could not send
    WATCHDOG=1 and was killed, dropping every client. With LimitNOFILE=40
    and WatchdogSec=2s, 60 connections held for 5 s must leave the same
    MainPID, no watchdog timeout, and answers afterwards."""
    S.ensure_socket()
    S.set_policy(policy())
    with S.dropin("50-cgsys-nofile-wd.conf", "[Service]\nLimitNOFILE=40\nWatchdogSec=2s\n"):
        pid = S.main_pid()
        cur = S.cursor()
        res = S.client("hold", 60, 5.0, "org.test.u.f5-", timeout=40)
        expect(answered(res["after"]), f"request after the pressure: {res['after']}")
        msgs = [str(e.get("MESSAGE", "")) for e in S.journal(cur, "UNIT=credgated.service")]
        wd = [m for m in msgs if "Watchdog timeout" in m]
        note(f"LimitNOFILE=40, WatchdogSec=2s, {res['connected']} connections held 5 s: MainPID {pid} -> "
             f"{S.main_pid()}; watchdog timeouts: {len(wd)}")
        expect(res["connected"] >= 40, f"only {res['connected']} connections: no pressure")
        expect(not wd, f"the watchdog fired under descriptor pressure: {wd[0] if wd else ''}")
        expect(S.main_pid() == pid, f"MainPID changed from {pid} to {S.main_pid()}")


def check_f3_timeout(S):
    S.ensure_socket()
    S.set_policy(policy({"request_timeout": 10}))
    S.restart_fresh()
    S.write(f"{HELPER_DIR}/f3-policy.conf", policy({"request_timeout": 2}), 0o644)
    res = S.client("timeouts", f"{HELPER_DIR}/f3-policy.conf", timeout=60)
    expect(res["warmup"].get("reply") == "PONG", f"warm-up: {res['warmup']}")
    expect(res["reload_rc"] == 0 and res["reloaded"] and res["reloaded"].startswith("reloaded"),
           f"reload to request_timeout = 2: {res['reloaded']}")
    c = res["conns"]

    def fmt(x):
        return f"{x['secs']:.2f} s ({x['reply']})" if x.get("secs") is not None else "no reply in 13 s"

    note(f"request_timeout 10 -> 2 by reload ({res['reload_wait']:.2f} s to the 'reloaded' line): "
         f"first new connection {fmt(c['first_after'])}, second {fmt(c['second_after'])}; "
         f"connection open across the reload {fmt(c['pre_reload'])}")
    bad = [f"{n}: {fmt(c[n])}" for n in ("first_after", "second_after")
           if not (c[n].get("reply") == "ERR timeout" and 1.5 <= (c[n].get("secs") or 99) <= 3.5)]
    expect(not bad, "expected 'ERR timeout' after 1.5-3.5 s: " + "; ".join(bad))


def check_boot_journal(S):
    ents = S.journal(None)
    bad = []
    for e in ents:
        m = str(e.get("MESSAGE", ""))
        hit = ("SIGSYS" in m or "status=31/SYS" in m or "code=dumped" in m or "dumped core" in m
               or e.get("EXIT_CODE") == "dumped" or e.get("EXIT_STATUS") in ("SYS", "31"))
        killed = "code=killed" in m or e.get("EXIT_CODE") == "killed"
        if killed and e.get("__CURSOR") in S.expected_kill_cursors:
            continue
        if hit or killed:
            bad.append(f"{e.get('UNIT') or e.get('SYSLOG_IDENTIFIER')}: {m}")
    note(f"{len(ents)} journal entries of this boot; {len(S.expected_kill_cursors)} expected kill (check 7) excluded")
    expect(not bad, "unexpected:\n" + "\n".join(bad[:15]))


CHECKS = [
    ("check 1: credgated.socket enabled and listening, credgated.service inactive until the first client", check_socket),
    ("check 2: decisions for root, a user in adm and another user agree with credgate eval", check_decisions),
    ("check 3: StatusText names the policy size and the counters", check_status),
    ("check 4: journal entries carry the CREDGATE_* fields and the deciding rule", check_journal_fields),
    ("check 5: reload applies a new rule under the same MainPID; a broken policy keeps the old one, STATUS= says so",
     check_reload),
    ("check 6: idle exit and re-activation lose no request", check_idle_exit),
    ("check 7: the watchdog kills a SIGSTOPped daemon, the next client is answered by a new process", check_watchdog),
    ("check 8: stopping the socket stops the service and removes the socket file; starting it brings it back",
     check_stop_start),
    ("check 9: live systemd-analyze security exposure <= 0.5", check_security),
    ("check 11 (fault 4): the installed Python module imports and answers as an unprivileged user, no PYTHONPATH",
     check_python),
    ("check 12: the libcredgate(3) example compiles against the installed credgate.pc and answers", check_example),
    ("check 13: console = \"active\" follows the real logind: ALLOW at seat0, DENY seat-less and after logout",
     check_console),
    ("check 14: credgated-metrics.socket: the document by name, root only, promtool, credgate stats, textfile pair",
     check_metrics),
    ("fault 1: idle_exit = 1 and a client every 1.3 s: every request answered, the socket never fails",
     check_f1_start_limit),
    ("fault 2: under descriptor pressure the accept() warning reaches the journal, no audit entry lost silently",
     check_f2_fd_pressure),
    ("fault 3: after a reload lowering request_timeout, new connections time out on the new value", check_f3_timeout),
    ("fault 5: out of descriptors, the daemon still sends WATCHDOG=1 and is not killed", check_f5_watchdog_fd_pressure),
    ("check 10: the boot's journal has no SIGSYS, code=dumped or unexpected code=killed", check_boot_journal),
]


# ---------------------------------------------------------------------------

def main():
    reason = preflight()
    if reason:
        TAP.out(f"1..0 # SKIP {reason}")
        return 0
    S = Stage()
    interrupted = []

    def on_signal(sig, frame):
        interrupted.append(sig)
        raise Interrupted(signal.Signals(sig).name)

    def on_alarm(sig, frame):
        raise Deadline(f"stage budget of {BUDGET:.0f} s exhausted")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(BUDGET) + 5)
    setup_error = None
    t_checks = None
    try:
        try:
            S.setup()
        except (Exception, Deadline, Interrupted) as e:
            setup_error = f"{type(e).__name__}: {e}"
            note("setup failed:\n" + setup_error)
            if not isinstance(e, (RuntimeError, Interrupted, Deadline)):
                note(traceback.format_exc())
        t_checks = time.monotonic()
        stop = None
        for name, fn in CHECKS:
            if setup_error:
                TAP.result(False, name, "not run: setup failed")
                continue
            if stop:
                TAP.result(False, name, f"not run: {stop}")
                continue
            if elapsed() > BUDGET:
                stop = f"stage budget of {BUDGET:.0f} s exhausted"
                TAP.result(False, name, f"not run: {stop}")
                continue
            t0 = time.monotonic()
            try:
                S.check_cursor = S.cursor()
            except Exception:
                S.check_cursor = None
            try:
                fn(S)
                note(f"({time.monotonic() - t0:.1f} s)")
                TAP.result(True, name)
            except CheckFailed as e:
                S.dump_journal()
                note(f"({time.monotonic() - t0:.1f} s)")
                TAP.result(False, name, str(e))
            except (Interrupted, Deadline) as e:
                stop = f"{type(e).__name__}: {e}"
                TAP.result(False, name, stop)
            except Exception as e:
                S.dump_journal()
                note(f"({time.monotonic() - t0:.1f} s)")
                TAP.result(False, name, f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
    except (Interrupted, Deadline) as e:
        note(f"stopped: {e}")
    finally:
        signal.alarm(0)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        t_checks_end = time.monotonic()
        pause = float(os.environ.get("CREDGATE_SYSTEM_PAUSE") or 0)
        if pause > 0 and S.pid1:
            # A debugging aid: look around inside before the teardown.
            note(f"pausing {pause:.0f} s before the teardown; inside: nsenter --target={S.pid1} --mount --uts "
                 f"--ipc --net --pid --cgroup --root --wd bash")
            try:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                time.sleep(min(pause, 1800))
            except KeyboardInterrupt:
                pass
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            problems, t_down = S.teardown()
        except BaseException as e:
            problems, t_down = [f"teardown raised {type(e).__name__}: {e}"], 0.0
        note(f"teardown took {t_down:.1f} s")
        TAP.result(not problems, "teardown: container stopped, mounts and temporary folder removed",
                   "\n".join(problems) if problems else None)
        total = elapsed()
        checks = (t_checks_end - t_checks) if t_checks else 0.0
        note(f"stage run time: {total:.1f} s (checks {checks:.1f} s, teardown {t_down:.1f} s); "
             f"{TAP.failed} of {TAP.n} failed")
        TAP.out(f"1..{TAP.n}")
    if interrupted:
        return 128 + int(interrupted[0])
    return 1 if TAP.failed else 0


if __name__ == "__main__":
    sys.exit(main())
