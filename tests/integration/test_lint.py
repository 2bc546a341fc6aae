#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The policy lint and per-file validation (issue 12), through the real
programs: credgated -t and credgate test report rules that can never decide
and ids no user or group has, as warnings that never fail a check; and
credgated -t --drop-in FILE --as NAME checks a candidate drop-in in the
context of the installed policy, as configuration management runs it on a
temporary copy before moving it into place."""

import os
import pwd
import re
import shutil
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
  { id = "ops"; action = "org.example.*"; effect = "allow"; groups = ["root"]; },
  { action = "org.example.backup.*"; effect = "deny"; anyone = true; }
);
"""

STALE_UID = "3999000000"  # far above any id this test host hands out


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def nss_lists_users():
    """Does nsswitch.conf let the lint list every user (files/systemd only)?"""
    try:
        with open("/etc/nsswitch.conf") as f:
            for line in f:
                if line.split(":")[0].strip() in ("passwd", "group"):
                    srcs = [w for w in line.split("#")[0].split(":", 1)[1].split() if not w.startswith("[")]
                    if any(s not in ("files", "systemd") for s in srcs):
                        return False
    except FileNotFoundError:
        pass
    return True


class LintCase(unittest.TestCase):
    def setUp(self):
        self.dir = cgtest.mkdtemp("cg-lint-")
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        self.etc = os.path.join(self.dir, "etc")
        self.vendor = os.path.join(self.dir, "vendor")
        os.mkdir(self.etc, 0o755)
        os.mkdir(self.vendor, 0o755)
        self.main = write(os.path.join(self.dir, "credgate.conf"), MAIN)
        write(os.path.join(self.vendor, "50-vendor.conf"), VENDOR)

    def path(self, *p):
        return os.path.join(self.dir, *p)

    def check(self, *args):
        return cgtest.run([cgtest.credgated(), "-t", "-c", self.main, "--rules-dir", self.etc,
                           "--rules-dir", self.vendor, *args])

    def cli_test(self, testfile, *args):
        return cgtest.run([cgtest.cli(), "test", "-c", self.main, "--rules-dir", self.etc, "--rules-dir",
                           self.vendor, *args, testfile])


class TestShadowed(LintCase):
    def test_both_rules_named_with_effect(self):
        site = write(self.path("etc", "60-site.conf"),
                     'rules = (\n'
                     '  { id = "logs"; action = "org.example.logs"; effect = "allow"; gids = ["0"]; },\n'
                     '  { action = "org.example.logs"; effect = "allow"; uids = ["0"]; }\n'
                     ');\n')
        r = self.check()
        self.assertEqual(r.returncode, 0, r.stderr)  # warnings never fail a check
        vendor = self.path("vendor", "50-vendor.conf")
        self.assertIn(f"{site}:2: warning: rule 'logs' can never decide: the rule at {vendor}:2 (ops) comes "
                      "first and matches every request this one matches; both allow, so this one is redundant",
                      r.stderr)
        # gids do not cover uids: the second rule may still decide (uid 0 outside group root).
        self.assertNotIn(f"{site}:3:", r.stderr)
        self.assertIn("policy OK, 5 rules from 3 files, 1 warning(s)", r.stdout)

    def test_opposite_effect_is_called_a_mistake(self):
        site = write(self.path("etc", "60-site.conf"),
                     'rules = ( { action = "org.example.backup.restore"; effect = "allow"; uids = ["0"]; } );\n')
        r = self.check()
        self.assertEqual(r.returncode, 0, r.stderr)
        vendor = self.path("vendor", "50-vendor.conf")
        self.assertIn(f"{site}:1: warning: this rule can never decide: the rule at {vendor}:3 comes first and "
                      "matches every request this one matches; it denies what this one would allow, which is "
                      "probably a mistake", r.stderr)

    def test_no_warning_when_not_provable(self):
        # Partly covered subjects and narrower earlier patterns: no warning.
        write(self.path("etc", "60-site.conf"),
                    'rules = (\n'
                    '  { action = "org.site.a.*"; effect = "allow"; uids = ["0-10"]; },\n'
                    '  { action = "org.site.*"; effect = "deny"; uids = ["0-10"]; },\n'
                    '  { action = "org.site.a.x"; effect = "deny"; uids = ["5-20"]; }\n'
                    ');\n')
        r = self.check()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("never decide", r.stderr)

    def test_credgate_test_shows_lint_and_keeps_results(self):
        write(self.path("etc", "60-site.conf"),
              'rules = ( { action = "org.example.backup.restore"; effect = "allow"; uids = ["0"]; } );\n')
        t = write(self.path("site.test"),
                  'cases = ( { uid = "0"; gid = "100"; gids = []; action = "org.example.backup.restore"; expect = "deny"; } );\n')
        r = self.cli_test(t)
        self.assertEqual((r.returncode, r.stdout), (0, "1 passed, 0 failed\n"), r.stderr)
        self.assertIn("60-site.conf:1: warning: this rule can never decide", r.stderr)


