/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Listening sockets (listen.c): standalone binding in a temporary folder
 * (mode, parent folder and whether it is trusted, stale and live sockets,
 * files that must be left alone, no mode set through a path, over-long
 * paths) and socket activation with real fds at 3, 4, ...
 *
 * Socket activation takes fds 3 and up, which the test runner may be using,
 * so every activation case runs in a forked child that reports back through
 * a pipe; the same goes for calls that might block.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "listen.h"
#include "macro.h"
#include "testutil.h"

/*
 * One base folder per TCase, made and removed by the runner process (an
 * unchecked fixture), so that it goes away even when a test fails; each
 * test gets a fresh folder inside it.
 */
static char base[] = "/tmp/credgate-listen-XXXXXX";
static char dir[sizeof(base) + 16];
static mode_t saved_umask;

static int rm_one(const char *p, const struct stat *st, int type, struct FTW *ftw) {
        return remove(p) < 0 ? -1 : 0;
}

static void base_setup(void) {
        strcpy(base, "/tmp/credgate-listen-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(base));
}

static void base_teardown(void) {
        (void) nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup(void) {
        snprintf(dir, sizeof(dir), "%s/t-XXXXXX", base);
        ck_assert_ptr_nonnull(mkdtemp(dir));
        saved_umask = umask(022);
}

static void teardown(void) {
        umask(saved_umask);
        (void) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* dir + "/" + @name, in one of 16 rotating static buffers. */
static const char *at(const char *name) {
        static char buf[16][512];
        static unsigned k;
        k = (k + 1) % ELEMENTSOF(buf);
        snprintf(buf[k], sizeof(buf[k]), "%s/%s", dir, name);
        return buf[k];
}

/*
 * chmod(), as listen.c would call it: this definition in the executable
 * takes the place of libc's. When armed for a path, it first replaces that
 * path with a symlink to a victim file, as another user who can write the
 * folder could between bind() and chmod(), then does the real chmod(),
 * which follows the link. Proves that no mode is set through a path.
 */
static struct {
        const char *path, *victim;
        unsigned calls;
} chmod_race;

int chmod(const char *path, mode_t mode) {
        if (chmod_race.path && strcmp(path, chmod_race.path) == 0) {
                chmod_race.calls++;
                (void) unlink(path);
                (void) rmdir(path);
                if (symlink(chmod_race.victim, path) < 0)
                        return -1;
        }
        return (int) syscall(SYS_fchmodat, AT_FDCWD, path, mode);
}

static socklen_t make_sa(struct sockaddr_un *sa, const char *path) {
        *sa = (struct sockaddr_un){ .sun_family = AF_UNIX };
        ck_assert_uint_lt(strlen(path), sizeof(sa->sun_path));
        strcpy(sa->sun_path, path);
        return (socklen_t) sizeof(*sa);
}

/* A Unix socket of @type bound at @path, listening when @backlog >= 0; -1 on failure.
 * Asserts nothing, so forked children may use it. */
static int bind_raw(const char *path, int type, int backlog) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        if (strlen(path) >= sizeof(sa.sun_path))
                return -1;
        strcpy(sa.sun_path, path);
        int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -1;
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || (backlog >= 0 && listen(fd, backlog) < 0)) {
                close(fd);
                return -1;
        }
        return fd;
}

static int bind_at(const char *path, int type, int backlog) {
        int fd = bind_raw(path, type, backlog);
        ck_assert_msg(fd >= 0, "cannot bind '%s': %s", path, strerror(errno));
        return fd;
}

/* connect() to @path; return 0 or -errno. The connected fd goes to *ret_fd (or is closed). */
static int connect_to(const char *path, int *ret_fd) {
        struct sockaddr_un sa;
        socklen_t l = make_sa(&sa, path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

        ck_assert_int_ge(fd, 0);
        int r = connect(fd, (struct sockaddr *) &sa, l) < 0 ? -errno : 0;
        if (r == 0 && ret_fd)
                *ret_fd = fd;
        else
                close(fd);
        return r;
}

/* Assert that a client can connect to @path and that listener @lfd gets it. */
static void assert_serves(int lfd, const char *path) {
        int cfd = -1, afd = -1;
        char c = 0;

        ck_assert_int_eq(connect_to(path, &cfd), 0);
        ck_assert_int_eq(send(cfd, "x", 1, MSG_NOSIGNAL), 1);
        /* Earlier connections (such as listen_bind()'s own liveness probe) may
         * wait in the backlog before ours: skip the ones already closed. */
        for (int i = 0; i < 8 && c != 'x'; i++) {
                struct pollfd p = { .fd = lfd, .events = POLLIN };
                ck_assert_int_eq(poll(&p, 1, 2000), 1);
                afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                ck_assert_int_ge(afd, 0);
                p = (struct pollfd){ .fd = afd, .events = POLLIN };
                ck_assert_int_eq(poll(&p, 1, 2000), 1);
                if (recv(afd, &c, 1, 0) != 1)
                        c = 0;
                close(afd);
        }
        ck_assert_int_eq(c, 'x');
        close(cfd);
}

static int sockopt(int fd, int opt) {
        int v = -1;
        socklen_t l = sizeof(v);
        ck_assert_int_eq(getsockopt(fd, SOL_SOCKET, opt, &v, &l), 0);
        return v;
}

/* Assert @fd is a listening AF_UNIX stream socket bound to @path, mode 0666. */
static void assert_listening(int fd, const char *path) {
        struct sockaddr_un sa;
        socklen_t l = sizeof(sa);
        struct stat st;

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(sockopt(fd, SO_TYPE), SOCK_STREAM);
        ck_assert_int_eq(sockopt(fd, SO_ACCEPTCONN), 1);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *) &sa, &l), 0);
        ck_assert_int_eq(sa.sun_family, AF_UNIX);
        ck_assert_str_eq(sa.sun_path, path);
        ck_assert_int_eq(lstat(path, &st), 0);
        ck_assert_msg(S_ISSOCK(st.st_mode), "%s is not a socket", path);
        ck_assert_msg((st.st_mode & 07777) == 0666, "%s has mode %04o, expected 0666", path,
                      (unsigned) (st.st_mode & 07777));
}

