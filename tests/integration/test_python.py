#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The Python module src/python/credgate.py.

Against a real credgated: decisions, reuse, pipelining, WHOAMI, the socket
path rules, broker queries (CHECK-PEER) and peer credentials, as this
process and, as root, as other identities in forked children that run the
module after dropping privileges (fork, no exec). Against fake servers
driven by a thread: every reply that is not exactly ALLOW/DENY/PONG/CREDS
raises CredgateError and never yields True.

The module is imported from $CREDGATE_PYTHONPATH (set by make check).
"""

import errno
import os
import shutil
import socket
import struct
import sys
import threading
import time
import unittest

import cgtest

_MODULE_DIR = os.environ.get("CREDGATE_PYTHONPATH") or os.path.join(cgtest.srcdir(), "src", "python")
sys.path.insert(0, _MODULE_DIR)
import credgate  # noqa: E402

if os.path.realpath(os.path.dirname(credgate.__file__)) != os.path.realpath(_MODULE_DIR):
    cgtest._bail(f"imported credgate from {credgate.__file__}, not from {_MODULE_DIR}")

ME = os.getuid()
ROOT = ME == 0

# Root and uid 1000 / group 100 get opposite answers for several actions.
# Only the uids in BROKERS may ask broker queries (CHECK-PEER).
POLICY = """\
default = "deny";
settings = { brokers = { uids = ["@ME@", "0", "1000", "4000000000"]; }; };
rules = (
  { action = "py.yes"; effect = "allow"; anyone = true; },
  { action = "py.no"; effect = "deny"; anyone = true; },
  { action = "py.me"; effect = "allow"; uids = ["@ME@"]; },
  { action = "py.root"; effect = "allow"; uids = ["0"]; },
  { action = "py.u1000"; effect = "allow"; uids = ["1000"]; },
  { action = "py.users"; effect = "allow"; gids = ["100"]; },
  { action = "py.notroot"; effect = "deny"; uids = ["0"]; },
  { action = "py.notroot"; effect = "allow"; anyone = true; },
  { action = "py.big"; effect = "allow"; uids = ["4000000000"]; },
  { action = "py.biggroup"; effect = "allow"; gids = ["4000000001"]; },
  { action = "py.many.*0"; effect = "allow"; anyone = true; },
  { action = "py.many.*2"; effect = "allow"; anyone = true; },
  { action = "py.many.*4"; effect = "allow"; anyone = true; },
  { action = "py.many.*6"; effect = "allow"; anyone = true; },
  { action = "py.many.*8"; effect = "allow"; anyone = true; }
);
""".replace("@ME@", str(ME))

BROKERS = {ME, 0, 1000, 4000000000}

ACTIONS = ["py.yes", "py.no", "py.me", "py.root", "py.u1000", "py.users", "py.notroot", "py.big",
           "py.biggroup", "py.unlisted", "py.many.1", "py.many.2"]


def expected(action, uid, gid, groups):
    """What POLICY decides for an identity."""
    ids = {gid, *groups}
    if action == "py.yes":
        return True
    if action == "py.me":
        return uid == ME
    if action == "py.root":
        return uid == 0
    if action == "py.u1000":
        return uid == 1000
    if action == "py.users":
        return 100 in ids
    if action == "py.notroot":
        return uid != 0
    if action == "py.big":
        return uid == 4000000000
    if action == "py.biggroup":
        return 4000000001 in ids
    if action.startswith("py.many."):
        return action[-1] in "02468"
    return False


def my_groups():
    return tuple(sorted(set(os.getgroups())))


def expected_mine(action):
    return expected(action, os.getuid(), os.getgid(), os.getgroups())


_SO_PASSRIGHTS = getattr(socket, "SO_PASSRIGHTS", 83)


def fd_count(pid="self"):
    return len(os.listdir(f"/proc/{pid}/fd"))


def ngroups_max():
    try:
        with open("/proc/sys/kernel/ngroups_max") as f:
            return int(f.read())
    except OSError:
        return 65536


# ---------------------------------------------------------------------------
# Helpers: a fake server, a client process of another identity


class FakeServer:
    """A listening Unix socket served by a thread: every accepted connection
    is handed to @handler(server, conn) in turn. Bytes the handler reads with
    read_line() are recorded in .received."""

    def __init__(self, handler, sndbuf=None):
        self.handler = handler
        self.sndbuf = sndbuf
        self.dir = cgtest.mkdtemp("cgpy-")
        self.path = os.path.join(self.dir, "fake.sock")
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(self.path)
        self.lsock.listen(16)
        self.lsock.settimeout(0.05)
        self.received = bytearray()
        self.connections = 0
        self.errors = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(10)
                if self.sndbuf:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
                try:
                    self.handler(self, conn)
                except (BrokenPipeError, ConnectionResetError, socket.timeout):
                    pass
                except BaseException as e:  # reported by close()
                    self.errors.append(repr(e))

    def read_line(self, conn):
        """One request line, or b"" at EOF."""
        data = bytearray()
        while not data.endswith(b"\n"):
            b = conn.recv(1)
            if not b:
                break
            data += b
        self.received += data
        return bytes(data)

    def wait_eof(self, conn, timeout=10):
        """Read (and record) until the client closes."""
        conn.settimeout(timeout)
        while True:
            b = conn.recv(65536)
            if not b:
                return
            self.received += b

    def close(self):
        self.stop.set()
        self.thread.join(15)
        self.lsock.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.thread.is_alive():
            raise AssertionError("fake server thread did not finish")
        if self.errors:
            raise AssertionError(f"fake server handler failed: {self.errors}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def reply_with(data, then="wait"):
    """A handler: read one request line, send @data, then wait for the
    client to close ("wait") or close at once ("close")."""
    def handler(server, conn):
        if not server.read_line(conn):
            return
        if data:
            conn.sendall(data)
        if then == "wait":
            server.wait_eof(conn)
    return handler


def lockstep(reply=b"ALLOW\n"):
    """A handler answering each line as it arrives, with blocking writes and
    no buffering of its own: a client that only writes deadlocks with it."""
    def handler(server, conn):
        f = conn.makefile("rb")
        while True:
            line = f.readline(100000)
            if not line:
                return
            conn.sendall(reply)
    return handler


class PeerProcess:
    """A forked child that drops to (uid, gid, groups) and connects to a
    service socket this process listens on; .accepted is the service's end.
    The child sends its pid, echoes one line, and waits for EOF."""

    def __init__(self, uid, gid, groups):
        self.ids = (uid, gid, list(groups))
        self.dir = cgtest.mkdtemp("cgsvc-")
        self.path = os.path.join(self.dir, "service.sock")
        self.result = None
        self.error = None
        self.accepted = None

    def _child(self):
        path = self.path
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect(path)
        s.sendall(f"{os.getpid()}\n".encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(100)
            if not chunk:
                break
            data += chunk
        if data:
            s.sendall(b"echo:" + data)
        while s.recv(100):
            pass
        return {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(), "groups": my_groups()}

    def _thread(self):
        try:
            self.result = cgtest.as_identity(*self.ids, self._child)
        except BaseException as e:
            self.error = e

    def __enter__(self):
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(self.path)
        os.chmod(self.path, 0o666)
        self.lsock.listen(4)
        self.lsock.settimeout(20)
        self.thread = threading.Thread(target=self._thread, daemon=True)
        self.thread.start()
        try:
            self.accepted, _ = self.lsock.accept()
        except socket.timeout:
            self.thread.join(30)
            raise AssertionError(f"the child never connected: {self.error!r}")
        self.accepted.settimeout(20)
        line = b""
        while not line.endswith(b"\n"):
            chunk = self.accepted.recv(100)
            if not chunk:
                raise AssertionError("the child closed early")
            line += chunk
        self.pid = int(line)
        return self

    def __exit__(self, *exc):
        if self.accepted is not None:
            self.accepted.close()
        self.lsock.close()
        self.thread.join(30)
        shutil.rmtree(self.dir, ignore_errors=True)
        if exc[0] is None:
            if self.thread.is_alive():
                raise AssertionError("the child did not finish")
            if self.error is not None:
                raise self.error


def identity_report(path):
    """Runs in a forked child after it dropped privileges (no exec): the
    module's view of this identity, through every entry point."""
    out = {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(), "groups": my_groups()}
    out["whoami"] = tuple(credgate.whoami(path))
    a, b = socket.socketpair()
    with a, b:
        out["peer_creds"] = tuple(credgate.peer_creds(a))
        out["peer_creds_fd"] = tuple(credgate.peer_creds(b.fileno()))
        out["oneshot"] = {x: credgate.check(x, path) for x in ACTIONS}
        with credgate.Client(path) as c:
            c.ping()
            out["whoami2"] = tuple(c.whoami())
            out["checks"] = {x: c.check(x) for x in ACTIONS}
            out["many"] = c.check_many(ACTIONS * 50)
            try:
                out["peer"] = {x: c.check_peer(a, x) for x in ACTIONS}
            except credgate.CredgateError as e:
                out["peer"] = e.reason
    return out


