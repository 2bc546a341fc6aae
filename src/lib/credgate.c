/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libcredgate: the client side of credgate's line protocol.
 *
 * A connection is a non-blocking Unix stream socket driven with poll() so
 * that every call has a deadline. Replies are parsed strictly: only the exact
 * line "ALLOW" is an allow; anything unexpected breaks the connection and is
 * returned as an error. The library never logs and never raises SIGPIPE.
 *
 * $CREDGATE_SOCKET is read with secure_getenv(): a setuid, setgid or
 * file-capability program must not let its invoker point it at a fake
 * daemon that answers ALLOW.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "action.h"
#include "credgate.h"
#include "macro.h"
#include "peercred.h"

#define REPLY_MAX (1024 * 1024) /* a WHOAMI reply with 65,536 groups fits */
#define CHECK_PEER_VERB "CHECK-PEER "
#define EXPLAIN_VERB "EXPLAIN "
#define EXPLAIN_PEER_VERB "EXPLAIN-PEER "

struct credgate {
        int fd;
        int timeout_ms;
        bool broken;
        char *in; /* received, not yet parsed: in[0..n_in) */
        size_t n_in, cap_in;
};

static int64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *socket_path_or_default(const char *path) {
        const char *e;
        if (path)
                return path;
        e = secure_getenv("CREDGATE_SOCKET");
        return e && *e ? e : CREDGATE_SOCKET_DEFAULT;
}

int credgate_open(const char *socket_path, credgate **ret) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        const char *path = socket_path_or_default(socket_path);
        size_t n = strlen(path);

        if (!ret)
                return -EINVAL;
        if (n == 0)
                return -EINVAL;
        if (n >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, n);

        credgate *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->timeout_ms = CREDGATE_TIMEOUT_DEFAULT_MS;
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0) {
                int r = -errno;
                free(c);
                return r;
        }
        /* A blocking connect() to a Unix socket whose backlog is full waits;
         * SO_SNDTIMEO bounds that wait for AF_UNIX. */
        struct timeval tv = { .tv_sec = c->timeout_ms / 1000, .tv_usec = (c->timeout_ms % 1000) * 1000 };
        (void) setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(c->fd, (struct sockaddr *) &sa, (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n + 1)) < 0) {
                int r = errno == EAGAIN || errno == EINPROGRESS ? -ETIMEDOUT : -errno;
                credgate_close(c);
                return r;
        }
        int fl = fcntl(c->fd, F_GETFL);
        if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
                int r = -errno;
                credgate_close(c);
                return r;
        }
        *ret = c;
        return 0;
}

credgate *credgate_close(credgate *c) {
        if (!c)
                return NULL;
        if (c->fd >= 0)
                close(c->fd);
        free(c->in);
        free(c);
        return NULL;
}

int credgate_set_timeout(credgate *c, int timeout_ms) {
        if (!c || timeout_ms <= 0)
                return -EINVAL;
        c->timeout_ms = timeout_ms;
        return 0;
}

/* Mark the connection unusable and pass the error on. */
static int fail(credgate *c, int r) {
        c->broken = true;
        return r;
}

static int wait_fd(credgate *c, short events, int64_t deadline) {
        for (;;) {
                int64_t left = deadline - now_ms();
                if (left <= 0)
                        return -ETIMEDOUT;
                struct pollfd p = { .fd = c->fd, .events = events };
                int r = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int) left);
                if (r > 0)
                        return 0;
                if (r < 0 && errno != EINTR)
                        return -errno;
        }
}

/*
 * Send @len bytes; with @fd >= 0 attach it (SCM_RIGHTS) to the first sendmsg.
 * Return: 0 or -errno; -EPERM when the daemon's socket refuses descriptors
 * from us (SO_PASSRIGHTS off: we are not one of its brokers).
 */
