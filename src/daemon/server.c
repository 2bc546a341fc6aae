/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The event loop: accepts connections, reads each peer's credentials once,
 * feeds bytes to its Session and writes the replies back. One sd-event loop,
 * non-blocking sockets, and no per-client blocking anywhere, so no client
 * can hold up another.
 *
 * Connections live on an epoll instance of our own (edge-triggered), watched
 * by sd-event as one source. A connection that has something to read or
 * requests held back waits in its uid's run queue, and each turn of the loop
 * serves every uid with work a bounded share (uidsched.c): a user with a
 * thousand pipelining connections delays another user by one share, not by
 * a pass over all its connections. Work left over is served on the next
 * turn, after the timers, the listeners and new readiness had theirs.
 *
 * Descriptors: only clients the policy names as brokers may pass them
 * (CHECK-PEER). Everyone else is read without room for descriptors, so
 * none is ever installed here: close() of a file on a FUSE mount waits for
 * its server uninterruptibly, on every close, and a file that was never
 * ours is never closed by us. Where the kernel has SO_PASSRIGHTS (6.16)
 * it refuses their descriptors outright. Elsewhere a queued message with
 * descriptors is first looked at with MSG_PEEK (which reports MSG_CTRUNC
 * and consumes nothing): the lines before it are answered, then the
 * connection ends in an ERR and is closed by a helper thread, which is
 * where the kernel releases those files (closer.h).
 *
 * Request timeouts use one timer for all connections: every connection's
 * deadline is "last request + timeout", with the timeout in force now, so
 * keeping the connections in a list ordered by last activity keeps them
 * ordered by deadline too, also right after a reload changed the timeout.
 *
 * Limits: at max_connections the listeners are switched off and clients
 * wait in the kernel's backlog; a uid over max_connections_per_uid gets
 * "ERR too-many-connections" at once. Running out of fds pauses accepting
 * instead of spinning on a level-triggered listener.
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "closer.h"
#include "console.h"
#include "log.h"
#include "macro.h"
#include "metrics.h"
#include "notify.h"
#include "peercred.h"
#include "reload.h"
#include "uidsched.h"
#include "server.h"

#ifndef SO_PASSRIGHTS
#define SO_PASSRIGHTS 83 /* Linux 6.16: refuse SCM_RIGHTS on this socket */
#endif

#define READ_CHUNK (4 * 1024) /* one read; what a turn does not handle waits in the session */
#define TURN_BUDGET 1024      /* request lines (and reads) per turn, shared by the uids with work */
#define SHARE_MIN 64          /* ... but at least this much for each */
#define CONN_SHARE 64         /* at most this much for one connection at a time */
#define ACCEPT_BURST 64
#define ACCEPT_PAUSE_USEC (100 * 1000) /* after EMFILE/ENFILE */
#define ACCEPT_LOG_USEC (10 * USEC_PER_SEC) /* at most one accept() warning per ... */
#define STATUS_INTERVAL_USEC (2 * UINT64_C(1000000))
#define USEC_PER_SEC UINT64_C(1000000)
#define STUCK_USEC USEC_PER_SEC /* a close taking longer is reported */
#define IDLE_EXIT_MIN_LIFETIME_USEC (5 * USEC_PER_SEC) /* see update_idle() */
#define SCM_MAX_FD 253          /* the most fds the kernel passes in one message */
#define EPOLL_BATCH 256
#define EPOLL_ROUNDS 16    /* batches collected per turn */
#define TRIM_MIN_CONNS 256 /* see on_status() */

typedef struct Conn Conn;
struct Conn {
        Server *server;
        Conn *prev, *next; /* in s->conns, oldest activity first */
        SchedNode node;    /* first: conn_of() */
        uint32_t events;   /* what the epoll instance watches for */
        int fd;
        bool eof;          /* read to the end: the socket's queue is empty */
        bool readable;     /* the socket may have bytes we have not read */
        bool hup;          /* the peer shut down: read on to EOF, short reads or not */
        bool passrights_off; /* the kernel refuses descriptors on this socket (SO_PASSRIGHTS) */
        bool fd_clean;     /* ... and none queued before that is left: plain reads */
        bool poisoned;     /* descriptors from a non-broker wait in the queue: read no more */
        uint64_t last; /* accept or last complete request (CLOCK_MONOTONIC µs) */
        Session session;
};

typedef struct Listener {
        int fd;
        sd_event_source *src;
} Listener;

