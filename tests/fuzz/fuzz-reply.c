/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: libcredgate's reply parsing, through the public calls.
 *
 * The library is compiled into this file (#include of credgate.c) with
 * send() and sendmsg() wrapped: once a call has sent its request, the
 * wrapper writes the fuzz input as the "daemon's" reply into the other end
 * of a socketpair and shuts it, so the real code reads exactly those bytes
 * and then EOF. No daemon, no thread, no timeout. The public API and ABI
 * are untouched.
 *
 * Input: byte 0 picks the call (bits 0-2: check, check_many, ping, whoami,
 * check_peer, explain, explain_peer; bits 3-4: how many actions for
 * check_many, minus one), the rest is the reply.
 *
 * Oracle: an independent strict reader of docs/protocol.md. A call succeeds
 * only when its reply lines are exactly well-formed, returns exactly what
 * they say, and otherwise fails with the error the protocol maps to and
 * leaves its out-parameters alone; a second call on the same connection
 * always fails (a reply nobody asked for never answers a question).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static ssize_t fuzz_send(int fd, const void *buf, size_t len, int flags);
static ssize_t fuzz_sendmsg(int fd, const struct msghdr *mh, int flags);
#define send fuzz_send
#define sendmsg fuzz_sendmsg
#include "credgate.c"
#undef send
#undef sendmsg

#define check(cond, ...)                                                                          \
        do {                                                                                      \
                if (!(cond)) {                                                                    \
                        fprintf(stderr, "fuzz-reply: %s:%d: %s: ", __FILE__, __LINE__, #cond);   \
                        fprintf(stderr, __VA_ARGS__);                                             \
                        fputc('\n', stderr);                                                      \
                        abort();                                                                  \
                }                                                                                 \
        } while (0)

#define REPLY_FUZZ_MAX (64 * 1024) /* fits a socketpair's buffer: never blocks */

static int daemon_fd = -1;
static const uint8_t *reply;
static size_t reply_len;

/* After the first request bytes went out, the "daemon" answers. */
static void answer(void) {
        if (daemon_fd < 0 || !reply)
                return;
        size_t off = 0;
        while (off < reply_len) {
                ssize_t k = write(daemon_fd, reply + off, reply_len - off);
                check(k > 0, "write: %m");
                off += (size_t) k;
        }
        reply = NULL;
        check(shutdown(daemon_fd, SHUT_WR) == 0, "shutdown: %m");
}

static ssize_t fuzz_send(int fd, const void *buf, size_t len, int flags) {
        ssize_t k = send(fd, buf, len, flags);
        if (k > 0)
                answer();
        return k;
}

static ssize_t fuzz_sendmsg(int fd, const struct msghdr *mh, int flags) {
        ssize_t k = sendmsg(fd, mh, flags);
        if (k > 0)
                answer();
        return k;
}

/* ---- the oracle ---------------------------------------------------------- */

/* The next line of the reply: [*p, nl), or false when there is no '\n'. */
static bool take_line(const char **p, const char *end, const char **ret, size_t *ret_len) {
        const char *nl = memchr(*p, '\n', (size_t) (end - *p));
        if (!nl)
                return false;
        *ret = *p;
        *ret_len = (size_t) (nl - *p);
        *p = nl + 1;
        return true;
}

static bool is(const char *l, size_t n, const char *word) {
        return n == strlen(word) && memcmp(l, word, n) == 0;
}

/* What a non-result line must make the call return (docs/protocol.md "Errors"). */
static int expect_error(const char *l, size_t n) {
        static const struct {
                const char *reason;
                int error;
        } map[] = {
                { "bad-peer-fd", -EBADF },       { "bad-action", -EINVAL },   { "no-credentials", -ENODATA },
                { "too-many-connections", -EUSERS }, { "timeout", -ETIMEDOUT }, { "line-too-long", -EPROTO },
                { "bad-request", -EPROTO },       { "unknown-command", -EPROTO }, { "not-a-broker", -EPERM },
        };
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) l[i] < 0x20 || (unsigned char) l[i] > 0x7e)
                        return -EBADMSG;
        if (n < 4 || memcmp(l, "ERR ", 4) != 0)
                return -EBADMSG;
        for (size_t i = 0; i < ELEMENTSOF(map); i++)
                if (is(l + 4, n - 4, map[i].reason))
                        return map[i].error;
        return -EPROTO;
}