static int send_all(credgate *c, const char *buf, size_t len, int fd, int64_t deadline) {
        while (len > 0) {
                union {
                        struct cmsghdr h;
                        char buf[CMSG_SPACE(sizeof(int))];
                } ctl = {};
                struct iovec iov = { .iov_base = (void *) buf, .iov_len = len };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
                if (fd >= 0) {
                        mh.msg_control = ctl.buf;
                        mh.msg_controllen = sizeof(ctl.buf);
                        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
                        cm->cmsg_level = SOL_SOCKET;
                        cm->cmsg_type = SCM_RIGHTS;
                        cm->cmsg_len = CMSG_LEN(sizeof(int));
                        memcpy(CMSG_DATA(cm), &fd, sizeof(int));
                }
                ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN)
                                return -errno;
                        int r = wait_fd(c, POLLOUT, deadline);
                        if (r < 0)
                                return r;
                        continue;
                }
                buf += n;
                len -= (size_t) n;
                fd = -1; /* the fd went with the first bytes */
        }
        return 0;
}

/* Receive what is available into c->in; wait until something arrives. */
static int recv_some(credgate *c, int64_t deadline) {
        if (c->cap_in - c->n_in < 4096) {
                size_t cap = c->cap_in ? c->cap_in * 2 : 8192;
                if (cap > REPLY_MAX + 8192)
                        return -EBADMSG;
                char *m = realloc(c->in, cap);
                if (!m)
                        return -ENOMEM;
                c->in = m;
                c->cap_in = cap;
        }
        for (;;) {
                ssize_t n = recv(c->fd, c->in + c->n_in, c->cap_in - c->n_in, MSG_DONTWAIT);
                if (n > 0) {
                        c->n_in += (size_t) n;
                        return 0;
                }
                if (n == 0)
                        return -ECONNRESET; /* closed before a complete reply */
                if (errno == EINTR)
                        continue;
                if (errno != EAGAIN)
                        return -errno;
                int r = wait_fd(c, POLLIN, deadline);
                if (r < 0)
                        return r;
        }
}

/* Map "ERR <reason>" to an error code. */
static int err_reply(const char *reason) {
        static const struct {
                const char *reason;
                int error;
        } map[] = {
                { "bad-peer-fd", -EBADF },
                { "bad-action", -EINVAL },
                { "no-credentials", -ENODATA },
                { "not-a-broker", -EPERM },
                { "too-many-connections", -EUSERS },
                { "timeout", -ETIMEDOUT },
                { "line-too-long", -EPROTO },
                { "bad-request", -EPROTO },
                { "unknown-command", -EPROTO },
        };
        for (size_t i = 0; i < ELEMENTSOF(map); i++)
                if (strcmp(reason, map[i].reason) == 0)
                        return map[i].error;
        return -EPROTO;
}

/*
 * A send failed because the daemon closed the connection. It may have said
 * why first (e.g. "ERR too-many-connections" right after accept): report
 * that reason rather than a bare EPIPE.
 */
static int send_failed(credgate *c, int error) {
        if (error != -EPIPE && error != -ECONNRESET)
                return error;
        for (int i = 0; i < 64; i++) {
                char *nl = c->n_in ? memchr(c->in, '\n', c->n_in) : NULL;
                if (nl) {
                        *nl = '\0';
                        return strncmp(c->in, "ERR ", 4) == 0 ? err_reply(c->in + 4) : error;
                }
                if (recv_some(c, 0) < 0)
                        break;
        }
        return error;
}

/*
 * Take the next complete reply line (without '\n', NUL-terminated) from the
 * connection, receiving as needed. The line stays valid until the next call.
 * Return: 0 and *ret_line, or an error; "ERR ..." is returned as an error.
 */
