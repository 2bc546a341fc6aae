/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Peer credentials of a Unix stream socket, as the kernel recorded them at
 * connect() time: SO_PEERCRED for pid/uid/gid and SO_PEERGROUPS for the
 * supplementary groups. Both the daemon and libcredgate use this, so there is
 * exactly one place that decides what "the peer's identity" means.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "macro.h"
#include "peercred.h"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

static int cmp_gid(const void *a, const void *b) {
        gid_t x = *(const gid_t *) a, y = *(const gid_t *) b;
        return x < y ? -1 : x > y;
}

static int read_groups(int fd, gid_t **ret, size_t *ret_n) {
        _cleanup_free_ gid_t *g = NULL;
        socklen_t len = 64 * sizeof(gid_t);

        for (int tries = 0; tries < 8; tries++) {
                gid_t *ng = realloc(g, len ? len : 1);
                if (!ng)
                        return -ENOMEM;
                g = ng;

                socklen_t l = len;
                if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &l) >= 0) {
                        size_t n = l / sizeof(gid_t);
                        if (n > 1) {
                                qsort(g, n, sizeof(gid_t), cmp_gid);
                                size_t k = 1;
                                for (size_t i = 1; i < n; i++)
                                        if (g[i] != g[k - 1])
                                                g[k++] = g[i];
                                n = k;
                        }
                        *ret = TAKE_PTR(g);
                        *ret_n = n;
                        return 0;
                }
                /* The kernel tells how much room it needs; the list may grow
                 * between calls, so loop a few times. */
                if (errno != ERANGE || l <= len)
                        return -errno;
                len = l;
        }
        return -ERANGE;
}

int peer_creds_read(int fd, PeerCreds *ret) {
        socklen_t l = sizeof(int);
        int listening = 0;

        /* On a listening socket SO_PEERCRED names whoever called listen(). */
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &l) < 0)
                return -errno;
        if (listening)
                return -ENOTCONN;
        return peer_creds_read_accepted(fd, ret);
}

int peer_creds_read_accepted(int fd, PeerCreds *ret) {
        struct ucred uc = {};
        socklen_t l = sizeof(uc);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &l) < 0)
                return -errno;
        if (l != sizeof(uc))
                return -EIO;
        /* An unconnected socket reports (uid_t)-1: that is no identity. */
        if (uc.uid == (uid_t) -1 || uc.gid == (gid_t) -1)
                return -ENOTCONN;

        gid_t *groups = NULL;
        size_t n = 0;
        int r = read_groups(fd, &groups, &n);
        if (r < 0)
                return r;

        *ret = (PeerCreds){
                .pid = uc.pid,
                .uid = uc.uid,
                .gid = uc.gid,
                .n_groups = n,
                .groups = groups,
        };
        return 0;
}

int peer_check_connected_stream(int fd) {
        int v = 0;
        socklen_t l = sizeof(v);
        struct sockaddr_un sa;
        socklen_t sl = sizeof(sa);

        if (getsockname(fd, (struct sockaddr *) &sa, &sl) < 0)
                return -errno;
        if (sl < sizeof(sa_family_t) || sa.sun_family != AF_UNIX)
                return -EAFNOSUPPORT;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &l) < 0)
                return -errno;
        if (v != SOCK_STREAM)
                return -EPROTOTYPE;
        l = sizeof(v);
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &l) < 0)
                return -errno;
        /* SO_PEERCRED on a listening socket names whoever called listen(). */
        if (v)
                return -EINVAL;
        sl = sizeof(sa);
        if (getpeername(fd, (struct sockaddr *) &sa, &sl) < 0)
                return -errno;
        return 0;
}

void peer_creds_done(PeerCreds *c) {
        if (!c)
                return;
        free(c->groups);
        c->groups = NULL;
        c->n_groups = 0;
}