struct Server {
        ServerConfig cfg;
        Settings settings; /* effective: file settings with command-line overrides */
        sd_event *event;
        Policy *policy;
        Listener *listeners;
        size_t n_listeners;
        int epfd; /* the connections' epoll instance */
        sd_event_source *epoll_src, *work_src;
        char *unlink_path;
        Conn *head, *tail;
        unsigned n_conns;
        Sched sched;
        bool accepting, fd_exhausted, activated;
        bool passrights; /* the kernel has SO_PASSRIGHTS (and no test asked us to ignore it) */
        uint64_t started_usec; /* CLOCK_MONOTONIC */
        bool timeout_armed; /* timeout_timer is on (a oneshot: on_timeout re-arms it)... */
        uint64_t timeout_at; /* ... for this time */
        sd_event_source *timeout_timer, *resume_timer, *idle_timer, *status_timer, *watchdog_timer;
        Reloader *reloader;
        Closer *sock_closer; /* connection sockets and brokers' sockets: never stuck for long */
        Closer *file_closer; /* brokers' other descriptors: may be stuck for good (FUSE) */
        uint64_t stuck_usec;  /* how long a close has been stuck, as last reported */
        uint64_t lost_reported; /* journal entries lost, as last reported */
        uint64_t accept_logged, accept_pauses; /* the last accept() warning, pauses since */
        bool reload_pending; /* SIGHUP while a reload ran: files may have changed since */
        Audit *audit;
        char *reload_error; /* first error of the last failed reload, for STATUS= */
        Stats stats, stats_reported;
        unsigned conns_reported;
        unsigned conns_high; /* most connections open since the last malloc_trim() */
        SessionHooks hooks;
        ConsoleCache *consoles; /* login state for console conditions */
        Console console;
        MetricsCounters counters; /* what the metrics show beyond stats */
        MetricsServer *metrics;   /* the metrics sockets; NULL without any */
        uint64_t start_realtime;  /* seconds */
        RuleHits *hits;           /* settings.rule_stats: one per rule of s->policy, else NULL */
        uint64_t hits_since;      /* CLOCK_REALTIME seconds s->policy was loaded */
        char buf[READ_CHUNK];
};

static uint64_t clock_ns(void) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static uint64_t now_usec(Server *s) {
        uint64_t now = 0;
        (void) sd_event_now(s->event, CLOCK_MONOTONIC, &now);
        return now;
}

static void update_status(Server *s) {
        const Stats *t = &s->stats;
        char stuck[96] = "", lost[64] = "";

        if (s->stuck_usec > 0)
                snprintf(stuck, sizeof(stuck), "; a descriptor close has been stuck for %" PRIu64 " s",
                         s->stuck_usec / USEC_PER_SEC);
        s->lost_reported = log_lost_count();
        if (s->lost_reported > 0)
                snprintf(lost, sizeof(lost), "; %" PRIu64 " journal entries lost", s->lost_reported);
        (void) notify_sendf("STATUS=%s%s%s%zu rules from %zu files; requests %" PRIu64 " (allowed %" PRIu64
                          ", denied %" PRIu64 ", errors %" PRIu64 "); %u connections%s%s; revision %.12s",
                          s->reload_error ? "reload failed: " : "", s->reload_error ? s->reload_error : "",
                          s->reload_error ? "; serving " : "serving ", policy_n_rules(s->policy),
                          policy_n_files(s->policy), t->requests, t->allowed, t->denied, t->errors, s->n_conns,
                          stuck, lost, policy_revision(s->policy));
        s->stats_reported = s->stats;
        s->conns_reported = s->n_conns;
}

/* ---- connection bookkeeping ------------------------------------------- */

static Conn *conn_of(SchedNode *n) {
        return (Conn *) ((char *) n - offsetof(Conn, node));
}

static void conn_unlink(Server *s, Conn *c) {
        if (c->prev)
                c->prev->next = c->next;
        else
                s->head = c->next;
        if (c->next)
                c->next->prev = c->prev;
        else
                s->tail = c->prev;
        c->prev = c->next = NULL;
}

static void conn_append(Server *s, Conn *c) {
        c->prev = s->tail;
        c->next = NULL;
        if (s->tail)
                s->tail->next = c;
        else
                s->head = c;
        s->tail = c;
}

static uint64_t conn_deadline(const Server *s, const Conn *c) {
        return c->last + s->settings.request_timeout * USEC_PER_SEC;
}

static void arm_timeout(Server *s) {
        s->timeout_armed = s->head != NULL;
        if (!s->head) {
                (void) sd_event_source_set_enabled(s->timeout_timer, SD_EVENT_OFF);
                return;
        }
        s->timeout_at = conn_deadline(s, s->head);
        (void) sd_event_source_set_time(s->timeout_timer, s->timeout_at);
        (void) sd_event_source_set_enabled(s->timeout_timer, SD_EVENT_ONESHOT);
}

/* A request completed (or the connection is new): move to the back of the line. */
static void conn_touch(Conn *c) {
        Server *s = c->server;

        c->last = now_usec(s);
        if (s->tail != c) {
                conn_unlink(s, c);
                conn_append(s, c);
        }
        /* The timer may fire early for the connection now at the head (it
         * re-arms itself then), never late: arm it when it is off or set
         * for later than the head's deadline, as it is after the head
         * closed under a longer timeout. */
        if (!s->timeout_armed || s->timeout_at > conn_deadline(s, s->head))
                arm_timeout(s);
}

/* Listen when below max_connections and not out of fds; else leave clients in the backlog. */
static void update_accepting(Server *s) {
        bool on = !s->fd_exhausted && s->n_conns < s->settings.max_connections;
        if (on == s->accepting)
                return;
        if (!on && s->fd_exhausted)
                s->counters.paused_out_of_fds++;
        else if (!on)
                s->counters.paused_max_connections++;
        for (size_t i = 0; i < s->n_listeners; i++)
                (void) sd_event_source_set_enabled(s->listeners[i].src, on ? SD_EVENT_ON : SD_EVENT_OFF);
        s->accepting = on;
}

