# SPDX-License-Identifier: LGPL-2.1-or-later
"""Helpers shared by test_adversarial.py and soak.py (issue 6): watching the
daemon's fds, RSS and CPU time in /proc, child processes that run as another
identity and report back, and the control client.

Python 3 standard library only; see cgtest.py for the rest of the harness."""

import errno
import json
import os
import pickle
import select
import signal
import socket
import subprocess
import threading
import sys
import time
import traceback
import unittest

import cgtest

# Identities (they need no passwd entry, see PLATFORM-NOTES.md).
CTL_UID = 1001   # the control client
ATK_UID = 2001   # the attackers

_CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------
# /proc

def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid):
    out = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{name}"))
        except OSError:
            pass
    return out


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid):
    """utime + stime of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return stat[stat.rindex(")") + 2]


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[i]


# ---------------------------------------------------------------------------
# Children

recv_all = cgtest.recv_all


def settle_fds(d, timeout=10, quiet=0.5):
    """The daemon's fd count once it has stopped moving for @quiet seconds
    (the closer thread closes fds asynchronously)."""
    last, since = fd_count(d.pid), time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        n = fd_count(d.pid)
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def stopped(stop_fd):
    r, _, _ = select.select([stop_fd], [], [], 0)
    return bool(r)


class Child:
    """fn(stop_fd) in a forked child, optionally as (uid, gid, []); the child
    runs until fn returns (fn should poll stopped(stop_fd)); stop() asks it
    to finish, result() collects fn's return value (pickled through a pipe)
    or re-raises its exception. The child dies with the test process."""

    def __init__(self, fn, uid=None, gid=None):
        stop_r, self._stop_w = os.pipe()
        self._res_r, res_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                # Keep only our two pipe ends: an inherited copy of another
                # child's stop pipe would keep that child from seeing EOF.
                keep = sorted((stop_r, res_w))
                os.closerange(3, keep[0])
                os.closerange(keep[0] + 1, keep[1])
                os.closerange(keep[1] + 1, 1 << 20)
                cgtest._libc.prctl(cgtest._PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                try:
                    if uid is not None:
                        g = uid if gid is None else gid
                        os.setgroups([])
                        os.setresgid(g, g, g)
                        os.setresuid(uid, uid, uid)
                    payload = ("ok", fn(stop_r))
                except BaseException:
                    payload = ("err", traceback.format_exc())
                data = memoryview(pickle.dumps(payload))
                while data:
                    n = os.write(res_w, data)
                    data = data[n:]
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        os.close(stop_r)
        os.close(res_w)
        self.pid = pid
        self.uid = uid
        self._reaped = False

    def stop(self):
        if self._stop_w is not None:
            os.close(self._stop_w)
            self._stop_w = None

    def kill(self, sig=signal.SIGKILL):
        if not self._reaped:
            os.kill(self.pid, sig)

    def reap(self):
        if not self._reaped:
            os.waitpid(self.pid, 0)
            self._reaped = True
        for fd in (self._stop_w, self._res_r):
            if fd is not None:
                os.close(fd)
        self._stop_w = self._res_r = None

    def result(self, timeout=60.0):
        self.stop()
        chunks = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                self.reap()
                raise AssertionError(f"child {self.pid} (uid {self.uid}) did not finish within {timeout} s")
            r, _, _ = select.select([self._res_r], [], [], left)
            if not r:
                continue
            b = os.read(self._res_r, 1 << 20)
            if not b:
                break
            chunks.append(b)
        self.reap()
        if not chunks:
            raise AssertionError(f"child {self.pid} (uid {self.uid}) sent no result")
        kind, value = pickle.loads(b"".join(chunks))
        if kind == "err":
            raise AssertionError(f"in child {self.pid} (uid {self.uid}):\n{value}")
        return value

    def cleanup(self):
        try:
            if not self._reaped:
                self.kill()
                self.reap()
        except OSError:
            pass


# ---------------------------------------------------------------------------
# The control client

# (request line, expected reply) for CTL_UID under the policies of
# test_adversarial.py: ctl.allow is granted to CTL_UID only, ctl.deny is
# denied explicitly, ctl.other falls to the default deny.
PLAIN_QUERIES = [("CHECK ctl.allow", "ALLOW"), ("CHECK ctl.deny", "DENY"), ("CHECK ctl.other", "DENY"),
                 ("PING", "PONG")]


def control(path, *, fresh_every=3, interval=0.002, req_timeout=5.0, batch=None, check_batch=None):
    """Return a Child function: ask until stopped, from two threads: one on
    a persistent connection (a request every @interval s), one on a new
    connection per request, at a rate that makes them about one request in
    @fresh_every (0: no new connections). Plain mode cycles PLAIN_QUERIES;
    batch mode sends the lines of @batch in one write and passes the
    replies to @check_batch, which returns a label (counted) or raises on a
    wrong answer. Returns counts, latencies (s) and the first errors."""

    def run(stop_fd):
        lock = threading.Lock()
        out = dict(n=0, errors=0, error_list=[], wrong=0, wrong_list=[], lat_p=[], lat_f=[], labels={})
        done = threading.Event()

        def loop(fresh):
            n = 0
            c = None
            lat = out["lat_f" if fresh else "lat_p"]
            pause = interval * (fresh_every - 1) if fresh else interval
            while not done.is_set():
                if batch is None:
                    line, want = PLAIN_QUERIES[n % len(PLAIN_QUERIES)]
                    payload, k = line.encode() + b"\n", 1
                else:
                    payload, k = "".join(b + "\n" for b in batch).encode(), len(batch)
                t0 = time.perf_counter()
                got = err = None
                try:
                    if fresh:
                        with cgtest.Client(path, req_timeout) as fc:
                            fc.send(payload)
                            got = [fc.readline(req_timeout) for _ in range(k)]
                            if not fc.nothing_pending():
                                raise AssertionError("extra reply data on a new connection")
                    else:
                        if c is None:
                            c = cgtest.Client(path, req_timeout)
                        c.send(payload)
                        got = [c.readline(req_timeout) for _ in range(k)]
                except Exception as e:
                    err = f"request {n} ({'new connection' if fresh else 'persistent'}): {e!r}"
                    if c is not None and not fresh:
                        c.close()
                        c = None
                dt = time.perf_counter() - t0
                bad = lab = None
                if got is not None:
                    got = [g.decode("ascii", "replace").rstrip("\n") for g in got]
                    try:
                        if batch is None:
                            if got[0] != want:
                                raise AssertionError(f"{line!r} -> {got[0]!r}, expected {want!r}")
                        else:
                            lab = check_batch(got)
                    except AssertionError as e:
                        bad = str(e)
                with lock:
                    out["n"] += 1
                    lat.append(dt)
                    if err is not None:
                        out["errors"] += 1
                        if len(out["error_list"]) < 10:
                            out["error_list"].append(err)
                    if bad is not None:
                        out["wrong"] += 1
                        if len(out["wrong_list"]) < 10:
                            out["wrong_list"].append(bad)
                    if lab is not None:
                        out["labels"][lab] = out["labels"].get(lab, 0) + 1
                n += 1
                if pause:
                    time.sleep(pause)
            if c is not None:
                c.close()

        threads = [threading.Thread(target=loop, args=(False,))]
        if fresh_every:
            threads.append(threading.Thread(target=loop, args=(True,)))
        for t in threads:
            t.start()
        select.select([stop_fd], [], [])
        done.set()
        for t in threads:
            t.join()
        return out

    return run


def summarize(res):
    """p50/p99/max in ms over every control request (both kinds)."""
    all_ = sorted(res["lat_p"] + res["lat_f"])
    f = sorted(res["lat_f"])
    return dict(n=res["n"], fresh=len(f), errors=res["errors"], wrong=res["wrong"],
                p50=1000 * pct(all_, 50), p99=1000 * pct(all_, 99), max=1000 * (all_[-1] if all_ else 0),
                p99_persistent=1000 * pct(sorted(res["lat_p"]), 99),
                p99_fresh=1000 * pct(f, 99) if f else 0.0)


# ---------------------------------------------------------------------------
# Helper programs: the FUSE server that never answers FLUSH, the flooder
# (issue 10). Built by 'make check'; their paths come from the environment.

def helper_program(var, name):
    """$@var, else tests/integration/@name in the build folder."""
    return cgtest.env_path(var, os.path.join(cgtest.builddir(), "tests", "integration", name))


def popen_as(uid, cmd, **kw):
    """Start @cmd as (uid, uid, []) with its stdout a pipe (text, line by
    line); it dies with the test process."""
    def drop():
        cgtest._libc.prctl(cgtest._PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)

    sys.stdout.flush()
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, bufsize=1,
                            preexec_fn=drop, close_fds=True, cwd="/", **kw)


class FuseHang:
    """tests/integration/fuse-hang mounted on a fresh folder: MNT/f is a file
    whose every close() blocks in FUSE_FLUSH until stop().

    Any process that closes a descriptor of MNT/f (also by exiting, also
    when killed, also closerange() in a forked child) hangs, uninterruptibly,
    until stop(). So the test process itself must never hold one (every
    child it forks would close it), and no process that holds one may be
    waited for before stop(). stop() ends the server (closing /dev/fuse
    aborts the connection: every waiting FLUSH fails), lazily unmounts and
    removes the folder; it never raises and may be called again."""

    def __init__(self, prog=None):
        prog = prog or helper_program("CREDGATE_FUSE_HANG", "fuse-hang")
        self.dir = cgtest.mkdtemp("cg-fuse-")
        self.mnt = os.path.join(self.dir, "mnt")
        os.mkdir(self.mnt, 0o755)
        self.path = os.path.join(self.mnt, "f")
        self.log_path = os.path.join(self.dir, "log")
        self.proc = None
        log = open(self.log_path, "wb")
        try:
            sys.stdout.flush()
            self.proc = subprocess.Popen(
                [prog, self.mnt], stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True,
                preexec_fn=lambda: cgtest._libc.prctl(cgtest._PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0))
        finally:
            log.close()
        deadline = time.monotonic() + 10
        while "ready\n" not in self.log():
            rc = self.proc.poll()
            if rc is not None or time.monotonic() > deadline:
                text = self.log().strip()
                self.stop()
                if rc == 77:
                    raise unittest.SkipTest(f"no FUSE mount possible here ({text})")
                raise AssertionError(f"fuse-hang did not start (status {rc}): {text}")
            time.sleep(0.01)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("ascii", "replace")
        except OSError:
            return ""

    def flushes(self):
        """[(pid, tgid)] of every FLUSH the server got (pid: the closing
        thread; tgid: its process, read from /proc at the time, -1 if gone)."""
        out = []
        for line in self.log().splitlines():
            if line.startswith("flush "):
                kv = dict(w.split("=", 1) for w in line.split()[1:])
                out.append((int(kv["pid"]), int(kv["tgid"])))
        return out

    def stop(self):
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        except OSError:
            pass
        if os.path.isdir(self.mnt):
            # The server detaches it too, unless it was killed.
            if cgtest._libc.umount2(self.mnt.encode(), 2) != 0:  # MNT_DETACH
                pass  # EINVAL: not mounted (any more)
            try:
                os.rmdir(self.mnt)
            except OSError:
                pass
        # Never rmtree into a mount point that might still be alive.
        for p in (self.log_path,):
            try:
                os.unlink(p)
            except OSError:
                pass
        try:
            os.rmdir(self.dir)
        except OSError:
            pass


class FuseFdSender:
    """A process of @uid that opens @path (a FuseHang file), sends that one
    descriptor to the daemon at @sock once per line of @lines, each on a
    new connection (socket.send_fds), and reports per line the first reply
    line or "sendmsg: EPERM" (a kernel with SO_PASSRIGHTS refusing it).
    Then it holds the descriptor and waits to be killed: it never closes it
    itself, and must not be reaped before the FUSE server is stopped.

    Not a Child: Child's result protocol ends with the child's exit, which
    would block in FLUSH before the result pipe closes."""

    def __init__(self, uid, path, sock, lines):
        r, w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                os.closerange(3, w)
                os.closerange(w + 1, 1 << 20)
                cgtest._libc.prctl(cgtest._PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                try:
                    os.setgroups([])
                    os.setresgid(uid, uid, uid)
                    os.setresuid(uid, uid, uid)
                    fd = os.open(path, os.O_RDONLY)
                    head = os.pread(fd, 9, 0).decode("ascii", "replace")
                    out = []
                    for line in lines:
                        with cgtest.connect(sock) as s:
                            try:
                                socket.send_fds(s, [line.encode() + b"\n"], [fd])
                            except OSError as e:
                                out.append(f"sendmsg: {errno.errorcode.get(e.errno, e.errno)}")
                                continue
                            # One line, not EOF: a wedged daemon never closes.
                            data, how = cgtest.recv_all(s, 5.0, lines=1)
                            out.append(data.decode("ascii", "replace").rstrip("\n") if data else f"({how})")
                    payload = dict(ok=True, head=head, replies=out)
                except BaseException:
                    payload = dict(ok=False, error=traceback.format_exc())
                os.write(w, json.dumps(payload).encode() + b"\n")
                while True:  # hold the descriptor until killed
                    signal.pause()
            finally:
                os._exit(1)
        os.close(w)
        self.pid = pid
        self._r = r
        self._reaped = False

    def result(self, timeout=60.0):
        buf = bytearray()
        deadline = time.monotonic() + timeout
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the FUSE fd sender sent no result within {timeout} s")
            r, _, _ = select.select([self._r], [], [], left)
            if r:
                b = os.read(self._r, 65536)
                if not b:
                    raise AssertionError("the FUSE fd sender died without a result")
                buf += b
        res = json.loads(buf)
        if not res["ok"]:
            raise AssertionError(f"in the FUSE fd sender:\n{res['error']}")
        return res

    def kill(self):
        """SIGKILL: it dies closing its descriptor, i.e. in FLUSH."""
        if not self._reaped:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def reap(self):
        """Only after the FUSE server is stopped."""
        if not self._reaped:
            self.kill()
            os.waitpid(self.pid, 0)
            self._reaped = True
            os.close(self._r)


def note(text):
    for line in text.rstrip("\n").split("\n"):
        sys.stdout.write("# " + line + "\n")
    sys.stdout.flush()


def raise_nofile(n):
    """Raise this process's RLIMIT_NOFILE to at least @n (children inherit it)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= n:
        return
    if hard < n and os.geteuid() == 0:
        hard = n
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))
