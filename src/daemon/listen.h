/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* The FileDescriptorName= of the metrics socket (credgated-metrics.socket). */
#define LISTEN_METRICS_NAME "metrics"

/*
 * Take the sockets systemd passed (sd_listen_fds_with_names). Each must be a
 * listening AF_UNIX SOCK_STREAM socket; they are made non-blocking. Those
 * named LISTEN_METRICS_NAME are for metrics, every other one (whatever its
 * name, or none) for decisions.
 *
 * Return: number of sockets (0: not socket-activated) with their fds in
 * *ret_fds and whether each is a metrics socket in *ret_metrics (both
 * malloc'd), or -errno: -EPROTOTYPE when a passed fd is not a listening Unix
 * stream socket (@ret_bad names it).
 */
int listen_activated(int **ret_fds, bool **ret_metrics, int *ret_bad);

/*
 * Bind and listen on @path, mode 0666 whatever the umask, creating its
 * parent folder (0755) when missing. The parent folder (a symlink judged
 * by its target) must be owned by root or our euid and writable by nobody
 * else: not by its group, not by others even with the sticky bit. A stale
 * socket file nobody listens on is replaced. No mode is ever set through
 * the path.
 *
 * Return: the listening fd, or -errno: -EADDRINUSE when a server already
 * listens on @path, -EEXIST when @path exists and is not a socket,
 * -EPERM when its parent folder is not trusted, -ENOTDIR when the parent
 * is not a folder, -ENAMETOOLONG when @path does not fit a sockaddr_un.
 */
int listen_bind(const char *path);

/* listen_bind() with the socket file's @mode instead of 0666 (a metrics socket: 0600). */
int listen_bind_mode(const char *path, mode_t mode);
