#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The systemd units: `systemd-analyze verify` is silent on both, and the
service's offline security exposure score is at most 1.0."""

import os
import re
import shutil
import subprocess
import unittest

import cgtest

MAX_EXPOSURE = 1.0


class UnitsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = cgtest.mkdtemp("cg-units-")
        src = os.path.join(cgtest.srcdir(), "systemd")
        for unit in ("credgated.socket", "credgated-metrics.socket", "credgate-textfile.timer"):
            shutil.copy(os.path.join(src, unit), cls.dir)
        with open(os.path.join(src, "credgate-textfile.service.in")) as f:
            cls.textfile_text = f.read().replace("@bindir@", os.path.dirname(os.path.abspath(cgtest.cli())))
        with open(os.path.join(cls.dir, "credgate-textfile.service"), "w") as f:
            f.write(cls.textfile_text)
        # Generate the service as the Makefile does, but pointing ExecStart=
        # at the binary under test (verify needs it to exist).
        with open(os.path.join(src, "credgated.service.in")) as f:
            text = f.read()
        sbindir = os.path.dirname(os.path.abspath(cgtest.credgated()))
        text = text.replace("@sbindir@", sbindir).replace("@sysconfdir@", "/etc")
        cls.service_text = text
        with open(os.path.join(cls.dir, "credgated.service"), "w") as f:
            f.write(text)
        # Documentation=man:... is checked with man(1): point it at the
        # pages in the source tree, which is what gets installed.
        man = os.path.join(cls.dir, "man")
        for page, section in (("credgated.8", "8"), ("credgate.conf.5", "5"), ("credgate.1", "1")):
            os.makedirs(os.path.join(man, "man" + section), exist_ok=True)
            os.symlink(os.path.join(cgtest.srcdir(), "docs", page), os.path.join(man, "man" + section, page))
        cls.env = dict(os.environ, MANPATH=man, SYSTEMD_PAGER="", SYSTEMD_COLORS="0", LC_ALL="C.UTF-8")
        for k in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID"):
            cls.env.pop(k, None)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def unit(self, name):
        return os.path.join(self.dir, name)

    def verify(self, *units):
        return cgtest.run([cgtest.systemd_analyze(), "verify", *units], env=self.env, cwd=self.dir, timeout=60)

    def assert_verify_clean(self, *units):
        r = self.verify(*units)
        self.assertEqual((r.returncode, r.stderr), (0, ""),
                         f"systemd-analyze verify {' '.join(units)}:\nstdout: {r.stdout}\nstderr: {r.stderr}")

    def test_no_placeholders_left(self):
        self.assertNotRegex(self.service_text, r"@[A-Za-z_]+@", "unsubstituted placeholder")
        self.assertTrue(os.access(re.search(r"^ExecStart=(\S+)", self.service_text, re.M).group(1), os.X_OK))

    def test_verify_socket(self):
        self.assert_verify_clean(self.unit("credgated.socket"))

    def test_verify_service(self):
        self.assert_verify_clean(self.unit("credgated.service"))

    def test_verify_both(self):
        self.assert_verify_clean(self.unit("credgated.socket"), self.unit("credgated.service"))

    def test_verify_metrics_units(self):
        """The optional metrics socket (handed to credgated.service, named "metrics") and the
        node_exporter textfile example pair."""
        self.assert_verify_clean(self.unit("credgated.socket"), self.unit("credgated.service"),
                                 self.unit("credgated-metrics.socket"))
        self.assert_verify_clean(self.unit("credgate-textfile.service"), self.unit("credgate-textfile.timer"),
                                 self.unit("credgated-metrics.socket"), self.unit("credgated.service"),
                                 self.unit("credgated.socket"))
        with open(self.unit("credgated-metrics.socket")) as f:
            text = f.read()
        for line in ("Service=credgated.service", "FileDescriptorName=metrics", "SocketMode=0600"):
            self.assertIn("\n" + line + "\n", text)
        self.assertNotRegex(self.textfile_text, r"@[A-Za-z_]+@", "unsubstituted placeholder")

    def test_verify_catches_warnings(self):
        """The check above can fail: an unknown key is only a warning (exit
        0), yet it must be noticed."""
        bad = self.unit("bad")
        os.makedirs(bad, exist_ok=True)
        with open(os.path.join(bad, "credgated.service"), "w") as f:
            f.write(self.service_text.replace("[Service]\n", "[Service]\nNoSuchKeyCgtest=yes\n"))
        shutil.copy(self.unit("credgated.socket"), bad)
        r = self.verify(os.path.join(bad, "credgated.service"))
        self.assertIn("NoSuchKeyCgtest", r.stderr)

    def test_man_pages_lint_clean(self):
        mandoc = shutil.which("mandoc")
        if not mandoc:
            self.skipTest("mandoc is not installed (the README's setup installs it)")
        docs = os.path.join(os.environ["CREDGATE_SRCDIR"], "docs")
        pages = sorted(f for f in os.listdir(docs) if re.fullmatch(r"[a-z.]+\.[1-8]", f))
        self.assertEqual(pages, ["credgate.1", "credgate.conf.5", "credgated.8", "libcredgate.3"])
        for page in pages:
            r = subprocess.run([mandoc, "-Tlint", "-W", "warning", os.path.join(docs, page)],
                               capture_output=True, text=True)
            self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""), page)

    def test_security_exposure(self):
        r = cgtest.run([cgtest.systemd_analyze(), "security", "--no-pager", "--offline=true",
                        self.unit("credgated.service")], env=self.env, cwd=self.dir, timeout=60)
        out = r.stdout + r.stderr
        m = re.search(r"Overall exposure level for credgated\.service:\s*([0-9]+(?:\.[0-9]+)?)", out)
        self.assertIsNotNone(m, f"no exposure score in the output (status {r.returncode}):\n{out}")
        score = float(m.group(1))
        # Offending lines, worst first.
        bad = []
        for line in r.stdout.splitlines():
            mm = re.match(r"^✗\s+(.*?)\s+(\d+(?:\.\d+)?)\s*$", line)
            if mm:
                bad.append((float(mm.group(2)), re.sub(r"\s{2,}", "  ", mm.group(1))))
        bad.sort(key=lambda x: -x[0])
        print(f"# systemd-analyze security exposure score: {score}", flush=True)
        for e, text in bad:
            print(f"#   {e:.1f}  {text}", flush=True)
        self.assertLessEqual(score, MAX_EXPOSURE,
                             f"exposure {score} > {MAX_EXPOSURE}; worst settings:\n" +
                             "\n".join(f"{e:.1f}  {t}" for e, t in bad[:10]))


if __name__ == "__main__":
    cgtest.main()
