/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The event loop: accepts connections, reads each peer's credentials once,
 * feeds bytes to its Session and writes the replies back. One sd-event loop,
 * non-blocking sockets, and no per-client blocking anywhere, so no client
 * can hold up another.
 *
 * Connections live on an epoll instance of our own, watched by sd-event as
 * one source: sd-event dispatches one source per iteration with an
 * epoll_wait() each, while one wakeup here serves a whole batch of ready
 * connections.
 *
 * Request timeouts use one timer for all connections: every connection's
 * deadline is "last request + timeout", so keeping the connections in a list
 * ordered by last activity keeps them ordered by deadline too.
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
#include <search.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "closer.h"
#include "log.h"
#include "macro.h"
#include "peercred.h"
#include "reload.h"
#include "server.h"

#define READ_CHUNK (16 * 1024)
#define ACCEPT_BURST 64
#define ACCEPT_PAUSE_USEC (100 * 1000) /* after EMFILE/ENFILE */
#define STATUS_INTERVAL_USEC (2 * UINT64_C(1000000))
#define USEC_PER_SEC UINT64_C(1000000)
#define SCM_MAX_FD 253 /* the most fds the kernel passes in one message */
#define EPOLL_BATCH 256
#define EPOLL_ROUNDS 4 /* batches per wakeup before the timers get a turn */
#define TRIM_MIN_CONNS 256 /* see on_status() */

typedef struct Conn Conn;
struct Conn {
        Server *server;
        Conn *prev, *next; /* in s->conns, oldest activity first */
        uint32_t events;   /* what the epoll instance watches for */
        int fd;
        bool eof;
        uint64_t deadline;
        Session session;
};

typedef struct Listener {
        int fd;
        sd_event_source *src;
} Listener;

typedef struct UidCount {
        uint32_t uid;
        uint32_t n;
} UidCount;

struct Server {
        ServerConfig cfg;
        Settings settings; /* effective: file settings with command-line overrides */
        sd_event *event;
        Policy *policy;
        Listener *listeners;
        size_t n_listeners;
        int epfd; /* the connections' epoll instance */
        sd_event_source *epoll_src;
        char *unlink_path;
        Conn *head, *tail;
        unsigned n_conns;
        void *uids; /* tsearch() tree of UidCount */
        bool accepting, fd_exhausted, activated;
        bool timeout_armed; /* timeout_timer is on (a oneshot: on_timeout re-arms it) */
        sd_event_source *timeout_timer, *resume_timer, *idle_timer, *status_timer;
        Reloader *reloader;
        Closer *closer;
        bool reload_pending; /* SIGHUP while a reload ran: files may have changed since */
        Audit *audit;
        char *reload_error; /* first error of the last failed reload, for STATUS= */
        Stats stats, stats_reported;
        unsigned conns_reported;
        unsigned conns_high; /* most connections open since the last malloc_trim() */
        SessionHooks hooks;
        char buf[READ_CHUNK];
};

static uint64_t now_usec(Server *s) {
        uint64_t now = 0;
        (void) sd_event_now(s->event, CLOCK_MONOTONIC, &now);
        return now;
}

static void update_status(Server *s) {
        const Stats *t = &s->stats;
        (void) sd_notifyf(0,
                          "STATUS=%s%s%s%zu rules from %zu files; requests %" PRIu64 " (allowed %" PRIu64
                          ", denied %" PRIu64 ", errors %" PRIu64 "); %u connections",
                          s->reload_error ? "reload failed: " : "", s->reload_error ? s->reload_error : "",
                          s->reload_error ? "; serving " : "serving ", policy_n_rules(s->policy),
                          policy_n_files(s->policy), t->requests, t->allowed, t->denied, t->errors, s->n_conns);
        s->stats_reported = s->stats;
        s->conns_reported = s->n_conns;
}

/* ---- connection bookkeeping ------------------------------------------- */

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

static void arm_timeout(Server *s) {
        s->timeout_armed = s->head != NULL;
        if (!s->head) {
                (void) sd_event_source_set_enabled(s->timeout_timer, SD_EVENT_OFF);
                return;
        }
        (void) sd_event_source_set_time(s->timeout_timer, s->head->deadline);
        (void) sd_event_source_set_enabled(s->timeout_timer, SD_EVENT_ONESHOT);
}

