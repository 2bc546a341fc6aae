/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * cgload: the load generator of credgate's benchmark (tests/bench/bench.py).
 *
 * Drives a server that speaks credgate's line protocol (docs/protocol.md)
 * over a Unix stream socket, from one or two event-loop threads with their
 * own epoll set and non-blocking sockets, and prints one line of key=value
 * pairs: throughput, errors and latency percentiles.
 *
 *   connect     a new connection per request; the clock starts before
 *               connect(), so setup, accept and the credential read count
 *   persistent  N connections opened before the clock, one request in
 *               flight on each
 *   pipeline    N connections, --depth requests in flight on each
 *   --hold N    open N idle connections, check that each is served (PING),
 *               print "held=N", then keep them open until stdin closes or
 *               SIGTERM/SIGINT arrives
 *
 * Any reply other than the expected verdict (ERR, garbage, a connection
 * closed or failed before its reply, no reply within --timeout) is an error.
 * Only libc and pthreads, so that it builds anywhere the daemon builds.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE 2
#define RBUF_SIZE 1024 /* replies are short: ALLOW, DENY, PONG, ERR <reason> */
#define MAX_EVENTS 256
#define MAX_THREADS 2

/* ---------------------------------------------------------------------------
 * Latency histogram. Values in ns; below 2*SUB each value has its own bucket,
 * above that every power of two is split into SUB buckets, so a bucket is at
 * most 1/SUB (0.8 %) wide relative to its values.
 */
#define SUB_BITS 7
#define SUB (1u << SUB_BITS)
#define HIST_BUCKETS ((64 - SUB_BITS) * SUB + SUB)

typedef struct Hist {
        uint64_t n[HIST_BUCKETS];
        uint64_t count, max;
} Hist;

static unsigned hist_index(uint64_t v) {
        if (v < 2 * SUB)
                return (unsigned) v;
        unsigned shift = 63u - (unsigned) __builtin_clzll(v) - SUB_BITS;
        return shift * SUB + (unsigned) (v >> shift);
}

/* The middle of bucket @i. */
static uint64_t hist_value(unsigned i) {
        if (i < 2 * SUB)
                return i;
        unsigned shift = i / SUB - 1;
        uint64_t low = (uint64_t) (i - shift * SUB) << shift;
        return low + (UINT64_C(1) << shift) / 2;
}

static void hist_add(Hist *h, uint64_t v) {
        h->n[hist_index(v)]++;
        h->count++;
        if (v > h->max)
                h->max = v;
}

static void hist_merge(Hist *into, const Hist *h) {
        for (unsigned i = 0; i < HIST_BUCKETS; i++)
                into->n[i] += h->n[i];
        into->count += h->count;
        if (h->max > into->max)
                into->max = h->max;
}

/* The @q quantile (0 < q <= 1) in microseconds: the smallest value with at
 * least ceil(q * count) values at or below it. */
static double hist_quantile_us(const Hist *h, double q) {
        if (h->count == 0)
                return 0;
        uint64_t rank = (uint64_t) (q * (double) h->count);
        if ((double) rank < q * (double) h->count)
                rank++;
        if (rank == 0)
                rank = 1;
        uint64_t seen = 0;
        for (unsigned i = 0; i < HIST_BUCKETS; i++) {
                seen += h->n[i];
                if (seen >= rank) {
                        uint64_t v = hist_value(i);
                        return (double) (v < h->max ? v : h->max) / 1e3;
                }
        }
        return (double) h->max / 1e3;
}

/* ---------------------------------------------------------------------------
 * Options and shared state
 */
typedef enum Mode { MODE_CONNECT, MODE_PERSISTENT, MODE_PIPELINE } Mode;
static const char *const mode_names[] = { "connect", "persistent", "pipeline" };

typedef enum Verdict { VERDICT_ALLOW, VERDICT_DENY, VERDICT_PONG, VERDICT_ERR, VERDICT_GARBAGE } Verdict;

