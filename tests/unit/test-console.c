/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the login-state cache (console.c), against a fake of
 * sd_uid_get_seats(): the level a uid holds from logind's seat lists
 * (a session being closed never counts), that a second question is answered
 * from the cache, that invalidation drops every entry, that errors are never
 * cached, and that the cache stays bounded whatever uids ask. The real
 * sd-login and its monitor are tested by tests/integration/test_console.py.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "console.h"
#include "macro.h"
#include "testutil.h"

/* ------------------------------------------------------------------------
 * The fake backend: per uid, "online" and "active" seat lists or an error
 */

static struct {
        unsigned calls;
        int fail; /* negative errno for every call, or 0 */
        const char *online[4], *active[4]; /* of uid 1000; others have none */
} B;

static char **strv_of(const char *const *v) {
        size_t n = 0;
        while (n < 4 && v[n])
                n++;
        if (n == 0)
                return NULL;
        char **r = calloc(n + 1, sizeof(char *));
        ck_assert_ptr_nonnull(r);
        for (size_t i = 0; i < n; i++)
                ck_assert_ptr_nonnull(r[i] = strdup(v[i]));
        return r;
}

static int fake_seats(uid_t uid, int require_active, char ***ret) {
        B.calls++;
        if (B.fail)
                return B.fail;
        *ret = uid == 1000 ? strv_of(require_active ? B.active : B.online) : NULL;
        size_t n = 0;
        while (*ret && (*ret)[n])
                n++;
        return (int) n;
}

static ConsoleCache *cache;
static Console con;

static void setup(void) {
        memset(&B, 0, sizeof(B));
        ck_assert_int_eq(console_cache_new(fake_seats, &cache), 0);
        con = console_cache_console(cache);
}

static void teardown(void) {
        cache = console_cache_free(cache);
}

static int level(uint32_t uid, const char *seat) {
        return con.level(con.userdata, uid, seat);
}

/* ------------------------------------------------------------------------ */

START_TEST(test_level_of) {
        char *s0[] = { "seat0", NULL }, *s1[] = { "seat1", NULL }, *both[] = { "seat1", "seat0", NULL };

        ck_assert_int_eq(console_level_of(NULL, NULL, NULL), CONSOLE_NONE);
        ck_assert_int_eq(console_level_of(NULL, NULL, "seat0"), CONSOLE_NONE);
        ck_assert_int_eq(console_level_of(s0, s0, NULL), CONSOLE_ACTIVE);
        ck_assert_int_eq(console_level_of(s0, s0, "seat0"), CONSOLE_ACTIVE);
        ck_assert_int_eq(console_level_of(s0, s0, "seat1"), CONSOLE_NONE);
        ck_assert_int_eq(console_level_of(s0, NULL, NULL), CONSOLE_PRESENT);
        ck_assert_int_eq(console_level_of(s0, NULL, "seat0"), CONSOLE_PRESENT);
        ck_assert_int_eq(console_level_of(both, s1, NULL), CONSOLE_ACTIVE);
        ck_assert_int_eq(console_level_of(both, s1, "seat0"), CONSOLE_PRESENT);
        ck_assert_int_eq(console_level_of(both, s1, "seat1"), CONSOLE_ACTIVE);
        /* A session being closed (a process left behind after logout) is still
         * logind's active one on its seat, but no longer online: not a console. */
        ck_assert_int_eq(console_level_of(NULL, s0, NULL), CONSOLE_NONE);
        ck_assert_int_eq(console_level_of(NULL, s0, "seat0"), CONSOLE_NONE);
        ck_assert_int_eq(console_level_of(s1, s0, NULL), CONSOLE_PRESENT);
}
END_TEST

