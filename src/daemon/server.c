/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The event loop: accepts connections, reads each peer's credentials once,
 * feeds bytes to its Session and writes the replies back. One sd-event loop,
 * non-blocking sockets, and no per-client blocking anywhere, so no client
 * can hold up another.
 *
 * Request timeouts use one timer for all connections: every connection's
 * deadline is "last activity + timeout", and the same timeout applies to
 * all, so keeping the connections in a list ordered by last activity keeps
 * them ordered by deadline too.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "peercred.h"
#include "policy-load.h"
#include "server.h"

#define READ_CHUNK (16 * 1024)
#define ACCEPT_BURST 64
#define ACCEPT_PAUSE_USEC (100 * 1000) /* after EMFILE/ENFILE */

typedef struct Conn Conn;
struct Conn {
        Server *server;
        Conn *prev, *next; /* in s->conns, oldest activity first */
        sd_event_source *io;
        int fd;
        bool eof;
        uint64_t deadline;
        Session session;
};

typedef struct Listener {
        int fd;
        sd_event_source *src;
} Listener;

struct Server {
        ServerConfig cfg;
        sd_event *event;
        Policy *policy;
        Listener *listeners;
        size_t n_listeners;
        char *unlink_path;
        Conn *head, *tail;
        unsigned n_conns;
        sd_event_source *timeout_timer, *resume_timer;
        bool accept_paused;
        Stats stats;
        char buf[READ_CHUNK];
};

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
        uint64_t now;

        (void) sd_event_now(s->event, CLOCK_MONOTONIC, &now);
        c->deadline = now + s->cfg.timeout_usec;
        if (s->tail != c) {
                conn_unlink(s, c);
                conn_append(s, c);
        }
        /* The timer may fire early for the connection now at the head; it
         * re-arms itself then. It only needs arming when it is off. */
        int enabled = SD_EVENT_OFF;
        (void) sd_event_source_get_enabled(s->timeout_timer, &enabled);
        if (enabled == SD_EVENT_OFF)
                arm_timeout(s);
}

static void set_accepting(Server *s, bool on) {
        for (size_t i = 0; i < s->n_listeners; i++)
                (void) sd_event_source_set_enabled(s->listeners[i].src, on ? SD_EVENT_ON : SD_EVENT_OFF);
        s->accept_paused = !on;
}

static void conn_free(Conn *c) {
        Server *s = c->server;

        conn_unlink(s, c);
        s->n_conns--;
        sd_event_source_disable_unref(c->io);
        close(c->fd);
        session_done(&c->session);
        free(c);
        /* A freed fd may be what a paused accept() was waiting for. */
        if (s->accept_paused) {
                (void) sd_event_source_set_enabled(s->resume_timer, SD_EVENT_OFF);
                set_accepting(s, true);
        }
}

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
        (void) sd_event_source_set_io_events(c->io, events);
        return true;
}

/*
 * Read with recvmsg() and a control buffer: fds a client attaches to any
 * line are received here and handed to the session, which closes every one;
 * none can linger in the daemon. Return: bytes read, 0 at EOF, or -errno.
 */
static ssize_t conn_recv(Conn *c, int *fds, size_t *n_fds, bool *truncated) {
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int) * SESSION_MAX_FDS)];
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
                                close(fd);
                                *truncated = true;
                        }
                }
        }
        /* MSG_CTRUNC: the kernel discarded fds that did not fit. */
        if (mh.msg_flags & MSG_CTRUNC)
                *truncated = true;
        return n;
}

