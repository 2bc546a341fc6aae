/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdint.h>

#include "macro.h"

/*
 * Service manager notifications (READY=1, STATUS=, WATCHDOG=1, ...) through
 * one socket opened at startup. sd_notify() opens a new socket for every
 * message, so a daemon out of descriptors (every one held by a client)
 * could not send WATCHDOG=1 and was killed by its watchdog, dropping
 * everybody. Messages go with sendto() to $NOTIFY_SOCKET's path each time,
 * so a service manager that re-created its socket (daemon-reexec) still
 * gets them. Only the event loop's thread notifies.
 */

/* Read $NOTIFY_SOCKET and open the socket. Return: 1 when there is one, 0 when not, or -errno. */
int notify_open(void);
void notify_close(void);

/* Send @text (never blocks; a message the manager has no room for is dropped). Return: 0 or -errno. */
int notify_send(const char *text);
_printf_(1, 2) int notify_sendf(const char *fmt, ...);

/* The watchdog interval systemd asks for ($WATCHDOG_USEC for us), or 0. */
uint64_t notify_watchdog_usec(void);
