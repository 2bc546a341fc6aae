/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Listening sockets: the ones systemd hands over (socket activation comes
 * first), or one we bind ourselves when run standalone. Standalone binding
 * never destroys anything it did not create: a live socket means another
 * daemon runs, and a file that is not a socket is left alone. It binds only
 * in a folder nobody else can write, for whoever can write there could put
 * a fake daemon's socket in our place, and it never changes a mode through
 * a path, which could be a symlink by then: the modes come from the umask.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "listen.h"
#include "macro.h"

int listen_activated(int **ret_fds, bool **ret_metrics, int *ret_bad) {
        char **names = NULL;
        int n = sd_listen_fds_with_names(1, &names);
        if (n <= 0)
                return n;

        int *fds = calloc((size_t) n, sizeof(int));
        bool *metrics = calloc((size_t) n, sizeof(bool));
        for (int i = 0; i < n; i++) {
                if (names && names[i] && fds && metrics)
                        metrics[i] = strcmp(names[i], LISTEN_METRICS_NAME) == 0;
                free(names ? names[i] : NULL);
        }
        free(names);
        if (!fds || !metrics) {
                free(fds);
                free(metrics);
                return -ENOMEM;
        }
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
                        *ret_bad = fd;
                        free(fds);
                        free(metrics);
                        return -EPROTOTYPE;
                }
                int fl = fcntl(fd, F_GETFL);
                if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
                        int r = -errno;
                        free(fds);
                        free(metrics);
                        return r;
                }
                fds[i] = fd;
        }
        *ret_fds = fds;
        *ret_metrics = metrics;
        return n;
}

/* Owned by root or us, writable by nobody else. Return: 0, -ENOTDIR, -EPERM. */
static int folder_trusted(const struct stat *st) {
        if (!S_ISDIR(st->st_mode))
                return -ENOTDIR;
        /* Sticky does not help: another user could bind the name first. */
        if ((st->st_uid != 0 && st->st_uid != geteuid()) || (st->st_mode & (S_IWGRP | S_IWOTH)))
                return -EPERM;
        return 0;
}

/* Create the folder of @path when missing (0755), then judge it. */
static int prepare_parent(const char *path) {
        _cleanup_free_ char *copy = strdup(path);
        struct stat st;

        if (!copy)
                return -ENOMEM;
        const char *dir = dirname(copy);
        /* 0755 whatever our umask: clients of any uid must reach the socket. */
        mode_t old = umask(0022);
        int r = mkdir(dir, 0755) < 0 && errno != EEXIST ? -errno : 0;
        umask(old);
        if (r < 0)
                return r;
        if (stat(dir, &st) < 0)
                return -errno;
        return folder_trusted(&st);
}

/* Is someone listening on the socket file @sa? */
static int probe_live(const struct sockaddr_un *sa, socklen_t len) {
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (const struct sockaddr *) sa, len) == 0)
                return 1;
        if (errno == ECONNREFUSED)
                return 0;
        /* Non-blocking: EAGAIN means the backlog is full, so someone listens. */
        return errno == EAGAIN ? 1 : -errno;
}

int listen_bind(const char *path) {
        return listen_bind_mode(path, 0666);
}

int listen_bind_mode(const char *path, mode_t mode) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct stat st;
        size_t n = strlen(path);
        int r;

        if (n == 0)
                return -EINVAL;
        if (n >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, n);
        socklen_t len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n + 1);

        r = prepare_parent(path);
        if (r < 0)
                return r;

        if (lstat(path, &st) == 0) {
                if (!S_ISSOCK(st.st_mode))
                        return -EEXIST;
                r = probe_live(&sa, len);
                if (r < 0)
                        return r;
                if (r > 0)
                        return -EADDRINUSE;
                if (unlink(path) < 0 && errno != ENOENT)
                        return -errno;
        } else if (errno != ENOENT)
                return -errno;

        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        /* Every local user may ask; the decision, not the socket, guards
         * access. bind() creates the file with the socket's own mode minus
         * the umask, so set both: no chmod() on the path, which would follow
         * a symlink put there after bind(). The umask is the process's, but
         * only startup gets here and the closer thread creates no files. */
        if (fchmod(fd, mode) < 0)
                return -errno;
        mode_t old = umask(~mode & 0777);
        r = bind(fd, (struct sockaddr *) &sa, len) < 0 ? -errno : 0;
        umask(old);
        if (r < 0)
                return r;
        if (listen(fd, SOMAXCONN) < 0) {
                r = -errno;
                unlink(path);
                return r;
        }
        return TAKE_FD(fd);
}
