/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the modules of the credgate command share: the command table's
 * types, exit statuses, messages, and (for eval and test) loading a policy
 * and resolving the identity to judge.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"
#include "peercred.h"
#include "policy.h"

/* Exit status: the same for check, eval and test. */
#define EXIT_ALLOW 0
#define EXIT_DENY 1
#define EXIT_ERROR 2

typedef struct Context {
        const char *socket; /* NULL: $CREDGATE_SOCKET, else the default */
} Context;

typedef struct Command {
        const char *name;
        const char *usage;
        int (*run)(const Context *ctx, const struct Command *cmd, int argc, char **argv);
        void (*help)(void);
} Command;

/* "credgate: MESSAGE" on stderr. Return: EXIT_ERROR. */
_printf_(1, 2) int fail(const char *fmt, ...);

/* A usage error: the message, the synopsis of @cmd (NULL: the program), and where to read more.
 * Return: EXIT_ERROR. */
_printf_(2, 3) int usage_error(const Command *cmd, const char *fmt, ...);

/* Turn getopt's '?' and ':' for @optstring into a usage error. Return: EXIT_ERROR. */
int option_error(const Command *cmd, const char *optstring, int c, char **argv);

/* Flush stdout and report a failed write (a full disk, a closed pipe). Return: @status or EXIT_ERROR. */
int finish_output(int status);

/* ---- the policy and the identity to judge: shared by eval and test (cmd-eval.c) ---- */

#define MAX_RULE_DIRS 64

/* Long options of eval and test without a short form. */
enum { OPT_USER = 0x100, OPT_UID, OPT_GID, OPT_GROUPS, OPT_RULES_DIR, OPT_COVERAGE, OPT_JUNIT, OPT_CONSOLE, OPT_SEAT };

/* Which policy to load: -c and --rules-dir. */
typedef struct PolicyArgs {
        const char *config;
        const char *rule_dirs[MAX_RULE_DIRS];
        size_t n_rule_dirs;
} PolicyArgs;

#define POLICY_ARGS_DEFAULT { .config = CREDGATE_CONFIG_FILE }

/* Take -c FILE or --rules-dir DIR. Return: 1 when @opt is neither, 0, or EXIT_ERROR after a usage error. */
int policy_option(const Command *cmd, PolicyArgs *a, int opt, const char *arg);

/*
 * Load the policy the way the daemon does (drop-in folders, then the main
 * file), minus its ownership checks: an admin may try a draft policy from
 * their home folder. With @lint, the lint of credgated -t runs too. Errors
 * and warnings go to stderr.
 * Return: 0 and *ret, or EXIT_ERROR.
 */
int load_policy(PolicyArgs *a, bool lint, Policy **ret);

/*
 * An identity as eval's options or a test case give it. Exactly one of
 * user and uid. The labels name the option or key in messages.
 */
typedef struct IdentityRequest {
        const char *user;          /* a user name: uid, gid and groups from the user database */
        const char *uid;           /* a decimal uid: gid and groups from the database when it knows it */
        const char *gid;           /* decimal primary gid, or NULL */
        const char *group;         /* primary group by name, or NULL (not with gid) */
        bool has_groups;           /* the supplementary groups are given (maybe none) */
        const char *const *groups; /* names or decimal ids */
        size_t n_groups;
        const char *const *gids; /* decimal ids only */
        size_t n_gids;
        const char *uid_label, *gid_label, *group_label, *groups_label, *gids_label;
        const char *no_gid_hint; /* what to give for a uid the database does not know */
} IdentityRequest;

/*
 * Resolve the identity to evaluate, as a login session of it would hold it.
 * Return: 0 and *ret (free with peer_creds_done()), or -1 and the message in @err.
 */
int resolve_identity(const IdentityRequest *q, PeerCreds *ret, char *err, size_t size);

/*
 * A simulated login state for console conditions: the identity judged holds
 * @level on @seat and no session on any other seat. Without one, eval and
 * test judge as on a machine without seats (level none).
 */
typedef struct ConsoleSim {
        ConsoleLevel level;
        const char *seat; /* NULL: "seat0" */
        bool given;       /* --console was given */
} ConsoleSim;

/* Take --console or --seat. Return: 1 when @opt is neither, 0, or EXIT_ERROR after a usage error. */
int console_option(const Command *cmd, ConsoleSim *sim, int opt, const char *arg);

/* Check --seat against --console once all options are read. Return: 0, or EXIT_ERROR after a usage error. */
int console_options_done(const Command *cmd, const ConsoleSim *sim);

/* The Console that answers from @sim (which must outlive it). */
Console console_sim(const ConsoleSim *sim);

/* "active on seat0", "present on seat1", "none". */
const char *console_sim_describe(const ConsoleSim *sim, char *buf, size_t size);

/* How a verdict names its cause: the rule's id, else FILE:LINE, else "default". */
const char *verdict_by(const Verdict *v, char *buf, size_t size);

/* The commands of cmd-eval.c and cmd-test.c. */
int cmd_eval(const Context *ctx, const Command *cmd, int argc, char **argv);
void help_eval(void);
int cmd_test(const Context *ctx, const Command *cmd, int argc, char **argv);
void help_test(void);
int cmd_stats(const Context *ctx, const Command *cmd, int argc, char **argv);
void help_stats(void);
