/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Kernel-verified identity of the peer of a connected Unix stream socket. */
typedef struct PeerCreds {
        pid_t pid;
        uid_t uid;
        gid_t gid;
        size_t n_groups;
        gid_t *groups; /* supplementary groups, sorted ascending, no duplicates */
} PeerCreds;

/*
 * Read SO_PEERCRED and SO_PEERGROUPS of the connected AF_UNIX stream socket
 * @fd. Both must succeed; a socket without a connected peer (uid or gid
 * reported as -1) is an error, never an identity.
 *
 * Return: 0 and *ret filled (free with peer_creds_done()), or -errno:
 * -ENOTCONN when @fd has no connected peer, other -errno from getsockopt().
 */
int peer_creds_read(int fd, PeerCreds *ret);

/*
 * As peer_creds_read(), for a socket the caller got from accept(): it cannot
 * be a listening socket, so that check (one syscall) is skipped.
 */
int peer_creds_read_accepted(int fd, PeerCreds *ret);

/*
 * Check that @fd is a connected AF_UNIX SOCK_STREAM socket: not listening,
 * not unconnected, and not of another family or type.
 *
 * Return: 0 when it is, -ENOTSOCK/-EAFNOSUPPORT/-EPROTOTYPE/-EINVAL/-ENOTCONN
 * otherwise.
 */
int peer_check_connected_stream(int fd);

/* Release what peer_creds_read() allocated; accepts a zeroed struct. */
void peer_creds_done(PeerCreds *c);
