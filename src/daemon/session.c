/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The line protocol of one connection, without any I/O: bytes in, replies
 * out. Keeping it free of sockets lets the unit tests and the fuzzer drive
 * exactly the code the daemon runs, split at any byte.
 *
 * The identity used for every decision is the one the kernel gave at accept
 * time (s->creds); nothing the client sends can change it.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "action.h"
#include "macro.h"
#include "session.h"

#define OUT_KEEP 128 /* keep a drained reply buffer up to this size */

const char *proto_error_name(ProtoError e) {
        switch (e) {
        case PROTO_OK:
                return NULL;
        case PROTO_BAD_REQUEST:
                return "bad-request";
        case PROTO_UNKNOWN_COMMAND:
                return "unknown-command";
        case PROTO_BAD_ACTION:
                return "bad-action";
        case PROTO_LINE_TOO_LONG:
                return "line-too-long";
        case PROTO_TIMEOUT:
                return "timeout";
        case PROTO_NO_CREDENTIALS:
                return "no-credentials";
        case PROTO_BAD_PEER_FD:
                return "bad-peer-fd";
        case PROTO_TOO_MANY_CONNECTIONS:
                return "too-many-connections";
        case PROTO_NOT_A_BROKER:
                return "not-a-broker";
        }
        return "bad-request";
}

ProtoError proto_parse(char *line, size_t len, Request *ret) {
        static const unsigned n_args_of[] = { [REQ_CHECK] = 1,   [REQ_CHECK_PEER] = 1,   [REQ_PING] = 0,
                                              [REQ_WHOAMI] = 0,  [REQ_EXPLAIN] = 1,      [REQ_EXPLAIN_PEER] = 1 };
        char *args[2] = {};
        unsigned n_args = 0;
        size_t verb_len = len;

        if (len == 0)
                return PROTO_BAD_REQUEST;
        /* One pass: every byte printable ASCII, and split at every space
         * ("CHECK  a" and "CHECK a " have an empty argument). */
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) line[i];
                if (c < 0x20 || c > 0x7e)
                        return PROTO_BAD_REQUEST;
                if (c == ' ') {
                        line[i] = '\0';
                        if (n_args == 0)
                                verb_len = i;
                        if (n_args < ELEMENTSOF(args))
                                args[n_args] = line + i + 1;
                        n_args++;
                }
        }
        line[len] = '\0';

        /* Fixed-length compares, which the compiler inlines: this runs for
         * every request. */
        int v = -1;
        switch (verb_len) {
        case 4:
                v = memcmp(line, "PING", 4) == 0 ? REQ_PING : -1;
                break;
        case 5:
                v = memcmp(line, "CHECK", 5) == 0 ? REQ_CHECK : -1;
                break;
        case 6:
                v = memcmp(line, "WHOAMI", 6) == 0 ? REQ_WHOAMI : -1;
                break;
        case 7:
                v = memcmp(line, "EXPLAIN", 7) == 0 ? REQ_EXPLAIN : -1;
                break;
        case 10:
                v = memcmp(line, "CHECK-PEER", 10) == 0 ? REQ_CHECK_PEER : -1;
                break;
        case 12:
                v = memcmp(line, "EXPLAIN-PEER", 12) == 0 ? REQ_EXPLAIN_PEER : -1;
                break;
        }
        if (v < 0)
                return PROTO_UNKNOWN_COMMAND;
        if (n_args != n_args_of[v])
                return PROTO_BAD_REQUEST;
        for (unsigned a = 0; a < n_args; a++)
                if (args[a][0] == '\0')
                        return PROTO_BAD_REQUEST;
        if (n_args == 1 && !action_valid(args[0], (size_t) (line + len - args[0]), false))
                return PROTO_BAD_ACTION;
        *ret = (Request){ .type = (RequestType) v, .action = args[0] };
        return PROTO_OK;
}

