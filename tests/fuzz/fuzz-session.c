/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: the line protocol of one connection (session.c), driven the
 * way server.c drives it, with the chunking, the attached fds, the reply
 * draining and policy reloads all chosen by the input.
 *
 * Oracle: an independent model of docs/protocol.md computes the exact reply
 * stream the session must produce; any difference aborts. On top of that,
 * every decision the session takes is checked against the two rules that can
 * allow (one action for one uid, and one more for that uid at a console),
 * every fd handed to the session must be
 * closed exactly once, and the statistics must match the replies.
 *
 * Input: byte 0 = flags (bits 0-1 identity, bit 2 time out at the end, bit 3
 * the client is no broker, bit 4 serve at most 1 + bits 5-7 requests per call
 * as the server's fair turns do),
 * byte 1 = number of control bytes, then the control bytes, then the bytes
 * the client sends. Each control byte is one read: bits 0-3 its length
 * (table below), bits 4-5 its fds (none, one connected socket, one
 * /dev/null, or an extended byte follows: bits 0-4 count (max 17), bit 6
 * sockets instead of /dev/null, bit 7 truncated), bit 6 leave the replies
 * unread, bit 7 reload (switch policies) before the read. When the control
 * bytes run out, the rest is one read.
 *
 * A client that is no broker is driven as server.c drives it: its reads have
 * no room for fds, so a read that came with some hands the session none,
 * only "truncated"; nothing after that read is fed, and once the lines before
 * it are answered the connection ends in ERR bad-peer-fd unless it already
 * ended.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "action.h"
#include "macro.h"
#include "session.h"

#define ALLOWED_ACTION "org.example.allowed"
#define MAX_FDS_PER_INPUT 48
#define N_GROUPS_BIG 200 /* ~2.2 KB per WHOAMI reply: 30 reach back-pressure */

#define check(cond, ...)                                                               \
        do {                                                                           \
                if (!(cond)) {                                                         \
                        fprintf(stderr, "fuzz-session: %s:%d: %s: ", __FILE__, __LINE__, #cond); \
                        fprintf(stderr, __VA_ARGS__);                                  \
                        fputc('\n', stderr);                                           \
                        abort();                                                       \
                }                                                                      \
        } while (0)

typedef struct Buf {
        char *p;
        size_t n, cap;
} Buf;

static void buf_add(Buf *b, const void *data, size_t n) {
        if (b->n + n > b->cap) {
                size_t cap = b->cap ? b->cap : 256;
                while (cap < b->n + n)
                        cap *= 2;
                b->p = realloc(b->p, cap);
                check(b->p, "out of memory");
                b->cap = cap;
        }
        memcpy(b->p + b->n, data, n);
        b->n += n;
}

static void buf_addf(Buf *b, const char *s) {
        buf_add(b, s, strlen(s));
}

/* Policy 0 allows ALLOWED_ACTION to uid_a only, policy 1 to uid_b only;
 * each allows CONSOLE_ACTION to the same uid when it is active at a seat,
 * and denies LOCK_ACTION to anyone active at a seat. */
static Policy *policies[2];
static uid_t uid_a, uid_b, my_uid;

#define CONSOLE_ACTION "con.use"
#define LOCK_ACTION "con.lock"

/* The login state the session's Console reports: uid_a is active on
 * seat0, uid 4294967294 cannot be read (fail closed), others hold no seat. */
static int fake_console_level(void *userdata, uint32_t uid, const char *seat) {
        (void) userdata;
        (void) seat;
        if (uid == 4294967294u)
                return -EIO;
        return uid == uid_a ? CONSOLE_ACTIVE : CONSOLE_NONE;
}
static const Console fake_console = { .level = fake_console_level };

static Policy *make_policy(uid_t allowed) {
        PolicyBuilder *b = policy_builder_new();
        IdRange r = { allowed, allowed };
        RuleSpec allow = { .action = ALLOWED_ACTION, .effect = DECISION_ALLOW, .uids = &r, .n_uids = 1, .line = 1 };
        RuleSpec deny = { .action = "org.example.*", .effect = DECISION_DENY, .anyone = true, .line = 2,
                          .id = "ex", .message = "no -- way" };
        RuleSpec deny_all = { .action = "*", .effect = DECISION_DENY, .uids = &r, .n_uids = 1, .line = 3 };
        RuleSpec console = { .action = CONSOLE_ACTION, .effect = DECISION_ALLOW, .uids = &r, .n_uids = 1, .line = 4,
                             .console = CONSOLE_ACTIVE };
        RuleSpec lock = { .action = LOCK_ACTION, .effect = DECISION_DENY, .anyone = true, .line = 5,
                          .console = CONSOLE_ACTIVE, .seat = "seat0" };
        Policy *p = NULL;

        check(b, "policy_builder_new");
        check(policy_builder_add_file(b, "fuzz.conf") == 0, "add_file");
        check(policy_builder_add_rule(b, &allow) == 0, "add_rule");
        check(policy_builder_add_rule(b, &deny) == 0, "add_rule");
        check(policy_builder_add_rule(b, &console) == 0, "add_rule");
        check(policy_builder_add_rule(b, &lock) == 0, "add_rule");
        check(policy_builder_add_rule(b, &deny_all) == 0, "add_rule");
        policy_builder_set_default(b, DECISION_DENY);
        check(policy_builder_finish(b, &p) == 0 && p, "finish");
        return p;
}

static void init(void) {
        if (policies[0])
                return;
        my_uid = geteuid();
        uid_a = my_uid;
        uid_b = my_uid == 4294967294u ? 0 : my_uid + 1;
        policies[0] = make_policy(uid_a);
        policies[1] = make_policy(uid_b);
}

/* ---- the model: docs/protocol.md, literally ---------------------------- */

typedef struct Group {
        uint64_t at; /* stream offset of the last byte of its read */
        unsigned n;
        bool truncated, good; /* good: connected Unix stream sockets */
} Group;

typedef struct Model {
        Buf stream; /* every byte sent */
        uint64_t pos; /* start of the first unanswered line */
        Group groups[4];
        unsigned n_groups;
        bool closed;
        bool broker;
        Buf out;
        Buf whoami; /* the CREDS line, made once */
        const PeerCreds *creds;
} Model;

static bool model_action(const char *s, size_t n) {
        if (n < 1 || n > 255)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '_' || c == ':' || c == '/' || c == '-'))
                        return false;
        }
        return true;
}

