#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""docs/admin.md, "Policy in a fleet" (issue 12): its examples run here as
written, with the paths moved into a temporary tree and the service's
reload pointed at a test daemon.

- The Ansible playbook and the Puppet manifest pass their tools' syntax
  checks as printed, then run for real (ansible-playbook -c local, puppet
  apply): a good site file is validated on its temporary copy by
  credgated -t --drop-in, put in place, and the daemon reloads and decides
  by it; a bad one (an id another file has) is refused by the validation,
  the installed file stays, and no reload happens.
- Salt's check_cmd, with the temporary file appended as Salt does.
- The site-CI commands (credgated -t, credgate test --junit) on a policy tree.

Needs root (the examples chown to root) and ansible-core and puppet (.ci/dev
installs them for the tests); without them the affected checks skip.
"""

import os
import re
import shutil
import signal
import subprocess
import time
import unittest

import cgtest

MAIN = """\
default = "deny";
rules = (
  { id = "status"; action = "org.example.status"; effect = "allow"; anyone = true; }
);
"""

VENDOR = """\
rules = (
  { id = "backupd-run"; action = "org.example.backup.run"; effect = "allow"; users = ["root"]; },
  { action = "org.example.backup.*"; effect = "deny"; anyone = true; }
);
"""

GOOD_SITE = 'rules = ( { id = "site-logs"; action = "org.site.logs"; effect = "allow"; uids = ["0"]; } );\n'
BAD_SITE = 'rules = ( { id = "backupd-run"; action = "org.site.logs"; effect = "allow"; uids = ["0"]; } );\n'


def section(text, title):
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


def fleet_doc():
    with open(os.path.join(cgtest.srcdir(), "docs", "admin.md")) as f:
        return section(f.read(), "Policy in a fleet")


def block(doc, lang):
    """The fenced block of @lang (at any indent), without the indent."""
    m = re.search(rf"^( *)```{lang}\n(.*?)^\1```$", doc, re.S | re.M)
    assert m, f"no ```{lang} block in the 'Policy in a fleet' section"
    indent = len(m.group(1))
    return "".join(line[indent:] for line in m.group(2).splitlines(keepends=True))


def which(prog):
    return shutil.which(prog, path="/usr/bin:/bin:/usr/sbin:/sbin")


class FleetCase(unittest.TestCase):
    """A tree T with etc/credgate, usr/share/credgate/rules.d and a daemon on it."""

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("the examples chown files to root: needs root")
        self.d = cgtest.Daemon(MAIN)
        self.t = self.d.dir
        self.etc = os.path.join(self.t, "etc", "credgate")
        self.rules = os.path.join(self.etc, "rules.d")
        self.vendor = os.path.join(self.t, "usr", "share", "credgate", "rules.d")
        for d in (self.rules, self.vendor, os.path.join(self.t, "files", "credgate")):
            os.makedirs(d, 0o755)
        self.d.policy_path = os.path.join(self.etc, "credgate.conf")
        self.d.write_policy(MAIN)
        with open(os.path.join(self.vendor, "50-backupd.conf"), "w") as f:
            f.write(VENDOR)
        os.chmod(os.path.join(self.vendor, "50-backupd.conf"), 0o644)
        self.d.args = ["--rules-dir", self.rules, "--rules-dir", self.vendor, "--log", "none"]
        self.addCleanup(self.d.cleanup)
        self.d.start()

    def localize(self, text):
        """The example's paths into T, its reload to a SIGHUP of the test daemon."""
        t = self.t
        text = text.replace("/etc/credgate", self.etc)
        text = text.replace("puppet:///modules/credgate/", os.path.join(t, "files", "credgate") + "/")
        text = text.replace("/usr/sbin/credgated",
                            f"{cgtest.credgated()} -c {self.etc}/credgate.conf --rules-dir {self.rules} "
                            f"--rules-dir {self.vendor}")
        pid = self.d.proc.pid
        text = re.sub(r"(/usr/bin/)?systemctl try-reload-or-restart credgated\.service", f"/bin/kill -HUP {pid}",
                      text)
        self.assertNotIn("systemctl", text)
        return text

    def source(self, text):
        with open(os.path.join(self.t, "files", "credgate", "60-site.conf"), "w") as f:
            f.write(text)

    def installed(self):
        try:
            with open(os.path.join(self.rules, "60-site.conf")) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def reloads(self):
        return len(re.findall(r"reloaded: \d+ rules from \d+ files", self.d.stderr()))

    def ask(self, action):
        with cgtest.Client(self.d.socket) as c:
            return c.ask(f"CHECK {action}")

    def apply_good_then_bad(self, run):
        """@run() applies the example; returns (exit status, output)."""
        self.assertEqual(self.ask("org.site.logs"), "DENY")
        before = self.reloads()
        self.source(GOOD_SITE)
        rc, out = run()
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.installed(), GOOD_SITE)
        self.assertEqual(os.stat(os.path.join(self.rules, "60-site.conf")).st_mode & 0o7777, 0o644)
        cgtest.wait_until(lambda: self.reloads() > before, what="the handler's reload", timeout=10)
        self.assertEqual(self.ask("org.site.logs"), "ALLOW")

        reloads = self.reloads()
        self.source(BAD_SITE)
        rc, out = run()
        self.assertNotEqual(rc, 0, out)
        self.assertIn("duplicate rule id 'backupd-run'", out)
        self.assertEqual(self.installed(), GOOD_SITE, "the refused file went live")
        time.sleep(0.3)
        self.assertEqual(self.reloads(), reloads, "a refused file still triggered a reload")
        self.assertEqual(self.ask("org.site.logs"), "ALLOW")