void session_init(Session *s, PeerCreds *creds) {
        *s = (Session){ .creds = *creds };
        *creds = (PeerCreds){};
}

/* fds from clients are closed through the hook: their last close() may
 * block (see closer.h), which the event loop must never do. */
static void release_fd(Session *s, int fd) {
        if (s->hooks && s->hooks->close_fd)
                s->hooks->close_fd(s->userdata, fd);
        else
                close(fd);
}

static void close_fds(Session *s, const int *fds, size_t n) {
        for (size_t i = 0; i < n; i++)
                release_fd(s, fds[i]);
}

static void drop_fds(Session *s) {
        for (unsigned i = 0; i < s->n_fdg; i++)
                close_fds(s, s->fdg[i].fds, s->fdg[i].n);
        free(s->fdg);
        s->fdg = NULL;
        s->n_fdg = 0;
}

void session_done(Session *s) {
        if (!s)
                return;
        drop_fds(s);
        policy_unref(s->held_policy);
        peer_creds_done(&s->creds);
        free(s->in);
        free(s->out);
        *s = (Session){};
}

static int out_reserve(Session *s, size_t n) {
        if (s->out_off > 0 && s->out_off == s->n_out)
                s->out_off = s->n_out = 0;
        if (s->n_out + n <= s->cap_out)
                return 0;
        /* Move unsent bytes to the front before growing. */
        if (s->out_off > 0) {
                memmove(s->out, s->out + s->out_off, s->n_out - s->out_off);
                s->n_out -= s->out_off;
                s->out_off = 0;
                if (s->n_out + n <= s->cap_out)
                        return 0;
        }
        size_t cap = s->cap_out ? s->cap_out : 64;
        while (cap < s->n_out + n)
                cap *= 2;
        char *m = realloc(s->out, cap);
        if (!m)
                return -ENOMEM;
        s->out = m;
        s->cap_out = cap;
        return 0;
}

static int out_add(Session *s, const char *text, size_t n) {
        if (out_reserve(s, n) < 0)
                return -ENOMEM;
        memcpy(s->out + s->n_out, text, n);
        s->n_out += n;
        return 0;
}

static int out_creds(Session *s) {
        /* "CREDS pid=P uid=U gid=G groups=a,b\n": 11 bytes per group at most. */
        size_t max = 80 + s->creds.n_groups * 11;
        if (out_reserve(s, max) < 0)
                return -ENOMEM;
        char *p = s->out + s->n_out;
        p += sprintf(p, "CREDS pid=%" PRIi32 " uid=%" PRIu32 " gid=%" PRIu32 " groups=", (int32_t) s->creds.pid,
                     (uint32_t) s->creds.uid, (uint32_t) s->creds.gid);
        for (size_t i = 0; i < s->creds.n_groups; i++)
                p += sprintf(p, "%s%" PRIu32, i ? "," : "", (uint32_t) s->creds.groups[i]);
        *p++ = '\n';
        s->n_out = (size_t) (p - s->out);
        return 0;
}

int session_fail(Session *s, ProtoError e, Stats *stats) {
        char line[64];
        int n = snprintf(line, sizeof(line), "ERR %s\n", proto_error_name(e));

        if (s->closing)
                return 0;
        s->closing = true;
        free(s->in);
        s->in = NULL;
        s->n_in = 0;
        drop_fds(s);
        if (stats)
                stats_error(stats, e);
        return out_add(s, line, (size_t) n);
}

/*
 * The fds that came with the line ending at stream offset @end: -1 for none,
 * the fd for exactly one, -2 when there were more (they are closed).
 */
