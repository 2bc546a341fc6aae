/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "diag.h"
#include "policy-parse.h"
#include "policy.h"

/* What became of one file or folder the loader looked at (for -t). */
typedef enum SourceState {
        SOURCE_LOADED,  /* its rules are in the policy */
        SOURCE_MASK,    /* empty or /dev/null: hides same-named files below it */
        SOURCE_MASKED,  /* hidden by a mask of the same name */
        SOURCE_SKIPPED, /* not used: see note */
        SOURCE_FAILED,  /* refused: see the diagnostics */
} SourceState;

typedef struct Source {
        char *path;
        SourceState state;
        char *note; /* why skipped or masked; NULL for loaded files */
        size_t n_rules;
} Source;

typedef struct Sources {
        Source *v;
        size_t n;
} Sources;

void sources_done(Sources *s);
const char *source_state_name(SourceState s);

typedef struct PolicyOptions {
        const char *main_file;
        const char *const *rule_dirs; /* drop-in folders, highest precedence first */
        size_t n_rule_dirs;
        bool check_ownership; /* files and folders must be owned by root (or trusted_uid), not group/other-writable */
        uid_t trusted_uid;
        /* A candidate drop-in (credgated -t --drop-in): loaded as if it were @dropin_name in the
         * first folder, so it hides that name in every folder. NULL for none. */
        const char *dropin_file;
        const char *dropin_name; /* NAME.conf, no '/' */
} PolicyOptions;

/*
 * Load a whole policy: the drop-in files of @o->rule_dirs (a name in an
 * earlier folder hides the same name in later ones; evaluation order is by
 * file name, byte order) followed by the rules of the main file, plus the
 * main file's settings (applied over @settings, which the caller fills with
 * defaults). Every error and warning goes to @diags; what happened to every
 * file goes to @sources (may be NULL).
 *
 * Return: 0 and *ret_policy when the policy loaded (warnings allowed),
 * -EINVAL when it has errors, -ENOMEM.
 */
int policy_load_full(const PolicyOptions *o, Diags *diags, Sources *sources, Settings *settings,
                     Policy **ret_policy);

/* Load the single file @path with no drop-ins and no ownership checks. */
int policy_load(const char *path, Diags *diags, Policy **ret_policy);