/* ------------------------------------------------------------------------- */
/* listen_bind() */

START_TEST(test_bind_fresh) {
        const char *p = at("credgate.sock");
        int fd = listen_bind(p);

        assert_listening(fd, p);
        assert_serves(fd, p);
        close(fd);
}
END_TEST

START_TEST(test_bind_mode_ignores_umask) {
        static const mode_t masks[] = { 077, 0777, 0 };

        for (size_t i = 0; i < ELEMENTSOF(masks); i++) {
                char name[32];
                snprintf(name, sizeof(name), "s%zu", i);
                umask(masks[i]);
                const char *p = at(name);
                int fd = listen_bind(p);
                umask(022);
                ck_assert_msg(fd >= 0, "umask %04o: %s", (unsigned) masks[i], strerror(-fd));
                assert_listening(fd, p);
                close(fd);
        }
}
END_TEST

/* Assert @path is a folder with mode @mode. */
static void assert_dir(const char *path, mode_t mode) {
        struct stat st;

        ck_assert_int_eq(lstat(path, &st), 0);
        ck_assert_msg(S_ISDIR(st.st_mode), "%s is not a folder", path);
        ck_assert_msg((st.st_mode & 07777) == mode, "%s has mode %04o, expected %04o", path,
                      (unsigned) (st.st_mode & 07777), (unsigned) mode);
}

START_TEST(test_bind_creates_parent) {
        const char *p = at("run/credgate.sock");
        int fd = listen_bind(p);

        ck_assert_msg(fd >= 0, "%s", strerror(-fd));
        assert_dir(at("run"), 0755);
        assert_listening(fd, p);
        assert_serves(fd, p);
        close(fd);
}
END_TEST

START_TEST(test_bind_creates_parent_strict_umask) {
        /* The folder must be 0755 whatever the umask, or other users cannot reach the 0666 socket. */
        umask(077);
        const char *p = at("run/credgate.sock");
        int fd = listen_bind(p);
        umask(022);

        ck_assert_msg(fd >= 0, "%s", strerror(-fd));
        assert_listening(fd, p);
        assert_dir(at("run"), 0755);
        close(fd);
}
END_TEST

START_TEST(test_bind_existing_parent) {
        ck_assert_int_eq(mkdir(at("run"), 0711), 0);
        const char *p = at("run/credgate.sock");
        int fd = listen_bind(p);
        assert_listening(fd, p);
        assert_dir(at("run"), 0711);
        close(fd);
}
END_TEST

