#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""`make install` into a DESTDIR, and a program built against what it installed.

* `$MAKE -C $CREDGATE_BUILDDIR install DESTDIR=<tmp>` installs everything
  the package ships, and nothing else; installed paths are found by
  searching the tree, never by assuming a prefix.
* The installed libcredgate.so exports only the credgate_* API.
* docs/example.c compiles against the INSTALLED header and library with
  `pkg-config --cflags --libs credgate`, and, run against the installed
  credgated as several identities, gives the same decisions as the built
  `credgate check` ($CREDGATE_CLI) and the installed Python module.
* `make uninstall DESTDIR=<tmp>` leaves no file behind.
"""

import atexit
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import unittest

import cgtest

# ---------------------------------------------------------------------------
# One install per run, shared by the classes below; TestUninstall comes last.

_install = {}


def _make_env():
    env = dict(os.environ)
    # A sub-make must not try to join make check's jobserver (its fds are not
    # passed on) or inherit its command-line overrides.
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GNUMAKEFLAGS"):
        env.pop(k, None)
    return env


def make(target, destdir):
    cmd = shlex.split(os.environ.get("MAKE") or "make") + ["-C", cgtest.builddir(), target, f"DESTDIR={destdir}"]
    return cgtest.run(cmd, timeout=600, env=_make_env())


def files_under(top):
    """Every non-directory below @top (symlinks included), as paths relative to @top."""
    out = []
    for root, dirs, files in os.walk(top):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            out.append(os.path.relpath(os.path.join(root, name), top))
    return sorted(out)


def installed():
    """Install once into a fresh DESTDIR; return (destdir, [relative file paths])."""
    if "error" in _install:
        raise AssertionError(_install["error"])
    if "destdir" not in _install:
        destdir = cgtest.mkdtemp("cg-inst-")
        atexit.register(shutil.rmtree, destdir, True)
        r = make("install", destdir)
        if r.returncode != 0:
            _install["error"] = (f"make install DESTDIR={destdir} failed with status {r.returncode}:\n"
                                 f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
            raise AssertionError(_install["error"])
        _install["destdir"] = destdir
        _install["files"] = files_under(destdir)
    return _install["destdir"], _install["files"]


def find_one(pattern, what):
    """The single installed file whose relative path matches @pattern (a regex)."""
    destdir, files = installed()
    hits = [f for f in files if re.search(pattern, f)]
    if len(hits) != 1:
        raise AssertionError(f"expected exactly one installed {what} matching {pattern!r}, found {hits}")
    return os.path.join(destdir, hits[0])


def exported_api():
    """The function names credgate.h declares and libcredgate.sym exports."""
    with open(os.path.join(cgtest.srcdir(), "src", "lib", "credgate.h")) as f:
        header = set(re.findall(r"\b(credgate_\w+)\s*\(", f.read()))
    with open(os.path.join(cgtest.srcdir(), "src", "lib", "libcredgate.sym")) as f:
        sym = f.read()
    nodes = set(re.findall(r"^([\w.]+)\s*\{", sym, re.M))
    script = set()
    for glob in re.findall(r"global:(.*?)(?:local:|\})", sym, re.S):
        script |= set(re.findall(r"\b(\w+);", glob))
    return header, script, nodes


def symbol_versions():
    """{function: version node} as libcredgate.sym assigns them."""
    with open(os.path.join(cgtest.srcdir(), "src", "lib", "libcredgate.sym")) as f:
        sym = f.read()
    out = {}
    for node, body in re.findall(r"^([\w.]+)\s*\{(.*?)\}", sym, re.M | re.S):
        glob = body.split("global:", 1)[-1].split("local:", 1)[0]
        for name in re.findall(r"\b(\w+);", glob):
            out[name] = node
    return out


# Every file `make install` may put in the tree (relative path must match one).
EXPECTED = {
    "daemon": r"(^|/)sbin/credgated$",
    "cli": r"(^|/)bin/credgate$",
    "header": r"(^|/)include/credgate\.h$",
    "pkg-config file": r"(^|/)lib[^/]*/pkgconfig/credgate\.pc$",
    "library": r"(^|/)lib[^/]*/libcredgate\.so\.\d+\.\d+\.\d+$",
    "library soname link": r"(^|/)lib[^/]*/libcredgate\.so\.\d+$",
    "library dev link": r"(^|/)lib[^/]*/libcredgate\.so$",
    "libtool archive": r"(^|/)lib[^/]*/libcredgate\.la$",
    "service unit": r"(^|/)systemd/system/credgated\.service$",
    "socket unit": r"(^|/)systemd/system/credgated\.socket$",
    "metrics socket unit": r"(^|/)systemd/system/credgated-metrics\.socket$",
    "textfile service": r"(^|/)systemd/system/credgate-textfile\.service$",
    "textfile timer": r"(^|/)systemd/system/credgate-textfile\.timer$",
    "example policy": r"(^|/)etc/credgate/credgate\.conf$",
    "credgated(8)": r"(^|/)share/man/man8/credgated\.8$",
    "credgate.conf(5)": r"(^|/)share/man/man5/credgate\.conf\.5$",
    "credgate(1)": r"(^|/)share/man/man1/credgate\.1$",
    "libcredgate(3)": r"(^|/)share/man/man3/libcredgate\.3$",
    "Python module": r"(^|/)(site|dist)-packages/credgate\.py$",
    "protocol.md": r"(^|/)share/doc/credgate/protocol\.md$",
    "policy.md": r"(^|/)share/doc/credgate/policy\.md$",
    "admin.md": r"(^|/)share/doc/credgate/admin\.md$",
}
# Byte-compiled module files automake's Python support may add.
ALSO_ALLOWED = [r"(^|/)(site|dist)-packages/__pycache__/credgate\.[\w.-]+\.pyc$"]


class TestInstalledTree(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.destdir, cls.files = installed()

    def test_every_file_installed_once(self):
        missing = []
        for what, pat in EXPECTED.items():
            hits = [f for f in self.files if re.search(pat, f)]
            if len(hits) != 1:
                missing.append(f"{what}: {hits}")
        self.assertEqual(missing, [], f"installed files:\n" + "\n".join(self.files))

    def test_nothing_else_installed(self):
        pats = list(EXPECTED.values()) + ALSO_ALLOWED
        extra = [f for f in self.files if not any(re.search(p, f) for p in pats)]
        self.assertEqual(extra, [], "unexpected files in the installed tree")

    def test_drop_in_folders(self):
        """The (empty) rules.d folders exist, mode 0755."""
        for pat in (r"(^|/)etc/credgate/rules\.d$", r"(^|/)share/credgate/rules\.d$"):
            hits = [os.path.join(r, d) for r, ds, _ in os.walk(self.destdir) for d in ds
                    if re.search(pat, os.path.relpath(os.path.join(r, d), self.destdir))]
            self.assertEqual(len(hits), 1, f"{pat}: {hits}")
            self.assertEqual(stat.S_IMODE(os.stat(hits[0]).st_mode), 0o755, hits[0])

    def test_installed_copies_match_sources(self):
        src = cgtest.srcdir()
        for what, rel in (("header", "src/lib/credgate.h"), ("example policy", "conf/credgate.conf"),
                          ("credgated(8)", "docs/credgated.8"), ("credgate.conf(5)", "docs/credgate.conf.5"),
                          ("credgate(1)", "docs/credgate.1"), ("libcredgate(3)", "docs/libcredgate.3"),
                          ("socket unit", "systemd/credgated.socket"), ("Python module", "src/python/credgate.py")):
            with self.subTest(what=what):
                with open(find_one(EXPECTED[what], what), "rb") as a, open(os.path.join(src, rel), "rb") as b:
                    self.assertEqual(a.read(), b.read(), f"installed {what} differs from {rel}")

    def test_programs_executable(self):
        for what in ("daemon", "cli"):
            mode = os.stat(find_one(EXPECTED[what], what)).st_mode
            self.assertTrue(mode & stat.S_IXOTH, f"{what} is not executable by others")
            self.assertFalse(mode & (stat.S_ISUID | stat.S_ISGID), f"{what} must never be setuid/setgid")

    def test_only_credgate_symbols_exported(self):
        lib = os.path.realpath(find_one(EXPECTED["library"], "library"))
        r = cgtest.run(["nm", "-D", "--defined-only", lib])
        self.assertEqual(r.returncode, 0, r.stderr)
        header, script, nodes = exported_api()
        funcs, other = set(), []
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue
            kind, name = parts[-2], parts[-1].split("@")[0]
            if kind == "A" and name in nodes:
                continue  # the version node itself (CREDGATE_0.1), not a symbol
            if kind == "T" and name.startswith("credgate_"):
                funcs.add(name)
            else:
                other.append(line)
        self.assertEqual(other, [], "symbols other than credgate_* functions are exported")
        self.assertEqual(funcs, script, "exported functions differ from libcredgate.sym")
        self.assertEqual(funcs, header, "exported functions differ from those credgate.h declares")
        # Each function keeps the version node it first shipped in: programs
        # linked against the first release still find credgate_check@CREDGATE_0.1.
        got = dict(re.findall(r"\b(credgate_\w+)@@?(CREDGATE_[\d.]+)", r.stdout))
        self.assertEqual(got, symbol_versions())
        self.assertEqual(got["credgate_check"], "CREDGATE_0.1")
        self.assertEqual(got["credgate_explain"], "CREDGATE_0.2")

    def test_soname(self):
        lib = os.path.realpath(find_one(EXPECTED["library"], "library"))
        r = cgtest.run(["readelf", "-d", lib])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"\(SONAME\)\s+Library soname: \[libcredgate\.so\.\d+\]")
        link = find_one(EXPECTED["library soname link"], "soname link")
        soname = re.search(r"soname: \[([^]]+)\]", r.stdout).group(1)
        self.assertEqual(os.path.basename(link), soname)
        self.assertEqual(os.path.realpath(link), lib)


# ---------------------------------------------------------------------------
# A program built against the installed library, as several identities

POLICY = """\
default = "deny";
rules = (
  { action = "org.example.status"; effect = "allow"; anyone = true; },
  { action = "inst.root"; effect = "allow"; uids = ["0"]; },
  { action = "inst.u1000"; effect = "allow"; uids = ["1000"]; },
  { action = "inst.users"; effect = "allow"; groups = ["users"]; },
  { action = "inst.bin"; effect = "allow"; users = ["bin"]; },
  { action = "inst.nobody"; effect = "deny"; users = ["nobody"]; },
  { action = "inst.nobody"; effect = "allow"; anyone = true; },
  { action = "inst.low.*"; effect = "allow"; uids = ["0-10"]; },
  { action = "inst.deny"; effect = "deny"; anyone = true; }
);
"""

ACTIONS = ["org.example.status", "inst.root", "inst.u1000", "inst.users", "inst.bin", "inst.nobody",
           "inst.low.x", "inst.deny", "inst.none"]

# name: ((uid, gid, groups) or None for this process, {allowed actions} or None when not fixed)
IDENTITIES = {
    "self": (None, None),
    "u1000": ((1000, 1000, [100]), {"org.example.status", "inst.u1000", "inst.users", "inst.nobody"}),
    "bin": ((2, 2, []), {"org.example.status", "inst.bin", "inst.nobody", "inst.low.x"}),
    "nobody": ((65534, 65534, []), {"org.example.status"}),
}
ROOT_ALLOWED = {"org.example.status", "inst.root", "inst.nobody", "inst.low.x"}

PY_SNIPPET = """\
import json, sys
sys.path.insert(0, sys.argv[1])
import credgate
assert credgate.__file__.startswith(sys.argv[1]), credgate.__file__
print(json.dumps({a: credgate.check(a, socket_path=sys.argv[2]) for a in sys.argv[3:]}))
"""


class InstalledDaemon(cgtest.Daemon):
    """cgtest.Daemon, running the installed credgated instead of $CREDGATED."""

    def __init__(self, program, policy, **kw):
        super().__init__(policy, **kw)
        self.program = program

    def command(self):
        cmd = super().command()
        cmd[0] = self.program
        return cmd


def python3():
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def run_as(identity, cmd, env=None, timeout=60):
    """Run @cmd, after dropping to @identity = (uid, gid, groups) unless None."""
    kw = {}
    if identity is not None:
        uid, gid, groups = identity
        kw = {"user": uid, "group": gid, "extra_groups": list(groups)}
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                          env=env, cwd="/", **kw)


class TestInstalledLibrary(unittest.TestCase):
    results = {}

    @classmethod
    def setUpClass(cls):
        cls.destdir, _ = installed()
        cls.work = cgtest.mkdtemp("cg-ex-")
        cls.addClassCleanup(shutil.rmtree, cls.work, True)
        cls.libdir = os.path.dirname(find_one(EXPECTED["library"], "library"))
        cls.pcdir = os.path.dirname(find_one(EXPECTED["pkg-config file"], "pkg-config file"))
        cls.pydir = os.path.dirname(find_one(EXPECTED["Python module"], "Python module"))
        cls.env = {k: v for k, v in os.environ.items() if k not in ("CREDGATE_SOCKET", "PYTHONPATH")}
        cls.env["LD_LIBRARY_PATH"] = cls.libdir
        cls.exe = cls.build_example()
        cls.d = cls.enterClassContext(InstalledDaemon(find_one(EXPECTED["daemon"], "daemon"), POLICY, timeout=60))

    @classmethod
    def pkg_config(cls):
        env = dict(os.environ, PKG_CONFIG_PATH=cls.pcdir, PKG_CONFIG_SYSROOT_DIR=cls.destdir)
        r = cgtest.run(shlex.split(os.environ.get("PKG_CONFIG") or "pkg-config") + ["--cflags", "--libs", "credgate"],
                       env=env)
        if r.returncode != 0:
            raise AssertionError(f"pkg-config --cflags --libs credgate failed:\n{r.stderr}")
        return shlex.split(r.stdout)

    @classmethod
    def build_example(cls):
        src = os.path.join(cls.work, "example.c")
        shutil.copy(os.path.join(cgtest.srcdir(), "docs", "example.c"), src)
        exe = os.path.join(cls.work, "example")
        cc = shlex.split(os.environ.get("CC") or "cc")
        cmd = cc + ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-o", exe, src] + cls.pkg_config()
        r = cgtest.run(cmd, cwd=cls.work)
        if r.returncode != 0:
            raise AssertionError(f"{shlex.join(cmd)} failed:\n{r.stdout}{r.stderr}")
        return exe

    def test_pkg_config_points_into_destdir(self):
        flags = self.pkg_config()
        incs = [f[2:] for f in flags if f.startswith("-I")]
        libdirs = [f[2:] for f in flags if f.startswith("-L")]
        self.assertIn("-lcredgate", flags)
        self.assertTrue(incs and all(i.startswith(self.destdir) for i in incs), flags)
        self.assertTrue(libdirs and all(os.path.realpath(d) == os.path.realpath(self.libdir) for d in libdirs), flags)
        self.assertTrue(any(os.path.exists(os.path.join(i, "credgate.h")) for i in incs), flags)

    def test_example_uses_installed_library(self):
        r = cgtest.run(["ldd", self.exe], env=self.env)
        self.assertEqual(r.returncode, 0, r.stderr)
        m = re.search(r"libcredgate\.so\.\d+ => (\S+)", r.stdout)
        self.assertIsNotNone(m, r.stdout)
        self.assertEqual(os.path.realpath(os.path.dirname(m.group(1))), os.path.realpath(self.libdir))

    def test_header_alone_compiles(self):
        """credgate.h is self-contained, in C and (if there is a C++ compiler) in C++."""
        flags = [f for f in self.pkg_config() if f.startswith("-I")]
        tu = os.path.join(self.work, "only-header.c")
        with open(tu, "w") as f:
            f.write("#include <credgate.h>\nint main(void) { return credgate_strerror(0) == 0; }\n")
        cc = shlex.split(os.environ.get("CC") or "cc")
        r = cgtest.run(cc + ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only", tu] + flags)
        self.assertEqual(r.returncode, 0, r.stderr)
        cxx = shutil.which("c++") or shutil.which("g++")
        if cxx:
            r = cgtest.run([cxx, "-x", "c++", "-Wall", "-Werror", "-fsyntax-only", tu] + flags)
            self.assertEqual(r.returncode, 0, r.stderr)

    # -- decisions, per identity ----------------------------------------------
    @classmethod
    def example_decisions(cls, name):
        """Run the installed-library example as @name: {action: bool} and its exit code."""
        if name not in cls.results:
            identity, _ = IDENTITIES[name]
            env = dict(cls.env, CREDGATE_SOCKET=cls.d.socket)
            r = run_as(identity, [cls.exe] + ACTIONS, env=env)
            if r.returncode not in (0, 1) or r.stderr:
                raise AssertionError(f"example as {name}: status {r.returncode}\n{r.stdout}\n{r.stderr}\n"
                                     f"daemon alive: {cls.d.alive()}, socket exists: {os.path.exists(cls.d.socket)}"
                                     f"\ndaemon stderr:\n{cls.d.stderr()}")
            lines = r.stdout.splitlines()
            got = {}
            for line in lines[1:]:
                action, _, verdict = line.rpartition(": ")
                if verdict not in ("allow", "deny"):
                    raise AssertionError(f"example as {name}: bad line {line!r}")
                got[action] = verdict == "allow"
            if list(got) != ACTIONS:
                raise AssertionError(f"example as {name}: answered {list(got)}, asked {ACTIONS}")
            cls.results[name] = (got, r.returncode, lines[0])
        return cls.results[name]

    def identity_or_skip(self, name):
        identity, _ = IDENTITIES[name]
        if identity is not None and not cgtest.is_root():
            self.skipTest("needs root to run as another identity")
        return identity

    def check_example(self, name):
        identity = self.identity_or_skip(name)
        got, rc, who = self.example_decisions(name)
        _, allowed = IDENTITIES[name]
        if identity is None:
            uid, gid, groups = os.getuid(), os.getgid(), os.getgroups()
            if uid == 0 and 100 not in groups and gid != 100:
                allowed = ROOT_ALLOWED
        else:
            uid, gid, groups = identity
        self.assertRegex(who, rf"^whoami: pid=\d+ uid={uid} gid={gid} "
                              rf"groups={','.join(str(g) for g in sorted(set(groups)))}$")
        if allowed is not None:
            self.assertEqual({a for a, ok in got.items() if ok}, allowed, f"decisions as {name}")
        self.assertEqual(rc, 0 if all(got.values()) else 1)
        # Only the allowed actions: exit 0.
        allowed_now = [a for a, ok in got.items() if ok]
        env = dict(self.env, CREDGATE_SOCKET=self.d.socket)
        r = run_as(identity, [self.exe] + allowed_now, env=env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def check_cli(self, name):
        identity = self.identity_or_skip(name)
        cli = os.environ.get("CREDGATE_CLI") or os.path.join(cgtest.builddir(), "credgate")
        if not os.access(cli, os.X_OK):
            self.skipTest(f"no credgate CLI at '{cli}' ($CREDGATE_CLI) to compare with")
        got, rc, _ = self.example_decisions(name)
        env = {k: v for k, v in os.environ.items() if k != "CREDGATE_SOCKET"}
        cli_says = {}
        for action in ACTIONS:
            r = run_as(identity, [cli, "--socket", self.d.socket, "check", "-q", action], env=env)
            self.assertIn(r.returncode, (0, 1), f"credgate check -q {action} as {name}: {r.stderr}")
            cli_says[action] = r.returncode == 0
        self.assertEqual(cli_says, got, f"credgate check vs the example, as {name}")
        r = run_as(identity, [cli, "--socket", self.d.socket, "check", "-q"] + ACTIONS, env=env)
        self.assertEqual(r.returncode, rc, f"credgate check (all actions) as {name}: {r.stderr}")

    def check_python(self, name):
        identity = self.identity_or_skip(name)
        pydir = self.pydir
        if not os.path.exists(os.path.join(pydir, "credgate.py")):
            pydir = os.environ.get("CREDGATE_PYTHONPATH", "")
            if not os.path.exists(os.path.join(pydir, "credgate.py")):
                self.skipTest("no Python module installed or at $CREDGATE_PYTHONPATH to compare with")
        got, _, _ = self.example_decisions(name)
        env = {k: v for k, v in os.environ.items() if k not in ("CREDGATE_SOCKET", "PYTHONPATH")}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        r = run_as(identity, [python3(), "-c", PY_SNIPPET, pydir, self.d.socket] + ACTIONS, env=env)
        self.assertEqual(r.returncode, 0, f"the Python module as {name}:\n{r.stderr}")
        self.assertEqual(json.loads(r.stdout), got, f"Python credgate.check vs the example, as {name}")


def _make(kind, name):
    def test(self):
        getattr(self, f"check_{kind}")(name)
    test.__name__ = f"test_{name}_{kind}"
    test.__doc__ = f"As {name}: the {kind} decisions" + ("" if kind == "example" else " equal the example's")
    return test


for _n in IDENTITIES:
    for _k in ("example", "cli", "python"):
        setattr(TestInstalledLibrary, f"test_{_n}_{_k}", _make(_k, _n))


# ---------------------------------------------------------------------------

class TestUninstall(unittest.TestCase):
    def test_uninstall_leaves_no_files(self):
        destdir, files = installed()
        self.assertGreater(len(files), 10)
        r = make("uninstall", destdir)
        self.assertEqual(r.returncode, 0, f"make uninstall failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        self.assertEqual(files_under(destdir), [], "files left behind by make uninstall")


if __name__ == "__main__":
    cgtest.main()
