/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Diagnostics of a policy load: every error and warning, as the lines an
 * administrator reads ("FILE:LINE: message"). Loading code only collects
 * them; the daemon and the CLI decide where they go.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "diag.h"

void diags_done(Diags *d) {
        if (!d)
                return;
        for (size_t i = 0; i < d->n; i++)
                free(d->v[i].text);
        free(d->v);
        *d = (Diags){};
}

static void diags_addv(Diags *d, bool warning, const char *path, int line, const char *fmt, va_list ap) {
        char *msg = NULL, *text = NULL;
        int r = vasprintf(&msg, fmt, ap);
        if (r < 0)
                msg = NULL;

        if (line > 0)
                r = asprintf(&text, "%s:%d: %s%s", path, line, warning ? "warning: " : "", msg ? msg : "out of memory");
        else
                r = asprintf(&text, "%s: %s%s", path, warning ? "warning: " : "", msg ? msg : "out of memory");
        free(msg);

        /* Count the error even if we cannot store its text: never lose one. */
        if (warning)
                d->n_warnings++;
        else
                d->n_errors++;
        if (r < 0)
                return;
        Diag *v = reallocarray(d->v, d->n + 1, sizeof(Diag));
        if (!v) {
                free(text);
                return;
        }
        d->v = v;
        d->v[d->n++] = (Diag){ .warning = warning, .text = text };
}

void diags_add(Diags *d, bool warning, const char *path, int line, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        diags_addv(d, warning, path, line, fmt, ap);
        va_end(ap);
}