START_TEST(test_bind_stale) {
        const char *p = at("credgate.sock");

        /* A daemon that died without unlinking its socket. */
        close(bind_at(p, SOCK_STREAM, 5));
        ck_assert_int_eq(connect_to(p, NULL), -ECONNREFUSED);
        int fd = listen_bind(p);
        ck_assert_msg(fd >= 0, "stale socket not replaced: %s", strerror(-fd));
        assert_listening(fd, p);
        assert_serves(fd, p);
        close(fd);
}
END_TEST

START_TEST(test_bind_stale_never_listened) {
        const char *p = at("credgate.sock");

        close(bind_at(p, SOCK_STREAM, -1));
        int fd = listen_bind(p);
        ck_assert_msg(fd >= 0, "%s", strerror(-fd));
        assert_serves(fd, p);
        close(fd);
}
END_TEST

START_TEST(test_bind_restart) {
        /* Our own socket, closed without unlink (a crash), is stale on the next start. */
        const char *p = at("credgate.sock");
        int fd = listen_bind(p);

        ck_assert_int_ge(fd, 0);
        close(fd);
        fd = listen_bind(p);
        ck_assert_msg(fd >= 0, "%s", strerror(-fd));
        assert_serves(fd, p);
        close(fd);
}
END_TEST

START_TEST(test_bind_live) {
        const char *p = at("credgate.sock");
        int other = bind_at(p, SOCK_STREAM, 5);
        struct stat before, after;

        ck_assert_int_eq(lstat(p, &before), 0);
        ck_assert_int_eq(listen_bind(p), -EADDRINUSE);
        ck_assert_int_eq(lstat(p, &after), 0);
        ck_assert_uint_eq(before.st_ino, after.st_ino);
        ck_assert_uint_eq(before.st_mode, after.st_mode);
        /* The running server still gets its clients. */
        int cfd = -1;
        ck_assert_int_eq(connect_to(p, &cfd), 0);
        struct pollfd pf = { .fd = other, .events = POLLIN };
        ck_assert_int_eq(poll(&pf, 1, 2000), 1);
        close(cfd);
        close(other);
}
END_TEST

START_TEST(test_bind_live_twice) {
        /* A second daemon on the same path. */
        const char *p = at("credgate.sock");
        int fd = listen_bind(p);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(listen_bind(p), -EADDRINUSE);
        assert_serves(fd, p);
        close(fd);
}
END_TEST

/* Run listen_bind(@path) in a child; return its result, or fail if it takes over @ms. */
static int bind_in_child(const char *path, int ms) {
        int pp[2];

        ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                int r = listen_bind(path);
                _exit(write(pp[1], &r, sizeof(r)) == sizeof(r) ? 0 : 1);
        }
        close(pp[1]);
        struct pollfd p = { .fd = pp[0], .events = POLLIN };
        int r = 0, ready = poll(&p, 1, ms);
        if (ready != 1) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                close(pp[0]);
                ck_abort_msg("listen_bind('%s') still blocked after %d ms", path, ms);
        }
        ck_assert_int_eq(read(pp[0], &r, sizeof(r)), (ssize_t) sizeof(r));
        close(pp[0]);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        return r;
}

START_TEST(test_bind_live_backlog_full) {
        /* A live server that is busy (its backlog full) is still live: fail, do not hang. */
        const char *p = at("credgate.sock");
        int other = bind_at(p, SOCK_STREAM, 0), clients[64], n = 0, r = 0;

        while (n < (int) ELEMENTSOF(clients) && (r = connect_to(p, &clients[n])) == 0)
                n++;
        ck_assert_int_eq(r, -EAGAIN);
        ck_assert_int_eq(bind_in_child(p, 2000), -EADDRINUSE);
        struct stat st;
        ck_assert_int_eq(lstat(p, &st), 0);
        ck_assert(S_ISSOCK(st.st_mode));
        for (int i = 0; i < n; i++)
                close(clients[i]);
        close(other);
}
END_TEST

/* Assert that the not-a-socket at @p is refused and left as it was. */
static void assert_refused_untouched(const char *p) {
        struct stat before, after;

        ck_assert_int_eq(lstat(p, &before), 0);
        ck_assert_int_eq(listen_bind(p), -EEXIST);
        ck_assert_int_eq(lstat(p, &after), 0);
        ck_assert_uint_eq(before.st_ino, after.st_ino);
        ck_assert_uint_eq(before.st_mode, after.st_mode);
        ck_assert_uint_eq(before.st_size, after.st_size);
        ck_assert_int_eq(before.st_mtim.tv_sec, after.st_mtim.tv_sec);
        ck_assert_int_eq(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
}

START_TEST(test_bind_regular_file) {
        const char *p = at("credgate.sock");
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        char buf[32] = {};

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, "precious\n", 9), 9);
        close(fd);
        assert_refused_untouched(p);
        fd = open(p, O_RDONLY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(read(fd, buf, sizeof(buf) - 1), 9);
        ck_assert_str_eq(buf, "precious\n");
        close(fd);
}
END_TEST

