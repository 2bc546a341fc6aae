/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * credgate eval, and what eval and test share: loading a policy with the
 * daemon's own loader and evaluator (libpolicy, no copy), and resolving the
 * identity to judge from names or numbers as a login session would hold it.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "action.h"
#include "cli.h"
#include "ids.h"
#include "lint.h"
#include "policy-load.h"

static int cmp_gid(const void *a, const void *b) {
        gid_t x = *(const gid_t *) a, y = *(const gid_t *) b;
        return x < y ? -1 : x > y;
}

/* Sort ascending and drop duplicates, as the kernel reports groups. */
static size_t sort_unique(gid_t *g, size_t n) {
        size_t k = 0;

        if (n == 0)
                return 0;
        qsort(g, n, sizeof(gid_t), cmp_gid);
        for (size_t i = 1; i < n; i++)
                if (g[i] != g[k])
                        g[++k] = g[i];
        return k + 1;
}

/*
 * The groups the user database gives @user with primary group @gid, as
 * initgroups(3) would set them at login.
 * Return: 0 and *ret_groups and *ret_n, or -errno.
 */
static int user_groups(const char *user, gid_t gid, gid_t **ret_groups, size_t *ret_n) {
        int size = 64;

        for (;;) {
                _cleanup_free_ gid_t *g = calloc((size_t) size, sizeof(gid_t));
                int n = size;

                if (!g)
                        return -ENOMEM;
                if (getgrouplist(user, gid, g, &n) >= 0) {
                        *ret_n = (size_t) n;
                        *ret_groups = TAKE_PTR(g);
                        return 0;
                }
                /* glibc stores the size it needs in n; be safe if it does not. */
                size = n > size ? n : size * 2;
                if (size > (1 << 20))
                        return -E2BIG;
        }
}

_printf_(3, 4) static int set_error(char *err, size_t size, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(err, size, fmt, ap);
        va_end(ap);
        return -1;
}

/*
 * One supplementary group: a decimal id, or (when @names) a group name.
 * @label names the option or key in messages.
 * Return: 0 and *ret, or -1 and the message in @err.
 */
static int resolve_group(const char *item, bool names, const char *label, gid_t *ret, char *err, size_t size) {
        _cleanup_free_ char *buf = NULL;
        struct group gr;
        uint32_t id;
        int r;

        if (!names || (*item && strspn(item, "0123456789") == strlen(item))) {
                if (id_parse(item, strlen(item), &id) < 0)
                        return set_error(err, size, "%s: '%s' is not a group id in 0..4294967294", label, item);
                *ret = (gid_t) id;
                return 0;
        }
        r = id_get_group(item, 0, &gr, &buf);
        if (r == -ENOENT)
                return set_error(err, size, "%s: unknown group '%s'", label, item);
        if (r < 0)
                return set_error(err, size, "%s: cannot look up group '%s': %s", label, item, strerror(-r));
        *ret = gr.gr_gid;
        return 0;
}

/*
 * Split --groups, comma-separated group names or decimal ids ("" is the
 * empty list), into its entries (pointing into *ret_buf).
 * Return: 0, or EXIT_ERROR after a message.
 */
static int split_groups(const char *list, char **ret_buf, const char ***ret_items, size_t *ret_n) {
        _cleanup_free_ char *buf = strdup(list);
        _cleanup_free_ const char **items = calloc(strlen(list) / 2 + 2, sizeof(char *));
        size_t n = 0;
        char *p;

        if (!buf || !items)
                return fail("--groups: %s", strerror(ENOMEM));
        if (*list != '\0')
                for (p = buf;;) {
                        size_t len = strcspn(p, ",");
                        bool last = p[len] == '\0';

                        if (len == 0)
                                return fail("--groups: empty entry in '%s'", list);
                        p[len] = '\0';
                        items[n++] = p;
                        if (last)
                                break;
                        p += len + 1;
                }
        *ret_buf = TAKE_PTR(buf);
        *ret_items = TAKE_PTR(items);
        *ret_n = n;
        return 0;
}


/* ------------------------------------------------------------------------ */
/* The policy and the identity to judge: shared by eval and test */

/* Take -c FILE or --rules-dir DIR. Return: 1 when @opt is neither, 0, or EXIT_ERROR after a usage error. */
int policy_option(const Command *cmd, PolicyArgs *a, int opt, const char *arg) {
        switch (opt) {
        case 'c':
                a->config = arg;
                return 0;
        case OPT_RULES_DIR:
                if (a->n_rule_dirs == MAX_RULE_DIRS)
                        return usage_error(cmd, "too many --rules-dir folders");
                a->rule_dirs[a->n_rule_dirs++] = arg;
                return 0;
        default:
                return 1;
        }
}

