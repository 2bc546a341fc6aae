#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The folders credgated trusts (issue 10, part 4), through the real daemon.

The policy: every folder above the main file and the drop-in folders must
be owned by root (or the daemon's user) and writable by nobody else, /tmp
included; 'credgated -t' and a start both refuse, naming the folder. The
standalone socket: its folder likewise, with a message that says why and
what to do. The unit tests (test-sources, test-listen) cover the cases;
this covers what an administrator sees.
"""

import os
import shutil
import stat
import tempfile
import unittest

import cgtest

POLICY = 'default = "deny";\nrules = ( { action = "t.a"; effect = "allow"; anyone = true; } );\n'


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


class FolderTests(unittest.TestCase):
    def setUp(self):
        self.dir = cgtest.mkdtemp("cgdir-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.empty = os.path.join(self.dir, "empty.d")
        os.mkdir(self.empty, 0o755)

    def credgated(self, *args):
        return cgtest.run([cgtest.credgated(), "--rules-dir", self.empty, "--log-target", "stderr", *args],
                          timeout=20)

    def test_base_is_trusted(self):
        # The premise: cgtest's temporary folders pass the checks.
        self.assertTrue(cgtest.trusted_folder(self.dir), self.dir)
        main = os.path.join(self.dir, "credgate.conf")
        write(main, POLICY)
        r = self.credgated("-t", "-c", main)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_policy_in_tmp_refused(self):
        st = os.stat("/tmp")
        if not st.st_mode & stat.S_IWOTH:
            self.skipTest(f"/tmp is not world-writable here (mode {stat.S_IMODE(st.st_mode):04o})")
        d = tempfile.mkdtemp(prefix="cg-tmp-", dir="/tmp")
        self.addCleanup(shutil.rmtree, d, True)
        os.chmod(d, 0o755)
        main = os.path.join(d, "credgate.conf")
        write(main, POLICY)
        r = self.credgated("-t", "-c", main)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"failed   {main}: insecure folder above it", r.stdout)
        self.assertIn(f"/tmp: refusing: folder above '{main}' is writable by others (mode "
                      f"{stat.S_IMODE(st.st_mode):04o}; the sticky bit does not stop anyone from creating entries)",
                      r.stderr)
        # Starting is refused the same way, before any socket is made.
        sock = os.path.join(self.dir, "cg.sock")
        r = self.credgated("-c", main, "-s", sock)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("/tmp: refusing: folder above", r.stderr)
        self.assertFalse(os.path.lexists(sock))

    def test_group_writable_folder_above_drop_ins(self):
        top = os.path.join(self.dir, "etc")
        os.mkdir(top, 0o755)
        os.chmod(top, 0o775)
        rules = os.path.join(top, "rules.d")
        os.mkdir(rules, 0o755)
        write(os.path.join(rules, "10-a.conf"), 'rules = ( { action = "t.b"; effect = "allow"; anyone = true; } );\n')
        main = os.path.join(self.dir, "credgate.conf")
        write(main, POLICY)
        r = cgtest.run([cgtest.credgated(), "-t", "-c", main, "--rules-dir", rules], timeout=20)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"{top}: refusing: folder above '{rules}' is writable by group (mode 0775); "
                      f"fix with: chmod go-w '{top}'", r.stderr)

    # -- the standalone socket -------------------------------------------------
    def start_refused(self, sock):
        main = os.path.join(self.dir, "credgate.conf")
        write(main, POLICY)
        r = self.credgated("-c", main, "-s", sock)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertFalse(os.path.lexists(sock), "a socket was made in a folder that is not trusted")
        return r.stderr

    def test_socket_in_tmp_refused(self):
        st = os.stat("/tmp")
        if not st.st_mode & stat.S_IWOTH:
            self.skipTest(f"/tmp is not world-writable here (mode {stat.S_IMODE(st.st_mode):04o})")
        sock = os.path.join("/tmp", f"cg-{os.getpid()}.sock")
        err = self.start_refused(sock)
        self.assertIn(f"credgated: cannot listen on '{sock}': its folder '/tmp' is writable by others (mode "
                      f"{stat.S_IMODE(st.st_mode):04o}), so another user could put a fake daemon's socket there "
                      "first (the sticky bit does not stop that); use a folder only root can write", err)

    def test_socket_in_group_writable_folder_refused(self):
        run = os.path.join(self.dir, "run")
        os.mkdir(run, 0o755)
        os.chmod(run, 0o775)
        err = self.start_refused(os.path.join(run, "cg.sock"))
        self.assertIn(f"its folder '{run}' is writable by group (mode 0775), so another user could put a fake "
                      f"daemon's socket there; fix with: chmod go-w '{run}'", err)

    @cgtest.needs_root
    def test_socket_in_folder_of_another_user_refused(self):
        run = os.path.join(self.dir, "run")
        os.mkdir(run, 0o755)
        os.chown(run, 1000, 1000)
        err = self.start_refused(os.path.join(run, "cg.sock"))
        self.assertIn(f"its folder '{run}' is owned by uid 1000, so that user could put a fake daemon's socket "
                      "there", err)


if __name__ == "__main__":
    cgtest.main()