static struct {
        const char *socket;
        Mode mode;
        unsigned clients, depth, threads;
        double duration;   /* seconds, when requests == 0 */
        uint64_t requests; /* complete this many instead */
        const char *action;
        bool ping;
        int expect; /* a Verdict, or -1 for "ALLOW or DENY" */
        double timeout;
        uint64_t slow_ns;
        unsigned hold;
} arg = {
        .mode = MODE_PERSISTENT,
        .clients = 1,
        .depth = 1,
        .threads = 1,
        .duration = 3,
        .action = "bench.allowed",
        .expect = -1,
        .timeout = 10,
        .slow_ns = 100 * 1000 * 1000,
};

static struct sockaddr_un addr;
static char *line_buf; /* depth + 1 copies of the request line */
static size_t line_len;
static uint64_t t_begin, t_deadline;
static volatile sig_atomic_t stop_requested; /* SIGINT/SIGTERM: finish and report */

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * UINT64_C(1000000000) + (uint64_t) ts.tv_nsec;
}

/* ---------------------------------------------------------------------------
 * Connections and workers
 */
typedef struct Worker Worker;

typedef struct Conn {
        Worker *w;
        int fd;          /* -1 when closed */
        bool want_out;   /* EPOLLOUT is registered */
        bool queued;     /* on the worker's reconnect list */
        bool have_start; /* connect mode: a request started and not yet sent */
        uint64_t start;  /* connect mode: when that request started */
        uint32_t inflight, head;
        uint64_t *sent_at; /* ring of depth start times; head is the oldest */
        size_t wpend, wofs; /* request bytes still to write; offset in the line */
        size_t rlen;
        char rbuf[RBUF_SIZE];
} Conn;

struct Worker {
        pthread_t thread;
        int ep;
        Conn *conns;
        unsigned n_conns;
        Conn **retry, **retry_next;
        unsigned n_retry;
        uint64_t budget, started, replied, failed;
        uint64_t errors, mismatches, slow;
        uint64_t e_connect, e_io, e_closed, e_err, e_garbage, e_timeout;
        uint64_t t_end;
        Hist hist;
};

static void want_out(Conn *c, bool on) {
        if (c->want_out == on)
                return;
        struct epoll_event ev = { .events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c };
        if (epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
                c->want_out = on;
}

static void queue_reconnect(Conn *c) {
        if (c->queued)
                return;
        c->queued = true;
        c->w->retry[c->w->n_retry++] = c;
}

/* Close @c; its unanswered requests fail with reason *@why. */
static void conn_fail(Conn *c, uint64_t *why) {
        Worker *w = c->w;
        w->errors += c->inflight;
        w->failed += c->inflight;
        *why += c->inflight;
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
        c->inflight = c->head = 0;
        c->wpend = c->wofs = c->rlen = 0;
        c->want_out = false;
        queue_reconnect(c);
}

static bool conn_flush(Conn *c) {
        while (c->wpend > 0) {
                ssize_t n = send(c->fd, line_buf + c->wofs, c->wpend, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                want_out(c, true);
                                return true;
                        }
                        conn_fail(c, &c->w->e_io);
                        return false;
                }
                c->wpend -= (size_t) n;
                c->wofs = (c->wofs + (size_t) n) % line_len;
        }
        want_out(c, false);
        return true;
}

/* Start up to @k requests on open connection @c, all stamped @t. */
static void conn_issue(Conn *c, uint32_t k, uint64_t t) {
        Worker *w = c->w;
        if (w->budget - w->started < k)
                k = (uint32_t) (w->budget - w->started);
        if (k == 0)
                return;
        for (uint32_t i = 0; i < k; i++)
                c->sent_at[(c->head + c->inflight + i) % arg.depth] = t;
        c->inflight += k;
        w->started += k;
        c->wpend += (size_t) k * line_len;
        conn_flush(c);
}

/* Open @c without blocking. In connect mode this is the start of a request,
 * whose clock keeps running across retries while the backlog is full. */