static int take_line_fd(Session *s, uint64_t end) {
        unsigned k = 0, total = 0;
        bool truncated = false;
        int fd = -1;

        while (k < s->n_fdg && s->fdg[k].at <= end) {
                FdGroup *g = &s->fdg[k++];
                truncated = truncated || g->truncated;
                for (unsigned i = 0; i < g->n; i++, total++) {
                        if (total == 0)
                                fd = g->fds[i];
                        else
                                release_fd(s, g->fds[i]);
                }
        }
        if (k > 0) {
                memmove(s->fdg, s->fdg + k, (s->n_fdg - k) * sizeof(FdGroup));
                s->n_fdg -= k;
        }
        if (total > 1 || truncated) {
                if (fd >= 0)
                        release_fd(s, fd);
                return -2;
        }
        return fd;
}

size_t proto_ref(const Verdict *v, char *buf, size_t size) {
        static const char hex[] = "0123456789ABCDEF";
        size_t n = 0;

        if (!v->file)
                return (size_t) snprintf(buf, size, "default") < size ? 7 : 0;
        if (v->id) {
                int k = snprintf(buf, size, "id:%s", v->id);
                return k > 0 && (size_t) k < size ? (size_t) k : 0;
        }
        bool confusable = strncmp(v->file, "id:", 3) == 0 || strcmp(v->file, "default") == 0;
        for (const char *f = v->file; *f; f++) {
                unsigned char c = (unsigned char) *f;
                bool escape = c < 0x21 || c > 0x7e || c == '%' || (f == v->file && confusable);
                if (n + 4 > size)
                        return 0;
                if (escape) {
                        buf[n++] = '%';
                        buf[n++] = hex[c >> 4];
                        buf[n++] = hex[c & 15];
                } else
                        buf[n++] = (char) c;
        }
        int k = snprintf(buf + n, size - n, ":%u", v->line);
        return k > 0 && (size_t) k < size - n ? n + (size_t) k : 0;
}

/* "ALLOW <ref>[ -- <message>]\n": see docs/protocol.md, EXPLAIN. */
static int reply_explain(Session *s, const Verdict *v) {
        /* A policy file's path is at most PATH_MAX bytes, three each when escaped. */
        char ref[3 * 4096 + 16];
        size_t n = proto_ref(v, ref, sizeof(ref));
        size_t m = v->message ? strlen(v->message) : 0;
        const char *word = v->decision == DECISION_ALLOW ? "ALLOW " : "DENY ";

        if (n == 0) {
                strcpy(ref, "default"); /* cannot happen for a path the loader opened */
                n = 7;
        }
        if (out_reserve(s, 6 + n + 4 + m + 1) < 0)
                return -ENOMEM;
        char *p = s->out + s->n_out;
        p = mempcpy(p, word, strlen(word));
        p = mempcpy(p, ref, n);
        if (m > 0) {
                p = mempcpy(p, " -- ", 4);
                p = mempcpy(p, v->message, m);
        }
        *p++ = '\n';
        s->n_out = (size_t) (p - s->out);
        return 0;
}

static int reply_verdict(Session *s, Stats *stats, const Verdict *v, bool explain) {
        if (v->decision == DECISION_ALLOW)
                stats->allowed++;
        else
                stats->denied++;
        if (explain)
                return reply_explain(s, v);
        if (v->decision == DECISION_ALLOW)
                return out_add(s, "ALLOW\n", 6);
        return out_add(s, "DENY\n", 5);
}

static int decide(Session *s, const Policy *p, Stats *stats, const char *action, const PeerCreds *subject,
                  bool broker, bool explain) {
        Verdict v = policy_check_console(p, action, subject, s->hooks ? s->hooks->console : NULL);
        /* Queue the reply first: nothing the audit log does may change it. */
        int r = reply_verdict(s, stats, &v, explain);
        if (s->hooks && s->hooks->decision)
                s->hooks->decision(s->userdata, action, &v, subject, broker ? &s->creds : NULL);
        return r;
}

