/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "policy-load.h"

typedef struct Reloader Reloader;

/*
 * Called on the event loop when a load finished. On success (@r == 0) the
 * callee takes @policy. @diags holds the errors and warnings either way.
 */
typedef void (*reload_done_t)(void *userdata, int r, Policy *policy, const Settings *settings, const Diags *diags);

/*
 * Load policies in a worker thread so that parsing a large policy never
 * stalls the event loop. @opts must outlive the Reloader.
 * Return: 0 and *ret, or -errno.
 */
int reloader_new(sd_event *e, const PolicyOptions *opts, reload_done_t done, void *userdata, Reloader **ret);

/* Wait for a running load, then free. Return: NULL. */
Reloader *reloader_free(Reloader *r);

/*
 * Start a load. Return: 0, -EBUSY while one runs, or -errno when no thread
 * could be started.
 */
int reloader_start(Reloader *r);

bool reloader_busy(const Reloader *r);
