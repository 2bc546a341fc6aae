/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Listening sockets: the ones systemd hands over (socket activation comes
 * first), or one we bind ourselves when run standalone. Standalone binding
 * never destroys anything it did not create: a live socket means another
 * daemon runs, and a file that is not a socket is left alone.
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

#include "listen.h"
#include "macro.h"

int listen_activated(int **ret_fds, int *ret_bad) {
        int n = sd_listen_fds(1);
        if (n <= 0)
                return n;

        int *fds = calloc((size_t) n, sizeof(int));
        if (!fds)
                return -ENOMEM;
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
                        *ret_bad = fd;
                        free(fds);
                        return -EPROTOTYPE;
                }
                int fl = fcntl(fd, F_GETFL);
                if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
                        free(fds);
                        return -errno;
                }
                fds[i] = fd;
        }
        *ret_fds = fds;
        return n;
}

static int make_parent(const char *path) {
        _cleanup_free_ char *copy = strdup(path);
        if (!copy)
                return -ENOMEM;
        const char *dir = dirname(copy);
        if (mkdir(dir, 0755) == 0)
                /* Clients of any uid must reach the socket, whatever our umask. */
                return chmod(dir, 0755) < 0 ? -errno : 0;
        return errno == EEXIST ? 0 : -errno;
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

        r = make_parent(path);
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
        if (bind(fd, (struct sockaddr *) &sa, len) < 0)
                return -errno;
        /* Every local user may ask; the decision, not the socket, guards access. */
        if (chmod(path, 0666) < 0 || listen(fd, SOMAXCONN) < 0) {
                r = -errno;
                unlink(path);
                return r;
        }
        return TAKE_FD(fd);
}
