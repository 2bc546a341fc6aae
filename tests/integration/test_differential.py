#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Differential test of decisions (issue 6).

Random policies (main file plus drop-in files in several --rules-dir folders,
with name clashes, masks and skipped files), random identities and random
actions. For every (policy, identity, action) case three answers must agree:

  1. the running credgated's answer to CHECK, asked over its real socket by
     a forked child that really holds that uid, gid and supplementary groups
     (setgroups/setresgid/setresuid as root), all actions pipelined on one
     connection; each policy is loaded by SIGHUP, and the reload is checked
     on the daemon's log ("reloaded: N rules from M files, revision R",
     R recomputed here from the files: issue 15);
  2. credgate eval --uid --gid --groups (all actions in one invocation),
     including the FILE:LINE of the deciding rule;
  3. the small evaluator below (model_decide), written from docs/policy.md
     alone: drop-in files sorted by name (first folder wins a name, an
     empty file or a /dev/null link masks), then the main file; first match
     decides; '*' matches any run of characters.

About a third of the rules carry an id, which eval names after FILE:LINE
and the model must name too; about a third carry a message (printable
ASCII with quotes, backslashes, " -- " and verdict words), and some actions
hold the placeholders {uid} and {gid}, filled in the questions with each
identity's own numbers, a neighbour or another id. Every action is also
asked with EXPLAIN on the same connection, whose reply (verdict, rule
reference, message) must be exactly the model's (issue 13).

Every policy's cases also become a test file for credgate test (issue 12):
each case expects the model's decision and names the model's deciding rule
(by id, FILE:LINE or "default"); about one case in eight is given a wrong
expectation on purpose (the other decision, or another rule). credgate test
must fail exactly those, at their lines, and pass all others: with the
three answers above equal, it then agrees with eval and the daemon too.

About one rule in seven has a console condition (console = "active" or
"present", now and then with seat = "seat0" or "seat1"; issue 14). As root
the test runs in a private mount namespace with a tmpfs of its own on
/run/systemd, where it writes logind's per-uid files for a random login
state of each uid before each policy (no file, a seat-less session, present
or active on seat0 or seat1, or a session being closed): the daemon reads
them with the real sd-login and sees each change through its monitor, eval
simulates the same state with --console and --seat, and the model and the
test files decide from it directly.

Half the policies also name brokers (settings.brokers, a random subject);
each child then ends its connection with a CHECK-PEER without a descriptor,
which a broker gets ERR bad-peer-fd for and anyone else ERR not-a-broker,
and that must agree with model_broker (root alone when the key is absent).

Any disagreement is shrunk (rules, files and groups dropped one at a time
while it persists) and printed as a reproducer; the test then fails.

