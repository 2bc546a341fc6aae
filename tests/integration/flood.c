/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * flood: the pipelining attacker of the adversarial suite (issue 10, part 2).
 *
 *   flood --socket PATH [--connections N] [--depth D] [--duration S]
 *         [--line TEXT] [--expect REPLY]
 *
 * Opens N connections (default 1000) and keeps D request lines (default
 * 2048 of "CHECK a": 16 KiB, one full read of the daemon) in flight on
 * every one of them for S seconds (default 5), reading every reply as it
 * comes, so that the daemon never has a back-pressure reason to stop
 * reading. One epoll thread, non-blocking sockets, edge-triggered.
 *
 * Prints "flooding connections=N" once every connection is open, then at
 * the end one line of key=value pairs:
 *
 *   connections=N depth=D seconds=S requests=R rate=R/S errors=E reconnects=C
 *
 * requests counts replies equal to --expect (default DENY); anything else
 * (another reply, a closed connection) is an error, and the connection is
 * opened again. SIGTERM or SIGINT ends the run early (same report).
 * Exit status 0 when every reply was the expected one, 1 otherwise, 2 on
 * a usage or setup error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

typedef struct Conn {
        int fd;
        uint64_t sent;    /* request bytes written */
        uint64_t replied; /* expected replies read */
        size_t rpos;      /* bytes of the current reply read so far */
} Conn;

static volatile sig_atomic_t quit;
static const char *sock_path;
static char *line_buf; /* depth + 1 copies of the request line */
static size_t line_len, expect_len;
static char expect[64];
static unsigned depth = 2048;
static int ep = -1;
static uint64_t requests, errors, reconnects;
static Conn *conns;
static struct epoll_event *evs;

static void on_signal(int sig) {
        (void) sig;
        quit = 1;
}

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int conn_open(Conn *c, size_t idx) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = -1;
        strncpy(sa.sun_path, sock_path, sizeof(sa.sun_path) - 1);
        for (int tries = 0;; tries++) {
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return -errno;
                /* Blocking connect: it waits while the listen backlog is full. */
                if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0)
                        break;
                int e = errno;
                close(fd);
                if (tries >= 100 || (e != EAGAIN && e != EINTR))
                        return -e;
                usleep(10000);
        }
        if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
                int e = errno;
                close(fd);
                return -e;
        }
        c->fd = fd;
        c->sent = c->replied = 0;
        c->rpos = 0;
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u64 = idx };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
                return -errno;
        return 0;
}

/* Write until @depth lines are in flight or the socket is full. */
static int conn_fill(Conn *c) {
        for (;;) {
                uint64_t inflight = c->sent - c->replied * line_len;
                uint64_t room = (uint64_t) depth * line_len - inflight;
                if (room == 0)
                        return 0;
                size_t off = (size_t) (c->sent % line_len);
                ssize_t n = send(c->fd, line_buf + off, (size_t) room, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return 0;
                        return -errno;
                }
                c->sent += (uint64_t) n;
        }
}

/* Read every reply there is; -1 on a wrong reply, EOF or error. */
static int conn_drain(Conn *c) {
        char buf[16384];
        for (;;) {
                ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
                if (n == 0)
                        return -1;
                if (n < 0)
                        return errno == EAGAIN || errno == EINTR ? 0 : -1;
                for (ssize_t i = 0; i < n; i++) {
                        if (buf[i] != expect[c->rpos])
                                return -1;
                        if (++c->rpos == expect_len) {
                                c->rpos = 0;
                                c->replied++;
                                requests++;
                        }
                }
        }
}

static void usage(void) {
        fprintf(stderr, "usage: flood --socket PATH [--connections N] [--depth D] [--duration S]\n"
                        "             [--line TEXT] [--expect REPLY]\n");
}

int main(int argc, char **argv) {
        static const struct option longopts[] = {
                { "socket", required_argument, NULL, 's' },   { "connections", required_argument, NULL, 'c' },
                { "depth", required_argument, NULL, 'd' },    { "duration", required_argument, NULL, 't' },
                { "line", required_argument, NULL, 'l' },     { "expect", required_argument, NULL, 'e' },
                { NULL, 0, NULL, 0 },
        };
        unsigned n_conns = 1000;
        double duration = 5.0;
        const char *line = "CHECK a", *want = "DENY";
        int opt;

        while ((opt = getopt_long(argc, argv, "s:c:d:t:l:e:", longopts, NULL)) != -1) {
                switch (opt) {
                case 's': sock_path = optarg; break;
                case 'c': n_conns = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'd': depth = (unsigned) strtoul(optarg, NULL, 10); break;
                case 't': duration = strtod(optarg, NULL); break;
                case 'l': line = optarg; break;
                case 'e': want = optarg; break;
                default: usage(); return 2;
                }
        }
        if (!sock_path || optind != argc || n_conns == 0 || depth == 0 || duration <= 0 ||
            strlen(want) + 2 > sizeof(expect) || strlen(line) == 0 || strlen(line) > 1000) {
                usage();
                return 2;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);
        struct sigaction sa = { .sa_handler = on_signal };
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);

        line_len = strlen(line) + 1;
        snprintf(expect, sizeof(expect), "%s\n", want);
        expect_len = strlen(expect);
        line_buf = malloc(line_len * ((size_t) depth + 1));
        conns = calloc(n_conns, sizeof(Conn));
        evs = calloc(256, sizeof(struct epoll_event));
        ep = epoll_create1(EPOLL_CLOEXEC);
        if (!line_buf || !conns || !evs || ep < 0) {
                perror("flood: setup");
                return 2;
        }
        for (unsigned i = 0; i <= depth; i++) {
                memcpy(line_buf + i * line_len, line, line_len - 1);
                line_buf[i * line_len + line_len - 1] = '\n';
        }
        for (unsigned i = 0; i < n_conns; i++) {
                int r = conn_open(&conns[i], i);
                if (r < 0) {
                        fprintf(stderr, "flood: connection %u: %s\n", i, strerror(-r));
                        return 2;
                }
        }
        printf("flooding connections=%u\n", n_conns);

        double t0 = now(), t_end = t0 + duration;
        while (!quit) {
                double t = now();
                if (t >= t_end)
                        break;
                int timeout = (int) ((t_end - t) * 1000) + 1;
                int n = epoll_wait(ep, evs, 256, timeout < 100 ? timeout : 100);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        perror("flood: epoll_wait");
                        return 2;
                }
                for (int k = 0; k < n; k++) {
                        Conn *c = &conns[evs[k].data.u64];
                        if (conn_drain(c) < 0 || conn_fill(c) < 0) {
                                errors++;
                                close(c->fd);
                                if (quit || conn_open(c, evs[k].data.u64) < 0) {
                                        fprintf(stderr, "flood: cannot reopen a connection\n");
                                        quit = 1;
                                        break;
                                }
                                reconnects++;
                                (void) conn_fill(c);
                        }
                }
        }
        double secs = now() - t0;
        printf("connections=%u depth=%u seconds=%.2f requests=%" PRIu64 " rate=%.0f errors=%" PRIu64
               " reconnects=%" PRIu64 "\n",
               n_conns, depth, secs, requests, (double) requests / secs, errors, reconnects);
        for (unsigned i = 0; i < n_conns; i++)
                close(conns[i].fd);
        close(ep);
        free(evs);
        free(conns);
        free(line_buf);
        return errors ? 1 : 0;
}