@unittest.skipUnless(which("ansible-playbook"), "ansible-core is not installed")
class TestAnsible(FleetCase):
    def env(self):
        e = dict(os.environ)
        e.pop("NOTIFY_SOCKET", None)
        e.update(HOME=os.path.join(self.t, "home"), ANSIBLE_LOCAL_TEMP=os.path.join(self.t, "ansible-local"),
                 ANSIBLE_REMOTE_TEMP=os.path.join(self.t, "ansible-remote"), ANSIBLE_NOCOLOR="1",
                 ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3", ANSIBLE_RETRY_FILES_ENABLED="0")
        return e

    def playbook(self, text, *args):
        path = os.path.join(self.t, "site.yml")
        with open(path, "w") as f:
            f.write(text)
        # Root already: no sudo in between (ansible_become beats the play's become).
        r = subprocess.run([which("ansible-playbook"), "-i", "localhost,", "-c", "local", "-e", "ansible_become=false",
                            *args, path], env=self.env(), capture_output=True, text=True, timeout=180,
                           stdin=subprocess.DEVNULL)
        return r.returncode, r.stdout + r.stderr

    def test_syntax_as_printed(self):
        rc, out = self.playbook(block(fleet_doc(), "yaml"), "--syntax-check")
        self.assertEqual(rc, 0, out)

    def test_validates_installs_reloads(self):
        text = self.localize(block(fleet_doc(), "yaml"))
        self.apply_good_then_bad(lambda: self.playbook(text))


@unittest.skipUnless(which("puppet"), "puppet is not installed")
class TestPuppet(FleetCase):
    def puppet(self, *args):
        p = os.path.join(self.t, "puppet")
        dirs = [f"--{k}dir={p}/{k}" for k in ("conf", "var", "log", "code")]
        e = dict(os.environ)
        e.pop("NOTIFY_SOCKET", None)
        e["HOME"] = os.path.join(self.t, "home")
        r = subprocess.run([which("puppet"), *args[:1], *dirs, *args[1:]], env=e, capture_output=True, text=True,
                           timeout=300, stdin=subprocess.DEVNULL)
        return r.returncode, r.stdout + r.stderr

    def manifest(self, text):
        path = os.path.join(self.t, "site.pp")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_syntax_as_printed(self):
        rc, out = self.puppet("parser", "validate", self.manifest(block(fleet_doc(), "puppet")))
        self.assertEqual(rc, 0, out)

    def test_validates_installs_reloads(self):
        path = self.manifest(self.localize(block(fleet_doc(), "puppet")))

        def run():
            # --detailed-exitcodes: 2 changes made, 0 none, 4 or 6 failures.
            rc, out = self.puppet("apply", "--detailed-exitcodes", "--color=false", path)
            return (0 if rc == 2 else rc or 1), out

        self.apply_good_then_bad(run)


class TestCommands(FleetCase):
    def test_salt_check_cmd(self):
        m = re.search(r"`check_cmd: ([^`]*)`", fleet_doc().replace("\n", " "))
        self.assertIsNotNone(m, "no check_cmd in the section")
        cmd = self.localize(re.sub(r"\s+", " ", m.group(1)).strip()).split()
        tmp = os.path.join(self.t, "salt-tmp")
        with open(tmp, "w") as f:
            f.write(GOOD_SITE)
        r = cgtest.run(cmd + [tmp])  # Salt appends the temporary file
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(tmp, "w") as f:
            f.write(BAD_SITE)
        r = cgtest.run(cmd + [tmp])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("duplicate rule id 'backupd-run'", r.stderr)

    def test_site_ci_commands(self):
        ci = os.path.join(self.t, "ci")
        os.makedirs(os.path.join(ci, "policy", "rules.d"), 0o755)
        os.makedirs(os.path.join(ci, "policy", "tests"), 0o755)
        files = {
            "credgate.conf": MAIN,
            "rules.d/60-site.conf": GOOD_SITE,
            "tests/site.test": 'cases = (\n'
                               '  { uid = "0"; gid = "0"; action = "org.site.logs"; expect = "allow"; rule = "site-logs"; },\n'
                               '  { user = "root"; action = "org.example.backup.run"; expect = "allow"; rule = "backupd-run"; },\n'
                               '  { uid = "1000"; gid = "1000"; gids = []; actions = ["org.example.backup.run", "org.site.logs"]; expect = "deny"; }\n'
                               ');\n',
        }
        for name, text in files.items():
            with open(os.path.join(ci, "policy", name), "w") as f:
                f.write(text)
            os.chmod(os.path.join(ci, "policy", name), 0o644)
        script = block(fleet_doc(), "sh")
        script = script.replace("/usr/share/credgate/rules.d", self.vendor)
        script = re.sub(r"(?m)^credgated ", cgtest.credgated() + " ", script)
        script = re.sub(r"(?m)^credgate ", cgtest.cli() + " ", script)
        r = subprocess.run(["bash", "-e", "-c", script], cwd=ci, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("4 passed, 0 failed", r.stdout)
        self.assertIn("coverage:", r.stdout)
        with open(os.path.join(ci, "credgate-junit.xml")) as f:
            self.assertIn("<testsuites", f.read())


if __name__ == "__main__":
    cgtest.main()
