/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "diag.h"
#include "policy.h"

/* Which decisions go to the audit log. */
typedef enum AuditLevel {
        AUDIT_NONE,
        AUDIT_DENY,
        AUDIT_ALL,
} AuditLevel;

/* The settings group of the main policy file; see credgate.conf(5). */
typedef struct Settings {
        uint64_t request_timeout; /* seconds */
        uint64_t max_connections;
        uint64_t max_connections_per_uid;
        uint64_t idle_exit; /* seconds, 0 = never */
        AuditLevel log;
        bool rule_stats; /* count decisions per rule (metrics, credgate stats --rules) */
} Settings;

#define SETTING_TIMEOUT_MAX 3600
#define SETTING_CONNECTIONS_MAX 1048576
#define SETTING_IDLE_EXIT_MAX 86400

#define SETTINGS_DEFAULTS                                                                                \
        ((Settings){ .request_timeout = 10,                                                             \
                     .max_connections = 16384,                                                          \
                     .max_connections_per_uid = 1024,                                                   \
                     .idle_exit = 0,                                                                    \
                     .log = AUDIT_DENY })

/* Settings given on the command line: they win over the file, on every reload. */
typedef struct SettingsOverride {
        Settings v;
        bool request_timeout, max_connections, max_connections_per_uid, idle_exit, log;
} SettingsOverride;

void settings_apply_override(Settings *st, const SettingsOverride *o);

/* "none"/"deny"/"all". Return: 0 or -EINVAL. */
int settings_parse_audit(const char *s, AuditLevel *ret);
const char *settings_audit_name(AuditLevel a);

/*
 * Parse one policy file's @text (named @path in messages) and add its rules
 * to @b. The main file may hold default, rules and settings (written to
 * @settings when not NULL); a drop-in (@main_file false) only rules.
 *
 * Return: 0, or -EINVAL with the reasons in @diags, or -ENOMEM. The number of
 * rules added goes to *ret_n_rules.
 */
int policy_parse(PolicyBuilder *b, Diags *diags, const char *path, const char *text, bool main_file,
                 Settings *settings, size_t *ret_n_rules);