int console_option(const Command *cmd, ConsoleSim *sim, int opt, const char *arg) {
        switch (opt) {
        case OPT_CONSOLE:
                if (console_level_from_name(arg, &sim->level) < 0)
                        return usage_error(cmd, "--console: '%s' is not active, present or none", arg);
                sim->given = true;
                return 0;
        case OPT_SEAT:
                if (!policy_seat_valid(arg))
                        return usage_error(cmd, "--seat: '%s' is not a seat name (such as seat0)", arg);
                sim->seat = arg;
                return 0;
        default:
                return 1;
        }
}

int console_options_done(const Command *cmd, const ConsoleSim *sim) {
        if (sim->seat && (!sim->given || sim->level == CONSOLE_NONE))
                return usage_error(cmd, "--seat needs --console active or --console present");
        return 0;
}

static int sim_level(void *userdata, uint32_t uid, const char *seat) {
        const ConsoleSim *sim = userdata;
        return !seat || strcmp(seat, sim->seat ? sim->seat : "seat0") == 0 ? (int) sim->level : CONSOLE_NONE;
}

Console console_sim(const ConsoleSim *sim) {
        return (Console){ .level = sim_level, .userdata = (void *) sim };
}

const char *console_sim_describe(const ConsoleSim *sim, char *buf, size_t size) {
        if (sim->level == CONSOLE_NONE)
                return "none";
        snprintf(buf, size, "%s on %s", console_level_name(sim->level), sim->seat ? sim->seat : "seat0");
        return buf;
}

/*
 * Load the policy the way the daemon does (drop-in folders, then the main
 * file), minus its ownership checks: an admin may try a draft policy from
 * their home folder. Errors and warnings go to stderr.
 * Return: 0 and *ret, or EXIT_ERROR.
 */
int load_policy(PolicyArgs *a, bool lint, Policy **ret) {
        Settings settings = SETTINGS_DEFAULTS;
        Diags diags = {};
        int r;

        if (a->n_rule_dirs == 0) {
                a->rule_dirs[a->n_rule_dirs++] = CREDGATE_RULES_DIR_ETC;
                a->rule_dirs[a->n_rule_dirs++] = CREDGATE_RULES_DIR_VENDOR;
        }
        PolicyOptions po = { .main_file = a->config, .rule_dirs = a->rule_dirs, .n_rule_dirs = a->n_rule_dirs };
        r = policy_load_full(&po, &diags, NULL, &settings, ret);
        if (r == 0 && lint) {
                KnownIds known = {};
                r = known_ids_load("/etc/nsswitch.conf", &known);
                if (r == 0)
                        r = policy_lint(*ret, &known, &diags);
                known_ids_done(&known);
                if (r < 0)
                        *ret = policy_unref(*ret);
        }
        for (size_t i = 0; i < diags.n; i++)
                fprintf(stderr, "%s\n", diags.v[i].text);
        if (r == -EINVAL)
                fail("'%s': %zu error(s), %zu warning(s): policy refused", a->config, diags.n_errors,
                     diags.n_warnings);
        else if (r < 0)
                fail("cannot load '%s': %s", a->config, strerror(-r));
        diags_done(&diags);
        return r < 0 ? EXIT_ERROR : 0;
}

/*
 * Resolve the identity to evaluate, as a login session of it would hold it.
 * Return: 0 and *ret (free with peer_creds_done()), or -1 and the message in @err.
 */
