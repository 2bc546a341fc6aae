# SPDX-License-Identifier: LGPL-2.1-or-later
"""Ask credgated for authorization decisions.

This module is the Python client of the credgate line protocol (see
``docs/protocol.md``). It uses the standard library only, needs Python 3.9
or later and Linux (``SO_PEERCRED``, ``SO_PEERGROUPS``).

Example::

    import credgate

    # One question, one connection.
    if credgate.check("org.example.backup.run"):
        run_backup()

    # Many questions on one connection.
    with credgate.Client() as c:
        allowed = c.check_many(["org.example.status", "org.example.backup.run"])
        me = c.whoami()          # Creds(pid=..., uid=..., gid=..., groups=(...))

    # A service asking about the client it accepted (broker query).
    conn, _ = listener.accept()
    if not credgate.check_peer(conn, "org.example.backup.run"):
        conn.close()

    # Why? The deciding rule and its message, to show a user who was denied.
    e = credgate.explain("org.example.backup.run")
    if not e.allowed:
        tell_user(f"denied by {e.ref}: {e.message or 'no reason given'}")

    # The kernel's credentials of any connected Unix stream socket.
    creds = credgate.peer_creds(conn)

Conventions, as in libcredgate:

* Only an exact ``ALLOW`` reply yields ``True`` (for ``explain()``, an
  ``ALLOW`` line in the documented grammar); ``DENY`` yields ``False``.
  Everything else (an ``ERR`` line, a closed connection, a timeout, a
  malformed, over-long or unexpected reply) raises :class:`CredgateError`.
  No call ever returns ``True`` because of an error.
* A bad action (not 1 to 255 characters of ``[A-Za-z0-9._:/-]``) raises
  :class:`ValueError` before anything is sent.
* Socket path: the argument, else ``$CREDGATE_SOCKET`` if set and not empty,
  else :data:`DEFAULT_SOCKET`. A privileged process ignores the variable, as
  libcredgate does with ``secure_getenv()``: one whose real and effective
  user or group ids differ (setuid, setgid), or whose ``AT_SECURE`` flag is
  set (``/proc/self/auxv``; also set for file capabilities). If that flag
  cannot be read, the variable is ignored too. The user who runs a
  privileged program must not choose which daemon answers it.
* Every call that talks to the daemon gives up after ``timeout`` seconds
  (default 5) with ``CredgateError(reason="timeout")``.
* After a :class:`CredgateError` a :class:`Client` is broken: the connection
  is closed and every later call raises ``CredgateError`` with reason
  ``"connection-closed"``. Open a new one.
* The module never prints or logs, and never raises ``SIGPIPE``.

Thread safety: a :class:`Client` must not be used by two threads at the same
time; separate clients may be used concurrently. The module-level functions
open their own connection and are thread-safe.
"""

import errno
import math
import os
import re
import selectors
import socket
import struct
import time
from typing import List, NamedTuple, Optional, Tuple

__all__ = [
    "DEFAULT_SOCKET",
    "DEFAULT_TIMEOUT",
    "ACTION_MAX",
    "Creds",
    "CredgateError",
    "Client",
    "check",
    "check_peer",
    "explain",
    "explain_peer",
    "Explanation",
    "whoami",
    "peer_creds",
    "resolve_socket_path",
]

#: The daemon's socket when neither an argument nor ``$CREDGATE_SOCKET`` names one.
DEFAULT_SOCKET = "/run/credgate/credgate.sock"
#: Seconds each call may wait for the daemon unless told otherwise.
DEFAULT_TIMEOUT = 5.0
#: The longest action, in characters.
ACTION_MAX = 255

_ACTION_RE = re.compile(r"[A-Za-z0-9._:/-]{1,%d}" % ACTION_MAX)

# Linux values, in case this Python's socket module lacks the constants.
_SO_TYPE = getattr(socket, "SO_TYPE", 3)
_SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)
_SO_ACCEPTCONN = getattr(socket, "SO_ACCEPTCONN", 30)
_SO_DOMAIN = getattr(socket, "SO_DOMAIN", 39)
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_MSG_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)

_NO_ID = 0xFFFFFFFF  # (uid_t) -1: not an identity
_UCRED = struct.Struct("=iII")  # struct ucred: pid (signed), uid, gid (unsigned)