/* A request completed (or the connection is new): move to the back of the line. */
static void conn_touch(Conn *c) {
        Server *s = c->server;

        c->deadline = now_usec(s) + s->settings.request_timeout * USEC_PER_SEC;
        if (s->tail != c) {
                conn_unlink(s, c);
                conn_append(s, c);
        }
        /* The timer may fire early for the connection now at the head; it
         * re-arms itself then. It only needs arming when it is off. */
        if (!s->timeout_armed)
                arm_timeout(s);
}

static int cmp_uid(const void *a, const void *b) {
        uint32_t x = ((const UidCount *) a)->uid, y = ((const UidCount *) b)->uid;
        return x < y ? -1 : x > y;
}

/* Count a connection for @uid unless it is at its quota. Return: true if counted. */
static bool uid_acquire(Server *s, uint32_t uid) {
        UidCount key = { .uid = uid };
        UidCount **found = tfind(&key, &s->uids, cmp_uid);
        if (found) {
                if ((*found)->n >= s->settings.max_connections_per_uid)
                        return false;
                (*found)->n++;
                return true;
        }
        if (s->settings.max_connections_per_uid < 1)
                return false;
        UidCount *u = malloc(sizeof(UidCount));
        if (!u)
                return false;
        *u = (UidCount){ .uid = uid, .n = 1 };
        UidCount **ins = tsearch(u, &s->uids, cmp_uid);
        if (!ins || *ins != u) {
                free(u);
                return false;
        }
        return true;
}

static void uid_release(Server *s, uint32_t uid) {
        UidCount key = { .uid = uid };
        UidCount **found = tfind(&key, &s->uids, cmp_uid);
        if (!found)
                return;
        if (--(*found)->n == 0) {
                UidCount *u = *found;
                tdelete(&key, &s->uids, cmp_uid);
                free(u);
        }
}

/* Listen when below max_connections and not out of fds; else leave clients in the backlog. */
static void update_accepting(Server *s) {
        bool on = !s->fd_exhausted && s->n_conns < s->settings.max_connections;
        if (on == s->accepting)
                return;
        for (size_t i = 0; i < s->n_listeners; i++)
                (void) sd_event_source_set_enabled(s->listeners[i].src, on ? SD_EVENT_ON : SD_EVENT_OFF);
        s->accepting = on;
}

static void update_idle(Server *s) {
        if (!s->activated || s->settings.idle_exit == 0 || s->n_conns > 0) {
                (void) sd_event_source_set_enabled(s->idle_timer, SD_EVENT_OFF);
                return;
        }
        (void) sd_event_source_set_time(s->idle_timer, now_usec(s) + s->settings.idle_exit * USEC_PER_SEC);
        (void) sd_event_source_set_enabled(s->idle_timer, SD_EVENT_ONESHOT);
}

static void conn_free(Conn *c) {
        Server *s = c->server;

        conn_unlink(s, c);
        s->n_conns--;
        uid_release(s, (uint32_t) c->session.creds.uid);
        if (c->eof)
                /* Read to EOF: the queue is empty, so no client fd can be
                 * released with the socket, and close() cannot block. (It
                 * also drops the epoll registration.) */
                close(c->fd);
        else {
                /* Unread fds queued on the socket are released with it:
                 * the closer closes it later, so unregister it now. */
                (void) epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
                closer_close(s->closer, c->fd);
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

/* Decide what to wait for next, or close. Return: false when @c was freed. */
static bool conn_update(Conn *c) {
        Session *ss = &c->session;
        Server *s = c->server;

        for (;;) {
                if (conn_flush(c) < 0) {
                        conn_free(c);
                        return false;
                }
                /* Requests held back by back-pressure go first once there is room. */
                if (session_pending(ss) >= SESSION_OUT_HIGH || !session_has_backlog(ss))
                        break;
                int r = session_feed(ss, s->policy, &s->stats, NULL, 0, NULL, 0, false);
                if (r < 0) {
                        conn_free(c);
                        return false;
                }
                if (r > 0)
                        conn_touch(c);
        }

        bool pending = session_pending(ss) > 0;
        if (!pending && (ss->closing || c->eof)) {
                conn_free(c);
                return false;
        }
        uint32_t events = (pending ? EPOLLOUT : 0) | (!c->eof && session_wants_input(ss) ? EPOLLIN : 0);
        if (events == 0) {
                /* Nothing to send and nothing we want to read: cannot happen,
                 * but a connection must never hang without a way out. */
                conn_free(c);
                return false;
        }
        if (events != c->events) {
                struct epoll_event ev = { .events = events, .data.ptr = c };
                if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
                        conn_free(c);
                        return false;
                }
                c->events = events;
        }
        return true;
}

/*
 * Read with recvmsg() and a control buffer: fds a client attaches to any
 * line are received here and handed to the session, which closes every one;
 * none can linger in the daemon. Return: bytes read, 0 at EOF, or -errno.
 */
static ssize_t conn_recv(Conn *c, int *fds, size_t *n_fds, bool *truncated) {
        /* Room for every fd the kernel can pass: fds that do not fit would be
         * released by the kernel inside recvmsg(), on this thread. */
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int) * SCM_MAX_FD)];
        } ctl;
        struct iovec iov = { .iov_base = c->server->buf, .iov_len = sizeof(c->server->buf) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };

        *n_fds = 0;
        *truncated = false;
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
                                closer_close(c->server->closer, fd);
                                *truncated = true;
                        }
                }
        }
        /* MSG_CTRUNC: the kernel discarded fds that did not fit. */
        if (mh.msg_flags & MSG_CTRUNC)
                *truncated = true;
        return n;
}

