/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libcredgate against the real daemon, and against a fake one.
 *
 * The "daemon" TCases run $CREDGATED on a policy written to a temporary
 * folder (an unchecked fixture: one daemon per TCase, started and stopped by
 * the runner process, so this also works with CK_FORK=no). The "strict"
 * TCase replaces the daemon with a fake server, a forked child that answers
 * one request with canned bytes, to prove that only an exact "ALLOW" line is
 * ever an allow, that the out-parameter is left alone on every error, and
 * that the connection is broken afterwards. test_heap_bounds re-executes
 * this program with glibc's checking malloc, so that a write past a heap
 * block fails the test even without valgrind or ASan.
 *
 * The broker case with a client of another identity needs root. Without it
 * that TCase is not registered, and main() says so on stderr.
 *
 * The folder is not in /tmp: credgated refuses a policy below a folder that
 * others can write (testtmp.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "credgate.h"
#include "macro.h"
#include "testtmp.h"
#include "testutil.h"

/* Never a valid decision: shows whether an out-parameter was written. */
#define SENTINEL ((credgate_decision) 0x5a5a5a5a)

static const char *credgated_path;

/* One folder per TCase: the policy, the daemon's socket and log, the fake server's socket. */
static char dir[64];
static char policy_path[sizeof(dir) + 32];
static char sock_path[sizeof(dir) + 32];
static char log_path[sizeof(dir) + 32];
static char fake_path[sizeof(dir) + 32];
static char service_path[sizeof(dir) + 32];
static pid_t daemon_pid = -1;

/*
 * The test policy. "t.self" is allowed for this process's uid only, so a
 * broker query shows whose decision came back; "t.u1000" and "t.group100"
 * are for the root-only case, where a client of uid 1000 must get a different
 * answer than root.
 */
static const char policy_fmt[] = "default = \"deny\";\n"
                                 "rules = (\n"
                                 "  { action = \"t.allow\"; effect = \"allow\"; anyone = true; },\n"
                                 "  { action = \"t.deny\"; effect = \"deny\"; anyone = true; },\n"
                                 "  { action = \"org.example.status\"; effect = \"allow\"; anyone = true; },\n"
                                 "  { action = \"t.many.a.*\"; effect = \"allow\"; anyone = true; },\n"
                                 "  { action = \"t.self\"; effect = \"allow\"; uids = [\"%u\"]; },\n"
                                 "  { action = \"t.u1000\"; effect = \"allow\"; uids = [\"1000\"]; },\n"
                                 "  { action = \"t.group100\"; effect = \"allow\"; gids = [\"100\"]; },\n"
                                 "  { action = \"t.root\"; effect = \"allow\"; uids = [\"0\"]; },\n"
                                 "  { id = \"no-t\"; action = \"t.why\"; effect = \"deny\"; anyone = true;\n"
                                 "    message = \"Ask #ops -- not me\"; },\n"
                                 "  { action = \"t.home.{uid}\"; effect = \"allow\"; anyone = true; }\n"
                                 ");\n";

static int rm_one(const char *p, const struct stat *st, int type, struct FTW *ftw) {
        return remove(p) < 0 ? -1 : 0;
}

static int64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void msleep(int ms) {
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* Connect a plain socket to @path; -errno on failure. */
static int connect_to(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
                return -errno;
        strncpy(sa.sun_path, path, sizeof(sa.sun_path) - 1);
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

/* A listening socket at @path (mode 0666, so that dropped children may connect). */
static int listen_at(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(fd, 0);
        unlink(path);
        strncpy(sa.sun_path, path, sizeof(sa.sun_path) - 1);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        ck_assert_int_eq(chmod(path, 0666), 0);
        ck_assert_int_eq(listen(fd, 16), 0);
        return fd;
}

/* Accept on @lfd, waiting at most 5 s. */
static int accept_within(int lfd) {
        struct pollfd p = { .fd = lfd, .events = POLLIN };

        ck_assert_msg(poll(&p, 1, 5000) == 1, "nobody connected within 5 s");
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        return fd;
}

/* Does the daemon at sock_path answer PING? */
static bool daemon_answers(void) {
        char buf[16];
        size_t n = 0;
        int fd = connect_to(sock_path);

        if (fd < 0)
                return false;
        if (send(fd, "PING\n", 5, MSG_NOSIGNAL) != 5) {
                close(fd);
                return false;
        }
        struct pollfd p = { .fd = fd, .events = POLLIN };
        while (n < 5 && poll(&p, 1, 2000) == 1) {
                ssize_t k = read(fd, buf + n, sizeof(buf) - 1 - n);
                if (k <= 0)
                        break;
                n += (size_t) k;
        }
        close(fd);
        return n == 5 && memcmp(buf, "PONG\n", 5) == 0;
}

static void print_daemon_log(void) {
        char buf[4096];
        FILE *f = fopen(log_path, "re");

        if (!f)
                return;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        if (n > 0)
                fprintf(stderr, "credgated's output:\n%s\n", buf);
}

/* Unchecked fixture: a fresh folder with the paths every test uses. */
static void dir_setup(void) {
        /* 0755: children that dropped root must reach the sockets. */
        ck_assert_int_eq(test_trusted_mkdtemp(dir, sizeof(dir), "credgate-lib"), 0);
        snprintf(policy_path, sizeof(policy_path), "%s/policy.conf", dir);
        snprintf(sock_path, sizeof(sock_path), "%s/cg.sock", dir);
        snprintf(log_path, sizeof(log_path), "%s/credgated.log", dir);
        snprintf(fake_path, sizeof(fake_path), "%s/fake.sock", dir);
        snprintf(service_path, sizeof(service_path), "%s/service.sock", dir);
}

static void dir_teardown(void) {
        (void) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Unchecked fixture: the folder, the policy, and a running credgated. */
static void daemon_setup(void) {
        char policy[sizeof(policy_fmt) + 16];

        dir_setup();
        int n = snprintf(policy, sizeof(policy), policy_fmt, (unsigned) getuid());
        FILE *f = fopen(policy_path, "we");
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(fwrite(policy, 1, (size_t) n, f), (size_t) n);
        ck_assert_int_eq(fclose(f), 0);
        ck_assert_int_eq(chmod(policy_path, 0644), 0);

        fflush(NULL);
        pid_t parent = getpid();
        daemon_pid = fork();
        ck_assert_int_ge(daemon_pid, 0);
        if (daemon_pid == 0) {
                /* Never outlive the test run, even when it is killed. */
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(127);
                int out = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (out < 0 || in < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
                        _exit(127);
                unsetenv("NOTIFY_SOCKET");
                unsetenv("LISTEN_FDS");
                unsetenv("LISTEN_PID");
                unsetenv("LISTEN_FDNAMES");
                execl(credgated_path, credgated_path, "-c", policy_path, "-s", sock_path, (char *) NULL);
                _exit(127);
        }

        for (int64_t deadline = now_ms() + 10000;; msleep(10)) {
                int status;
                if (waitpid(daemon_pid, &status, WNOHANG) == daemon_pid) {
                        daemon_pid = -1;
                        print_daemon_log();
                        ck_abort_msg("credgated exited before serving (wait status 0x%x)", (unsigned) status);
                }
                if (daemon_answers())
                        break;
                if (now_ms() > deadline) {
                        print_daemon_log();
                        ck_abort_msg("credgated did not answer PING on '%s' within 10 s", sock_path);
                }
        }
}

static void daemon_teardown(void) {
        int status = 0;
        pid_t pid = daemon_pid;

        daemon_pid = -1;
        if (pid > 0) {
                kill(pid, SIGTERM);
                int64_t deadline = now_ms() + 10000;
                pid_t w;
                while ((w = waitpid(pid, &status, WNOHANG)) == 0 && now_ms() < deadline)
                        msleep(10);
                if (w == 0) {
                        kill(pid, SIGKILL);
                        waitpid(pid, &status, 0);
                }
        }
        if (pid > 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
                print_daemon_log();
        dir_teardown();
        if (pid > 0)
                ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                              "credgated did not exit 0 on SIGTERM (wait status 0x%x)", (unsigned) status);
}

/*
 * Connections a test opened, closed by the checked teardown when the test
 * failed before closing them (with CK_FORK=no the process goes on, and
 * valgrind would count them as leaks).
 */
static credgate *tracked[8];

static credgate *open_conn(const char *path) {
        credgate *c = NULL;
        int r = credgate_open(path, &c);

        ck_assert_msg(r == 0, "credgate_open('%s'): %s", path, credgate_strerror(r));
        ck_assert_ptr_nonnull(c);
        for (size_t i = 0; i < ELEMENTSOF(tracked); i++)
                if (!tracked[i]) {
                        tracked[i] = c;
                        return c;
                }
        ck_abort_msg("more than %zu open connections", ELEMENTSOF(tracked));
}

/* Stop tracking @c (the caller closes it); return it. */
static credgate *untrack(credgate *c) {
        for (size_t i = 0; i < ELEMENTSOF(tracked); i++)
                if (tracked[i] == c)
                        tracked[i] = NULL;
        return c;
}

static void conn_close(credgate *c) {
        credgate_close(untrack(c));
}

/* Open a connection to the test daemon; fail the test otherwise. */
static credgate *open_daemon(void) {
        return open_conn(sock_path);
}

/* Check @action on @c; assert success; return the decision. */
static credgate_decision check_ok(credgate *c, const char *action) {
        credgate_decision d = SENTINEL;
        int r = credgate_check(c, action, &d);

        ck_assert_msg(r == 0, "credgate_check('%s'): %d %s", action, r, credgate_strerror(r));
        ck_assert_msg(d == CREDGATE_ALLOW || d == CREDGATE_DENY, "decision %d", (int) d);
        return d;
}

static int cmp_gid(const void *a, const void *b) {
        gid_t x = *(const gid_t *) a, y = *(const gid_t *) b;
        return x < y ? -1 : x > y;
}

/* getgroups(), sorted ascending without duplicates, into @g; return the count. */
static size_t my_groups(gid_t *g, size_t max) {
        int n = getgroups((int) max, g);
        size_t k = 0;

        ck_assert_int_ge(n, 0);
        qsort(g, (size_t) n, sizeof(gid_t), cmp_gid);
        for (size_t i = 0; i < (size_t) n; i++)
                if (k == 0 || g[i] != g[k - 1])
                        g[k++] = g[i];
        return k;
}

/* Assert that @c is this process's identity. */
static void assert_is_me(const credgate_creds *c) {
        static gid_t want[65536];
        size_t n = my_groups(want, ELEMENTSOF(want));

        ck_assert_int_eq(c->pid, getpid());
        ck_assert_uint_eq(c->uid, getuid());
        ck_assert_uint_eq(c->gid, getgid());
        ck_assert_uint_eq(c->n_groups, n);
        for (size_t i = 0; i < n; i++)
                ck_assert_msg(c->groups[i] == want[i], "groups[%zu] = %u, expected %u", i, (unsigned) c->groups[i],
                              (unsigned) want[i]);
}

/* ------------------------------------------------------------------------- */
/* One-shot checks, socket path resolution */

START_TEST(test_check_once) {
        credgate_decision d = SENTINEL;

        ck_assert_int_eq(credgate_check_once(sock_path, "t.allow", &d), 0);
        ck_assert_int_eq(d, CREDGATE_ALLOW);
        d = SENTINEL;
        ck_assert_int_eq(credgate_check_once(sock_path, "t.deny", &d), 0);
        ck_assert_int_eq(d, CREDGATE_DENY);
        d = SENTINEL;
        ck_assert_int_eq(credgate_check_once(sock_path, "t.no.rule", &d), 0);
        ck_assert_int_eq(d, CREDGATE_DENY);
        d = SENTINEL;
        ck_assert_int_eq(credgate_check_once(sock_path, "t.self", &d), 0);
        ck_assert_int_eq(d, CREDGATE_ALLOW);
}
END_TEST

START_TEST(test_env_socket) {
        char missing[sizeof(dir) + 32];
        credgate_decision d = SENTINEL;
        credgate *c = NULL;

        snprintf(missing, sizeof(missing), "%s/missing.sock", dir);

        /* NULL path: $CREDGATE_SOCKET is used. */
        ck_assert_int_eq(setenv("CREDGATE_SOCKET", sock_path, 1), 0);
        ck_assert_int_eq(credgate_check_once(NULL, "t.allow", &d), 0);
        ck_assert_int_eq(d, CREDGATE_ALLOW);
        c = open_conn(NULL);
        ck_assert_int_eq(credgate_ping(c), 0);
        conn_close(c);

        /* An explicit path wins over it. */
        ck_assert_int_eq(setenv("CREDGATE_SOCKET", missing, 1), 0);
        d = SENTINEL;
        ck_assert_int_eq(credgate_check_once(NULL, "t.allow", &d), -ENOENT);
        ck_assert_int_eq(d, SENTINEL);
        ck_assert_int_eq(credgate_check_once(sock_path, "t.allow", &d), 0);
        ck_assert_int_eq(d, CREDGATE_ALLOW);
        c = open_conn(sock_path);
        ck_assert_int_eq(credgate_ping(c), 0);
        conn_close(c);
        c = NULL;

        /* An empty $CREDGATE_SOCKET means the default, exactly as when unset. */
        ck_assert_int_eq(setenv("CREDGATE_SOCKET", "", 1), 0);
        int with_empty = credgate_open(NULL, &c);
        c = credgate_close(c);
        ck_assert_int_eq(unsetenv("CREDGATE_SOCKET"), 0);
        int with_default = credgate_open(CREDGATE_SOCKET_DEFAULT, &c);
        c = credgate_close(c);
        ck_assert_int_eq(with_empty, with_default);
        int with_unset = credgate_open(NULL, &c);
        c = credgate_close(c);
        ck_assert_int_eq(with_unset, with_default);
}
END_TEST

START_TEST(test_no_daemon) {
        char path[sizeof(dir) + 32];
        credgate_decision d = SENTINEL;
        credgate *c = (credgate *) 0x1; /* must not be written on failure */

        snprintf(path, sizeof(path), "%s/missing.sock", dir);
        ck_assert_int_eq(credgate_open(path, &c), -ENOENT);
        ck_assert_ptr_eq(c, (credgate *) 0x1);
        ck_assert_int_eq(credgate_check_once(path, "t.allow", &d), -ENOENT);
        ck_assert_int_eq(d, SENTINEL);

        /* A socket file nobody listens on: connection refused. */
        snprintf(path, sizeof(path), "%s/stale.sock", dir);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        strcpy(sa.sun_path, path);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        close(fd);
        ck_assert_int_eq(credgate_open(path, &c), -ECONNREFUSED);
        ck_assert_int_eq(credgate_check_once(path, "t.allow", &d), -ECONNREFUSED);
        ck_assert_int_eq(d, SENTINEL);
        unlink(path);

        /* A path longer than sun_path. */
        char longpath[200];
        memset(longpath, 'x', sizeof(longpath) - 1);
        longpath[0] = '/';
        longpath[sizeof(longpath) - 1] = '\0';
        ck_assert_int_eq(credgate_open(longpath, &c), -ENAMETOOLONG);
        ck_assert_ptr_eq(c, (credgate *) 0x1);
}
END_TEST

/* ------------------------------------------------------------------------- */
/* A reusable connection */

START_TEST(test_connection) {
        credgate *c = open_daemon();
        credgate_creds me = {};

        ck_assert_int_eq(credgate_ping(c), 0);
        ck_assert_int_eq(check_ok(c, "t.allow"), CREDGATE_ALLOW);
        ck_assert_int_eq(check_ok(c, "t.deny"), CREDGATE_DENY);
        ck_assert_int_eq(check_ok(c, "t.self"), CREDGATE_ALLOW);
        ck_assert_int_eq(credgate_whoami(c, &me), 0);
        assert_is_me(&me);
        credgate_creds_clear(&me);
        ck_assert_ptr_null(me.groups);
        ck_assert_uint_eq(me.n_groups, 0);
        credgate_creds_clear(&me);
        credgate_creds_clear(NULL);
        for (int i = 0; i < 100; i++) {
                ck_assert_int_eq(check_ok(c, i % 2 ? "t.allow" : "t.deny"), i % 2 ? CREDGATE_ALLOW : CREDGATE_DENY);
                ck_assert_int_eq(credgate_ping(c), 0);
        }
        ck_assert_ptr_null(credgate_close(untrack(c)));
        ck_assert_ptr_null(credgate_close(NULL));
}
END_TEST

START_TEST(test_set_timeout) {
        credgate *c = open_daemon();

        ck_assert_int_eq(credgate_set_timeout(c, 0), -EINVAL);
        ck_assert_int_eq(credgate_set_timeout(c, -5), -EINVAL);
        ck_assert_int_eq(credgate_set_timeout(NULL, 100), -EINVAL);
        ck_assert_int_eq(credgate_ping(c), 0); /* -EINVAL did not break it */
        ck_assert_int_eq(credgate_set_timeout(c, 1), 0);
        ck_assert_int_eq(credgate_set_timeout(c, 30000), 0);
        ck_assert_int_eq(check_ok(c, "t.allow"), CREDGATE_ALLOW);
        conn_close(c);
}
END_TEST

/* Action i of the pipelining tests: every third one is allowed by "t.many.a.*". */
static void many_action(char *buf, size_t size, size_t i, size_t pad) {
        int n = snprintf(buf, size, "t.many.%c.%zu.", i % 3 == 0 ? 'a' : 'd', i);
        while ((size_t) n < pad && (size_t) n + 1 < size)
                buf[n++] = 'x';
        buf[n] = '\0';
}

START_TEST(test_check_many) {
        enum { N = 1000 };
        static char names[N][64];
        static const char *actions[N];
        static credgate_decision got[N];
        credgate *c = open_daemon(), *single = open_daemon();

        for (size_t i = 0; i < N; i++) {
                many_action(names[i], sizeof(names[i]), i, 0);
                actions[i] = names[i];
                got[i] = SENTINEL;
        }
        /* Identity-dependent answers, spread through the batch. */
        actions[500] = "t.self";
        actions[501] = "t.deny";
        actions[999] = "t.allow";

        ck_assert_int_eq(credgate_check_many(c, actions, N, got), 0);
        for (size_t i = 0; i < N; i++) {
                credgate_decision want = check_ok(single, actions[i]);
                ck_assert_msg(got[i] == want, "action %zu '%s': pipelined %d, single %d", i, actions[i], (int) got[i],
                              (int) want);
        }
        ck_assert_int_eq(got[0], CREDGATE_ALLOW);
        ck_assert_int_eq(got[1], CREDGATE_DENY);
        ck_assert_int_eq(got[3], CREDGATE_ALLOW);
        ck_assert_int_eq(got[500], CREDGATE_ALLOW);
        ck_assert_int_eq(got[501], CREDGATE_DENY);
        ck_assert_int_eq(got[999], CREDGATE_ALLOW);

        /* The connection goes on in step after a batch. */
        ck_assert_int_eq(check_ok(c, "t.deny"), CREDGATE_DENY);
        ck_assert_int_eq(credgate_check_many(c, actions, N, got), 0);
        ck_assert_int_eq(check_ok(c, "t.allow"), CREDGATE_ALLOW);

        /* An empty batch sends nothing and writes nothing. */
        got[0] = SENTINEL;
        ck_assert_int_eq(credgate_check_many(c, actions, 0, got), 0);
        ck_assert_int_eq(got[0], SENTINEL);
        ck_assert_int_eq(credgate_ping(c), 0);
        conn_close(c);
        conn_close(single);
}
END_TEST

START_TEST(test_check_many_backpressure) {
        /* 20,000 requests of ~250 bytes (5 MB) and 120 KB of replies: more
         * than the daemon buffers (64 KiB), so sending everything before
         * reading would deadlock. */
        enum { N = 20000 };
        static char names[N][CREDGATE_ACTION_MAX + 1];
        static const char *actions[N];
        static credgate_decision got[N];
        credgate *c = open_daemon();

        ck_assert_int_eq(credgate_set_timeout(c, 60000), 0);
        for (size_t i = 0; i < N; i++) {
                many_action(names[i], sizeof(names[i]), i, 250);
                actions[i] = names[i];
                got[i] = SENTINEL;
        }
        ck_assert_int_eq(credgate_check_many(c, actions, N, got), 0);
        for (size_t i = 0; i < N; i++)
                ck_assert_msg(got[i] == (i % 3 == 0 ? CREDGATE_ALLOW : CREDGATE_DENY), "action %zu: %d", i, (int) got[i]);
        ck_assert_int_eq(check_ok(c, "t.allow"), CREDGATE_ALLOW);
        conn_close(c);
}
END_TEST

/* Bad actions: -EINVAL, nothing sent, the connection still usable. */
static const char *const bad_actions[] = {
        NULL,
        "",
        "a b",
        "org.example.*",
        "a\n",
        "CHECK\nPING",
        "t.allow\nCHECK t.allow",
        "a\r",
        "caf\xc3\xa9",
        "a\tb",
        /* 256 characters, built in main() */
        NULL,
};
static char too_long[CREDGATE_ACTION_MAX + 2];

START_TEST(test_bad_actions) {
        credgate *c = open_daemon();
        credgate_decision d = SENTINEL, many[3] = { SENTINEL, SENTINEL, SENTINEL };

        for (size_t i = 0; i < ELEMENTSOF(bad_actions); i++) {
                const char *a = i == ELEMENTSOF(bad_actions) - 1 ? too_long : bad_actions[i];
                const char *batch[3] = { "t.allow", a, "t.deny" };
                int sv[2];

                ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
                ck_assert_msg(credgate_check(c, a, &d) == -EINVAL, "check: bad action %zu", i);
                ck_assert_msg(credgate_check_many(c, batch, 3, many) == -EINVAL, "check_many: bad action %zu", i);
                ck_assert_msg(credgate_check_peer(c, sv[0], a, &d) == -EINVAL, "check_peer: bad action %zu", i);
                ck_assert_msg(credgate_check_once(sock_path, a, &d) == -EINVAL, "check_once: bad action %zu", i);
                close(sv[0]);
                close(sv[1]);
                ck_assert_int_eq(d, SENTINEL);
                ck_assert_int_eq(many[0], SENTINEL);
                ck_assert_int_eq(many[2], SENTINEL);
                /* Still in step: had anything been sent, the replies would be off by one. */
                ck_assert_int_eq(credgate_ping(c), 0);
                ck_assert_int_eq(check_ok(c, "t.deny"), CREDGATE_DENY);
                ck_assert_int_eq(check_ok(c, "t.allow"), CREDGATE_ALLOW);
        }

        /* Other bad arguments are -EINVAL too. */
        ck_assert_int_eq(credgate_check(c, "t.allow", NULL), -EINVAL);
        ck_assert_int_eq(credgate_check(NULL, "t.allow", &d), -EINVAL);
        ck_assert_int_eq(credgate_check_many(c, NULL, 1, many), -EINVAL);
        ck_assert_int_eq(credgate_check_peer(c, -1, "t.allow", &d), -EINVAL);
        ck_assert_int_eq(credgate_check_once(sock_path, "t.allow", NULL), -EINVAL);
        ck_assert_int_eq(credgate_whoami(c, NULL), -EINVAL);
        ck_assert_int_eq(credgate_ping(NULL), -EINVAL);
        ck_assert_int_eq(credgate_open(sock_path, NULL), -EINVAL);
        ck_assert_int_eq(d, SENTINEL);
        ck_assert_int_eq(credgate_ping(c), 0);

        /* The longest valid action is fine. */
        too_long[CREDGATE_ACTION_MAX] = '\0';
        ck_assert_int_eq(check_ok(c, too_long), CREDGATE_DENY);
        too_long[CREDGATE_ACTION_MAX] = 'a';
        conn_close(c);
}
END_TEST

/* ------------------------------------------------------------------------- */
/* Peer credentials, without the daemon */

static void creds_fail(int fd, int want) {
        credgate_creds c, sentinel;

        memset(&sentinel, 0xa5, sizeof(sentinel));
        c = sentinel;
        int r = credgate_peer_creds(fd, &c);
        ck_assert_msg(r == want, "credgate_peer_creds(%d) = %d, expected %d", fd, r, want);
        ck_assert_mem_eq(&c, &sentinel, sizeof(c));
}

START_TEST(test_peer_creds_socketpair) {
        credgate_creds c = {};
        int sv[2];

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        ck_assert_int_eq(credgate_peer_creds(sv[0], &c), 0);
        assert_is_me(&c);
        credgate_creds_clear(&c);
        ck_assert_int_eq(credgate_peer_creds(sv[1], &c), 0);
        assert_is_me(&c);
        credgate_creds_clear(&c);
        close(sv[0]);
        close(sv[1]);
}
END_TEST

START_TEST(test_peer_creds_accepted) {
        credgate_creds c = {};
        int lfd = listen_at(service_path);
        int fd = connect_to(service_path);

        ck_assert_int_ge(fd, 0);
        int afd = accept_within(lfd);
        ck_assert_int_eq(credgate_peer_creds(afd, &c), 0);
        assert_is_me(&c);
        credgate_creds_clear(&c);
        ck_assert_int_eq(credgate_peer_creds(fd, &c), 0);
        assert_is_me(&c);
        credgate_creds_clear(&c);

        /* No connected peer: an error, never an identity. */
        creds_fail(lfd, -ENOTCONN);
        int u = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(u, 0);
        creds_fail(u, -ENOTCONN);
        close(u);
        creds_fail(-1, -EINVAL);
        close(afd);
        close(fd);
        close(lfd);
        unlink(service_path);
}
END_TEST

/* ------------------------------------------------------------------------- */
/* Broker queries against the real daemon */

START_TEST(test_explain_daemon) {
        credgate *c = open_daemon();
        credgate_explanation e = {};
        char action[64], ref[sizeof(policy_path) + 16];

        ck_assert_int_eq(credgate_explain(c, "t.why", &e), 0);
        ck_assert_int_eq(e.decision, CREDGATE_DENY);
        ck_assert_str_eq(e.ref, "id:no-t");
        ck_assert_str_eq(e.message, "Ask #ops -- not me");
        credgate_explanation_clear(&e);

        ck_assert_int_eq(credgate_explain(c, "t.allow", &e), 0);
        ck_assert_int_eq(e.decision, CREDGATE_ALLOW);
        snprintf(ref, sizeof(ref), "%s:3", policy_path);
        ck_assert_str_eq(e.ref, ref);
        ck_assert_ptr_null(e.message);
        credgate_explanation_clear(&e);

        ck_assert_int_eq(credgate_explain(c, "t.nothing", &e), 0);
        ck_assert_int_eq(e.decision, CREDGATE_DENY);
        ck_assert_str_eq(e.ref, "default");
        credgate_explanation_clear(&e);

        /* {uid}: our own number only. */
        credgate_decision d = SENTINEL;
        snprintf(action, sizeof(action), "t.home.%u", (unsigned) getuid());
        ck_assert_int_eq(credgate_check(c, action, &d), 0);
        ck_assert_int_eq(d, CREDGATE_ALLOW);
        snprintf(action, sizeof(action), "t.home.%u", (unsigned) getuid() + 1);
        ck_assert_int_eq(credgate_check(c, action, &d), 0);
        ck_assert_int_eq(d, CREDGATE_DENY);

        /* A bad action is refused before anything is sent; the connection stays usable. */
        ck_assert_int_eq(credgate_explain(c, "t.*", &e), -EINVAL);
        ck_assert_int_eq(credgate_explain(c, NULL, &e), -EINVAL);
        ck_assert_int_eq(credgate_explain(c, "t.allow", NULL), -EINVAL);
        ck_assert_int_eq(credgate_explain_peer(c, -1, "t.allow", &e), -EINVAL);
        ck_assert_ptr_null(e.ref);
        ck_assert_int_eq(credgate_ping(c), 0);
        conn_close(c);
}
END_TEST

START_TEST(test_explain_peer_socketpair) {
        credgate *c = open_daemon();
        credgate_explanation e = {};
        int sv[2];

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        ck_assert_int_eq(credgate_explain_peer(c, sv[0], "t.why", &e), 0);
        ck_assert_int_eq(e.decision, CREDGATE_DENY);
        ck_assert_str_eq(e.message, "Ask #ops -- not me");
        credgate_explanation_clear(&e);
        ck_assert_int_ge(fcntl(sv[0], F_GETFD), 0); /* still ours */
        close(sv[0]);
        close(sv[1]);
        conn_close(c);
}
END_TEST

START_TEST(test_check_peer_socketpair) {
        credgate *c = open_daemon();
        credgate_decision d = SENTINEL;
        int sv[2];
        char b;

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        /* The peer of sv[0] is this process: "t.self" allows our uid. */
        ck_assert_int_eq(credgate_check_peer(c, sv[0], "t.self", &d), 0);
        ck_assert_int_eq(d, CREDGATE_ALLOW);
        d = SENTINEL;
        ck_assert_int_eq(credgate_check_peer(c, sv[0], "t.deny", &d), 0);
        ck_assert_int_eq(d, CREDGATE_DENY);
        d = SENTINEL;
        ck_assert_int_eq(credgate_check_peer(c, sv[1], "t.allow", &d), 0);
        ck_assert_int_eq(d, CREDGATE_ALLOW);

        /* The fd stays open, ours, and working. */
        ck_assert_int_ge(fcntl(sv[0], F_GETFD), 0);
        ck_assert_int_eq(write(sv[0], "x", 1), 1);
        ck_assert_int_eq(read(sv[1], &b, 1), 1);
        ck_assert_int_eq(b, 'x');

        /* No copy is kept anywhere: once we close sv[0], sv[1] sees EOF. */
        close(sv[0]);
        struct pollfd p = { .fd = sv[1], .events = POLLIN };
        ck_assert_int_eq(poll(&p, 1, 5000), 1);
        ck_assert_int_eq(read(sv[1], &b, 1), 0);
        close(sv[1]);

        ck_assert_int_eq(credgate_ping(c), 0);
        conn_close(c);
}
END_TEST

START_TEST(test_check_peer_listening) {
        credgate *c = open_daemon();
        credgate_decision d = SENTINEL;
        int lfd = listen_at(service_path);

        ck_assert_int_eq(credgate_check_peer(c, lfd, "t.allow", &d), -EBADF);
        ck_assert_int_eq(d, SENTINEL);
        ck_assert_int_ge(fcntl(lfd, F_GETFD), 0);
        /* After an error the connection is broken. */
        ck_assert_int_eq(credgate_check(c, "t.allow", &d), -ENOTCONN);
        ck_assert_int_eq(credgate_ping(c), -ENOTCONN);
        ck_assert_int_eq(d, SENTINEL);
        conn_close(c);

        /* An unconnected socket, a pipe: refused the same way. */
        int u = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), p[2];
        ck_assert_int_ge(u, 0);
        c = open_daemon();
        ck_assert_int_eq(credgate_check_peer(c, u, "t.allow", &d), -EBADF);
        ck_assert_int_eq(credgate_check_peer(c, u, "t.allow", &d), -ENOTCONN);
        conn_close(c);
        close(u);
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        c = open_daemon();
        ck_assert_int_eq(credgate_check_peer(c, p[0], "t.allow", &d), -EBADF);
        conn_close(c);
        close(p[0]);
        close(p[1]);
        ck_assert_int_eq(d, SENTINEL);
        close(lfd);
        unlink(service_path);
}
END_TEST

/* ------------------------------------------------------------------------- */
/* Strict replies, against a fake server */

typedef enum Call {
        CALL_CHECK,
        CALL_CHECK_MANY, /* the bad reply comes second, after a good ALLOW */
        CALL_CHECK_PEER,
        _CALL_MAX,
} Call;

typedef struct Reply {
        const char *name;
        const char *bytes;
        size_t len;
        int want;    /* the expected error, or 0 for "any error" */
        bool linger; /* keep the connection open after the bytes */
} Reply;

#define R(name, s, want) { name, s, sizeof(s) - 1, want, false }

static const Reply bad_replies[] = {
        R("ALLOWED", "ALLOWED\n", -EBADMSG),
        R("lower-case allow", "allow\n", -EBADMSG),
        R("ALLOW and a space", "ALLOW \n", -EBADMSG),
        R("ALLOW and CR", "ALLOW\r\n", -EBADMSG),
        R("space and ALLOW", " ALLOW\n", -EBADMSG),
        R("ALLOW without newline, then EOF", "ALLOW", -ECONNRESET),
        R("EOF at once", "", -ECONNRESET),
        R("empty line", "\n", -EBADMSG),
        R("ERR timeout", "ERR timeout\n", -ETIMEDOUT),
        R("ERR bad-peer-fd", "ERR bad-peer-fd\n", -EBADF),
        R("ERR not-a-broker", "ERR not-a-broker\n", -EPERM),
        R("ERR no-credentials", "ERR no-credentials\n", -ENODATA),
        R("ERR whatever", "ERR whatever\n", -EPROTO),
        R("ERR alone", "ERR\n", 0),
        R("PONG to a CHECK", "PONG\n", -EBADMSG),
        R("CREDS to a CHECK", "CREDS pid=1 uid=0 gid=0 groups=\n", -EBADMSG),
        R("ALLOW, NUL, garbage", "ALLOW\0garbage\n", 0),
        R("ALLOW, NUL", "ALLOW\0\n", 0),
        R("DENY, NUL, ALLOW", "DENY\0ALLOW\n", 0),
        { "2 MB without a newline", NULL, 2 * 1024 * 1024, 0, false },
};

/* Serve one connection on @lfd: read one request line, send @r's bytes,
 * then close (or linger), or (when @r is NULL) never answer. Runs in a child. */
_Noreturn static void fake_serve(int lfd, const Reply *r, const char *prefix) {
        static char filler[65536];
        char buf[4096];
        bool got_line = false;

        signal(SIGPIPE, SIG_IGN);
        alarm(20);
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
                _exit(1);
        close(lfd);
        while (!got_line) {
                ssize_t k = read(fd, buf, sizeof(buf));
                if (k <= 0)
                        _exit(2);
                got_line = memchr(buf, '\n', (size_t) k) != NULL;
        }
        if (prefix)
                (void) send(fd, prefix, strlen(prefix), MSG_NOSIGNAL);
        if (r && r->bytes) {
                (void) send(fd, r->bytes, r->len, MSG_NOSIGNAL);
        } else if (r) {
                memset(filler, 'A', sizeof(filler));
                for (size_t sent = 0; sent < r->len;) {
                        ssize_t k = send(fd, filler, sizeof(filler), MSG_NOSIGNAL);
                        if (k <= 0)
                                _exit(0); /* the client gave up: fine */
                        sent += (size_t) k;
                }
        }
        if (r && !r->linger) {
                close(fd);
                _exit(0);
        }
        /* Wait until the client hangs up. */
        while (read(fd, buf, sizeof(buf)) > 0)
                ;
        _exit(0);
}

static pid_t fake_pid = -1;
static int fake_lfd = -1;

static void fake_stop(void) {
        if (fake_lfd >= 0)
                close(fake_lfd);
        fake_lfd = -1;
        unlink(fake_path);
        if (fake_pid > 0) {
                kill(fake_pid, SIGKILL);
                waitpid(fake_pid, NULL, 0);
        }
        fake_pid = -1;
}

/* Start a fake server that answers the first request line with @prefix and
 * @r (see fake_serve()), and return a connection to it. */
static credgate *fake_connect(const Reply *r, const char *prefix) {
        fake_stop();
        fake_lfd = listen_at(fake_path);
        fflush(NULL);
        fake_pid = fork();
        ck_assert_int_ge(fake_pid, 0);
        if (fake_pid == 0) {
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                fake_serve(fake_lfd, r, prefix);
        }
        return open_conn(fake_path);
}

/* Checked teardown: whatever a failed test left behind. */
static void test_cleanup(void) {
        for (size_t i = 0; i < ELEMENTSOF(tracked); i++)
                tracked[i] = credgate_close(tracked[i]);
        fake_stop();
        unsetenv("CREDGATE_SOCKET");
}

/* Call @call on @c; return its result, with the decision(s) in *d. */
static int do_call(credgate *c, Call call, credgate_decision *d) {
        static const char *const two[] = { "t.allow", "t.allow" };
        int sv[2], r;

        switch (call) {
        case CALL_CHECK:
                return credgate_check(c, "t.allow", d);
        case CALL_CHECK_MANY:
                return credgate_check_many(c, two, 2, d);
        case CALL_CHECK_PEER:
                ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
                r = credgate_check_peer(c, sv[0], "t.allow", d);
                close(sv[0]);
                close(sv[1]);
                return r;
        case _CALL_MAX:
                break;
        }
        ck_abort();
}

static const char *const call_names[] = { "check", "check_many", "check_peer" };

START_TEST(test_strict_reply) {
        const Reply *rep = &bad_replies[_i / _CALL_MAX];
        Call call = (Call) (_i % _CALL_MAX);
        credgate_decision d[2] = { SENTINEL, SENTINEL };
        credgate *c = NULL;

        c = fake_connect(rep, call == CALL_CHECK_MANY ? "ALLOW\n" : NULL);
        ck_assert_int_eq(credgate_set_timeout(c, 3000), 0);
        int r = do_call(c, call, d);
        ck_assert_msg(r < 0, "%s: reply '%s' gave %d (decision %d), not an error", call_names[call], rep->name, r,
                      (int) d[0]);
        ck_assert_msg(r != CREDGATE_ALLOW, "%s: reply '%s' returned CREDGATE_ALLOW", call_names[call], rep->name);
        if (rep->want)
                ck_assert_msg(r == rep->want, "%s: reply '%s' gave %d (%s), expected %d (%s)", call_names[call],
                              rep->name, r, credgate_strerror(r), rep->want, credgate_strerror(rep->want));
        ck_assert_msg(d[0] == SENTINEL && d[1] == SENTINEL, "%s: reply '%s' wrote the out-parameter",
                      call_names[call], rep->name);
        /* Broken now, for every call. */
        credgate_creds cr = {};
        ck_assert_int_eq(credgate_check(c, "t.allow", d), -ENOTCONN);
        ck_assert_int_eq(credgate_ping(c), -ENOTCONN);
        ck_assert_int_eq(credgate_whoami(c, &cr), -ENOTCONN);
        ck_assert_int_eq(d[0], SENTINEL);
        conn_close(c);
        fake_stop();
}
END_TEST

/* EXPLAIN replies: only the documented grammar is taken; anything else
 * breaks the connection and leaves the out-parameter alone. */
static const Reply bad_explanations[] = {
        R("plain ALLOW", "ALLOW\n", -EBADMSG),
        R("no reference", "ALLOW \n", -EBADMSG),
        R("two spaces", "ALLOW  default\n", -EBADMSG),
        R("lower case", "allow default\n", -EBADMSG),
        R("message without --", "DENY default message\n", -EBADMSG),
        R("empty message", "DENY default -- \n", -EBADMSG),
        R("-- without space", "DENY default --x\n", -EBADMSG),
        R("tab in message", "DENY default -- a\tb\n", -EBADMSG),
        R("8-bit in message", "DENY default -- caf\xc3\xa9\n", -EBADMSG),
        R("201-byte message", "DENY default -- "
                              "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                              "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n",
          -EBADMSG),
        R("8-bit in reference", "ALLOW /etc/caf\xc3\xa9:1\n", -EBADMSG),
        R("ERR bad-action", "ERR bad-action\n", -EINVAL),
        R("ERR not-a-broker", "ERR not-a-broker\n", -EPERM),
        R("EOF", "", -ECONNRESET),
};

START_TEST(test_explain_strict_reply) {
        const Reply *rep = &bad_explanations[_i];
        credgate_explanation e = { .decision = SENTINEL };
        credgate *c = fake_connect(rep, NULL);

        ck_assert_int_eq(credgate_set_timeout(c, 3000), 0);
        int r = credgate_explain(c, "t.allow", &e);
        ck_assert_msg(r == rep->want, "reply '%s' gave %d (%s), expected %d", rep->name, r, credgate_strerror(r),
                      rep->want);
        ck_assert_msg(e.decision == SENTINEL && !e.ref && !e.message, "reply '%s' wrote the out-parameter", rep->name);
        ck_assert_int_eq(credgate_explain(c, "t.allow", &e), -ENOTCONN);
        conn_close(c);
        fake_stop();
}
END_TEST

START_TEST(test_explain_good_replies) {
        static const Reply replies[] = {
                R("with message", "DENY id:no-bob -- Ask #ops -- or -- not\n", 0),
                R("file ref", "ALLOW /etc/a%20b.conf:12\n", 0),
                R("default", "DENY default\n", 0),
                R("200-byte message", "ALLOW default -- "
                                      "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
                                      "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\n",
                  0),
        };
        for (size_t i = 0; i < ELEMENTSOF(replies); i++) {
                credgate_explanation e = {};
                credgate *c = fake_connect(&replies[i], NULL);
                ck_assert_int_eq(credgate_explain(c, "t.x", &e), 0);
                switch (i) {
                case 0:
                        ck_assert_int_eq(e.decision, CREDGATE_DENY);
                        ck_assert_str_eq(e.ref, "id:no-bob");
                        ck_assert_str_eq(e.message, "Ask #ops -- or -- not");
                        break;
                case 1:
                        ck_assert_int_eq(e.decision, CREDGATE_ALLOW);
                        ck_assert_str_eq(e.ref, "/etc/a%20b.conf:12");
                        ck_assert_ptr_null(e.message);
                        break;
                case 2:
                        ck_assert_int_eq(e.decision, CREDGATE_DENY);
                        ck_assert_str_eq(e.ref, "default");
                        break;
                default:
                        ck_assert_uint_eq(strlen(e.message), 200);
                }
                credgate_explanation_clear(&e);
                ck_assert_ptr_null(e.ref);
                conn_close(c);
                fake_stop();
        }
        credgate_explanation_clear(NULL);
}
END_TEST

/* The fake server itself answers good replies correctly. */
START_TEST(test_fake_server_good_replies) {
        static const Reply allow = R("ALLOW", "ALLOW\n", 0), deny = R("DENY", "DENY\n", 0);
        credgate_decision d = SENTINEL;
        credgate *c = NULL;

        c = fake_connect(&allow, NULL);
        ck_assert_int_eq(credgate_check(c, "t.x", &d), 0);
        ck_assert_int_eq(d, CREDGATE_ALLOW);
        conn_close(c);
        fake_stop();

        c = fake_connect(&deny, NULL);
        ck_assert_int_eq(credgate_check(c, "t.x", &d), 0);
        ck_assert_int_eq(d, CREDGATE_DENY);
        conn_close(c);
        fake_stop();
}
END_TEST

START_TEST(test_unsolicited_reply) {
        /* A second reply line nobody asked for must not answer the next question. */
        static const Reply two = { "DENY then ALLOW", "DENY\nALLOW\n", 11, 0, true };
        credgate_decision d = SENTINEL;
        credgate *c = NULL;

        c = fake_connect(&two, NULL);
        ck_assert_int_eq(credgate_set_timeout(c, 1000), 0);
        int r1 = credgate_check(c, "t.first", &d);
        credgate_decision d1 = d;
        d = SENTINEL;
        int r2 = credgate_check(c, "t.second", &d);
        ck_assert_msg(!(r2 == 0 && d == CREDGATE_ALLOW),
                      "the stale line 'ALLOW' answered a later CHECK (first call: %d, decision %d)", r1, (int) d1);
        conn_close(c);
        fake_stop();
}
END_TEST

/* More replies than requests: refused, not ignored (as the Python module does). */
START_TEST(test_more_replies_than_requests) {
        static const Reply two = { "ALLOW twice", "ALLOW\nALLOW\n", 12, 0, true };
        static const Reply partial = { "ALLOW and a bit", "ALLOW\nA", 7, 0, true };
        static const Reply three = { "three for two", "ALLOW\nALLOW\nALLOW\n", 18, 0, true };
        static const char *const two_actions[] = { "t.a", "t.b" };
        credgate_decision d[2] = { SENTINEL, SENTINEL };
        credgate *c;

        c = fake_connect(&two, NULL);
        ck_assert_int_eq(credgate_check(c, "t.a", d), -EBADMSG);
        ck_assert_int_eq(d[0], SENTINEL);
        ck_assert_int_eq(credgate_ping(c), -ENOTCONN);
        conn_close(c);

        c = fake_connect(&partial, NULL);
        ck_assert_int_eq(credgate_check(c, "t.a", d), -EBADMSG);
        ck_assert_int_eq(d[0], SENTINEL);
        conn_close(c);

        c = fake_connect(&three, NULL);
        ck_assert_int_eq(credgate_check_many(c, two_actions, 2, d), -EBADMSG);
        ck_assert_int_eq(d[0], SENTINEL);
        ck_assert_int_eq(d[1], SENTINEL);
        conn_close(c);

        /* Exactly as many replies, then the daemon closes: a good answer. */
        static const Reply exact = R("ALLOW, DENY, EOF", "ALLOW\nDENY\n", 0);
        c = fake_connect(&exact, NULL);
        ck_assert_int_eq(credgate_check_many(c, two_actions, 2, d), 0);
        ck_assert_int_eq(d[0], CREDGATE_ALLOW);
        ck_assert_int_eq(d[1], CREDGATE_DENY);
        conn_close(c);
        fake_stop();
}
END_TEST

START_TEST(test_not_a_broker_reply) {
        static const Reply nab = R("ERR not-a-broker", "ERR not-a-broker\n", -EPERM);
        credgate_decision d = SENTINEL;
        int sv[2];

        credgate *c = fake_connect(&nab, NULL);
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        ck_assert_int_eq(credgate_check_peer(c, sv[0], "t.allow", &d), -EPERM);
        ck_assert_int_eq(d, SENTINEL);
        ck_assert_int_eq(credgate_ping(c), -ENOTCONN);
        ck_assert_ptr_nonnull(strstr(credgate_strerror(-EPERM), "brokers named in its policy"));
        ck_assert_ptr_nonnull(strstr(credgate_strerror(EPERM), "settings: brokers"));
        close(sv[0]);
        close(sv[1]);
        conn_close(c);
        fake_stop();
}
END_TEST

#ifndef SO_PASSRIGHTS
#define SO_PASSRIGHTS 83 /* Linux 6.16 */
#endif

/*
 * A daemon whose socket takes no descriptors from us (SO_PASSRIGHTS off, as
 * credgated sets it for a client that is not a broker on kernels that have
 * it): the kernel fails our sendmsg() with EPERM, which is the same refusal.
 */
START_TEST(test_check_peer_descriptor_refused_by_kernel) {
        credgate_decision d = SENTINEL;
        int pp[2], sv[2], status, err = -1;

        fake_stop();
        fake_lfd = listen_at(fake_path);
        ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
        fflush(NULL);
        fake_pid = fork();
        ck_assert_int_ge(fake_pid, 0);
        if (fake_pid == 0) {
                int zero = 0, e, fd;
                char buf[256];
                ssize_t k, got = 0;

                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                alarm(20);
                fd = accept(fake_lfd, NULL, NULL);
                if (fd < 0)
                        _exit(1);
                /* Set before the client sends anything: it waits for this byte. */
                e = setsockopt(fd, SOL_SOCKET, SO_PASSRIGHTS, &zero, sizeof(zero)) < 0 ? errno : 0;
                if (write(pp[1], &e, sizeof(e)) != sizeof(e))
                        _exit(1);
                while ((k = read(fd, buf, sizeof(buf))) > 0)
                        got += k;
                _exit(got == 0 ? 0 : 3); /* the refused request never arrives */
        }
        close(pp[1]);
        credgate *c = open_conn(fake_path);
        struct pollfd p = { .fd = pp[0], .events = POLLIN };
        ck_assert_int_eq(poll(&p, 1, 5000), 1);
        ck_assert_int_eq(read(pp[0], &err, sizeof(err)), (ssize_t) sizeof(err));
        close(pp[0]);
        if (err == ENOPROTOOPT) {
                fprintf(stderr, "# SKIP test_check_peer_descriptor_refused_by_kernel: this kernel has no "
                                "SO_PASSRIGHTS (Linux 6.16 and later)\n");
                conn_close(c);
                fake_stop();
                return;
        }
        ck_assert_msg(err == 0, "setsockopt(SO_PASSRIGHTS): %s", strerror(err));

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        int r = credgate_check_peer(c, sv[0], "t.allow", &d);
        ck_assert_msg(r == -EPERM, "credgate_check_peer: %d (%s), want -EPERM", r, credgate_strerror(r));
        ck_assert_int_eq(d, SENTINEL);
        ck_assert_ptr_nonnull(strstr(credgate_strerror(r), "brokers named in its policy"));
        ck_assert_int_eq(credgate_check(c, "t.allow", &d), -ENOTCONN);
        /* The descriptor is still ours. */
        ck_assert_int_ge(fcntl(sv[0], F_GETFD), 0);
        close(sv[0]);
        close(sv[1]);
        conn_close(c);
        ck_assert_int_eq(waitpid(fake_pid, &status, 0), fake_pid);
        fake_pid = -1;
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fake server: wait status 0x%x",
                      (unsigned) status);
        fake_stop();
}
END_TEST

START_TEST(test_never_answers) {
        credgate_decision d = SENTINEL;
        credgate *c = NULL;

        c = fake_connect(NULL, NULL);
        ck_assert_int_eq(credgate_set_timeout(c, 300), 0);
        int64_t t0 = now_ms();
        ck_assert_int_eq(credgate_check(c, "t.allow", &d), -ETIMEDOUT);
        int64_t took = now_ms() - t0;
        ck_assert_msg(took >= 290 && took < 1000, "timed out after %" PRId64 " ms, expected ~300", took);
        ck_assert_int_eq(d, SENTINEL);
        ck_assert_int_eq(credgate_check(c, "t.allow", &d), -ENOTCONN);
        ck_assert_int_eq(credgate_ping(c), -ENOTCONN);
        conn_close(c);
        fake_stop();
}
END_TEST

START_TEST(test_strict_ping_whoami) {
        static const Reply pings[] = {
                R("PONG and a space", "PONG \n", -EBADMSG), R("ALLOW", "ALLOW\n", -EBADMSG),
                R("pong", "pong\n", -EBADMSG),         R("EOF", "", -ECONNRESET),
                R("ERR timeout", "ERR timeout\n", -ETIMEDOUT),
        };
        static const Reply whoamis[] = {
                R("no groups field", "CREDS pid=1 uid=0 gid=0\n", -EBADMSG),
                R("negative pid", "CREDS pid=-1 uid=0 gid=0 groups=\n", -EBADMSG),
                R("uid too big", "CREDS pid=1 uid=4294967296 gid=0 groups=\n", -EBADMSG),
                R("trailing comma", "CREDS pid=1 uid=0 gid=0 groups=1,\n", -EBADMSG),
                R("trailing space", "CREDS pid=1 uid=0 gid=0 groups=1 \n", -EBADMSG),
                R("ALLOW", "ALLOW\n", -EBADMSG),
                R("EOF", "", -ECONNRESET),
        };
        credgate *c = NULL;
        credgate_creds cr;

        for (size_t i = 0; i < ELEMENTSOF(pings); i++) {
                c = fake_connect(&pings[i], NULL);
                int r = credgate_ping(c);
                ck_assert_msg(r == pings[i].want, "ping, reply '%s': %d", pings[i].name, r);
                ck_assert_int_eq(credgate_ping(c), -ENOTCONN);
                conn_close(c);
                fake_stop();
        }
        for (size_t i = 0; i < ELEMENTSOF(whoamis); i++) {
                credgate_creds sentinel;
                memset(&sentinel, 0xa5, sizeof(sentinel));
                cr = sentinel;
                c = fake_connect(&whoamis[i], NULL);
                int r = credgate_whoami(c, &cr);
                ck_assert_msg(r == whoamis[i].want, "whoami, reply '%s': %d", whoamis[i].name, r);
                ck_assert_mem_eq(&cr, &sentinel, sizeof(cr));
                ck_assert_int_eq(credgate_ping(c), -ENOTCONN);
                conn_close(c);
                fake_stop();
        }

        /* And a good CREDS line parses, large ids included. */
        static const Reply good = R("good", "CREDS pid=42 uid=4294967294 gid=7 groups=4,50,4000000000\n", 0);
        c = fake_connect(&good, NULL);
        ck_assert_int_eq(credgate_whoami(c, &cr), 0);
        ck_assert_int_eq(cr.pid, 42);
        ck_assert_uint_eq(cr.uid, 4294967294u);
        ck_assert_uint_eq(cr.gid, 7);
        ck_assert_uint_eq(cr.n_groups, 3);
        ck_assert_uint_eq(cr.groups[2], 4000000000u);
        credgate_creds_clear(&cr);
        conn_close(c);
        fake_stop();
}
END_TEST

/* ------------------------------------------------------------------------- */
/* Heap bounds, without valgrind: glibc's checking malloc in a re-executed child */

static char self_exe[4096];

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_ASAN 1
#endif
#endif

/*
 * Child mode ("--malloc-check SOCKET"): with libc_malloc_debug preloaded and
 * MALLOC_CHECK_=3, glibc puts a check byte right after every block and
 * aborts in free() when a write ran past the end. Run each kind of request.
 * Exit: 0, 77 when the checking malloc is not active, 1 on an API error.
 */
static int malloc_check_child(const char *sock) {
        static const char *const batch[] = { "t.allow", "t.deny", "t.self" };
        credgate_decision d, many[3];
        credgate_creds cr = {};
        credgate *c = NULL;
        char line[4096];
        bool active = false;
        int sv[2];

        FILE *f = fopen("/proc/self/maps", "re");
        while (f && fgets(line, sizeof(line), f))
                active = active || strstr(line, "libc_malloc_debug");
        if (f)
                fclose(f);
        if (!active)
                return 77;
        if (credgate_check_once(sock, "t.allow", &d) < 0 || credgate_open(sock, &c) < 0 ||
            credgate_check(c, "t.allow", &d) < 0 || credgate_check_many(c, batch, 3, many) < 0 ||
            credgate_whoami(c, &cr) < 0 || credgate_ping(c) < 0 ||
            socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || credgate_check_peer(c, sv[0], "t.self", &d) < 0)
                return 1;
        credgate_creds_clear(&cr);
        credgate_close(c);
        return 0;
}

START_TEST(test_heap_bounds) {
#ifdef HAVE_ASAN
        fprintf(stderr, "# test_heap_bounds: built with AddressSanitizer, which checks bounds itself\n");
        return;
#endif
        int status = 0;

        fflush(NULL);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                setenv("LD_PRELOAD", "libc_malloc_debug.so.0", 1);
                setenv("MALLOC_CHECK_", "3", 1);
                execl(self_exe, self_exe, "--malloc-check", sock_path, (char *) NULL);
                _exit(127);
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
                fprintf(stderr, "# test_heap_bounds: libc_malloc_debug.so.0 could not be preloaded; not checked\n");
                return;
        }
        ck_assert_msg(!WIFSIGNALED(status),
                      "heap corruption: the checking malloc killed the child with signal %d (a write past the end of "
                      "a block; run under valgrind to see where)",
                      WTERMSIG(status));
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed: exit status %d",
                      WEXITSTATUS(status));
}
END_TEST

/* ------------------------------------------------------------------------- */
/* credgate_strerror() */

START_TEST(test_strerror) {
        static const int codes[] = {
                0,          ENOENT, ECONNREFUSED, ETIMEDOUT, ENAMETOOLONG, ENOMEM, EINVAL, EBADF, ENOTCONN,
                ECONNRESET, EBADMSG, EPROTO, EPERM, ENODATA, EUSERS, EPIPE, EACCES, 99999, INT32_MAX,
        };
        for (size_t i = 0; i < ELEMENTSOF(codes); i++)
                for (int sign = -1; sign <= 1; sign += 2) {
                        const char *s = credgate_strerror(sign * codes[i]);
                        ck_assert_msg(s && *s, "credgate_strerror(%d) is empty", sign * codes[i]);
                }
        ck_assert_ptr_nonnull(credgate_strerror(INT32_MIN));
        ck_assert_str_ne(credgate_strerror(-ENOENT), credgate_strerror(-ETIMEDOUT));
        ck_assert_str_ne(credgate_strerror(-EBADMSG), credgate_strerror(-ENOENT));
        /* Every code the library maps an ERR reason to has a text of its own. */
        ck_assert_str_ne(credgate_strerror(-EPERM), credgate_strerror(-ENODATA));
        ck_assert_str_ne(credgate_strerror(-ENODATA), strerror(ENODATA));
        ck_assert_str_ne(credgate_strerror(-EPERM), strerror(EPERM));
}
END_TEST

/* ------------------------------------------------------------------------- */
/* As root: a client of another identity, and the broker query for it */

enum { CHILD_OK = 0, CHILD_SETGROUPS = 10, CHILD_SETGID, CHILD_SETUID, CHILD_CONNECT, CHILD_ONCE };

START_TEST(test_root_check_peer_other_identity) {
        static const gid_t groups[] = { 100 };
        credgate_creds cr = {};
        credgate *c;
        int lfd = listen_at(service_path);

        fflush(NULL);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                credgate_decision d = SENTINEL;
                close(lfd);
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                alarm(20);
                if (setgroups(ELEMENTSOF(groups), groups) < 0)
                        _exit(CHILD_SETGROUPS);
                if (setgid(1000) < 0)
                        _exit(CHILD_SETGID);
                if (setuid(1000) < 0)
                        _exit(CHILD_SETUID);
                int fd = connect_to(service_path);
                if (fd < 0)
                        _exit(CHILD_CONNECT);
                /* The child asks for itself too, through the library. */
                if (credgate_check_once(sock_path, "t.u1000", &d) < 0 || d != CREDGATE_ALLOW)
                        _exit(CHILD_ONCE);
                char b;
                while (read(fd, &b, 1) > 0)
                        ;
                _exit(CHILD_OK);
        }

        /* Opened after the fork: the child must not inherit the connection. */
        c = open_daemon();
        int afd = accept_within(lfd);
        ck_assert_int_eq(credgate_peer_creds(afd, &cr), 0);
        ck_assert_int_eq(cr.pid, pid);
        ck_assert_uint_eq(cr.uid, 1000);
        ck_assert_uint_eq(cr.gid, 1000);
        ck_assert_uint_eq(cr.n_groups, 1);
        ck_assert_uint_eq(cr.groups[0], 100);
        credgate_creds_clear(&cr);

        /* The decision for the client, not for us (root). */
        credgate_decision d = SENTINEL;
        ck_assert_int_eq(credgate_check_peer(c, afd, "t.u1000", &d), 0);
        ck_assert_int_eq(d, CREDGATE_ALLOW);
        ck_assert_int_eq(check_ok(c, "t.u1000"), CREDGATE_DENY);
        ck_assert_int_eq(credgate_check_peer(c, afd, "t.root", &d), 0);
        ck_assert_int_eq(d, CREDGATE_DENY);
        ck_assert_int_eq(check_ok(c, "t.root"), CREDGATE_ALLOW);
        ck_assert_int_eq(credgate_check_peer(c, afd, "t.group100", &d), 0);
        ck_assert_int_eq(d, CREDGATE_ALLOW);
        ck_assert_int_eq(credgate_check_peer(c, afd, "t.self", &d), 0);
        ck_assert_int_eq(d, CREDGATE_DENY);

        close(afd);
        int status = 0;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == CHILD_OK, "client child failed: wait status 0x%x",
                      (unsigned) status);
        conn_close(c);
        close(lfd);
        unlink(service_path);
}
END_TEST