START_TEST(test_bind_empty_file) {
        const char *p = at("credgate.sock");
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        ck_assert_int_ge(fd, 0);
        close(fd);
        assert_refused_untouched(p);
}
END_TEST

START_TEST(test_bind_directory) {
        const char *p = at("credgate.sock");
        ck_assert_int_eq(mkdir(p, 0700), 0);
        assert_refused_untouched(p);
}
END_TEST

START_TEST(test_bind_fifo) {
        const char *p = at("credgate.sock");
        ck_assert_int_eq(mkfifo(p, 0600), 0);
        assert_refused_untouched(p);
}
END_TEST

START_TEST(test_bind_symlink) {
        /* Never follow a link: not to a missing target, not to a stale socket. */
        const char *p = at("credgate.sock");
        struct stat st;

        ck_assert_int_eq(symlink(at("missing"), p), 0);
        assert_refused_untouched(p);
        ck_assert_int_eq(lstat(at("missing"), &st), -1);

        ck_assert_int_eq(unlink(p), 0);
        close(bind_at(at("stale"), SOCK_STREAM, 1));
        ck_assert_int_eq(symlink(at("stale"), p), 0);
        assert_refused_untouched(p);
        ck_assert_int_eq(lstat(at("stale"), &st), 0);
        ck_assert(S_ISSOCK(st.st_mode));
}
END_TEST

/* ------------------------------------------------------------------------- */
/* listen_bind(): the folder must be trusted, no mode set through the path */

/* listen_bind(@path) refuses the folder: -EPERM, nothing created in it. */
static void assert_folder_refused(const char *folder, const char *path) {
        struct stat before, after;

        ck_assert_int_eq(stat(folder, &before), 0);
        int r = listen_bind(path);
        ck_assert_msg(r == -EPERM, "listen_bind('%s') in a folder of mode %04o, uid %u: %d (%s), want -EPERM", path,
                      (unsigned) (before.st_mode & 07777), (unsigned) before.st_uid, r, strerror(-r));
        ck_assert_int_eq(access(path, F_OK), -1);
        ck_assert_int_eq(stat(folder, &after), 0);
        ck_assert_uint_eq(before.st_mode, after.st_mode);
}

START_TEST(test_bind_folder_writable_refused) {
        /* Group- or other-writable, sticky or not: someone else could bind the name. */
        static const mode_t modes[] = { 0775, 0757, 0777, 01777, 01770, 0730 };

        for (size_t i = 0; i < ELEMENTSOF(modes); i++) {
                char name[32];
                snprintf(name, sizeof(name), "f%zu", i);
                const char *folder = at(name);
                snprintf(name, sizeof(name), "f%zu/cg.sock", i);
                const char *sock = at(name);

                ck_assert_int_eq(mkdir(folder, 0700), 0);
                ck_assert_int_eq(chmod(folder, modes[i]), 0);
                assert_folder_refused(folder, sock);
        }
}
END_TEST

START_TEST(test_bind_folder_owned_by_other_uid_refused) {
        if (geteuid() != 0) {
                fprintf(stderr, "SKIP: test_bind_folder_owned_by_other_uid_refused needs root to chown\n");
                return;
        }
        ck_assert_int_eq(mkdir(at("theirs"), 0755), 0);
        ck_assert_int_eq(chown(at("theirs"), 1000, 1000), 0);
        assert_folder_refused(at("theirs"), at("theirs/cg.sock"));

        /* Our own folder is fine, whoever we are. */
        ck_assert_int_eq(chown(at("theirs"), geteuid(), getegid()), 0);
        int fd = listen_bind(at("theirs/cg.sock"));
        assert_listening(fd, at("theirs/cg.sock"));
        close(fd);
}
END_TEST