/* Decide for the peer of @fd (a socket the client handed us); closes @fd. */
static int handle_check_peer(Session *s, const Policy *p, Stats *stats, const char *action, int fd, bool explain) {
        PeerCreds peer = {};
        int r = -EBADF;

        /* SO_PEERCRED answers for unconnected and listening sockets too:
         * only a connected Unix stream socket names a real peer. */
        if (fd >= 0 && peer_check_connected_stream(fd) >= 0)
                r = peer_creds_read(fd, &peer);
        if (fd >= 0)
                release_fd(s, fd);
        if (r < 0)
                return session_fail(s, PROTO_BAD_PEER_FD, stats);
        r = decide(s, p, stats, action, &peer, true, explain);
        peer_creds_done(&peer);
        return r;
}

static int handle_line(Session *s, const Policy *p, Stats *stats, char *line, size_t len, int fd) {
        Request req;
        ProtoError e = proto_parse(line, len, &req);

        if (e != PROTO_OK) {
                if (fd >= 0)
                        release_fd(s, fd);
                return session_fail(s, e, stats);
        }
        bool peer = req.type == REQ_CHECK_PEER || req.type == REQ_EXPLAIN_PEER;
        if (!peer && fd != -1) {
                if (fd >= 0)
                        release_fd(s, fd);
                return session_fail(s, PROTO_BAD_PEER_FD, stats);
        }
        /* Only brokers the policy names may hand us descriptors; the server
         * does not even take them in from anyone else. */
        if (peer && !s->broker) {
                if (fd >= 0)
                        release_fd(s, fd);
                return session_fail(s, PROTO_NOT_A_BROKER, stats);
        }
        stats->requests++;
        switch (req.type) {
        case REQ_CHECK:
                return decide(s, p, stats, req.action, &s->creds, false, false);
        case REQ_CHECK_PEER:
                return handle_check_peer(s, p, stats, req.action, fd, false);
        case REQ_EXPLAIN:
                return decide(s, p, stats, req.action, &s->creds, false, true);
        case REQ_EXPLAIN_PEER:
                return handle_check_peer(s, p, stats, req.action, fd, true);
        case REQ_PING:
                return out_add(s, "PONG\n", 5);
        case REQ_WHOAMI:
                return out_creds(s);
        }
        return session_fail(s, PROTO_BAD_REQUEST, stats);
}

/* Handle complete lines in buf[0..n), up to @max in all; return how many bytes were used. */
static size_t handle_buffer(Session *s, const Policy *p, Stats *stats, char *buf, size_t n, int *count,
                            unsigned max) {
        size_t used = 0;

        while (!s->closing && used < n && session_pending(s) < SESSION_OUT_HIGH && (unsigned) *count < max) {
                size_t left = n - used, scan = left < LINE_MAX_BYTES ? left : LINE_MAX_BYTES;
                char *nl = memchr(buf + used, '\n', scan);
                if (!nl) {
                        if (left >= LINE_MAX_BYTES && session_fail(s, PROTO_LINE_TOO_LONG, stats) < 0)
                                *count = -ENOMEM;
                        break;
                }
                size_t len = (size_t) (nl - (buf + used));
                int fd = s->n_fdg > 0 ? take_line_fd(s, s->pos + len) : -1;
                if (handle_line(s, p, stats, buf + used, len, fd) < 0) {
                        *count = -ENOMEM;
                        break;
                }
                used += len + 1;
                s->pos += len + 1;
                if (*count >= 0)
                        (*count)++;
        }
        return used;
}

/* Remember fds that arrived with bytes up to stream offset @at. */
static int add_fds(Session *s, Stats *stats, uint64_t at, const int *fds, size_t n, bool truncated) {
        /* Only one line can be incomplete when a read happens, so more than a
         * couple of pending groups means fds without matching lines. */
        if (s->n_fdg >= 2 || n > SESSION_MAX_FDS) {
                close_fds(s, fds, n);
                return session_fail(s, PROTO_BAD_PEER_FD, stats);
        }
        FdGroup *m = reallocarray(s->fdg, s->n_fdg + 1, sizeof(FdGroup));
        if (!m) {
                close_fds(s, fds, n);
                return -ENOMEM;
        }
        s->fdg = m;
        FdGroup *g = &s->fdg[s->n_fdg++];
        *g = (FdGroup){ .at = at, .n = (unsigned) n, .truncated = truncated };
        /* None at all when the kernel dropped them (truncated): @fds may be NULL. */
        if (n > 0)
                memcpy(g->fds, fds, n * sizeof(int));
        return 0;
}