static void update_idle(Server *s) {
        if (!s->activated || s->settings.idle_exit == 0 || s->n_conns > 0) {
                (void) sd_event_source_set_enabled(s->idle_timer, SD_EVENT_OFF);
                return;
        }
        /* Never before IDLE_EXIT_MIN_LIFETIME after start: systemd refuses a
         * sixth start within 10 s and then fails the socket, so clients
         * spaced just past idle_exit must not make us start that often. */
        uint64_t at = now_usec(s) + s->settings.idle_exit * USEC_PER_SEC;
        if (at < s->started_usec + IDLE_EXIT_MIN_LIFETIME_USEC)
                at = s->started_usec + IDLE_EXIT_MIN_LIFETIME_USEC;
        (void) sd_event_source_set_time(s->idle_timer, at);
        (void) sd_event_source_set_enabled(s->idle_timer, SD_EVENT_ONESHOT);
}

static void conn_free(Conn *c) {
        Server *s = c->server;

        conn_unlink(s, c);
        sched_detach(&s->sched, &c->node);
        s->n_conns--;
        if (c->eof)
                /* Read to EOF: the queue is empty, so no client fd can be
                 * released with the socket, and close() cannot block. (It
                 * also drops the epoll registration.) */
                close(c->fd);
        else {
                /* Files queued unread on the socket are released with it,
                 * and releasing one may wait (closer.h): the closer closes
                 * it, so unregister it now. */
                (void) epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
                closer_close(s->sock_closer, c->fd);
        }
        session_done(&c->session);
        free(c);
        /* A freed fd may be what a paused accept() was waiting for. */
        if (s->fd_exhausted) {
                s->fd_exhausted = false;
                (void) sd_event_source_set_enabled(s->resume_timer, SD_EVENT_OFF);
        }
        update_accepting(s);
        if (s->n_conns == 0)
                update_idle(s);
}

/* Make the kernel refuse descriptors on @c (SO_PASSRIGHTS), or take them again (broker). */
static void conn_set_broker(Conn *c, bool broker) {
        Server *s = c->server;
        int on = broker;

        c->session.broker = broker;
        if (s->passrights)
                c->passrights_off = setsockopt(c->fd, SOL_SOCKET, SO_PASSRIGHTS, &on, sizeof(on)) == 0 && !broker;
        /* What was queued before may still carry descriptors: peek again. */
        c->fd_clean = false;
}

/* ---- connection I/O ---------------------------------------------------- */

/* Send what is pending; return -errno on a dead client. */
static int conn_flush(Conn *c) {
        Session *ss = &c->session;

        while (session_pending(ss) > 0) {
                ssize_t n = send(c->fd, session_out(ss), session_pending(ss), MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return 0;
                        return -errno;
                }
                session_sent(ss, (size_t) n);
        }
        return 0;
}

static bool conn_has_work(const Conn *c) {
        const Session *ss = &c->session;
        if (ss->closing)
                return false;
        if (session_has_backlog(ss))
                return session_pending(ss) < SESSION_OUT_HIGH;
        return c->readable && !c->eof && !c->poisoned && session_wants_input(ss);
}

/*
 * After anything happened on @c: send what is owed, close when done, watch
 * for writability only while replies wait, and queue it for a turn when it
 * has work. Return: false when @c was freed.
 */
static bool conn_update(Conn *c) {
        Session *ss = &c->session;
        Server *s = c->server;

        if (conn_flush(c) < 0) {
                conn_free(c);
                return false;
        }
        /* Descriptors from a non-broker sit in the queue after the bytes we
         * took: once the lines before them are answered, refuse the rest. */
        if (c->poisoned && !ss->closing && !session_has_backlog(ss)) {
                (void) session_fail(ss, PROTO_BAD_PEER_FD, &s->stats);
                (void) conn_flush(c);
        }
        bool pending = session_pending(ss) > 0;
        if (!pending && (ss->closing || c->eof)) {
                conn_free(c);
                return false;
        }
        uint32_t events = EPOLLIN | EPOLLRDHUP | EPOLLET | (pending ? EPOLLOUT : 0);
        if (events != c->events) {
                struct epoll_event ev = { .events = events, .data.ptr = c };
                if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
                        conn_free(c);
                        return false;
                }
                c->events = events;
        }
        if (conn_has_work(c))
                sched_push(&s->sched, &c->node);
        return true;
}

/*
 * A broker's read, with room for every fd the kernel can pass: fds that do
 * not fit would be released by the kernel inside recvmsg(), on this
 * thread. They go to the session, which closes every one (through the
 * closers). Return: bytes read, 0 at EOF, or -errno.
 */
static ssize_t recv_with_fds(Conn *c, int *fds, size_t *n_fds, bool *truncated) {
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int) * SCM_MAX_FD)];
        } ctl;
        struct iovec iov = { .iov_base = c->server->buf, .iov_len = sizeof(c->server->buf) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };

        ssize_t n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0)
                return -errno;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
                if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                        continue;
                size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < k; i++) {
                        int fd;
                        memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
                        if (*n_fds < SESSION_MAX_FDS)
                                fds[(*n_fds)++] = fd;
                        else {
                                c->session.hooks->close_fd(c->server, fd);
                                *truncated = true;
                        }
                }
        }
        /* MSG_CTRUNC: the kernel discarded fds that did not fit. */
        if (mh.msg_flags & MSG_CTRUNC)
                *truncated = true;
        return n;
}

