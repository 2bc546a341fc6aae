/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdint.h>
#include <systemd/sd-event.h>

#include "policy.h"
#include "session.h"

typedef struct Server Server;

typedef struct ServerConfig {
        const char *config_path; /* policy file, re-read on SIGHUP */
        uint64_t timeout_usec;   /* close a connection with no complete request for this long */
} ServerConfig;

/*
 * Create a server that decides with @policy (a reference is taken).
 * Return: 0 and *ret, or -errno.
 */
int server_new(const ServerConfig *cfg, Policy *policy, Server **ret);
Server *server_free(Server *s);

/*
 * Add a listening socket; the server owns @fd from now on. @unlink_path,
 * when given, is removed when the server is freed (standalone only).
 * Return: 0 or -errno.
 */
int server_add_listener(Server *s, int fd, const char *unlink_path);

/* Serve until SIGTERM or SIGINT. Return: 0 on a clean exit, or -errno. */
int server_run(Server *s);

/* Counters and connection count, for STATUS= and tests. */
const Stats *server_stats(const Server *s);
unsigned server_n_connections(const Server *s);

static inline void server_freep(Server **s) {
        server_free(*s);
}
