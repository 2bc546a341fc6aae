/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

/* Errors and warnings found while loading a policy, in the order found. */
typedef struct Diag {
        bool warning;
        char *text; /* "FILE:LINE: message" or "FILE:LINE: warning: message" */
} Diag;

typedef struct Diags {
        Diag *v;
        size_t n, n_errors, n_warnings;
} Diags;

/*
 * Record "PATH:LINE: [warning: ]message" ("PATH: ..." when @line <= 0). The
 * count is kept even when memory for the text runs out: no error is lost.
 */
_printf_(5, 6) void diags_add(Diags *d, bool warning, const char *path, int line, const char *fmt, ...);

void diags_done(Diags *d);