/* A read with no room for descriptors. Return: bytes, 0 at EOF, or -errno. */
static ssize_t recv_plain(Conn *c, size_t len, int flags, bool *ctrunc) {
        struct iovec iov = { .iov_base = c->server->buf, .iov_len = len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

        ssize_t n = recvmsg(c->fd, &mh, MSG_DONTWAIT | flags);
        if (n < 0)
                return -errno;
        *ctrunc = mh.msg_flags & MSG_CTRUNC;
        return n;
}

/*
 * Read what @c sent into s->buf, never installing a descriptor of a client
 * that is no broker (see the top of this file). Return: bytes read, 0 at
 * EOF, or -errno (-EAGAIN when there is nothing).
 */
static ssize_t conn_read(Conn *c, int *fds, size_t *n_fds, bool *truncated) {
        bool ctrunc = false;
        ssize_t n;

        *n_fds = 0;
        *truncated = false;
        if (c->session.broker)
                return recv_with_fds(c, fds, n_fds, truncated);
        if (c->fd_clean) {
                /* The kernel refuses descriptors here: none can come (one in
                 * flight across the switch would be dropped, and refused). */
                n = recv_plain(c, READ_CHUNK, 0, &ctrunc);
                *truncated = ctrunc;
                return n;
        }
        /* A peek stops after the first message that carries descriptors and
         * reports them (MSG_CTRUNC) without taking them: the bytes up to it
         * are safe to consume, that message is not. */
        n = recv_plain(c, READ_CHUNK, MSG_PEEK, &ctrunc);
        if (n <= 0)
                return n;
        if (ctrunc) {
                c->poisoned = true;
                *truncated = true;
                return n;
        }
        ssize_t m = recv_plain(c, (size_t) n, 0, &ctrunc);
        if (m < 0 || ctrunc)
                return m < 0 ? m : -EIO;
        /* A short read saw the queue drained: with SO_PASSRIGHTS set before,
         * nothing queued can carry descriptors any more. */
        if (c->passrights_off && (size_t) m < READ_CHUNK)
                c->fd_clean = true;
        return m;
}

/* Serve @c for at most @max request lines (sched_turn's callback). Return: what it used. */
static unsigned conn_serve(SchedNode *node, unsigned max, void *userdata) {
        Conn *c = conn_of(node);
        Server *s = userdata;
        Session *ss = &c->session;
        int r = 0;

        if (session_has_backlog(ss)) {
                if (session_pending(ss) < SESSION_OUT_HIGH) {
                        uint64_t t0 = clock_ns();
                        r = session_feed_max(ss, s->policy, &s->stats, NULL, 0, NULL, 0, false, max);
                        if (r > 0)
                                metrics_observe(&s->counters, (uint64_t) r, clock_ns() - t0);
                }
        } else if (conn_has_work(c)) {
                int fds[SESSION_MAX_FDS];
                size_t n_fds;
                bool truncated;
                ssize_t n = conn_read(c, fds, &n_fds, &truncated);
                if (n == -EAGAIN || n == -EINTR)
                        c->readable = false;
                else if (n < 0) {
                        conn_free(c);
                        return 1;
                } else if (n == 0)
                        c->eof = true;
                else {
                        /* A short read drained the socket (more brings a new edge),
                         * unless it stopped after a message with descriptors. */
                        if (((size_t) n < READ_CHUNK && n_fds == 0 && !truncated && !c->hup) || c->poisoned)
                                c->readable = false;
                        uint64_t t0 = clock_ns();
                        r = session_feed_max(ss, s->policy, &s->stats, s->buf, (size_t) n, fds, n_fds, truncated,
                                             max);
                        if (r > 0)
                                metrics_observe(&s->counters, (uint64_t) r, clock_ns() - t0);
                }
        }
        if (r < 0) {
                conn_free(c);
                return 1;
        }
        if (r > 0)
                conn_touch(c);
        (void) conn_update(c);
        return r > 0 ? (unsigned) r : 1;
}

static void on_conn_event(Conn *c, uint32_t revents) {
        if (revents & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                c->readable = true;
        if (revents & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                c->hup = true;
        /* conn_update() flushes (EPOLLOUT), notices a dead peer (the send
         * fails) and queues the connection when it can read. */
        (void) conn_update(c);
}

/* One turn: take in new readiness, then give every uid with work its share. */
static void run_turn(Server *s) {
        struct epoll_event evs[EPOLL_BATCH];

        for (int round = 0; round < EPOLL_ROUNDS; round++) {
                int n = epoll_wait(s->epfd, evs, EPOLL_BATCH, 0);
                for (int i = 0; i < n; i++)
                        on_conn_event(evs[i].data.ptr, evs[i].events);
                if (n < EPOLL_BATCH)
                        break;
        }
        sched_turn(&s->sched, TURN_BUDGET, SHARE_MIN, CONN_SHARE, conn_serve, s);
        /* Work left: come back after the other sources had their turn. */
        (void) sd_event_source_set_enabled(s->work_src, s->sched.n_active > 0 ? SD_EVENT_ONESHOT : SD_EVENT_OFF);
        closer_flush(s->sock_closer);
        closer_flush(s->file_closer);
}

static int on_conns(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        run_turn(userdata);
        return 0;
}

static int on_work(sd_event_source *src, void *userdata) {
        run_turn(userdata);
        return 0;
}

/* Best effort: a one-line error to a socket we are about to close. */
static void send_error_and_close(Server *s, int fd, ProtoError e) {
        char line[64];
        int n = snprintf(line, sizeof(line), "ERR %s\n", proto_error_name(e));
        (void) send(fd, line, (size_t) n, MSG_NOSIGNAL | MSG_DONTWAIT);
        /* Unread, it may hold a client's files: they are released with it. */
        closer_close(s->sock_closer, fd);
}

/* fds a broker passed: sockets cannot block close() for good, other files can. */
static void on_close_fd(void *userdata, int fd) {
        Server *s = userdata;
        int type;
        socklen_t l = sizeof(type);

        /* getsockopt() fails with ENOTSOCK without touching the file. */
        bool sock = getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) == 0;
        closer_close(sock ? s->sock_closer : s->file_closer, fd);
}

static void on_decision(void *userdata, const char *action, const Verdict *v, const PeerCreds *subject,
                        const PeerCreds *broker) {
        Server *s = userdata;
        /* Per-rule counts belong to the policy in force; a request held back
         * across a reload was decided by the old one (another revision
         * string) and is not counted. */
        if (s->hits && v->file && v->revision == policy_revision(s->policy)) {
                uint64_t now = 0;
                (void) sd_event_now(s->event, CLOCK_REALTIME, &now);
                s->hits[v->rule].hits++;
                s->hits[v->rule].last = now / USEC_PER_SEC;
        }
        if (audit_wants(s->audit, v->decision))
                audit_decision(s->audit, now_usec(s), action, v, subject, broker);
}

static void accept_one(Server *s, int fd) {
        PeerCreds creds = {};
        int r;

        /* Identity comes from the kernel only, read once, here. */
        if (peer_creds_read_accepted(fd, &creds) < 0) {
                stats_error(&s->stats, PROTO_NO_CREDENTIALS);
                send_error_and_close(s, fd, PROTO_NO_CREDENTIALS);
                return;
        }
        Conn *c = calloc(1, sizeof(Conn));
        if (!c) {
                peer_creds_done(&creds);
                closer_close(s->sock_closer, fd);
                return;
        }
        /* uid 0 counts like any uid: one user must not starve the others. */
        r = sched_attach(&s->sched, &c->node, (uint32_t) creds.uid, s->settings.max_connections_per_uid);
        if (r < 0) {
                free(c);
                peer_creds_done(&creds);
                if (r == -EUSERS) {
                        stats_error(&s->stats, PROTO_TOO_MANY_CONNECTIONS);
                        s->counters.refused_uid_quota++;
                        send_error_and_close(s, fd, PROTO_TOO_MANY_CONNECTIONS);
                } else
                        closer_close(s->sock_closer, fd);
                return;
        }
        c->server = s;
        c->fd = fd;
        session_init(&c->session, &creds);
        c->session.hooks = &s->hooks;
        c->session.userdata = s;
        bool broker = policy_is_broker(s->policy, &c->session.creds);
        if (!broker)
                conn_set_broker(c, false);
        else
                c->session.broker = true;
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c };
        c->events = ev.events;
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                sched_detach(&s->sched, &c->node);
                session_done(&c->session);
                closer_close(s->sock_closer, fd);
                free(c);
                return;
        }
        s->n_conns++;
        if (s->n_conns > s->conns_high)
                s->conns_high = s->n_conns;
        conn_append(s, c);
        conn_touch(c);
        if (s->n_conns == 1)
                update_idle(s);
}