@unittest.skipUnless(nss_lists_users(), "nsswitch.conf names a source that cannot be listed: no stale-id lint")
class TestStaleIds(LintCase):
    def test_unknown_ids_warned_known_ones_not(self):
        root_group = "0"
        site = write(self.path("etc", "60-site.conf"),
                     'rules = (\n'
                     f'  {{ id = "old"; action = "org.site.a"; effect = "allow"; uids = ["0", "{STALE_UID}"]; }},\n'
                     f'  {{ action = "org.site.b"; effect = "deny"; gids = ["{root_group}", "3999000100-3999000200"]; }},\n'
                     '  { action = "org.site.c"; effect = "allow"; users = ["no-such-user-cglint"]; }\n'
                     ');\n')
        r = self.check()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"{site}:2: warning: rule 'old': uid {STALE_UID}: no user on this host has it (passwd: ",
                      r.stderr)
        self.assertIn(f"{site}:3: warning: gids 3999000100-3999000200: no group on this host has an id in it",
                      r.stderr)
        self.assertIn(f"{site}:4: warning: unknown user 'no-such-user-cglint' in an allow rule: this entry "
                      "matches nobody", r.stderr)
        self.assertNotIn("uid 0:", r.stderr)
        self.assertNotIn("gid 0:", r.stderr)
        # A user's primary gid counts as known even without a group entry.
        self.assertEqual(len(re.findall(r"no (user|group) on this host", r.stderr)), 2, r.stderr)

    def test_shipped_policy_is_clean_of_shadowing(self):
        conf = write(self.path("credgate.conf"), open(os.path.join(cgtest.srcdir(), "conf", "credgate.conf")).read())
        r = cgtest.run([cgtest.credgated(), "-t", "-c", conf, "--rules-dir", self.etc])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("never decide", r.stderr)