static void conn_open(Conn *c) {
        Worker *w = c->w;

        c->queued = false;
        if (arg.mode == MODE_CONNECT && !c->have_start) {
                if (w->started >= w->budget)
                        return;
                w->started++;
                c->have_start = true;
                c->start = now_ns();
        }
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (const struct sockaddr *) &addr, sizeof(addr)) == 0) {
                struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
                c->fd = fd;
                c->want_out = false;
                if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
                        conn_fail(c, &w->e_io);
                        return;
                }
                if (arg.mode == MODE_CONNECT) {
                        c->have_start = false;
                        c->sent_at[0] = c->start;
                        c->inflight = 1;
                        c->wpend = line_len;
                        conn_flush(c);
                } else {
                        conn_issue(c, arg.depth, now_ns());
                }
                return;
        }
        int e = errno;
        if (fd >= 0)
                close(fd);
        if (e != EAGAIN && e != EINTR) {
                /* A refused connect is a failed request; start afresh. */
                w->e_connect++;
                w->errors++;
                if (arg.mode == MODE_CONNECT) {
                        w->failed++;
                        c->have_start = false;
                }
        }
        queue_reconnect(c);
}

static Verdict classify(const char *s, size_t n) {
        if (n == 5 && memcmp(s, "ALLOW", 5) == 0)
                return VERDICT_ALLOW;
        if (n == 4 && memcmp(s, "DENY", 4) == 0)
                return VERDICT_DENY;
        if (n == 4 && memcmp(s, "PONG", 4) == 0)
                return VERDICT_PONG;
        if (n > 4 && memcmp(s, "ERR ", 4) == 0)
                return VERDICT_ERR;
        return VERDICT_GARBAGE;
}

static void conn_read(Conn *c) {
        Worker *w = c->w;
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen, 0);
        if (n < 0) {
                if (errno != EAGAIN && errno != EINTR)
                        conn_fail(c, &w->e_io);
                return;
        }
        if (n == 0) {
                conn_fail(c, &w->e_closed);
                return;
        }
        uint64_t t = now_ns();
        c->rlen += (size_t) n;

        size_t pos = 0;
        uint32_t answered = 0;
        char *nl;
        while ((nl = memchr(c->rbuf + pos, '\n', c->rlen - pos))) {
                size_t len = (size_t) (nl - (c->rbuf + pos));
                if (c->inflight == 0) { /* a reply to nothing */
                        w->errors++;
                        w->e_garbage++;
                        conn_fail(c, &w->e_garbage);
                        return;
                }
                uint64_t lat = t - c->sent_at[c->head];
                hist_add(&w->hist, lat);
                if (lat >= arg.slow_ns)
                        w->slow++;
                c->head = (c->head + 1) % arg.depth;
                c->inflight--;
                w->replied++;
                answered++;

                Verdict v = classify(c->rbuf + pos, len);
                if (v == VERDICT_ERR) {
                        w->errors++;
                        w->e_err++;
                } else if (v == VERDICT_GARBAGE) {
                        w->errors++;
                        w->e_garbage++;
                } else if (arg.expect >= 0 ? (int) v != arg.expect : v == VERDICT_PONG) {
                        w->errors++;
                        w->mismatches++;
                }
                pos += len + 1;
        }
        if (pos > 0) {
                memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
                c->rlen -= pos;
        }
        if (c->rlen == sizeof(c->rbuf)) { /* a "line" longer than any reply */
                conn_fail(c, &w->e_garbage);
                return;
        }
        if (answered == 0)
                return;
        if (arg.mode == MODE_CONNECT) {
                if (c->inflight == 0) {
                        close(c->fd);
                        c->fd = -1;
                        c->rlen = c->head = 0;
                        conn_open(c);
                }
        } else {
                conn_issue(c, answered, now_ns());
        }
}

static bool worker_done(const Worker *w, uint64_t t) {
        if (stop_requested)
                return true;
        if (arg.requests > 0)
                return w->replied + w->failed >= w->budget;
        return t >= t_deadline;
}