CREDGATE_DIFF_SEED (default 6006) and CREDGATE_DIFF_CASES (default 12000)
make a run reproducible; both are printed.
"""

import grp
import hashlib
import os
import pwd
import random
import re
import shlex
import shutil
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
import traceback
import unittest

import cgtest

DEFAULT_SEED = 6006
DEFAULT_CASES = 12000
IDS_PER_ROUND = 12       # identity children alive at a time
POLICIES_PER_ROUND = 4   # policies each set of identities is asked about
ACTIONS_PER_ID = 20      # CHECKs per connection, actions per eval
ID_MAX = 4294967294
DIRS = ("A", "B", "C")  # --rules-dir order: A has the highest precedence
NS_ENV = "CREDGATE_TEST_DIFF_NS"  # set in the private mount namespace (cgtest.reenter_with_private_run_systemd)


def note(msg):
    sys.stdout.write("".join(f"# {line}\n" for line in msg.split("\n")))
    sys.stdout.flush()


# ---------------------------------------------------------------------------
# The reference evaluator: docs/policy.md, read literally.

def glob_match(pattern, s):
    """'*' matches any run of characters (the empty run too); every other
    character matches itself. Split at the stars: the first piece must
    start the string, the last must end it, the ones between must occur in
    order, each as early as possible, without overlapping."""
    if "*" not in pattern:
        return pattern == s
    pieces = pattern.split("*")
    first, last, middle = pieces[0], pieces[-1], pieces[1:-1]
    if len(first) + len(last) > len(s) or not s.startswith(first) or not s.endswith(last):
        return False
    pos, end = len(first), len(s) - len(last)
    for piece in middle:
        i = s.find(piece, pos, end)
        if i < 0:
            return False
        pos = i + len(piece)
    return True


def resolve_user(name):
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None  # unknown: "that entry matches nobody"


def resolve_group(name):
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def in_ranges(entries, ident):
    for e in entries:
        lo, _, hi = e.partition("-")
        if int(lo) <= ident <= int(hi or lo):
            return True
    return False


def subject_matches(rule, uid, gid, groups):
    all_gids = {gid} | set(groups)
    if rule.get("anyone") is True:
        return True
    if uid in {resolve_user(n) for n in rule.get("users", [])}:
        return True
    if all_gids & {resolve_group(n) for n in rule.get("groups", [])}:
        return True
    if in_ranges(rule.get("uids", []), uid):
        return True
    return any(in_ranges(rule.get("gids", []), g) for g in all_gids)


def model_rules(pol, root):
    """[(path, line, rule)] in evaluation order."""
    chosen = {}  # drop-in name -> its file (the first folder holding the name)
    for d in DIRS:
        for name, f in pol["dirs"][d].items():
            if name.startswith(".") or not name.endswith(".conf"):
                continue
            chosen.setdefault(name, (d, f))
    out = []
    for name in sorted(chosen, key=lambda n: n.encode()):
        d, f = chosen[name]
        if f["kind"] == "rules":  # "empty" and "devnull" are masks
            out += [(os.path.join(root, d, name), line, r) for line, r in zip(f["lines"], f["rules"])]
    out += [(os.path.join(root, "main.conf"), line, r) for line, r in zip(pol["main_lines"], pol["rules"])]
    return out


def model_files(pol, root):
    """The files a load reads rules from, in evaluation order (as model_rules())."""
    chosen = {}
    for d in DIRS:
        for name, f in pol["dirs"][d].items():
            if not name.startswith(".") and name.endswith(".conf"):
                chosen.setdefault(name, (d, f))
    out = [os.path.join(root, d, name) for name in sorted(chosen, key=lambda n: n.encode())
           for d, f in [chosen[name]] if f["kind"] == "rules"]
    return out + [os.path.join(root, "main.conf")]


def model_revision(pol, root):
    """credgated(8), "Policy revision": SHA-256 over each loaded file as its
    length in decimal, a newline and its bytes, in evaluation order."""
    h = hashlib.sha256()
    for path in model_files(pol, root):
        with open(path, "rb") as f:
            data = f.read()
        h.update(b"%d\n" % len(data) + data)
    return h.hexdigest()


def model_broker(pol, uid, gid, groups):
    """docs/policy.md, Settings: brokers is a subject; without it, root alone."""
    if "brokers" not in pol:
        return uid == 0
    return subject_matches(pol["brokers"], uid, gid, groups)


PLACEHOLDER_RE = re.compile(r"(\{uid\}|\{gid\}|\*)")


def action_matches(pattern, s, uid, gid, groups):
    """docs/policy.md: '*' any run of characters, {uid} exactly the uid as a
    decimal number, {gid} any gid held (primary or supplementary). Read
    literally as a regular expression; without placeholders, glob_match."""
    if "{" not in pattern:
        return glob_match(pattern, s)
    rx = ""
    for tok in PLACEHOLDER_RE.split(pattern):
        if tok == "*":
            rx += ".*"
        elif tok == "{uid}":
            rx += str(uid)
        elif tok == "{gid}":
            rx += "(?:" + "|".join(str(g) for g in sorted({gid} | set(groups))) + ")"
        else:
            rx += re.escape(tok)
    return re.fullmatch(rx, s, re.S) is not None


def escape_ref_path(path):
    """docs/protocol.md, EXPLAIN: bytes outside '!'..'~' and '%' as %XX."""
    b = path.encode()
    out = "".join(chr(c) if 0x21 <= c <= 0x7E and c != 0x25 else f"%{c:02X}" for c in b)
    if path.startswith("id:") or path == "default":
        out = f"%{b[0]:02X}" + out[1:]
    return out


LEVELS = {"none": 0, "present": 1, "active": 2}
NO_LOGIN = ("none", None)


def console_holds(rule, login):
    """docs/policy.md, "Console conditions": the level the uid holds on the
    rule's seat (on any seat when it names none) reaches the rule's. @login
    is (level, seat): that level on that one seat, none elsewhere."""
    if "console" not in rule:
        return True
    level, seat = login
    held = level if rule.get("seat") in (None, seat) else "none"
    return LEVELS[held] >= LEVELS[rule["console"]]


def model_decide(rules, default, uid, gid, groups, action, login=NO_LOGIN):
    """(decision, eval's 'by', EXPLAIN's reply line, message or None,
    whether the deciding rule has placeholders, whether it has a console
    condition)."""
    for path, line, r in rules:
        if action_matches(r["action"], action, uid, gid, groups) and subject_matches(r, uid, gid, groups) and \
                console_holds(r, login):
            dec = r["effect"].upper()
            ref = f"id:{r['id']}" if "id" in r else f"{escape_ref_path(path)}:{line}"
            msg = r.get("message")
            return (dec, f"{path}:{line}" + (f" ({r['id']})" if "id" in r else ""),
                    f"{dec} {ref}" + (f" -- {msg}" if msg else ""), msg, "{" in r["action"], "console" in r)
    dec = (default or "deny").upper()
    return dec, "default", f"{dec} default", None, False, False


# ---------------------------------------------------------------------------
# Random policies

ALPHABET = "abc.-/:_AZ09"
SEGMENTS = ["org", "example", "backup", "run", "a", "ab", "abc", "x", "admin", "status", "-", "..", "/", ":",
            "A", "B0", "_z"]
EDGE_IDS = [0, 1, 2, 4, 50, 100, 999, 1000, 1999, 2000, 65533, 65534, 65535, 2147483646, 2147483647,
            2147483648, 2147483649, 4294967293, ID_MAX]
USER_NAMES = ["root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "backup", "list",
              "irc", "proxy", "www-data", "nobody"]
GROUP_NAMES = ["root", "daemon", "bin", "sys", "adm", "tty", "disk", "lp", "mail", "staff", "users", "nogroup",
               "backup", "operator", "src", "sudo"]
UNKNOWN_NAMES = ["cg-no-such-name", "ghsot"]
MESSAGE_CHARS = "".join(chr(c) for c in range(0x20, 0x7F))
DROPIN_NAMES = ["10-site.conf", "20-m.conf", "3-num.conf", "50-vendor.conf", "200-num.conf", "Z-up.conf",
                "a-low.conf", "x.conf"]
SKIPPED_NAMES = ["README", "60-z.conf.disabled", ".hidden.conf", "70-upper.CONF"]


class Gen:
    def __init__(self, rng):
        self.rng = rng
        self.users = [n for n in USER_NAMES if resolve_user(n) is not None]
        self.groups = [n for n in GROUP_NAMES if resolve_group(n) is not None]
        self.pool_ids = []  # the ids of the current identities
        self.n_ids = 0  # rule ids handed out: unique across every policy

    def word(self, lo=1, hi=8):
        r = self.rng
        if r.random() < 0.6:
            return "".join(r.choice(SEGMENTS) + r.choice(["", ".", "/", "-"]) for _ in range(r.randint(1, 4)))[:255]
        return "".join(r.choice(ALPHABET) for _ in range(r.randint(lo, hi)))

    def starify(self, s):
        """A pattern from @s: some pieces replaced by '*' (leading, trailing,
        several, '*' alone, '**')."""
        r = self.rng
        k = r.random()
        if k < 0.06:
            return "*"
        if k < 0.1:
            return "**"
        chars = list(s)
        for _ in range(r.randint(1, 3)):
            i = r.randint(0, len(chars))
            j = min(len(chars), i + r.choice([0, 0, 1, 2, 3]))
            chars[i:j] = ["*"]
        p = "".join(chars)
        if r.random() < 0.1:
            p = "*" + p
        if r.random() < 0.1:
            p = p + "*"
        return p[:255]

    def long_action(self):
        r = self.rng
        s = "".join(r.choice("ab.") for _ in range(r.randint(200, 255)))
        return s[:255]

    def tiny(self, chars):
        """1-6 characters of @chars: short patterns and actions over two
        letters overlap in every way (prefix, suffix and middle pieces)."""
        return "".join(self.rng.choice(chars) for _ in range(self.rng.randint(1, 6)))

    def placeholder_action(self):
        """An owner-scoped pattern: {uid} or {gid} between separators, and
        perhaps '*' elsewhere."""
        r = self.rng
        ph = r.choice(["{uid}", "{uid}", "{gid}"])
        w = self.word(1, 6).strip("*") or "a"
        shapes = [f"{w}.{ph}", f"{ph}.{w}", f"{w}.{ph}.{self.word(1, 4)}", f"{w}.{ph}.*", f"*.{ph}",
                  f"{w}.{ph}/{{gid}}" if ph == "{uid}" else f"{ph}:{w}.{ph}"]
        return r.choice(shapes)[:255]

    def rule_action(self):
        r = self.rng
        k = r.random()
        if k < 0.12:
            a = self.placeholder_action()
            if len(a) <= 255 and not re.search(r"[0-9*]\{|\}[0-9*{]", a):
                return a
            k = 0.5
        if k < 0.2:
            return self.tiny("ab*")
        if k < 0.23:
            a = self.long_action()
            return self.starify(a) if r.random() < 0.5 else a
        w = self.word()
        return self.starify(w) if r.random() < 0.5 else w

    def near_id(self):
        """An id at, just below or just above one of the current
        identities' ids, or an edge id, or any id."""
        r = self.rng
        k = r.random()
        if self.pool_ids and k < 0.6:
            return min(ID_MAX, max(0, r.choice(self.pool_ids) + r.choice([-1, 0, 0, 1])))
        if k < 0.9:
            return r.choice(EDGE_IDS)
        return r.randint(0, ID_MAX)

    def id_entry(self):
        r = self.rng
        if r.random() < 0.5:
            return str(self.near_id())
        a = self.near_id()
        b = self.near_id() if r.random() < 0.7 else min(ID_MAX, a + r.choice([0, 1, 1000]))
        lo, hi = min(a, b), max(a, b)
        return f"{lo}-{hi}"

    def rule(self):
        r = self.rng
        rule = {"action": self.rule_action(), "effect": r.choice(["allow", "deny"])}
        while True:
            if r.random() < 0.15:
                rule["anyone"] = True
            if r.random() < 0.3:
                names = r.sample(self.users, r.randint(1, 3))
                if rule["effect"] == "allow" and r.random() < 0.2:
                    names.append(r.choice(UNKNOWN_NAMES))  # a warning; matches nobody
                rule["users"] = names
            if r.random() < 0.3:
                names = r.sample(self.groups, r.randint(1, 3))
                if rule["effect"] == "allow" and r.random() < 0.2:
                    names.append(r.choice(UNKNOWN_NAMES))
                rule["groups"] = names
            if r.random() < 0.35:
                rule["uids"] = [self.id_entry() for _ in range(r.randint(1, 3))]
            if r.random() < 0.35:
                rule["gids"] = [self.id_entry() for _ in range(r.randint(1, 3))]
            if any(k in rule for k in ("anyone", "users", "groups", "uids", "gids")):
                break
        if "anyone" not in rule and r.random() < 0.1:
            rule["anyone"] = False  # matches nobody, is no subject by itself
        # An allow for anyone may not carry a console condition (a load error).
        if r.random() < 0.15 and not (rule["effect"] == "allow" and rule.get("anyone") is True):
            rule["console"] = r.choice(["active", "present"])
            if r.random() < 0.4:
                rule["seat"] = r.choice(["seat0", "seat1"])
        return rule

    def logins(self, uids):
        """A login state for each uid: (level, seat) and how logind's file
        shows it: "nofile", "seatless" (an SSH session), "closing" (a process
        left after logout: active, not online), or "seat"."""
        r = self.rng
        out = {}
        for uid in uids:
            k = r.random()
            if uid == 65535:
                # Nobody's uid for systemd: a file claiming a seat is ignored.
                out[uid] = ("none", None, "uid65535")
            elif k < 0.3:
                out[uid] = ("none", None, r.choice(["nofile", "seatless", "closing"]))
            else:
                out[uid] = (r.choice(["present", "active", "active"]), r.choice(["seat0", "seat0", "seat1"]), "seat")
        return out

    def message(self):
        r = self.rng
        k = r.random()
        if k < 0.1:
            return "".join(r.choice(MESSAGE_CHARS) for _ in range(200))
        if k < 0.4:
            return r.choice(["ALLOW", "DENY", "ERR bad-request", " -- ", "id:x", "default", "\\", '"', " "]) + \
                r.choice(["", " -- x", " ALLOW"])
        return "".join(r.choice(MESSAGE_CHARS) for _ in range(r.randint(1, 40)))

    def rules(self, lo, hi):
        out = [self.rule() for _ in range(self.rng.randint(lo, hi))]
        for rule in out:
            if self.rng.random() < 0.3:  # an id: the action grammar, no '*', unique
                self.n_ids += 1
                rule["id"] = self.tiny(ALPHABET).replace("*", "") + f"-{self.n_ids}"
            if self.rng.random() < 0.3:
                rule["message"] = self.message()
        return out

    def policy(self):
        r = self.rng
        pol = {"default": r.choice([None, "allow", "deny"]), "rules": self.rules(0, 12),
               "dirs": {d: {} for d in DIRS}, "missing": set()}
        if not pol["rules"] and r.random() < 0.5:
            pol["rules"] = self.rules(1, 3)
        pol["rule_stats"] = r.random() < 0.5
        if r.random() < 0.5:
            # A subject as in a rule; now and then an empty one (no broker).
            subject = {k: v for k, v in self.rule().items() if k not in ("action", "effect")}
            pol["brokers"] = {} if r.random() < 0.1 else subject
        for d in DIRS:
            if r.random() < 0.1:
                pol["missing"].add(d)  # a folder that does not exist holds no rules
                continue
            for name in r.sample(DROPIN_NAMES, r.randint(0, 4)):
                k = r.random()
                if k < 0.12:
                    pol["dirs"][d][name] = {"kind": "empty"}
                elif k < 0.22:
                    pol["dirs"][d][name] = {"kind": "devnull"}
                else:
                    pol["dirs"][d][name] = {"kind": "rules", "rules": self.rules(0, 5)}
            if r.random() < 0.2:
                pol["dirs"][d][r.choice(SKIPPED_NAMES)] = {"kind": "junk"}
        return pol

    def identities(self, n):
        """@n identities: edge ids, ids of the names the policies use, any id.
        Policies generated while they are in use put range ends at and
        next to their ids (near_id)."""
        r = self.rng
        pool = EDGE_IDS + [resolve_user(u) for u in self.users] + [resolve_group(g) for g in self.groups]

        def pick():
            k = r.random()
            if k < 0.75:
                return r.choice(pool)
            if k < 0.9:
                return min(ID_MAX, max(0, r.choice(pool) + r.choice([-1, 1])))
            return r.randint(0, ID_MAX)

        out = [(0, 0, [])] if r.random() < 0.5 else []
        while len(out) < n:
            uid, gid = pick(), pick()
            groups = [pick() for _ in range(r.choice([0, 0, 1, 1, 2, 3, 5]))]
            if groups and r.random() < 0.1:
                groups.append(groups[0])  # a duplicate: the kernel drops it
            if r.random() < 0.1:
                groups.append(gid)
            out.append((uid, gid, groups))
        self.pool_ids = sorted({i for uid, gid, groups in out for i in [uid, gid] + groups})
        return out

    def fill_placeholders(self, a, ident):
        """{uid} and {gid} as the asking identity's numbers, mostly; else a
        neighbour, a leading zero or any id of the pool."""
        r = self.rng
        uid, gid, groups = ident

        def num(own):
            k = r.random()
            if k < 0.7:
                return str(own)
            if k < 0.8:
                return str(min(ID_MAX + 1, own + 1))
            if k < 0.85:
                return "0" + str(own)
            return str(r.choice(self.pool_ids or [0]))

        a = a.replace("{uid}", num(uid), 1) if r.random() < 0.5 else a
        while "{uid}" in a:
            a = a.replace("{uid}", num(uid), 1)
        while "{gid}" in a:
            a = a.replace("{gid}", num(r.choice([gid] + list(groups))), 1)
        return a

    def actions(self, rules, n, ident=(0, 0, [])):
        """Actions that the policy's patterns match, almost match, or not."""
        r = self.rng
        out = []
        while len(out) < n:
            k = r.random()
            if rules and k < 0.7:
                a = self.fill_placeholders(r.choice(rules)[2]["action"], ident)
                # fill each '*' with nothing or a few characters
                a = "".join(c if c != "*" else "".join(r.choice(ALPHABET) for _ in range(r.choice([0, 0, 1, 2, 5])))
                            for c in a)
                m = r.random()
                if m < 0.15 and a:
                    i = r.randrange(len(a))
                    a = a[:i] + a[i + 1:]
                elif m < 0.3:
                    i = r.randint(0, len(a))
                    a = a[:i] + r.choice(ALPHABET) + a[i:]
                elif m < 0.35:
                    a = a.swapcase()
            elif k < 0.73:
                a = self.long_action()
            elif k < 0.88:
                a = self.tiny("ab")
            else:
                a = self.word()
            a = a[:255]
            if a:
                out.append(a)
        return out


