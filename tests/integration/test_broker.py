#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Broker queries: CHECK-PEER with an fd passed by SCM_RIGHTS (docs/protocol.md).

Drives the real daemon, standalone and under systemd-socket-activate, at the
raw protocol level (socket.send_fds):

* As root: children with other identities connect to a test "service"
  socket; the service passes the accepted fd and must get the decision for
  the child, not for itself.
* Every ERR bad-peer-fd case, each followed by the daemon closing the
  connection, a fresh client still being served, the daemon's fd count back
  at its baseline and (where the passed fd is one end of a pair) proof that
  the daemon dropped its copy: closing ours makes the other end see EOF.
* Pipelining and the fd attribution rule ("an fd belongs to the line that
  contains the last byte of the read it arrived with").
* No fd leaks: the daemon's /proc/PID/fd count before and after thousands of
  passed fds, on good and bad lines, pending and timed out.
* Closing a passed fd must not stall the daemon's one event loop (a TCP
  socket with SO_LINGER and unsent data makes close() block).

Runs as any user; the identity tests need root and skip visibly otherwise.
"""

import ctypes
import os
import resource
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import unittest

import cgtest

ROOT = os.geteuid() == 0

POLICY = """\
default = "deny";
rules = (
  { action = "peer.u1000only"; effect = "allow"; uids = ["1000"]; },
  { action = "peer.rootonly";  effect = "allow"; uids = ["0"]; },
  { action = "peer.group100";  effect = "allow"; gids = ["100"]; },
  { action = "peer.users";     effect = "allow"; groups = ["users"]; },
  { action = "peer.gid1000";   effect = "allow"; gids = ["1000"]; },
  { action = "peer.adm";       effect = "allow"; gids = ["4"]; },
  { action = "peer.staff";     effect = "allow"; gids = ["40-60"]; },
  { action = "peer.nobody";    effect = "allow"; uids = ["65534"]; },
  { action = "peer.max";       effect = "allow"; uids = ["4294967294"]; },
  { action = "peer.maxgid";    effect = "allow"; gids = ["4294967294"]; },
  # first match decides
  { action = "peer.notroot";   effect = "deny";  uids = ["0"]; },
  { action = "peer.notroot";   effect = "allow"; anyone = true; },
  { action = "peer.order";     effect = "deny";  gids = ["100"]; },
  { action = "peer.order";     effect = "allow"; anyone = true; },
  { action = "peer.pat.*";     effect = "allow"; uids = ["1000-1999"]; },
  { action = "peer.any";       effect = "allow"; anyone = true; }
);
""" + f"""
settings = {{ brokers = {{ uids = ["0", "{os.geteuid()}"]; }}; }};
"""

# name: (uid, gid, groups)
IDENTITIES = {
    "root": (0, 0, [0]),
    "u1000": (1000, 1000, [100]),
    "bin": (2, 2, [4, 50]),
    "nobody": (65534, 65534, []),
    "max": (4294967294, 4294967294, []),
    # 2,001 supplementary groups: SO_PEERGROUPS needs more than a first guess
    "many": (3, 3, [100] + list(range(20000, 22000))),
}
ALL = set(IDENTITIES)

# action -> identities that get ALLOW; all others get DENY.
ALLOWED = {
    "peer.u1000only": {"u1000"},
    "peer.rootonly": {"root"},
    "peer.group100": {"u1000", "many"},
    "peer.users": {"u1000", "many"},
    "peer.gid1000": {"u1000"},
    "peer.adm": {"bin"},
    "peer.staff": {"bin"},
    "peer.nobody": {"nobody"},
    "peer.max": {"max"},
    "peer.maxgid": {"max"},
    "peer.notroot": ALL - {"root"},
    "peer.order": ALL - {"u1000", "many"},
    "peer.pat.x": {"u1000"},
    "peer.pat": set(),
    "peer.any": ALL,
    "peer.none": set(),
}


def expected(name):
    return {a: ("ALLOW" if name in who else "DENY") for a, who in ALLOWED.items()}


# The test process's own answers for actions that depend on the uid only.
SELF = {
    "peer.any": "ALLOW",
    "peer.none": "DENY",
    "peer.rootonly": "ALLOW" if ROOT else "DENY",
    "peer.notroot": "DENY" if ROOT else "ALLOW",
}

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


# ---------------------------------------------------------------------------
# Helpers

def fileno(x):
    return x if isinstance(x, int) else x.fileno()


class Conn(cgtest.Client):
    """A connection to the daemon that can attach fds to what it sends."""

    def send_fds(self, data, fds):
        """One sendmsg() carrying @data and SCM_RIGHTS @fds."""
        fds = [fileno(f) for f in fds]
        if not fds:
            self.sock.sendall(data)
            return
        n = socket.send_fds(self.sock, [data], fds)
        if n != len(data):
            raise AssertionError(f"sendmsg sent {n} of {len(data)} bytes")

    def check_peer(self, action, fd):
        self.send_fds(f"CHECK-PEER {action}\n".encode(), [fd])
        return self.readline().decode("ascii", "replace").rstrip("\n")


def refused_check_peer(c, action, fd):
    """CHECK-PEER from a client that is no broker: "EPERM" when the kernel
    refused the fd (SO_PASSRIGHTS), else the daemon's reply, after which the
    daemon must close the connection."""
    try:
        c.send_fds(f"CHECK-PEER {action}\n".encode(), [fd])
    except PermissionError:
        return "EPERM"
    reply = c.readline().decode("ascii", "replace").rstrip("\n")
    rest = c.read_to_eof()
    if rest:
        raise AssertionError(f"bytes after {reply!r}: {rest!r}")
    return reply


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_listing(pid):
    out = []
    for n in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            out.append(f"{n} -> {os.readlink(f'/proc/{pid}/fd/{n}')}")
        except OSError:
            out.append(f"{n} -> ?")
    return "\n".join(out)


def wait_stable_count(pid, settle=0.15, timeout=5.0):
    """The daemon's fd count once it has not changed for @settle seconds."""
    deadline = time.monotonic() + timeout
    last, since = fd_count(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.01)
        n = fd_count(pid)
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= settle:
            return n
    raise AssertionError(f"the daemon's fd count never settled (last {last})")


def proc_state(pid):
    """The state letter of /proc/PID/stat ("S", "R", "T" for stopped...)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def pair():
    """A connected AF_UNIX stream pair (keep, give): @give is what the test
    passes to the daemon, @keep shows whether some copy of @give is still open."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def assert_usable_then_released(tc, keep, give, what="passed fd"):
    """@give is still ours and works both ways; once we close it, @keep sees
    EOF, which proves that no copy of @give is left anywhere (the daemon
    dropped its own)."""
    assert_all_released(tc, [(keep, give)], what)