static void *worker_run(void *p) {
        Worker *w = p;
        struct epoll_event evs[MAX_EVENTS];

        for (unsigned i = 0; i < w->n_conns; i++) {
                Conn *c = &w->conns[i];
                if (c->fd < 0) {
                        conn_open(c);
                        continue;
                }
                struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
                if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
                        conn_fail(c, &w->e_io);
                else
                        conn_issue(c, arg.depth, now_ns());
        }

        uint64_t progress_at = now_ns(), progress = 0;
        for (;;) {
                uint64_t t = now_ns();
                if (worker_done(w, t))
                        break;
                if (w->replied + w->failed != progress) {
                        progress = w->replied + w->failed;
                        progress_at = t;
                } else if ((double) (t - progress_at) > arg.timeout * 1e9) {
                        for (unsigned i = 0; i < w->n_conns; i++)
                                if (w->conns[i].inflight > 0)
                                        conn_fail(&w->conns[i], &w->e_timeout);
                        break;
                }
                int wait_ms = w->n_retry > 0 ? 1 : 50;
                if (arg.requests == 0 && (t_deadline - t) / 1000000 < (uint64_t) wait_ms)
                        wait_ms = (int) ((t_deadline - t) / 1000000) + 1;

                int n = epoll_wait(w->ep, evs, MAX_EVENTS, wait_ms);
                for (int i = 0; i < n; i++) {
                        Conn *c = evs[i].data.ptr;
                        if (c->fd < 0)
                                continue; /* failed earlier in this batch */
                        if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                                conn_read(c);
                        if (c->fd >= 0 && (evs[i].events & EPOLLOUT))
                                conn_flush(c);
                }
                /* Reconnect only after a turn of the loop, so that a dead
                 * server does not make us spin. */
                if (w->n_retry > 0) {
                        Conn **list = w->retry;
                        unsigned k = w->n_retry;
                        w->retry = w->retry_next;
                        w->retry_next = list;
                        w->n_retry = 0;
                        for (unsigned i = 0; i < k; i++)
                                if (list[i]->fd < 0)
                                        conn_open(list[i]);
                                else
                                        list[i]->queued = false;
                }
        }
        w->t_end = now_ns();
        return NULL;
}

/* ---------------------------------------------------------------------------
 * Setup
 */

/* Raise RLIMIT_NOFILE to the hard limit, and beyond it when privileged and
 * @need requires. Return: 0, or -1 when fewer than @need fds are possible. */
static int raise_nofile(rlim_t need) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return -1;
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
                struct rlimit more = { need, need };
                if (setrlimit(RLIMIT_NOFILE, &more) == 0)
                        return 0;
        }
        if (rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < need) {
                fprintf(stderr, "cgload: RLIMIT_NOFILE is %llu, %llu needed\n", (unsigned long long) rl.rlim_cur,
                        (unsigned long long) need);
                return -1;
        }
        return 0;
}

static int connect_blocking(void) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -1;
        if (connect(fd, (const struct sockaddr *) &addr, sizeof(addr)) < 0) {
                int e = errno;
                close(fd);
                errno = e;
                return -1;
        }
        return fd;
}

static void on_stop(int sig) {
        stop_requested = 1;
}

static double cpu_seconds(void) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        return (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6 + (double) ru.ru_stime.tv_sec +
               (double) ru.ru_stime.tv_usec / 1e6;
}

/* ---------------------------------------------------------------------------
 * --hold N
 */
typedef struct Held {
        int fd;
        uint8_t got; /* bytes of "PONG\n" received */
        bool ok;
} Held;