int resolve_identity(const IdentityRequest *q, PeerCreds *ret, char *err, size_t size) {
        _cleanup_free_ char *buf = NULL;
        _cleanup_free_ gid_t *groups = NULL;
        struct passwd pw = {};
        bool known = false;
        size_t n_groups = 0;
        uint32_t uid = 0, gid = 0;
        int r;

        if (q->user) {
                r = id_get_passwd(q->user, 0, &pw, &buf);
                if (r == -ENOENT)
                        return set_error(err, size, "unknown user '%s'", q->user);
                if (r < 0)
                        return set_error(err, size, "cannot look up user '%s': %s", q->user, strerror(-r));
                known = true;
                uid = pw.pw_uid;
        } else {
                if (id_parse(q->uid, strlen(q->uid), &uid) < 0)
                        return set_error(err, size, "%s: '%s' is not a user id in 0..4294967294", q->uid_label,
                                         q->uid);
                r = id_get_passwd(NULL, uid, &pw, &buf);
                if (r < 0 && r != -ENOENT)
                        return set_error(err, size, "cannot look up uid %" PRIu32 ": %s", uid, strerror(-r));
                known = r == 0;
        }
        if (!known && !q->gid && !q->group)
                return set_error(err, size, "uid %" PRIu32 " is not in the user database: %s", uid, q->no_gid_hint);

        if (q->gid) {
                if (id_parse(q->gid, strlen(q->gid), &gid) < 0)
                        return set_error(err, size, "%s: '%s' is not a group id in 0..4294967294", q->gid_label,
                                         q->gid);
        } else if (q->group) {
                gid_t g;
                if (resolve_group(q->group, true, q->group_label, &g, err, size) < 0)
                        return -1;
                gid = g;
        } else
                gid = pw.pw_gid;

        if (q->has_groups) {
                size_t n = 0;

                if (q->n_groups + q->n_gids > 0 && !(groups = calloc(q->n_groups + q->n_gids, sizeof(gid_t))))
                        return set_error(err, size, "%s", strerror(ENOMEM));
                for (size_t i = 0; i < q->n_groups; i++)
                        if (resolve_group(q->groups[i], true, q->groups_label, &groups[n++], err, size) < 0)
                                return -1;
                for (size_t i = 0; i < q->n_gids; i++)
                        if (resolve_group(q->gids[i], false, q->gids_label, &groups[n++], err, size) < 0)
                                return -1;
                n_groups = n;
        } else if (known) {
                /* The groups a login session of this user gets: based on its database gid. */
                r = user_groups(pw.pw_name, pw.pw_gid, &groups, &n_groups);
                if (r < 0)
                        return set_error(err, size, "cannot list the groups of user '%s': %s", pw.pw_name,
                                         strerror(-r));
        }

        /* policy_check() expects the kernel's form: ascending, no duplicates. */
        n_groups = sort_unique(groups, n_groups);
        *ret = (PeerCreds){ .uid = uid, .gid = gid, .n_groups = n_groups, .groups = TAKE_PTR(groups) };
        return 0;
}

/* How a verdict names its cause: the rule's id, else FILE:LINE, else "default". */
const char *verdict_by(const Verdict *v, char *buf, size_t size) {
        if (v->file && v->id)
                return v->id;
        if (v->file) {
                snprintf(buf, size, "%s:%u", v->file, v->line);
                return buf;
        }
        return "default";
}

/* ------------------------------------------------------------------------ */
/* eval */

void help_eval(void) {
        printf("Usage: credgate eval [-c FILE] [--rules-dir DIR]... (--user NAME | --uid N) [--gid N]\n"
               "                     [--groups LIST] [--console LEVEL [--seat SEAT]] ACTION...\n"
               "Evaluate a policy offline, with the daemon's own policy code and the same files\n"
               "(drop-in folders, then the main file), and show for each ACTION the decision and\n"
               "the rule that decides it.\n\n"
               "  -c, --config FILE   policy file (default %s)\n"
               "      --rules-dir DIR drop-in folder; repeat for more, the first has the highest\n"
               "                      precedence (default %s, %s)\n"
               "      --user NAME     evaluate for this user; uid, gid and groups from the user database\n"
               "      --uid N         evaluate for this uid; gid and groups from the user database\n"
               "      --gid N         primary group id (needed when the database does not know --uid)\n"
               "      --groups LIST   supplementary groups: comma-separated names or ids ('' for none)\n"
               "      --console LEVEL simulate the identity's login state for console conditions:\n"
               "                      active (the foreground session of a seat), present (a session\n"
               "                      on a seat) or none (the default: as on a machine without seats)\n"
               "      --seat SEAT     the seat of the simulated session (default seat0)\n"
               "  -h, --help          show this help\n\n"
               "Prints 'ALLOW ACTION by FILE:LINE' or 'DENY ACTION by FILE:LINE' for the first\n"
               "matching rule (then ' (ID)' and ': MESSAGE' when the rule has them), or\n"
               "'ALLOW ACTION by default' / 'DENY ACTION by default'. With --console, a first\n"
               "line 'console: LEVEL on SEAT (simulated)' says what was assumed.\n"
               "Policy errors and warnings go to stderr; the daemon's file ownership checks\n"
               "are not applied. No daemon is contacted.\n"
               "Exit status: 0 when every ACTION is allowed, 1 when any is denied, 2 on error.\n",
               CREDGATE_CONFIG_FILE, CREDGATE_RULES_DIR_ETC, CREDGATE_RULES_DIR_VENDOR);
}

