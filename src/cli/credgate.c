/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * credgate: the command-line client. check, whoami and ping ask the running
 * daemon through libcredgate, so the answer is the one the daemon gives this
 * process. eval loads a policy file with the daemon's own loader and
 * evaluator (libpolicy, no copy) and names the rule that decides for a given
 * identity, without any daemon.
 *
 * The program holds no privilege and must never be installed setuid or
 * setgid: it refuses to run when its real and effective ids differ.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
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

/*
 * Parse --groups: comma-separated group names or decimal ids; "" is the
 * empty list.
 * Return: 0 and *ret_groups and *ret_n, or EXIT_ERROR after a message.
 */
static int parse_groups(const char *list, gid_t **ret_groups, size_t *ret_n) {
        _cleanup_free_ gid_t *g = NULL;
        size_t n = 0;
        const char *p = list;

        if (*list == '\0') {
                *ret_groups = NULL;
                *ret_n = 0;
                return 0;
        }
        if (!(g = calloc(strlen(list) / 2 + 1, sizeof(gid_t))))
                return fail("--groups: %s", strerror(ENOMEM));
        for (;;) {
                size_t len = strcspn(p, ",");
                _cleanup_free_ char *item = strndup(p, len);
                uint32_t id;

                if (!item)
                        return fail("--groups: %s", strerror(ENOMEM));
                if (len == 0)
                        return fail("--groups: empty entry in '%s'", list);
                if (strspn(item, "0123456789") == len) {
                        if (id_parse(item, strlen(item), &id) < 0)
                                return fail("--groups: '%s' is not a group id in 0..4294967294", item);
                        g[n++] = (gid_t) id;
                } else {
                        _cleanup_free_ char *buf = NULL;
                        struct group gr;
                        int r = id_get_group(item, 0, &gr, &buf);

                        if (r == -ENOENT)
                                return fail("--groups: unknown group '%s'", item);
                        if (r < 0)
                                return fail("--groups: cannot look up group '%s': %s", item, strerror(-r));
                        g[n++] = gr.gr_gid;
                }
                if (p[len] == '\0')
                        break;
                p += len + 1;
        }
        *ret_n = n;
        *ret_groups = TAKE_PTR(g);
        return 0;
}

/* ------------------------------------------------------------------------ */
/* check */

static void help_check(void) {
        printf("Usage: credgate [--socket PATH] check [-q] ACTION...\n"
               "Ask credgated whether this process may perform each ACTION.\n\n"
               "  -q, --quiet   print nothing; only the exit status tells\n"
               "  -h, --help    show this help\n\n"
               "Prints 'ALLOW ACTION' or 'DENY ACTION' for each ACTION.\n"
               "Exit status: 0 when every ACTION is allowed, 1 when any is denied, 2 on error.\n");
}

