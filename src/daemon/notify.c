/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Notifications to the service manager over one socket kept from startup
 * (see notify.h for why not sd_notify()). The protocol is sd_notify(3)'s:
 * one datagram of NAME=VALUE lines to the AF_UNIX socket named by
 * $NOTIFY_SOCKET (a path, or '@' for the abstract namespace); the manager
 * learns our pid from the kernel (SO_PASSCRED on its side).
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "notify.h"

static int fd = -1;
static struct sockaddr_un addr;
static socklen_t addr_len;

int notify_open(void) {
        const char *e = getenv("NOTIFY_SOCKET");
        size_t n;

        if (fd >= 0)
                return 1;
        if (!e || !e[0])
                return 0;
        n = strlen(e);
        if ((e[0] != '/' && e[0] != '@') || n >= sizeof(addr.sun_path))
                return -EINVAL;
        addr = (struct sockaddr_un){ .sun_family = AF_UNIX };
        memcpy(addr.sun_path, e, n);
        if (e[0] == '@')
                addr.sun_path[0] = '\0';
        /* A path's address includes its NUL, an abstract one does not. */
        addr_len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n + (e[0] == '/'));
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        return fd < 0 ? -errno : 1;
}

void notify_close(void) {
        if (fd >= 0)
                close(fd);
        fd = -1;
}

int notify_send(const char *text) {
        if (fd < 0)
                /* Not opened (no manager, or opening failed): the library's way. */
                return sd_notify(0, text);
        if (sendto(fd, text, strlen(text), MSG_NOSIGNAL | MSG_DONTWAIT, (const struct sockaddr *) &addr,
                   addr_len) < 0)
                return -errno;
        return 0;
}

int notify_sendf(const char *fmt, ...) {
        char buf[4096];
        va_list ap;

        va_start(ap, fmt);
        int n = vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        if (n < 0)
                return -EINVAL;
        return notify_send(buf);
}

uint64_t notify_watchdog_usec(void) {
        uint64_t usec = 0;
        return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}
