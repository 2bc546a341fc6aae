/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "policy.h"

/* Errors and warnings found while loading a policy, in the order found. */
typedef struct Diag {
        bool warning;
        char *text; /* "FILE:LINE: message" or "FILE:LINE: warning: message" */
} Diag;

typedef struct Diags {
        Diag *v;
        size_t n, n_errors, n_warnings;
} Diags;

void diags_done(Diags *d);

/*
 * Read the policy file @path, resolve user and group names, and compile it.
 * Every problem goes to @diags (which the caller frees with diags_done());
 * the policy is refused when there is at least one error.
 *
 * Return: 0 and *ret_policy when the policy loaded (warnings allowed),
 * -EINVAL when it has errors, -ENOMEM.
 */
int policy_load(const char *path, Diags *diags, Policy **ret_policy);