static void model_err(Model *m, const char *reason) {
        buf_addf(&m->out, "ERR ");
        buf_addf(&m->out, reason);
        buf_addf(&m->out, "\n");
        m->closed = true;
}

static bool is(const char *action, size_t n, const char *s) {
        return n == strlen(s) && memcmp(action, s, n) == 0;
}

static void model_verdict(Model *m, const char *action, size_t n, uid_t uid, int pol, bool explain) {
        uid_t allowed = pol == 0 ? uid_a : uid_b;
        /* docs/policy.md: active at a seat, or login state unreadable (a deny matches, an allow does not). */
        bool active = uid == uid_a && uid != 4294967294u, unreadable = uid == 4294967294u;
        bool allow = is(action, n, ALLOWED_ACTION) && uid == allowed;
        bool console = !allow && is(action, n, CONSOLE_ACTION) && uid == allowed && active;
        if (!explain)
                return buf_addf(&m->out, allow || console ? "ALLOW\n" : "DENY\n");
        /* EXPLAIN: the rule that decided (make_policy()), with its id and message. */
        if (allow)
                buf_addf(&m->out, "ALLOW fuzz.conf:1\n");
        else if (n >= 12 && memcmp(action, "org.example.", 12) == 0)
                buf_addf(&m->out, "DENY id:ex -- no -- way\n");
        else if (console)
                buf_addf(&m->out, "ALLOW fuzz.conf:4\n");
        else if (is(action, n, LOCK_ACTION) && (active || unreadable))
                buf_addf(&m->out, "DENY fuzz.conf:5\n");
        else if (uid == allowed)
                buf_addf(&m->out, "DENY fuzz.conf:3\n");
        else
                buf_addf(&m->out, "DENY default\n");
}

