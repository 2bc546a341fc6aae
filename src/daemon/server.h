/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "audit.h"
#include "policy-load.h"
#include "policy.h"
#include "session.h"

typedef struct Server Server;

typedef struct ServerConfig {
        PolicyOptions policy;      /* what SIGHUP re-reads; must outlive the server */
        SettingsOverride override; /* command-line settings: win over the file's */
        LogTarget log_target;
} ServerConfig;

/*
 * Create a server that decides with @policy (a reference is taken) and the
 * file's @settings (command-line overrides are applied on top).
 * Return: 0 and *ret, or -errno.
 */
int server_new(const ServerConfig *cfg, Policy *policy, const Settings *settings, Server **ret);
Server *server_free(Server *s);

/*
 * Add a listening socket; the server owns @fd from now on. @unlink_path,
 * when given, is removed when the server is freed (standalone only).
 * Return: 0 or -errno.
 */
int server_add_listener(Server *s, int fd, const char *unlink_path);

/*
 * Add a listening socket for metrics (credgated(8), METRICS): each client
 * gets one OpenMetrics document. The server owns @fd from now on;
 * @unlink_path as for server_add_listener(). Return: 0 or -errno.
 */
int server_add_metrics_listener(Server *s, int fd, const char *unlink_path);

/* Socket-activated servers may exit when idle (settings: idle_exit). */
void server_set_activated(Server *s, bool activated);

/* Serve until SIGTERM, SIGINT or idle exit. Return: 0 on a clean exit, or -errno. */
int server_run(Server *s);

static inline void server_freep(Server **s) {
        server_free(*s);
}