def assert_all_released(tc, pairs, what="passed fd", timeout=2.0):
    """For each (keep, give) pair whose @give was passed to the daemon:
    @give still works both ways in the service; after we close our @give
    (unless it is None: already closed), @keep sees EOF within @timeout,
    i.e. the daemon dropped its copy. One shared deadline, so a daemon that
    keeps them all fails in @timeout, not in n x @timeout."""
    for i, (keep, give) in enumerate(pairs):
        if give is None:
            continue
        give.settimeout(timeout)
        keep.settimeout(timeout)
        give.sendall(b"x")
        tc.assertEqual(keep.recv(1), b"x", f"{what} #{i}: not usable in the service after the query")
        keep.sendall(b"y")
        tc.assertEqual(give.recv(1), b"y", f"{what} #{i}: not usable in the service after the query")
    for keep, give in pairs:
        if give is not None:
            give.close()
    left = {keep.fileno(): i for i, (keep, _) in enumerate(pairs)}
    socks = {keep.fileno(): keep for keep, _ in pairs}
    deadline = time.monotonic() + timeout
    while left:
        wait = deadline - time.monotonic()
        if wait <= 0:
            break
        ready, _, _ = select.select(list(left), [], [], wait)
        for fd in ready:
            try:
                got = socks[fd].recv(1, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                got = b""
            tc.assertEqual(got, b"", f"{what} #{left[fd]}: unexpected data")
            del left[fd]
    if left:
        raise AssertionError(f"{what}: {len(left)} of {len(pairs)} still open {timeout} s after we closed our "
                             f"copies (the daemon kept them): #{sorted(left.values())}")


def assert_released(tc, keep, what="passed fd", timeout=2.0):
    """@keep's partner was passed and already closed here: @keep must see
    EOF within @timeout (the daemon closes its copy)."""
    assert_all_released(tc, [(keep, None)], what, timeout)


class Service:
    """The test's own service: a listening Unix socket that other uids can
    reach (dir 0755, socket 0666)."""

    def __init__(self):
        self.dir = cgtest.mkdtemp("cgsvc-")
        os.chmod(self.dir, 0o777)
        self.path = os.path.join(self.dir, "svc.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        os.chmod(self.path, 0o666)
        self.listener.listen(64)

    def close(self):
        self.listener.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        try:
            os.rmdir(self.dir)
        except OSError:
            pass


class PeerChild:
    """A client of the test service running as another identity.

    Forks; the child drops to (uid, gid, groups), connects to the service,
    sends "hello pid=.. uid=.. gid=.. groups=..", then answers every line it
    receives with "echo <line>" until EOF. The parent accepts: self.conn is
    the service's end, the fd a service would pass with CHECK-PEER."""

    def __init__(self, service, uid, gid, groups, timeout=5.0):
        self.service = service
        self.uid, self.gid, self.groups = uid, gid, list(groups)
        self.timeout = timeout
        self.buf = b""
        self.conn = None
        self.pid = None

    def __enter__(self):
        r, w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r)
                _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                # Hold nothing of the parent's: no copy of any fd the parent
                # checks for EOF, no daemon connection.
                os.closerange(3, w)
                os.closerange(w + 1, 65536)
                os.setgroups(self.groups)
                os.setresgid(self.gid, self.gid, self.gid)
                os.setresuid(self.uid, self.uid, self.uid)
                if os.getresuid() != (self.uid,) * 3 or os.getresgid() != (self.gid,) * 3:
                    raise RuntimeError("identity change did not take")
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(60)
                s.connect(self.service.path)
                groups = ",".join(str(g) for g in sorted(set(os.getgroups())))
                s.sendall(f"hello pid={os.getpid()} uid={os.getuid()} gid={os.getgid()} groups={groups}\n".encode())
                buf = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        s.sendall(b"echo " + line + b"\n")
                code = 0
            except BaseException:
                try:
                    os.write(w, traceback.format_exc().encode()[-4000:])
                except BaseException:
                    pass
            finally:
                os._exit(code)
        os.close(w)
        self.pid, self.err_fd = pid, r
        self.service.listener.settimeout(self.timeout)
        try:
            self.conn, _ = self.service.listener.accept()
        except socket.timeout:
            self._reap(kill=True)
            raise AssertionError(f"child uid={self.uid} did not connect: {self._err()}")
        self.conn.settimeout(self.timeout)
        self.hello = self.readline().decode()
        groups = ",".join(str(g) for g in sorted(set(self.groups)))
        want = f"hello pid={pid} uid={self.uid} gid={self.gid} groups={groups}\n"
        if self.hello != want:
            self.__exit__(None, None, None)
            raise AssertionError(f"child identity: got {self.hello!r}, want {want!r}")
        return self

    def readline(self):
        while b"\n" not in self.buf:
            chunk = self.conn.recv(4096)
            if not chunk:
                raise AssertionError(f"child uid={self.uid} closed: {self._err()}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    def echo(self, text):
        """Talk to the child over the service's end: proves it still works."""
        self.conn.sendall(text + b"\n")
        return self.readline()

    def _err(self):
        out = b""
        while select.select([self.err_fd], [], [], 0.5)[0]:
            b = os.read(self.err_fd, 65536)
            if not b:
                break
            out += b
        return out.decode("utf-8", "replace") or "(no message)"

    def _reap(self, kill=False):
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.timeout
        while True:
            p, st = os.waitpid(self.pid, os.WNOHANG)
            if p:
                return st
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                _, st = os.waitpid(self.pid, 0)
                return st
            time.sleep(0.005)

    def __exit__(self, *exc):
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        st = self._reap()
        err = self._err() if st != 0 else ""
        os.close(self.err_fd)
        if st != 0 and exc[0] is None:
            raise AssertionError(f"child uid={self.uid} failed (wait status {st}): {err}")


# ---------------------------------------------------------------------------
# ERR bad-peer-fd cases. Each builder gets the test case (for cleanups and
# temp paths) and returns (messages, prefix, released) where messages is a
# list of (bytes, [fds]) each sent with one sendmsg, prefix is the replies
# owed before the ERR, and released is a list of (keep, give) socket pairs
# whose @give was passed: each must stay usable and be dropped by the daemon.

def _close_fd(fd):
    try:
        os.close(fd)
    except OSError:
        pass


def _close_later(tc, *objs):
    for o in objs:
        tc.addCleanup(o.close)
    return objs


def _pairs(tc, n):
    ps = [pair() for _ in range(n)]
    for keep, give in ps:
        tc.addCleanup(keep.close)
        tc.addCleanup(give.close)
    return ps


def case_no_fd(tc):
    return [(b"CHECK-PEER peer.any\n", [])], b"", []


def case_two_fds(tc):
    ps = _pairs(tc, 2)
    return [(b"CHECK-PEER peer.any\n", [g for _, g in ps])], b"", ps


def case_same_fd_twice(tc):
    ps = _pairs(tc, 1)
    return [(b"CHECK-PEER peer.any\n", [ps[0][1], ps[0][1]])], b"", ps


def case_16_fds(tc):
    # exactly as many as the daemon takes in: not truncated, still too many
    ps = _pairs(tc, 16)
    return [(b"CHECK-PEER peer.any\n", [g for _, g in ps])], b"", ps


def case_17_fds(tc):
    ps = _pairs(tc, 17)
    return [(b"CHECK-PEER peer.any\n", [g for _, g in ps])], b"", ps


def case_20_fds(tc):
    # more than the 16-fd control buffer: the kernel sets MSG_CTRUNC and drops 4
    ps = _pairs(tc, 20)
    return [(b"CHECK-PEER peer.any\n", [g for _, g in ps])], b"", ps


def case_20_fds_on_ping(tc):
    ps = _pairs(tc, 20)
    return [(b"PING\n", [g for _, g in ps])], b"", ps


def case_fd_on_ping(tc):
    ps = _pairs(tc, 1)
    return [(b"PING\n", [ps[0][1]])], b"", ps


def case_fd_on_check(tc):
    ps = _pairs(tc, 1)
    return [(b"CHECK peer.any\n", [ps[0][1]])], b"", ps


def case_fd_on_whoami(tc):
    ps = _pairs(tc, 1)
    return [(b"WHOAMI\n", [ps[0][1]])], b"", ps


def case_fd_on_ping_after_good_check_peer(tc):
    ps = _pairs(tc, 2)
    return [(b"CHECK-PEER peer.any\n", [ps[0][1]]), (b"PING\n", [ps[1][1]])], b"ALLOW\n", ps


def case_no_fd_after_ping(tc):
    return [(b"PING\n", []), (b"CHECK-PEER peer.any\n", [])], b"PONG\n", []


def case_fd_belongs_to_last_line_of_read(tc):
    # One sendmsg "CHECK-PEER ...\nPING\n" + fd: the fd belongs to the PING
    # line (it holds the read's last byte), so the CHECK-PEER has none.
    ps = _pairs(tc, 1)
    return [(b"CHECK-PEER peer.any\nPING\n", [ps[0][1]])], b"", ps


def case_two_fds_over_two_sendmsgs(tc):
    # one line, split over two sendmsgs, each part with an fd: two fds
    ps = _pairs(tc, 2)
    return [(b"CHECK-PEER ", [ps[0][1]]), (b"peer.any\n", [ps[1][1]])], b"", ps


def case_unix_listening(tc):
    d = cgtest.mkdtemp("cgl-")
    tc.addCleanup(os.rmdir, d)
    p = os.path.join(d, "l.sock")
    tc.addCleanup(os.unlink, p)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    _close_later(tc, s)
    s.bind(p)
    s.listen(1)
    return [(b"CHECK-PEER peer.any\n", [s])], b"", []


def case_unix_listening_abstract(tc):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    _close_later(tc, s)
    s.bind(b"\0credgate-test-broker-%d" % os.getpid())
    s.listen(1)
    return [(b"CHECK-PEER peer.any\n", [s])], b"", []


def case_unix_stream_unconnected(tc):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    _close_later(tc, s)
    return [(b"CHECK-PEER peer.any\n", [s])], b"", []


def case_unix_stream_bound_unconnected(tc):
    d = cgtest.mkdtemp("cgb-")
    tc.addCleanup(os.rmdir, d)
    p = os.path.join(d, "b.sock")
    tc.addCleanup(os.unlink, p)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    _close_later(tc, s)
    s.bind(p)
    return [(b"CHECK-PEER peer.any\n", [s])], b"", []


def case_unix_dgram(tc):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    _close_later(tc, s)
    return [(b"CHECK-PEER peer.any\n", [s])], b"", []


def case_unix_dgram_pair(tc):
    # connected, and SO_PEERCRED works on it: only the type check refuses it
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    _close_later(tc, a, b)
    return [(b"CHECK-PEER peer.any\n", [b])], b"", []


def case_unix_seqpacket_pair(tc):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    _close_later(tc, a, b)
    return [(b"CHECK-PEER peer.any\n", [b])], b"", []


def case_pipe_read(tc):
    r, w = os.pipe()
    tc.addCleanup(_close_fd, r)
    tc.addCleanup(_close_fd, w)
    return [(b"CHECK-PEER peer.any\n", [r])], b"", []


def case_pipe_write(tc):
    r, w = os.pipe()
    tc.addCleanup(_close_fd, r)
    tc.addCleanup(_close_fd, w)
    tc.pipe_rw = (r, w)  # checked after the ERR: usable, then released
    return [(b"CHECK-PEER peer.any\n", [w])], b"", []


def case_dev_null(tc):
    fd = os.open("/dev/null", os.O_RDWR)
    tc.addCleanup(_close_fd, fd)
    return [(b"CHECK-PEER peer.any\n", [fd])], b"", []


def case_regular_file(tc):
    fd = os.open(os.path.join(tc.d.dir, "policy.conf"), os.O_RDONLY)
    tc.addCleanup(_close_fd, fd)
    return [(b"CHECK-PEER peer.any\n", [fd])], b"", []


def case_directory(tc):
    fd = os.open(tc.d.dir, os.O_RDONLY | os.O_DIRECTORY)
    tc.addCleanup(_close_fd, fd)
    return [(b"CHECK-PEER peer.any\n", [fd])], b"", []


def case_o_path_of_socket(tc):
    # an O_PATH fd of the daemon's own socket file is not a socket
    fd = os.open(tc.d.socket, os.O_PATH)
    tc.addCleanup(_close_fd, fd)
    return [(b"CHECK-PEER peer.any\n", [fd])], b"", []


def _tcp(tc, family=socket.AF_INET, host="127.0.0.1"):
    lst = socket.socket(family, socket.SOCK_STREAM)
    _close_later(tc, lst)
    lst.bind((host, 0))
    lst.listen(1)
    cli = socket.socket(family, socket.SOCK_STREAM)
    _close_later(tc, cli)
    cli.connect(lst.getsockname()[:2])
    acc, _ = lst.accept()
    _close_later(tc, acc)
    return lst, cli, acc


def case_tcp_connected_client(tc):
    _, cli, _ = _tcp(tc)
    return [(b"CHECK-PEER peer.any\n", [cli])], b"", []


def case_tcp_accepted(tc):
    _, _, acc = _tcp(tc)
    return [(b"CHECK-PEER peer.any\n", [acc])], b"", []


def case_tcp_listening(tc):
    lst, _, _ = _tcp(tc)
    return [(b"CHECK-PEER peer.any\n", [lst])], b"", []


def case_tcp_unconnected(tc):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    _close_later(tc, s)
    return [(b"CHECK-PEER peer.any\n", [s])], b"", []


def case_tcp6_connected(tc):
    try:
        _, cli, _ = _tcp(tc, socket.AF_INET6, "::1")
    except OSError as e:
        raise unittest.SkipTest(f"no IPv6 loopback: {e}")
    return [(b"CHECK-PEER peer.any\n", [cli])], b"", []


def case_udp(tc):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _close_later(tc, s)
    s.connect(("127.0.0.1", 9))
    return [(b"CHECK-PEER peer.any\n", [s])], b"", []


def lingering_tcp(tc, linger):
    """A connected TCP socket whose close() blocks for @linger seconds:
    SO_LINGER on, and unsent data that the peer (never reading, tiny receive
    buffer) does not take. Any local user can make one."""
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    _close_later(tc, lst)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    _close_later(tc, cli)
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    cli.connect(lst.getsockname())
    acc, _ = lst.accept()
    _close_later(tc, acc)
    cli.setblocking(False)
    try:
        while True:
            cli.send(b"x" * 65536)
    except BlockingIOError:
        pass
    cli.setblocking(True)
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, linger))
    return cli