static void on_conn_io(Conn *c, uint32_t revents) {
        Server *s = c->server;

        if ((revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->eof && session_wants_input(&c->session)) {
                int fds[SESSION_MAX_FDS];
                size_t n_fds;
                bool truncated;
                ssize_t n = conn_recv(c, fds, &n_fds, &truncated);
                if (n < 0 && n != -EAGAIN && n != -EINTR) {
                        conn_free(c);
                        return;
                }
                if (n == 0) {
                        c->eof = true;
                        for (size_t i = 0; i < n_fds; i++)
                                closer_close(s->closer, fds[i]);
                }
                if (n > 0) {
                        int r = session_feed(&c->session, s->policy, &s->stats, s->buf, (size_t) n, fds, n_fds,
                                             truncated);
                        if (r < 0) {
                                conn_free(c);
                                return;
                        }
                        if (r > 0)
                                conn_touch(c);
                }
        } else if ((revents & (EPOLLHUP | EPOLLERR)) && !(revents & EPOLLOUT)) {
                conn_free(c);
                return;
        }
        (void) conn_update(c);
}

/* The epoll instance has ready connections: serve a batch (or a few). */
static int on_conns(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        Server *s = userdata;
        struct epoll_event evs[EPOLL_BATCH];

        for (int round = 0; round < EPOLL_ROUNDS; round++) {
                int n = epoll_wait(s->epfd, evs, EPOLL_BATCH, 0);
                for (int i = 0; i < n; i++)
                        on_conn_io(evs[i].data.ptr, evs[i].events);
                if (n < EPOLL_BATCH)
                        break;
        }
        closer_flush(s->closer);
        return 0;
}

/* Best effort: a one-line error to a socket we are about to close. */
static void send_error_and_close(Server *s, int fd, ProtoError e) {
        char line[64];
        int n = snprintf(line, sizeof(line), "ERR %s\n", proto_error_name(e));
        (void) send(fd, line, (size_t) n, MSG_NOSIGNAL | MSG_DONTWAIT);
        closer_close(s->closer, fd);
}

static void on_close_fd(void *userdata, int fd) {
        Server *s = userdata;
        closer_close(s->closer, fd);
}

static void on_decision(void *userdata, const char *action, const Verdict *v, const PeerCreds *subject,
                        const PeerCreds *broker) {
        Server *s = userdata;
        if (audit_wants(s->audit, v->decision))
                audit_decision(s->audit, now_usec(s), action, v, subject, broker);
}

static void accept_one(Server *s, int fd) {
        PeerCreds creds = {};

        /* Identity comes from the kernel only, read once, here. */
        if (peer_creds_read_accepted(fd, &creds) < 0) {
                s->stats.errors++;
                send_error_and_close(s, fd, PROTO_NO_CREDENTIALS);
                return;
        }
        /* uid 0 counts like any uid: one user must not starve the others. */
        if (!uid_acquire(s, (uint32_t) creds.uid)) {
                s->stats.errors++;
                peer_creds_done(&creds);
                send_error_and_close(s, fd, PROTO_TOO_MANY_CONNECTIONS);
                return;
        }
        Conn *c = calloc(1, sizeof(Conn));
        if (!c) {
                uid_release(s, (uint32_t) creds.uid);
                peer_creds_done(&creds);
                closer_close(s->closer, fd);
                return;
        }
        c->server = s;
        c->fd = fd;
        session_init(&c->session, &creds);
        c->session.hooks = &s->hooks;
        c->session.userdata = s;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        c->events = EPOLLIN;
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                uid_release(s, (uint32_t) c->session.creds.uid);
                session_done(&c->session);
                closer_close(s->closer, fd);
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
                        if (!s->fd_exhausted)
                                log_warning("accept() failed: %s; pausing new connections for up to %d ms",
                                            strerror(errno), (int) (ACCEPT_PAUSE_USEC / 1000));
                        s->fd_exhausted = true;
                        update_accepting(s);
                        (void) sd_event_source_set_time(s->resume_timer, now_usec(s) + ACCEPT_PAUSE_USEC);
                        (void) sd_event_source_set_enabled(s->resume_timer, SD_EVENT_ONESHOT);
                }
                break;
        }
        closer_flush(s->closer);
        return 0;
}