# Reply lines: ALLOW, DENY, PONG and ERR lines are short; a CREDS line with
# NGROUPS_MAX (65536) ids of 10 digits is about 720 KB.
_SHORT_LINE_MAX = 1024
_CREDS_LINE_MAX = 1 << 20
_RECV_SIZE = 65536
_SEND_CHUNK = 1 << 18

_EXPLAIN_LINE_MAX = 16384  # a %XX-escaped path of 4096 bytes and a 200-byte message fit

_ERR_RE = re.compile(rb"ERR ([a-z0-9][a-z0-9-]{0,63})")
# docs/protocol.md, EXPLAIN: the verdict, the reference (no space), the message.
_EXPLAIN_RE = re.compile(rb"(ALLOW|DENY) ([\x21-\x7e]+)(?: -- ([\x20-\x7e]{1,200}))?")
# Numbers as the daemon prints them (%u): no leading zeros.
_NUM = rb"(?:0|[1-9][0-9]{0,9})"
_CREDS_RE = re.compile(
    rb"CREDS pid=(" + _NUM + rb") uid=(" + _NUM + rb") gid=(" + _NUM + rb") groups=((?:" + _NUM + rb"(?:," + _NUM
    + rb")*)?)")


class Creds(NamedTuple):
    """The kernel-verified identity of a socket peer.

    ``pid``, ``uid`` and ``gid`` come from ``SO_PEERCRED`` (``gid`` is the
    primary group); ``groups`` is the supplementary group list from
    ``SO_PEERGROUPS`` as a tuple sorted ascending, without duplicates. They
    are the credentials the peer had when it called ``connect(2)``.
    """

    pid: int
    uid: int
    gid: int
    groups: Tuple[int, ...]


class Explanation(NamedTuple):
    """A decision with its reason (``EXPLAIN``).

    ``allowed`` is ``True`` only for ``ALLOW``. ``ref`` names the rule that
    decided: ``"id:NAME"`` (its id), ``"FILE:LINE"`` (a rule without id;
    FILE ``%XX``-escaped) or ``"default"``. ``message`` is the rule's
    message, meant for the user who asked, or ``None``.
    """

    allowed: bool
    ref: str
    message: Optional[str]


class CredgateError(Exception):
    """A call could not get a valid answer from credgated.

    ``reason`` says why, as a short token:

    * the daemon's own ``ERR`` reason, e.g. ``"bad-peer-fd"``,
      ``"bad-action"``, ``"timeout"``, ``"no-credentials"``,
      ``"too-many-connections"`` (then ``from_daemon`` is ``True``);
    * ``"timeout"``: no complete reply within the call's timeout;
    * ``"connection-closed"``: the connection ended before a complete reply,
      or the :class:`Client` is closed or broken by an earlier error;
    * ``"malformed-reply"``: a reply that is not what the request calls for
      (unknown, over-long, unsolicited), including more replies than
      :meth:`Client.check` or :meth:`Client.check_many` asked for;
    * ``"not-a-broker"``: :meth:`Client.check_peer` from a process that the
      daemon's policy does not name as a broker (the ``brokers`` setting of
      ``credgate.conf(5)``; root only by default). Either the daemon answered
      ``ERR not-a-broker`` (``from_daemon`` is ``True``), or the kernel
      refused to pass the descriptor because the daemon's socket takes none
      from this process (``SO_PASSRIGHTS``, Linux 6.16 and later; ``errno``
      is ``errno.EPERM``).
    * ``"connect-failed"``: no daemon listens on the socket path (``errno``
      tells why, e.g. ``errno.ENOENT``);
    * ``"io-error"``: another operating-system error while talking;
    * ``"not-connected"``, ``"not-unix-stream"``, ``"no-credentials"``: from
      :func:`peer_creds`, for a socket that has no credentials to read;
    * ``"bad-peer-fd"`` is also used when the descriptor given to
      :meth:`Client.check_peer` cannot be passed (``EBADF``).

    ``errno`` is the operating-system error number behind the failure, or
    ``None``.
    """

    def __init__(self, reason, message=None, *, errno=None, from_daemon=False):
        self.reason = reason
        self.errno = errno
        self.from_daemon = from_daemon
        super().__init__(message or reason)

    def __reduce__(self):
        return (self.__class__, (self.reason, Exception.__str__(self)),
                {"errno": self.errno, "from_daemon": self.from_daemon})

    def __str__(self):
        msg = super().__str__()
        return msg if msg == self.reason else f"{self.reason}: {msg}"


# ---------------------------------------------------------------------------
# Argument checks