/* After a reload: who is a broker follows the new policy, also on open connections. */
static void reassess_brokers(Server *s) {
        for (Conn *c = s->head; c; c = c->next) {
                bool broker = policy_is_broker(s->policy, &c->session.creds);
                if (broker != c->session.broker)
                        conn_set_broker(c, broker);
        }
}

static int on_resume(sd_event_source *src, uint64_t usec, void *userdata) {
        Server *s = userdata;
        s->fd_exhausted = false;
        update_accepting(s);
        return 0;
}

static int on_accept(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        Server *s = userdata;

        for (int i = 0; i < ACCEPT_BURST && s->accepting; i++) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd >= 0) {
                        accept_one(s, cfd);
                        update_accepting(s);
                        continue;
                }
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                        /* Out of fds or memory: a level-triggered listener would
                         * spin. Leave clients in the backlog and retry later
                         * (or as soon as a connection closes). */
                        /* Once per pause, and at most every ACCEPT_LOG_USEC under
                         * lasting pressure, saying how many pauses it stands for. */
                        if (!s->fd_exhausted) {
                                uint64_t now = now_usec(s);
                                s->accept_pauses++;
                                if (s->accept_logged == 0 || now >= s->accept_logged + ACCEPT_LOG_USEC) {
                                        if (s->accept_pauses > 1)
                                                log_warning("accept() failed: %s; pausing new connections for up "
                                                            "to %d ms (%" PRIu64 " pauses since the last message)",
                                                            strerror(errno), (int) (ACCEPT_PAUSE_USEC / 1000),
                                                            s->accept_pauses);
                                        else
                                                log_warning("accept() failed: %s; pausing new connections for up "
                                                            "to %d ms",
                                                            strerror(errno), (int) (ACCEPT_PAUSE_USEC / 1000));
                                        s->accept_logged = now;
                                        s->accept_pauses = 0;
                                }
                        }
                        s->fd_exhausted = true;
                        update_accepting(s);
                        (void) sd_event_source_set_time(s->resume_timer, now_usec(s) + ACCEPT_PAUSE_USEC);
                        (void) sd_event_source_set_enabled(s->resume_timer, SD_EVENT_ONESHOT);
                }
                break;
        }
        closer_flush(s->sock_closer);
        return 0;
}