/* A folder given through a symlink is judged by its target. */
START_TEST(test_bind_folder_symlink_judged_by_target) {
        ck_assert_int_eq(mkdir(at("open"), 0700), 0);
        ck_assert_int_eq(chmod(at("open"), 01777), 0);
        ck_assert_int_eq(symlink(at("open"), at("run")), 0);
        assert_folder_refused(at("open"), at("run/cg.sock"));

        ck_assert_int_eq(mkdir(at("safe"), 0755), 0);
        ck_assert_int_eq(symlink(at("safe"), at("run2")), 0);
        int fd = listen_bind(at("run2/cg.sock"));
        assert_listening(fd, at("run2/cg.sock"));
        close(fd);
}
END_TEST

/* The folder where the socket goes is not a folder. */
START_TEST(test_bind_folder_not_a_folder) {
        int fd = open(at("file"), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        ck_assert_int_ge(fd, 0);
        close(fd);
        ck_assert_int_eq(listen_bind(at("file/cg.sock")), -ENOTDIR);
}
END_TEST

/* Another user replaces the new socket with a symlink right after bind(): nothing follows it. */
START_TEST(test_bind_sets_no_mode_through_the_path) {
        const char *p = at("cg.sock"), *victim = at("victim");
        struct stat st;
        int fd = open(victim, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

        ck_assert_int_ge(fd, 0);
        close(fd);
        ck_assert_int_eq(chmod(victim, 0600), 0);
        chmod_race.path = p;
        chmod_race.victim = victim;
        fd = listen_bind(p);
        chmod_race.path = NULL;
        ck_assert_int_eq(stat(victim, &st), 0);
        ck_assert_msg((st.st_mode & 07777) == 0600, "listen_bind() chmod()ed through a symlink: '%s' is now %04o",
                      victim, (unsigned) (st.st_mode & 07777));
        ck_assert_uint_eq(chmod_race.calls, 0);
        assert_listening(fd, p);
        close(fd);

        /* Nor through the folder it creates. */
        const char *sub = at("sub"), *subsock = at("sub/cg.sock");
        chmod_race.path = sub;
        chmod_race.victim = victim;
        chmod_race.calls = 0;
        umask(077);
        fd = listen_bind(subsock);
        umask(022);
        chmod_race.path = NULL;
        ck_assert_uint_eq(chmod_race.calls, 0);
        ck_assert_int_eq(stat(victim, &st), 0);
        ck_assert_int_eq(st.st_mode & 07777, 0600);
        assert_dir(sub, 0755);
        assert_listening(fd, subsock);
        close(fd);
}
END_TEST

/* The umask is changed around mkdir() and bind() only: the caller's comes back. */
START_TEST(test_bind_restores_umask) {
        static const mode_t masks[] = { 077, 022, 0 };

        for (size_t i = 0; i < ELEMENTSOF(masks); i++) {
                char name[32];
                snprintf(name, sizeof(name), "u%zu/cg.sock", i);
                umask(masks[i]);
                int fd = listen_bind(at(name));
                mode_t after = umask(022);
                ck_assert_msg(fd >= 0, "%s", strerror(-fd));
                ck_assert_msg(after == masks[i], "umask %04o after listen_bind(), was %04o", (unsigned) after,
                              (unsigned) masks[i]);
                close(fd);
        }
}
END_TEST

/* A path of exactly @len bytes inside the temporary folder. Caller frees. */
static char *path_of_len(size_t len, const char *sub) {
        char *p = malloc(len + 1);
        size_t n;

        ck_assert_ptr_nonnull(p);
        n = (size_t) snprintf(p, len + 1, "%s/%s", dir, sub);
        ck_assert_uint_lt(n, len);
        memset(p + n, 'x', len - n);
        p[len] = '\0';
        return p;
}

START_TEST(test_bind_name_too_long) {
        struct sockaddr_un sa;
        char *p = path_of_len(sizeof(sa.sun_path), "");
        ck_assert_int_eq(listen_bind(p), -ENAMETOOLONG);
        ck_assert_int_eq(access(p, F_OK), -1);
        free(p);

        p = path_of_len(4000, "");
        ck_assert_int_eq(listen_bind(p), -ENAMETOOLONG);
        free(p);

        /* Refused before anything is created. */
        p = path_of_len(sizeof(sa.sun_path), "sub/");
        ck_assert_int_eq(listen_bind(p), -ENAMETOOLONG);
        ck_assert_int_eq(access(at("sub"), F_OK), -1);
        free(p);
}
END_TEST

START_TEST(test_bind_name_longest) {
        /* 107 bytes and the NUL fill sun_path exactly. */
        struct sockaddr_un sa;
        char *p = path_of_len(sizeof(sa.sun_path) - 1, "");
        int fd = listen_bind(p);

        ck_assert_msg(fd >= 0, "%s", strerror(-fd));
        assert_listening(fd, p);
        assert_serves(fd, p);
        close(fd);
        free(p);
}
END_TEST

/* ------------------------------------------------------------------------- */
/* listen_activated() */

typedef enum FdKind {
        FD_UNIX_LISTEN,
        FD_UNIX_DGRAM,
        FD_UNIX_UNCONNECTED,
        FD_UNIX_CONNECTED,
        FD_UNIX_SEQPACKET_LISTEN,
        FD_INET_LISTEN,
        FD_REGULAR_FILE,
} FdKind;

#define MAX_FDS 4

typedef struct Activation {
        int r, bad;
        bool fds_written, env_cleared;
        int fds[MAX_FDS];
        bool nonblock[MAX_FDS], cloexec[MAX_FDS], metrics[MAX_FDS];
} Activation;

/* LISTEN_FDNAMES for the next activate(), or NULL for none. */
static const char *fdnames;

/* In the child (no assertions there): an fd of @kind, moved far above 3. */
static int make_fd(FdKind kind, int i) {
        int fd = -1, sv[2];

        switch (kind) {
        case FD_UNIX_LISTEN: {
                char name[16];
                snprintf(name, sizeof(name), "act%d", i);
                fd = bind_raw(at(name), SOCK_STREAM, 5);
                break;
        }
        case FD_UNIX_SEQPACKET_LISTEN: {
                char name[16];
                snprintf(name, sizeof(name), "seq%d", i);
                fd = bind_raw(at(name), SOCK_SEQPACKET, 5);
                break;
        }
        case FD_UNIX_DGRAM: {
                char name[16];
                snprintf(name, sizeof(name), "dgram%d", i);
                fd = bind_raw(at(name), SOCK_DGRAM, -1);
                break;
        }
        case FD_UNIX_UNCONNECTED:
                fd = socket(AF_UNIX, SOCK_STREAM, 0);
                break;
        case FD_UNIX_CONNECTED:
                if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0)
                        fd = sv[0]; /* sv[1] stays open: still connected */
                break;
        case FD_INET_LISTEN: {
                struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
                fd = socket(AF_INET, SOCK_STREAM, 0);
                if (fd >= 0 && (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(fd, 5) < 0))
                        _exit(20);
                break;
        }
        case FD_REGULAR_FILE:
                fd = open(at("file"), O_RDWR | O_CREAT, 0600);
                break;
        }
        if (fd < 0)
                _exit(21);
        int high = fcntl(fd, F_DUPFD, 100 + i);
        if (high < 0)
                _exit(22);
        close(fd);
        return high;
}

/*
 * Fork a child that places fds of @kinds at 3, 4, ..., exports LISTEN_FDS=@n
 * and LISTEN_PID (its own pid, or @pid_text when not NULL; no variables at
 * all when @n < 0), calls listen_activated() and reports what it saw.
 */
static Activation activate(const FdKind *kinds, int n, const char *pid_text) {
        int pp[2];
        Activation a = {};

        ck_assert_int_eq(pipe(pp), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                int out = fcntl(pp[1], F_DUPFD, 200), high[MAX_FDS];
                int *fds = (int *) &a; /* sentinel: must stay untouched on failure */
                char num[32];

                if (out < 0)
                        _exit(23);
                close(pp[0]);
                close(pp[1]);
                for (int i = 0; i < n; i++)
                        high[i] = make_fd(kinds[i], i);
                for (int i = 0; i < n; i++) {
                        if (dup2(high[i], 3 + i) < 0)
                                _exit(24);
                        close(high[i]);
                }
                unsetenv("LISTEN_PID");
                unsetenv("LISTEN_FDS");
                unsetenv("LISTEN_FDNAMES");
                if (n >= 0) {
                        snprintf(num, sizeof(num), "%d", (int) getpid());
                        setenv("LISTEN_PID", pid_text ? pid_text : num, 1);
                        snprintf(num, sizeof(num), "%d", n);
                        setenv("LISTEN_FDS", num, 1);
                        if (fdnames)
                                setenv("LISTEN_FDNAMES", fdnames, 1);
                }
                bool *metrics = NULL;
                a.r = listen_activated(&fds, &metrics, &a.bad);
                a.env_cleared = !getenv("LISTEN_PID") && !getenv("LISTEN_FDS");
                a.fds_written = fds != (int *) &a;
                for (int i = 0; a.r > 0 && i < a.r && i < MAX_FDS; i++) {
                        a.fds[i] = fds[i];
                        int fl = fcntl(fds[i], F_GETFL), fdf = fcntl(fds[i], F_GETFD);
                        a.nonblock[i] = fl >= 0 && (fl & O_NONBLOCK);
                        a.cloexec[i] = fdf >= 0 && (fdf & FD_CLOEXEC);
                        a.metrics[i] = metrics[i];
                }
                if (a.r > 0) {
                        free(fds);
                        free(metrics);
                }
                _exit(write(out, &a, sizeof(a)) == sizeof(a) ? 0 : 25);
        }
        close(pp[1]);
        struct pollfd p = { .fd = pp[0], .events = POLLIN };
        if (poll(&p, 1, 5000) != 1) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                ck_abort_msg("activation child hung");
        }
        ssize_t got = read(pp[0], &a, sizeof(a));
        close(pp[0]);
        int status = 0;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "activation child failed (status %d)", status);
        ck_assert_int_eq(got, (ssize_t) sizeof(a));
        return a;
}