/* One complete line [start, start+len) whose fds are @fds (-1 none, -2 bad). */
static void model_line(Model *m, const char *line, size_t len, unsigned n_fds, bool truncated, bool good, int pol) {
        if (len == 0)
                return model_err(m, "bad-request");
        for (size_t i = 0; i < len; i++)
                if ((unsigned char) line[i] < 0x20 || (unsigned char) line[i] > 0x7e)
                        return model_err(m, "bad-request");
        const char *sp = memchr(line, ' ', len);
        size_t vlen = sp ? (size_t) (sp - line) : len;
        int verb;
        if (vlen == 5 && memcmp(line, "CHECK", 5) == 0)
                verb = 0;
        else if (vlen == 10 && memcmp(line, "CHECK-PEER", 10) == 0)
                verb = 1;
        else if (vlen == 4 && memcmp(line, "PING", 4) == 0)
                verb = 2;
        else if (vlen == 6 && memcmp(line, "WHOAMI", 6) == 0)
                verb = 3;
        else if (vlen == 7 && memcmp(line, "EXPLAIN", 7) == 0)
                verb = 4;
        else if (vlen == 12 && memcmp(line, "EXPLAIN-PEER", 12) == 0)
                verb = 5;
        else
                return model_err(m, "unknown-command");
        bool explain = verb >= 4, peer = verb == 1 || verb == 5;
        bool has_arg = sp != NULL;
        const char *arg = has_arg ? sp + 1 : NULL;
        size_t alen = has_arg ? len - vlen - 1 : 0;
        if (verb <= 1 || explain) {
                if (!has_arg || alen == 0 || memchr(arg, ' ', alen))
                        return model_err(m, "bad-request");
                if (!model_action(arg, alen))
                        return model_err(m, "bad-action");
        } else if (has_arg)
                return model_err(m, "bad-request");

        if (!peer && (n_fds > 0 || truncated))
                return model_err(m, "bad-peer-fd");
        if (peer && !m->broker)
                return model_err(m, "not-a-broker");
        switch (verb) {
        case 0:
        case 4:
                return model_verdict(m, arg, alen, m->creds->uid, pol, explain);
        case 1:
        case 5:
                if (n_fds != 1 || truncated || !good)
                        return model_err(m, "bad-peer-fd");
                return model_verdict(m, arg, alen, my_uid, pol, explain);
        case 2:
                return buf_addf(&m->out, "PONG\n");
        default:
                if (m->whoami.n == 0) {
                        char t[64];
                        snprintf(t, sizeof(t), "CREDS pid=%d uid=%u gid=%u groups=", (int) m->creds->pid,
                                 (unsigned) m->creds->uid, (unsigned) m->creds->gid);
                        buf_addf(&m->whoami, t);
                        for (size_t i = 0; i < m->creds->n_groups; i++) {
                                snprintf(t, sizeof(t), "%s%u", i ? "," : "", (unsigned) m->creds->groups[i]);
                                buf_addf(&m->whoami, t);
                        }
                        buf_addf(&m->whoami, "\n");
                }
                return buf_add(&m->out, m->whoami.p, m->whoami.n);
        }
}