static int on_timeout(sd_event_source *src, uint64_t usec, void *userdata) {
        Server *s = userdata;
        uint64_t now = now_usec(s);

        s->timeout_armed = false; /* a oneshot that fired is off */
        while (s->head && conn_deadline(s, s->head) <= now) {
                Conn *c = s->head;
                /* Queue the error after whatever is still owed, then give the
                 * client one non-blocking flush and close. */
                (void) session_fail(&c->session, PROTO_TIMEOUT, &s->stats);
                (void) conn_flush(c);
                conn_free(c);
        }
        arm_timeout(s);
        closer_flush(s->sock_closer);
        return 0;
}

/* Is a client waiting in a listener's backlog? */
static bool backlog_pending(Server *s) {
        for (size_t i = 0; i < s->n_listeners; i++) {
                struct pollfd p = { .fd = s->listeners[i].fd, .events = POLLIN };
                if (poll(&p, 1, 0) > 0)
                        return true;
        }
        return false;
}

static int on_idle(sd_event_source *src, uint64_t usec, void *userdata) {
        Server *s = userdata;

        /* Exit only with nothing open and nothing pending; a client still in
         * the backlog stays there for the next instance systemd starts, but
         * if we can see one, serve it instead. */
        if (s->n_conns > 0 || reloader_busy(s->reloader) || backlog_pending(s)) {
                update_idle(s);
                return 0;
        }
        log_info("idle for %" PRIu64 " s; exiting", s->settings.idle_exit);
        return sd_event_exit(s->event, 0);
}

static int on_watchdog(sd_event_source *src, uint64_t usec, void *userdata) {
        (void) notify_send("WATCHDOG=1");
        (void) sd_event_source_set_time(src, usec + notify_watchdog_usec() / 2);
        return 0;
}

static int on_status(sd_event_source *src, uint64_t usec, void *userdata) {
        Server *s = userdata;

        /* A close that does not return (a broker passed a file of a hung
         * FUSE server) must show; the loop itself is never held up by it. */
        uint64_t now = now_usec(s), stuck = closer_busy_usec(s->file_closer, now);
        uint64_t stuck2 = closer_busy_usec(s->sock_closer, now);
        if (stuck2 > stuck)
                stuck = stuck2;
        stuck = stuck >= STUCK_USEC ? stuck : 0;
        if (stuck > 0 && s->stuck_usec == 0)
                log_warning("closing a descriptor a broker passed has not returned for %" PRIu64
                            " s (a file whose close() waits, such as one on a hung FUSE mount); "
                            "the daemon keeps serving",
                            stuck / USEC_PER_SEC);
        else if (stuck == 0 && s->stuck_usec > 0)
                log_info("the stuck descriptor close has returned");
        bool stuck_changed = stuck / USEC_PER_SEC != s->stuck_usec / USEC_PER_SEC;
        s->stuck_usec = stuck;
        if (stuck_changed || memcmp(&s->stats, &s->stats_reported, sizeof(Stats)) != 0 ||
            s->n_conns != s->conns_reported || log_lost_count() != s->lost_reported)
                update_status(s);
        audit_flush(s->audit, usec);
        /* After many connections closed, give their memory back: glibc only
         * trims the top of the heap, and a few chunks still in use above the
         * freed ones keep megabytes resident (5,000 closed slowloris
         * connections kept 2.4 MB). At most once per interval. */
#ifdef __GLIBC__
        if (s->conns_high >= TRIM_MIN_CONNS && s->n_conns <= s->conns_high / 2) {
                (void) malloc_trim(0);
                s->conns_high = s->n_conns;
        }
#endif
        (void) sd_event_source_set_time(src, usec + STATUS_INTERVAL_USEC);
        return 0;
}

/* Fresh per-rule counts for the policy in force, or none (settings.rule_stats). */
static void reset_hits(Server *s) {
        uint64_t now = 0;

        (void) sd_event_now(s->event, CLOCK_REALTIME, &now);
        s->hits_since = now / USEC_PER_SEC;
        s->hits = mfree(s->hits);
        if (!s->settings.rule_stats || policy_n_rules(s->policy) == 0)
                return;
        s->hits = calloc(policy_n_rules(s->policy), sizeof(RuleHits));
        if (!s->hits)
                log_warning("out of memory for per-rule counts: not counting until the next reload");
}

static void apply_settings(Server *s, const Settings *file) {
        uint64_t idle = s->settings.idle_exit, timeout = s->settings.request_timeout;

        s->settings = *file;
        settings_apply_override(&s->settings, &s->cfg.override);
        audit_set_level(s->audit, s->settings.log);
        reset_hits(s);
        update_accepting(s);
        /* Every deadline, open connections' too, follows the new timeout. */
        if (s->settings.request_timeout != timeout)
                arm_timeout(s);
        /* Idle time counts from the last connection closing; a reload only
         * restarts it when idle_exit itself changed. */
        if (s->settings.idle_exit != idle)
                update_idle(s);
}

