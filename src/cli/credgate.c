/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * credgate: the command-line client. check, whoami and ping ask the running
 * daemon through libcredgate, so the answer is the one the daemon gives this
 * process. eval loads a policy file with the daemon's own loader and
 * evaluator (libpolicy, no copy) and names the rule that decides for a given
 * identity, without any daemon; test runs files of expected decisions
 * against a policy loaded the same way.
 *
 * The program holds no privilege and must never be installed setuid or
 * setgid: it refuses to run when its real and effective ids differ.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <libconfig.h>
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
#include "ids.h"
#include "credgate.h"
#include "macro.h"
#include "lint.h"
#include "policy-load.h"

/* Exit status: the same for check and eval. */
#define EXIT_ALLOW 0
#define EXIT_DENY 1
#define EXIT_ERROR 2

#define CHECK_BATCH 1024 /* actions per pipelined round trip */

typedef struct Context {
        const char *socket; /* NULL: $CREDGATE_SOCKET, else the default */
} Context;

typedef struct Command {
        const char *name;
        const char *usage;
        int (*run)(const Context *ctx, const struct Command *cmd, int argc, char **argv);
        void (*help)(void);
} Command;

/* ------------------------------------------------------------------------ */
/* Messages */

_printf_(1, 2) static int fail(const char *fmt, ...) {
        va_list ap;

        fputs("credgate: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return EXIT_ERROR;
}

/* A usage error: the message, the synopsis of @cmd (NULL: the program), and where to read more. */
_printf_(2, 3) static int usage_error(const Command *cmd, const char *fmt, ...) {
        va_list ap;

        fputs("credgate: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        if (cmd)
                fprintf(stderr, "\nUsage: credgate %s%s%s\nTry 'credgate %s --help'.\n", cmd->name,
                        *cmd->usage ? " " : "", cmd->usage, cmd->name);
        else
                fprintf(stderr, "\nUsage: credgate [--socket PATH] COMMAND [ARG]...\nTry 'credgate --help'.\n");
        return EXIT_ERROR;
}

/* Turn getopt's '?' and ':' for @optstring into a usage error. */
static int option_error(const Command *cmd, const char *optstring, int c, char **argv) {
        if (c == ':')
                return usage_error(cmd, "option '%s' needs an argument", argv[optind - 1]);
        /* A known option letter here is a long option given "=VALUE" it does not take. */
        if (optopt > 0 && optopt < 0x80 && strchr(optstring, optopt))
                return usage_error(cmd, "option '%s' takes no argument", argv[optind - 1]);
        if (optopt > 0 && optopt < 0x80)
                return usage_error(cmd, "unknown option '-%c'", optopt);
        return usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
}

/* Flush stdout and report a failed write (a full disk, a closed pipe). */
static int finish_output(int status) {
        if (fflush(stdout) != 0 || ferror(stdout))
                return fail("cannot write the output: %s", strerror(errno ? errno : EIO));
        return status;
}

/* The socket libcredgate will use, for messages; same rule as credgate_open(),
 * which ignores the variable under AT_SECURE (file capabilities). */
static const char *socket_shown(const Context *ctx) {
        const char *e;

        if (ctx->socket)
                return ctx->socket;
        e = secure_getenv("CREDGATE_SOCKET");
        return e && *e ? e : CREDGATE_SOCKET_DEFAULT;
}

/* Connect to the daemon. Returns 0, or the exit status after saying why not. */
static int open_daemon(const Context *ctx, credgate **ret) {
        int r = credgate_open(ctx->socket, ret);
        if (r < 0)
                return fail("cannot connect to '%s': %s", socket_shown(ctx), credgate_strerror(r));
        return 0;
}

/* The command line of a command that takes only --help: returns -1 to go
 * on, or the exit status (after the help text or a usage error). */
static int parse_help_only(const Command *cmd, int argc, char **argv) {
        static const char optstring[] = ":h";
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                {},
        };
        int opt;

        while ((opt = getopt_long(argc, argv, optstring, opts, NULL)) >= 0) {
                if (opt != 'h')
                        return option_error(cmd, optstring, opt, argv);
                cmd->help();
                return finish_output(EXIT_SUCCESS);
        }
        if (optind < argc)
                return usage_error(cmd, "unexpected argument '%s'", argv[optind]);
        return -1;
}

/* ------------------------------------------------------------------------ */
/* Ids and the user database */

/* Print "1000(alice)", or the bare id when the database has no name for it. */
static void print_uid(uid_t uid) {
        _cleanup_free_ char *buf = NULL;
        struct passwd pw;

        if (id_get_passwd(NULL, uid, &pw, &buf) == 0)
                printf("%u(%s)", (unsigned) uid, pw.pw_name);
        else
                printf("%u", (unsigned) uid);
}

static void print_gid(gid_t gid) {
        _cleanup_free_ char *buf = NULL;
        struct group gr;

        if (id_get_group(NULL, gid, &gr, &buf) == 0)
                printf("%u(%s)", (unsigned) gid, gr.gr_name);
        else
                printf("%u", (unsigned) gid);
}

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
/* check */

static void help_check(void) {
        printf("Usage: credgate [--socket PATH] check [-q|-v] ACTION...\n"
               "Ask credgated whether this process may perform each ACTION.\n\n"
               "  -q, --quiet   print nothing; only the exit status tells\n"
               "  -v, --verbose say which rule decided, and its message (EXPLAIN)\n"
               "  -h, --help    show this help\n\n"
               "Prints 'ALLOW ACTION' or 'DENY ACTION' for each ACTION; with -v\n"
               "'DENY ACTION by RULE: MESSAGE', RULE being the rule's id, FILE:LINE or default.\n"
               "Exit status: 0 when every ACTION is allowed, 1 when any is denied, 2 on error.\n");
}

/* check -v: one EXPLAIN per action; all answers are in before anything is printed. */
static int check_explained(credgate *c, const char *const *actions, size_t n) {
        _cleanup_free_ credgate_explanation *e = calloc(n, sizeof(credgate_explanation));
        bool denied = false;
        int r = e ? 0 : -ENOMEM;

        for (size_t i = 0; i < n && r >= 0; i++)
                r = credgate_explain(c, actions[i], &e[i]);
        credgate_close(c);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                bool allow = e[i].decision == CREDGATE_ALLOW;
                const char *ref = e[i].ref;
                denied = denied || !allow;
                printf("%s %s by %s%s%s\n", allow ? "ALLOW" : "DENY", actions[i],
                       strncmp(ref, "id:", 3) == 0 ? ref + 3 : ref, e[i].message ? ": " : "",
                       e[i].message ? e[i].message : "");
        }
        for (size_t i = 0; e && i < n; i++)
                credgate_explanation_clear(&e[i]);
        if (r < 0)
                return fail("check: %s", credgate_strerror(r));
        return finish_output(denied ? EXIT_DENY : EXIT_ALLOW);
}