static int feed(Session *s, const Policy *p, Stats *stats, char *data, size_t n, const int *fds, size_t n_fds,
                bool truncated, unsigned max) {
        int count = 0;

        if (s->closing) {
                close_fds(s, fds, n_fds);
                return 0;
        }
        if (n_fds > 0 || truncated) {
                /* fds always come with data on a stream socket; without, no line owns them */
                if (n == 0) {
                        close_fds(s, fds, n_fds);
                        return session_fail(s, PROTO_BAD_PEER_FD, stats);
                }
                if (add_fds(s, stats, s->pos + s->n_in + n - 1, fds, n_fds, truncated) < 0)
                        return -ENOMEM;
                if (s->closing)
                        return 0;
        }

        if (s->n_in == 0) {
                /* Fast path: handle straight from the caller's buffer, keep the rest. */
                size_t used = handle_buffer(s, p, stats, data, n, &count, max);
                if (!s->closing && used < n) {
                        s->in = malloc(n - used);
                        if (!s->in)
                                return -ENOMEM;
                        memcpy(s->in, data + used, n - used);
                        s->n_in = n - used;
                }
                return count;
        }

        if (n > 0) {
                char *m = realloc(s->in, s->n_in + n);
                if (!m)
                        return -ENOMEM;
                s->in = m;
                memcpy(s->in + s->n_in, data, n);
                s->n_in += n;
        }

        size_t used = handle_buffer(s, p, stats, s->in, s->n_in, &count, max);
        if (s->closing)
                return count;
        memmove(s->in, s->in + used, s->n_in - used);
        s->n_in -= used;
        if (s->n_in == 0) {
                free(s->in);
                s->in = NULL;
        }
        return count;
}

int session_feed(Session *s, Policy *p, Stats *stats, char *data, size_t n, const int *fds, size_t n_fds,
                 bool truncated) {
        return session_feed_max(s, p, stats, data, n, fds, n_fds, truncated, UINT_MAX);
}

int session_feed_max(Session *s, Policy *p, Stats *stats, char *data, size_t n, const int *fds, size_t n_fds,
                     bool truncated, unsigned max) {
        /* Requests held back (by back-pressure or by @max) were received under
         * the policy of that moment: answer them with it, even after a reload. */
        int r = feed(s, s->held_policy ? s->held_policy : p, stats, data, n, fds, n_fds, truncated, max);
        bool backlog = session_has_backlog(s);
        if (backlog && !s->held_policy)
                s->held_policy = policy_ref(p);
        else if (!backlog && s->held_policy)
                s->held_policy = policy_unref(s->held_policy);
        return r;
}

void session_sent(Session *s, size_t n) {
        s->out_off += n;
        if (s->out_off >= s->n_out) {
                s->out_off = s->n_out = 0;
                if (s->cap_out > OUT_KEEP) {
                        free(s->out);
                        s->out = NULL;
                        s->cap_out = 0;
                }
        }
}

bool session_wants_input(const Session *s) {
        return !s->closing && session_pending(s) < SESSION_OUT_HIGH && !session_has_backlog(s);
}

bool session_has_backlog(const Session *s) {
        /* A complete line, or enough bytes to know the line is too long. */
        return !s->closing && s->n_in > 0 &&
               (s->n_in >= LINE_MAX_BYTES || memchr(s->in, '\n', s->n_in) != NULL);
}