BAD_PEER_FD = {
    "no_fd": case_no_fd,
    "two_fds": case_two_fds,
    "same_fd_twice": case_same_fd_twice,
    "16_fds": case_16_fds,
    "17_fds": case_17_fds,
    "20_fds_ctrunc": case_20_fds,
    "20_fds_on_ping": case_20_fds_on_ping,
    "fd_on_ping": case_fd_on_ping,
    "fd_on_check": case_fd_on_check,
    "fd_on_whoami": case_fd_on_whoami,
    "fd_on_ping_after_good_check_peer": case_fd_on_ping_after_good_check_peer,
    "no_fd_after_ping": case_no_fd_after_ping,
    "fd_belongs_to_last_line_of_read": case_fd_belongs_to_last_line_of_read,
    "two_fds_over_two_sendmsgs": case_two_fds_over_two_sendmsgs,
    "unix_listening": case_unix_listening,
    "unix_listening_abstract": case_unix_listening_abstract,
    "unix_stream_unconnected": case_unix_stream_unconnected,
    "unix_stream_bound_unconnected": case_unix_stream_bound_unconnected,
    "unix_dgram": case_unix_dgram,
    "unix_dgram_pair": case_unix_dgram_pair,
    "unix_seqpacket_pair": case_unix_seqpacket_pair,
    "pipe_read": case_pipe_read,
    "pipe_write": case_pipe_write,
    "dev_null": case_dev_null,
    "regular_file": case_regular_file,
    "directory": case_directory,
    "o_path_of_socket": case_o_path_of_socket,
    "tcp_connected_client": case_tcp_connected_client,
    "tcp_accepted": case_tcp_accepted,
    "tcp_listening": case_tcp_listening,
    "tcp_unconnected": case_tcp_unconnected,
    "tcp6_connected": case_tcp6_connected,
    "udp": case_udp,
}


# The grammar checks come first: a bad line with an fd gets its own ERR.
# name -> (bytes, number of fds (fresh pairs), reason)
GRAMMAR_FIRST = {
    "bad_action_star": (b"CHECK-PEER peer.*\n", 1, "bad-action"),
    "bad_action_256": (b"CHECK-PEER " + b"a" * 256 + b"\n", 1, "bad-action"),
    "bad_action_no_fd": (b"CHECK-PEER peer.*\n", 0, "bad-action"),
    "bad_action_20_fds": (b"CHECK-PEER a,b\n", 20, "bad-action"),
    "missing_arg": (b"CHECK-PEER\n", 1, "bad-request"),
    "empty_arg": (b"CHECK-PEER \n", 1, "bad-request"),
    "two_args": (b"CHECK-PEER a b\n", 1, "bad-request"),
    "trailing_space": (b"CHECK-PEER a \n", 1, "bad-request"),
    "cr": (b"CHECK-PEER peer.any\r\n", 1, "bad-request"),
    "byte_0xff": (b"CHECK-PEER peer.\xff\n", 1, "bad-request"),
    "lower_case": (b"check-peer peer.any\n", 1, "unknown-command"),
    "verb_prefix": (b"CHECK-PEERS peer.any\n", 1, "unknown-command"),
    "too_long": (b"CHECK-PEER " + b"a" * 2000, 1, "line-too-long"),
}


# ---------------------------------------------------------------------------
# The tests

