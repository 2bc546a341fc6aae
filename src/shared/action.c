/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The action grammar, shared by the daemon, the policy loader and the
 * clients so that all of them accept exactly the same names. Checked on
 * every request, so it is a table lookup per byte.
 */
#include <stdint.h>

#include "action.h"

#define A ACTION_CLASS_CHAR
#define P ACTION_CLASS_STAR
const uint8_t action_char_class[256] = {
        ['a'] = A, ['b'] = A, ['c'] = A, ['d'] = A, ['e'] = A, ['f'] = A, ['g'] = A, ['h'] = A, ['i'] = A,
        ['j'] = A, ['k'] = A, ['l'] = A, ['m'] = A, ['n'] = A, ['o'] = A, ['p'] = A, ['q'] = A, ['r'] = A,
        ['s'] = A, ['t'] = A, ['u'] = A, ['v'] = A, ['w'] = A, ['x'] = A, ['y'] = A, ['z'] = A, ['A'] = A,
        ['B'] = A, ['C'] = A, ['D'] = A, ['E'] = A, ['F'] = A, ['G'] = A, ['H'] = A, ['I'] = A, ['J'] = A,
        ['K'] = A, ['L'] = A, ['M'] = A, ['N'] = A, ['O'] = A, ['P'] = A, ['Q'] = A, ['R'] = A, ['S'] = A,
        ['T'] = A, ['U'] = A, ['V'] = A, ['W'] = A, ['X'] = A, ['Y'] = A, ['Z'] = A, ['0'] = A, ['1'] = A,
        ['2'] = A, ['3'] = A, ['4'] = A, ['5'] = A, ['6'] = A, ['7'] = A, ['8'] = A, ['9'] = A, ['.'] = A,
        ['_'] = A, [':'] = A, ['/'] = A, ['-'] = A, ['*'] = P,
};

bool action_valid(const char *s, size_t n, bool pattern) {
        uint8_t ok = pattern ? (A | P) : A;

        if (!s || n == 0 || n > ACTION_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!(action_char_class[(unsigned char) s[i]] & ok))
                        return false;
        return true;
}
