/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Helpers shared by the Check unit tests. */
#pragma once

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Write @text to a new temporary file; return its malloc'd path. */
static inline char *test_write_tmp(const char *text) {
        char *path = strdup("/tmp/credgate-test-XXXXXX");
        ck_assert_ptr_nonnull(path);
        int fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        size_t n = strlen(text);
        ck_assert_int_eq(write(fd, text, n), (ssize_t) n);
        close(fd);
        return path;
}

/* Run @s and return the process exit status (TAP goes where CK_TAP_LOG_FILE_NAME says). */
static inline int test_run(Suite *s) {
        SRunner *sr = srunner_create(s);
        srunner_run_all(sr, CK_ENV);
        int failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