static int hold(void) {
        unsigned n = arg.hold, ok = 0, failed = 0, dropped = 0;
        Held *h = calloc(n, sizeof(Held));
        if (!h || raise_nofile((rlim_t) n + 32) < 0)
                return EXIT_USAGE;

        int ep = epoll_create1(EPOLL_CLOEXEC);
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (ep < 0 || sfd < 0) {
                perror("cgload: epoll/signalfd");
                return EXIT_USAGE;
        }

        uint64_t t0 = now_ns();
        for (unsigned i = 0; i < n; i++) {
                h[i].fd = connect_blocking();
                if (h[i].fd < 0) {
                        fprintf(stderr, "cgload: connection %u of %u: %m\n", i + 1, n);
                        return EXIT_USAGE;
                }
                struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
                if (epoll_ctl(ep, EPOLL_CTL_ADD, h[i].fd, &ev) < 0 ||
                    send(h[i].fd, "PING\n", 5, MSG_NOSIGNAL) != 5) {
                        fprintf(stderr, "cgload: connection %u of %u: %m\n", i + 1, n);
                        return EXIT_USAGE;
                }
        }

        /* Every connection must answer its PING: then the server has
         * accepted it and serves it, rather than it waiting in the backlog. */
        struct epoll_event evs[MAX_EVENTS];
        uint64_t give_up = now_ns() + (uint64_t) (arg.timeout * 1e9);
        while (ok + failed < n && now_ns() < give_up) {
                int k = epoll_wait(ep, evs, MAX_EVENTS, 100);
                for (int i = 0; i < k; i++) {
                        Held *x = &h[evs[i].data.u32];
                        char buf[64];
                        ssize_t r = recv(x->fd, buf, sizeof(buf), 0);
                        if (r < 0 && (errno == EAGAIN || errno == EINTR))
                                continue;
                        bool good = r > 0 && x->got + (size_t) r <= 5 &&
                                    memcmp(buf, "PONG\n" + x->got, (size_t) r) == 0;
                        if (!good) {
                                epoll_ctl(ep, EPOLL_CTL_DEL, x->fd, NULL);
                                close(x->fd);
                                x->fd = -1;
                                failed++;
                                continue;
                        }
                        x->got += (uint8_t) r;
                        if (x->got == 5) {
                                x->ok = true;
                                ok++;
                        }
                }
        }
        printf("held=%u failed=%u seconds=%.3f\n", ok, n - ok, (double) (now_ns() - t0) / 1e9);
        fflush(stdout);

        /* Idle until told to stop; a held connection that the server closes
         * (or that gets anything at all) counts as dropped. */
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = UINT32_MAX };
        epoll_ctl(ep, EPOLL_CTL_ADD, STDIN_FILENO, &ev);
        ev.data.u32 = UINT32_MAX - 1;
        epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
        for (bool stop = false; !stop;) {
                int k = epoll_wait(ep, evs, MAX_EVENTS, -1);
                if (k < 0 && errno != EINTR)
                        break;
                for (int i = 0; i < k; i++) {
                        uint32_t id = evs[i].data.u32;
                        char buf[256];
                        if (id == UINT32_MAX) {
                                ssize_t r = read(STDIN_FILENO, buf, sizeof(buf));
                                if (r <= 0 && !(r < 0 && errno == EINTR))
                                        stop = true;
                        } else if (id == UINT32_MAX - 1) {
                                stop = true;
                        } else {
                                Held *x = &h[id];
                                ssize_t r = recv(x->fd, buf, sizeof(buf), 0);
                                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                                        continue;
                                epoll_ctl(ep, EPOLL_CTL_DEL, x->fd, NULL);
                                close(x->fd);
                                x->fd = -1;
                                if (x->ok) {
                                        x->ok = false;
                                        dropped++;
                                }
                        }
                }
        }
        printf("held_end=%u dropped=%u\n", ok - dropped, dropped);
        return ok == n && dropped == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ---------------------------------------------------------------------------
 * Command line
 */