# ---------------------------------------------------------------------------
# Against a real daemon


class DaemonTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.enterClassContext(cgtest.Daemon(POLICY, timeout=30))
        cls.path = cls.d.socket

    def setUp(self):
        self.assertTrue(self.d.alive(), "daemon died:\n" + self.d.stderr())

    def assert_cg_error(self, reason, fn, *args, **kw):
        """@fn must raise CredgateError(@reason); return the error."""
        with self.assertRaises(credgate.CredgateError) as cm:
            got = fn(*args, **kw)
            self.fail(f"returned {got!r} instead of raising")
        self.assertEqual(cm.exception.reason, reason, str(cm.exception))
        return cm.exception


class TestDecisions(DaemonTests):
    def test_check_true_and_false(self):
        for action in ACTIONS:
            with self.subTest(action=action):
                self.assertIs(credgate.check(action, self.path), expected_mine(action))
        self.assertIs(credgate.check("py.yes", self.path), True)
        self.assertIs(credgate.check("py.no", self.path), False)
        self.assertIs(credgate.check("py.root", self.path), ROOT)
        self.assertIs(credgate.check("py.notroot", self.path), not ROOT)

    def test_check_accepts_every_action_character_and_length(self):
        for action in ("a", "a" * 255, "A-Z_a.z:0/9-", "py.many." + "7" * 200 + "4"):
            with self.subTest(action=action[:20]):
                self.assertIs(credgate.check(action, self.path, timeout=2.5), expected_mine(action))

    def test_client_reuse(self):
        with credgate.Client(self.path) as c:
            self.assertEqual(c.socket_path, self.path)
            for i in range(3000):
                action = ACTIONS[i % len(ACTIONS)] if i % 3 else f"py.many.{i}"
                self.assertIs(c.check(action), expected_mine(action), action)
                if i % 500 == 0:
                    c.ping()
                    self.assertEqual(c.whoami().pid, os.getpid())
            self.assertFalse(c.closed)
        self.assertTrue(c.closed)

    def test_check_many_5000_equals_single_checks(self):
        actions = []
        for i in range(5000):
            actions.append(f"py.many.{i}" if i % 2 else ACTIONS[(i // 2) % len(ACTIONS)])
        with credgate.Client(self.path) as c:
            many = c.check_many(actions)
            single = [c.check(a) for a in actions]
            many_again = c.check_many(iter(actions))
            c.ping()
        self.assertEqual(len(many), 5000)
        self.assertTrue(all(type(x) is bool for x in many))
        self.assertEqual(many, single)
        self.assertEqual(many_again, single)
        self.assertEqual(many, [expected_mine(a) for a in actions])
        self.assertIn(True, many)
        self.assertIn(False, many)

    def test_check_many_large_batch_does_not_deadlock(self):
        """About 9 MB of requests: far beyond the socket buffers and the
        daemon's 64 KiB reply limit, so a client that only writes would
        stall; the module must read while it writes."""
        pad = "x" * 200
        actions = [f"py.many.{pad}.{i}" for i in range(40000)]
        t0 = time.monotonic()
        with credgate.Client(self.path, timeout=10) as c:
            got = c.check_many(actions)
            c.ping()
        self.assertEqual(got, [i % 2 == 0 for i in range(40000)])
        self.assertLess(time.monotonic() - t0, 30)

    def test_check_many_empty(self):
        with credgate.Client(self.path) as c:
            self.assertEqual(c.check_many([]), [])
            self.assertEqual(c.check_many(()), [])
            self.assertIs(c.check("py.yes"), True)

    def test_whoami(self):
        for creds in (credgate.whoami(self.path), credgate.Client(self.path).whoami()):
            self.assertIsInstance(creds, credgate.Creds)
            self.assertEqual(creds.pid, os.getpid())
            self.assertEqual(creds.uid, os.getuid())
            self.assertEqual(creds.gid, os.getgid())
            self.assertIsInstance(creds.groups, tuple)
            self.assertEqual(creds.groups, my_groups())
            self.assertEqual(tuple(creds), (os.getpid(), os.getuid(), os.getgid(), my_groups()))
            with self.assertRaises(AttributeError):
                creds.uid = 5  # immutable

    def test_ping(self):
        with credgate.Client(self.path) as c:
            self.assertIsNone(c.ping())
            self.assertIsNone(c.ping())
            self.assertIs(c.check("py.yes"), True)


class TestSocketPath(DaemonTests):
    def setUp(self):
        super().setUp()
        self.saved = os.environ.get("CREDGATE_SOCKET")

    def tearDown(self):
        if self.saved is None:
            os.environ.pop("CREDGATE_SOCKET", None)
        else:
            os.environ["CREDGATE_SOCKET"] = self.saved

    def test_env_var_honoured(self):
        os.environ["CREDGATE_SOCKET"] = self.path
        self.assertEqual(credgate.resolve_socket_path(), self.path)
        self.assertIs(credgate.check("py.yes"), True)
        self.assertIs(credgate.check("py.no"), False)
        self.assertEqual(credgate.whoami().pid, os.getpid())
        with credgate.Client() as c:
            self.assertEqual(c.socket_path, self.path)
            self.assertIs(c.check("py.yes"), True)

    def test_argument_beats_env_var(self):
        os.environ["CREDGATE_SOCKET"] = "/nonexistent/credgate.sock"
        self.assertIs(credgate.check("py.yes", self.path), True)
        e = self.assert_cg_error("connect-failed", credgate.check, "py.yes")
        self.assertEqual(e.errno, errno.ENOENT)
        self.assertIn("/nonexistent/credgate.sock", str(e))

    def test_empty_env_var_means_default(self):
        os.environ["CREDGATE_SOCKET"] = ""
        self.assertEqual(credgate.resolve_socket_path(), credgate.DEFAULT_SOCKET)
        self.assertEqual(credgate.DEFAULT_SOCKET, "/run/credgate/credgate.sock")
        os.environ.pop("CREDGATE_SOCKET")
        self.assertEqual(credgate.resolve_socket_path(), credgate.DEFAULT_SOCKET)
        if not os.path.exists(credgate.DEFAULT_SOCKET):
            e = self.assert_cg_error("connect-failed", credgate.Client)
            self.assertIn(credgate.DEFAULT_SOCKET, str(e))
        with self.assertRaises(ValueError):
            credgate.Client("")

    def test_nonexistent_socket(self):
        missing = os.path.join(self.d.dir, "missing.sock")
        for fn in (lambda: credgate.check("py.yes", missing), lambda: credgate.whoami(missing),
                   lambda: credgate.Client(missing),
                   lambda: credgate.check_peer(socket.socketpair()[0], "py.yes", missing)):
            e = self.assert_cg_error("connect-failed", fn)
            self.assertEqual(e.errno, errno.ENOENT)

    def test_nobody_listening(self):
        """A socket file nobody listens on, and a regular file."""
        d = cgtest.mkdtemp("cgpy-")
        self.addCleanup(shutil.rmtree, d, True)
        dead = os.path.join(d, "dead.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(dead)
        s.close()
        plain = os.path.join(d, "plain")
        open(plain, "w").close()
        for p in (dead, plain):
            e = self.assert_cg_error("connect-failed", credgate.check, "py.yes", p)
            self.assertEqual(e.errno, errno.ECONNREFUSED)

    def test_bad_timeouts(self):
        for t in (0, -1, float("nan"), float("inf")):
            with self.assertRaises(ValueError):
                credgate.Client(self.path, timeout=t)
        for t in ("5", None, True):
            with self.assertRaises(TypeError):
                credgate.check("py.yes", self.path, timeout=t)
        self.assertIs(credgate.check("py.yes", self.path, timeout=1), True)


BAD_ACTIONS = ["", "a" * 256, "a b", "py.*", "*", "py.yes\n", "py.yes\nPING", "py.yes\r", "\tpy",
               "p\x00y", "é", "py.yes ", " py.yes", "CHECK py.yes", "a,b", "a;b", "a" * 10000]


class TestBadActions(DaemonTests):
    def test_value_error_before_anything_is_sent(self):
        with FakeServer(reply_with(b"ALLOW\n")) as fake:
            with credgate.Client(fake.path, timeout=1) as c:
                for bad in BAD_ACTIONS:
                    with self.subTest(action=bad[:20]):
                        with self.assertRaises(ValueError):
                            c.check(bad)
                        with self.assertRaises(ValueError):
                            c.check_many(["py.yes", "py.no", bad])
                        with self.assertRaises(ValueError):
                            c.check_peer(socket.socketpair()[0], bad)
                with self.assertRaises(TypeError):
                    c.check(b"py.yes")
                with self.assertRaises(TypeError):
                    c.check(None)
                with self.assertRaises(TypeError):
                    c.check_many(["py.yes", 5])
            time.sleep(0.1)
        self.assertEqual(bytes(fake.received), b"")

    def test_one_shot_validates_before_connecting(self):
        missing = os.path.join(self.d.dir, "missing.sock")
        for bad in BAD_ACTIONS:
            with self.assertRaises(ValueError):
                credgate.check(bad, missing)
            with self.assertRaises(ValueError):
                credgate.check_peer(socket.socketpair()[0], bad, missing)

    def test_client_usable_after_value_error(self):
        with credgate.Client(self.path) as c:
            for bad in BAD_ACTIONS:
                with self.assertRaises(ValueError):
                    c.check(bad)
            with self.assertRaises(ValueError):
                c.check_many(["py.yes"] * 10 + ["bad action"])
            self.assertIs(c.check("py.yes"), True)
            self.assertEqual(c.check_many(["py.yes", "py.no"]), [True, False])


class TestBroker(DaemonTests):
    """CHECK-PEER as this process (no identity change needed)."""

    def test_check_peer_on_own_socketpair(self):
        a, b = socket.socketpair()
        with a, b, credgate.Client(self.path) as c:
            for action in ACTIONS:
                with self.subTest(action=action):
                    self.assertIs(c.check_peer(a, action), expected_mine(action))
                    self.assertIs(c.check_peer(b.fileno(), action), expected_mine(action))
            self.assertIs(credgate.check_peer(a, "py.yes", self.path), True)
            self.assertIs(credgate.check_peer(a.fileno(), "py.no", self.path), False)
            # Both ends still open and ours.
            a.sendall(b"still mine")
            self.assertEqual(b.recv(100), b"still mine")

    def test_check_peer_on_accepted_connection(self):
        d = cgtest.mkdtemp("cgpy-")
        self.addCleanup(shutil.rmtree, d, True)
        p = os.path.join(d, "svc.sock")
        with socket.socket(socket.AF_UNIX) as lsock:
            lsock.bind(p)
            lsock.listen(1)
            with socket.socket(socket.AF_UNIX) as cl:
                cl.connect(p)
                acc, _ = lsock.accept()
                with acc:
                    self.assertIs(credgate.check_peer(acc, "py.me", self.path), True)
                    self.assertIs(credgate.check_peer(acc, "py.root", self.path), ROOT)
                    self.assertIs(credgate.check_peer(cl, "py.no", self.path), False)

    def test_descriptors_stay_with_the_caller(self):
        a, b = socket.socketpair()
        with a, b, credgate.Client(self.path) as c:
            c.check_peer(a, "py.yes")
            before = fd_count()
            for _ in range(300):
                self.assertIs(c.check_peer(a, "py.yes"), True)
                self.assertIs(c.check_peer(a.fileno(), "py.no"), False)
            self.assertEqual(fd_count(), before)
            a.sendall(b"x")
            self.assertEqual(b.recv(1), b"x")

    def bad_fds(self):
        """(name, object) for descriptors the daemon must refuse."""
        out = []
        d = cgtest.mkdtemp("cgpy-")
        self.addCleanup(shutil.rmtree, d, True)
        lsock = socket.socket(socket.AF_UNIX)
        lsock.bind(os.path.join(d, "l.sock"))
        lsock.listen(1)
        out.append(("listening", lsock))
        un = socket.socket(socket.AF_UNIX)
        out.append(("unconnected", un))
        r, w = os.pipe()
        out.append(("pipe", r))
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        dg1, dg2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        out.append(("dgram socketpair", dg1))
        sq1, sq2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        out.append(("seqpacket socketpair", sq1))
        tl = socket.socket(socket.AF_INET)
        tl.bind(("127.0.0.1", 0))
        tl.listen(1)
        tc = socket.create_connection(tl.getsockname())
        ta, _ = tl.accept()
        out.append(("tcp", ta))
        f = open(os.path.join(d, "file"), "w")
        out.append(("file", f.fileno()))
        for o in (lsock, un, dg1, dg2, sq1, sq2, tl, tc, ta, f):
            self.addCleanup(o.close)
        return out

    def test_bad_peer_fd(self):
        for name, obj in self.bad_fds():
            with self.subTest(fd=name):
                with credgate.Client(self.path) as c:
                    e = self.assert_cg_error("bad-peer-fd", c.check_peer, obj, "py.yes")
                    self.assertTrue(e.from_daemon, str(e))
                    self.assertTrue(c.closed)
                    self.assert_cg_error("connection-closed", c.ping)
                e = self.assert_cg_error("bad-peer-fd", credgate.check_peer, obj, "py.yes", self.path)
                # The descriptor is still ours.
                os.fstat(obj if isinstance(obj, int) else obj.fileno())

    def test_closed_descriptor(self):
        s = socket.socket(socket.AF_UNIX)
        s.close()
        with credgate.Client(self.path) as c:
            with self.assertRaises(ValueError):
                c.check_peer(s, "py.yes")
            with self.assertRaises(ValueError):
                c.check_peer(-1, "py.yes")
            with self.assertRaises(TypeError):
                c.check_peer("3", "py.yes")
            with self.assertRaises(TypeError):
                c.check_peer(True, "py.yes")
            self.assertIs(c.check("py.yes"), True)
            # An fd number that is not open: the kernel refuses to send it.
            r, w = os.pipe()
            os.close(r)
            os.close(w)
            self.assert_cg_error("bad-peer-fd", c.check_peer, r, "py.yes")
            self.assertTrue(c.closed)

    def test_daemon_closes_every_received_fd(self):
        pid = self.d.pid
        time.sleep(0.1)
        base = fd_count(pid)
        a, b = socket.socketpair()
        with a, b:
            with credgate.Client(self.path) as c:
                for _ in range(200):
                    c.check_peer(a, "py.yes")
                # The daemon closes received fds on a helper thread, so
                # promptly but not necessarily before it replies.
                cgtest.wait_until(lambda: fd_count(pid) == base + 1, timeout=5,
                                  what=f"daemon fd count back to {base} + our connection (now {fd_count(pid)})")
            for name, obj in self.bad_fds():
                with self.assertRaises(credgate.CredgateError):
                    credgate.check_peer(obj, "py.yes", self.path)
        cgtest.wait_until(lambda: fd_count(pid) == base, timeout=5,
                          what=f"daemon fd count back to {base} (now {fd_count(pid)})")


class TestErrorsBreakTheClient(DaemonTests):
    def test_broken_after_error(self):
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        c = credgate.Client(self.path)
        self.assertIs(c.check("py.yes"), True)
        self.assert_cg_error("bad-peer-fd", c.check_peer, r, "py.yes")
        for call in (lambda: c.check("py.yes"), lambda: c.check_many(["py.yes"]), c.whoami, c.ping,
                     lambda: c.check_peer(socket.socketpair()[0], "py.yes"), lambda: c.check_many([])):
            self.assert_cg_error("connection-closed", call)
        c.close()
        c.close()

    def test_closed_client(self):
        with credgate.Client(self.path) as c:
            self.assertIs(c.check("py.yes"), True)
        self.assertTrue(c.closed)
        self.assert_cg_error("connection-closed", c.check, "py.yes")
        self.assert_cg_error("connection-closed", c.ping)

    def test_daemon_idle_timeout(self):
        """The daemon closes an idle connection with ERR timeout; the next
        call reports it and never returns True."""
        with cgtest.Daemon(POLICY, timeout=1) as d:
            with credgate.Client(d.socket) as c:
                self.assertIs(c.check("py.yes"), True)
                time.sleep(1.6)
                e = self.assert_cg_error("timeout", c.check, "py.yes")
                self.assertTrue(e.from_daemon)
                self.assert_cg_error("connection-closed", c.check, "py.yes")
            with credgate.Client(d.socket) as c:
                time.sleep(1.6)
                self.assert_cg_error("timeout", c.check_many, ["py.yes"] * 100)

    def test_daemon_gone(self):
        d = cgtest.Daemon(POLICY, timeout=30)
        self.addCleanup(d.cleanup)
        d.start()
        c = credgate.Client(d.socket)
        self.addCleanup(c.close)
        self.assertIs(c.check("py.yes"), True)
        d.stop()
        self.assert_cg_error("connection-closed", c.check, "py.yes")
        self.assert_cg_error("connect-failed", credgate.check, "py.yes", d.socket)


class TestPeerCreds(unittest.TestCase):
    """peer_creds() needs no daemon."""

    def mine(self):
        return credgate.Creds(os.getpid(), os.getuid(), os.getgid(), my_groups())

    def test_socketpair(self):
        a, b = socket.socketpair()
        with a, b:
            self.assertEqual(credgate.peer_creds(a), self.mine())
            self.assertEqual(credgate.peer_creds(b), self.mine())
            before = fd_count()
            self.assertEqual(credgate.peer_creds(a.fileno()), self.mine())
            self.assertEqual(fd_count(), before)
            a.sendall(b"x")  # still open
            self.assertEqual(b.recv(1), b"x")

    def test_accepted_connection(self):
        d = cgtest.mkdtemp("cgpy-")
        self.addCleanup(shutil.rmtree, d, True)
        p = os.path.join(d, "svc.sock")
        with socket.socket(socket.AF_UNIX) as lsock:
            lsock.bind(p)
            lsock.listen(1)
            with socket.socket(socket.AF_UNIX) as cl:
                cl.connect(p)
                acc, _ = lsock.accept()
                with acc:
                    creds = credgate.peer_creds(acc)
                    self.assertEqual(creds, self.mine())
                    self.assertEqual(credgate.peer_creds(acc.fileno()), self.mine())
                    self.assertEqual(credgate.peer_creds(cl), self.mine())
                with self.assertRaises(credgate.CredgateError) as cm:
                    credgate.peer_creds(lsock)
                self.assertEqual(cm.exception.reason, "not-connected")
                self.assertEqual(cm.exception.errno, errno.ENOTCONN)

    def test_refuses_listening_and_unconnected(self):
        d = cgtest.mkdtemp("cgpy-")
        self.addCleanup(shutil.rmtree, d, True)
        with socket.socket(socket.AF_UNIX) as lsock, socket.socket(socket.AF_UNIX) as un:
            lsock.bind(os.path.join(d, "l.sock"))
            lsock.listen(1)
            for obj in (lsock, lsock.fileno(), un, un.fileno()):
                with self.assertRaises(credgate.CredgateError) as cm:
                    credgate.peer_creds(obj)
                self.assertEqual(cm.exception.reason, "not-connected")
            # Bound but not connected, too.
            with socket.socket(socket.AF_UNIX) as bound:
                bound.bind(os.path.join(d, "b.sock"))
                with self.assertRaises(credgate.CredgateError) as cm:
                    credgate.peer_creds(bound)
                self.assertEqual(cm.exception.reason, "not-connected")

    def test_refuses_other_kinds(self):
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        dg1, dg2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET)
        for o in (dg1, dg2, tcp):
            self.addCleanup(o.close)
        for obj in (r, dg1, dg2.fileno(), tcp):
            with self.assertRaises(credgate.CredgateError) as cm:
                credgate.peer_creds(obj)
            self.assertEqual(cm.exception.reason, "not-unix-stream")
        os.fstat(r)  # still open
        s = socket.socket(socket.AF_UNIX)
        s.close()
        with self.assertRaises(ValueError):
            credgate.peer_creds(s)
        with self.assertRaises(TypeError):
            credgate.peer_creds("0")


class TestModule(unittest.TestCase):
    def test_docstrings_and_no_output(self):
        self.assertIn("Example", credgate.__doc__)
        for name in credgate.__all__:
            obj = getattr(credgate, name)
            if callable(obj):
                self.assertTrue((obj.__doc__ or "").strip(), f"{name} has no docstring")
        for name in ("check", "check_many", "check_peer", "whoami", "ping", "close", "socket_path", "timeout",
                     "closed"):
            self.assertTrue((getattr(credgate.Client, name).__doc__ or "").strip(), f"Client.{name}")
        with open(credgate.__file__) as f:
            src = f.read()
        for bad in ("print(", "import logging", "sys.stdout", "sys.stderr"):
            self.assertNotIn(bad, src)

    def test_privileged_from_ids_and_auxv(self):
        """The module's secure_getenv(): AT_SECURE read from /proc/self/auxv
        (struct parsing checked here on made-up contents; test_secure_env.py
        runs real setuid and file-capability interpreters)."""
        import io
        from unittest import mock
        entry = struct.Struct("@LL")

        def auxv(*pairs):
            return b"".join(entry.pack(k, v) for k, v in pairs)

        self.assertIs(credgate._privileged(), False, "this test process is not privileged")
        cases = [
            (auxv((33, 7), (23, 1), (6, 4096), (0, 0)), True),
            (auxv((33, 7), (23, 0), (6, 4096), (0, 0)), False),
            (auxv((23, 2), (0, 0)), True),
            (auxv((6, 4096), (0, 0)), True),               # no AT_SECURE at all: fail safe
            (auxv((6, 4096), (0, 0), (23, 0)), True),      # nothing counts after AT_NULL
            (b"", True),
            (auxv((23, 0))[:-1], True),                    # cut short
        ]
        for data, want in cases:
            with self.subTest(auxv=data):
                with mock.patch.object(credgate, "open", create=True, return_value=io.BytesIO(data)):
                    self.assertIs(credgate._privileged(), want)
        for exc in (PermissionError(errno.EACCES, "no"), FileNotFoundError(errno.ENOENT, "no /proc")):
            with self.subTest(exc=exc):
                with mock.patch.object(credgate, "open", create=True, side_effect=exc):
                    self.assertIs(credgate._privileged(), True, "an unreadable auxv must count as privileged")
        with mock.patch.object(credgate.os, "geteuid", return_value=os.getuid() + 1):
            self.assertIs(credgate._privileged(), True)
        with mock.patch.object(credgate.os, "getegid", return_value=os.getgid() + 1):
            self.assertIs(credgate._privileged(), True)

        saved = os.environ.get("CREDGATE_SOCKET")
        try:
            os.environ["CREDGATE_SOCKET"] = "/somewhere/else.sock"
            self.assertEqual(credgate.resolve_socket_path(), "/somewhere/else.sock")
            with mock.patch.object(credgate, "_privileged", return_value=True):
                self.assertEqual(credgate.resolve_socket_path(), credgate.DEFAULT_SOCKET)
                self.assertEqual(credgate.resolve_socket_path("/given.sock"), "/given.sock")
        finally:
            if saved is None:
                os.environ.pop("CREDGATE_SOCKET", None)
            else:
                os.environ["CREDGATE_SOCKET"] = saved

    def test_error_pickles(self):
        import pickle
        e = credgate.CredgateError("bad-peer-fd", "x", errno=9, from_daemon=True)
        e2 = pickle.loads(pickle.dumps(e))
        self.assertEqual((e2.reason, e2.errno, e2.from_daemon, str(e2)), ("bad-peer-fd", 9, True, str(e)))


# ---------------------------------------------------------------------------
# Fake servers: nothing but ALLOW is ever True


BAD_CHECK_REPLIES = [
    # (reply bytes, handler then, reason)
    (b"ERR timeout\n", "wait", "timeout"),
    (b"ERR bad-action\n", "wait", "bad-action"),
    (b"ERR too-many-connections\n", "close", "too-many-connections"),
    (b"MAYBE\n", "wait", "malformed-reply"),
    (b"ALLOWED\n", "wait", "malformed-reply"),
    (b"allow\n", "wait", "malformed-reply"),
    (b"Allow\n", "wait", "malformed-reply"),
    (b"ALLOW extra\n", "wait", "malformed-reply"),
    (b"ALLOW \n", "wait", "malformed-reply"),
    (b" ALLOW\n", "wait", "malformed-reply"),
    (b"ALLOW\r\n", "wait", "malformed-reply"),
    (b"ALLOW\x00\n", "wait", "malformed-reply"),
    (b"\n", "wait", "malformed-reply"),
    (b"\nALLOW\n", "wait", "malformed-reply"),
    (b"PONG\n", "wait", "malformed-reply"),
    (b"ERR\n", "wait", "malformed-reply"),
    (b"ERR \n", "wait", "malformed-reply"),
    (b"ERR Timeout\n", "wait", "malformed-reply"),
    (b"ERR timeout ALLOW\n", "wait", "malformed-reply"),
    (b"CREDS pid=1 uid=0 gid=0 groups=\n", "wait", "malformed-reply"),
    (b"", "close", "connection-closed"),              # EOF without a reply
    (b"ALLOW", "close", "connection-closed"),         # EOF before the \n
    (b"ALLOW", "wait", "timeout"),                    # never finishes the line
    (b"", "wait", "timeout"),                         # never replies
    (b"ALLOW" + b"x" * (2 << 20) + b"\n", "wait", "malformed-reply"),  # 2 MB line
    (b"A" * (2 << 20), "wait", "malformed-reply"),    # 2 MB, no \n at all
]


class TestFakeServer(unittest.TestCase):
    def assert_reason(self, reason, fn, *args):
        with self.assertRaises(credgate.CredgateError) as cm:
            got = fn(*args)
            self.fail(f"returned {got!r} instead of raising")
        self.assertEqual(cm.exception.reason, reason, str(cm.exception))
        return cm.exception

    def test_check_bad_replies(self):
        for reply, then, reason in BAD_CHECK_REPLIES:
            with self.subTest(reply=reply[:30], then=then):
                with FakeServer(reply_with(reply, then)) as fake:
                    t0 = time.monotonic()
                    self.assert_reason(reason, credgate.check, "py.yes", fake.path, 0.5)
                    self.assertLess(time.monotonic() - t0, 1.5)
                    with credgate.Client(fake.path, timeout=0.5) as c:
                        self.assert_reason(reason, c.check, "py.yes")
                        self.assertTrue(c.closed)
                        self.assert_reason("connection-closed", c.check, "py.yes")
                    with credgate.Client(fake.path, timeout=0.5) as c:
                        self.assert_reason(reason, c.check_many, ["py.yes"])
                    a, b = socket.socketpair()
                    with a, b, credgate.Client(fake.path, timeout=0.5) as c:
                        self.assert_reason(reason, c.check_peer, a, "py.yes")

    def test_silent_server_times_out_within_a_second(self):
        with FakeServer(reply_with(b"")) as fake:
            for call in (lambda: credgate.check("py.yes", fake.path, 0.5),
                         lambda: credgate.whoami(fake.path, 0.5),
                         lambda: credgate.Client(fake.path, 0.5).ping(),
                         lambda: credgate.Client(fake.path, 0.5).check_many(["py.yes"] * 1000)):
                t0 = time.monotonic()
                e = self.assert_reason("timeout", call)
                took = time.monotonic() - t0
                self.assertFalse(e.from_daemon)
                self.assertGreaterEqual(took, 0.45)
                self.assertLess(took, 1.25)

    def test_good_fake_replies(self):
        """The parser accepts exactly what the protocol says."""
        for reply, want in ((b"ALLOW\n", True), (b"DENY\n", False)):
            with FakeServer(reply_with(reply)) as fake:
                self.assertIs(credgate.check("py.x", fake.path), want)
            self.assertEqual(bytes(fake.received), b"CHECK py.x\n")
        with FakeServer(reply_with(b"CREDS pid=5 uid=4000000000 gid=7 groups=3,9,4294967294\n")) as fake:
            self.assertEqual(credgate.whoami(fake.path), credgate.Creds(5, 4000000000, 7, (3, 9, 4294967294)))
        self.assertEqual(bytes(fake.received), b"WHOAMI\n")
        with FakeServer(reply_with(b"CREDS pid=1 uid=0 gid=0 groups=\n")) as fake:
            self.assertEqual(credgate.whoami(fake.path), credgate.Creds(1, 0, 0, ()))

    def test_check_peer_request_bytes(self):
        with FakeServer(reply_with(b"DENY\n")) as fake:
            a, b = socket.socketpair()
            with a, b:
                self.assertIs(credgate.check_peer(a, "org.example.x", fake.path), False)
        self.assertEqual(bytes(fake.received), b"CHECK-PEER org.example.x\n")

    def test_whoami_bad_replies(self):
        bad = [b"CREDS pid=1 uid=2 gid=3\n", b"CREDS pid=1 uid=2 gid=3 groups=1,,2\n",
               b"CREDS pid=1 uid=2 gid=3 groups=1,\n", b"CREDS pid=x uid=2 gid=3 groups=\n",
               b"CREDS pid=1 uid=2 gid=3 groups= \n", b"CREDS  pid=1 uid=2 gid=3 groups=\n",
               b"CREDS pid=1 uid=4294967295 gid=3 groups=\n", b"CREDS pid=1 uid=2 gid=99999999999 groups=\n",
               b"CREDS pid=1 uid=2 gid=3 groups=4294967296\n", b"CREDS pid=1 uid=-2 gid=3 groups=\n",
               b"CREDS pid=1 gid=3 uid=2 groups=\n", b"ALLOW\n", b"creds pid=1 uid=2 gid=3 groups=\n",
               b"CREDS pid=1 uid=2 gid=3 groups=" + b"1," * (1 << 20) + b"1\n",
               # not as the daemon prints them: unsorted, repeated, leading zeros
               b"CREDS pid=1 uid=2 gid=3 groups=9,3\n", b"CREDS pid=1 uid=2 gid=3 groups=3,3\n",
               b"CREDS pid=1 uid=02 gid=3 groups=\n", b"CREDS pid=1 uid=2 gid=3 groups=0,07\n"]
        for reply in bad:
            with self.subTest(reply=reply[:40]):
                with FakeServer(reply_with(reply)) as fake:
                    self.assert_reason("malformed-reply", credgate.whoami, fake.path, 2)
        with FakeServer(reply_with(b"ERR no-credentials\n", "close")) as fake:
            self.assert_reason("no-credentials", credgate.whoami, fake.path, 2)

    def test_ping_bad_replies(self):
        for reply, reason in ((b"PONG x\n", "malformed-reply"), (b"PING\n", "malformed-reply"),
                              (b"ALLOW\n", "malformed-reply"), (b"ERR timeout\n", "timeout")):
            with FakeServer(reply_with(reply)) as fake:
                with credgate.Client(fake.path, timeout=1) as c:
                    self.assert_reason(reason, c.ping)

    def test_check_many_bad_reply_in_the_middle(self):
        def handler(server, conn):
            for i in range(5):
                server.read_line(conn)
            conn.sendall(b"ALLOW\nDENY\nMAYBE\nALLOW\nALLOW\n")
            server.wait_eof(conn)
        with FakeServer(handler) as fake:
            with credgate.Client(fake.path, timeout=2) as c:
                self.assert_reason("malformed-reply", c.check_many, ["a", "b", "c", "d", "e"])

        def short(server, conn):
            for i in range(5):
                server.read_line(conn)
            conn.sendall(b"ALLOW\nALLOW\nALLOW\nALLOW\n")
        with FakeServer(short) as fake:
            with credgate.Client(fake.path, timeout=2) as c:
                self.assert_reason("connection-closed", c.check_many, ["a", "b", "c", "d", "e"])

        def err(server, conn):
            for i in range(3):
                server.read_line(conn)
            conn.sendall(b"ALLOW\nALLOW\nERR bad-request\n")
        with FakeServer(err) as fake:
            with credgate.Client(fake.path, timeout=2) as c:
                self.assert_reason("bad-request", c.check_many, ["a"] * 100000)

    def test_extra_reply_is_never_taken_as_an_answer(self):
        """A server that answers one CHECK with two lines: the stray ALLOW
        must not become the answer to the next request."""
        def handler(server, conn):
            server.read_line(conn)
            conn.sendall(b"DENY\nALLOW\n")
            server.wait_eof(conn)
        with FakeServer(handler) as fake:
            with credgate.Client(fake.path, timeout=1) as c:
                # Both lines came in one write: the second is noticed at once.
                e = self.assert_reason("malformed-reply", c.check, "py.x")
                self.assertIn("more replies than requests", str(e))
                self.assertTrue(c.closed)

        def extra(server, conn):
            for _ in range(3):
                server.read_line(conn)
            conn.sendall(b"DENY\nDENY\nDENY\nALLOW\n")
            server.wait_eof(conn)
        with FakeServer(extra) as fake:
            with credgate.Client(fake.path, timeout=1) as c:
                e = self.assert_reason("malformed-reply", c.check_many, ["a", "b", "c"])
                self.assertIn("more replies than requests", str(e))

        def late(server, conn):
            server.read_line(conn)
            conn.sendall(b"DENY\n")
            time.sleep(0.2)
            conn.sendall(b"ALLOW\n")
            server.wait_eof(conn)
        with FakeServer(late) as fake:
            with credgate.Client(fake.path, timeout=1) as c:
                # A line that comes later is caught before the next request.
                self.assertIs(c.check("py.x"), False)
                time.sleep(0.4)
                self.assert_reason("malformed-reply", c.check, "py.x")

    def test_more_replies_than_requests(self):
        """Exactly as libcredgate: the reply after the last one asked for
        fails the call (CredgateError "malformed-reply", "more replies than
        requests"), for check() and check_many(), even a partial line."""
        for reply, actions in ((b"ALLOW\nALLOW\n", ["a"]), (b"ALLOW\nA", ["a"]),
                               (b"ALLOW\nDENY\nALLOW\n", ["a", "b"]), (b"DENY\nDENY\nERR timeout\n", ["a", "b"])):
            with self.subTest(reply=reply, n=len(actions)):
                def handler(server, conn):
                    for _ in actions:
                        server.read_line(conn)
                    conn.sendall(reply)
                    server.wait_eof(conn)
                with FakeServer(handler) as fake:
                    with credgate.Client(fake.path, timeout=2) as c:
                        call = (lambda: c.check(actions[0])) if len(actions) == 1 else (lambda: c.check_many(actions))
                        e = self.assert_reason("malformed-reply", call)
                        self.assertEqual(str(e), "malformed-reply: more replies than requests")
                        self.assertTrue(c.closed)
        # Exactly the replies asked for, then EOF: an answer.
        with FakeServer(reply_with(b"ALLOW\nDENY\n", "close")) as fake:
            with credgate.Client(fake.path, timeout=2) as c:
                self.assertEqual(c.check_many(["a", "b"]), [True, False])

    def test_not_a_broker_reply(self):
        with FakeServer(reply_with(b"ERR not-a-broker\n", "close")) as fake:
            a, b = socket.socketpair()
            with a, b:
                with credgate.Client(fake.path, timeout=2) as c:
                    e = self.assert_reason("not-a-broker", c.check_peer, a, "py.x")
                    self.assertTrue(e.from_daemon)
                    self.assertTrue(c.closed)
        self.assertEqual(bytes(fake.received), b"CHECK-PEER py.x\n")

    def test_descriptor_refused_by_the_kernel_is_not_a_broker(self):
        """A daemon socket with SO_PASSRIGHTS off (Linux 6.16+), as credgated
        sets it for clients that are no brokers: sendmsg() with the fd fails
        with EPERM, reported as "not-a-broker" too."""
        ready = threading.Event()
        status = {}

        def handler(server, conn):
            try:
                conn.setsockopt(socket.SOL_SOCKET, _SO_PASSRIGHTS, 0)
                status["err"] = 0
            except OSError as e:
                status["err"] = e.errno
            ready.set()
            server.wait_eof(conn)
        with FakeServer(handler) as fake:
            a, b = socket.socketpair()
            with a, b, credgate.Client(fake.path, timeout=2) as c:
                # The option must be set before we send: wait for the handler.
                self.assertTrue(ready.wait(5), "the fake server did not accept")
                if status["err"] == errno.ENOPROTOOPT:
                    self.skipTest("this kernel has no SO_PASSRIGHTS (Linux 6.16 and later)")
                self.assertEqual(status["err"], 0, os.strerror(status["err"]))
                e = self.assert_reason("not-a-broker", c.check_peer, a, "py.x")
                self.assertEqual(e.errno, errno.EPERM)
                self.assertFalse(e.from_daemon)
                self.assertIn("brokers", str(e))
                self.assertTrue(c.closed)
                # The descriptor is still ours.
                a.sendall(b"x")
                self.assertEqual(b.recv(1), b"x")
        self.assertEqual(bytes(fake.received), b"")

    def test_pipelining_against_a_lockstep_server(self):
        """A server that writes each reply with a blocking write and a tiny
        send buffer: a client that sent 4 MB before reading would deadlock."""
        n = 20000
        actions = [f"py.{'y' * 200}.{i}" for i in range(n)]
        with FakeServer(lockstep(), sndbuf=4096) as fake:
            t0 = time.monotonic()
            with credgate.Client(fake.path, timeout=5) as c:
                self.assertEqual(c.check_many(actions), [True] * n)
            self.assertLess(time.monotonic() - t0, 30)
        with FakeServer(lockstep(b"DENY\n"), sndbuf=4096) as fake:
            with credgate.Client(fake.path, timeout=5) as c:
                self.assertEqual(c.check_many(actions[:5000]), [False] * 5000)

    def test_reply_before_request_is_refused(self):
        """Data the server sends before any request (here ALLOW) is not an
        answer to the first request."""
        def handler(server, conn):
            conn.sendall(b"ALLOW\n")
            server.wait_eof(conn)
        with FakeServer(handler) as fake:
            with credgate.Client(fake.path, timeout=1) as c:
                time.sleep(0.1)
                self.assert_reason("malformed-reply", c.check, "py.x")


# ---------------------------------------------------------------------------
# Other identities (root only)


@cgtest.needs_root
class TestBrokerAsRoot(DaemonTests):
    """A service (root) asks about its client, a child of another identity."""

    def test_check_peer_decides_for_the_client_not_the_service(self):
        with PeerProcess(1000, 1000, [100]) as peer:
            acc = peer.accepted
            with credgate.Client(self.path) as c:
                for action in ACTIONS:
                    with self.subTest(action=action):
                        want = expected(action, 1000, 1000, [100])
                        self.assertIs(c.check_peer(acc, action), want)
                        self.assertIs(c.check_peer(acc.fileno(), action), want)
                        self.assertIs(credgate.check_peer(acc, action, self.path), want)
                # Root and the client really get different answers.
                for action, client_gets in (("py.u1000", True), ("py.users", True), ("py.root", False),
                                            ("py.notroot", True), ("py.me", False)):
                    self.assertIs(c.check_peer(acc, action), client_gets, action)
                    self.assertIs(c.check(action), not client_gets, action)
            self.assertEqual(credgate.peer_creds(acc), credgate.Creds(peer.pid, 1000, 1000, (100,)))
            self.assertEqual(credgate.peer_creds(acc.fileno()), credgate.Creds(peer.pid, 1000, 1000, (100,)))
            # The accepted socket is still the service's own.
            acc.sendall(b"hello\n")
            got = b""
            while not got.endswith(b"\n"):
                chunk = acc.recv(100)
                self.assertTrue(chunk, "child closed")
                got += chunk
            self.assertEqual(got, b"echo:hello\n")
        self.assertEqual(peer.result, {"pid": peer.pid, "uid": 1000, "gid": 1000, "groups": (100,)})

    def test_check_peer_ids_above_2_31(self):
        with PeerProcess(4000000000, 4000000001, [4000000001, 7, 7]) as peer:
            acc = peer.accepted
            self.assertEqual(credgate.peer_creds(acc), credgate.Creds(peer.pid, 4000000000, 4000000001,
                                                                      (7, 4000000001)))
            with credgate.Client(self.path) as c:
                self.assertIs(c.check_peer(acc, "py.big"), True)
                self.assertIs(c.check_peer(acc, "py.biggroup"), True)
                self.assertIs(c.check_peer(acc, "py.root"), False)
                self.assertIs(c.check("py.big"), False)

    def test_check_peer_many_groups(self):
        groups = list(range(1000, 1300)) + [100]
        with PeerProcess(1000, 1000, groups) as peer:
            acc = peer.accepted
            creds = credgate.peer_creds(acc)
            self.assertEqual(creds.groups, tuple(sorted(groups)))
            self.assertIs(credgate.check_peer(acc, "py.users", self.path), True)

    def test_check_peer_bad_fds_as_root(self):
        with PeerProcess(1000, 1000, [100]) as peer:
            with socket.socket(socket.AF_UNIX) as un:
                r, w = os.pipe()
                try:
                    for obj in (peer.lsock, un, r):
                        with credgate.Client(self.path) as c:
                            e = self.assert_cg_error("bad-peer-fd", c.check_peer, obj, "py.u1000")
                            self.assertTrue(e.from_daemon)
                finally:
                    os.close(r)
                    os.close(w)
            self.assertIs(credgate.check_peer(peer.accepted, "py.u1000", self.path), True)


# name: (uid, gid, groups given to setgroups())
IDENTITIES = {
    "u1000": (1000, 1000, [100]),
    "nobody": (65534, 65534, []),
    "bin": (2, 2, [4, 50]),
    "big": (4000000000, 4000000001, [4000000001, 7, 7]),
    "groups300": (1000, 1000, list(range(2000, 2300))),
    "ngroups_max": (1001, 1001, list(range(1, ngroups_max() + 1))),
}


@cgtest.needs_root
class TestModuleAsOtherIdentities(DaemonTests):
    """Fork, drop privileges, run the module (no exec) as that identity."""

    def check_identity(self, name):
        uid, gid, groups = IDENTITIES[name]
        got = cgtest.as_identity(uid, gid, groups, lambda: identity_report(self.path), timeout=60)
        shown = tuple(sorted(set(groups)))
        self.assertEqual((got["uid"], got["gid"], got["groups"]), (uid, gid, shown), "setgroups() did not take")
        me = (got["pid"], uid, gid, shown)
        self.assertEqual(got["whoami"], me)
        self.assertEqual(got["whoami2"], me)
        self.assertEqual(got["peer_creds"], me)
        self.assertEqual(got["peer_creds_fd"], me)
        want = {a: expected(a, uid, gid, groups) for a in ACTIONS}
        self.assertEqual(got["oneshot"], want)
        self.assertEqual(got["checks"], want)
        # Broker queries are for the brokers the policy names.
        self.assertEqual(got["peer"], want if uid in BROKERS else "not-a-broker")
        self.assertEqual(got["many"], [want[a] for a in ACTIONS] * 50)


def _make(name):
    def test(self):
        self.check_identity(name)
    test.__name__ = f"test_{name}"
    return test


for _n in IDENTITIES:
    setattr(TestModuleAsOtherIdentities, f"test_{_n}", _make(_n))


if __name__ == "__main__":
    cgtest.main()