static void start_reload(Server *s) {
        (void) notify_sendf("RELOADING=1\nMONOTONIC_USEC=%" PRIu64 "\nSTATUS=reloading the policy",
                          now_usec(s));
        int r = reloader_start(s->reloader);
        if (r < 0) {
                log_error("cannot start a reload: %s", strerror(-r));
                update_status(s);
                (void) notify_send("READY=1");
        }
}

static void on_reloaded(void *userdata, int r, Policy *p, const Settings *settings, const Diags *d) {
        Server *s = userdata;

        for (size_t i = 0; i < d->n; i++)
                log_msg(d->v[i].warning ? LOG_WARNING : LOG_ERR, "%s", d->v[i].text);
        if (r < 0) {
                const char *first = "out of memory";
                for (size_t i = 0; i < d->n; i++)
                        if (!d->v[i].warning) {
                                first = d->v[i].text;
                                break;
                        }
                free(s->reload_error);
                s->reload_error = strdup(first);
                s->counters.reloads_failed++;
                log_error("reload failed (%zu errors); the previous policy stays in force", d->n_errors);
        } else {
                /* Requests are handled synchronously on this loop, so every
                 * request already read was answered by the old policy and
                 * every later one sees the new: never a mix. */
                policy_unref(s->policy);
                s->policy = p;
                s->reload_error = mfree(s->reload_error);
                s->counters.reloads_ok++;
                apply_settings(s, settings);
                reassess_brokers(s);
                log_info("reloaded: %zu rules from %zu files, revision %s", policy_n_rules(p), policy_n_files(p),
                         policy_revision(p));
        }
        update_status(s);
        (void) notify_send("READY=1");
        if (s->reload_pending) {
                s->reload_pending = false;
                start_reload(s);
        }
}

static int on_sighup(sd_event_source *src, const struct signalfd_siginfo *si, void *userdata) {
        Server *s = userdata;

        /* One reload at a time; a SIGHUP meanwhile means "the files changed
         * again": reload once more when this one is done. */
        if (reloader_busy(s->reloader))
                s->reload_pending = true;
        else
                start_reload(s);
        return 0;
}

/* ---- setup --------------------------------------------------------------- */

/* Can the kernel refuse descriptors per socket (SO_PASSRIGHTS, Linux 6.16)?
 * CREDGATED_NO_PASSRIGHTS=1 makes us act as without, for the tests. */
static bool passrights_supported(void) {
        const char *e = getenv("CREDGATED_NO_PASSRIGHTS");
        int p[2], off = 0;

        if (e && strcmp(e, "1") == 0)
                return false;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) < 0)
                return false;
        bool ok = setsockopt(p[0], SOL_SOCKET, SO_PASSRIGHTS, &off, sizeof(off)) == 0;
        close(p[0]);
        close(p[1]);
        return ok;
}

static int add_timer(Server *s, sd_event_source **ret, sd_event_time_handler_t cb) {
        int r = sd_event_add_time(s->event, ret, CLOCK_MONOTONIC, 0, 0, cb, s);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(*ret, SD_EVENT_OFF);
}

static void take_snapshot(void *userdata, MetricsSnapshot *ret) {
        Server *s = userdata;

        *ret = (MetricsSnapshot){
                .stats = s->stats,
                .counters = s->counters,
                .connections = s->n_conns,
                .audit_suppressed = audit_suppressed(s->audit),
                .log_lost = log_lost_count(),
                .start_time = s->start_realtime,
                .policy = policy_ref(s->policy),
                .hits_since = s->hits_since,
        };
        size_t n = policy_n_rules(s->policy) * sizeof(RuleHits);
        if (s->hits && (ret->hits = malloc(n)))
                memcpy(ret->hits, s->hits, n);
}

int server_add_metrics_listener(Server *s, int fd, const char *unlink_path) {
        if (!s->metrics) {
                int r = metrics_server_new(s->event, take_snapshot, s, &s->metrics);
                if (r < 0) {
                        close(fd);
                        return r;
                }
        }
        return metrics_server_add_listener(s->metrics, fd, unlink_path);
}