/* A decimal number without leading zeros (the daemon prints %u), <= max. */
static bool number(const char **p, const char *end, uint64_t max, uint64_t *ret) {
        const char *s = *p;
        uint64_t v = 0;
        if (s >= end || *s < '0' || *s > '9')
                return false;
        if (*s == '0' && s + 1 < end && s[1] >= '0' && s[1] <= '9')
                return false;
        for (; s < end && *s >= '0' && *s <= '9'; s++) {
                v = v * 10 + (uint64_t) (*s - '0');
                if (v > max)
                        return false;
        }
        *ret = v;
        *p = s;
        return true;
}

static bool word(const char **p, const char *end, const char *w) {
        size_t n = strlen(w);
        if ((size_t) (end - *p) < n || memcmp(*p, w, n) != 0)
                return false;
        *p += n;
        return true;
}

/* "CREDS pid=P uid=U gid=G groups=a,b,..." with groups ascending, unique. */
static bool creds_line(const char *l, size_t n, credgate_creds *ret, gid_t *groups, size_t max_groups) {
        const char *p = l, *end = l + n;
        uint64_t pid, uid, gid, g, last = 0;
        size_t k = 0;
        if (!word(&p, end, "CREDS pid=") || !number(&p, end, INT32_MAX, &pid) || !word(&p, end, " uid=") ||
            !number(&p, end, UINT32_MAX, &uid) || !word(&p, end, " gid=") || !number(&p, end, UINT32_MAX, &gid) ||
            !word(&p, end, " groups="))
                return false;
        while (p < end) {
                if (k > 0 && !word(&p, end, ","))
                        return false;
                if (!number(&p, end, UINT32_MAX, &g) || (k > 0 && g <= last) || k == max_groups)
                        return false;
                groups[k++] = (gid_t) g;
                last = g;
        }
        *ret = (credgate_creds){ .pid = (pid_t) pid, .uid = (uid_t) uid, .gid = (gid_t) gid, .n_groups = k };
        return true;
}

/* "ALLOW REF[ -- MESSAGE]" or "DENY ...": REF 1+ bytes of '!'..'~', MESSAGE 1..200 of ' '..'~'. */
static bool explanation_line(const char *l, size_t n, credgate_decision *ret_d, const char **ret_ref,
                             size_t *ret_ref_len, const char **ret_msg, size_t *ret_msg_len) {
        const char *p = l, *end = l + n;
        if (word(&p, end, "ALLOW "))
                *ret_d = CREDGATE_ALLOW;
        else if (word(&p, end, "DENY "))
                *ret_d = CREDGATE_DENY;
        else
                return false;
        const char *ref = p;
        while (p < end && *p >= '!' && *p <= '~')
                p++;
        if (p == ref)
                return false;
        *ret_ref = ref;
        *ret_ref_len = (size_t) (p - ref);
        *ret_msg = NULL;
        *ret_msg_len = 0;
        if (p == end)
                return true;
        if (!word(&p, end, " -- ") || end - p < 1 || end - p > 200)
                return false;
        for (const char *q = p; q < end; q++)
                if (*q < ' ' || *q > '~')
                        return false;
        *ret_msg = p;
        *ret_msg_len = (size_t) (end - p);
        return true;
}

/* ---- the target ------------------------------------------------------------ */

