/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Peer credentials (peercred.c) with real sockets and real processes: a
 * listening socket in a temporary folder, forked children that connect to
 * it, and, as root, children that change their groups, gid and uid before
 * connecting. No mocks: what is tested is what the kernel reports.
 *
 * The identity-changing cases need root. Without it they are not
 * registered, and main() says so on stderr.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "peercred.h"
#include "testutil.h"

/* Exit codes of a client child that failed before or while connecting. */
enum {
        CHILD_OK = 0,
        CHILD_SETGROUPS = 10,
        CHILD_SETGID,
        CHILD_SETUID,
        CHILD_VERIFY,
        CHILD_SOCKET,
        CHILD_CONNECT,
        CHILD_CHANGE_AFTER,
};

/*
 * One base folder per TCase, made and removed by the runner process (an
 * unchecked fixture), so that it goes away even when a test fails; each
 * test listens in a fresh folder inside it.
 */
static char base[] = "/tmp/credgate-peercred-XXXXXX";
static char dir[sizeof(base) + 16];
static char path[sizeof(dir) + 16];
static int listen_fd = -1;
/* What the last read gave; the teardown frees it, also after a failed assertion. */
static PeerCreds creds;

static int rm_one(const char *p, const struct stat *st, int type, struct FTW *ftw) {
        return remove(p) < 0 ? -1 : 0;
}