START_TEST(test_cached_until_invalidated) {
        uint64_t asked, read;

        B.online[0] = B.active[0] = "seat0";
        ck_assert_int_eq(level(1000, NULL), CONSOLE_ACTIVE);
        ck_assert_uint_eq(B.calls, 2); /* online and active */
        ck_assert_int_eq(level(1000, "seat0"), CONSOLE_ACTIVE);
        ck_assert_int_eq(level(1000, "seat1"), CONSOLE_NONE);
        ck_assert_uint_eq(B.calls, 2);
        console_cache_counts(cache, &asked, &read);
        ck_assert_uint_eq(asked, 3);
        ck_assert_uint_eq(read, 1);

        /* logind changed: without invalidation the cache still answers the old state... */
        B.active[0] = NULL;
        ck_assert_int_eq(level(1000, NULL), CONSOLE_ACTIVE);
        /* ...after it, the new one. */
        console_cache_invalidate(cache);
        ck_assert_int_eq(level(1000, NULL), CONSOLE_PRESENT);
        ck_assert_uint_eq(B.calls, 4);
        B.online[0] = NULL;
        console_cache_invalidate(cache);
        ck_assert_int_eq(level(1000, "seat0"), CONSOLE_NONE);

        /* Other uids have entries of their own. */
        ck_assert_int_eq(level(1001, NULL), CONSOLE_NONE);
        ck_assert_uint_eq(B.calls, 8);
        ck_assert_int_eq(level(1001, NULL), CONSOLE_NONE);
        ck_assert_uint_eq(B.calls, 8);
}
END_TEST

START_TEST(test_errors_not_cached) {
        B.online[0] = B.active[0] = "seat0";
        B.fail = -EIO;
        ck_assert_int_eq(level(1000, NULL), -EIO);
        ck_assert_int_eq(level(1000, NULL), -EIO);
        ck_assert_uint_eq(B.calls, 2);
        B.fail = 0;
        ck_assert_int_eq(level(1000, NULL), CONSOLE_ACTIVE);
        ck_assert_uint_eq(B.calls, 4);
}
END_TEST

static int fail_second(uid_t uid, int require_active, char ***ret) {
        if (require_active)
                return -EACCES;
        *ret = strv_of((const char *const[]){ "seat0", NULL, NULL, NULL });
        return 1;
}

/* An error on the second list (active) of a fill: the first is freed (valgrind), nothing cached. */
START_TEST(test_error_on_second_list) {
        ConsoleCache *c = NULL;
        ck_assert_int_eq(console_cache_new(fail_second, &c), 0);
        Console k = console_cache_console(c);
        ck_assert_int_eq(k.level(k.userdata, 7, NULL), -EACCES);
        ck_assert_int_eq(k.level(k.userdata, 7, "seat0"), -EACCES);
        console_cache_free(c);
}
END_TEST

START_TEST(test_bounded) {
        uint64_t asked, read;

        /* 100,000 uids through 256 slots: each question is right, memory stays put. */
        B.online[0] = B.active[0] = "seat0";
        for (uint32_t uid = 0; uid < 100000; uid++) {
                int l = level(uid, NULL);
                if (l != (uid == 1000 ? CONSOLE_ACTIVE : CONSOLE_NONE))
                        ck_abort_msg("uid %u: level %d", uid, l);
        }
        console_cache_counts(cache, &asked, &read);
        ck_assert_uint_eq(asked, 100000);
        ck_assert_uint_eq(read, 100000 - 1); /* 65535 is nobody's uid for systemd: never read */
        /* The same uid again and again reads once. */
        for (int i = 0; i < 1000; i++)
                ck_assert_int_eq(level(1000, "seat0"), CONSOLE_ACTIVE);
        console_cache_counts(cache, &asked, &read);
        ck_assert_uint_le(read, 100000);
}

START_TEST(test_uid_65535) {
        B.fail = -EINVAL; /* what sd-login says for it */
        ck_assert_int_eq(level(65535, NULL), CONSOLE_NONE);
        ck_assert_int_eq(level(65535, "seat0"), CONSOLE_NONE);
        ck_assert_uint_eq(B.calls, 0);
        ck_assert_int_eq(level(65534, NULL), -EINVAL);
}
END_TEST

START_TEST(test_free_null) {
        ck_assert_ptr_null(console_cache_free(NULL));
        console_cache_invalidate(NULL);
}
END_TEST

static Suite *console_suite(void) {
        Suite *s = suite_create("console");
        TCase *tc = tcase_create("cache");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_level_of);
        tcase_add_test(tc, test_cached_until_invalidated);
        tcase_add_test(tc, test_errors_not_cached);
        tcase_add_test(tc, test_error_on_second_list);
        tcase_add_test(tc, test_bounded);
        tcase_add_test(tc, test_uid_65535);
        tcase_add_test(tc, test_free_null);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return test_run(console_suite());
}