static int cmd_check(const Context *ctx, const Command *cmd, int argc, char **argv) {
        static const char optstring[] = ":qh";
        static const struct option opts[] = {
                { "quiet", no_argument, NULL, 'q' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_free_ credgate_decision *d = NULL;
        const char *const *actions;
        credgate *c = NULL;
        bool quiet = false, denied = false;
        size_t n;
        int opt, r;

        while ((opt = getopt_long(argc, argv, optstring, opts, NULL)) >= 0) {
                switch (opt) {
                case 'q':
                        quiet = true;
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
        if (!(d = calloc(n, sizeof(*d))))
                return fail("%s", strerror(ENOMEM));

        if ((r = open_daemon(ctx, &c)) != 0)
                return r;
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
/* eval */

#define EVAL_MAX_RULE_DIRS 64

typedef struct EvalArgs {
        const char *config;
        const char *rule_dirs[EVAL_MAX_RULE_DIRS];
        size_t n_rule_dirs;
        const char *user;
        const char *uid;
        const char *gid;
        const char *groups;
} EvalArgs;

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

/* Resolve the identity to evaluate. Return: 0, or EXIT_ERROR after a message. */
static int eval_identity(const EvalArgs *a, PeerCreds *ret) {
        _cleanup_free_ char *buf = NULL;
        _cleanup_free_ gid_t *groups = NULL;
        struct passwd pw = {};
        bool known = false;
        size_t n_groups = 0;
        uint32_t uid = 0, gid = 0;
        int r;

        if (a->user) {
                r = id_get_passwd(a->user, 0, &pw, &buf);
                if (r == -ENOENT)
                        return fail("unknown user '%s'", a->user);
                if (r < 0)
                        return fail("cannot look up user '%s': %s", a->user, strerror(-r));
                known = true;
                uid = pw.pw_uid;
        } else {
                if (id_parse(a->uid, strlen(a->uid), &uid) < 0)
                        return fail("--uid: '%s' is not a user id in 0..4294967294", a->uid);
                r = id_get_passwd(NULL, uid, &pw, &buf);
                if (r < 0 && r != -ENOENT)
                        return fail("cannot look up uid %" PRIu32 ": %s", uid, strerror(-r));
                known = r == 0;
        }
        if (!known && !a->gid)
                return fail("uid %" PRIu32 " is not in the user database: give its primary group with --gid "
                            "(and its groups with --groups)",
                            uid);

        if (a->gid) {
                if (id_parse(a->gid, strlen(a->gid), &gid) < 0)
                        return fail("--gid: '%s' is not a group id in 0..4294967294", a->gid);
        } else
                gid = pw.pw_gid;

        if (a->groups) {
                r = parse_groups(a->groups, &groups, &n_groups);
                if (r != 0)
                        return r;
        } else if (known) {
                /* The groups a login session of this user gets: based on its database gid. */
                r = user_groups(pw.pw_name, pw.pw_gid, &groups, &n_groups);
                if (r < 0)
                        return fail("cannot list the groups of user '%s': %s", pw.pw_name, strerror(-r));
        }

        /* policy_check() expects the kernel's form: ascending, no duplicates. */
        n_groups = sort_unique(groups, n_groups);
        *ret = (PeerCreds){ .uid = uid, .gid = gid, .n_groups = n_groups, .groups = TAKE_PTR(groups) };
        return 0;
}

static int cmd_eval(const Context *ctx, const Command *cmd, int argc, char **argv) {
        enum { OPT_USER = 0x100, OPT_UID, OPT_GID, OPT_GROUPS, OPT_RULES_DIR };
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
        EvalArgs a = { .config = CREDGATE_CONFIG_FILE };
        _cleanup_(peer_creds_done) PeerCreds id = {};
        Diags diags = {};
        bool denied = false;
        int opt, r;

        while ((opt = getopt_long(argc, argv, optstring, opts, NULL)) >= 0) {
                switch (opt) {
                case 'c':
                        a.config = optarg;
                        break;
                case OPT_USER:
                        a.user = optarg;
                        break;
                case OPT_UID:
                        a.uid = optarg;
                        break;
                case OPT_GID:
                        a.gid = optarg;
                        break;
                case OPT_GROUPS:
                        a.groups = optarg;
                        break;
                case OPT_RULES_DIR:
                        if (a.n_rule_dirs == EVAL_MAX_RULE_DIRS)
                                return usage_error(cmd, "too many --rules-dir folders");
                        a.rule_dirs[a.n_rule_dirs++] = optarg;
                        break;
                case 'h':
                        help_eval();
                        return finish_output(EXIT_SUCCESS);
                default:
                        return option_error(cmd, optstring, opt, argv);
                }
        }
        if (!a.user == !a.uid)
                return usage_error(cmd, "give exactly one of --user NAME and --uid N");
        if (*a.config == '\0')
                return usage_error(cmd, "--config: empty file name");
        if (optind >= argc)
                return usage_error(cmd, "no action given");
        for (int i = optind; i < argc; i++)
                if (!action_valid(argv[i], strnlen(argv[i], ACTION_MAX + 1), false))
                        return fail("bad action '%s': use 1-%d characters of A-Z a-z 0-9 . _ : / -", argv[i],
                                    ACTION_MAX);

        r = eval_identity(&a, &id);
        if (r != 0)
                return r;

        if (a.n_rule_dirs == 0) {
                a.rule_dirs[a.n_rule_dirs++] = CREDGATE_RULES_DIR_ETC;
                a.rule_dirs[a.n_rule_dirs++] = CREDGATE_RULES_DIR_VENDOR;
        }
        /* The daemon's sources, minus its ownership checks: an admin may try
         * a draft policy from their home folder. */
        PolicyOptions po = { .main_file = a.config, .rule_dirs = a.rule_dirs, .n_rule_dirs = a.n_rule_dirs };
        Settings settings = SETTINGS_DEFAULTS;
        r = policy_load_full(&po, &diags, NULL, &settings, &policy);
        for (size_t i = 0; i < diags.n; i++)
                fprintf(stderr, "%s\n", diags.v[i].text);
        if (r == -EINVAL)
                fail("'%s': %zu error(s), %zu warning(s): policy refused", a.config, diags.n_errors,
                     diags.n_warnings);
        else if (r < 0)
                fail("cannot load '%s': %s", a.config, strerror(-r));
        diags_done(&diags);
        if (r < 0)
                return EXIT_ERROR;

        for (int i = optind; i < argc; i++) {
                Verdict v = policy_check(policy, argv[i], &id);
                const char *what = v.decision == DECISION_ALLOW ? "ALLOW" : "DENY";

                denied = denied || v.decision != DECISION_ALLOW;
                if (v.by_default)
                        printf("%s %s by default\n", what, argv[i]);
                else if (v.file)
                        printf("%s %s by %s:%u%s%s%s\n", what, argv[i], v.file, v.line, v.id ? " (" : "",
                               v.id ? v.id : "", v.id ? ")" : "");
                else /* neither a rule nor the default: policy_check() refused the request */
                        return fail("cannot evaluate '%s'", argv[i]);
        }
        return finish_output(denied ? EXIT_DENY : EXIT_ALLOW);
}

/* ------------------------------------------------------------------------ */
/* The program */

static const Command commands[] = {
        { "check", "[-q] ACTION...", cmd_check, help_check },
        { "whoami", "", cmd_whoami, help_whoami },
        { "ping", "", cmd_ping, help_ping },
        { "eval", "[-c FILE] (--user NAME | --uid N) [--gid N] [--groups LIST] ACTION...", cmd_eval, help_eval },
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
               "                         what would the policy decide for that identity, and why\n\n"
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