static void base_setup(void) {
        strcpy(base, "/tmp/credgate-peercred-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(base));
        ck_assert_int_eq(chmod(base, 0755), 0);
}

static void base_teardown(void) {
        (void) nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        snprintf(dir, sizeof(dir), "%s/t-XXXXXX", base);
        ck_assert_ptr_nonnull(mkdtemp(dir));
        /* Children that dropped root must reach the socket. */
        ck_assert_int_eq(chmod(dir, 0755), 0);
        snprintf(path, sizeof(path), "%s/sock", dir);
        strcpy(sa.sun_path, path);
        listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(listen_fd, 0);
        ck_assert_int_eq(bind(listen_fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        ck_assert_int_eq(chmod(path, 0666), 0);
        ck_assert_int_eq(listen(listen_fd, 16), 0);
}

static void teardown(void) {
        peer_creds_done(&creds);
        if (listen_fd >= 0)
                close(listen_fd);
        listen_fd = -1;
        (void) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The identity a child takes before it connects; NULL keeps the parent's. */
typedef struct Identity {
        const gid_t *groups;
        size_t n_groups;
        gid_t gid;
        uid_t uid;
        bool change_after; /* connect first, then become uid 1000 */
} Identity;

/* In the child: become @id, connect, wait until the parent hangs up. Never returns. */
_Noreturn static void child_run(const Identity *id) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        close(listen_fd);
        if (id && !id->change_after) {
                if (setgroups(id->n_groups, id->groups) < 0)
                        _exit(CHILD_SETGROUPS);
                if (setgid(id->gid) < 0)
                        _exit(CHILD_SETGID);
                if (setuid(id->uid) < 0)
                        _exit(CHILD_SETUID);
                if (getuid() != id->uid || geteuid() != id->uid || getgid() != id->gid || getegid() != id->gid)
                        _exit(CHILD_VERIFY);
        }
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                _exit(CHILD_SOCKET);
        strcpy(sa.sun_path, path);
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                _exit(CHILD_CONNECT);
        if (id && id->change_after) {
                /* The kernel recorded who connected; this must not change it. */
                gid_t g = 1000;
                if (setgroups(1, &g) < 0 || setgid(1000) < 0 || setuid(1000) < 0)
                        _exit(CHILD_CHANGE_AFTER);
        }
        char c;
        while (read(fd, &c, 1) > 0)
                ;
        _exit(CHILD_OK);
}

/* Wait for @pid and assert it exited with CHILD_OK. */
static void reap(pid_t pid) {
        int status = 0;

        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status), "client child killed by signal %d", WTERMSIG(status));
        ck_assert_msg(WEXITSTATUS(status) == CHILD_OK, "client child failed with exit code %d",
                      WEXITSTATUS(status));
}

/* Accept the next connection, waiting at most 5 s; on timeout fail with the child's status. */
static int accept_from(pid_t pid) {
        struct pollfd p = { .fd = listen_fd, .events = POLLIN };

        if (poll(&p, 1, 5000) != 1) {
                int status = 0;
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                ck_abort_msg("client child never connected (exit code %d)",
                             WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        }
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        return fd;
}

/* Fork a child that becomes @id and connects; read its credentials into creds. */
static pid_t creds_of_child(const Identity *id) {
        peer_creds_done(&creds);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0)
                child_run(id);
        int fd = accept_from(pid);
        int r = peer_creds_read(fd, &creds);
        close(fd);
        reap(pid);
        ck_assert_msg(r == 0, "peer_creds_read: %s", strerror(-r));
        return pid;
}

/* Assert that @c lists exactly @want (sorted ascending, no duplicates). */
static void assert_groups(const PeerCreds *c, const gid_t *want, size_t n) {
        ck_assert_uint_eq(c->n_groups, n);
        if (n > 0)
                ck_assert_ptr_nonnull(c->groups);
        for (size_t i = 0; i < n; i++)
                ck_assert_msg(c->groups[i] == want[i], "groups[%zu] = %u, expected %u", i, (unsigned) c->groups[i],
                              (unsigned) want[i]);
}

static int cmp_gid(const void *a, const void *b) {
        gid_t x = *(const gid_t *) a, y = *(const gid_t *) b;
        return x < y ? -1 : x > y;
}

/* Sort @g and drop duplicates; return the new count. */
static size_t sort_unique(gid_t *g, size_t n) {
        size_t k = 0;

        qsort(g, n, sizeof(gid_t), cmp_gid);
        for (size_t i = 0; i < n; i++)
                if (k == 0 || g[i] != g[k - 1])
                        g[k++] = g[i];
        return k;
}

/* ------------------------------------------------------------------------- */
/* A real connection, without changing identity */

START_TEST(test_child_creds) {
        static gid_t want[65536];
        int n = getgroups((int) ELEMENTSOF(want), want);

        ck_assert_int_ge(n, 0);
        size_t nw = sort_unique(want, (size_t) n);
        pid_t pid = creds_of_child(NULL);
        ck_assert_int_eq(creds.pid, pid);
        ck_assert_int_ne(creds.pid, getpid());
        ck_assert_uint_eq(creds.uid, geteuid());
        ck_assert_uint_eq(creds.gid, getegid());
        assert_groups(&creds, want, nw);
        peer_creds_done(&creds);
        ck_assert_ptr_null(creds.groups);
        ck_assert_uint_eq(creds.n_groups, 0);
}
END_TEST

START_TEST(test_child_gone_before_accept) {
        /* The credentials are those recorded at connect(), also once the client exited. */
        pid_t pid = fork();

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                int fd = socket(AF_UNIX, SOCK_STREAM, 0);
                strcpy(sa.sun_path, path);
                _exit(fd >= 0 && connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0 ? CHILD_OK : CHILD_CONNECT);
        }
        reap(pid);
        int fd = accept_from(pid);
        ck_assert_int_eq(peer_creds_read(fd, &creds), 0);
        ck_assert_int_eq(creds.pid, pid);
        ck_assert_uint_eq(creds.uid, geteuid());
        ck_assert_uint_eq(creds.gid, getegid());
        peer_creds_done(&creds);
        close(fd);
}
END_TEST

