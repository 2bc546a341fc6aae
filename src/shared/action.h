/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ACTION_MAX 255

#define ACTION_CLASS_CHAR 1 /* [A-Za-z0-9._:/-] */
#define ACTION_CLASS_STAR 2 /* '*', in patterns only */
extern const uint8_t action_char_class[256];

/* Is @c one of the action characters [A-Za-z0-9._:/-]? */
static inline bool action_char(unsigned char c) {
        return action_char_class[c] & ACTION_CLASS_CHAR;
}

/*
 * Is @s (length @n) a valid action: 1..ACTION_MAX characters of
 * [A-Za-z0-9._:/-], plus '*' when @pattern is true?
 *
 * Return: true when valid.
 */
bool action_valid(const char *s, size_t n, bool pattern);