static int next_line(credgate *c, size_t *consumed, char **ret_line, int64_t deadline) {
        for (;;) {
                char *start = c->in + *consumed;
                size_t left = c->n_in - *consumed;
                char *nl = left ? memchr(start, '\n', left) : NULL;
                if (nl) {
                        *nl = '\0';
                        *consumed += (size_t) (nl - start) + 1;
                        /* Replies are printable ASCII: a NUL would cut
                         * "ALLOW\0junk" down to "ALLOW" for strcmp(). */
                        for (const char *p = start; p < nl; p++)
                                if ((unsigned char) *p < 0x20 || (unsigned char) *p > 0x7e)
                                        return -EBADMSG;
                        if (strncmp(start, "ERR ", 4) == 0)
                                return err_reply(start + 4);
                        *ret_line = start;
                        return 0;
                }
                if (left > REPLY_MAX)
                        return -EBADMSG;
                /* Drop parsed lines before reading more. */
                if (*consumed > 0) {
                        memmove(c->in, start, left);
                        c->n_in = left;
                        *consumed = 0;
                }
                int r = recv_some(c, deadline);
                if (r < 0)
                        return r;
        }
}

static int parse_verdict(const char *line, credgate_decision *ret) {
        if (strcmp(line, "ALLOW") == 0)
                *ret = CREDGATE_ALLOW;
        else if (strcmp(line, "DENY") == 0)
                *ret = CREDGATE_DENY;
        else
                return -EBADMSG;
        return 0;
}

/* Leave only unparsed bytes in c->in after a call. */
static void compact(credgate *c, size_t consumed) {
        memmove(c->in, c->in + consumed, c->n_in - consumed);
        c->n_in -= consumed;
}

/*
 * May a new request go out? Nothing may be waiting from the daemon: a reply
 * nobody asked for must never answer the next question. An "ERR ..." that
 * arrived meanwhile (an idle timeout) is reported as its error.
 */
static int usable(credgate *c) {
        if (!c)
                return -EINVAL;
        if (c->broken)
                return -ENOTCONN;
        if (c->n_in == 0) {
                int r = recv_some(c, 0);
                if (r == -ETIMEDOUT)
                        return 0; /* nothing arrived: the normal case */
                if (r < 0)
                        return fail(c, r);
        }
        size_t consumed = 0;
        char *line;
        int r = next_line(c, &consumed, &line, 0);
        return fail(c, r < 0 && r != -ETIMEDOUT ? r : -EBADMSG);
}

