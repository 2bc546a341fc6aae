/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "policy.h"

typedef struct ConsoleCache ConsoleCache;

/* Where the cache reads login state: sd_uid_get_seats() by default. */
typedef int (*console_seats_t)(uid_t uid, int require_active, char ***ret_seats);

/*
 * The level @uid holds on @seat (NULL: its best on any seat), from the
 * seat lists logind gives for the uid: @online (seats with a session that
 * is not being closed) and @active (seats whose foreground session is the
 * uid's). A seat counts as active only when it is online too, so that a
 * session being closed never counts. NULL lists are empty.
 * Return: a ConsoleLevel.
 */
ConsoleLevel console_level_of(char *const *online, char *const *active, const char *seat);

/*
 * A per-uid cache of login state in front of @seats (NULL: sd-login), for
 * policy_check_console(). Entries are kept until console_cache_invalidate()
 * or, once attached to an event loop, until logind's state changes; errors
 * are never cached. Return: 0 and *ret, or -ENOMEM.
 */
int console_cache_new(console_seats_t seats, ConsoleCache **ret);
ConsoleCache *console_cache_free(ConsoleCache *c);

/*
 * Watch logind's per-user state on @e (an sd_login_monitor) and drop the
 * cache whenever it changes. Without logind (/run/systemd/users missing),
 * watch for it to appear instead. When no watch can be set up at all, the
 * cache stops caching: every question goes to sd-login.
 * Return: 0, or -errno when nothing could be watched (the cache then works
 * uncached).
 */
int console_cache_attach(ConsoleCache *c, sd_event *e);

/* Forget every entry. */
void console_cache_invalidate(ConsoleCache *c);

/* The Console that answers from @c. */
Console console_cache_console(ConsoleCache *c);

/* Counters for tests and STATUS=: questions asked, and those that went to the backend. */
void console_cache_counts(const ConsoleCache *c, uint64_t *ret_asked, uint64_t *ret_read);

static inline void console_cache_freep(ConsoleCache **c) {
        console_cache_free(*c);
}
