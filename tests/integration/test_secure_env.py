#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""$CREDGATE_SOCKET in privileged programs (issue 10, part 3).

A setuid, setgid or file-capability program that asks credgated with no
socket path must not take the path from the environment of whoever runs
it: that user could point it at a fake daemon that answers ALLOW to
anything. Each case runs, as uid 65534 with CREDGATE_SOCKET naming such a
fake daemon, a privileged copy of a client (which must not contact the
fake at all) and an unprivileged copy of the same client (which must get
its ALLOW: the variable works, so the test can fail):

* check-env (tests/integration/check-env.c), libcredgate's code calling
  credgate_check_once(NULL, ...): setuid to uid 2, and with a file
  capability, where the real and effective ids are equal and only
  AT_SECURE tells;
* a copy of the Python interpreter importing src/python/credgate.py,
  likewise.

Needs root (chown, setuid bits, file capabilities, running as 65534).
"""

import os
import shutil
import socket
import struct
import tempfile
import threading
import unittest

import cgtest

NOBODY = 65534
OWNER = 2  # "bin": the uid the setuid copies switch to, not root, not us
_MODULE_DIR = os.environ.get("CREDGATE_PYTHONPATH") or os.path.join(cgtest.srcdir(), "src", "python")

# struct vfs_cap_data, revision 2: magic with VFS_CAP_FLAGS_EFFECTIVE, then
# (permitted, inheritable) for capabilities 0-31 and 32-63.
_CAP_NET_BIND_SERVICE = 10
_FILE_CAP = struct.pack("<5I", 0x02000000 | 1, 1 << _CAP_NET_BIND_SERVICE, 0, 0, 0)

PY_CODE = """\
import sys
sys.path.insert(0, sys.argv[1])
import credgate
print("path=" + credgate.resolve_socket_path())
try:
    print("ALLOW" if credgate.check("t.env", timeout=2) else "DENY")
except credgate.CredgateError as e:
    print("error: " + e.reason)
"""


class FakeDaemon:
    """A daemon that answers ALLOW to every line (PONG to PING), on a
    socket any uid may reach. Counts the connections it accepted."""

    def __init__(self):
        self.dir = cgtest.mkdtemp("cgfake-")
        self.path = os.path.join(self.dir, "fake.sock")
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(self.path)
        os.chmod(self.path, 0o666)
        self.lsock.listen(16)
        self.lsock.settimeout(0.05)
        self.connections = 0
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
                conn.settimeout(5)
                try:
                    for line in conn.makefile("rb"):
                        conn.sendall(b"PONG\n" if line == b"PING\n" else b"ALLOW\n")
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.thread.join(10)
        self.lsock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def suid_capable_dir():
    """A fresh folder (0755) on a file system that honours setuid bits and
    file capabilities (not mounted nosuid), or None."""
    d = cgtest.mkdtemp("cgsec-")
    if not os.statvfs(d).f_flag & os.ST_NOSUID:
        return d
    shutil.rmtree(d, ignore_errors=True)
    b = os.path.join(cgtest.builddir(), "tests", "integration")
    if os.path.isdir(b) and not os.statvfs(b).f_flag & os.ST_NOSUID:
        d = tempfile.mkdtemp(prefix="cgsec-", dir=b)
        os.chmod(d, 0o755)
        return d
    return None


@cgtest.needs_root
class SecureEnvTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = suid_capable_dir()
        if cls.dir is None:
            raise unittest.SkipTest("no file system here honours setuid bits (all candidates are nosuid)")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def setUp(self):
        self.fake = FakeDaemon()
        self.addCleanup(self.fake.close)

    def copy(self, src, name, how):
        """A copy of @src: "plain" (root, 0755), "setuid" (uid 2, 4755) or
        "filecap" (root, 0755, cap_net_bind_service in its permitted and
        effective sets)."""
        dst = os.path.join(self.dir, name)
        shutil.copyfile(src, dst)
        if how == "setuid":
            os.chown(dst, OWNER, OWNER)  # before chmod: chown clears the setuid bit
            os.chmod(dst, 0o4755)
        else:
            os.chmod(dst, 0o755)
        if how == "filecap":
            try:
                os.setxattr(dst, "security.capability", _FILE_CAP)
            except OSError as e:
                self.skipTest(f"cannot give a file a capability here: {e}")
        return dst

    def run_nobody(self, argv):
        env = {"CREDGATE_SOCKET": self.fake.path, "PATH": "/usr/bin:/bin", "LANG": "C"}
        # A sanitizer build: keep its options for the plain copies. (A
        # privileged copy cannot read them, and LeakSanitizer cannot trace it
        # at exit: for those only the output is judged, not the exit status.)
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if k in os.environ:
                env[k] = os.environ[k]
        return cgtest.run_as(NOBODY, NOBODY, [], argv, env=env)

    # -- libcredgate ---------------------------------------------------------
    def check_env(self, how):
        prog = self.copy(os.path.join(cgtest.builddir(), "tests", "integration", "check-env"), f"check-env-{how}",
                         how)
        r = self.run_nobody([prog, "t.env"])
        out = r.stdout.splitlines()
        self.assertTrue(out, f"no output; stderr: {r.stderr}")
        return out, r

    def test_lib_honours_the_variable_unprivileged(self):
        out, r = self.check_env("plain")
        self.assertEqual(out, ["secure=0", "ALLOW"], r.stderr)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(self.fake.connections, 1)

    def test_lib_setuid_ignores_the_variable(self):
        out, r = self.check_env("setuid")
        self.assertEqual(out[0], "secure=1", "the setuid copy did not run with AT_SECURE")
        self.assertNotIn("ALLOW", out, r.stderr)
        self.assertEqual(self.fake.connections, 0, "the setuid program asked the daemon its user named")

    def test_lib_file_capability_ignores_the_variable(self):
        out, r = self.check_env("filecap")
        self.assertEqual(out[0], "secure=1", "the copy with a file capability did not run with AT_SECURE")
        self.assertNotIn("ALLOW", out, r.stderr)
        self.assertEqual(self.fake.connections, 0, "the program with a capability asked the daemon its user named")

    # -- the Python module -----------------------------------------------------
    def python(self, how):
        py = self.copy(os.path.realpath("/usr/bin/python3"), f"python3-{how}", how)
        r = self.run_nobody([py, "-c", PY_CODE, _MODULE_DIR])
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.splitlines()

    def test_python_honours_the_variable_unprivileged(self):
        self.assertEqual(self.python("plain"), [f"path={self.fake.path}", "ALLOW"])
        self.assertEqual(self.fake.connections, 1)

    def test_python_setuid_ignores_the_variable(self):
        out = self.python("setuid")
        self.assertEqual(out[0], "path=/run/credgate/credgate.sock")
        self.assertNotIn("ALLOW", out)
        self.assertEqual(self.fake.connections, 0)

    def test_python_file_capability_ignores_the_variable(self):
        out = self.python("filecap")
        self.assertEqual(out[0], "path=/run/credgate/credgate.sock")
        self.assertNotIn("ALLOW", out)
        self.assertEqual(self.fake.connections, 0)


if __name__ == "__main__":
    cgtest.main()
