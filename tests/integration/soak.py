#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Soak test (issue 6), run by 'make check-long', never by 'make check'.

One credgated; WORKERS client processes send, after a warm-up of WARMUP
requests, TOTAL requests (default one million), 10% of them malformed (many
kinds: see MALFORMED), in pipelined batches over many connections: most end
with a malformed line (ERR, then the daemon closes), some stay open for
hundreds of batches, so new connections come all the time. Every reply is
compared byte for byte with what docs/protocol.md prescribes.

Passes when: zero wrong answers, VmRSS at the end at most RSS_GROWTH_KB above
the figure after the warm-up, and the daemon's fd count back to its baseline.
Prints TAP (one test) with the figures as comments.

    make check-long
    SOAK_TOTAL=100000 make check-long      # a shorter run
"""

import os
import random
import socket
import sys
import time

import cgtest
from adversary import Child, fd_count, note, raise_nofile, recv_all, rss_kb, settle_fds

TOTAL = int(os.environ.get("SOAK_TOTAL", "1000000"))
WARMUP = int(os.environ.get("SOAK_WARMUP", str(max(10000, TOTAL // 10))))
WORKERS = int(os.environ.get("SOAK_WORKERS", "4"))
MALFORMED_SHARE = 0.10
RSS_GROWTH_KB = 1024

UID = os.geteuid()
POLICY = f"""\
default = "deny";
rules = (
  {{ action = "soak.allow"; effect = "allow"; uids = ["{UID}"]; }},
  {{ action = "soak.deny"; effect = "deny"; anyone = true; }},
  {{ action = "soak.any.*"; effect = "allow"; anyone = true; }},
  {{ action = "soak.nobody"; effect = "allow"; uids = ["{UID + 1}"]; }}
);
"""

# (request, reply) for this uid.
VALID = [
    (b"CHECK soak.allow\n", b"ALLOW\n"),
    (b"CHECK soak.deny\n", b"DENY\n"),
    (b"CHECK soak.other\n", b"DENY\n"),
    (b"CHECK soak.nobody\n", b"DENY\n"),
    (b"CHECK soak.any.x/y:z-1_2\n", b"ALLOW\n"),
    (b"CHECK soak.any." + b"a" * 246 + b"\n", b"ALLOW\n"),  # 255 characters
    (b"PING\n", b"PONG\n"),
]

# (bytes, ERR reason): each one ends the connection.
MALFORMED = [
    (b"\n", "bad-request"),
    (b"PING\r\n", "bad-request"),
    (b"CHECK\tsoak.allow\n", "bad-request"),
    (b"ping\n", "unknown-command"),
    (b"check soak.allow\n", "unknown-command"),
    (b"FOO a b\n", "unknown-command"),
    (b"CHECK\n", "bad-request"),
    (b"CHECK \n", "bad-request"),
    (b"CHECK soak.allow \n", "bad-request"),
    (b"CHECK soak.allow soak.allow\n", "bad-request"),
    (b"PING x\n", "bad-request"),
    (b"WHOAMI x\n", "bad-request"),
    (b"CHECK soak.*\n", "bad-action"),
    (b"CHECK soak.any." + b"a" * 247 + b"\n", "bad-action"),  # 256 characters
    (b"CHECK soak.al\x00low\n", "bad-request"),
    (b"CHECK soak.\xc3\xa9\n", "bad-request"),
    (b"CHECK soak.\xc3\x28\n", "bad-request"),
    (b"\xff\xfe\x00junk\x80\n", "bad-request"),
    (b"CHECK-PEER soak.allow\n", "bad-peer-fd"),
    (b"A" * 1024, "line-too-long"),
    (b"CHECK soak." + b"b" * 2000 + b"\n", "line-too-long"),
    ("fd", "bad-peer-fd"),  # a PING with an fd attached (SCM_RIGHTS)
]


def worker(path, n_requests, seed):
    def run(stop_fd):
        rnd = random.Random(seed)
        # Pre-built batches: (bytes, expected reply bytes, count).
        batches = []
        for _ in range(400):
            k = rnd.choice([1, 2, 4, 8, 16, 32, 64])
            reqs = [rnd.choice(VALID) for _ in range(k)]
            batches.append((b"".join(r for r, _ in reqs), b"".join(a for _, a in reqs), k))
        # Short ones (0-4 requests) that a malformed line ends.
        shorts = []
        for _ in range(200):
            k = rnd.randint(0, 4)
            reqs = [rnd.choice(VALID) for _ in range(k)]
            shorts.append((b"".join(r for r, _ in reqs), b"".join(a for _, a in reqs), k))
        done = valid = malformed = conns = wrong = 0
        wrongs = []
        kinds = {}
        while done < n_requests:
            conns += 1
            s = cgtest.connect(path, 10.0)
            # 1 in 500 connections is long-lived: up to 150 batches, no ERR.
            long_lived = rnd.random() < 0.002
            n_batches = rnd.randint(20, 150) if long_lived else rnd.randint(1, 6)
            ended = False
            for b in range(n_batches):
                end = (not long_lived and (b == n_batches - 1 or malformed < MALFORMED_SHARE * (done + 1))
                       and done + 9 < n_requests)
                if end:
                    data, want, k = shorts[rnd.randrange(len(shorts))]
                else:
                    data, want, k = batches[rnd.randrange(len(batches))]
                    if done + k > n_requests:
                        data, want, k = VALID[0][0], VALID[0][1], 1
                if end:
                    m, reason = MALFORMED[rnd.randrange(len(MALFORMED))]
                    kinds[reason] = kinds.get(reason, 0) + 1
                    want = want + f"ERR {reason}\n".encode()
                    if m == "fd":
                        r_, w_ = os.pipe()
                        cgtest.send_ignoring_close(s, data)
                        socket.send_fds(s, [b"PING\n"], [w_])
                        os.close(w_)
                        os.close(r_)
                    else:
                        cgtest.send_ignoring_close(s, data + m)
                    got, how = recv_all(s, 10.0)
                    ok = got == want and how == "eof"
                    malformed += 1
                    done += k + 1
                    valid += k
                else:
                    s.sendall(data)
                    got, how = recv_all(s, 10.0, lines=k)
                    ok = got == want
                    done += k
                    valid += k
                if not ok:
                    wrong += 1
                    if len(wrongs) < 5:
                        wrongs.append((data[:80], got[-80:], want[-80:], how))
                    ended = True
                    break
                if end:
                    ended = True
                    break
                if done >= n_requests:
                    break
            s.close()
            if wrong:
                break
        return dict(requests=done, valid=valid, malformed=malformed, connections=conns, wrong=wrong,
                    wrongs=wrongs, kinds=kinds)

    return run


def run_phase(path, total, seed):
    per = total // WORKERS
    counts = [per + (1 if i < total % WORKERS else 0) for i in range(WORKERS)]
    t0 = time.monotonic()
    kids = [Child(worker(path, counts[i], seed * 100 + i)) for i in range(WORKERS)]
    return kids, t0


def collect(d, kids, peak):
    res = []
    for k in kids:
        while True:
            peak["fds"] = max(peak["fds"], fd_count(d.pid))
            peak["rss"] = max(peak["rss"], rss_kb(d.pid))
            pid, _ = os.waitpid(k.pid, os.WNOHANG)
            if pid:
                k._reaped = True
                break
            time.sleep(0.2)
        res.append(k.result())
    tot = {key: sum(r[key] for r in res) for key in ("requests", "valid", "malformed", "connections", "wrong")}
    tot["wrongs"] = [w for r in res for w in r["wrongs"]]
    kinds = {}
    for r in res:
        for key, v in r["kinds"].items():
            kinds[key] = kinds.get(key, 0) + v
    tot["kinds"] = kinds
    return tot


def main():
    raise_nofile(4096)
    print("1..1", flush=True)
    d = cgtest.Daemon(POLICY)
    problems = []
    try:
        d.start()
        fd_base = settle_fds(d)
        rss_start = rss_kb(d.pid)
        peak = dict(fds=0, rss=0)

        kids, t0 = run_phase(d.socket, WARMUP, 1)
        warm = collect(d, kids, peak)
        warm_s = time.monotonic() - t0
        if warm["wrong"]:
            problems.append(f"wrong answers in the warm-up: {warm['wrongs']}")
        # After the warm-up: let the status timer run (malloc_trim) and take the baseline.
        time.sleep(2.5)
        fd0 = settle_fds(d)
        rss0 = rss_kb(d.pid)
        peak = dict(fds=0, rss=0)

        kids, t0 = run_phase(d.socket, TOTAL, 2)
        tot = collect(d, kids, peak)
        wall = time.monotonic() - t0

        deadline = time.monotonic() + 10
        while fd_count(d.pid) != fd0 and time.monotonic() < deadline:
            time.sleep(0.05)
        fd1 = fd_count(d.pid)
        time.sleep(2.5)  # one status interval: the daemon trims after a burst of closed connections
        rss1 = rss_kb(d.pid)
        alive = d.alive()
        pong = cgtest.request(d.socket, b"PING\n", lines=1) if alive else b""

        note(f"soak: warm-up {warm['requests']} requests in {warm_s:.1f} s; then {tot['requests']} requests "
             f"({tot['valid']} valid, {tot['malformed']} malformed = "
             f"{100.0 * tot['malformed'] / max(1, tot['requests']):.1f}%) over {tot['connections']} connections "
             f"from {WORKERS} processes in {wall:.1f} s = {tot['requests'] / wall:.0f} requests/s, "
             f"{tot['connections'] / wall:.0f} connections/s\n"
             f"malformed kinds: {dict(sorted(tot['kinds'].items()))}\n"
             f"wrong answers: {tot['wrong']}\n"
             f"daemon RSS: {rss_start} KiB at start, {rss0} KiB after the warm-up, peak {peak['rss']} KiB, "
             f"{rss1} KiB at the end (growth {rss1 - rss0:+d} KiB, limit {RSS_GROWTH_KB})\n"
             f"daemon fds: {fd_base} at start, {fd0} after the warm-up, peak {peak['fds']}, {fd1} at the end")
        if tot["wrong"]:
            problems.append(f"{tot['wrong']} wrong answers: {tot['wrongs']}")
        if tot["requests"] != TOTAL:
            problems.append(f"sent {tot['requests']} requests, not {TOTAL}")
        if not (0.095 <= tot["malformed"] / max(1, tot["requests"]) <= 0.105):
            problems.append(f"malformed share {tot['malformed'] / tot['requests']:.3f}, not 10%")
        if rss1 - rss0 >= RSS_GROWTH_KB:
            problems.append(f"RSS grew by {rss1 - rss0} KiB (limit {RSS_GROWTH_KB})")
        if fd1 != fd0:
            problems.append(f"fd count {fd1} at the end, {fd0} after the warm-up")
        if not alive or pong != b"PONG\n":
            problems.append(f"daemon not answering at the end (alive={alive}, PING -> {pong!r})")
        d.stop()
    except BaseException:
        import traceback
        problems.append(traceback.format_exc())
    finally:
        d.cleanup()
    if problems:
        print("not ok 1 - soak", flush=True)
        note("\n".join(problems))
        return 1
    print("ok 1 - soak", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