int credgate_check_many(credgate *c, const char *const *actions, size_t n, credgate_decision *ret_decisions) {
        int r = usable(c);
        if (r < 0)
                return r;
        if (!actions || !ret_decisions)
                return -EINVAL;
        size_t total = 0;
        for (size_t i = 0; i < n; i++) {
                size_t l = actions[i] ? strnlen(actions[i], ACTION_MAX + 1) : 0;
                if (!action_valid(actions[i], l, false))
                        return -EINVAL;
                total += sizeof("CHECK \n") - 1 + l;
        }
        if (n == 0)
                return 0;

        _cleanup_free_ char *req = malloc(total + 1); /* sprintf's final NUL */
        _cleanup_free_ credgate_decision *d = calloc(n, sizeof(credgate_decision));
        if (!req || !d)
                return -ENOMEM;
        char *p = req;
        for (size_t i = 0; i < n; i++)
                p += sprintf(p, "CHECK %s\n", actions[i]);

        int64_t deadline = now_ms() + c->timeout_ms;
        size_t sent = 0, lines_sent = 0, got = 0, consumed = 0;

        /* Send and receive together: the daemon stops reading while its
         * replies to us pile up, so sending everything first could deadlock. */
        while (got < n) {
                if (sent < total) {
                        ssize_t k = send(c->fd, req + sent, total - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
                        if (k > 0) {
                                const char *end = req + sent + k;
                                for (const char *q = req + sent; (q = memchr(q, '\n', (size_t) (end - q))); q++)
                                        lines_sent++;
                                sent += (size_t) k;
                        } else if (k < 0 && errno != EAGAIN && errno != EINTR)
                                return fail(c, send_failed(c, -errno));
                }
                /* Parse every complete line we already have. */
                while (got < n) {
                        char *start = c->in + consumed, *nl;
                        size_t left = c->n_in - consumed;
                        if (!left || !(nl = memchr(start, '\n', left)))
                                break;
                        char *line;
                        r = next_line(c, &consumed, &line, deadline);
                        if (r < 0)
                                return fail(c, r);
                        r = parse_verdict(line, &d[got]);
                        if (r < 0)
                                return fail(c, r);
                        /* A reply to a request not yet sent answers nothing. */
                        if (++got > lines_sent)
                                return fail(c, -EBADMSG);
                }
                if (got == n)
                        break;
                if (consumed > 0) {
                        compact(c, consumed);
                        consumed = 0;
                }
                if (c->n_in > REPLY_MAX)
                        return fail(c, -EBADMSG);
                struct pollfd pf = { .fd = c->fd, .events = POLLIN | (sent < total ? POLLOUT : 0) };
                int64_t left = deadline - now_ms();
                if (left <= 0)
                        return fail(c, -ETIMEDOUT);
                int k = poll(&pf, 1, (int) (left > INT32_MAX ? INT32_MAX : left));
                if (k < 0 && errno != EINTR)
                        return fail(c, -errno);
                if (k > 0 && (pf.revents & (POLLIN | POLLHUP | POLLERR))) {
                        r = recv_some(c, deadline);
                        if (r < 0)
                                return fail(c, r);
                }
        }
        /* Every request is answered: anything more is a reply to nothing,
         * so this daemon is out of step with us (or not credgated). */
        compact(c, consumed);
        r = c->n_in > 0 ? -EBADMSG : recv_some(c, 0);
        if (r == 0)
                r = -EBADMSG;
        if (r != -ETIMEDOUT && r != -ECONNRESET)
                return fail(c, r);
        memcpy(ret_decisions, d, n * sizeof(credgate_decision));
        return 0;
}

int credgate_check(credgate *c, const char *action, credgate_decision *ret) {
        if (!ret)
                return -EINVAL;
        return credgate_check_many(c, &action, 1, ret);
}

/* Send one request line (with an optional fd) and take one reply line. */
static int transact(credgate *c, const char *req, size_t len, int fd, char **ret_line, size_t *ret_consumed) {
        int64_t deadline = now_ms() + c->timeout_ms;
        size_t consumed = 0;
        int r = send_all(c, req, len, fd, deadline);
        if (r < 0)
                return fail(c, send_failed(c, r));
        r = next_line(c, &consumed, ret_line, deadline);
        if (r < 0)
                return fail(c, r);
        *ret_consumed = consumed;
        return 0;
}

int credgate_check_peer(credgate *c, int peer_fd, const char *action, credgate_decision *ret) {
        char req[sizeof(CHECK_PEER_VERB) + ACTION_MAX + 1];
        size_t l = action ? strnlen(action, ACTION_MAX + 1) : 0;
        char *line;
        size_t consumed;
        credgate_decision d;
        int r = usable(c);

        if (r < 0)
                return r;
        if (!ret || peer_fd < 0 || !action_valid(action, l, false))
                return -EINVAL;
        int n = snprintf(req, sizeof(req), CHECK_PEER_VERB "%s\n", action);
        r = transact(c, req, (size_t) n, peer_fd, &line, &consumed);
        if (r < 0)
                return r;
        r = parse_verdict(line, &d);
        compact(c, consumed);
        if (r < 0)
                return fail(c, r);
        *ret = d;
        return 0;
}

/* "ALLOW <ref>[ -- <message>]" or "DENY ...": see docs/protocol.md. */
static int parse_explanation(const char *line, credgate_explanation *ret) {
        credgate_decision d;
        const char *rest, *msg = NULL;

        if (strncmp(line, "ALLOW ", 6) == 0)
                d = CREDGATE_ALLOW, rest = line + 6;
        else if (strncmp(line, "DENY ", 5) == 0)
                d = CREDGATE_DENY, rest = line + 5;
        else
                return -EBADMSG;
        size_t n = strcspn(rest, " ");
        if (n == 0)
                return -EBADMSG;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) rest[i] < 0x21 || (unsigned char) rest[i] > 0x7e)
                        return -EBADMSG;
        if (rest[n] != '\0') {
                msg = rest + n + 4;
                size_t m = strlen(msg);
                if (strncmp(rest + n, " -- ", 4) != 0 || m == 0 || m > 200)
                        return -EBADMSG;
                for (size_t i = 0; i < m; i++)
                        if ((unsigned char) msg[i] < 0x20 || (unsigned char) msg[i] > 0x7e)
                                return -EBADMSG;
        }
        char *ref = strndup(rest, n), *message = msg ? strdup(msg) : NULL;
        if (!ref || (msg && !message)) {
                free(ref);
                free(message);
                return -ENOMEM;
        }
        *ret = (credgate_explanation){ .decision = d, .ref = ref, .message = message };
        return 0;
}