class TestDropIn(LintCase):
    """credgated -t --drop-in FILE --as NAME, on a temp copy as Ansible and Puppet make one."""

    def candidate(self, text, mode=0o600, name="source"):
        d = self.path("tmp-ansible")
        os.makedirs(d, 0o700, exist_ok=True)
        return write(os.path.join(d, name), text, mode)

    def test_good_candidate(self):
        c = self.candidate('rules = ( { id = "site-logs"; action = "org.site.logs"; effect = "allow"; uids = ["0"]; } );\n')
        r = self.check("--drop-in", c, "--as", "60-site.conf")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"loaded   {c} (1 rules)", r.stdout)
        self.assertRegex(r.stdout, r"policy OK, 4 rules from 3 files")

    def test_duplicate_id_with_installed_rule(self):
        c = self.candidate('rules = ( { id = "ops"; action = "org.site.x"; effect = "allow"; uids = ["0"]; } );\n')
        r = self.check("--drop-in", c, "--as", "60-site.conf")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"{c}:1: duplicate rule id 'ops': also the rule at {self.path('vendor', '50-vendor.conf')}:2",
                      r.stderr)

    def test_replaces_the_installed_file_of_that_name(self):
        # The installed 60-site.conf defines 'site'; the candidate for the same
        # name defines it too: no clash, since the candidate replaces it.
        installed = write(self.path("etc", "60-site.conf"),
                          'rules = ( { id = "site"; action = "org.site.old"; effect = "allow"; uids = ["0"]; } );\n')
        c = self.candidate('rules = ( { id = "site"; action = "org.site.new"; effect = "allow"; uids = ["0"]; } );\n')
        r = self.check("--drop-in", c, "--as", "60-site.conf")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"skipped  {installed}: overridden by '{c}'", r.stdout)
        # Under another name both would load: the ids clash.
        r = self.check("--drop-in", c, "--as", "61-other.conf")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("duplicate rule id 'site'", r.stderr)

    def test_shadowed_candidate_warns(self):
        c = self.candidate('rules = ( { action = "org.example.backup.verify"; effect = "allow"; uids = ["0"]; } );\n')
        r = self.check("--drop-in", c, "--as", "60-site.conf")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"{c}:1: warning: this rule can never decide", r.stderr)
        # Named to sort first, it comes before the vendor's rules: no warning.
        r = self.check("--drop-in", c, "--as", "10-site.conf")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("never decide", r.stderr)

    def test_unresolvable_name_in_deny_rule_fails(self):
        c = self.candidate('rules = ( { action = "org.site.x"; effect = "deny"; users = ["no-such-user-cglint"]; } );\n')
        r = self.check("--drop-in", c, "--as", "60-site.conf")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"{c}:1: unknown user 'no-such-user-cglint' in a deny rule", r.stderr)

    def test_ownership_checked(self):
        c = self.candidate('rules = ( { action = "org.site.x"; effect = "allow"; uids = ["0"]; } );\n', mode=0o666)
        r = self.check("--drop-in", c, "--as", "60-site.conf")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"{c}: refusing: writable by others", r.stderr)

    def test_settings_refused_in_a_drop_in(self):
        c = self.candidate('default = "allow";\nrules = ();\n')
        r = self.check("--drop-in", c, "--as", "60-site.conf")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"{c}:1: unknown setting 'default' (a drop-in file holds only rules)", r.stderr)

    def test_empty_candidate_is_a_mask(self):
        installed = write(self.path("vendor", "50-vendor.conf"), VENDOR)
        c = self.candidate("", name="x")
        r = self.check("--drop-in", c, "--as", "50-vendor.conf")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"masked   {installed}: masked by '{c}'", r.stdout)

    def test_names(self):
        c = self.candidate("rules = ();\n")
        for args, msg in ((["--drop-in", c], "'source' is not a name the daemon reads"),
                          (["--drop-in", c, "--as", "site.txt"], "--as 'site.txt' is not a name"),
                          (["--drop-in", c, "--as", ".hidden.conf"], "--as '.hidden.conf' is not a name"),
                          (["--drop-in", c, "--as", "a/b.conf"], "--as 'a/b.conf' is not a name"),
                          (["--as", "x.conf"], "--as names the file of --drop-in, which is missing")):
            with self.subTest(args=args):
                r = self.check(*args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(msg, r.stderr)
        r = cgtest.run([cgtest.credgated(), "-c", self.main, "--drop-in", c, "--as", "x.conf"])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("use them with -t", r.stderr)
        # A candidate named NAME.conf needs no --as.
        c2 = self.candidate("rules = ();\n", name="70-x.conf")
        r = self.check("--drop-in", c2)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_main_file_candidate(self):
        # The main file is validated the same way, with -c on the temp copy.
        write(self.path("etc", "60-site.conf"),
              'rules = ( { action = "org.site.x"; effect = "deny"; anyone = true; } );\n')
        c = self.candidate('default = "deny";\nrules = ( { action = "org.site.x"; effect = "allow"; uids = ["0"]; } );\n')
        r = cgtest.run([cgtest.credgated(), "-t", "-c", c, "--rules-dir", self.etc, "--rules-dir", self.vendor])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"{c}:2: warning: this rule can never decide: the rule at {self.path('etc', '60-site.conf')}:1",
                      r.stderr)
        bad = self.candidate('default = "maybe";\nrules = ();\n', name="bad")
        r = cgtest.run([cgtest.credgated(), "-t", "-c", bad, "--rules-dir", self.etc, "--rules-dir", self.vendor])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"{bad}:1: 'default' must be", r.stderr)


if __name__ == "__main__":
    cgtest.main()
