/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <grp.h>
#include <pwd.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ID_MAX UINT32_C(4294967294) /* 4294967295 is (uid_t)-1, "no id" */

/*
 * A decimal uid or gid of @n characters: digits only (no sign, space or
 * prefix), 0..ID_MAX; leading zeros are allowed.
 * Return: 0 and *ret, -EINVAL for anything but digits, -ERANGE for digits
 * whose value is above ID_MAX, however many there are.
 */
int id_parse(const char *s, size_t n, uint32_t *ret);

/*
 * getpwnam_r() (@name set) or getpwuid_r(), with a buffer that grows as
 * needed. The strings of *ret_pw live in *ret_buf, which the caller frees.
 * Return: 0, -ENOENT when the database has no such user, or -errno.
 */
int id_get_passwd(const char *name, uid_t uid, struct passwd *ret_pw, char **ret_buf);

/* getgrnam_r() (@name set) or getgrgid_r(); as id_get_passwd(). */
int id_get_group(const char *name, gid_t gid, struct group *ret_gr, char **ret_buf);