static int on_timeout(sd_event_source *src, uint64_t usec, void *userdata) {
        Server *s = userdata;
        uint64_t now = now_usec(s);

        s->timeout_armed = false; /* a oneshot that fired is off */
        while (s->head && s->head->deadline <= now) {
                Conn *c = s->head;
                /* Queue the error after whatever is still owed, then give the
                 * client one non-blocking flush and close. */
                (void) session_fail(&c->session, PROTO_TIMEOUT, &s->stats);
                (void) conn_flush(c);
                conn_free(c);
        }
        arm_timeout(s);
        closer_flush(s->closer);
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

static int on_status(sd_event_source *src, uint64_t usec, void *userdata) {
        Server *s = userdata;

        if (memcmp(&s->stats, &s->stats_reported, sizeof(Stats)) != 0 || s->n_conns != s->conns_reported)
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

static void apply_settings(Server *s, const Settings *file) {
        uint64_t idle = s->settings.idle_exit;

        s->settings = *file;
        settings_apply_override(&s->settings, &s->cfg.override);
        audit_set_level(s->audit, s->settings.log);
        update_accepting(s);
        /* Idle time counts from the last connection closing; a reload only
         * restarts it when idle_exit itself changed. */
        if (s->settings.idle_exit != idle)
                update_idle(s);
}

static void start_reload(Server *s) {
        (void) sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64 "\nSTATUS=reloading the policy",
                          now_usec(s));
        int r = reloader_start(s->reloader);
        if (r < 0) {
                log_error("cannot start a reload: %s", strerror(-r));
                update_status(s);
                (void) sd_notify(0, "READY=1");
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
                log_error("reload failed (%zu errors); the previous policy stays in force", d->n_errors);
        } else {
                /* Requests are handled synchronously on this loop, so every
                 * request already read was answered by the old policy and
                 * every later one sees the new: never a mix. */
                policy_unref(s->policy);
                s->policy = p;
                s->reload_error = mfree(s->reload_error);
                apply_settings(s, settings);
                log_info("reloaded: %zu rules from %zu files", policy_n_rules(p), policy_n_files(p));
        }
        update_status(s);
        (void) sd_notify(0, "READY=1");
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

static int add_timer(Server *s, sd_event_source **ret, sd_event_time_handler_t cb) {
        int r = sd_event_add_time(s->event, ret, CLOCK_MONOTONIC, 0, 0, cb, s);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(*ret, SD_EVENT_OFF);
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

        r = sd_event_new(&s->event);
        if (r < 0)
                return r;
        r = audit_new(cfg->log_target, settings->log, &s->audit);
        if (r < 0)
                return r;
        r = closer_new(&s->closer);
        if (r < 0)
                return r;
        s->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (s->epfd < 0)
                return -errno;
        r = sd_event_add_io(s->event, &s->epoll_src, s->epfd, EPOLLIN, on_conns, s);
        if (r < 0)
                return r;

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
        r = reloader_new(s->event, &s->cfg.policy, on_reloaded, s, &s->reloader);
        if (r < 0)
                return r;
        (void) sd_event_set_watchdog(s->event, true);
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
        (void) sd_notify(0, "READY=1");
        int r = sd_event_loop(s->event);
        (void) sd_notify(0, "STOPPING=1\nSTATUS=stopping");
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
        tdestroy(s->uids, free);
        sd_event_source_disable_unref(s->epoll_src);
        if (s->epfd >= 0)
                close(s->epfd);
        closer_free(s->closer);
        audit_free(s->audit);
        free(s->reload_error);
        sd_event_unref(s->event);
        policy_unref(s->policy);
        free(s);
        return NULL;
}