static const char *const actions[] = { "org.example.a", "b", "org.example.c/d", "e:f" };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1 || size - 1 > REPLY_FUZZ_MAX)
                return 0;
        unsigned op = data[0] & 7, n_actions = 1 + ((data[0] >> 3) & 3);
        if (op > 6)
                return 0;
        int sv[2], peer[2] = { -1, -1 };
        check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair: %m");
        credgate *c = calloc(1, sizeof(*c));
        check(c, "out of memory");
        *c = (credgate){ .fd = sv[0], .timeout_ms = 1000 };
        check(fcntl(c->fd, F_SETFL, O_NONBLOCK) == 0, "fcntl: %m");
        daemon_fd = sv[1];
        reply = data + 1;
        reply_len = size - 1;

        const char *p = (const char *) data + 1, *end = p + reply_len, *l;
        size_t n;
        int r;
        if (op == 0 || op == 1 || op == 4) {
                credgate_decision d[4] = { 7, 7, 7, 7 }, want[4];
                unsigned k = op == 1 ? n_actions : 1, ok = 0;
                int want_r = -ECONNRESET;
                if (op == 0)
                        r = credgate_check(c, actions[0], d);
                else if (op == 1)
                        r = credgate_check_many(c, actions, k, d);
                else {
                        check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, peer) == 0, "socketpair: %m");
                        r = credgate_check_peer(c, peer[0], actions[0], d);
                }
                while (ok < k && take_line(&p, end, &l, &n)) {
                        if (is(l, n, "ALLOW"))
                                want[ok++] = CREDGATE_ALLOW;
                        else if (is(l, n, "DENY"))
                                want[ok++] = CREDGATE_DENY;
                        else {
                                want_r = expect_error(l, n);
                                break;
                        }
                }
                /* check and check_many refuse a reply beyond the last one asked for. */
                if (ok == k && op != 4 && p < end)
                        want_r = -EBADMSG;
                if (ok == k && want_r != -EBADMSG) {
                        check(r == 0, "call %u failed (%d) on a well-formed reply", op, r);
                        for (unsigned i = 0; i < k; i++)
                                check(d[i] == want[i], "decision %u is %d, reply says %d", i, d[i], want[i]);
                } else {
                        check(r < 0, "call %u accepted a malformed reply", op);
                        check(r == want_r, "call %u returned %d, expected %d", op, r, want_r);
                        for (unsigned i = 0; i < 4; i++)
                                check(d[i] == 7, "decision %u written on error", i);
                }
        } else if (op == 5 || op == 6) {
                credgate_explanation e = { .decision = 7 };
                if (op == 5)
                        r = credgate_explain(c, actions[0], &e);
                else {
                        check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, peer) == 0, "socketpair: %m");
                        r = credgate_explain_peer(c, peer[0], actions[0], &e);
                }
                credgate_decision d;
                const char *ref, *msg;
                size_t ref_len, msg_len;
                if (!take_line(&p, end, &l, &n))
                        check(r == -ECONNRESET, "explain returned %d without a reply line", r);
                else if (explanation_line(l, n, &d, &ref, &ref_len, &msg, &msg_len)) {
                        check(r == 0, "explain failed (%d) on a well-formed reply", r);
                        check(e.decision == d, "decision %d, reply says %d", e.decision, d);
                        check(e.ref && strlen(e.ref) == ref_len && memcmp(e.ref, ref, ref_len) == 0, "ref differs");
                        check(msg ? e.message && strlen(e.message) == msg_len && memcmp(e.message, msg, msg_len) == 0
                                  : !e.message,
                              "message differs");
                } else {
                        int want_r = expect_error(l, n);
                        check(r == want_r, "explain returned %d on a malformed reply, expected %d", r, want_r);
                        check(e.decision == 7 && !e.ref && !e.message, "explanation written on error");
                }
                credgate_explanation_clear(&e);
        } else if (op == 2) {
                r = credgate_ping(c);
                if (take_line(&p, end, &l, &n))
                        check(r == (is(l, n, "PONG") ? 0 : expect_error(l, n)), "ping returned %d", r);
                else
                        check(r == -ECONNRESET, "ping returned %d without a reply line", r);
        } else {
                credgate_creds cr = { .pid = 7 }, want;
                static gid_t groups[REPLY_FUZZ_MAX / 2];
                r = credgate_whoami(c, &cr);
                if (take_line(&p, end, &l, &n)) {
                        if (creds_line(l, n, &want, groups, ELEMENTSOF(groups))) {
                                check(r == 0, "whoami failed (%d) on a well-formed reply", r);
                                check(cr.pid == want.pid && cr.uid == want.uid && cr.gid == want.gid &&
                                              cr.n_groups == want.n_groups,
                                      "whoami creds differ from the reply");
                                check(cr.n_groups == 0 || memcmp(cr.groups, groups, cr.n_groups * sizeof(gid_t)) == 0,
                                      "whoami groups differ from the reply");
                        } else {
                                int e = n > 6 && memcmp(l, "CREDS ", 6) == 0 ? -EBADMSG : expect_error(l, n);
                                check(r == e, "whoami returned %d on a malformed reply, expected %d", r, e);
                                check(cr.pid == 7 && !cr.groups, "creds written on error");
                        }
                } else
                        check(r == -ECONNRESET, "whoami returned %d without a reply line", r);
                credgate_creds_clear(&cr);
        }

        /* Whatever is left, the next question must not be answered by it. */
        if (r == 0) {
                credgate_decision d = 7;
                r = credgate_check(c, actions[1], &d);
                check(r < 0 && d == 7, "a second call succeeded (%d) on one reply", r);
        }

        reply = NULL;
        credgate_close(c);
        close(sv[1]);
        daemon_fd = -1;
        if (peer[0] >= 0) {
                close(peer[0]);
                close(peer[1]);
        }
        return 0;
}