int server_new(const ServerConfig *cfg, Policy *policy, const Settings *settings, Server **ret) {
        _cleanup_(server_freep) Server *s = calloc(1, sizeof(Server));
        int r;

        if (!s)
                return -ENOMEM;
        s->epfd = -1;
        s->cfg = *cfg;
        s->policy = policy_ref(policy);
        s->accepting = true;
        s->hooks.decision = on_decision;
        s->hooks.close_fd = on_close_fd;

        /* Before any client can take the descriptors. */
        r = notify_open();
        if (r < 0)
                log_warning("cannot open the notification socket ($NOTIFY_SOCKET): %s", strerror(-r));
        r = sd_event_new(&s->event);
        if (r < 0)
                return r;
        s->started_usec = now_usec(s);
        uint64_t rt = 0;
        (void) sd_event_now(s->event, CLOCK_REALTIME, &rt);
        s->start_realtime = rt / USEC_PER_SEC;
        r = audit_new(cfg->log_target, settings->log, &s->audit);
        if (r < 0)
                return r;
        if ((r = closer_new(&s->sock_closer)) < 0 || (r = closer_new(&s->file_closer)) < 0)
                return r;
        s->passrights = passrights_supported();
        s->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (s->epfd < 0)
                return -errno;
        r = sd_event_add_io(s->event, &s->epoll_src, s->epfd, EPOLLIN, on_conns, s);
        if (r < 0)
                return r;
        r = sd_event_add_defer(s->event, &s->work_src, on_work, s);
        if (r < 0)
                return r;
        /* Below everything else: sd-event dispatches one pending source at a
         * time, highest priority first, so the listeners, timers and signals
         * always get their turn between ours. */
        r = sd_event_source_set_priority(s->work_src, SD_EVENT_PRIORITY_IDLE);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(s->work_src, SD_EVENT_OFF);

        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return -errno;
        /* A client that vanishes before its reply must never kill us. */
        signal(SIGPIPE, SIG_IGN);

        if ((r = sd_event_add_signal(s->event, NULL, SIGTERM, NULL, NULL)) < 0 ||
            (r = sd_event_add_signal(s->event, NULL, SIGINT, NULL, NULL)) < 0 ||
            (r = sd_event_add_signal(s->event, NULL, SIGHUP, on_sighup, s)) < 0)
                return r;
        if ((r = add_timer(s, &s->timeout_timer, on_timeout)) < 0 || (r = add_timer(s, &s->resume_timer, on_resume)) < 0 ||
            (r = add_timer(s, &s->idle_timer, on_idle)) < 0 || (r = add_timer(s, &s->status_timer, on_status)) < 0)
                return r;
        (void) sd_event_source_set_time(s->status_timer, now_usec(s) + STATUS_INTERVAL_USEC);
        (void) sd_event_source_set_enabled(s->status_timer, SD_EVENT_ON);
        r = console_cache_new(NULL, &s->consoles);
        if (r < 0)
                return r;
        r = console_cache_attach(s->consoles, s->event);
        if (r < 0)
                log_warning("cannot watch logind's state (%s): console conditions read it anew for every request",
                            strerror(-r));
        s->console = console_cache_console(s->consoles);
        s->hooks.console = &s->console;
        r = reloader_new(s->event, &s->cfg.policy, on_reloaded, s, &s->reloader);
        if (r < 0)
                return r;
        /* Our own WATCHDOG=1, through the socket kept open (notify.h), at
         * half the interval systemd asks for. */
        uint64_t wd = notify_watchdog_usec();
        if (wd > 0) {
                r = sd_event_add_time_relative(s->event, &s->watchdog_timer, CLOCK_MONOTONIC, wd / 2, 0, on_watchdog,
                                               s);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_enabled(s->watchdog_timer, SD_EVENT_ON);
        }
        apply_settings(s, settings);

        *ret = TAKE_PTR(s);
        return 0;
}

int server_add_listener(Server *s, int fd, const char *unlink_path) {
        Listener *l = reallocarray(s->listeners, s->n_listeners + 1, sizeof(Listener));
        if (!l) {
                close(fd);
                return -ENOMEM;
        }
        s->listeners = l;
        l = &s->listeners[s->n_listeners];
        *l = (Listener){ .fd = fd };
        int r = sd_event_add_io(s->event, &l->src, fd, EPOLLIN, on_accept, s);
        if (r < 0) {
                close(fd);
                return r;
        }
        if (!s->accepting)
                (void) sd_event_source_set_enabled(l->src, SD_EVENT_OFF);
        s->n_listeners++;
        if (unlink_path && !(s->unlink_path = strdup(unlink_path)))
                return -ENOMEM;
        return 0;
}

void server_set_activated(Server *s, bool activated) {
        s->activated = activated;
        update_idle(s);
}

int server_run(Server *s) {
        update_idle(s);
        update_status(s);
        (void) notify_send("READY=1");
        int r = sd_event_loop(s->event);
        (void) notify_send("STOPPING=1\nSTATUS=stopping");
        return r;
}

Server *server_free(Server *s) {
        if (!s)
                return NULL;
        reloader_free(s->reloader);
        while (s->head)
                conn_free(s->head);
        for (size_t i = 0; i < s->n_listeners; i++) {
                sd_event_source_disable_unref(s->listeners[i].src);
                close(s->listeners[i].fd);
        }
        free(s->listeners);
        if (s->unlink_path) {
                (void) unlink(s->unlink_path);
                free(s->unlink_path);
        }
        sd_event_source_disable_unref(s->timeout_timer);
        sd_event_source_disable_unref(s->resume_timer);
        sd_event_source_disable_unref(s->idle_timer);
        sd_event_source_disable_unref(s->status_timer);
        sd_event_source_disable_unref(s->watchdog_timer);
        sched_done(&s->sched);
        sd_event_source_disable_unref(s->work_src);
        sd_event_source_disable_unref(s->epoll_src);
        if (s->epfd >= 0)
                close(s->epfd);
        closer_free(s->sock_closer);
        closer_free(s->file_closer);
        audit_free(s->audit);
        console_cache_free(s->consoles);
        metrics_server_free(s->metrics);
        free(s->hits);
        free(s->reload_error);
        sd_event_unref(s->event);
        policy_unref(s->policy);
        notify_close();
        free(s);
        return NULL;
}