/* A read of @n bytes with group @g (n == 0 and !truncated: no fds) under policy @pol. */
static void model_read(Model *m, const uint8_t *data, size_t n, const Group *g, int pol) {
        if (m->closed)
                return;
        if (g->n > 0 || g->truncated) {
                /* More fds than lines could own: refused at once (session.c add_fds) */
                if (m->n_groups >= 2 || g->n > SESSION_MAX_FDS)
                        return model_err(m, "bad-peer-fd");
                m->groups[m->n_groups] = *g;
                m->groups[m->n_groups++].at = m->stream.n + n - 1;
        }
        buf_add(&m->stream, data, n);
        while (!m->closed) {
                const char *start = m->stream.p + m->pos;
                size_t left = m->stream.n - m->pos;
                const char *nl = memchr(start, '\n', left < LINE_MAX_BYTES ? left : LINE_MAX_BYTES);
                if (!nl) {
                        if (left >= LINE_MAX_BYTES)
                                model_err(m, "line-too-long");
                        return;
                }
                size_t len = (size_t) (nl - start);
                unsigned n_fds = 0, k = 0;
                bool truncated = false, good = true;
                while (k < m->n_groups && m->groups[k].at <= m->pos + len) {
                        n_fds += m->groups[k].n;
                        truncated = truncated || m->groups[k].truncated;
                        good = good && m->groups[k].good;
                        k++;
                }
                memmove(m->groups, m->groups + k, (m->n_groups - k) * sizeof(Group));
                m->n_groups -= k;
                model_line(m, start, len, n_fds, truncated, good, pol);
                m->pos += len + 1;
        }
}

/* ---- the session under test -------------------------------------------- */

typedef struct Harness {
        Session s;
        Stats stats;
        unsigned max; /* requests per session_feed_max() call */
        Buf got;
        int pol;
        unsigned fds_in, fds_closed;
        int keep[MAX_FDS_PER_INPUT]; /* our ends of the socketpairs */
        unsigned n_keep;
} Harness;

static void hook_decision(void *userdata, const char *action, const Verdict *v, const PeerCreds *subject,
                          const PeerCreds *broker) {
        Harness *h = userdata;
        check(v->decision == DECISION_DENY || v->decision == DECISION_ALLOW, "decision %d", (int) v->decision);
        if (v->decision == DECISION_ALLOW) {
                bool console = strcmp(action, CONSOLE_ACTION) == 0;
                check(console || strcmp(action, ALLOWED_ACTION) == 0, "ALLOW for '%s'", action);
                const Policy *used = h->s.held_policy ? h->s.held_policy : policies[h->pol];
                check(subject->uid == (used == policies[0] ? uid_a : uid_b), "ALLOW for uid %u",
                      (unsigned) subject->uid);
                check(!v->by_default && v->line == (console ? 4u : 1u), "ALLOW not by an allow rule");
                check(!console || fake_console_level(NULL, subject->uid, NULL) == CONSOLE_ACTIVE,
                      "ALLOW by the console rule for uid %u, not at a console", (unsigned) subject->uid);
        }
        check(!broker || broker == &h->s.creds, "broker is not the connection");
}

static void hook_close(void *userdata, int fd) {
        Harness *h = userdata;
        check(close(fd) == 0, "session closed fd %d twice or never had it", fd);
        h->fds_closed++;
}

static const SessionHooks hooks = { .decision = hook_decision, .close_fd = hook_close, .console = &fake_console };

/* Read every pending reply, in odd-sized pieces, and let held requests run. */
static void drain(Harness *h) {
        for (;;) {
                while (session_pending(&h->s) > 0) {
                        size_t k = session_pending(&h->s);
                        if (k > 4093)
                                k = 4093;
                        buf_add(&h->got, session_out(&h->s), k);
                        session_sent(&h->s, k);
                }
                if (!session_has_backlog(&h->s))
                        return;
                int r = session_feed_max(&h->s, policies[h->pol], &h->stats, NULL, 0, NULL, 0, false, h->max);
                check(r >= 0, "session_feed(0) = %d", r);
                check((unsigned) r <= h->max, "%d requests handled, at most %u wanted", r, h->max);
        }
}

static int make_fd(Harness *h, bool good) {
        if (!good) {
                int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                check(fd >= 0, "open /dev/null");
                return fd;
        }
        int sv[2];
        check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
        h->keep[h->n_keep++] = sv[1];
        return sv[0];
}