class BrokerTests:
    """Shared by the standalone and the socket-activated run: one daemon per
    class; every test leaves the daemon's fd count at the class baseline."""

    activate = False

    @classmethod
    def setUpClass(cls):
        cls.d = cls.enterClassContext(cgtest.Daemon(POLICY, activate=cls.activate, timeout=30))
        cls.service = Service()
        cls.addClassCleanup(cls.service.close)  # before the daemon stops
        # Warm up every path once (decision, broker decision, ERR), so
        # that anything the daemon opens lazily is open before the
        # baseline is taken.
        keep, give = pair()
        with keep, give:
            with Conn(cls.d.socket) as c:
                c.ask("PING")
                c.ask("CHECK peer.any")
                c.check_peer("peer.any", give)
            with Conn(cls.d.socket) as c:
                c.send(b"ping\n")
                c.read_to_eof()
        cls.baseline = wait_stable_count(cls.d.pid)

    def setUp(self):
        self.assertTrue(self.d.alive(), "daemon died:\n" + self.d.stderr())
        self.sock = self.d.socket
        self.pid = self.d.pid

    # -- helpers -------------------------------------------------------------
    def conn(self, timeout=5.0):
        return Conn(self.sock, timeout)

    def count(self):
        return fd_count(self.pid)

    def assert_fds_at(self, want, what, timeout=5.0, settled=0.5):
        """Wait until the daemon holds exactly @want fds (its connections
        close a moment after ours); fail with its fd table otherwise, as
        soon as the count has stayed wrong for @settled seconds."""
        deadline = time.monotonic() + timeout
        n = self.count()
        since = time.monotonic()
        while n != want and time.monotonic() < deadline and time.monotonic() - since < settled:
            time.sleep(0.005)
            m = self.count()
            if m != n:
                n, since = m, time.monotonic()
        if n != want:
            self.fail(f"{what}: the daemon holds {n} fds, expected {want}:\n{fd_listing(self.pid)}")
        return n

    def assert_baseline(self, what="after the test"):
        return self.assert_fds_at(self.baseline, what)

    def note(self, text):
        sys.stdout.write(f"# {type(self).__name__}.{self._testMethodName}: {text}\n")
        sys.stdout.flush()

    def assert_serving(self):
        """A fresh client still gets correct answers, broker ones included."""
        self.assertTrue(self.d.alive(), "daemon died:\n" + self.d.stderr())
        keep, give = pair()
        with keep, give, self.conn() as c:
            self.assertEqual(c.ask("PING"), "PONG")
            self.assertEqual(c.check_peer("peer.any", give), "ALLOW")
            self.assertEqual(c.check_peer("peer.none", give), "DENY")
            self.assertEqual(c.check_peer("peer.rootonly", give), SELF["peer.rootonly"])
            self.assertEqual(c.ask("CHECK peer.notroot"), SELF["peer.notroot"])

    def assert_err(self, messages, reason, prefix=b""):
        """Send each (bytes, fds) with one sendmsg; expect @prefix, ERR
        @reason and the daemon closing the connection."""
        with self.conn() as c:
            for data, fds in messages:
                try:
                    c.send_fds(data, fds)
                except (BrokenPipeError, ConnectionResetError):
                    break
            got = c.read_to_eof()
        self.assertEqual(got, prefix + f"ERR {reason}\n".encode())

    # -- guard ---------------------------------------------------------------
    def test_00_really_socket_activated(self):
        """Under activation the pid we count fds of is credgated itself."""
        self.assertEqual(os.path.realpath(f"/proc/{self.pid}/exe"), os.path.realpath(cgtest.credgated()))
        with open(f"/proc/{self.pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
        self.assertEqual(b"LISTEN_FDS=1" in env, self.activate)
        self.note(f"daemon fd baseline {self.baseline}")

    # -- identities (root) ---------------------------------------------------
    def check_identity(self, name):
        uid, gid, groups = IDENTITIES[name]
        want = expected(name)
        with PeerChild(self.service, uid, gid, groups) as peer, self.conn() as c:
            got = {a: c.check_peer(a, peer.conn) for a in ALLOWED}
            # The connection itself is still judged as the service (root).
            self.assertRegex(c.ask("WHOAMI"), r"^CREDS pid=%d uid=0 gid=0 " % os.getpid())
            own = {a: c.ask("CHECK " + a) for a in SELF}
            # The fd the service passed is still open and usable.
            self.assertEqual(peer.echo(b"still here"), b"echo still here\n")
            again = c.check_peer("peer.u1000only", peer.conn)
        wrong = {a: f"got {got[a]}, want {want[a]}" for a in want if got[a] != want[a]}
        self.assertEqual(wrong, {}, f"CHECK-PEER decisions for {name} (uid={uid} gid={gid} groups={groups})")
        self.assertEqual(own, SELF, "the service's own CHECK answers")
        self.assertEqual(again, want["peer.u1000only"])
        self.assert_baseline()

    @cgtest.needs_root
    def test_identity_u1000_not_root(self):
        """The brief's core case, spelled out: uid 1000 / gid 1000 / groups
        {100} behind the service's accepted fd; the answers are uid 1000's
        and differ from root's in both directions, and for group 100."""
        with PeerChild(self.service, 1000, 1000, [100]) as u, \
                PeerChild(self.service, 0, 0, [0]) as r, self.conn() as c:
            self.assertEqual(c.check_peer("peer.u1000only", u.conn), "ALLOW")
            self.assertEqual(c.check_peer("peer.u1000only", r.conn), "DENY")
            self.assertEqual(c.ask("CHECK peer.u1000only"), "DENY")
            self.assertEqual(c.check_peer("peer.rootonly", u.conn), "DENY")
            self.assertEqual(c.check_peer("peer.rootonly", r.conn), "ALLOW")
            self.assertEqual(c.ask("CHECK peer.rootonly"), "ALLOW")
            self.assertEqual(c.check_peer("peer.group100", u.conn), "ALLOW")
            self.assertEqual(c.check_peer("peer.group100", r.conn), "DENY")
            self.assertEqual(c.check_peer("peer.gid1000", u.conn), "ALLOW")
            self.assertEqual(c.check_peer("peer.order", u.conn), "DENY")
            self.assertEqual(c.check_peer("peer.order", r.conn), "ALLOW")
            self.assertEqual(u.echo(b"after"), b"echo after\n")
            self.assertEqual(r.echo(b"after"), b"echo after\n")
        self.assert_baseline()

    @cgtest.needs_root
    def test_identity_matrix_u1000(self):
        self.check_identity("u1000")

    @cgtest.needs_root
    def test_identity_matrix_root(self):
        self.check_identity("root")

    @cgtest.needs_root
    def test_identity_matrix_bin(self):
        self.check_identity("bin")

    @cgtest.needs_root
    def test_identity_matrix_nobody(self):
        self.check_identity("nobody")

    @cgtest.needs_root
    def test_identity_matrix_max(self):
        self.check_identity("max")

    @cgtest.needs_root
    def test_identity_matrix_many_groups(self):
        self.check_identity("many")

    @cgtest.needs_root
    def test_unprivileged_service(self):
        """A uid-1000 process connected to a root service holds a socket whose
        peer is root, but is no broker: the daemon refuses its CHECK-PEER
        (the kernel refuses the fd with EPERM where it has SO_PASSRIGHTS),
        and its own CHECKs stay uid 1000's."""
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = os.path.join(self.service.dir, "root.sock")
        self.addCleanup(os.unlink, path)
        with lst:
            lst.bind(path)
            os.chmod(path, 0o666)
            lst.listen(1)
            daemon = self.sock

            def child():
                svc = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                svc.connect(path)
                with svc:
                    with Conn(daemon) as c:
                        refused = refused_check_peer(c, "peer.rootonly", svc)
                    with Conn(daemon) as c:
                        acts = ("peer.rootonly", "peer.u1000only", "peer.notroot", "peer.any")
                        return refused, {a: c.ask("CHECK " + a) for a in acts}, c.ask("WHOAMI")

            refused, own, who = cgtest.as_identity(1000, 1000, [100], child)
        self.assertIn(refused, ("ERR not-a-broker", "EPERM"))
        self.assertEqual(own, {"peer.rootonly": "DENY", "peer.u1000only": "ALLOW", "peer.notroot": "ALLOW",
                               "peer.any": "ALLOW"})
        self.assertRegex(who, r"^CREDS pid=\d+ uid=1000 gid=1000 groups=100$")
        self.assert_baseline()

    # -- the passed fd -------------------------------------------------------
    def test_passed_fd_stays_usable_and_daemon_drops_its_copy(self):
        keep, give = pair()
        with keep, give, self.conn() as c:
            for action in ("peer.any", "peer.none", "peer.rootonly"):
                self.assertEqual(c.check_peer(action, give), SELF[action])
            assert_usable_then_released(self, keep, give)
            self.assertEqual(c.ask("PING"), "PONG")
        self.assert_baseline()

    def test_check_peer_over_its_own_connection(self):
        """The connection to the daemon is itself a connected Unix stream
        socket: passing it asks about its peer, the daemon's side (our uid)."""
        with self.conn() as c:
            self.assertEqual(c.check_peer("peer.rootonly", c.sock), SELF["peer.rootonly"])
            self.assertEqual(c.check_peer("peer.notroot", c.sock), SELF["peer.notroot"])
            self.assertEqual(c.ask("PING"), "PONG")
        self.assert_baseline()

    def test_peer_gone_after_connect(self):
        """The kernel keeps the credentials of a peer that has closed: the
        socket is still a connected one, and the answer is the peer's."""
        keep, give = pair()
        keep.close()
        with give, self.conn() as c:
            self.assertEqual(c.check_peer("peer.rootonly", give), SELF["peer.rootonly"])
        self.assert_baseline()

    def test_half_close_after_check_peer(self):
        """A client that sends its CHECK-PEER and shuts down its writing side
        still gets the answer, then EOF."""
        keep, give = pair()
        with keep, give, self.conn() as c:
            c.send(b"PING\n")
            c.send_fds(b"CHECK-PEER peer.none\n", [give])
            c.sock.shutdown(socket.SHUT_WR)
            self.assertEqual(c.read_to_eof(), b"PONG\nDENY\n")
            assert_usable_then_released(self, keep, give)
        self.assert_baseline()

    def test_fd_the_daemon_cannot_receive(self):
        """At its fd limit the daemon cannot take in a passed fd: the kernel
        drops it and reports MSG_CTRUNC. The daemon must notice: a PING that
        came with an fd is still a line with an fd (ERR bad-peer-fd, not
        PONG), and a CHECK-PEER whose fd was lost gets ERR bad-peer-fd."""
        before = self.assert_baseline("before the test")
        numbers = sorted(int(n) for n in os.listdir(f"/proc/{self.pid}/fd"))
        limit = before + 1  # one free slot: the connection's
        if numbers[-1] >= limit:
            self.skipTest(f"the daemon's fd numbers have more than one hole: {numbers}")
        soft, hard = resource.prlimit(self.pid, resource.RLIMIT_NOFILE)
        keep, give = pair()
        with keep, give:
            resource.prlimit(self.pid, resource.RLIMIT_NOFILE, (limit, hard))
            try:
                for data in (b"PING\n", b"CHECK-PEER peer.any\n", b"WHOAMI\n"):
                    with self.subTest(line=data):
                        with self.conn() as c:
                            c.send_fds(data, [give])
                            self.assertEqual(c.read_to_eof(), b"ERR bad-peer-fd\n")
                        self.assert_baseline(f"after {data!r} at the fd limit")
                # Without fds the daemon serves normally at its limit.
                with self.conn() as c:
                    self.assertEqual(c.ask("CHECK peer.any"), "ALLOW")
            finally:
                resource.prlimit(self.pid, resource.RLIMIT_NOFILE, (soft, hard))
            assert_usable_then_released(self, keep, give)
        self.assert_serving()
        self.assert_baseline()

    def test_backpressure_with_fds(self):
        """More replies owed than the daemon buffers (64 KiB) while
        CHECK-PEER lines with fds sit among the pipelined PINGs: the lines
        the daemon handles later, from its backlog, still get their own fd
        and nothing else."""
        rounds, pings = 60, 3000  # 60 x 15 KB of PINGs: 900 KB of PONGs
        acts = ["peer.any", "peer.none"]
        want = b"".join(b"PONG\n" * pings + (b"ALLOW\n" if i % 2 == 0 else b"DENY\n") for i in range(rounds))
        ps = [pair() for _ in range(3)]
        result = {}
        try:
            with self.conn(timeout=20) as c:
                def reader():
                    time.sleep(0.3)  # let the daemon stall on its full output first
                    result["reading"] = time.monotonic()
                    result["got"], result["how"] = cgtest.recv_all(c.sock, 20, lines=rounds * (pings + 1))

                t = threading.Thread(target=reader)
                t.start()
                try:
                    for i in range(rounds):
                        c.sock.sendall(b"PING\n" * pings)
                        c.send_fds(f"CHECK-PEER {acts[i % 2]}\n".encode(), [ps[i % 3][1]])
                    sent = time.monotonic()
                finally:
                    t.join(30)
                # Sending could only finish once we read: the daemon did stall.
                self.assertGreater(sent, result.get("reading", 0), "no back-pressure happened")
                got = result.get("got", b"")
                self.assertEqual(len(got), len(want), f"reader: {result.get('how')}")
                self.assertTrue(got == want, "replies differ from the expected PONGs and decisions")
                self.assertEqual(c.ask("PING"), "PONG")
            assert_all_released(self, ps)
        finally:
            for keep, give in ps:
                keep.close()
                give.close()
        self.assert_baseline()

    # -- closing a passed fd must not stall the daemon -----------------------
    LINGER = 2

    def assert_close_does_not_block(self, data, n_pairs):
        """Send @data with @n_pairs socketpair ends and, last, a TCP socket
        whose close() lingers LINGER s, and drop our copy, so that the
        daemon's close is the last one. (The daemon is stopped meanwhile:
        else it may have closed its copy before we close ours, and the
        lingering would be ours.) Another client, connected before, must
        still be answered at once: the one event loop serves everybody."""
        ps = _pairs(self, n_pairs)
        with self.conn() as other:
            self.assertEqual(other.ask("PING"), "PONG")
            cli = lingering_tcp(self, self.LINGER)
            with self.conn(timeout=self.LINGER + 5) as c:
                self.assertEqual(c.ask("PING"), "PONG")  # accepted
                os.kill(self.pid, signal.SIGSTOP)
                try:
                    cgtest.wait_until(lambda: proc_state(self.pid) == "T", what="the daemon to stop")
                    c.send_fds(data, [g for _, g in ps] + [cli])
                    t0 = time.monotonic()
                    cli.close()  # in flight: not the last reference
                    self.assertLess(time.monotonic() - t0, 0.5, "test bug: our close() lingered")
                finally:
                    os.kill(self.pid, signal.SIGCONT)
                time.sleep(0.2)  # the daemon is handling it now
                t0 = time.monotonic()
                other.send(b"PING\n")
                reply = other.readline(timeout=self.LINGER + 5)
                took = time.monotonic() - t0
                self.assertEqual(c.read_to_eof(), b"ERR bad-peer-fd\n")
            self.assertEqual(reply, b"PONG\n")
        self.note(f"another client's PING took {took:.3f} s")
        self.assertLess(took, 0.5, f"another client waited {took:.1f} s for PONG: the daemon's only thread "
                                   f"blocked in close() of the fd a client passed (SO_LINGER)")
        self.assert_baseline()

    def test_dos_lingering_tcp_fd_on_check_peer(self):
        self.assert_close_does_not_block(b"CHECK-PEER peer.any\n", 0)

    def test_dos_lingering_tcp_fd_on_ping(self):
        self.assert_close_does_not_block(b"PING\n", 0)

    def test_dos_lingering_tcp_fd_dropped_by_the_kernel(self):
        """The lingering socket is the 20th fd: it does not fit the daemon's
        16-fd control buffer, so the kernel drops it inside recvmsg(), in the
        daemon's context."""
        self.assert_close_does_not_block(b"CHECK-PEER peer.any\n", 19)

    # -- pipelining and attribution ------------------------------------------
    def test_pipeline_ping_check_peer_ping(self):
        keep, give = pair()
        with keep, give, self.conn() as c:
            c.send(b"PING\n")
            c.send_fds(b"CHECK-PEER peer.any\n", [give])
            c.send(b"PING\n")
            c.send_fds(b"CHECK-PEER peer.none\n", [give])
            c.send(b"PING\n")
            got = b"".join(c.readline() for _ in range(5))
            self.assertEqual(got, b"PONG\nALLOW\nPONG\nDENY\nPONG\n")
            time.sleep(0.05)
            self.assertTrue(c.nothing_pending())
            assert_usable_then_released(self, keep, give)
        self.assert_baseline()

    def test_pipeline_ping_and_check_peer_in_one_sendmsg(self):
        """"PING\\nCHECK-PEER x\\n" + fd in one sendmsg: the fd belongs to the
        line holding the read's last byte, the CHECK-PEER."""
        keep, give = pair()
        with keep, give, self.conn() as c:
            c.send_fds(b"PING\nCHECK-PEER peer.any\n", [give])
            c.send_fds(b"PING\nPING\nCHECK-PEER peer.none\n", [give])
            got = b"".join(c.readline() for _ in range(5))
            self.assertEqual(got, b"PONG\nALLOW\nPONG\nPONG\nDENY\n")
            assert_usable_then_released(self, keep, give)
        self.assert_baseline()

    def test_pipeline_50_before_reading(self):
        ps = [pair() for _ in range(5)]
        acts = ["peer.any", "peer.none", "peer.rootonly", "peer.notroot"]
        want = []
        try:
            with self.conn() as c:
                for i in range(50):
                    a = acts[i % 4]
                    c.send_fds(f"CHECK-PEER {a}\n".encode(), [ps[i % 5][1]])
                    want.append(SELF[a])
                got = [c.readline().decode().rstrip("\n") for _ in range(50)]
                self.assertEqual(got, want)
                time.sleep(0.05)
                self.assertTrue(c.nothing_pending(), "more replies than requests")
                self.assertEqual(c.ask("PING"), "PONG")
            assert_all_released(self, ps)
        finally:
            for keep, give in ps:
                keep.close()
                give.close()
        self.assert_baseline()

    @cgtest.needs_root
    def test_pipeline_50_mixed_identities(self):
        """50 CHECK-PEERs alternating between a uid-1000 peer and a root peer,
        and between actions answered differently for them, all sent before
        any reply is read: each answer belongs to its own fd."""
        acts = ["peer.u1000only", "peer.rootonly", "peer.group100", "peer.notroot", "peer.order"]
        with PeerChild(self.service, 1000, 1000, [100]) as u, \
                PeerChild(self.service, 0, 0, [0]) as r, self.conn() as c:
            peers = [("u1000", u), ("root", r)]
            want = []
            for i in range(50):
                name, p = peers[i % 2]
                a = acts[(i // 2) % len(acts)]
                c.send_fds(f"CHECK-PEER {a}\n".encode(), [p.conn])
                want.append(expected(name)[a])
            got = [c.readline().decode().rstrip("\n") for _ in range(50)]
            self.assertEqual(got, want)
            self.assertIn("ALLOW", want)
            self.assertIn("DENY", want)
        self.assert_baseline()

    def split_case(self, parts, fd_part, pause):
        """Send a CHECK-PEER line in @parts, the fd on part @fd_part."""
        keep, give = pair()
        with keep, give, self.conn() as c:
            for i, part in enumerate(parts):
                c.send_fds(part, [give] if i == fd_part else [])
                if pause and i < len(parts) - 1:
                    time.sleep(pause)
                    self.assertTrue(c.nothing_pending(), "reply before the line was complete")
            got = c.readline()
            self.assertEqual(c.ask("PING"), "PONG")
            assert_usable_then_released(self, keep, give)
        self.assert_baseline()
        return got

    def test_split_fd_on_first_part(self):
        """The daemon reads the first part on its own (we pause): its read
        ends mid-line, so the fd attaches to that line."""
        self.assertEqual(self.split_case([b"CHECK-PE", b"ER peer.any\n"], 0, 0.05), b"ALLOW\n")
        self.assertEqual(self.split_case([b"CHECK-PE", b"ER peer.none\n"], 0, 0.05), b"DENY\n")

    def test_split_fd_on_first_part_back_to_back(self):
        """No pause: both parts may be queued before the daemon reads. The
        kernel ends a read after the data an fd came with, so the read
        still ends mid-line: deterministic."""
        for _ in range(20):
            self.assertEqual(self.split_case([b"CHECK-PEER peer.a", b"ny\n"], 0, 0), b"ALLOW\n")

    def test_split_fd_on_middle_and_last_part(self):
        parts = [b"CHECK", b"-PEER peer", b".any\n"]
        self.assertEqual(self.split_case(parts, 1, 0.02), b"ALLOW\n")
        self.assertEqual(self.split_case(parts, 2, 0.02), b"ALLOW\n")

    def test_split_fd_on_partial_line_after_pipelined_ping(self):
        keep, give = pair()
        with keep, give, self.conn() as c:
            c.send_fds(b"PING\nCHECK-PE", [give])
            self.assertEqual(c.readline(), b"PONG\n")
            c.send(b"ER peer.none\nPING\n")
            self.assertEqual(c.readline(), b"DENY\n")
            self.assertEqual(c.readline(), b"PONG\n")
            assert_usable_then_released(self, keep, give)
        self.assert_baseline()

    # -- ERR cases -----------------------------------------------------------
    def run_bad_peer_fd(self, builder):
        self.assert_baseline("before the test")
        self.pipe_rw = None
        messages, prefix, released = builder(self)
        self.assert_err(messages, "bad-peer-fd", prefix)
        assert_all_released(self, released)
        if self.pipe_rw:
            r, w = self.pipe_rw
            os.write(w, b"z")
            self.assertEqual(os.read(r, 1), b"z")
            os.close(w)
            self.pipe_rw = None
            ready, _, _ = select.select([r], [], [], 2)
            self.assertTrue(ready and os.read(r, 1) == b"", "the daemon kept its copy of the pipe's write end")
        self.assert_serving()
        self.assert_baseline()

    def run_grammar_first(self, data, n_fds, reason):
        ps = [pair() for _ in range(n_fds)]
        try:
            self.assert_err([(data, [g for _, g in ps])], reason)
            assert_all_released(self, ps)
        finally:
            for keep, give in ps:
                keep.close()
                give.close()
        self.assert_serving()
        self.assert_baseline()

    def test_pending_fd_then_line_turns_bad(self):
        """An fd waiting on an unfinished line is dropped when the line ends
        up as some other ERR."""
        keep, give = pair()
        with keep, give, self.conn() as c:
            c.send_fds(b"CHECK-PEER peer", [give])
            time.sleep(0.05)
            self.assertTrue(c.nothing_pending())
            cgtest.send_ignoring_close(c.sock, b".\x01\n")
            self.assertEqual(c.read_to_eof(), b"ERR bad-request\n")
            assert_usable_then_released(self, keep, give)
        self.assert_serving()
        self.assert_baseline()

    # -- fd leaks ------------------------------------------------------------
    def test_leak_a_1000_check_peer(self):
        """1,000 successful CHECK-PEER queries over 10 connections, 100
        pipelined at a time; fds of two peers, alternating."""
        before = self.assert_baseline("before the test")
        ps = [pair() for _ in range(2)]
        acts = ["peer.any", "peer.none", "peer.rootonly", "peer.notroot"]
        try:
            for conn_no in range(10):
                with self.conn() as c:
                    want = []
                    for i in range(100):
                        a = acts[(conn_no + i) % 4]
                        c.send_fds(f"CHECK-PEER {a}\n".encode(), [ps[i % 2][1]])
                        want.append(SELF[a])
                    got = [c.readline().decode().rstrip("\n") for _ in range(100)]
                    self.assertEqual(got, want)
            after = self.assert_fds_at(before, "after 1,000 CHECK-PEER")
            assert_all_released(self, ps)
        finally:
            for keep, give in ps:
                keep.close()
                give.close()
        self.note(f"daemon fds before {before}, after 1,000 CHECK-PEER {after}")
        self.assert_baseline()

    @cgtest.needs_root
    def test_leak_a_1000_check_peer_other_identity(self):
        """1,000 broker queries about a uid-1000 peer, correct every time."""
        before = self.assert_baseline("before the test")
        with PeerChild(self.service, 1000, 1000, [100]) as u:
            for _ in range(10):
                with self.conn() as c:
                    for i in range(100):
                        c.send_fds(b"CHECK-PEER peer.u1000only\n" if i % 2 else b"CHECK-PEER peer.rootonly\n",
                                   [u.conn])
                    got = b"".join(c.readline() for _ in range(100))
                    self.assertEqual(got, b"DENY\nALLOW\n" * 50)
            self.assertEqual(u.echo(b"ok"), b"echo ok\n")
        after = self.assert_fds_at(before, "after 1,000 CHECK-PEER about uid 1000")
        self.note(f"daemon fds before {before}, after {after}")

    def test_leak_b_1000_fds_on_ping(self):
        """1,000 fds, each on a plain PING line over its own connection:
        each gets ERR bad-peer-fd, none stays in the daemon."""
        before = self.assert_baseline("before the test")
        keep, give = pair()
        with keep, give:
            for i in range(1000):
                with self.conn() as c:
                    c.send_fds(b"PING\n", [give])
                    got = c.read_to_eof()
                if got != b"ERR bad-peer-fd\n":
                    self.fail(f"connection {i}: got {got!r}")
            after = self.assert_fds_at(before, "after 1,000 fds on PING lines")
            assert_usable_then_released(self, keep, give)
        self.note(f"daemon fds before {before}, after 1,000 fds on PING {after}")
        self.assert_serving()
        self.assert_baseline()

    def test_leak_c_20_fds_50_times(self):
        before = self.assert_baseline("before the test")
        ps = [pair() for _ in range(20)]
        try:
            for i in range(50):
                with self.conn() as c:
                    c.send_fds(b"CHECK-PEER peer.any\n", [g for _, g in ps])
                    got = c.read_to_eof()
                if got != b"ERR bad-peer-fd\n":
                    self.fail(f"round {i}: got {got!r}")
            after = self.assert_fds_at(before, "after 50 x 20 fds")
            assert_all_released(self, ps, "one of the 20 fds")
        finally:
            for keep, give in ps:
                keep.close()
                give.close()
        self.note(f"daemon fds before {before}, after 50 x 20 fds {after}")
        self.assert_serving()
        self.assert_baseline()

    def test_leak_d_pending_fd_then_disconnect(self):
        """A CHECK-PEER line that never completes: the daemon holds its fd
        while the connection lives (the count shows it, which also proves the
        count would see a leak), and drops it when the client goes away."""
        before = self.assert_baseline("before the test")
        n = 10
        ps = [pair() for _ in range(n)]
        conns = []
        try:
            for i in range(n):
                c = self.conn()
                conns.append(c)
                c.send_fds(b"CHECK-PEER peer.an", [ps[i][1]])
            # each connection holds its socket and the pending fd
            held = self.assert_fds_at(before + 2 * n, "while lines are pending")
            for c in conns:
                self.assertTrue(c.nothing_pending())
            for keep, give in ps:
                give.close()  # the daemon's copy is now the only one
            time.sleep(0.05)
            for keep, _ in ps:
                keep.setblocking(False)
                with self.assertRaises(BlockingIOError, msg="the pending fd was closed too early"):
                    keep.recv(1)
            for c in conns:
                c.close()
            after = self.assert_fds_at(before, "after the clients disconnected")
            assert_all_released(self, [(keep, None) for keep, _ in ps], "pending fd")
        finally:
            for c in conns:
                c.close()
            for keep, give in ps:
                keep.close()
                give.close()
        self.note(f"daemon fds before {before}, with {n} pending {held}, after disconnect {after}")
        self.assert_baseline()

    def test_leak_e_err_cases_repeated(self):
        """Every bad-peer-fd case 20 times over, then the count."""
        before = self.assert_baseline("before the test")
        for _ in range(20):
            for name, builder in BAD_PEER_FD.items():
                if name == "tcp6_connected":
                    continue
                self.pipe_rw = None
                messages, prefix, _ = builder(self)
                with self.conn() as c:
                    for data, fds in messages:
                        try:
                            c.send_fds(data, fds)
                        except (BrokenPipeError, ConnectionResetError):
                            break
                    got = c.read_to_eof()
                self.assertEqual(got, prefix + b"ERR bad-peer-fd\n", name)
                self.doCleanups()
        after = self.assert_fds_at(before, "after the ERR cases")
        self.note(f"daemon fds before {before}, after {20 * (len(BAD_PEER_FD) - 1)} ERR cases {after}")


def _make_bad_peer_fd(builder):
    def test(self):
        self.run_bad_peer_fd(builder)
    return test


def _make_grammar_first(data, n, reason):
    def test(self):
        self.run_grammar_first(data, n, reason)
    return test


for _n, _b in BAD_PEER_FD.items():
    setattr(BrokerTests, f"test_bad_peer_fd_{_n}", _make_bad_peer_fd(_b))
for _n, (_data, _k, _reason) in GRAMMAR_FIRST.items():
    setattr(BrokerTests, f"test_grammar_first_{_n}", _make_grammar_first(_data, _k, _reason))


class TestStandalone(BrokerTests, unittest.TestCase):
    activate = False


class TestSocketActivated(BrokerTests, unittest.TestCase):
    activate = True


class TimeoutTests:
    """A pending fd is dropped when the connection times out."""

    activate = False

    def test_pending_fd_dropped_on_timeout(self):
        with cgtest.Daemon(POLICY, activate=self.activate, timeout=1) as d:
            before = wait_stable_count(d.pid)
            keep, give = pair()
            with keep, give, Conn(d.socket) as c:
                c.send_fds(b"CHECK-PEER peer.any", [give])
                deadline = time.monotonic() + 3
                while fd_count(d.pid) != before + 2 and time.monotonic() < deadline:
                    time.sleep(0.005)
                held = fd_count(d.pid)
                self.assertEqual(held, before + 2, "connection + pending fd")
                give.close()
                self.assertEqual(c.read_to_eof(timeout=5), b"ERR timeout\n")
                assert_released(self, keep, "pending fd after ERR timeout")
            deadline = time.monotonic() + 5
            while fd_count(d.pid) != before and time.monotonic() < deadline:
                time.sleep(0.005)
            self.assertEqual(fd_count(d.pid), before, fd_listing(d.pid))
        sys.stdout.write(f"# {type(self).__name__}: fds before {before}, pending {held}, "
                         f"after timeout {before}\n")


class TestTimeoutStandalone(TimeoutTests, unittest.TestCase):
    activate = False


class TestTimeoutSocketActivated(TimeoutTests, unittest.TestCase):
    activate = True


# ---------------------------------------------------------------------------
# Who may pass descriptors: the brokers setting (issue 10)

NOBODY_BROKERS = """\
default = "deny";
rules = ( { action = "peer.any"; effect = "allow"; anyone = true; } );
settings = { brokers = { }; };
"""

HAS_PASSRIGHTS = True
try:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as _s:
        _s.setsockopt(socket.SOL_SOCKET, 83, 0)  # SO_PASSRIGHTS, Linux 6.16
except OSError:
    HAS_PASSRIGHTS = False


class NonBrokerTests:
    """A daemon whose policy names no broker at all, so this test process is
    a client that may not pass descriptors. `fallback` runs the daemon as on
    a kernel without SO_PASSRIGHTS (Debian 12's): it must peek at queued
    messages and never take a descriptor in. Without fallback, on a kernel
    with SO_PASSRIGHTS, the kernel refuses the descriptor (EPERM)."""

    fallback = False

    @classmethod
    def setUpClass(cls):
        if not cls.fallback and not HAS_PASSRIGHTS:
            raise unittest.SkipTest("this kernel has no SO_PASSRIGHTS (Linux 6.16); the fallback class covers it")
        env = dict(os.environ)
        if cls.fallback:
            env["CREDGATED_NO_PASSRIGHTS"] = "1"
        cls.d = cls.enterClassContext(cgtest.Daemon(NOBODY_BROKERS, timeout=30, env=env))
        with Conn(cls.d.socket) as c:
            c.ask("PING")
            c.ask("CHECK peer.any")
        with Conn(cls.d.socket) as c:
            c.send(b"CHECK-PEER peer.any\n")
            c.read_to_eof()
        cls.baseline = wait_stable_count(cls.d.pid)

    def assert_baseline(self):
        deadline = time.monotonic() + 5
        while fd_count(self.d.pid) != self.baseline and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(fd_count(self.d.pid), self.baseline, fd_listing(self.d.pid))

    def send_or_eperm(self, c, data, fds):
        try:
            c.send_fds(data, fds)
            return True
        except PermissionError:
            self.assertFalse(self.fallback, "EPERM although the daemon was told not to use SO_PASSRIGHTS")
            return False

    def test_check_peer_refused(self):
        keep, give = pair()
        with keep, give, Conn(self.d.socket) as c:
            self.assertEqual(c.ask("PING"), "PONG")  # accepted: SO_PASSRIGHTS is set by now
            got = refused_check_peer(c, "peer.any", give)
            self.assertEqual(got, "ERR not-a-broker" if self.fallback else "EPERM")
            assert_usable_then_released(self, keep, give)
        self.assert_baseline()

    def test_check_peer_without_fd_refused(self):
        with Conn(self.d.socket) as c:
            c.send(b"PING\nCHECK-PEER peer.any\nPING\n")
            self.assertEqual(c.read_to_eof(), b"PONG\nERR not-a-broker\n")

    def test_grammar_first(self):
        with Conn(self.d.socket) as c:
            c.send(b"CHECK-PEER peer.*\n")
            self.assertEqual(c.read_to_eof(), b"ERR bad-action\n")

    def test_fd_on_ping_lines_before_answered(self):
        """The lines before the message with the descriptor are answered,
        that line gets ERR, nothing after it is read."""
        keep, give = pair()
        with keep, give, Conn(self.d.socket) as c:
            c.send(b"PING\nCHECK peer.any\n")
            if self.send_or_eperm(c, b"PING\n", [give]):
                try:
                    c.send(b"PING\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the daemon may have closed already
                self.assertEqual(c.read_to_eof(), b"PONG\nALLOW\nERR bad-peer-fd\n")
            else:
                c.send(b"PING\n")
                self.assertEqual(b"".join(c.readline() for _ in range(3)), b"PONG\nALLOW\nPONG\n")
            assert_usable_then_released(self, keep, give)
        self.assert_baseline()

    def test_fd_on_partial_line(self):
        keep, give = pair()
        with keep, give, Conn(self.d.socket) as c:
            if self.send_or_eperm(c, b"PING\nCHECK-PE", [give]):
                try:
                    c.send(b"ER peer.any\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the daemon may have closed already
                self.assertEqual(c.read_to_eof(), b"PONG\nERR bad-peer-fd\n")
            assert_usable_then_released(self, keep, give)
        self.assert_baseline()

    def test_fd_sent_before_accept(self):
        """Sent while the daemon is stopped, so before it accepted the
        connection (and set SO_PASSRIGHTS): the fd waits in the queue, and
        the daemon's peek must still keep it out."""
        keep, give = pair()
        with keep, give:
            os.kill(self.d.pid, signal.SIGSTOP)
            try:
                cgtest.wait_until(lambda: proc_state(self.d.pid) == "T", what="the daemon to stop")
                c = Conn(self.d.socket)
                c.send_fds(b"PING\nCHECK-PEER peer.any\n", [give])
            finally:
                os.kill(self.d.pid, signal.SIGCONT)
            with c:
                self.assertEqual(c.read_to_eof(), b"PONG\nERR not-a-broker\n")
            assert_usable_then_released(self, keep, give)
        self.assert_baseline()

    def test_many_fds_and_lingering_socket_do_not_stall(self):
        """20 descriptors and, last, a TCP socket whose release lingers 2 s,
        queued unread (the daemon is stopped while we send): the kernel
        releases them when the daemon closes the connection, on its closing
        thread, which interrupts the wait. Another client is served at once."""
        ps = _pairs(self, 19)
        with Conn(self.d.socket) as other:
            self.assertEqual(other.ask("PING"), "PONG")
            cli = lingering_tcp(self, 2)
            c = Conn(self.d.socket, timeout=10)
            with c:
                self.assertEqual(c.ask("PING"), "PONG")
                os.kill(self.d.pid, signal.SIGSTOP)
                try:
                    cgtest.wait_until(lambda: proc_state(self.d.pid) == "T", what="the daemon to stop")
                    sent = self.send_or_eperm(c, b"CHECK-PEER peer.any\n", [g for _, g in ps] + [cli])
                    cli.close()
                finally:
                    os.kill(self.d.pid, signal.SIGCONT)
                time.sleep(0.2)
                t0 = time.monotonic()
                self.assertEqual(other.ask("PING"), "PONG")
                took = time.monotonic() - t0
                if sent:
                    self.assertEqual(c.read_to_eof(), b"ERR not-a-broker\n")
            self.assertLess(took, 0.5, f"another client waited {took:.2f} s")
        assert_all_released(self, ps, timeout=3.0)
        self.assert_baseline()


class TestNonBrokerPassRights(NonBrokerTests, unittest.TestCase):
    fallback = False


class TestNonBrokerFallback(NonBrokerTests, unittest.TestCase):
    fallback = True


BROKER_POLICY = """\
default = "deny";
rules = (
  {{ action = "peer.u1000only"; effect = "allow"; uids = ["1000"]; }},
  {{ action = "peer.any"; effect = "allow"; anyone = true; }}
);
settings = {{ brokers = {brokers}; }};
"""


class TestBrokerSetting(unittest.TestCase):
    """The brokers setting names who may pass descriptors, by uid, user,
    group and gid, and reloads apply it to open connections."""

    def daemon(self, brokers, **kw):
        d = cgtest.Daemon(BROKER_POLICY.format(brokers=brokers), timeout=30, **kw)
        self.addCleanup(d.cleanup)
        d.start()
        return d

    def ask_as(self, d, uid, gid, groups):
        keep, give = pair()

        def child():
            with Conn(d.socket) as c:
                try:
                    c.send_fds(b"CHECK-PEER peer.u1000only\n", [give])
                except PermissionError:
                    return "EPERM"
                return c.readline().decode().rstrip("\n")

        with keep, give:
            return cgtest.as_identity(uid, gid, groups, child)

    @unittest.skipUnless(ROOT, "needs root to take other identities")
    def test_named_by_uid_and_group(self):
        d = self.daemon('{ uids = ["1000"]; groups = ["adm"]; }')
        # The fd's peer is this process (root): peer.u1000only is DENY for it.
        self.assertEqual(self.ask_as(d, 1000, 1000, []), "DENY")
        self.assertEqual(self.ask_as(d, 2, 2, [4]), "DENY")       # adm as a supplementary group
        self.assertEqual(self.ask_as(d, 3, 4, []), "DENY")        # adm as the primary group
        for ident in ((0, 0, [0]), (65534, 65534, []), (1001, 1001, [100])):
            self.assertIn(self.ask_as(d, *ident), ("ERR not-a-broker", "EPERM"), ident)
        d.stop()

    @unittest.skipUnless(ROOT, "needs root to take other identities")
    def test_anyone(self):
        d = self.daemon("{ anyone = true; }")
        self.assertEqual(self.ask_as(d, 65534, 65534, []), "DENY")
        self.assertIn("anyone = true lets every local user pass descriptors", d.stderr())
        d.stop()

    def test_reload_applies_to_open_connections(self):
        me = str(os.geteuid())
        d = self.daemon('{ uids = ["' + me + '"]; }')
        keep, give = pair()
        with keep, give, Conn(d.socket) as broker, Conn(d.socket) as later:
            self.assertEqual(broker.check_peer("peer.any", give), "ALLOW")
            d.write_policy(BROKER_POLICY.format(brokers="{ }"))
            n = d.stderr().count("reloaded:")
            d.kill(signal.SIGHUP)
            cgtest.wait_until(lambda: d.stderr().count("reloaded:") > n, what="the reload")
            self.assertIn(refused_check_peer(broker, "peer.any", give), ("ERR not-a-broker", "EPERM"))
            d.write_policy(BROKER_POLICY.format(brokers='{ uids = ["' + me + '"]; }'))
            n = d.stderr().count("reloaded:")
            d.kill(signal.SIGHUP)
            cgtest.wait_until(lambda: d.stderr().count("reloaded:") > n, what="the reload")
            # "later" was accepted while nobody was a broker.
            self.assertEqual(later.check_peer("peer.any", give), "ALLOW")
        d.stop()


if __name__ == "__main__":
    cgtest.main()