START_TEST(test_both_ends) {
        /* The client side of the same connection sees the listener's process (us). */
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(fd, 0);
        strcpy(sa.sun_path, path);
        ck_assert_int_eq(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        int afd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        ck_assert_int_ge(afd, 0);
        ck_assert_int_eq(peer_creds_read(fd, &creds), 0);
        ck_assert_int_eq(creds.pid, getpid());
        ck_assert_uint_eq(creds.uid, geteuid());
        peer_creds_done(&creds);
        ck_assert_int_eq(peer_creds_read(afd, &creds), 0);
        ck_assert_int_eq(creds.pid, getpid());
        peer_creds_done(&creds);
        close(fd);
        close(afd);
}
END_TEST

START_TEST(test_socketpair) {
        int sv[2];

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        ck_assert_int_eq(peer_creds_read(sv[0], &creds), 0);
        ck_assert_int_eq(creds.pid, getpid());
        ck_assert_uint_eq(creds.uid, geteuid());
        ck_assert_uint_eq(creds.gid, getegid());
        peer_creds_done(&creds);
        close(sv[0]);
        close(sv[1]);
}
END_TEST

START_TEST(test_done) {
        PeerCreds c = {};
        peer_creds_done(&c);
        peer_creds_done(NULL);
        c.groups = malloc(3 * sizeof(gid_t));
        c.n_groups = 3;
        peer_creds_done(&c);
        ck_assert_ptr_null(c.groups);
        ck_assert_uint_eq(c.n_groups, 0);
        peer_creds_done(&c);
}
END_TEST

/* ------------------------------------------------------------------------- */
/* No connected peer: an error, never an identity */

/* peer_creds_read(@fd) must fail and leave *ret untouched. */
static int creds_fail(int fd) {
        PeerCreds c, sentinel;

        memset(&sentinel, 0xa5, sizeof(sentinel));
        c = sentinel;
        int r = peer_creds_read(fd, &c);
        if (r >= 0) {
                PeerCreds got = c;
                peer_creds_done(&c);
                ck_abort_msg("fd %d gave an identity: pid=%d uid=%u gid=%u n_groups=%zu", fd, (int) got.pid,
                             (unsigned) got.uid, (unsigned) got.gid, got.n_groups);
        }
        ck_assert_mem_eq(&c, &sentinel, sizeof(c));
        return r;
}

START_TEST(test_creds_unconnected) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(creds_fail(fd), -ENOTCONN);
        close(fd);
}
END_TEST

START_TEST(test_creds_bound_unconnected) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(fd, 0);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/bound", dir);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        ck_assert_int_eq(creds_fail(fd), -ENOTCONN);
        close(fd);
        unlink(sa.sun_path);
}
END_TEST

START_TEST(test_creds_listening) {
        /* A listening socket has no peer; the kernel reports whoever called
         * listen(), which must not come back as a client identity. */
        creds_fail(listen_fd);
}
END_TEST

START_TEST(test_creds_not_socket) {
        int p[2];

        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        ck_assert_int_eq(creds_fail(p[0]), -ENOTSOCK);
        close(p[0]);
        close(p[1]);
        ck_assert_int_eq(creds_fail(p[0]), -EBADF);
}
END_TEST

START_TEST(test_creds_datagram_unconnected) {
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        creds_fail(fd);
        close(fd);
}
END_TEST

/* ------------------------------------------------------------------------- */
/* peer_check_connected_stream() */

START_TEST(test_check_connected) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int sv[2], fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(fd, 0);
        strcpy(sa.sun_path, path);
        ck_assert_int_eq(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        int afd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        ck_assert_int_ge(afd, 0);
        ck_assert_int_eq(peer_check_connected_stream(afd), 0);
        ck_assert_int_eq(peer_check_connected_stream(fd), 0);
        close(fd);
        close(afd);

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        ck_assert_int_eq(peer_check_connected_stream(sv[0]), 0);
        ck_assert_int_eq(peer_check_connected_stream(sv[1]), 0);
        close(sv[0]);
        close(sv[1]);
}
END_TEST

START_TEST(test_check_unconnected) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(peer_check_connected_stream(fd), -ENOTCONN);
        close(fd);
}
END_TEST

START_TEST(test_check_listening) {
        ck_assert_int_eq(peer_check_connected_stream(listen_fd), -EINVAL);
}
END_TEST

START_TEST(test_check_datagram) {
        int sv[2];

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
        ck_assert_int_eq(peer_check_connected_stream(sv[0]), -EPROTOTYPE);
        close(sv[0]);
        close(sv[1]);
}
END_TEST

START_TEST(test_check_seqpacket) {
        int sv[2];

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        ck_assert_int_eq(peer_check_connected_stream(sv[0]), -EPROTOTYPE);
        close(sv[0]);
        close(sv[1]);
}
END_TEST

START_TEST(test_check_pipe_and_file) {
        int p[2];

        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        ck_assert_int_eq(peer_check_connected_stream(p[0]), -ENOTSOCK);
        ck_assert_int_eq(peer_check_connected_stream(p[1]), -ENOTSOCK);
        close(p[0]);
        close(p[1]);

        char *f = test_write_tmp("not a socket\n");
        int fd = open(f, O_RDONLY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(peer_check_connected_stream(fd), -ENOTSOCK);
        close(fd);
        unlink(f);
        free(f);

        ck_assert_int_eq(peer_check_connected_stream(fd), -EBADF);
        ck_assert_int_eq(peer_check_connected_stream(-1), -EBADF);
}
END_TEST

START_TEST(test_check_inet) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(peer_check_connected_stream(fd), -EAFNOSUPPORT);
        close(fd);

        fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
                ck_assert_int_eq(peer_check_connected_stream(fd), -EAFNOSUPPORT);
                close(fd);
        }
}
END_TEST