/* credgated-metrics.socket's FileDescriptorName=metrics marks a metrics socket; any other name, or
 * none, a decision socket. */
START_TEST(test_activated_names) {
        static const FdKind k[] = { FD_UNIX_LISTEN, FD_UNIX_LISTEN, FD_UNIX_LISTEN };
        fdnames = "credgated.socket:metrics:unknown";
        Activation a = activate(k, 3, NULL);
        fdnames = NULL;
        ck_assert_int_eq(a.r, 3);
        ck_assert(!a.metrics[0] && a.metrics[1] && !a.metrics[2]);
}
END_TEST

START_TEST(test_activated_names_exact) {
        static const FdKind k[] = { FD_UNIX_LISTEN, FD_UNIX_LISTEN };
        fdnames = "metricsx:Metrics";
        Activation a = activate(k, 2, NULL);
        fdnames = NULL;
        ck_assert_int_eq(a.r, 2);
        ck_assert(!a.metrics[0] && !a.metrics[1]);
}
END_TEST

START_TEST(test_activated_no_names) {
        static const FdKind k[] = { FD_UNIX_LISTEN, FD_UNIX_LISTEN };
        Activation a = activate(k, 2, NULL);
        ck_assert_int_eq(a.r, 2);
        ck_assert(!a.metrics[0] && !a.metrics[1]);
}
END_TEST