static int cmd_check(const Context *ctx, const Command *cmd, int argc, char **argv) {
        static const char optstring[] = ":qvh";
        static const struct option opts[] = {
                { "quiet", no_argument, NULL, 'q' },
                { "verbose", no_argument, NULL, 'v' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_free_ credgate_decision *d = NULL;
        const char *const *actions;
        credgate *c = NULL;
        bool quiet = false, verbose = false, denied = false;
        size_t n;
        int opt, r;

        while ((opt = getopt_long(argc, argv, optstring, opts, NULL)) >= 0) {
                switch (opt) {
                case 'q':
                        quiet = true;
                        break;
                case 'v':
                        verbose = true;
                        break;
                case 'h':
                        help_check();
                        return finish_output(EXIT_SUCCESS);
                default:
                        return option_error(cmd, optstring, opt, argv);
                }
        }
        if (optind >= argc)
                return usage_error(cmd, "no action given");

        /* Refuse a bad action before talking to the daemon at all. */
        actions = (const char *const *) argv + optind;
        n = (size_t) (argc - optind);
        for (size_t i = 0; i < n; i++)
                if (!action_valid(actions[i], strnlen(actions[i], ACTION_MAX + 1), false))
                        return fail("bad action '%s': use 1-%d characters of A-Z a-z 0-9 . _ : / -", actions[i],
                                    ACTION_MAX);
        if (quiet && verbose)
                return usage_error(cmd, "-q and -v exclude each other");
        if (!(d = calloc(n, sizeof(*d))))
                return fail("%s", strerror(ENOMEM));

        if ((r = open_daemon(ctx, &c)) != 0)
                return r;
        if (verbose)
                return check_explained(c, actions, n);
        /* One connection, pipelined; bounded batches keep each call's buffer and time limit modest. */
        for (size_t i = 0; i < n && r >= 0; i += CHECK_BATCH) {
                size_t k = n - i < CHECK_BATCH ? n - i : CHECK_BATCH;
                r = k == 1 ? credgate_check(c, actions[i], &d[i]) : credgate_check_many(c, actions + i, k, &d[i]);
        }
        credgate_close(c);
        if (r < 0)
                return fail("check: %s", credgate_strerror(r));

        /* Print only once every answer is in: all decisions or none. */
        for (size_t i = 0; i < n; i++) {
                /* Only an explicit ALLOW counts: any other value denies. */
                bool allow = d[i] == CREDGATE_ALLOW;
                denied = denied || !allow;
                if (!quiet)
                        printf("%s %s\n", allow ? "ALLOW" : "DENY", actions[i]);
        }
        return finish_output(denied ? EXIT_DENY : EXIT_ALLOW);
}

/* ------------------------------------------------------------------------ */
/* whoami */

static void help_whoami(void) {
        printf("Usage: credgate [--socket PATH] whoami\n"
               "Show the identity credgated sees for this process, with names:\n"
               "  pid=1234 uid=1000(alice) gid=1000(alice) groups=27(sudo),1000(alice)\n\n"
               "  -h, --help    show this help\n");
}

static int cmd_whoami(const Context *ctx, const Command *cmd, int argc, char **argv) {
        credgate_creds creds = {};
        credgate *c = NULL;
        int r;

        if ((r = parse_help_only(cmd, argc, argv)) >= 0 || (r = open_daemon(ctx, &c)) != 0)
                return r;
        r = credgate_whoami(c, &creds);
        credgate_close(c);
        if (r < 0)
                return fail("whoami: %s", credgate_strerror(r));

        printf("pid=%ld uid=", (long) creds.pid);
        print_uid(creds.uid);
        printf(" gid=");
        print_gid(creds.gid);
        printf(" groups=");
        for (size_t i = 0; i < creds.n_groups; i++) {
                if (i > 0)
                        putchar(',');
                print_gid(creds.groups[i]);
        }
        putchar('\n');
        credgate_creds_clear(&creds);
        return finish_output(EXIT_SUCCESS);
}

/* ------------------------------------------------------------------------ */
/* ping */

static void help_ping(void) {
        printf("Usage: credgate [--socket PATH] ping\n"
               "Check that credgated answers; prints PONG.\n\n"
               "  -h, --help    show this help\n");
}

static int cmd_ping(const Context *ctx, const Command *cmd, int argc, char **argv) {
        credgate *c = NULL;
        int r;

        if ((r = parse_help_only(cmd, argc, argv)) >= 0 || (r = open_daemon(ctx, &c)) != 0)
                return r;
        r = credgate_ping(c);
        credgate_close(c);
        if (r < 0)
                return fail("ping: %s", credgate_strerror(r));
        printf("PONG\n");
        return finish_output(EXIT_SUCCESS);
}

/* ------------------------------------------------------------------------ */
/* The policy and the identity to judge: shared by eval and test */

#define MAX_RULE_DIRS 64

/* Long options of eval and test without a short form. */
enum { OPT_USER = 0x100, OPT_UID, OPT_GID, OPT_GROUPS, OPT_RULES_DIR, OPT_COVERAGE, OPT_JUNIT };

/* Which policy to load: -c and --rules-dir. */
typedef struct PolicyArgs {
        const char *config;
        const char *rule_dirs[MAX_RULE_DIRS];
        size_t n_rule_dirs;
} PolicyArgs;

#define POLICY_ARGS_DEFAULT { .config = CREDGATE_CONFIG_FILE }

/* Take -c FILE or --rules-dir DIR. Return: 1 when @opt is neither, 0, or EXIT_ERROR after a usage error. */
static int policy_option(const Command *cmd, PolicyArgs *a, int opt, const char *arg) {
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

/*
 * Load the policy the way the daemon does (drop-in folders, then the main
 * file), minus its ownership checks: an admin may try a draft policy from
 * their home folder. Errors and warnings go to stderr.
 * Return: 0 and *ret, or EXIT_ERROR.
 */
static int load_policy(PolicyArgs *a, bool lint, Policy **ret) {
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
static int resolve_identity(const IdentityRequest *q, PeerCreds *ret, char *err, size_t size) {
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
static const char *verdict_by(const Verdict *v, char *buf, size_t size) {
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

static void help_eval(void) {
        printf("Usage: credgate eval [-c FILE] [--rules-dir DIR]... (--user NAME | --uid N) [--gid N]\n"
               "                     [--groups LIST] ACTION...\n"
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
               "  -h, --help          show this help\n\n"
               "Prints 'ALLOW ACTION by FILE:LINE' or 'DENY ACTION by FILE:LINE' for the first\n"
               "matching rule, or 'ALLOW ACTION by default' / 'DENY ACTION by default'.\n"
               "Policy errors and warnings go to stderr; the daemon's file ownership checks\n"
               "are not applied. No daemon is contacted.\n"
               "Exit status: 0 when every ACTION is allowed, 1 when any is denied, 2 on error.\n",
               CREDGATE_CONFIG_FILE, CREDGATE_RULES_DIR_ETC, CREDGATE_RULES_DIR_VENDOR);
}

static int cmd_eval(const Context *ctx, const Command *cmd, int argc, char **argv) {
        static const char optstring[] = ":c:h";
        static const struct option opts[] = {
                { "config", required_argument, NULL, 'c' },
                { "user", required_argument, NULL, OPT_USER },
                { "uid", required_argument, NULL, OPT_UID },
                { "gid", required_argument, NULL, OPT_GID },
                { "groups", required_argument, NULL, OPT_GROUPS },
                { "rules-dir", required_argument, NULL, OPT_RULES_DIR },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(policy_unrefp) Policy *policy = NULL;
        PolicyArgs pa = POLICY_ARGS_DEFAULT;
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
                if ((r = policy_option(cmd, &pa, opt, optarg)) != 1) {
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

        for (int i = optind; i < argc; i++) {
                Verdict v = policy_check(policy, argv[i], &id);
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

/* ------------------------------------------------------------------------ */
/* test */

typedef struct TestCase {
        const char *file; /* the test file, as given */
        int line;         /* of the case's opening '{' */
        char *who;        /* "user NAME" or "uid N" */
        PeerCreds id;
        char **actions;
        size_t n_actions;
        Decision expect;
        char *rule; /* the rule that must decide (id, FILE:LINE or "default"), or NULL */
} TestCase;

typedef struct TestRun {
        TestCase *cases;
        size_t n_cases;
        size_t n_errors;
} TestRun;

/* One case and action, once evaluated. */
typedef struct TestResult {
        const TestCase *c;
        const char *action;
        Verdict v;
        bool pass;
} TestResult;

static void test_run_done(TestRun *t) {
        for (size_t i = 0; i < t->n_cases; i++) {
                TestCase *c = &t->cases[i];
                free(c->who);
                peer_creds_done(&c->id);
                for (size_t k = 0; k < c->n_actions; k++)
                        free(c->actions[k]);
                free(c->actions);
                free(c->rule);
        }
        free(t->cases);
        *t = (TestRun){};
}

_printf_(4, 5) static void test_error(TestRun *t, const char *file, int line, const char *fmt, ...) {
        va_list ap;

        if (line > 0)
                fprintf(stderr, "%s:%d: ", file, line);
        else
                fprintf(stderr, "%s: ", file);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        t->n_errors++;
}

static bool is_list(const config_setting_t *s) {
        int type = config_setting_type(s);
        return type == CONFIG_TYPE_ARRAY || type == CONFIG_TYPE_LIST;
}

static const char *type_name(const config_setting_t *s) {
        switch (config_setting_type(s)) {
        case CONFIG_TYPE_GROUP:
                return "a group";
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
                return "an integer";
        case CONFIG_TYPE_FLOAT:
                return "a float";
        case CONFIG_TYPE_STRING:
                return "a string";
        case CONFIG_TYPE_BOOL:
                return "a boolean";
        case CONFIG_TYPE_ARRAY:
        case CONFIG_TYPE_LIST:
                return "a list";
        default:
                return "something else";
        }
}

/*
 * The strings of list setting @s (NULL: none given). Return: the count, or
 * -1 after reporting an error (not a list of strings).
 */
static ssize_t string_list(TestRun *t, const char *file, const config_setting_t *s, const char ***ret) {
        int n;

        *ret = NULL;
        if (!s)
                return 0;
        if (!is_list(s)) {
                test_error(t, file, config_setting_source_line(s), "'%s' must be a list of strings, not %s",
                           config_setting_name(s), type_name(s));
                return -1;
        }
        n = config_setting_length(s);
        if (n == 0)
                return 0;
        const char **v = calloc((size_t) n, sizeof(char *));
        if (!v) {
                test_error(t, file, 0, "%s", strerror(ENOMEM));
                return -1;
        }
        for (int i = 0; i < n; i++) {
                const config_setting_t *e = config_setting_get_elem(s, (unsigned) i);
                if (config_setting_type(e) != CONFIG_TYPE_STRING) {
                        test_error(t, file, config_setting_source_line(s),
                                   "'%s' must be a list of strings: element %d is %s", config_setting_name(s), i + 1,
                                   type_name(e));
                        free(v);
                        return -1;
                }
                v[i] = config_setting_get_string(e);
        }
        *ret = v;
        return n;
}

/* Does @s name a rule of @p (an id or FILE:LINE), or the default? */
static bool rule_named(const Policy *p, const char *s) {
        char buf[PATH_MAX + 32];

        if (strcmp(s, "default") == 0)
                return true;
        for (size_t i = 0; i < policy_n_rules(p); i++) {
                const char *file, *id;
                unsigned line;

                policy_rule(p, i, &file, &line, &id);
                if (id && strcmp(id, s) == 0)
                        return true;
                snprintf(buf, sizeof(buf), "%s:%u", file, line);
                if (strcmp(buf, s) == 0)
                        return true;
        }
        return false;
}

/* Is @v's cause what @rule names? */
static bool rule_matches(const Verdict *v, const char *rule) {
        char buf[PATH_MAX + 32];

        if (!v->file)
                return v->by_default && strcmp(rule, "default") == 0;
        if (v->id && strcmp(v->id, rule) == 0)
                return true;
        snprintf(buf, sizeof(buf), "%s:%u", v->file, v->line);
        return strcmp(buf, rule) == 0;
}

static const char *const case_keys[] = { "user", "uid", "gid", "group", "groups", "gids",
                                         "action", "actions", "expect", "rule" };

/* Parse case @s of @file into @t; errors are counted in @t. */
static void parse_case(TestRun *t, const Policy *p, const char *file, const config_setting_t *s) {
        const config_setting_t *m[ELEMENTSOF(case_keys)] = {};
        _cleanup_free_ const char **groups = NULL, **gids = NULL, **actions = NULL;
        int line = config_setting_source_line(s);
        size_t errors = t->n_errors;
        ssize_t n_groups, n_gids, n_actions = 0;
        const char *str[ELEMENTSOF(case_keys)] = {};
        Decision expect = DECISION_DENY;
        char err[512];

        if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
                test_error(t, file, line, "a case must be a group { ... }, not %s", type_name(s));
                return;
        }
        for (int i = 0; i < config_setting_length(s); i++) {
                const config_setting_t *e = config_setting_get_elem(s, (unsigned) i);
                const char *name = config_setting_name(e);
                size_t k;

                for (k = 0; k < ELEMENTSOF(case_keys); k++)
                        if (strcmp(name, case_keys[k]) == 0)
                                break;
                if (k == ELEMENTSOF(case_keys)) {
                        test_error(t, file, config_setting_source_line(e), "unknown key '%s'", name);
                        continue;
                }
                m[k] = e;
                if (strcmp(name, "groups") == 0 || strcmp(name, "gids") == 0 || strcmp(name, "actions") == 0)
                        continue; /* lists: checked below */
                if (config_setting_type(e) != CONFIG_TYPE_STRING) {
                        test_error(t, file, config_setting_source_line(e), "'%s' must be a string, not %s", name,
                                   type_name(e));
                        continue;
                }
                str[k] = config_setting_get_string(e);
        }
        /* Indexes into case_keys. */
        enum { K_USER, K_UID, K_GID, K_GROUP, K_GROUPS, K_GIDS, K_ACTION, K_ACTIONS, K_EXPECT, K_RULE };

        n_groups = string_list(t, file, m[K_GROUPS], &groups);
        n_gids = string_list(t, file, m[K_GIDS], &gids);
        if (m[K_ACTIONS]) {
                n_actions = string_list(t, file, m[K_ACTIONS], &actions);
                if (n_actions == 0)
                        test_error(t, file, config_setting_source_line(m[K_ACTIONS]), "'actions' is empty");
        }
        if (t->n_errors > errors)
                return;

        if (!!m[K_USER] == !!m[K_UID]) {
                test_error(t, file, line, "give exactly one of 'user' and 'uid'");
                return;
        }
        if (m[K_GID] && m[K_GROUP]) {
                test_error(t, file, line, "give at most one of 'gid' and 'group'");
                return;
        }
        if (!!m[K_ACTION] == !!m[K_ACTIONS]) {
                test_error(t, file, line, "give exactly one of 'action' and 'actions'");
                return;
        }
        if (m[K_ACTION]) {
                actions = calloc(1, sizeof(char *));
                if (!actions) {
                        test_error(t, file, 0, "%s", strerror(ENOMEM));
                        return;
                }
                actions[0] = str[K_ACTION];
                n_actions = 1;
        }
        for (ssize_t i = 0; i < n_actions; i++)
                if (!action_valid(actions[i], strnlen(actions[i], ACTION_MAX + 1), false)) {
                        test_error(t, file, config_setting_source_line(m[K_ACTION] ? m[K_ACTION] : m[K_ACTIONS]),
                                   "bad action '%s': use 1-%d characters of A-Z a-z 0-9 . _ : / -", actions[i],
                                   ACTION_MAX);
                        return;
                }
        if (!str[K_EXPECT]) {
                test_error(t, file, line, "missing 'expect' (\"allow\" or \"deny\")");
                return;
        }
        if (strcmp(str[K_EXPECT], "allow") == 0)
                expect = DECISION_ALLOW;
        else if (strcmp(str[K_EXPECT], "deny") != 0) {
                test_error(t, file, config_setting_source_line(m[K_EXPECT]),
                           "'expect' must be \"allow\" or \"deny\", not \"%s\"", str[K_EXPECT]);
                return;
        }
        if (str[K_RULE] && !rule_named(p, str[K_RULE])) {
                test_error(t, file, config_setting_source_line(m[K_RULE]),
                           "rule '%s' is not \"default\", a rule id or the FILE:LINE of a rule of the policy",
                           str[K_RULE]);
                return;
        }

        IdentityRequest q = {
                .user = str[K_USER],
                .uid = str[K_UID],
                .gid = str[K_GID],
                .group = str[K_GROUP],
                .has_groups = m[K_GROUPS] || m[K_GIDS],
                .groups = groups,
                .n_groups = (size_t) n_groups,
                .gids = gids,
                .n_gids = (size_t) n_gids,
                .uid_label = "uid",
                .gid_label = "gid",
                .group_label = "group",
                .groups_label = "groups",
                .gids_label = "gids",
                .no_gid_hint = "give its primary group with 'gid' or 'group' (and its groups with 'gids' or 'groups')",
        };
        PeerCreds id = {};
        if (resolve_identity(&q, &id, err, sizeof(err)) < 0) {
                test_error(t, file, line, "%s", err);
                return;
        }

        TestCase *v = reallocarray(t->cases, t->n_cases + 1, sizeof(TestCase));
        if (!v) {
                peer_creds_done(&id);
                test_error(t, file, 0, "%s", strerror(ENOMEM));
                return;
        }
        t->cases = v;
        TestCase *c = &t->cases[t->n_cases];
        *c = (TestCase){ .file = file, .line = line, .id = id, .expect = expect };
        t->n_cases++;
        if (str[K_USER] ? asprintf(&c->who, "user %s", str[K_USER]) < 0
                        : asprintf(&c->who, "uid %u", (unsigned) id.uid) < 0)
                c->who = NULL;
        c->actions = calloc((size_t) n_actions, sizeof(char *));
        c->n_actions = c->actions ? (size_t) n_actions : 0;
        for (size_t i = 0; i < c->n_actions; i++)
                c->actions[i] = strdup(actions[i]);
        c->rule = str[K_RULE] ? strdup(str[K_RULE]) : NULL;
        bool oom = !c->who || !c->actions || (str[K_RULE] && !c->rule);
        for (size_t i = 0; i < c->n_actions; i++)
                oom = oom || !c->actions[i];
        if (oom)
                test_error(t, file, 0, "%s", strerror(ENOMEM));
}

/* Read the test file @file into @t; errors are counted in @t. */
static void parse_test_file(TestRun *t, const Policy *p, const char *file) {
        config_t cfg;
        const config_setting_t *root, *cases;

        config_init(&cfg);
        if (config_read_file(&cfg, file) != CONFIG_TRUE) {
                if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
                        test_error(t, file, 0, "cannot read the test file: %s", strerror(errno ? errno : EIO));
                else
                        test_error(t, file, config_error_line(&cfg), "%s", config_error_text(&cfg));
                config_destroy(&cfg);
                return;
        }
        root = config_root_setting(&cfg);
        cases = NULL;
        for (int i = 0; i < config_setting_length(root); i++) {
                const config_setting_t *e = config_setting_get_elem(root, (unsigned) i);
                if (strcmp(config_setting_name(e), "cases") == 0)
                        cases = e;
                else
                        test_error(t, file, config_setting_source_line(e), "unknown setting '%s'",
                                   config_setting_name(e));
        }
        if (!cases)
                test_error(t, file, 0, "no 'cases' list");
        else if (!is_list(cases))
                test_error(t, file, config_setting_source_line(cases), "'cases' must be a list ( ... ), not %s",
                           type_name(cases));
        else
                for (int i = 0; i < config_setting_length(cases); i++)
                        parse_case(t, p, file, config_setting_get_elem(cases, (unsigned) i));
        config_destroy(&cfg);
}

/* Write @s with XML's special characters escaped (control characters become '?'). */
static void xml_put(FILE *f, const char *s) {
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;
                switch (c) {
                case '&':
                        fputs("&amp;", f);
                        break;
                case '<':
                        fputs("&lt;", f);
                        break;
                case '>':
                        fputs("&gt;", f);
                        break;
                case '"':
                        fputs("&quot;", f);
                        break;
                case '\'':
                        fputs("&apos;", f);
                        break;
                default:
                        fputc(c < 0x20 && c != '\t' && c != '\n' ? '?' : c, f);
                }
        }
}

/* "expected allow[ by RULE], got deny by GOT" */
static void describe(FILE *f, const TestResult *r) {
        char buf[PATH_MAX + 32];

        fprintf(f, "expected %s", r->c->expect == DECISION_ALLOW ? "allow" : "deny");
        if (r->c->rule)
                fprintf(f, " by %s", r->c->rule);
        fprintf(f, ", got %s by %s", r->v.decision == DECISION_ALLOW ? "allow" : "deny",
                verdict_by(&r->v, buf, sizeof(buf)));
}

static int write_junit(const char *path, char **files, size_t n_files, const TestResult *res, size_t n_res) {
        FILE *f = fopen(path, "we");
        size_t failed = 0;

        if (!f)
                return fail("--junit: cannot create '%s': %m", path);
        for (size_t i = 0; i < n_res; i++)
                failed += !res[i].pass;
        fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        fprintf(f, "<testsuites name=\"credgate test\" tests=\"%zu\" failures=\"%zu\" errors=\"0\">\n", n_res, failed);
        for (size_t k = 0; k < n_files; k++) {
                size_t n = 0, nf = 0;

                for (size_t i = 0; i < n_res; i++)
                        if (res[i].c->file == files[k]) {
                                n++;
                                nf += !res[i].pass;
                        }
                fputs("  <testsuite name=\"", f);
                xml_put(f, files[k]);
                fprintf(f, "\" tests=\"%zu\" failures=\"%zu\" errors=\"0\" skipped=\"0\">\n", n, nf);
                for (size_t i = 0; i < n_res; i++) {
                        const TestResult *r = &res[i];
                        if (r->c->file != files[k])
                                continue;
                        fputs("    <testcase classname=\"", f);
                        xml_put(f, files[k]);
                        fputs("\" name=\"", f);
                        fprintf(f, "%d: ", r->c->line);
                        xml_put(f, r->c->who);
                        fputc(' ', f);
                        xml_put(f, r->action);
                        if (r->pass) {
                                fputs("\"/>\n", f);
                                continue;
                        }
                        char *msg = NULL;
                        size_t len = 0;
                        FILE *m = open_memstream(&msg, &len);
                        if (m) {
                                describe(m, r);
                                fclose(m);
                        }
                        fputs("\">\n      <failure message=\"", f);
                        xml_put(f, msg ? msg : "failed");
                        fputs("\"/>\n    </testcase>\n", f);
                        free(msg);
                }
                fputs("  </testsuite>\n", f);
        }
        fputs("</testsuites>\n", f);
        if (fflush(f) != 0 || ferror(f)) {
                int e = errno ? errno : EIO;
                fclose(f);
                return fail("--junit: cannot write '%s': %s", path, strerror(e));
        }
        if (fclose(f) != 0)
                return fail("--junit: cannot write '%s': %m", path);
        return 0;
}

static void help_test(void) {
        printf("Usage: credgate test [-c FILE] [--rules-dir DIR]... [-v] [--coverage] [--junit FILE]\n"
               "                     TESTFILE...\n"
               "Run the cases of each TESTFILE against a policy, loaded as 'credgate eval' loads\n"
               "it, and report the cases whose decision (or deciding rule) is not the expected one.\n\n"
               "  -c, --config FILE   policy file (default %s)\n"
               "      --rules-dir DIR drop-in folder; repeat for more, the first has the highest\n"
               "                      precedence (default %s, %s)\n"
               "  -v, --verbose       show the cases that pass too\n"
               "      --coverage      list the rules no case reached, and the share of rules covered\n"
               "      --junit FILE    also write the results as JUnit XML to FILE\n"
               "  -h, --help          show this help\n\n"
               "A test file (libconfig syntax) holds\n"
               "  cases = ( { user = \"backup\"; action = \"org.example.backup.run\"; expect = \"allow\";\n"
               "              rule = \"backup-operators\"; } );\n"
               "See credgate(1) for every key.\n"
               "Exit status: 0 when every case passed, 1 when any failed, 2 on error.\n",
               CREDGATE_CONFIG_FILE, CREDGATE_RULES_DIR_ETC, CREDGATE_RULES_DIR_VENDOR);
}

static int cmd_test(const Context *ctx, const Command *cmd, int argc, char **argv) {
        static const char optstring[] = ":c:vh";
        static const struct option opts[] = {
                { "config", required_argument, NULL, 'c' },
                { "rules-dir", required_argument, NULL, OPT_RULES_DIR },
                { "verbose", no_argument, NULL, 'v' },
                { "coverage", no_argument, NULL, OPT_COVERAGE },
                { "junit", required_argument, NULL, OPT_JUNIT },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(policy_unrefp) Policy *policy = NULL;
        _cleanup_free_ TestResult *res = NULL;
        _cleanup_free_ bool *covered = NULL;
        PolicyArgs pa = POLICY_ARGS_DEFAULT;
        const char *junit = NULL;
        bool verbose = false, coverage = false;
        TestRun t = {};
        size_t n_res = 0, passed = 0, failed = 0, n_rules;
        int opt, r;

        while ((opt = getopt_long(argc, argv, optstring, opts, NULL)) >= 0) {
                if ((r = policy_option(cmd, &pa, opt, optarg)) != 1) {
                        if (r != 0)
                                return r;
                        continue;
                }
                switch (opt) {
                case 'v':
                        verbose = true;
                        break;
                case OPT_COVERAGE:
                        coverage = true;
                        break;
                case OPT_JUNIT:
                        if (*optarg == '\0')
                                return usage_error(cmd, "--junit: empty file name");
                        junit = optarg;
                        break;
                case 'h':
                        help_test();
                        return finish_output(EXIT_SUCCESS);
                default:
                        return option_error(cmd, optstring, opt, argv);
                }
        }
        if (*pa.config == '\0')
                return usage_error(cmd, "--config: empty file name");
        if (optind >= argc)
                return usage_error(cmd, "no test file given");

        if ((r = load_policy(&pa, true, &policy)) != 0)
                return r;

        for (int i = optind; i < argc; i++)
                parse_test_file(&t, policy, argv[i]);
        if (t.n_errors > 0) {
                fail("%zu error(s) in the test files: no case was run", t.n_errors);
                test_run_done(&t);
                return EXIT_ERROR;
        }

        n_rules = policy_n_rules(policy);
        for (size_t i = 0; i < t.n_cases; i++)
                n_res += t.cases[i].n_actions;
        if ((n_res > 0 && !(res = calloc(n_res, sizeof(TestResult)))) ||
            (n_rules > 0 && !(covered = calloc(n_rules, sizeof(bool))))) {
                test_run_done(&t);
                return fail("%s", strerror(ENOMEM));
        }

        n_res = 0;
        for (size_t i = 0; i < t.n_cases; i++) {
                const TestCase *c = &t.cases[i];
                for (size_t k = 0; k < c->n_actions; k++) {
                        TestResult *x = &res[n_res++];
                        char buf[PATH_MAX + 32];

                        x->c = c;
                        x->action = c->actions[k];
                        x->v = policy_check(policy, x->action, &c->id);
                        if (x->v.file && x->v.rule < n_rules)
                                covered[x->v.rule] = true;
                        x->pass = x->v.decision == c->expect && (x->v.file || x->v.by_default) &&
                                  (!c->rule || rule_matches(&x->v, c->rule));
                        if (x->pass)
                                passed++;
                        else
                                failed++;
                        if (x->pass && verbose)
                                printf("PASS %s:%d: %s %s: %s by %s\n", c->file, c->line, c->who, x->action,
                                       x->v.decision == DECISION_ALLOW ? "allow" : "deny",
                                       verdict_by(&x->v, buf, sizeof(buf)));
                        else if (!x->pass) {
                                printf("FAIL %s:%d: %s %s: ", c->file, c->line, c->who, x->action);
                                describe(stdout, x);
                                putchar('\n');
                        }
                }
        }

        if (coverage) {
                size_t n_covered = 0;

                for (size_t i = 0; i < n_rules; i++)
                        n_covered += covered[i];
                if (n_covered < n_rules) {
                        printf("rules that decided no case:\n");
                        for (size_t i = 0; i < n_rules; i++) {
                                const char *file, *id;
                                unsigned line;

                                if (covered[i] || !policy_rule(policy, i, &file, &line, &id))
                                        continue;
                                printf("  %s:%u%s%s\n", file, line, id ? " " : "", id ? id : "");
                        }
                }
                printf("coverage: %zu of %zu rules (%zu%%)\n", n_covered, n_rules,
                       n_rules ? n_covered * 100 / n_rules : 100);
        }

        if (junit && (r = write_junit(junit, argv + optind, (size_t) (argc - optind), res, n_res)) != 0) {
                test_run_done(&t);
                return r;
        }
        printf("%zu passed, %zu failed\n", passed, failed);
        test_run_done(&t);
        return finish_output(failed > 0 ? EXIT_DENY : EXIT_SUCCESS);
}

/* ------------------------------------------------------------------------ */
/* The program */

static const Command commands[] = {
        { "check", "[-q] ACTION...", cmd_check, help_check },
        { "whoami", "", cmd_whoami, help_whoami },
        { "ping", "", cmd_ping, help_ping },
        { "eval", "[-c FILE] (--user NAME | --uid N) [--gid N] [--groups LIST] ACTION...", cmd_eval, help_eval },
        { "test", "[-c FILE] [--rules-dir DIR]... [-v] [--coverage] [--junit FILE] TESTFILE...", cmd_test, help_test },
};

static const Command *find_command(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strcmp(commands[i].name, name) == 0)
                        return &commands[i];
        return NULL;
}

static void help(void) {
        printf("Usage: credgate [--socket PATH] COMMAND [ARG]...\n"
               "Ask credgated for authorization decisions, or evaluate a policy offline.\n\n"
               "Commands:\n"
               "  check [-q] ACTION...   may this process perform each ACTION? (asks the daemon)\n"
               "  whoami                 the identity the daemon sees for this process\n"
               "  ping                   check that the daemon answers\n"
               "  eval [-c FILE] (--user NAME | --uid N) [--gid N] [--groups LIST] ACTION...\n"
               "                         what would the policy decide for that identity, and why\n"
               "  test [-c FILE] [-v] [--coverage] [--junit FILE] TESTFILE...\n"
               "                         run test cases of expected decisions against the policy\n\n"
               "Options:\n"
               "  -s, --socket PATH      the daemon's socket (default $CREDGATE_SOCKET, else\n"
               "                         %s)\n"
               "  -h, --help             show this help\n"
               "  -V, --version          show the version\n\n"
               "Run 'credgate COMMAND --help' for a command's options.\n"
               "Exit status: 0 allowed (or success), 1 denied, 2 error.\n"
               "See credgate(1).\n",
               CREDGATE_SOCKET_DEFAULT);
}

/*
 * Global options, up to the command name.
 * Return: the index of the command in @argv, 0 to exit successfully, or -1
 * after a usage error.
 */
static int parse_global(int argc, char **argv, Context *ctx) {
        static const char optstring[] = "+:s:hV";
        static const struct option opts[] = {
                { "socket", required_argument, NULL, 's' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        int c;

        /* '+': stop at the command; its own options come after it. */
        while ((c = getopt_long(argc, argv, optstring, opts, NULL)) >= 0) {
                switch (c) {
                case 's':
                        if (*optarg == '\0') {
                                usage_error(NULL, "--socket: empty path");
                                return -1;
                        }
                        ctx->socket = optarg;
                        break;
                case 'h':
                        help();
                        return 0;
                case 'V':
                        printf("credgate %s\n", PACKAGE_VERSION);
                        return 0;
                default:
                        option_error(NULL, optstring, c, argv);
                        return -1;
                }
        }
        if (optind >= argc) {
                usage_error(NULL, "no command given");
                return -1;
        }
        return optind;
}

int main(int argc, char **argv) {
        Context ctx = {};
        const Command *cmd;
        int i;

        opterr = 0;
        /* Never act with borrowed privileges: a setuid credgate would be judged, and read files, as its owner. */
        if (getuid() != geteuid() || getgid() != getegid())
                return fail("refusing to run setuid or setgid");

        i = parse_global(argc, argv, &ctx);
        if (i <= 0)
                return i < 0 ? EXIT_ERROR : finish_output(EXIT_SUCCESS);
        cmd = find_command(argv[i]);
        if (!cmd)
                return usage_error(NULL, "unknown command '%s'", argv[i]);

        optind = 0; /* restart getopt for the command's own arguments */
        return cmd->run(&ctx, cmd, argc - i, argv + i);
}
