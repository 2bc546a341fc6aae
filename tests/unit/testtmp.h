/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Temporary folders that credgated trusts, for the unit tests that load a
 * policy with the ownership checks on or run the real daemon.
 *
 * credgated refuses a policy below any folder that someone other than root
 * (or its own user) can write, /tmp included: its sticky bit stops renames,
 * not new entries (issue 10). The tests do not weaken that check; they work
 * in a folder whose every ancestor passes it, which this helper verifies.
 */
#pragma once

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Would credgated (running as our euid) accept @path and every folder above it? */
static inline bool test_folder_trusted(const char *path) {
        char buf[PATH_MAX];
        struct stat st;

        if (!realpath(path, buf))
                return false;
        for (;;) {
                if (stat(buf[0] ? buf : "/", &st) < 0 || !S_ISDIR(st.st_mode))
                        return false;
                if ((st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & (S_IWGRP | S_IWOTH)))
                        return false;
                char *slash = strrchr(buf, '/');
                if (!slash || buf[0] == '\0')
                        return true;
                *slash = '\0';
        }
}

/*
 * Make a fresh folder @prefix-XXXXXX (mode 0755, so that children that
 * dropped root can reach sockets in it) in the first trusted one of
 * $CREDGATE_TEST_TMPDIR, /run/credgate-tests (created as root),
 * $XDG_RUNTIME_DIR and $CREDGATE_BUILDDIR, keeping paths short enough for
 * socket names. Writes the path to @buf.
 * Return: 0, or -1 after saying why on stderr.
 */
static inline int test_trusted_mkdtemp(char *buf, size_t size, const char *prefix) {
        const char *cands[] = { getenv("CREDGATE_TEST_TMPDIR"), geteuid() == 0 ? "/run/credgate-tests" : NULL,
                                getenv("XDG_RUNTIME_DIR"), getenv("CREDGATE_BUILDDIR") };

        if (geteuid() == 0 && mkdir("/run/credgate-tests", 0755) == 0)
                (void) chmod("/run/credgate-tests", 0755);
        for (size_t i = 0; i < sizeof(cands) / sizeof(cands[0]); i++) {
                const char *base = cands[i];
                if (!base || base[0] != '/' || strlen(base) > 40 || !test_folder_trusted(base))
                        continue;
                if ((size_t) snprintf(buf, size, "%s/%s-XXXXXX", base, prefix) >= size)
                        continue;
                if (!mkdtemp(buf) || chmod(buf, 0755) < 0) {
                        fprintf(stderr, "mkdtemp '%s': %s\n", buf, strerror(errno));
                        return -1;
                }
                return 0;
        }
        fprintf(stderr, "no folder for test files that credgated would trust (every folder above it owned by "
                        "root or by us, none writable by group or others; /tmp is not one): set "
                        "CREDGATE_TEST_TMPDIR to one, at most 40 characters long\n");
        return -1;
}