START_TEST(test_check_inet_connected) {
        /* A connected TCP stream over loopback is connected and a stream, but not AF_UNIX. */
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof(sa);
        int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(l, 0);
        ck_assert_int_eq(bind(l, (struct sockaddr *) &sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(l, 1), 0);
        ck_assert_int_eq(getsockname(l, (struct sockaddr *) &sa, &sl), 0);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        int afd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        ck_assert_int_ge(afd, 0);
        ck_assert_int_eq(peer_check_connected_stream(fd), -EAFNOSUPPORT);
        ck_assert_int_eq(peer_check_connected_stream(afd), -EAFNOSUPPORT);
        ck_assert_int_eq(peer_check_connected_stream(l), -EAFNOSUPPORT);
        close(afd);
        close(fd);
        close(l);
}
END_TEST

/* ------------------------------------------------------------------------- */
/* As root: children that change identity before connecting */

START_TEST(test_root_groups_sorted_unique) {
        static const gid_t set[] = { 100, 4, 50, 4 }, want[] = { 4, 50, 100 };
        Identity id = { .groups = set, .n_groups = ELEMENTSOF(set), .gid = 1000, .uid = 1000 };

        pid_t pid = creds_of_child(&id);
        ck_assert_int_eq(creds.pid, pid);
        ck_assert_uint_eq(creds.uid, 1000);
        ck_assert_uint_eq(creds.gid, 1000);
        assert_groups(&creds, want, ELEMENTSOF(want));
        peer_creds_done(&creds);
}
END_TEST

START_TEST(test_root_no_groups) {
        Identity id = { .groups = NULL, .n_groups = 0, .gid = 65534, .uid = 65534 };

        pid_t pid = creds_of_child(&id);
        ck_assert_int_eq(creds.pid, pid);
        ck_assert_uint_eq(creds.uid, 65534);
        ck_assert_uint_eq(creds.gid, 65534);
        ck_assert_uint_eq(creds.n_groups, 0);
        peer_creds_done(&creds);
}
END_TEST

START_TEST(test_root_primary_not_in_groups) {
        /* The primary gid is reported as gid only; groups is exactly the kernel's list. */
        static const gid_t set[] = { 27 };
        Identity id = { .groups = set, .n_groups = 1, .gid = 1000, .uid = 1000 };

        pid_t pid = creds_of_child(&id);
        ck_assert_int_eq(creds.pid, pid);
        ck_assert_uint_eq(creds.gid, 1000);
        assert_groups(&creds, set, 1);
        peer_creds_done(&creds);
}
END_TEST

/*
 * A child whose kernel group list holds @n distinct groups, given in
 * descending order, with every fifth one repeated when @dups (the kernel
 * sorts the list but keeps repeats, so they count towards its size).
 */
static void many_groups(size_t n, bool dups) {
        static gid_t set[2 * 300], want[300];
        size_t k = 0;

        ck_assert_uint_le(n, ELEMENTSOF(want));
        for (size_t i = 0; i < n; i++) {
                set[k++] = (gid_t) (200000 + 7 * (n - i));
                if (dups && i % 5 == 0)
                        set[k++] = (gid_t) (200000 + 7 * (n - i));
                want[i] = (gid_t) (200000 + 7 * (i + 1));
        }
        Identity id = { .groups = set, .n_groups = k, .gid = 1000, .uid = 1000 };
        pid_t pid = creds_of_child(&id);
        ck_assert_int_eq(creds.pid, pid);
        ck_assert_uint_eq(creds.uid, 1000);
        assert_groups(&creds, want, n);
}

/* peer_creds_read() starts with room for 64 groups; more takes the ERANGE retry. */
START_TEST(test_root_64_groups) {
        many_groups(64, false);
}
END_TEST

START_TEST(test_root_65_groups) {
        many_groups(65, false);
}
END_TEST

START_TEST(test_root_300_groups) {
        many_groups(300, true);
}
END_TEST

START_TEST(test_root_ids_2_31) {
        static const gid_t set[] = { 4294967294u, 2147483648u, 2147483647u, 2147483648u },
                           want[] = { 2147483647u, 2147483648u, 4294967294u };
        Identity id = { .groups = set, .n_groups = ELEMENTSOF(set), .gid = 2147483648u, .uid = 2147483648u };

        pid_t pid = creds_of_child(&id);
        ck_assert_int_eq(creds.pid, pid);
        ck_assert_uint_eq(creds.uid, 2147483648u);
        ck_assert_uint_eq(creds.gid, 2147483648u);
        assert_groups(&creds, want, ELEMENTSOF(want));
        peer_creds_done(&creds);

        id = (Identity){ .groups = set, .n_groups = 1, .gid = 2147483647u, .uid = 2147483647u };
        pid = creds_of_child(&id);
        ck_assert_int_eq(creds.pid, pid);
        ck_assert_uint_eq(creds.uid, 2147483647u);
        ck_assert_uint_eq(creds.gid, 2147483647u);
        peer_creds_done(&creds);
}
END_TEST

START_TEST(test_root_ids_max) {
        /* 4294967294 is the largest valid id; (uid_t)-1 is reserved. */
        static const gid_t set[] = { 4294967294u };
        Identity id = { .groups = set, .n_groups = 1, .gid = 4294967294u, .uid = 4294967294u };

        pid_t pid = creds_of_child(&id);
        ck_assert_int_eq(creds.pid, pid);
        ck_assert_uint_eq(creds.uid, 4294967294u);
        ck_assert_uint_eq(creds.gid, 4294967294u);
        assert_groups(&creds, set, 1);
        peer_creds_done(&creds);
}
END_TEST

START_TEST(test_root_connect_time_identity) {
        /* A client that drops to uid 1000 after connect() is still root to us. */
        Identity id = { .change_after = true };
        pid_t pid;

        ck_assert_uint_eq(geteuid(), 0);
        pid = creds_of_child(&id);
        ck_assert_int_eq(creds.pid, pid);
        ck_assert_uint_eq(creds.uid, 0);
        ck_assert_uint_eq(creds.gid, getegid());
        peer_creds_done(&creds);
}
END_TEST

static Suite *peercred_suite(void) {
        Suite *s = suite_create("peercred");
        TCase *tc;

        tc = tcase_create("connected");
        tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_child_creds);
        tcase_add_test(tc, test_child_gone_before_accept);
        tcase_add_test(tc, test_both_ends);
        tcase_add_test(tc, test_socketpair);
        tcase_add_test(tc, test_done);
        suite_add_tcase(s, tc);

        tc = tcase_create("no-peer");
        tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_creds_unconnected);
        tcase_add_test(tc, test_creds_bound_unconnected);
        tcase_add_test(tc, test_creds_listening);
        tcase_add_test(tc, test_creds_not_socket);
        tcase_add_test(tc, test_creds_datagram_unconnected);
        suite_add_tcase(s, tc);

        tc = tcase_create("check-connected-stream");
        tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_check_connected);
        tcase_add_test(tc, test_check_unconnected);
        tcase_add_test(tc, test_check_listening);
        tcase_add_test(tc, test_check_datagram);
        tcase_add_test(tc, test_check_seqpacket);
        tcase_add_test(tc, test_check_pipe_and_file);
        tcase_add_test(tc, test_check_inet);
        tcase_add_test(tc, test_check_inet_connected);
        suite_add_tcase(s, tc);

        if (geteuid() == 0) {
                tc = tcase_create("root-identities");
                tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
        tcase_add_checked_fixture(tc, setup, teardown);
                tcase_add_test(tc, test_root_groups_sorted_unique);
                tcase_add_test(tc, test_root_no_groups);
                tcase_add_test(tc, test_root_primary_not_in_groups);
                tcase_add_test(tc, test_root_64_groups);
                tcase_add_test(tc, test_root_65_groups);
                tcase_add_test(tc, test_root_300_groups);
                tcase_add_test(tc, test_root_ids_2_31);
                tcase_add_test(tc, test_root_ids_max);
                tcase_add_test(tc, test_root_connect_time_identity);
                suite_add_tcase(s, tc);
        } else
                fprintf(stderr, "NOTE: not root: the 9 identity-changing peercred tests (TCase root-identities) "
                                "are NOT run\n");

        return s;
}

int main(void) {
        return test_run(peercred_suite());
}