static const size_t lengths[16] = { 1, 2, 3, 4, 5, 7, 8, 13, 16, 31, 64, 255, 1023, 1024, 1025, 4096 };

static PeerCreds make_creds(unsigned variant) {
        PeerCreds c = { .pid = 4242, .uid = uid_a, .gid = 100 };
        switch (variant) {
        case 1:
                c.uid = uid_b;
                c.gid = 0;
                c.n_groups = 3;
                break;
        case 2:
                c = (PeerCreds){ .pid = 0, .uid = 4294967294u, .gid = 4294967294u, .n_groups = 1 };
                break;
        case 3:
                /* Long WHOAMI replies reach back-pressure with a few requests. */
                c.n_groups = N_GROUPS_BIG;
                break;
        }
        if (c.n_groups > 0) {
                c.groups = calloc(c.n_groups, sizeof(gid_t));
                check(c.groups, "out of memory");
                for (size_t i = 0; i < c.n_groups; i++)
                        c.groups[i] = (gid_t) (variant == 3 ? 4000000000u + i : variant == 2 ? 4294967294u : i + 1);
        }
        return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        init();
        if (size < 2)
                return 0;
        uint8_t flags = data[0];
        size_t n_ctl = data[1];
        if (2 + n_ctl > size)
                n_ctl = size - 2;
        const uint8_t *ctl = data + 2, *in = data + 2 + n_ctl;
        size_t n_in = size - 2 - n_ctl, ci = 0;

        Harness h = { .max = flags & 0x10 ? 1u + (flags >> 5) : UINT32_MAX };
        PeerCreds creds = make_creds(flags & 3);
        PeerCreds model_creds = creds; /* the session takes the struct, the model reads the copy */
        Model m = { .creds = &model_creds, .broker = !(flags & 8) };
        bool poisoned = false;
        gid_t *groups_copy = NULL;
        if (creds.n_groups) {
                groups_copy = malloc(creds.n_groups * sizeof(gid_t));
                check(groups_copy, "out of memory");
                memcpy(groups_copy, creds.groups, creds.n_groups * sizeof(gid_t));
                model_creds.groups = groups_copy;
        }
        session_init(&h.s, &creds);
        check(!h.s.broker, "a new session is a broker");
        h.s.broker = m.broker;
        h.s.hooks = &hooks;
        h.s.userdata = &h;

        while (n_in > 0 && !poisoned) {
                bool has_ctl = ci < n_ctl;
                uint8_t c = has_ctl ? ctl[ci++] : 0;
                size_t len = has_ctl ? lengths[c & 0x0f] : n_in;
                if (len > n_in)
                        len = n_in;
                Group g = {};
                int fds[SESSION_MAX_FDS + 1];
                switch ((c >> 4) & 3) {
                case 1:
                case 2:
                        g.n = 1;
                        g.good = ((c >> 4) & 3) == 1;
                        break;
                case 3: {
                        uint8_t e = ci < n_ctl ? ctl[ci++] : 0;
                        g.n = (e & 0x1f) % (SESSION_MAX_FDS + 2);
                        g.good = e & 0x40;
                        g.truncated = e & 0x80;
                        break;
                }
                }
                if (h.n_keep + h.fds_in + g.n > MAX_FDS_PER_INPUT)
                        g = (Group){};
                if (!m.broker && (g.n > 0 || g.truncated)) {
                        /* None taken in: the session only learns that some came. */
                        g = (Group){ .truncated = true };
                        poisoned = true;
                }
                if (c & 0x80)
                        h.pol = !h.pol;
                /* The server reads only when the session wants input. */
                if (!session_wants_input(&h.s)) {
                        /* a held request may turn out to be an error */
                        if (!h.s.closing)
                                drain(&h);
                        if (h.s.closing)
                                break;
                }
                check(session_wants_input(&h.s), "no input wanted after draining");
                for (unsigned i = 0; i < g.n; i++)
                        fds[i] = make_fd(&h, g.good);
                h.fds_in += g.n;

                model_read(&m, in, len, &g, h.pol);
                /* session_feed() writes into its input: give it a copy of its own */
                char *copy = malloc(len);
                check(copy, "out of memory");
                memcpy(copy, in, len);
                int r = session_feed_max(&h.s, policies[h.pol], &h.stats, copy, len, fds, g.n, g.truncated, h.max);
                free(copy);
                check(r >= 0, "session_feed = %d", r);
                check((unsigned) r <= h.max, "%d requests handled, at most %u wanted", r, h.max);
                in += len;
                n_in -= len;
                if (!(c & 0x40))
                        drain(&h);
        }
        drain(&h);
        if (poisoned && !h.s.closing) {
                check(session_fail(&h.s, PROTO_BAD_PEER_FD, &h.stats) == 0, "session_fail");
                check(!m.closed, "the model closed, the session did not");
                model_err(&m, "bad-peer-fd");
                drain(&h);
        }
        if (flags & 4) {
                check(session_fail(&h.s, PROTO_TIMEOUT, &h.stats) == 0, "session_fail");
                if (!m.closed)
                        model_err(&m, "timeout");
                drain(&h);
        }

        /* The exact reply stream the protocol prescribes. */
        if (h.got.n != m.out.n || (m.out.n && memcmp(h.got.p, m.out.p, m.out.n) != 0)) {
                fprintf(stderr, "fuzz-session: replies differ from the model\n--- got (%zu bytes):\n%.*s\n"
                        "--- expected (%zu bytes):\n%.*s\n",
                        h.got.n, (int) (h.got.n > 2000 ? 2000 : h.got.n), h.got.p ? h.got.p : "", m.out.n,
                        (int) (m.out.n > 2000 ? 2000 : m.out.n), m.out.p ? m.out.p : "");
                abort();
        }
        /* Every reply line well-formed; ALLOW/DENY counted in the stats. */
        uint64_t allowed = 0, denied = 0, errors = 0, lines = 0;
        for (size_t i = 0; i < h.got.n;) {
                const char *l = h.got.p + i, *nl = memchr(l, '\n', h.got.n - i);
                check(nl, "reply without newline");
                size_t len = (size_t) (nl - l);
                lines++;
                if ((len == 5 && memcmp(l, "ALLOW", 5) == 0) || (len > 6 && memcmp(l, "ALLOW ", 6) == 0))
                        allowed++;
                else if ((len == 4 && memcmp(l, "DENY", 4) == 0) || (len > 5 && memcmp(l, "DENY ", 5) == 0))
                        denied++;
                else if (len > 4 && memcmp(l, "ERR ", 4) == 0)
                        errors++;
                else
                        check((len == 4 && memcmp(l, "PONG", 4) == 0) || (len > 6 && memcmp(l, "CREDS ", 6) == 0),
                              "bad reply line '%.*s'", (int) len, l);
                i += len + 1;
        }
        check(errors <= 1 && (errors == 0 || h.got.p[h.got.n - 1] == '\n'), "%" PRIu64 " ERR lines", errors);
        check(allowed == h.stats.allowed && denied == h.stats.denied, "stats %" PRIu64 "/%" PRIu64
              " vs replies %" PRIu64 "/%" PRIu64, h.stats.allowed, h.stats.denied, allowed, denied);
        uint64_t requests = 1; /* + 1: line-too-long or timeout */
        for (size_t i = 0; i < m.stream.n; i++)
                requests += m.stream.p[i] == '\n';
        check(lines <= requests, "%" PRIu64 " replies to %" PRIu64 " lines", lines, requests - 1);

        session_done(&h.s);
        check(h.fds_closed == h.fds_in, "%u fds handed over, %u closed", h.fds_in, h.fds_closed);
        for (unsigned i = 0; i < h.n_keep; i++)
                close(h.keep[i]);
        free(groups_copy);
        free(h.got.p);
        free(m.stream.p);
        free(m.out.p);
        free(m.whoami.p);
        return 0;
}
