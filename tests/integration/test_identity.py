#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Decisions follow the kernel's credentials.

As root, fork children that setgroups/setgid/setuid to several identities,
connect as that identity and prove that every CHECK gets the answer the
policy gives that identity, and that WHOAMI reports it. Run against a
standalone daemon and under systemd-socket-activate.
"""

import os
import unittest

import cgtest

# Names used below exist on Debian: users backup(34), bin(2), nobody(65534);
# groups adm(4), staff(50), users(100), nogroup(65534), bin(2).
POLICY = """\
default = "deny";
rules = (
  # users by name
  { action = "id.user"; effect = "allow"; users = ["backup", "bin"]; },
  # groups by name: supplementary only (adm = 4, users = 100) ...
  { action = "id.group.adm"; effect = "allow"; groups = ["adm"]; },
  { action = "id.group.users"; effect = "allow"; groups = ["users"]; },
  # ... and the primary gid (nogroup = 65534, bin = 2)
  { action = "id.group.primary"; effect = "allow"; groups = ["nogroup", "bin"]; },
  # uid ranges, single ids at 2^31 and at the top of the range
  { action = "id.uidrange"; effect = "allow"; uids = ["1000-1999", "2147483648", "4294967294"]; },
  # gid ranges: supplementary 50 and primary 4294967294
  { action = "id.gidrange"; effect = "allow"; gids = ["40-60", "4294967294"]; },
  { action = "id.gidbig"; effect = "allow"; gids = ["3999999999-4000000000"]; },
  # a subject with several entries: any one matching is enough
  { action = "id.mixed"; effect = "allow"; users = ["backup"]; gids = ["65534"]; uids = ["2147483648"]; },
  # first match decides: the deny for gid 100 comes before the allow for anyone
  { action = "id.order"; effect = "deny"; gids = ["100"]; },
  { action = "id.order"; effect = "allow"; anyone = true; },
  # a deny by user name before a broad allow
  { action = "id.nobody"; effect = "deny"; users = ["nobody"]; },
  { action = "id.nobody"; effect = "allow"; anyone = true; },
  # patterns, interleaved with first-match order
  { action = "id.pat.*"; effect = "deny"; uids = ["65534"]; },
  { action = "id.pat.*.ok"; effect = "allow"; anyone = true; },
  { action = "id.pat.*"; effect = "allow"; uids = ["0-10"]; },
  { action = "*.anyuid"; effect = "allow"; uids = ["0-4294967294"]; },
  # root gets no special treatment: only what a rule gives uid 0
  { action = "id.root"; effect = "allow"; uids = ["0"]; },
  # an exact rule listed after a pattern that matches first
  { action = "id.late.*"; effect = "deny"; anyone = true; },
  { action = "id.late.x"; effect = "allow"; anyone = true; }
);
"""

# name: (uid, gid, groups given to setgroups(), WHOAMI's groups=)
IDENTITIES = {
    "u1000": (1000, 1000, [100], [100]),
    "nobody": (65534, 65534, [], []),
    "bin": (2, 2, [4, 50], [4, 50]),
    "big": (2147483648, 2147483648, [], []),
    "max": (4294967294, 4294967294, [], []),
    "root": (0, 0, [0], [0]),
    "backup": (34, 34, [], []),
    # unsorted, with a duplicate and an id above 2^31: WHOAMI sorts and dedups
    "multi": (1, 1, [100, 4000000000, 4, 50, 4], [4, 50, 100, 4000000000]),
}

ALL = set(IDENTITIES)

# action -> the identities that get ALLOW; every other one gets DENY.
ALLOWED = {
    "id.user": {"backup", "bin"},
    "id.group.adm": {"bin", "multi"},
    "id.group.users": {"u1000", "multi"},
    "id.group.primary": {"nobody", "bin"},
    "id.uidrange": {"u1000", "big", "max"},
    "id.gidrange": {"bin", "multi", "max"},
    "id.gidbig": {"multi"},
    "id.mixed": {"backup", "nobody", "big"},
    "id.order": ALL - {"u1000", "multi"},
    "id.nobody": ALL - {"nobody"},
    "id.pat.a.ok": ALL - {"nobody"},
    "id.pat.x.y.ok": ALL - {"nobody"},
    "id.pat.a": {"root", "bin", "multi"},
    "id.pat.": {"root", "bin", "multi"},
    "id.pat.ok": {"root", "bin", "multi"},   # "id.pat.*.ok" needs "id.pat." + ... + ".ok"
    "ID.PAT.a.ok": set(),                   # case-sensitive
    "id.pat": set(),
    "x.anyuid": ALL,
    ".anyuid": ALL,
    "x.anyuid.no": set(),
    "id.root": {"root"},
    "id.late.x": set(),
    "id.late.y": set(),
    "id.none": set(),
    "id.use": set(),                        # no prefix matching of exact rules
    "id.users": set(),
}


def expected(name):
    return {a: ("ALLOW" if name in allowed else "DENY") for a, allowed in ALLOWED.items()}


def ask_everything(sock_path):
    """Runs in the child, as the new identity: one connection, every question."""
    with cgtest.Client(sock_path) as c:
        out = {"pid": os.getpid(), "whoami": c.ask("WHOAMI"), "checks": {}}
        for action in ALLOWED:
            out["checks"][action] = c.ask("CHECK " + action)
        out["whoami_again"] = c.ask("WHOAMI")
        out["ping"] = c.ask("PING")
    # And each question on its own connection gives the same answers.
    out["fresh"] = {}
    for action in ("id.user", "id.order", "id.pat.a"):
        with cgtest.Client(sock_path) as c:
            out["fresh"][action] = c.ask("CHECK " + action)
    out["kernel_groups"] = sorted(os.getgroups())
    return out


@cgtest.needs_root
class IdentityMatrix:
    activate = False

    @classmethod
    def setUpClass(cls):
        cls.d = cls.enterClassContext(cgtest.Daemon(POLICY, activate=cls.activate, timeout=30))

    def test_really_socket_activated(self):
        """Guard against testing the wrong thing: under activation the
        process is credgated itself, handed LISTEN_FDS, not binding."""
        pid = self.d.pid
        self.assertEqual(os.path.realpath(f"/proc/{pid}/exe"), os.path.realpath(cgtest.credgated()))
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
        self.assertEqual(b"LISTEN_FDS=1" in env, self.activate)

    def check_identity(self, name):
        uid, gid, groups, shown = IDENTITIES[name]
        self.assertTrue(self.d.alive(), self.d.stderr())
        got = cgtest.as_identity(uid, gid, groups, lambda: ask_everything(self.d.socket))
        # The kernel keeps duplicates (it only sorts): the daemon must dedup.
        self.assertEqual(sorted(set(got["kernel_groups"])), shown, "setgroups() did not take as planned")
        want_creds = f"CREDS pid={got['pid']} uid={uid} gid={gid} groups={','.join(map(str, shown))}"
        self.assertEqual(got["whoami"], want_creds)
        self.assertEqual(got["whoami_again"], want_creds)
        self.assertEqual(got["ping"], "PONG")
        want = expected(name)
        wrong = {a: f"got {got['checks'][a]}, want {want[a]}" for a in want if got["checks"][a] != want[a]}
        self.assertEqual(wrong, {}, f"decisions for {name} (uid={uid} gid={gid} groups={groups})")
        for action, answer in got["fresh"].items():
            self.assertEqual(answer, want[action], f"{action} on a fresh connection")

    def test_identity_changes_after_connect_do_not_count(self):
        """The kernel records credentials at connect(): a process that
        connects as root and then drops to nobody is still judged as root."""
        def child():
            with cgtest.Client(self.d.socket) as c:
                return c.ask("WHOAMI"), c.ask("CHECK id.root")

        # Connect as root in this process, then hand the connected socket to
        # a child that drops to nobody and asks on it.
        with cgtest.Client(self.d.socket) as c:
            def ask_on_inherited():
                return c.ask("WHOAMI"), c.ask("CHECK id.root"), c.ask("CHECK id.nobody")
            who, root_ok, nobody_check = cgtest.as_identity(65534, 65534, [], ask_on_inherited)
        self.assertRegex(who, r"^CREDS pid=\d+ uid=0 gid=0 ")
        self.assertEqual(root_ok, "ALLOW" if "root" in ALLOWED["id.root"] else "DENY")
        self.assertEqual(nobody_check, "ALLOW")
        # While a fresh connection from nobody is judged as nobody.
        who, root_ok = cgtest.as_identity(65534, 65534, [], child)
        self.assertRegex(who, r"^CREDS pid=\d+ uid=65534 gid=65534 groups=$")
        self.assertEqual(root_ok, "DENY")


def _make(name):
    def test(self):
        self.check_identity(name)
    test.__name__ = f"test_{name}"
    return test


for _n in IDENTITIES:
    setattr(IdentityMatrix, f"test_{_n}", _make(_n))


class TestStandalone(IdentityMatrix, unittest.TestCase):
    activate = False


class TestSocketActivated(IdentityMatrix, unittest.TestCase):
    activate = True


if __name__ == "__main__":
    cgtest.main()