def _check_action(action):
    if not isinstance(action, str):
        raise TypeError(f"action must be a str, not {type(action).__name__}")
    if not _ACTION_RE.fullmatch(action):
        raise ValueError(f"bad action {action[:300]!r}: want 1 to {ACTION_MAX} characters of [A-Za-z0-9._:/-]")
    return action.encode("ascii")


def _check_timeout(timeout):
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive finite number of seconds, not {timeout!r}")
    return float(timeout)


def _why(e):
    """The text of an OSError, also for those without strerror."""
    return e.strerror or str(e)


def _fileno(sock):
    """The descriptor of @sock: an int, or an object with fileno()."""
    if isinstance(sock, bool):
        raise TypeError("expected a socket or a file descriptor, not a bool")
    if isinstance(sock, int):
        fd = sock
    elif hasattr(sock, "fileno"):
        fd = sock.fileno()
        if not isinstance(fd, int) or isinstance(fd, bool):
            raise TypeError("fileno() did not return an int")
    else:
        raise TypeError(f"expected a socket or a file descriptor, not {type(sock).__name__}")
    if fd < 0:
        raise ValueError("the socket is closed (no file descriptor)")
    return fd


_AT_NULL = 0
_AT_SECURE = 23
_AUXV_ENTRY = struct.Struct("@LL")  # a_type, a_val: two unsigned longs


def _privileged():
    """Must this process distrust its environment (as secure_getenv() does)?

    True when the real and effective user or group ids differ, or when the
    kernel set AT_SECURE (setuid, setgid, file capabilities, some LSMs).
    When /proc/self/auxv cannot be read or has no AT_SECURE entry, True:
    fail safe."""
    if os.getuid() != os.geteuid() or os.getgid() != os.getegid():
        return True
    try:
        with open("/proc/self/auxv", "rb") as f:
            auxv = f.read()
    except OSError:
        return True
    for off in range(0, len(auxv) - _AUXV_ENTRY.size + 1, _AUXV_ENTRY.size):
        key, value = _AUXV_ENTRY.unpack_from(auxv, off)
        if key == _AT_SECURE:
            return value != 0
        if key == _AT_NULL:
            break
    return True


def resolve_socket_path(path=None):
    """The socket path a call with @path would use.

    @path if it is not ``None``, else ``$CREDGATE_SOCKET`` if set and not
    empty and this process is not privileged (see the module
    documentation), else :data:`DEFAULT_SOCKET`. An empty @path is a
    :class:`ValueError`.
    """
    if path is None:
        env = os.environ.get("CREDGATE_SOCKET")
        # A setuid program must not let its invoker pick a fake daemon.
        if env and not _privileged():
            return env
        return DEFAULT_SOCKET
    path = os.fspath(path)
    if not path:
        raise ValueError("empty socket path")
    return path


# ---------------------------------------------------------------------------
# Peer credentials (no daemon involved)

_libc = None


def _libc_getsockopt():
    global _libc
    if _libc is None:
        import ctypes
        import ctypes.util
        try:
            lib = ctypes.CDLL(None, use_errno=True)
            fn = lib.getsockopt
        except (OSError, AttributeError):
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fn = lib.getsockopt
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
        fn.restype = ctypes.c_int
        _libc = (ctypes, fn)
    return _libc


