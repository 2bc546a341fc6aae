/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The action grammar, shared by the daemon, the policy loader and the
 * clients so that all of them accept exactly the same names.
 */
#include "action.h"

static bool action_char(unsigned char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
               c == '_' || c == ':' || c == '/' || c == '-';
}

bool action_valid(const char *s, size_t n, bool pattern) {
        if (!s || n == 0 || n > ACTION_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!action_char((unsigned char) s[i]) && !(pattern && s[i] == '*'))
                        return false;
        return true;
}
