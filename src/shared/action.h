/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define ACTION_MAX 255

/*
 * Is @s (length @n) a valid action: 1..ACTION_MAX characters of
 * [A-Za-z0-9._:/-], plus '*' when @pattern is true?
 *
 * Return: true when valid.
 */
bool action_valid(const char *s, size_t n, bool pattern);
