/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Login state for console conditions: which seats a uid holds, from
 * sd-login's per-uid calls (logind's /run/systemd/users/UID), behind a small
 * per-uid cache. A change of logind's state (an sd_login_monitor on the event
 * loop) drops the whole cache and nothing else: entries are read again
 * lazily, by the next request that needs them, so a burst of logins costs a
 * few file reads, never a re-evaluation of anything.
 *
 * Judged by uid, never by pid: no /proc, no race with a process that
 * execs or exits, and the same answer for all of a user's processes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>
#include <systemd/sd-login.h>

#include "console.h"
#include "macro.h"

#define CACHE_SLOTS 256 /* direct-mapped by uid: bounded whatever the callers */
#define USERS_DIR "/run/systemd/users"

typedef struct Entry {
        bool used;
        uid_t uid;
        char **online, **active; /* NULL-terminated; NULL when empty */
} Entry;

struct ConsoleCache {
        console_seats_t seats;
        bool caching; /* false: no watch, every question goes to the backend */
        sd_event *event;
        sd_login_monitor *monitor;
        sd_event_source *monitor_src; /* on the monitor's fd */
        sd_event_source *wait_src;    /* without logind: on the folder its users folder will appear in */
        const char *wait_for;         /* the name wait_src waits for */
        Entry slots[CACHE_SLOTS];
        uint64_t asked, read;
};

static char **strv_free(char **v) {
        for (char **p = v; p && *p; p++)
                free(*p);
        free(v);
        return NULL;
}

static bool strv_has(char *const *v, const char *s) {
        for (; v && *v; v++)
                if (strcmp(*v, s) == 0)
                        return true;
        return false;
}

ConsoleLevel console_level_of(char *const *online, char *const *active, const char *seat) {
        if (seat)
                return !strv_has(online, seat) ? CONSOLE_NONE
                                               : strv_has(active, seat) ? CONSOLE_ACTIVE : CONSOLE_PRESENT;
        for (char *const *a = active; a && *a; a++)
                if (strv_has(online, *a))
                        return CONSOLE_ACTIVE;
        return online && *online ? CONSOLE_PRESENT : CONSOLE_NONE;
}

static void entry_clear(Entry *e) {
        strv_free(e->online);
        strv_free(e->active);
        *e = (Entry){};
}

void console_cache_invalidate(ConsoleCache *c) {
        for (size_t i = 0; c && i < CACHE_SLOTS; i++)
                if (c->slots[i].used)
                        entry_clear(&c->slots[i]);
}

static int cache_level(void *userdata, uint32_t uid, const char *seat) {
        ConsoleCache *c = userdata;
        Entry *e = &c->slots[(uid * 0x9e3779b1u) >> 24];

        c->asked++;
        /* systemd takes 65535 (the 16-bit -1) for no uid at all: sd-login
         * refuses it (-EINVAL) and logind never gives it a session. */
        if (uid == 65535)
                return CONSOLE_NONE;
        if (!c->caching || !e->used || e->uid != uid) {
                char **online = NULL, **active = NULL;
                int r;

                c->read++;
                entry_clear(e);
                r = c->seats((uid_t) uid, 0, &online);
                if (r < 0)
                        return r;
                r = c->seats((uid_t) uid, 1, &active);
                if (r < 0) {
                        strv_free(online);
                        return r;
                }
                *e = (Entry){ .used = true, .uid = (uid_t) uid, .online = online, .active = active };
        }
        return (int) console_level_of(e->online, e->active, seat);
}

int console_cache_new(console_seats_t seats, ConsoleCache **ret) {
        ConsoleCache *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->seats = seats ? seats : sd_uid_get_seats;
        c->caching = true;
        *ret = c;
        return 0;
}

static void watch_stop(ConsoleCache *c) {
        c->monitor_src = sd_event_source_disable_unref(c->monitor_src);
        c->monitor = sd_login_monitor_unref(c->monitor);
        c->wait_src = sd_event_source_disable_unref(c->wait_src);
        c->wait_for = NULL;
}

ConsoleCache *console_cache_free(ConsoleCache *c) {
        if (!c)
                return NULL;
        watch_stop(c);
        console_cache_invalidate(c);
        c->event = sd_event_unref(c->event);
        free(c);
        return NULL;
}

static int watch_start(ConsoleCache *c);

static int on_login_change(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ConsoleCache *c = userdata;

        (void) sd_login_monitor_flush(c->monitor);
        console_cache_invalidate(c);
        /* logind's folder went away (its watch with it): wait for it again. */
        if (access(USERS_DIR, F_OK) < 0) {
                watch_stop(c);
                (void) watch_start(c);
        }
        return 0;
}

static int on_appear(sd_event_source *s, const struct inotify_event *ev, void *userdata) {
        ConsoleCache *c = userdata;

        if ((ev->mask & (IN_Q_OVERFLOW | IN_IGNORED | IN_DELETE_SELF)) ||
            (ev->len > 0 && c->wait_for && strcmp(ev->name, c->wait_for) == 0)) {
                watch_stop(c);
                (void) watch_start(c);
        }
        return 0;
}

/* Watch logind's users folder, or the nearest folder it will appear in. */
static int watch_start(ConsoleCache *c) {
        static const struct {
                const char *dir, *name;
        } ladder[] = { { "/run/systemd", "users" }, { "/run", "systemd" } };
        sd_login_monitor *m = NULL;
        int r;

        r = sd_login_monitor_new("uid", &m);
        if (r >= 0) {
                c->monitor = m;
                r = sd_event_add_io(c->event, &c->monitor_src, sd_login_monitor_get_fd(m),
                                    (uint32_t) sd_login_monitor_get_events(m), on_login_change, c);
                if (r >= 0)
                        r = sd_event_source_set_priority(c->monitor_src, SD_EVENT_PRIORITY_IMPORTANT);
                if (r >= 0)
                        goto watching;
                watch_stop(c);
        }
        for (size_t i = 0; r == -ENOENT && i < ELEMENTSOF(ladder); i++) {
                r = sd_event_add_inotify(c->event, &c->wait_src, ladder[i].dir,
                                         IN_CREATE | IN_MOVED_TO | IN_ONLYDIR | IN_DELETE_SELF | IN_MOVE_SELF,
                                         on_appear, c);
                if (r < 0)
                        continue;
                c->wait_for = ladder[i].name;
                r = sd_event_source_set_priority(c->wait_src, SD_EVENT_PRIORITY_IMPORTANT);
                if (r < 0)
                        break;
                /* It may have appeared before the watch was in place. */
                if (access(USERS_DIR, F_OK) >= 0) {
                        watch_stop(c);
                        return watch_start(c);
                }
                goto watching;
        }
        watch_stop(c);
        c->caching = false;
        console_cache_invalidate(c);
        return r;

watching:
        /* Whatever changed before the watch was in place is read afresh. */
        c->caching = true;
        console_cache_invalidate(c);
        return 0;
}

int console_cache_attach(ConsoleCache *c, sd_event *e) {
        watch_stop(c);
        sd_event_unref(c->event);
        c->event = sd_event_ref(e);
        return watch_start(c);
}

Console console_cache_console(ConsoleCache *c) {
        return (Console){ .level = cache_level, .userdata = c };
}

void console_cache_counts(const ConsoleCache *c, uint64_t *ret_asked, uint64_t *ret_read) {
        *ret_asked = c ? c->asked : 0;
        *ret_read = c ? c->read : 0;
}