/* ------------------------------------------------------------------------- */

static TCase *new_tcase(const char *name, bool with_daemon) {
        TCase *tc = tcase_create(name);
        tcase_add_checked_fixture(tc, NULL, test_cleanup);
        if (with_daemon)
                tcase_add_unchecked_fixture(tc, daemon_setup, daemon_teardown);
        else
                tcase_add_unchecked_fixture(tc, dir_setup, dir_teardown);
        tcase_set_timeout(tc, 30);
        return tc;
}

static Suite *libcredgate_suite(void) {
        Suite *s = suite_create("libcredgate");
        TCase *tc;

        tc = new_tcase("daemon", true);
        tcase_add_test(tc, test_check_once);
        tcase_add_test(tc, test_env_socket);
        tcase_add_test(tc, test_no_daemon);
        tcase_add_test(tc, test_connection);
        tcase_add_test(tc, test_set_timeout);
        tcase_add_test(tc, test_check_many);
        tcase_add_test(tc, test_check_many_backpressure);
        tcase_add_test(tc, test_explain_daemon);
        tcase_add_test(tc, test_bad_actions);
        tcase_add_test(tc, test_heap_bounds);
        suite_add_tcase(s, tc);

        tc = new_tcase("broker", true);
        tcase_add_test(tc, test_peer_creds_socketpair);
        tcase_add_test(tc, test_peer_creds_accepted);
        tcase_add_test(tc, test_check_peer_socketpair);
        tcase_add_test(tc, test_explain_peer_socketpair);
        tcase_add_test(tc, test_check_peer_listening);
        suite_add_tcase(s, tc);

        /* The fake server needs no daemon, only the folder. */
        tc = new_tcase("strict", false);
        tcase_add_test(tc, test_fake_server_good_replies);
        tcase_add_loop_test(tc, test_strict_reply, 0, (int) (ELEMENTSOF(bad_replies) * _CALL_MAX));
        tcase_add_loop_test(tc, test_explain_strict_reply, 0, (int) ELEMENTSOF(bad_explanations));
        tcase_add_test(tc, test_explain_good_replies);
        tcase_add_test(tc, test_unsolicited_reply);
        tcase_add_test(tc, test_more_replies_than_requests);
        tcase_add_test(tc, test_not_a_broker_reply);
        tcase_add_test(tc, test_check_peer_descriptor_refused_by_kernel);
        tcase_add_test(tc, test_never_answers);
        tcase_add_test(tc, test_strict_ping_whoami);
        tcase_add_test(tc, test_strerror);
        suite_add_tcase(s, tc);

        if (geteuid() == 0) {
                tc = new_tcase("root", true);
                tcase_add_test(tc, test_root_check_peer_other_identity);
                suite_add_tcase(s, tc);
        } else
                fprintf(stderr, "# test-libcredgate: not root: skipping the broker case with a uid 1000 client\n");
        return s;
}

int main(int argc, char **argv) {
        if (argc == 3 && strcmp(argv[1], "--malloc-check") == 0)
                return malloc_check_child(argv[2]);
        ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
        if (n <= 0) {
                printf("Bail out! cannot read /proc/self/exe: %s\n", strerror(errno));
                return EXIT_FAILURE;
        }
        self_exe[n] = '\0';

        credgated_path = getenv("CREDGATED");
        if (!credgated_path || !*credgated_path) {
                /* Not a silent skip: this test needs the daemon. */
                printf("Bail out! $CREDGATED is not set (run through 'make check', or set it to the built credgated)\n");
                return EXIT_FAILURE;
        }
        if (access(credgated_path, X_OK) < 0) {
                printf("Bail out! $CREDGATED: '%s' is not executable\n", credgated_path);
                return EXIT_FAILURE;
        }
        /* Tests set it themselves; an inherited one must not change their meaning. */
        unsetenv("CREDGATE_SOCKET");
        memset(too_long, 'a', CREDGATE_ACTION_MAX + 1);
        too_long[CREDGATE_ACTION_MAX + 1] = '\0';
        return test_run(libcredgate_suite());
}