static void usage(FILE *f) {
        fprintf(f,
                "Usage: cgload --socket PATH --mode connect|persistent|pipeline --clients N [--depth D]\n"
                "              (--duration S | --requests N) [--action A | --ping] [--expect ALLOW|DENY]\n"
                "              [--threads 1|2] [--timeout S] [--slow-us US]\n"
                "       cgload --socket PATH --hold N [--timeout S]\n\n"
                "Load generator for the credgate line protocol (see docs/performance.md).\n\n"
                "  -s, --socket PATH    the server's Unix socket\n"
                "  -m, --mode MODE      connect: a new connection per request, the clock starting\n"
                "                       before connect(); persistent: one request in flight per\n"
                "                       connection; pipeline: --depth in flight (default persistent)\n"
                "  -c, --clients N      concurrent connections (default 1)\n"
                "  -d, --depth D        requests in flight per connection, pipeline only (default 1)\n"
                "  -t, --duration S     run for S seconds (default 3)\n"
                "  -n, --requests N     instead, complete exactly N requests\n"
                "  -a, --action A       the action to CHECK (default bench.allowed)\n"
                "  -p, --ping           send PING instead of CHECK\n"
                "  -e, --expect V       ALLOW or DENY: any other reply is an error (default: ALLOW\n"
                "                       and DENY both count as answers)\n"
                "  -T, --threads N      event-loop threads, 1 or 2 (default 1)\n"
                "      --timeout S      give up after S seconds without progress (default 10)\n"
                "      --slow-us US     count replies slower than US microseconds as slow=\n"
                "                       (default 100000)\n"
                "      --hold N         open N idle connections, PING each once, print held=N,\n"
                "                       keep them until stdin closes or SIGTERM, print held_end=\n"
                "  -h, --help           this text\n\n"
                "Prints one line: mode clients depth threads requests errors mismatches slow\n"
                "seconds rps p50_us p99_us p999_us max_us cpu_s. requests counts replies;\n"
                "errors counts requests without the expected reply (error kinds on stderr).\n"
                "SIGINT or SIGTERM ends a run early; it still prints its line.\n"
                "Exit status: 0 without errors, 1 with errors, 2 on bad usage or when the server\n"
                "cannot be reached at the start.\n");
}

static bool parse_count(const char *s, uint64_t min, uint64_t max, uint64_t *ret) {
        char *end;
        errno = 0;
        if (s[0] < '0' || s[0] > '9')
                return false;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || *end || v < min || v > max)
                return false;
        *ret = v;
        return true;
}

static bool parse_seconds(const char *s, double *ret) {
        char *end;
        double v = strtod(s, &end);
        if (end == s || *end || !(v > 0) || v > 86400)
                return false;
        *ret = v;
        return true;
}