static int on_conn_io(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        Conn *c = userdata;
        Server *s = c->server;

        if ((revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->eof && session_wants_input(&c->session)) {
                int fds[SESSION_MAX_FDS];
                size_t n_fds;
                bool truncated;
                ssize_t n = conn_recv(c, fds, &n_fds, &truncated);
                if (n < 0 && n != -EAGAIN && n != -EINTR) {
                        conn_free(c);
                        return 0;
                }
                if (n == 0) {
                        c->eof = true;
                        for (size_t i = 0; i < n_fds; i++)
                                close(fds[i]);
                }
                if (n > 0) {
                        int r = session_feed(&c->session, s->policy, &s->stats, s->buf, (size_t) n, fds, n_fds,
                                             truncated);
                        if (r < 0) {
                                conn_free(c);
                                return 0;
                        }
                        if (r > 0)
                                conn_touch(c);
                }
        } else if ((revents & (EPOLLHUP | EPOLLERR)) && !(revents & EPOLLOUT)) {
                conn_free(c);
                return 0;
        }
        (void) conn_update(c);
        return 0;
}

/* Best effort: a one-line error to a socket we are about to close. */
static void send_error_and_close(int fd, ProtoError e) {
        char line[64];
        int n = snprintf(line, sizeof(line), "ERR %s\n", proto_error_name(e));
        (void) send(fd, line, (size_t) n, MSG_NOSIGNAL | MSG_DONTWAIT);
        close(fd);
}

static void accept_one(Server *s, int fd) {
        PeerCreds creds = {};

        /* Identity comes from the kernel only, read once, here. */
        if (peer_creds_read(fd, &creds) < 0) {
                s->stats.errors++;
                send_error_and_close(fd, PROTO_NO_CREDENTIALS);
                return;
        }
        Conn *c = calloc(1, sizeof(Conn));
        if (!c) {
                peer_creds_done(&creds);
                close(fd);
                return;
        }
        c->server = s;
        c->fd = fd;
        session_init(&c->session, &creds);
        if (sd_event_add_io(s->event, &c->io, fd, EPOLLIN, on_conn_io, c) < 0) {
                session_done(&c->session);
                close(fd);
                free(c);
                return;
        }
        s->n_conns++;
        conn_append(s, c);
        conn_touch(c);
}

static int on_resume(sd_event_source *src, uint64_t usec, void *userdata) {
        set_accepting(userdata, true);
        return 0;
}

static int on_accept(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        Server *s = userdata;

        for (int i = 0; i < ACCEPT_BURST; i++) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd >= 0) {
                        accept_one(s, cfd);
                        continue;
                }
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                        /* Out of fds or memory: a level-triggered listener would
                         * spin. Leave clients in the backlog and retry later
                         * (or as soon as a connection closes). */
                        uint64_t now;
                        (void) sd_event_now(s->event, CLOCK_MONOTONIC, &now);
                        set_accepting(s, false);
                        (void) sd_event_source_set_time(s->resume_timer, now + ACCEPT_PAUSE_USEC);
                        (void) sd_event_source_set_enabled(s->resume_timer, SD_EVENT_ONESHOT);
                        log_warning("accept() failed: %s; pausing new connections for %d ms", strerror(errno),
                                    ACCEPT_PAUSE_USEC / 1000);
                }
                break;
        }
        return 0;
}

static int on_timeout(sd_event_source *src, uint64_t usec, void *userdata) {
        Server *s = userdata;
        uint64_t now;

        (void) sd_event_now(s->event, CLOCK_MONOTONIC, &now);
        while (s->head && s->head->deadline <= now) {
                Conn *c = s->head;
                /* Queue the error after whatever is still owed, then give the
                 * client one non-blocking flush and close. */
                (void) session_fail(&c->session, PROTO_TIMEOUT, &s->stats);
                (void) conn_flush(c);
                conn_free(c);
        }
        arm_timeout(s);
        return 0;
}

static int on_reload(sd_event_source *src, const struct signalfd_siginfo *si, void *userdata) {
        Server *s = userdata;
        Diags d = {};
        Policy *p = NULL;

        int r = policy_load(s->cfg.config_path, &d, &p);
        for (size_t i = 0; i < d.n; i++)
                log_msg(d.v[i].warning ? LOG_WARNING : LOG_ERR, "%s", d.v[i].text);
        diags_done(&d);
        if (r < 0) {
                log_error("reload of '%s' failed; keeping the policy in force", s->cfg.config_path);
                (void) sd_notifyf(0, "STATUS=reload failed; serving the previous policy (%zu rules)",
                                  policy_n_rules(s->policy));
                return 0;
        }
        /* Requests are handled synchronously, so every request already read
         * was answered by the old policy and every later one sees the new. */
        policy_unref(s->policy);
        s->policy = p;
        log_info("reloaded '%s': %zu rules", s->cfg.config_path, policy_n_rules(p));
        (void) sd_notifyf(0, "STATUS=serving %zu rules from '%s'", policy_n_rules(p), s->cfg.config_path);
        return 0;
}

int server_new(const ServerConfig *cfg, Policy *policy, Server **ret) {
        _cleanup_(server_freep) Server *s = calloc(1, sizeof(Server));
        int r;

        if (!s)
                return -ENOMEM;
        s->cfg = *cfg;
        s->policy = policy_ref(policy);

        r = sd_event_default(&s->event);
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
            (r = sd_event_add_signal(s->event, NULL, SIGHUP, on_reload, s)) < 0)
                return r;
        r = sd_event_add_time(s->event, &s->timeout_timer, CLOCK_MONOTONIC, 0, 0, on_timeout, s);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(s->timeout_timer, SD_EVENT_OFF);
        r = sd_event_add_time(s->event, &s->resume_timer, CLOCK_MONOTONIC, 0, 0, on_resume, s);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(s->resume_timer, SD_EVENT_OFF);
        (void) sd_event_set_watchdog(s->event, true);

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
        s->n_listeners++;
        if (unlink_path && !(s->unlink_path = strdup(unlink_path)))
                return -ENOMEM;
        return 0;
}

int server_run(Server *s) {
        (void) sd_notifyf(0, "READY=1\nSTATUS=serving %zu rules from '%s'", policy_n_rules(s->policy),
                          s->cfg.config_path);
        int r = sd_event_loop(s->event);
        (void) sd_notify(0, "STOPPING=1");
        return r;
}

Server *server_free(Server *s) {
        if (!s)
                return NULL;
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
        sd_event_unref(s->event);
        policy_unref(s->policy);
        free(s);
        return NULL;
}

const Stats *server_stats(const Server *s) {
        return &s->stats;
}

unsigned server_n_connections(const Server *s) {
        return s->n_conns;
}