static int explain(credgate *c, int peer_fd, const char *action, credgate_explanation *ret) {
        char req[sizeof(EXPLAIN_PEER_VERB) + ACTION_MAX + 1];
        size_t l = action ? strnlen(action, ACTION_MAX + 1) : 0;
        char *line;
        size_t consumed;
        int r = usable(c);

        if (r < 0)
                return r;
        if (!ret || !action_valid(action, l, false))
                return -EINVAL;
        int n = snprintf(req, sizeof(req), "%s%s\n", peer_fd >= 0 ? EXPLAIN_PEER_VERB : EXPLAIN_VERB, action);
        r = transact(c, req, (size_t) n, peer_fd, &line, &consumed);
        if (r < 0)
                return r;
        r = parse_explanation(line, ret);
        compact(c, consumed);
        return r < 0 ? fail(c, r) : 0;
}

int credgate_explain(credgate *c, const char *action, credgate_explanation *ret) {
        return explain(c, -1, action, ret);
}

int credgate_explain_peer(credgate *c, int peer_fd, const char *action, credgate_explanation *ret) {
        if (peer_fd < 0)
                return -EINVAL;
        return explain(c, peer_fd, action, ret);
}

void credgate_explanation_clear(credgate_explanation *e) {
        if (!e)
                return;
        free(e->ref);
        free(e->message);
        *e = (credgate_explanation){};
}

int credgate_ping(credgate *c) {
        char *line;
        size_t consumed;
        int r = usable(c);

        if (r < 0)
                return r;
        r = transact(c, "PING\n", 5, -1, &line, &consumed);
        if (r < 0)
                return r;
        r = strcmp(line, "PONG") == 0 ? 0 : -EBADMSG;
        compact(c, consumed);
        return r < 0 ? fail(c, r) : 0;
}

static int parse_u32(const char **p, const char *key, uint32_t *ret) {
        size_t kl = strlen(key);
        uint64_t v = 0;
        const char *s = *p;

        if (strncmp(s, key, kl) != 0)
                return -EBADMSG;
        s += kl;
        if (*s < '0' || *s > '9')
                return -EBADMSG;
        /* The daemon prints plain %u: "007" is not a reply it sends. */
        if (s[0] == '0' && s[1] >= '0' && s[1] <= '9')
                return -EBADMSG;
        for (int digits = 0; *s >= '0' && *s <= '9'; s++) {
                if (++digits > 10)
                        return -EBADMSG;
                v = v * 10 + (uint64_t) (*s - '0');
        }
        if (v > UINT32_MAX)
                return -EBADMSG;
        *ret = (uint32_t) v;
        *p = s;
        return 0;
}