static int parse_args(int argc, char **argv) {
        enum { OPT_TIMEOUT = 0x100, OPT_SLOW, OPT_HOLD };
        static const struct option opts[] = {
                { "socket", required_argument, NULL, 's' },   { "mode", required_argument, NULL, 'm' },
                { "clients", required_argument, NULL, 'c' },  { "depth", required_argument, NULL, 'd' },
                { "duration", required_argument, NULL, 't' }, { "requests", required_argument, NULL, 'n' },
                { "action", required_argument, NULL, 'a' },   { "ping", no_argument, NULL, 'p' },
                { "expect", required_argument, NULL, 'e' },   { "threads", required_argument, NULL, 'T' },
                { "timeout", required_argument, NULL, OPT_TIMEOUT },
                { "slow-us", required_argument, NULL, OPT_SLOW },
                { "hold", required_argument, NULL, OPT_HOLD },
                { "help", no_argument, NULL, 'h' },           {},
        };
        uint64_t v;
        int o;

        while ((o = getopt_long(argc, argv, "s:m:c:d:t:n:a:pe:T:h", opts, NULL)) >= 0) {
                switch (o) {
                case 's':
                        arg.socket = optarg;
                        break;
                case 'm':
                        if (strcmp(optarg, "connect") == 0)
                                arg.mode = MODE_CONNECT;
                        else if (strcmp(optarg, "persistent") == 0)
                                arg.mode = MODE_PERSISTENT;
                        else if (strcmp(optarg, "pipeline") == 0)
                                arg.mode = MODE_PIPELINE;
                        else
                                return -1;
                        break;
                case 'c':
                        if (!parse_count(optarg, 1, 1000000, &v))
                                return -1;
                        arg.clients = (unsigned) v;
                        break;
                case 'd':
                        if (!parse_count(optarg, 1, 65536, &v))
                                return -1;
                        arg.depth = (unsigned) v;
                        break;
                case 't':
                        if (!parse_seconds(optarg, &arg.duration))
                                return -1;
                        break;
                case 'n':
                        if (!parse_count(optarg, 1, UINT64_MAX / 2, &arg.requests))
                                return -1;
                        break;
                case 'a':
                        arg.action = optarg;
                        break;
                case 'p':
                        arg.ping = true;
                        break;
                case 'e':
                        if (strcmp(optarg, "ALLOW") == 0)
                                arg.expect = VERDICT_ALLOW;
                        else if (strcmp(optarg, "DENY") == 0)
                                arg.expect = VERDICT_DENY;
                        else
                                return -1;
                        break;
                case 'T':
                        if (!parse_count(optarg, 1, MAX_THREADS, &v))
                                return -1;
                        arg.threads = (unsigned) v;
                        break;
                case OPT_TIMEOUT:
                        if (!parse_seconds(optarg, &arg.timeout))
                                return -1;
                        break;
                case OPT_SLOW:
                        if (!parse_count(optarg, 1, UINT64_MAX / 1000, &v))
                                return -1;
                        arg.slow_ns = v * 1000;
                        break;
                case OPT_HOLD:
                        if (!parse_count(optarg, 1, 1000000, &v))
                                return -1;
                        arg.hold = (unsigned) v;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        return -1;
                }
        }
        if (optind < argc || !arg.socket)
                return -1;
        if (arg.mode != MODE_PIPELINE && arg.depth != 1) {
                fprintf(stderr, "cgload: --depth is for --mode pipeline\n");
                return -1;
        }
        if (arg.ping) {
                if (arg.expect >= 0) {
                        fprintf(stderr, "cgload: --ping and --expect exclude each other\n");
                        return -1;
                }
                arg.expect = VERDICT_PONG;
        }
        if (strlen(arg.socket) >= sizeof(addr.sun_path)) {
                fprintf(stderr, "cgload: socket path too long\n");
                return -1;
        }
        if (arg.threads > arg.clients)
                arg.threads = arg.clients;
        return 1;
}

