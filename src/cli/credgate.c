/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * credgate: the command-line client. check, whoami and ping ask the running
 * daemon through libcredgate, so the answer is the one the daemon gives this
 * process. eval loads a policy file with the daemon's own loader and
 * evaluator (libpolicy, no copy) and names the rule that decides for a given
 * identity, without any daemon; test runs files of expected decisions
 * against a policy loaded the same way.
 *
 * This file holds the program and the commands that ask the daemon;
 * cmd-eval.c and cmd-test.c hold the ones that load a policy.
 *
 * The program holds no privilege and must never be installed setuid or
 * setgid: it refuses to run when its real and effective ids differ.
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
#include "credgate.h"
#include "ids.h"
#include "macro.h"

#define CHECK_BATCH 1024 /* actions per pipelined round trip */

/* ------------------------------------------------------------------------ */
/* Messages */

_printf_(1, 2) int fail(const char *fmt, ...) {
        va_list ap;

        fputs("credgate: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return EXIT_ERROR;
}

/* A usage error: the message, the synopsis of @cmd (NULL: the program), and where to read more. */
_printf_(2, 3) int usage_error(const Command *cmd, const char *fmt, ...) {
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
int option_error(const Command *cmd, const char *optstring, int c, char **argv) {
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
int finish_output(int status) {
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
/* The program */

static const Command commands[] = {
        { "check", "[-q] ACTION...", cmd_check, help_check },
        { "whoami", "", cmd_whoami, help_whoami },
        { "ping", "", cmd_ping, help_ping },
        { "eval", "[-c FILE] (--user NAME | --uid N) [--gid N] [--groups LIST] [--console LEVEL] ACTION...", cmd_eval,
          help_eval },
        { "test", "[-c FILE] [--rules-dir DIR]... [-v] [--coverage] [--junit FILE] [--console LEVEL] TESTFILE...",
          cmd_test, help_test },
        { "stats", "[--metrics-socket PATH] [--openmetrics | --rules]", cmd_stats, help_stats },
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
               "                         run test cases of expected decisions against the policy\n"
               "  stats [--openmetrics | --rules]\n"
               "                         the daemon's counters, from its metrics socket\n\n"
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
