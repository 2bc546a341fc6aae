/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Uids and gids: the one parser for decimal ids, and user database lookups
 * with buffers that grow, shared by the policy loader and the CLI so that
 * both read ids and names exactly alike.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ids.h"
#include "macro.h"

#define LOOKUP_BUF_MAX (1u << 24)

int id_parse(const char *s, size_t n, uint32_t *ret) {
        uint64_t v = 0;

        if (n == 0)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                /* Saturate: "99999999999" is a number, just too large. */
                if (v <= ID_MAX)
                        v = v * 10 + (uint64_t) (s[i] - '0');
        }
        if (v > ID_MAX)
                return -ERANGE;
        *ret = (uint32_t) v;
        return 0;
}

/* glibc reports "not found" as 0 with no result; some NSS modules use these instead. */
static bool lookup_not_found(int r) {
        return r == 0 || r == ENOENT || r == ESRCH || r == EBADF || r == EPERM;
}

int id_get_passwd(const char *name, uid_t uid, struct passwd *ret_pw, char **ret_buf) {
        _cleanup_free_ char *buf = NULL;
        struct passwd *res = NULL;
        size_t size = 4096;
        int r;

        for (;;) {
                char *m = realloc(buf, size);
                if (!m)
                        return -ENOMEM;
                buf = m;
                r = name ? getpwnam_r(name, ret_pw, buf, size, &res) : getpwuid_r(uid, ret_pw, buf, size, &res);
                if (r != ERANGE || size >= LOOKUP_BUF_MAX)
                        break;
                size *= 2;
        }
        if (!res)
                return lookup_not_found(r) ? -ENOENT : -r;
        *ret_buf = TAKE_PTR(buf);
        return 0;
}

int id_get_group(const char *name, gid_t gid, struct group *ret_gr, char **ret_buf) {
        _cleanup_free_ char *buf = NULL;
        struct group *res = NULL;
        size_t size = 16384;
        int r;

        /* Groups with many members need a larger buffer. */
        for (;;) {
                char *m = realloc(buf, size);
                if (!m)
                        return -ENOMEM;
                buf = m;
                r = name ? getgrnam_r(name, ret_gr, buf, size, &res) : getgrgid_r(gid, ret_gr, buf, size, &res);
                if (r != ERANGE || size >= LOOKUP_BUF_MAX)
                        break;
                size *= 2;
        }
        if (!res)
                return lookup_not_found(r) ? -ENOENT : -r;
        *ret_buf = TAKE_PTR(buf);
        return 0;
}