int main(int argc, char **argv) {
        int r = parse_args(argc, argv);
        if (r <= 0) {
                if (r < 0)
                        usage(stderr);
                return r < 0 ? EXIT_USAGE : EXIT_SUCCESS;
        }
        addr.sun_family = AF_UNIX;
        strcpy(addr.sun_path, arg.socket);
        signal(SIGPIPE, SIG_IGN);

        if (arg.hold > 0)
                return hold();

        char line[300];
        int len = arg.ping ? snprintf(line, sizeof(line), "PING\n")
                           : snprintf(line, sizeof(line), "CHECK %s\n", arg.action);
        if (len < 0 || (size_t) len >= sizeof(line)) {
                fprintf(stderr, "cgload: --action too long\n");
                return EXIT_USAGE;
        }
        line_len = (size_t) len;
        line_buf = malloc(line_len * (arg.depth + 1));
        if (!line_buf)
                return EXIT_USAGE;
        for (unsigned i = 0; i <= arg.depth; i++)
                memcpy(line_buf + i * line_len, line, line_len);
        if (raise_nofile((rlim_t) arg.clients + 32) < 0)
                return EXIT_USAGE;
        /* No SA_RESTART: epoll_wait returns and the loop sees the flag. */
        struct sigaction sa = { .sa_handler = on_stop };
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);

        Worker *ws = calloc(arg.threads, sizeof(Worker));
        Conn *conns = calloc(arg.clients, sizeof(Conn));
        uint64_t *stamps = calloc((size_t) arg.clients * arg.depth, sizeof(uint64_t));
        if (!ws || !conns || !stamps)
                return EXIT_USAGE;

        for (unsigned i = 0; i < arg.clients; i++) {
                conns[i].fd = -1;
                conns[i].sent_at = stamps + (size_t) i * arg.depth;
        }
        if (arg.mode == MODE_CONNECT) {
                /* Fail clearly when nobody listens, before any clock runs. */
                int fd = connect_blocking();
                if (fd < 0) {
                        fprintf(stderr, "cgload: connect %s: %m\n", arg.socket);
                        return EXIT_USAGE;
                }
                close(fd);
        } else {
                /* Persistent connections are set up before the clock starts. */
                for (unsigned i = 0; i < arg.clients; i++) {
                        int fd = connect_blocking();
                        if (fd < 0) {
                                fprintf(stderr, "cgload: connection %u of %u to %s: %m\n", i + 1, arg.clients,
                                        arg.socket);
                                return EXIT_USAGE;
                        }
                        (void) fcntl(fd, F_SETFL, O_NONBLOCK);
                        conns[i].fd = fd;
                }
        }

        unsigned at = 0;
        for (unsigned i = 0; i < arg.threads; i++) {
                Worker *w = &ws[i];
                w->n_conns = arg.clients / arg.threads + (i < arg.clients % arg.threads);
                w->conns = conns + at;
                at += w->n_conns;
                w->ep = epoll_create1(EPOLL_CLOEXEC);
                w->retry = calloc(w->n_conns, sizeof(Conn *));
                w->retry_next = calloc(w->n_conns, sizeof(Conn *));
                if (w->ep < 0 || !w->retry || !w->retry_next)
                        return EXIT_USAGE;
                w->budget = arg.requests == 0 ? UINT64_MAX
                                              : arg.requests / arg.threads + (i < arg.requests % arg.threads);
                for (unsigned j = 0; j < w->n_conns; j++)
                        w->conns[j].w = w;
        }

        t_begin = now_ns();
        t_deadline = t_begin + (uint64_t) (arg.duration * 1e9);
        for (unsigned i = 1; i < arg.threads; i++)
                if (pthread_create(&ws[i].thread, NULL, worker_run, &ws[i]) != 0) {
                        fprintf(stderr, "cgload: cannot start a thread\n");
                        return EXIT_USAGE;
                }
        worker_run(&ws[0]);

        Hist *all = calloc(1, sizeof(Hist));
        Worker sum = {};
        uint64_t t_end = 0;
        if (!all)
                return EXIT_USAGE;
        for (unsigned i = 0; i < arg.threads; i++) {
                Worker *w = &ws[i];
                if (i > 0)
                        pthread_join(w->thread, NULL);
                sum.replied += w->replied;
                sum.errors += w->errors;
                sum.mismatches += w->mismatches;
                sum.slow += w->slow;
                sum.e_connect += w->e_connect;
                sum.e_io += w->e_io;
                sum.e_closed += w->e_closed;
                sum.e_err += w->e_err;
                sum.e_garbage += w->e_garbage;
                sum.e_timeout += w->e_timeout;
                if (w->t_end > t_end)
                        t_end = w->t_end;
                hist_merge(all, &w->hist);
        }
        double secs = (double) (t_end - t_begin) / 1e9;
        if (sum.errors > 0)
                fprintf(stderr,
                        "cgload: errors: connect=%" PRIu64 " io=%" PRIu64 " closed=%" PRIu64 " err_reply=%" PRIu64
                        " garbage=%" PRIu64 " timeout=%" PRIu64 " mismatch=%" PRIu64 "\n",
                        sum.e_connect, sum.e_io, sum.e_closed, sum.e_err, sum.e_garbage, sum.e_timeout,
                        sum.mismatches);
        printf("mode=%s clients=%u depth=%u threads=%u requests=%" PRIu64 " errors=%" PRIu64 " mismatches=%" PRIu64
               " slow=%" PRIu64 " seconds=%.3f rps=%.0f p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f"
               " cpu_s=%.3f\n",
               mode_names[arg.mode], arg.clients, arg.depth, arg.threads, sum.replied, sum.errors, sum.mismatches,
               sum.slow, secs, secs > 0 ? (double) sum.replied / secs : 0.0, hist_quantile_us(all, 0.50),
               hist_quantile_us(all, 0.99), hist_quantile_us(all, 0.999), (double) all->max / 1e3, cpu_seconds());
        return sum.errors > 0 || sum.replied == 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