def _groups_big(fd, want):
    """SO_PEERGROUPS through libc: socket.getsockopt() takes at most 1024
    bytes (256 groups); a peer may hold up to NGROUPS_MAX (65536)."""
    ctypes, getsockopt = _libc_getsockopt()
    n = max(want, 1024)
    for _ in range(8):
        buf = (ctypes.c_uint32 * n)()
        length = ctypes.c_uint32(n * 4)
        if getsockopt(fd, socket.SOL_SOCKET, _SO_PEERGROUPS, buf, ctypes.byref(length)) == 0:
            if length.value % 4 or length.value > n * 4:
                raise OSError(errno.EIO, "SO_PEERGROUPS returned a bad length")
            return list(buf[: length.value // 4])
        err = ctypes.get_errno()
        if err == errno.EINTR:
            continue
        # On ERANGE the kernel stores the size it needs in length.
        if err != errno.ERANGE or length.value <= n * 4:
            raise OSError(err, os.strerror(err))
        n = length.value // 4
    raise OSError(errno.ERANGE, os.strerror(errno.ERANGE))


def _peer_groups(s):
    # Start with room for 64 groups; socket.getsockopt() allows at most 1024
    # bytes, so beyond 256 groups ask libc directly.
    for n in (64, 256):
        try:
            raw = s.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, n * 4)
        except OSError as e:
            if e.errno != errno.ERANGE:
                raise
            continue
        if len(raw) % 4:
            raise OSError(errno.EIO, "SO_PEERGROUPS returned a bad length")
        return list(struct.unpack(f"={len(raw) // 4}I", raw))
    return _groups_big(s.fileno(), 1024)


def _read_peer_creds(s):
    try:
        domain = s.getsockopt(socket.SOL_SOCKET, _SO_DOMAIN)
        stype = s.getsockopt(socket.SOL_SOCKET, _SO_TYPE)
    except OSError as e:
        raise CredgateError("not-unix-stream", f"not a socket: {_why(e)}", errno=e.errno) from None
    if domain != socket.AF_UNIX or stype != socket.SOCK_STREAM:
        raise CredgateError("not-unix-stream", "not an AF_UNIX SOCK_STREAM socket", errno=errno.EPROTOTYPE)
    try:
        # On a listening socket SO_PEERCRED names whoever called listen().
        if s.getsockopt(socket.SOL_SOCKET, _SO_ACCEPTCONN):
            raise CredgateError("not-connected", "a listening socket has no peer", errno=errno.ENOTCONN)
        raw = s.getsockopt(socket.SOL_SOCKET, _SO_PEERCRED, _UCRED.size)
        if len(raw) != _UCRED.size:
            raise CredgateError("no-credentials", "SO_PEERCRED returned a bad length", errno=errno.EIO)
        pid, uid, gid = _UCRED.unpack(raw)
        # An unconnected socket reports uid and gid (uid_t) -1.
        if uid == _NO_ID or gid == _NO_ID:
            raise CredgateError("not-connected", "the socket has no connected peer", errno=errno.ENOTCONN)
        groups = _peer_groups(s)
    except OSError as e:
        raise CredgateError("no-credentials", f"cannot read peer credentials: {_why(e)}",
                            errno=e.errno) from None
    return Creds(pid, uid, gid, tuple(sorted(set(groups))))


def peer_creds(sock) -> Creds:
    """The peer credentials of a connected Unix stream socket.

    @sock is a :class:`socket.socket` or an int file descriptor, e.g. a
    connection a service accepted; it stays open and owned by the caller.
    Returns :class:`Creds` as the kernel recorded them when the peer called
    ``connect(2)`` (``SO_PEERCRED`` and ``SO_PEERGROUPS``). No daemon is
    involved.

    Raises :class:`CredgateError` with reason ``"not-connected"`` for a
    listening or an unconnected socket, ``"not-unix-stream"`` for anything
    that is not an ``AF_UNIX`` ``SOCK_STREAM`` socket, and
    ``"no-credentials"`` when the kernel refuses to tell.
    """
    if isinstance(sock, socket.socket):
        _fileno(sock)
        return _read_peer_creds(sock)
    fd = _fileno(sock)
    try:
        dup = os.dup(fd)
    except OSError as e:
        raise CredgateError("not-unix-stream", f"bad file descriptor {fd}: {_why(e)}", errno=e.errno) from None
    try:
        s = socket.socket(fileno=dup)
    except OSError as e:
        os.close(dup)
        raise CredgateError("not-unix-stream", f"not a socket: {_why(e)}", errno=e.errno) from None
    with s:
        return _read_peer_creds(s)


# ---------------------------------------------------------------------------
# The connection

def _parse_creds(line):
    m = _CREDS_RE.fullmatch(line)
    if not m:
        return None
    pid, uid, gid = (int(x) for x in m.group(1, 2, 3))
    groups = [int(x) for x in m.group(4).split(b",")] if m.group(4) else []
    if pid > 0x7FFFFFFF or uid >= _NO_ID or gid >= _NO_ID or any(g >= _NO_ID for g in groups):
        return None
    # The daemon sends the groups ascending without duplicates, as libcredgate
    # requires too; anything else is not a reply of the daemon.
    if any(a >= b for a, b in zip(groups, groups[1:])):
        return None
    return Creds(pid, uid, gid, tuple(groups))


class Client:
    """One connection to credgated, for many requests.

    ``Client(socket_path=None, timeout=5.0)`` connects at once (raising
    :class:`CredgateError` on failure). The daemon judges every request on
    this connection by the credentials this process had when it connected.
    Use it as a context manager, or call :meth:`close`::

        with credgate.Client() as c:
            if c.check("org.example.status"):
                ...

    ``timeout`` (seconds) limits each call. The daemon closes a connection
    that sends no request for its own timeout (10 s by default); a later
    call then raises ``CredgateError(reason="timeout")``.

    After any :class:`CredgateError` the client is broken: its connection is
    closed and later calls raise ``CredgateError("connection-closed")``.
    ``ValueError``/``TypeError`` for a bad argument leave it usable. A Client
    must not be used by two threads at the same time.
    """

    def __init__(self, socket_path=None, timeout=DEFAULT_TIMEOUT):
        self._timeout = _check_timeout(timeout)
        self._path = resolve_socket_path(socket_path)
        self._sock = None
        self._sel = None
        self._buf = bytearray()
        self._eof = False
        self._broken = None
        self._connect()

    # -- public ------------------------------------------------------------
    @property
    def socket_path(self):
        """The socket path this client connected to."""
        return self._path

    @property
    def timeout(self):
        """Seconds each call may wait for the daemon."""
        return self._timeout

    @property
    def closed(self):
        """True once the client is closed or broken by an error."""
        return self._sock is None

    def close(self):
        """Close the connection. Later calls raise ``CredgateError``.
        Closing twice is fine."""
        if self._broken is None:
            self._broken = "the client is closed"
        self._drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def check(self, action) -> bool:
        """May this process perform @action?

        Returns ``True`` only when the daemon answers ``ALLOW`` and ``False``
        when it answers ``DENY``; raises :class:`CredgateError` otherwise.
        A bad action raises :class:`ValueError` and nothing is sent.
        """
        req = b"CHECK " + _check_action(action) + b"\n"
        with self._call() as deadline:
            self._send_all(req, deadline)
            allowed = self._decision(self._read_line(deadline, _SHORT_LINE_MAX))
            self._no_more_replies()
            return allowed

    def check_many(self, actions) -> List[bool]:
        """Check several actions at once, pipelined.

        All requests are sent before (and while) the replies are read, so a
        batch costs about one round trip. Returns a list of bools in the
        order of @actions. Every action is validated first: one bad action
        raises :class:`ValueError` and nothing is sent. Any reply other than
        ``ALLOW``/``DENY`` fails the whole call with :class:`CredgateError`.

        The timeout restarts whenever the daemon accepts or sends data, so a
        large batch may take longer than ``timeout`` in total.
        """
        actions = list(actions)
        data = b"".join(b"CHECK " + _check_action(a) + b"\n" for a in actions)
        with self._call():
            if not actions:
                return []
            return self._pipeline(data, len(actions))

    def check_peer(self, sock, action) -> bool:
        """Broker query: may the peer of @sock perform @action?

        @sock is a connected Unix stream socket (a :class:`socket.socket`
        or an int file descriptor), typically a connection this service
        accepted; the daemon decides for the process at its other end, not
        for this one. The descriptor is sent with the request in one
        ``sendmsg(2)`` (``SCM_RIGHTS``) and stays open and owned by the
        caller.

        Returns ``True`` only on ``ALLOW``. A descriptor that is not a
        connected Unix stream socket gets ``CredgateError`` with reason
        ``"bad-peer-fd"``. A process that the daemon's policy does not name
        as a broker gets reason ``"not-a-broker"``, whether the daemon says
        so (``ERR not-a-broker``) or the kernel refuses to pass the
        descriptor (``EPERM``, ``SO_PASSRIGHTS``). A bad action raises
        :class:`ValueError` and nothing is sent.
        """
        fd = _fileno(sock)
        req = b"CHECK-PEER " + _check_action(action) + b"\n"
        with self._call() as deadline:
            self._send_with_fd(req, fd, deadline)
            return self._decision(self._read_line(deadline, _SHORT_LINE_MAX))

    def explain(self, action) -> Explanation:
        """As :meth:`check`, and say why: the rule that decided and its
        message, as :class:`Explanation`. A bad action raises
        :class:`ValueError` and nothing is sent."""
        req = b"EXPLAIN " + _check_action(action) + b"\n"
        with self._call() as deadline:
            self._send_all(req, deadline)
            e = self._explanation(self._read_line(deadline, _EXPLAIN_LINE_MAX))
            self._no_more_replies()
            return e

    def explain_peer(self, sock, action) -> Explanation:
        """As :meth:`check_peer`, with the reason of :meth:`explain`."""
        fd = _fileno(sock)
        req = b"EXPLAIN-PEER " + _check_action(action) + b"\n"
        with self._call() as deadline:
            self._send_with_fd(req, fd, deadline)
            return self._explanation(self._read_line(deadline, _EXPLAIN_LINE_MAX))

    def whoami(self) -> Creds:
        """The credentials the daemon judges this connection by
        (``WHOAMI``), as :class:`Creds`."""
        with self._call() as deadline:
            self._send_all(b"WHOAMI\n", deadline)
            line = self._read_line(deadline, _CREDS_LINE_MAX)
            creds = _parse_creds(line)
            if creds is None:
                raise self._reply_error(line, "CREDS")
            return creds

    def ping(self) -> None:
        """Check that the daemon answers (``PING`` → ``PONG``); raises
        :class:`CredgateError` if it does not."""
        with self._call() as deadline:
            self._send_all(b"PING\n", deadline)
            line = self._read_line(deadline, _SHORT_LINE_MAX)
            if line != b"PONG":
                raise self._reply_error(line, "PONG")

    def __repr__(self):
        state = "closed" if self._sock is None else "open"
        return f"<credgate.Client {self._path!r} {state}>"

    # -- connection state ----------------------------------------------------
    def _drop(self):
        sel, sock = self._sel, self._sock
        self._sel = self._sock = None
        self._buf = bytearray()
        if sel is not None:
            try:
                sel.close()
            except Exception:
                pass
        if sock is not None:
            sock.close()

    def _fail(self, err):
        """Break the client and return @err for raising."""
        if self._broken is None:
            self._broken = f"broken by an earlier error ({err})"
        self._drop()
        return err

    def _call(self):
        return _Call(self)

    def _connect(self):
        deadline = time.monotonic() + self._timeout
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as e:
            raise CredgateError("io-error", f"socket(): {_why(e)}", errno=e.errno) from None
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CredgateError("timeout", f"connecting to {self._path!r} timed out", errno=errno.ETIMEDOUT)
                sock.settimeout(left)
                try:
                    sock.connect(self._path)
                    break
                except BlockingIOError:
                    # A full listen backlog: EAGAIN on a Unix socket. Retry.
                    time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
                except socket.timeout:
                    continue
                except OSError as e:
                    raise CredgateError("connect-failed", f"cannot connect to {self._path!r}: {_why(e)}",
                                        errno=e.errno) from None
            sock.setblocking(False)
            sel = selectors.PollSelector() if hasattr(selectors, "PollSelector") else selectors.SelectSelector()
            sel.register(sock, selectors.EVENT_READ)
        except BaseException:
            sock.close()
            raise
        self._sock, self._sel = sock, sel

    def _wait(self, events, deadline):
        """Wait until the socket is ready for @events; return the ready
        events, 0 on timeout."""
        self._sel.modify(self._sock, events)
        left = deadline - time.monotonic()
        if left <= 0:
            return 0
        ready = self._sel.select(left)
        return ready[0][1] if ready else 0

    def _timeout_error(self):
        return CredgateError("timeout", f"no reply from the daemon within {self._timeout:g} s",
                             errno=errno.ETIMEDOUT)

    # -- reading ---------------------------------------------------------------
    def _recv(self):
        """One non-blocking read into the buffer: True if something came,
        False if nothing was there. Sets _eof at end of stream."""
        try:
            chunk = self._sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        except ConnectionResetError:
            # The daemon closed with input of ours unread; the data it sent
            # before came first.
            chunk = b""
        except OSError as e:
            raise CredgateError("io-error", f"recv(): {_why(e)}", errno=e.errno) from None
        if chunk:
            self._buf += chunk
        else:
            self._eof = True
        return True

    def _take_line(self, limit):
        """A complete line from the buffer (without \\n), or None."""
        i = self._buf.find(b"\n", 0, limit + 1)
        if i < 0:
            if len(self._buf) > limit:
                raise CredgateError("malformed-reply", f"reply line longer than {limit} bytes")
            return None
        line = bytes(self._buf[:i])
        del self._buf[: i + 1]
        return line

    def _read_line(self, deadline, limit):
        while True:
            line = self._take_line(limit)
            if line is not None:
                return line
            if self._eof:
                what = f" after a partial line {bytes(self._buf[:80])!r}" if self._buf else ""
                raise CredgateError("connection-closed", "the daemon closed the connection" + what)
            if not self._wait(selectors.EVENT_READ, deadline):
                if time.monotonic() >= deadline:
                    raise self._timeout_error()
                continue
            self._recv()

    def _check_quiet(self):
        """Before a request: nothing may be pending. Replies come only to
        requests, so a pending line is either the daemon's ERR for an idle
        connection (ERR timeout) or a protocol violation."""
        if not self._buf and not self._eof:
            self._recv()
        if self._buf or self._eof:
            line = self._take_line(_SHORT_LINE_MAX)
            if line is not None:
                raise self._reply_error(line, "nothing (no request pending)")
            if self._eof and not self._buf:
                raise CredgateError("connection-closed", "the daemon closed the connection")
            raise CredgateError("malformed-reply", "unsolicited data from the daemon")

    def _no_more_replies(self):
        """After the last reply a check asked for: nothing more may be
        waiting (looked at without blocking). A reply to nothing means the
        daemon is out of step with us, as libcredgate's check calls say."""
        if not self._buf and not self._eof:
            self._recv()
        if self._buf:
            raise CredgateError("malformed-reply", "more replies than requests")

    # -- replies ---------------------------------------------------------------
    @staticmethod
    def _reply_error(line, wanted):
        m = _ERR_RE.fullmatch(line)
        if m:
            reason = m.group(1).decode("ascii")
            return CredgateError(reason, f"the daemon answered {line.decode('ascii')!r}", from_daemon=True)
        return CredgateError("malformed-reply", f"expected {wanted}, got {line[:80]!r}"
                             + ("..." if len(line) > 80 else ""))

    def _explanation(self, line):
        m = _EXPLAIN_RE.fullmatch(line)
        if not m:
            raise self._reply_error(line, "ALLOW or DENY with a rule reference")
        msg = m.group(3)
        return Explanation(m.group(1) == b"ALLOW", m.group(2).decode("ascii"),
                           msg.decode("ascii") if msg is not None else None)

    def _decision(self, line):
        if line == b"ALLOW":
            return True
        if line == b"DENY":
            return False
        raise self._reply_error(line, "ALLOW or DENY")

    # -- writing ---------------------------------------------------------------
    def _closed_while_sending(self, e):
        """The daemon closed while we were sending: report the ERR it sent
        before closing, if any."""
        try:
            for _ in range(64):
                if self._eof or not self._recv():
                    break
            while True:
                line = self._take_line(_SHORT_LINE_MAX)
                if line is None:
                    break
                if _ERR_RE.fullmatch(line):
                    return self._reply_error(line, "a reply")
        except CredgateError:
            pass
        return CredgateError("connection-closed", f"the daemon closed the connection ({_why(e)})", errno=e.errno)

    def _send_some(self, view):
        try:
            return self._sock.send(view, _MSG_NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            return 0
        except (BrokenPipeError, ConnectionResetError) as e:
            raise self._closed_while_sending(e) from None
        except OSError as e:
            raise CredgateError("io-error", f"send(): {_why(e)}", errno=e.errno) from None

    def _send_all(self, data, deadline):
        view = memoryview(data)
        while view:
            n = self._send_some(view)
            if n:
                view = view[n:]
                continue
            if not self._wait(selectors.EVENT_WRITE, deadline) and time.monotonic() >= deadline:
                raise self._timeout_error()

    def _send_with_fd(self, data, fd, deadline):
        while True:
            try:
                # The line and its descriptor in ONE sendmsg(): the daemon
                # ties an fd to the line whose bytes came with it.
                n = socket.send_fds(self._sock, [data], [fd], _MSG_NOSIGNAL)
                break
            except (BlockingIOError, InterruptedError):
                pass
            except (BrokenPipeError, ConnectionResetError) as e:
                raise self._closed_while_sending(e) from None
            except OSError as e:
                if e.errno == errno.EBADF:
                    raise CredgateError("bad-peer-fd", f"cannot pass descriptor {fd}: {_why(e)}",
                                        errno=e.errno) from None
                if e.errno == errno.EPERM:
                    # The daemon's socket takes descriptors only from brokers
                    # (SO_PASSRIGHTS): the kernel's way of saying not-a-broker.
                    raise CredgateError("not-a-broker", "the daemon accepts descriptors only from the brokers "
                                        "its policy names (settings: brokers)", errno=e.errno) from None
                raise CredgateError("io-error", f"sendmsg(): {_why(e)}", errno=e.errno) from None
            if not self._wait(selectors.EVENT_WRITE, deadline) and time.monotonic() >= deadline:
                raise self._timeout_error()
        if n < len(data):
            # The descriptor went with the first bytes; the rest of the line
            # follows without one.
            self._send_all(data[n:], deadline)

    def _pipeline(self, data, n):
        """Send @data (n request lines) while reading the n replies."""
        view = memoryview(data)
        sent = 0
        lines_sent = 0
        results = []
        deadline = time.monotonic() + self._timeout
        while True:
            while len(results) < n:
                line = self._take_line(_SHORT_LINE_MAX)
                if line is None:
                    break
                results.append(self._decision(line))
                if len(results) > lines_sent:
                    raise CredgateError("malformed-reply", "more replies than requests")
            if len(results) == n:
                # Whatever follows the last reply answers nothing: not parsed.
                self._no_more_replies()
                return results
            if self._eof:
                raise CredgateError("connection-closed",
                                    f"the daemon closed the connection after {len(results)} of {n} replies")
            events = selectors.EVENT_READ
            if sent < len(data):
                events |= selectors.EVENT_WRITE
            ready = self._wait(events, deadline)
            progress = False
            if ready & selectors.EVENT_WRITE:
                k = self._send_some(view[sent: sent + _SEND_CHUNK])
                if k:
                    lines_sent += data.count(b"\n", sent, sent + k)
                    sent += k
                    progress = True
            if ready & selectors.EVENT_READ:
                progress = self._recv() or progress
            if progress:
                deadline = time.monotonic() + self._timeout
            elif time.monotonic() >= deadline:
                raise self._timeout_error()


class _Call:
    """Context manager around one Client call: refuses a broken client,
    yields the call's deadline, breaks the client on any failure except a
    bad argument."""

    __slots__ = ("c",)

    def __init__(self, c):
        self.c = c

    def __enter__(self):
        c = self.c
        if c._sock is None:
            raise CredgateError("connection-closed", c._broken or "the client is closed")
        try:
            c._check_quiet()
        except CredgateError as e:
            raise c._fail(e) from None
        return time.monotonic() + c._timeout

    def __exit__(self, typ, exc, tb):
        if typ is None:
            return False
        if isinstance(exc, CredgateError):
            self.c._fail(exc)
        else:
            # Anything unexpected (KeyboardInterrupt mid-request, ...): the
            # stream may be out of step, never reuse it.
            self.c._fail(CredgateError("connection-closed", f"interrupted by {typ.__name__}"))
        return False


# ---------------------------------------------------------------------------
# One-shot calls

def check(action, socket_path=None, timeout=DEFAULT_TIMEOUT) -> bool:
    """Connect, ask whether this process may perform @action, close.

    Returns ``True`` only on ``ALLOW``, ``False`` on ``DENY``; raises
    :class:`CredgateError` on any other outcome and :class:`ValueError` for
    a bad action (before connecting).
    """
    _check_action(action)
    with Client(socket_path, timeout) as c:
        return c.check(action)


def check_peer(sock, action, socket_path=None, timeout=DEFAULT_TIMEOUT) -> bool:
    """Connect, ask whether the peer of @sock may perform @action, close.

    See :meth:`Client.check_peer`; @sock stays owned by the caller.
    """
    _fileno(sock)
    _check_action(action)
    with Client(socket_path, timeout) as c:
        return c.check_peer(sock, action)


def explain(action, socket_path=None, timeout=DEFAULT_TIMEOUT) -> Explanation:
    """Connect, ask with the reason (see :meth:`Client.explain`), close."""
    _check_action(action)
    with Client(socket_path, timeout) as c:
        return c.explain(action)


def explain_peer(sock, action, socket_path=None, timeout=DEFAULT_TIMEOUT) -> Explanation:
    """Connect, ask for the peer of @sock with the reason, close. See
    :meth:`Client.explain_peer`; @sock stays owned by the caller."""
    _fileno(sock)
    _check_action(action)
    with Client(socket_path, timeout) as c:
        return c.explain_peer(sock, action)


def whoami(socket_path=None, timeout=DEFAULT_TIMEOUT) -> Creds:
    """Connect, ask who the daemon sees (``WHOAMI``), close. Returns
    :class:`Creds`."""
    with Client(socket_path, timeout) as c:
        return c.whoami()