int cmd_eval(const Context *ctx, const Command *cmd, int argc, char **argv) {
        static const char optstring[] = ":c:h";
        static const struct option opts[] = {
                { "config", required_argument, NULL, 'c' },
                { "user", required_argument, NULL, OPT_USER },
                { "uid", required_argument, NULL, OPT_UID },
                { "gid", required_argument, NULL, OPT_GID },
                { "groups", required_argument, NULL, OPT_GROUPS },
                { "rules-dir", required_argument, NULL, OPT_RULES_DIR },
                { "console", required_argument, NULL, OPT_CONSOLE },
                { "seat", required_argument, NULL, OPT_SEAT },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(policy_unrefp) Policy *policy = NULL;
        PolicyArgs pa = POLICY_ARGS_DEFAULT;
        ConsoleSim sim = {};
        char simbuf[POLICY_SEAT_MAX + 32];
        IdentityRequest q = {
                .uid_label = "--uid",
                .gid_label = "--gid",
                .groups_label = "--groups",
                .no_gid_hint = "give its primary group with --gid (and its groups with --groups)",
        };
        _cleanup_(peer_creds_done) PeerCreds id = {};
        _cleanup_free_ char *groups_buf = NULL;
        _cleanup_free_ const char **groups = NULL;
        const char *groups_arg = NULL;
        char err[512];
        bool denied = false;
        int opt, r;

        while ((opt = getopt_long(argc, argv, optstring, opts, NULL)) >= 0) {
                if ((r = policy_option(cmd, &pa, opt, optarg)) != 1 || (r = console_option(cmd, &sim, opt, optarg)) != 1) {
                        if (r != 0)
                                return r;
                        continue;
                }
                switch (opt) {
                case OPT_USER:
                        q.user = optarg;
                        break;
                case OPT_UID:
                        q.uid = optarg;
                        break;
                case OPT_GID:
                        q.gid = optarg;
                        break;
                case OPT_GROUPS:
                        groups_arg = optarg;
                        break;
                case 'h':
                        help_eval();
                        return finish_output(EXIT_SUCCESS);
                default:
                        return option_error(cmd, optstring, opt, argv);
                }
        }
        if (!q.user == !q.uid)
                return usage_error(cmd, "give exactly one of --user NAME and --uid N");
        if ((r = console_options_done(cmd, &sim)) != 0)
                return r;
        if (*pa.config == '\0')
                return usage_error(cmd, "--config: empty file name");
        if (optind >= argc)
                return usage_error(cmd, "no action given");
        for (int i = optind; i < argc; i++)
                if (!action_valid(argv[i], strnlen(argv[i], ACTION_MAX + 1), false))
                        return fail("bad action '%s': use 1-%d characters of A-Z a-z 0-9 . _ : / -", argv[i],
                                    ACTION_MAX);

        if (groups_arg) {
                r = split_groups(groups_arg, &groups_buf, &groups, &q.n_groups);
                if (r != 0)
                        return r;
                q.groups = groups;
                q.has_groups = true;
        }
        if (resolve_identity(&q, &id, err, sizeof(err)) < 0)
                return fail("%s", err);

        if ((r = load_policy(&pa, false, &policy)) != 0)
                return r;

        Console console = console_sim(&sim);
        if (sim.given)
                printf("console: %s (simulated)\n", console_sim_describe(&sim, simbuf, sizeof(simbuf)));
        else if (policy_has_console(policy))
                fprintf(stderr, "credgate: note: console conditions judged as without a session on any seat; "
                                "simulate one with --console\n");
        for (int i = optind; i < argc; i++) {
                Verdict v = policy_check_console(policy, argv[i], &id, &console);
                const char *what = v.decision == DECISION_ALLOW ? "ALLOW" : "DENY";

                denied = denied || v.decision != DECISION_ALLOW;
                if (v.by_default)
                        printf("%s %s by default\n", what, argv[i]);
                else if (v.file)
                        printf("%s %s by %s:%u%s%s%s%s%s\n", what, argv[i], v.file, v.line, v.id ? " (" : "",
                               v.id ? v.id : "", v.id ? ")" : "", v.message ? ": " : "", v.message ? v.message : "");
                else /* neither a rule nor the default: policy_check() refused the request */
                        return fail("cannot evaluate '%s'", argv[i]);
        }
        return finish_output(denied ? EXIT_DENY : EXIT_ALLOW);
}