START_TEST(test_activated_none) {
        Activation a = activate(NULL, -1, NULL);
        ck_assert_int_eq(a.r, 0);
        ck_assert(!a.fds_written);
}
END_TEST

START_TEST(test_activated_zero) {
        /* LISTEN_FDS=0 is malformed for sd_listen_fds() (-EINVAL); either way no sockets. */
        Activation a = activate(NULL, 0, NULL);
        ck_assert_int_le(a.r, 0);
        ck_assert(!a.fds_written);
}
END_TEST

START_TEST(test_activated_other_pid) {
        /* The sockets were meant for another process (e.g. our parent). */
        static const FdKind k[] = { FD_UNIX_LISTEN };
        Activation a = activate(k, 1, "1");
        ck_assert_int_eq(a.r, 0);
        ck_assert(!a.fds_written);
}
END_TEST

START_TEST(test_activated_one) {
        static const FdKind k[] = { FD_UNIX_LISTEN };
        Activation a = activate(k, 1, NULL);

        ck_assert_int_eq(a.r, 1);
        ck_assert(a.fds_written);
        ck_assert_int_eq(a.fds[0], 3);
        ck_assert(a.nonblock[0]);
        ck_assert(a.cloexec[0]);
        /* Children we spawn must not think they were activated. */
        ck_assert(a.env_cleared);
}
END_TEST

START_TEST(test_activated_two) {
        static const FdKind k[] = { FD_UNIX_LISTEN, FD_UNIX_LISTEN };
        Activation a = activate(k, 2, NULL);

        ck_assert_int_eq(a.r, 2);
        ck_assert_int_eq(a.fds[0], 3);
        ck_assert_int_eq(a.fds[1], 4);
        ck_assert(a.nonblock[0] && a.nonblock[1]);
        ck_assert(a.cloexec[0] && a.cloexec[1]);
}
END_TEST