def all_rules(pol):
    yield from pol["rules"]
    for d in DIRS:
        for f in pol["dirs"][d].values():
            if f["kind"] == "rules":
                yield from f["rules"]


def q(s):
    return '"' + s + '"'


def render_rules(rules, rng, start_line):
    """The text of 'rules = ( ... );' starting at @start_line; returns
    (text, [line of each rule's '{'])."""
    lines = ["rules = ("]
    where = []
    for i, rule in enumerate(rules):
        parts = [f"action = {q(rule['action'])};", f"effect = {q(rule['effect'])};"]
        if "id" in rule:
            parts.append(f"id = {q(rule['id'])};")
        if "message" in rule:
            parts.append("message = \"" + rule["message"].replace("\\", "\\\\").replace('"', '\\"') + "\";")
        for key in ("users", "groups", "uids", "gids"):
            if key in rule:
                o, c = ("[", "]") if rng.random() < 0.7 else ("(", ")")
                parts.append(f"{key} = {o}" + ", ".join(q(v) for v in rule[key]) + f"{c};")
        if "anyone" in rule:
            parts.append(f"anyone = {'true' if rule['anyone'] else 'false'};")
        if "console" in rule:
            parts.append(f"console = {q(rule['console'])};")
        if "seat" in rule:
            parts.append(f"seat = {q(rule['seat'])};")
        rng.shuffle(parts)
        comma = "," if i < len(rules) - 1 else ""
        if rng.random() < 0.2:
            lines.append("  # a comment line")
        where.append(start_line + len(lines))
        if rng.random() < 0.25:  # a rule over several lines: its line is the '{'
            lines.append("  {")
            lines += ["    " + p for p in parts]
            lines.append("  }" + comma)
        else:
            lines.append("  { " + " ".join(parts) + " }" + comma)
    lines.append(");")
    return "\n".join(lines) + "\n", where