/* "CREDS pid=P uid=U gid=G groups=a,b,c" */
static int parse_creds(const char *line, credgate_creds *ret) {
        const char *p = line;
        uint32_t pid, uid, gid;
        _cleanup_free_ gid_t *groups = NULL;
        size_t n = 0, cap = 0;

        if (parse_u32(&p, "CREDS pid=", &pid) < 0 || parse_u32(&p, " uid=", &uid) < 0 ||
            parse_u32(&p, " gid=", &gid) < 0 || strncmp(p, " groups=", 8) != 0)
                return -EBADMSG;
        p += 8;
        while (*p) {
                uint32_t g;
                if (n > 0 && *p++ != ',')
                        return -EBADMSG;
                /* credgate_creds promises ascending groups without duplicates. */
                if (parse_u32(&p, "", &g) < 0 || (n > 0 && g <= groups[n - 1]))
                        return -EBADMSG;
                if (n == cap) {
                        cap = cap ? cap * 2 : 16;
                        gid_t *m = reallocarray(groups, cap, sizeof(gid_t));
                        if (!m)
                                return -ENOMEM;
                        groups = m;
                }
                groups[n++] = (gid_t) g;
        }
        if (pid > INT32_MAX)
                return -EBADMSG;
        *ret = (credgate_creds){ .pid = (pid_t) pid, .uid = uid, .gid = gid, .n_groups = n, .groups = TAKE_PTR(groups) };
        return 0;
}

int credgate_whoami(credgate *c, credgate_creds *ret) {
        char *line;
        size_t consumed;
        int r = usable(c);

        if (r < 0)
                return r;
        if (!ret)
                return -EINVAL;
        r = transact(c, "WHOAMI\n", 7, -1, &line, &consumed);
        if (r < 0)
                return r;
        r = parse_creds(line, ret);
        compact(c, consumed);
        return r < 0 ? fail(c, r) : 0;
}

int credgate_check_once(const char *socket_path, const char *action, credgate_decision *ret) {
        credgate *c = NULL;
        size_t l = action ? strnlen(action, ACTION_MAX + 1) : 0;

        if (!ret || !action_valid(action, l, false))
                return -EINVAL;
        int r = credgate_open(socket_path, &c);
        if (r < 0)
                return r;
        r = credgate_check(c, action, ret);
        credgate_close(c);
        return r;
}

int credgate_peer_creds(int fd, credgate_creds *ret) {
        PeerCreds pc;
        if (fd < 0 || !ret)
                return -EINVAL;
        int r = peer_creds_read(fd, &pc);
        if (r < 0)
                return r;
        *ret = (credgate_creds){
                .pid = pc.pid, .uid = pc.uid, .gid = pc.gid, .n_groups = pc.n_groups, .groups = pc.groups
        };
        return 0;
}

void credgate_creds_clear(credgate_creds *c) {
        if (!c)
                return;
        free(c->groups);
        *c = (credgate_creds){};
}

const char *credgate_strerror(int error) {
        /* -INT_MIN does not exist: no such code anyway. */
        if (error == INT_MIN)
                return "unknown error";
        int e = error < 0 ? -error : error;

        switch (e) {
        case 0:
                return "success";
        case EINVAL:
                return "invalid argument (an action must be 1-255 characters of A-Z a-z 0-9 . _ : / -)";
        case ENOENT:
                return "no credgate socket at that path (is credgated running?)";
        case ECONNREFUSED:
                return "credgated is not running (connection refused)";
        case ETIMEDOUT:
                return "credgated did not answer in time";
        case ECONNRESET:
                return "credgated closed the connection before answering";
        case EBADMSG:
                return "malformed reply from credgated";
        case EPROTO:
                return "credgated rejected the request";
        case EBADF:
                return "credgated refused the peer fd (not a connected Unix stream socket)";
        case EPERM:
                return "credgated answers broker queries (CHECK-PEER) only for brokers named in its policy "
                       "(settings: brokers)";
        case ENODATA:
                return "credgated could not read this process's credentials";
        case EUSERS:
                return "too many connections to credgated for this user";
        case ENOTCONN:
                return "connection broken by an earlier error, or socket has no connected peer";
        case ENAMETOOLONG:
                return "socket path too long";
        case ENOMEM:
                return "out of memory";
        }
        /* Any other errno from the system: its standard description. */
        const char *s = strerrordesc_np(e);
        return s ? s : "unknown error";
}