/* One passed fd of @kind at 3 must be refused with -EPROTOTYPE naming fd 3. */
static void refused_at_3(FdKind kind) {
        FdKind k[] = { kind };
        Activation a = activate(k, 1, NULL);

        ck_assert_int_eq(a.r, -EPROTOTYPE);
        ck_assert_int_eq(a.bad, 3);
        ck_assert(!a.fds_written);
}

START_TEST(test_activated_dgram) {
        refused_at_3(FD_UNIX_DGRAM);
}
END_TEST

START_TEST(test_activated_not_listening) {
        refused_at_3(FD_UNIX_UNCONNECTED);
}
END_TEST

START_TEST(test_activated_connected) {
        refused_at_3(FD_UNIX_CONNECTED);
}
END_TEST

START_TEST(test_activated_seqpacket) {
        refused_at_3(FD_UNIX_SEQPACKET_LISTEN);
}
END_TEST

START_TEST(test_activated_inet) {
        refused_at_3(FD_INET_LISTEN);
}
END_TEST

START_TEST(test_activated_file) {
        refused_at_3(FD_REGULAR_FILE);
}
END_TEST

START_TEST(test_activated_second_bad) {
        static const FdKind k[] = { FD_UNIX_LISTEN, FD_UNIX_DGRAM };
        Activation a = activate(k, 2, NULL);

        ck_assert_int_eq(a.r, -EPROTOTYPE);
        ck_assert_int_eq(a.bad, 4);
        ck_assert(!a.fds_written);
}
END_TEST

static Suite *listen_suite(void) {
        Suite *s = suite_create("listen");
        TCase *tc;

        tc = tcase_create("bind");
        tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_bind_fresh);
        tcase_add_test(tc, test_bind_mode_ignores_umask);
        tcase_add_test(tc, test_bind_creates_parent);
        tcase_add_test(tc, test_bind_creates_parent_strict_umask);
        tcase_add_test(tc, test_bind_existing_parent);
        tcase_add_test(tc, test_bind_name_longest);
        suite_add_tcase(s, tc);

        tc = tcase_create("bind-existing");
        tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_bind_stale);
        tcase_add_test(tc, test_bind_stale_never_listened);
        tcase_add_test(tc, test_bind_restart);
        tcase_add_test(tc, test_bind_live);
        tcase_add_test(tc, test_bind_live_twice);
        tcase_add_test(tc, test_bind_live_backlog_full);
        tcase_add_test(tc, test_bind_regular_file);
        tcase_add_test(tc, test_bind_empty_file);
        tcase_add_test(tc, test_bind_directory);
        tcase_add_test(tc, test_bind_fifo);
        tcase_add_test(tc, test_bind_symlink);
        suite_add_tcase(s, tc);

        tc = tcase_create("bind-path");
        tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_bind_name_too_long);
        suite_add_tcase(s, tc);

        tc = tcase_create("bind-folder");
        tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_bind_folder_writable_refused);
        tcase_add_test(tc, test_bind_folder_owned_by_other_uid_refused);
        tcase_add_test(tc, test_bind_folder_symlink_judged_by_target);
        tcase_add_test(tc, test_bind_folder_not_a_folder);
        tcase_add_test(tc, test_bind_sets_no_mode_through_the_path);
        tcase_add_test(tc, test_bind_restores_umask);
        suite_add_tcase(s, tc);

        tc = tcase_create("activated");
        tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_activated_none);
        tcase_add_test(tc, test_activated_zero);
        tcase_add_test(tc, test_activated_other_pid);
        tcase_add_test(tc, test_activated_one);
        tcase_add_test(tc, test_activated_two);
        tcase_add_test(tc, test_activated_dgram);
        tcase_add_test(tc, test_activated_not_listening);
        tcase_add_test(tc, test_activated_connected);
        tcase_add_test(tc, test_activated_seqpacket);
        tcase_add_test(tc, test_activated_inet);
        tcase_add_test(tc, test_activated_file);
        tcase_add_test(tc, test_activated_second_bad);
        tcase_add_test(tc, test_activated_names);
        tcase_add_test(tc, test_activated_names_exact);
        tcase_add_test(tc, test_activated_no_names);
        suite_add_tcase(s, tc);

        return s;
}

int main(void) {
        return test_run(listen_suite());
}