def write_policy(pol, root, seed):
    """Write @pol under @root (main.conf, A/, B/, C/), recording the line of
    every rule in pol["main_lines"] and each file's "lines"."""
    rng = random.Random(seed)  # layout only: the same policy renders the same way
    for d in DIRS:
        path = os.path.join(root, d)
        shutil.rmtree(path, ignore_errors=True)
        if d in pol["missing"]:
            continue
        os.mkdir(path)
        os.chmod(path, 0o755)
        for name, f in pol["dirs"][d].items():
            p = os.path.join(path, name)
            if f["kind"] == "devnull":
                os.symlink("/dev/null", p)  # never chmod through this link
                continue
            if f["kind"] == "empty":
                text = ""
            elif f["kind"] == "junk":
                text = "this is { not a policy\n"
            else:
                head = "# drop-in\n" if rng.random() < 0.3 else ""
                body, where = render_rules(f["rules"], rng, 1 + head.count("\n"))
                f["lines"] = where
                text = head + body
            with open(p, "w") as fh:
                fh.write(text)
            os.chmod(p, 0o644)
    head = "# generated by test_differential.py\n"
    if pol["default"] is not None:
        head += f'default = {q(pol["default"])};\n'
    if "brokers" in pol:
        b = pol["brokers"]
        parts = [f"{k} = [" + ", ".join(q(v) for v in b[k]) + "];" for k in ("users", "groups", "uids", "gids")
                 if k in b]
        if "anyone" in b:
            parts.append(f"anyone = {'true' if b['anyone'] else 'false'};")
        settings = ["brokers = { " + " ".join(parts) + " };"]
    else:
        settings = []
    if pol.get("rule_stats"):
        settings.append("rule_stats = true;")
    if settings:
        head += "settings = { " + " ".join(settings) + " };\n"
    body, where = render_rules(pol["rules"], rng, 1 + head.count("\n"))
    pol["main_lines"] = where
    text = head + body
    tmp = os.path.join(root, "main.conf.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(root, "main.conf"))


def policy_text(pol, root):
    """Every file of @pol as it is on disk, for a reproducer."""
    out = []
    for d in DIRS:
        if d in pol["missing"]:
            out.append(f"--- {root}/{d}/ (folder does not exist)")
            continue
        for name in sorted(pol["dirs"][d]):
            p = os.path.join(root, d, name)
            if os.path.islink(p):
                out.append(f"--- {p} -> {os.readlink(p)}")
                continue
            with open(p) as fh:
                out.append(f"--- {p}" + (" (empty file)" if pol["dirs"][d][name]["kind"] == "empty" else "")
                           + "\n" + fh.read().rstrip("\n"))
    with open(os.path.join(root, "main.conf")) as fh:
        out.append(f"--- {root}/main.conf\n" + fh.read().rstrip("\n"))
    return "\n".join(out)


def expected_counts(pol):
    """(rules, files) that the daemon's 'reloaded:' line must report."""
    chosen = {}
    for d in DIRS:
        if d in pol["missing"]:
            continue
        for name, f in pol["dirs"][d].items():
            if name.startswith(".") or not name.endswith(".conf"):
                continue
            chosen.setdefault(name, f)
    loaded = [f for f in chosen.values() if f["kind"] == "rules"]
    return sum(len(f["rules"]) for f in loaded) + len(pol["rules"]), len(loaded) + 1


# ---------------------------------------------------------------------------
# The two implementations under test

class Worker:
    """A child that holds one identity for its whole life (setgroups,
    setresgid, setresuid, as cgtest.as_identity does) and, for each batch of
    actions it is sent, opens a new connection to the daemon, asks WHOAMI
    and CHECK for every action, pipelined, and sends back the replies.
    Forking is the slow part on a small VM, so one child serves an identity
    for several policies."""

    open_fds = set()  # the parent's ends of every live worker's pipes

    def __init__(self, sock, uid, gid, groups):
        self.ident = (uid, gid, list(groups))
        to_child, self.w = os.pipe()
        self.r, from_child = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:
            status = 0
            try:
                # Keep no other worker's pipe open, or it never sees EOF.
                for fd in Worker.open_fds | {self.w, self.r}:
                    os.close(fd)
                cgtest._libc.prctl(cgtest._PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                self._serve(sock, to_child, from_child)
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        os.close(to_child)
        os.close(from_child)
        Worker.open_fds |= {self.w, self.r}

    def _serve(self, sock, rfd, wfd):
        uid, gid, groups = self.ident
        err = None
        try:
            os.setgroups(groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
                raise RuntimeError("identity change did not take")
        except BaseException:
            err = traceback.format_exc()
        while True:
            actions = _recv_obj(rfd)
            if actions is None:
                return
            if err is not None:
                _send_obj(wfd, ("err", err))
                continue
            try:
                c = cgtest.Client(sock, timeout=10)
                try:
                    c.send(("WHOAMI\n" + "".join(f"CHECK {a}\nEXPLAIN {a}\n" for a in actions)
                            + "CHECK-PEER x\n").encode())
                    who = c.readline().decode().rstrip("\n")
                    dec = [(c.readline().decode().rstrip("\n"), c.readline().decode().rstrip("\n"))
                           for _ in actions]
                    res = ("ok", (who, dec, c.readline().decode().rstrip("\n")))
                finally:
                    c.close()
            except BaseException:
                res = ("err", traceback.format_exc())
            _send_obj(wfd, res)

    def send(self, actions):
        _send_obj(self.w, actions)

    def result(self):
        res = _recv_obj(self.r, timeout=30)
        if res is None:
            raise AssertionError(f"identity child {self.ident} died")
        kind, value = res
        if kind == "err":
            raise AssertionError(f"in the child with identity {self.ident}:\n{value}")
        return value

    def close(self):
        for fd in (self.w, self.r):
            Worker.open_fds.discard(fd)
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _send_obj(fd, obj):
    data = pickle.dumps(obj)
    view = memoryview(struct.pack("!I", len(data)) + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd, n, deadline):
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise AssertionError("no answer from an identity child within 30 s")
        b = os.read(fd, n - len(buf))
        if not b:
            return None
        buf += b
    return bytes(buf)


def _recv_obj(fd, timeout=None):
    deadline = None if timeout is None else time.monotonic() + timeout
    head = _read_exact(fd, 4, deadline)
    if head is None:
        return None
    data = _read_exact(fd, struct.unpack("!I", head)[0], deadline)
    return None if data is None else pickle.loads(data)


def eval_program():
    """(argv0, env) for credgate eval. Under 'make check' $CREDGATE_CLI is
    libtool's wrapper script, which costs a shell and several helper
    processes per run (~150 ms here); run the program it wraps, with the
    library path the wrapper would set. Checked against the wrapper once,
    in test_eval_program_is_the_wrapped_one."""
    cli = cgtest.cli()
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    with open(cli, "rb") as f:
        elf = f.read(4) == b"\x7fELF"
    libs = os.path.join(os.path.dirname(cli), ".libs")
    real = os.path.join(libs, os.path.basename(cli))
    if not elf and os.access(real, os.X_OK):
        env["LD_LIBRARY_PATH"] = libs + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        return real, env
    return cli, env


def eval_cmd(root, uid, gid, groups, actions, prog=None, login=NO_LOGIN):
    cmd = [prog or cgtest.cli(), "eval", "-c", os.path.join(root, "main.conf")]
    for d in DIRS:
        cmd += ["--rules-dir", os.path.join(root, d)]
    cmd += ["--uid", str(uid), "--gid", str(gid), "--groups", ",".join(map(str, groups))]
    if login[0] != "none":
        cmd += ["--console", login[0], "--seat", login[1]]
    elif uid % 2:
        cmd += ["--console", "none"]  # the same as no option
    return cmd + ["--"] + actions


USERS_DIR = "/run/systemd/users"


def write_logins(logins):
    """logind's per-uid files for @logins (Gen.logins()), each renamed into
    place as logind does; files of other uids are removed."""
    if os.environ.get(NS_ENV) != "1":
        return
    os.makedirs(USERS_DIR, mode=0o755, exist_ok=True)
    keep = set()
    for uid, (level, seat, how) in logins.items():
        if how == "nofile":
            continue
        active = seat if level == "active" else ""
        online = seat if level in ("present", "active") else ""
        if how == "closing":
            active, online = "seat0", ""
        elif how == "uid65535":
            active = online = "seat0"
        text = f"NAME=u{uid}\nSTATE=active\nACTIVE_SEATS={active}\nONLINE_SEATS={online}\n"
        tmp = os.path.join(USERS_DIR, f".#{uid}")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(USERS_DIR, str(uid)))
        keep.add(str(uid))
    for name in os.listdir(USERS_DIR):
        if name not in keep:
            os.unlink(os.path.join(USERS_DIR, name))


# FILE:LINE, then the rule's id if any, then the rule's message if any
EVAL_RE = re.compile(r"^(ALLOW|DENY) (\S+) by (\S+(?: \(\S+\))?)(?:: ([ -~]{1,200}))?$")
EVAL_CONSOLE_RE = re.compile(r"^console: (none|(?:active|present) on seat[01]) \(simulated\)$")


def parse_eval(proc_out, rc, err, actions):
    """[(decision, by)] or raise with eval's output."""
    lines = proc_out.splitlines()
    if lines and EVAL_CONSOLE_RE.match(lines[0]):
        lines = lines[1:]  # what --console simulated (checked against the model's state by the answers)
    if len(lines) != len(actions) or rc not in (0, 1):
        raise AssertionError(f"credgate eval exited {rc} with {len(lines)} lines for {len(actions)} actions:\n"
                             f"stdout: {proc_out}\nstderr: {err}")
    out = []
    for a, line in zip(actions, lines):
        m = EVAL_RE.match(line)
        if not m or m.group(2) != a:
            raise AssertionError(f"credgate eval: unexpected line {line!r} for action {a!r}")
        out.append((m.group(1), m.group(3), m.group(4)))
    want_rc = 0 if all(d == "ALLOW" for d, *_ in out) else 1
    if rc != want_rc:
        raise AssertionError(f"credgate eval exited {rc}, expected {want_rc} for:\n{proc_out}")
    return out


class Harness:
    """One daemon on @root's files, reloaded (SIGHUP) for each policy."""

    def __init__(self, root):
        self.root = root
        self.daemon = None
        self.offset = 0
        self.reloads = 0
        self.prog, self.env = eval_program()
        self.logins = {}  # uid -> Gen.logins() entry, as written to /run/systemd/users
        self.revisions = set()  # every revision the daemon reported (and the model agreed with)

    def start(self, pol, seed):
        write_policy(pol, self.root, seed)
        args = ["--log", "none"]
        for d in DIRS:
            args += ["--rules-dir", os.path.join(self.root, d)]
        self.metrics = os.path.join(self.root, "metrics.sock")
        args += ["--metrics-socket", self.metrics]
        self.daemon = cgtest.Daemon("rules = ();\n", args=args)
        self.daemon.policy_path = os.path.join(self.root, "main.conf")
        self.daemon.start()
        self.offset = len(self.daemon.stderr())
        # The start-up policy is reloaded like every other: its counts are checked.
        self.load(pol, seed)

    def check_counts(self, pol, text):
        m = re.findall(r"reloaded: (\d+) rules from (\d+) files, revision ([0-9a-f]{64})", text)
        got = tuple(map(int, m[-1][:2]))
        if got != expected_counts(pol):
            raise AssertionError(f"daemon reports {got} (rules, files), the generator wrote "
                                 f"{expected_counts(pol)}:\n{text}\n{policy_text(pol, self.root)}")
        want = model_revision(pol, self.root)
        if m[-1][2] != want:
            raise AssertionError(f"daemon reports revision {m[-1][2]}, the files give {want}:\n"
                                 f"{policy_text(pol, self.root)}")
        self.revisions.add(want)

    def load(self, pol, seed):
        write_policy(pol, self.root, seed)
        self.daemon.kill(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            text = self.daemon.stderr()[self.offset:]
            if "reload failed" in text:
                raise AssertionError(f"the daemon refused a generated policy:\n{text}\n"
                                     f"{policy_text(pol, self.root)}")
            if re.search(r"reloaded: \d+ rules from \d+ files, revision [0-9a-f]{64}\n", text):
                break
            if time.monotonic() > deadline or not self.daemon.alive():
                raise AssertionError(f"no 'reloaded:' line within 10 s:\n{self.daemon.stderr()}")
            time.sleep(0.002)
        self.check_counts(pol, text)
        self.offset += len(text)
        self.reloads += 1

    def login(self, uid):
        level, seat, _ = self.logins.get(uid, ("none", None, "nofile"))
        return level, seat

    def set_logins(self, logins):
        """Outside the namespace the daemon sees the host's logind: no states."""
        self.logins = logins if os.environ.get(NS_ENV) == "1" else {}
        write_logins(self.logins)

    def start_eval(self, ident, actions):
        uid, gid, groups = ident
        return subprocess.Popen(eval_cmd(self.root, uid, gid, groups, actions, self.prog, self.login(uid)),
                                env=self.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self, pol, ident, actions, who, dec, peer, p):
        """Three answers per action: daemon, eval (decision, by), model (decision, by).
        The broker status (@peer, the reply to CHECK-PEER without an fd) must
        match the model's at once."""
        uid, gid, groups = ident
        out, err = p.communicate(timeout=30)
        want_who = f"uid={uid} gid={gid} groups=" + ",".join(map(str, sorted(set(groups))))
        if not who.startswith("CREDS ") or not who.endswith(" " + want_who):
            raise AssertionError(f"the child is not who it should be: {who!r}, wanted {want_who!r}")
        want_peer = "ERR bad-peer-fd" if model_broker(pol, uid, gid, groups) else "ERR not-a-broker"
        if peer != want_peer:
            raise AssertionError(f"broker status: the daemon answered {peer!r} to CHECK-PEER without an fd, "
                                 f"the model wants {want_peer!r}\n--- identity: uid={uid} gid={gid} groups="
                                 f"{','.join(map(str, groups))}\n{policy_text(pol, self.root)}")
        ev = parse_eval(out, p.returncode, err, actions)
        rules = model_rules(pol, self.root)
        mod = [model_decide(rules, pol["default"], uid, gid, groups, a, self.login(uid)) for a in actions]
        return dec, ev, mod

    def answers_batch(self, pol, workers, batches):
        """For each worker (an identity) and its actions: (dec, ev, mod).
        The identity children ask the daemon while at most two evals run."""
        for w, actions in zip(workers, batches):
            w.send(actions)
        out, running = [], []
        for w, actions in zip(workers, batches):
            running.append((w, actions, self.start_eval(w.ident, actions)))
            if len(running) >= 2:
                w0, a0, p0 = running.pop(0)
                out.append(self.finish(pol, w0.ident, a0, *w0.result(), p0))
        for w0, a0, p0 in running:
            out.append(self.finish(pol, w0.ident, a0, *w0.result(), p0))
        return out

    def answers(self, pol, uid, gid, groups, actions):
        """One identity, in a child of its own (for the shrinker)."""
        w = Worker(self.daemon.socket, uid, gid, groups)
        try:
            return self.answers_batch(pol, [w], [actions])[0]
        finally:
            w.close()

    def stop(self):
        if self.daemon:
            self.daemon.stop()


TEST_FAIL_RE = re.compile(r"^FAIL (\S+):(\d+): ")


def test_file_cases(cases, rules, rng):
    """The text of a credgate test file for @cases [(uid, gid, groups,
    action, (decision, by), login)], and the set of its lines that carry a
    wrong expectation on purpose."""
    names = [f"{path}:{line}" for path, line, _ in rules] + ["default"]
    out, wrong = ["cases = ("], set()
    for i, (uid, gid, groups, action, (dec, by, *_), login) in enumerate(cases):
        m = re.match(r"^(\S+)(?: \((\S+)\))?$", by)
        where, rid = m.group(1), m.group(2)
        rule = rid if rid and rng.random() < 0.5 else where
        expect = dec.lower()
        line = len(out) + 1
        if rng.random() < 0.125:
            others = [n for n in names if n != where]
            if rng.random() < 0.5 or not others:
                expect = "deny" if expect == "allow" else "allow"
            else:
                rule = rng.choice(others)
            wrong.add(line)
        gids = ", ".join(f'"{g}"' for g in groups)
        who = f'uid = "{uid}"; gid = "{gid}"; gids = [{gids}];'
        if login[0] != "none":
            who += f' console = "{login[0]}"; seat = "{login[1]}";'
        elif rng.random() < 0.3:
            who += ' console = "none";'
        out.append(f'  {{ {who} action = "{action}"; expect = "{expect}"; rule = "{rule}"; }}'
                   + ("," if i + 1 < len(cases) else ""))
    out.append(");")
    return "\n".join(out) + "\n", wrong


def check_credgate_test(h, pol, cases, rng):
    """Run credgate test on @cases (see test_file_cases()). Return None, or
    what went wrong with the policy and test file to reproduce it."""
    text, wrong = test_file_cases(cases, model_rules(pol, h.root), rng)
    path = os.path.join(h.root, "diff.test")
    with open(path, "w") as f:
        f.write(text)
    cmd = [h.prog, "test", "-c", os.path.join(h.root, "main.conf")]
    for d in DIRS:
        cmd += ["--rules-dir", os.path.join(h.root, d)]
    p = subprocess.run(cmd + [path], env=h.env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=60)
    failed = {int(m.group(2)) for m in map(TEST_FAIL_RE.match, p.stdout.splitlines()) if m}
    summary = f"{len(cases) - len(wrong)} passed, {len(wrong)} failed"
    want_rc = 1 if wrong else 0
    if failed == wrong and p.returncode == want_rc and p.stdout.endswith(summary + "\n"):
        return None
    return (f"credgate test disagrees with the model (and so with eval and the daemon): exit {p.returncode}, "
            f"wanted {want_rc}; lines failed {sorted(failed)}, wanted {sorted(wrong)}\n"
            f"stdout:\n{p.stdout}stderr:\n{p.stderr}\n--- test file:\n{text}\n{policy_text(pol, h.root)}")


def check_rule_hits(h, pol, asked):
    """With rule_stats, the daemon's per-rule counts since the reload must be
    the model's: each (identity, action) asked with CHECK and EXPLAIN, so two
    decisions by the model's deciding rule. Without it, no per-rule series.
    @asked: the model answers of every action asked since the reload.
    Return None, or what went wrong."""
    doc = cgtest.read_document(h.metrics)
    if not doc.endswith("# EOF\n"):
        return f"metrics document cut short:\n{doc[-500:]}"
    got = {}
    for m in re.finditer(r'^credgate_rule_hits_total\{rule="((?:[^"\\]|\\.)*)"\} (\d+)$', doc, re.M):
        got[m.group(1).replace('\\"', '"').replace("\\\\", "\\")] = int(m.group(2))
    if not pol.get("rule_stats"):
        return None if not got else f"per-rule counts without rule_stats: {got}"
    want = {}
    for path, line, r in model_rules(pol, h.root):
        want[f"id:{r['id']}" if "id" in r else f"{path}:{line}"] = 0
    for m in asked:
        if m[1] != "default":
            where = re.match(r"^(\S+)(?: \((\S+)\))?$", m[1])
            want[f"id:{where.group(2)}" if where.group(2) else where.group(1)] += 2
    if got != want:
        diff = {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}
        return f"per-rule counts (daemon, model) differ: {diff}\n{policy_text(pol, h.root)}"
    return None


def disagrees(d, e, m):
    """@d: the daemon's (CHECK, EXPLAIN) replies; @e: eval's (decision, by,
    message); @m: the model's (decision, by, EXPLAIN line, message)."""
    return not (d[0] == e[0] == m[0] and e[1] == m[1] and e[2] == m[3] and d[1] == m[2])



def rule_lists(pol):
    """[(where, list of rules)] for the main file and every drop-in."""
    out = [("main", pol["rules"])]
    for d in DIRS:
        for name, f in pol["dirs"][d].items():
            if f["kind"] == "rules":
                out.append(((d, name), f["rules"]))
    return out


def copy_policy(pol):
    import copy
    return copy.deepcopy(pol)


def shrink(h, pol, seed, ident, action):
    """Drop rules, files and groups one at a time while the disagreement
    stays; return the smallest (policy, identity) found."""
    uid, gid, groups = ident

    def still(p, g):
        h.load(p, seed)
        d, e, m = h.answers(p, uid, gid, g, [action])
        return disagrees(d[0], e[0], m[0])

    changed = True
    while changed:
        changed = False
        candidates = []
        for d in DIRS:
            for name in list(pol["dirs"][d]):
                candidates.append(("file", d, name))
                f = pol["dirs"][d][name]
                if f["kind"] == "rules":
                    candidates += [("rule", d, name, i) for i in range(len(f["rules"]))]
        candidates += [("main", i) for i in range(len(pol["rules"]))]
        candidates += [("default",)] if pol["default"] is not None else []
        candidates += [("present", d) for d in sorted(pol["missing"])]
        # then single entries of a subject list (a rule keeps a non-empty subject)
        for where, rules in rule_lists(pol):
            for i, rule in enumerate(rules):
                for key in ("users", "groups", "uids", "gids"):
                    if len(rule.get(key, [])) > 1:
                        candidates += [("entry", where, i, key, j) for j in range(len(rule[key]))]
        for c in candidates:
            p = copy_policy(pol)
            if c[0] == "file":
                del p["dirs"][c[1]][c[2]]
            elif c[0] == "rule":
                del p["dirs"][c[1]][c[2]]["rules"][c[3]]
            elif c[0] == "main":
                del p["rules"][c[1]]
            elif c[0] == "present":
                p["missing"].discard(c[1])
            elif c[0] == "entry":
                del dict(rule_lists(p))[c[1]][c[2]][c[3]][c[4]]
            else:
                p["default"] = None
            if still(p, groups):
                pol, changed = p, True
                break
        if not changed:
            for i in range(len(groups)):
                g = groups[:i] + groups[i + 1:]
                if still(pol, g):
                    groups, changed = g, True
                    break
    h.load(pol, seed)  # leave the shrunk policy on disk for policy_text()
    return pol, (uid, gid, groups)


# ---------------------------------------------------------------------------

@cgtest.needs_root
class TestDifferential(unittest.TestCase):
    def test_glob_model_on_documented_examples(self):
        # The pattern table of docs/policy.md, "action", and a few more.
        table = [("org.example.*", ["org.example.", "org.example.a", "org.example.a.b"],
                  ["org.example", "Org.example.a"]),
                 ("*", ["a", "org.example.x"], []),
                 ("a*b*c", ["abc", "a-b-c", "axxbyyc"], ["ab", "acb"]),
                 ("*.run", ["org.example.backup.run"], ["org.example.run.now"]),
                 ("a*a", ["aa", "aaa"], ["a"]), ("**", ["x"], []), ("a**b", ["ab", "axb"], ["ba"]),
                 ("*ab*ab*", ["abab", "xabyabz"], ["aba", "abxa"]), ("*a*a", ["aa", "aba"], ["a", "ab"]),
                 ("a*a*", ["aa", "aab"], ["a", "ba"]), ("b", ["b"], ["bb", ""])]
        for pattern, yes, no in table:
            for s in yes:
                self.assertTrue(glob_match(pattern, s), (pattern, s))
            for s in no:
                self.assertFalse(glob_match(pattern, s), (pattern, s))

    def test_eval_program_is_the_wrapped_one(self):
        # eval_program() may bypass libtool's wrapper: same output, same status.
        root = cgtest.mkdtemp("cg-diff-")
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        pol = {"default": "allow", "dirs": {d: {} for d in DIRS}, "missing": set(),
               "rules": [{"action": "a*", "effect": "deny", "uids": ["5"]}]}
        write_policy(pol, root, 1)
        prog, env = eval_program()
        for ident in [(5, 5, []), (6, 6, [1])]:
            cmd = eval_cmd(root, *ident, ["a", "ab", "b"])
            want = cgtest.run(cmd)
            got = subprocess.run([prog] + cmd[1:], env=env, capture_output=True, text=True, timeout=30)
            self.assertEqual((got.returncode, got.stdout, got.stderr), (want.returncode, want.stdout, want.stderr))
            self.assertIn(want.returncode, (0, 1), want.stderr)

    def test_differential(self):
        seed = int(os.environ.get("CREDGATE_DIFF_SEED") or DEFAULT_SEED)
        want_cases = int(os.environ.get("CREDGATE_DIFF_CASES") or DEFAULT_CASES)
        per_policy = IDS_PER_ROUND * ACTIONS_PER_ID
        n_policies = max(1, -(-want_cases // per_policy))
        note(f"seed {seed} (CREDGATE_DIFF_SEED), {want_cases} cases wanted (CREDGATE_DIFF_CASES): "
             f"{n_policies} policies x {IDS_PER_ROUND} identities x {ACTIONS_PER_ID} actions, "
             f"new identities every {POLICIES_PER_ROUND} policies")
        rng = random.Random(seed)
        gen = Gen(rng)
        root = cgtest.mkdtemp("cg-diff-")
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        h = Harness(root)
        self.addCleanup(lambda: h.daemon and h.daemon.cleanup())
        workers = []

        def close_workers():
            for w in workers:
                w.close()
            workers.clear()

        self.addCleanup(close_workers)

        t0 = time.monotonic()
        cases = identities = test_runs = rule_stats_checked = 0
        stats = {"ALLOW": 0, "DENY": 0, "default": 0, "placeholder": 0, "message": 0, "console": 0}
        failure = None
        for n in range(n_policies):
            if n % POLICIES_PER_ROUND == 0:
                close_workers()
                idents = gen.identities(IDS_PER_ROUND)
            pol = gen.policy()
            pseed = rng.getrandbits(32)
            h.set_logins(gen.logins(sorted({uid for uid, _, _ in idents})))
            if n == 0:
                h.start(pol, pseed)
            else:
                h.load(pol, pseed)
            if not workers:
                workers += [Worker(h.daemon.socket, *ident) for ident in idents]
                identities += len(workers)
            rules = model_rules(pol, root)
            batches = [gen.actions(rules, ACTIONS_PER_ID, w.ident) for w in workers]
            test_cases = []
            asked = []
            for w, actions, (d, e, m) in zip(workers, batches, h.answers_batch(pol, workers, batches)):
                test_cases += [(*w.ident, a, m[i], h.login(w.ident[0])) for i, a in enumerate(actions)]
                asked += m
                for i, a in enumerate(actions):
                    cases += 1
                    stats[m[i][0]] += 1
                    stats["placeholder"] += m[i][4]
                    stats["message"] += m[i][3] is not None
                    stats["default"] += m[i][1] == "default"
                    stats["console"] += m[i][5]
                    if failure is None and disagrees(d[i], e[i], m[i]):
                        failure = (pol, pseed, w.ident, a, n)
            if failure:
                break
            test_failure = check_credgate_test(h, pol, test_cases, rng) or check_rule_hits(h, pol, asked)
            if test_failure:
                self.fail(f"seed {seed}, policy #{n}: {test_failure}")
            rule_stats_checked += bool(pol.get("rule_stats"))
            test_runs += 1
        close_workers()
        took = time.monotonic() - t0
        note(f"{cases} cases ({n + 1} policies, {identities} identities, {h.reloads} reloads, "
             f"{len(h.revisions)} revisions, each as the files give it) in {took:.1f} s; "
             f"model: {stats['ALLOW']} ALLOW, {stats['DENY']} DENY, {stats['default']} by default, "
             f"{stats['placeholder']} by rules with {{uid}}/{{gid}}, {stats['message']} with a message, "
             f"{stats['console']} by rules with a console condition; "
             f"credgate test agreed on {test_runs} test files; per-rule counts agreed on {rule_stats_checked} "
             f"policies with rule_stats")

        if not failure and want_cases >= 2000:
            # A run that never reaches these proves nothing about them.
            self.assertGreater(stats["placeholder"], want_cases // 200, stats)
            self.assertGreater(stats["message"], want_cases // 50, stats)
            # Different policies, different revisions (the generator never repeats one).
            self.assertGreater(len(h.revisions), h.reloads * 9 // 10, (len(h.revisions), h.reloads))
            if os.environ.get(NS_ENV) == "1":
                self.assertGreater(stats["console"], want_cases // 100, stats)
        if failure:
            pol, pseed, ident, action, n = failure
            d, e, m = h.answers(pol, *ident, [action])
            first = (f"first seen as: daemon {d[0][0]} / {d[0][1]!r}, eval {e[0][0]} by {e[0][1]}: {e[0][2]!r}, "
                     f"model {m[0][0]} by {m[0][1]} / {m[0][2]!r}")
            pol, ident = shrink(h, pol, pseed, ident, action)
            d, e, m = h.answers(pol, *ident, [action])
            uid, gid, groups = ident
            login = h.logins.get(uid, ("none", None, "nofile"))
            self.fail(f"disagreement (seed {seed}, policy #{n}); {first}; shrunk to:\n"
                      f"{policy_text(pol, root)}\n"
                      f"--- identity: uid={uid} gid={gid} groups={','.join(map(str, groups))}\n"
                      f"--- login state of uid {uid}: {login}\n"
                      f"--- action: {action}\n"
                      f"daemon CHECK:   {d[0][0]}\n"
                      f"daemon EXPLAIN: {d[0][1]}\n"
                      f"credgate eval:  {e[0][0]} by {e[0][1]}: {e[0][2]!r}\n"
                      f"model:          {m[0][0]} by {m[0][1]}: {m[0][3]!r}\n"
                      f"model EXPLAIN:  {m[0][2]}\n"
                      f"eval command: {shlex.join(eval_cmd(root, uid, gid, groups, [action], login=h.login(uid)))}\n"
                      f"(the temp dir is removed; its files are printed above)")
        h.stop()


if __name__ == "__main__":
    cgtest.reenter_with_private_run_systemd(NS_ENV)
    cgtest.main()
