/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "diag.h"
#include "policy.h"

/* The uids and gids this host knows, when its databases can be listed completely. */
typedef struct KnownIds {
        bool complete_uids, complete_gids; /* false: some source (LDAP, SSSD, NIS...) cannot be listed */
        uint32_t *uids, *gids;              /* sorted, unique */
        size_t n_uids, n_gids;
        char passwd_sources[64], group_sources[64]; /* as nsswitch.conf names them, for messages */
} KnownIds;

/*
 * List the users and groups of this host when @nsswitch (normally
 * /etc/nsswitch.conf; a missing file means "files") names only sources that
 * can be listed completely: files and systemd. The gids are the group
 * database's plus every user's primary gid.
 * Return: 0 (with complete_* false when a database cannot be listed), or -ENOMEM.
 */
int known_ids_load(const char *nsswitch, KnownIds *ret);
void known_ids_done(KnownIds *k);

/* At most this many candidates per index chain and rule are tried for shadowing. */
#define LINT_CHAIN_BUDGET 256

/*
 * Warnings about @p that are true of every request: rules that can never
 * decide because an earlier rule always matches first, and (with @known)
 * uid or gid ranges that hold no user or group this host knows.
 * They go to @diags in rule order.
 * Return: 0, or -ENOMEM.
 */
int policy_lint(const Policy *p, const KnownIds *known, Diags *diags);
