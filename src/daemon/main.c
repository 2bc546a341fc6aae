/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * credgated: parse the command line, load the policy, take or bind the
 * socket, serve. Only startup may exit; after that every error ends in a
 * reply and the daemon keeps serving.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "listen.h"
#include "log.h"
#include "macro.h"
#include "lint.h"
#include "policy-load.h"
#include "server.h"

#define EXIT_USAGE 2
#define MAX_RULE_DIRS 64

typedef struct Args {
        const char *config;
        const char *socket;
        const char *metrics_socket; /* --metrics-socket: standalone only */
        bool check_only;
        const char *dropin_file, *dropin_name; /* -t --drop-in FILE [--as NAME] */
        const char *rule_dirs[MAX_RULE_DIRS];
        size_t n_rule_dirs;
        SettingsOverride override;
        LogTarget log_target;
} Args;

static void help(void) {
        printf("Usage: credgated [OPTION]...\n"
               "Answer allow/deny for the kernel-verified identity of each local client.\n\n"
               "  -c, --config FILE              policy file (default %s)\n"
               "  -s, --socket PATH              socket to bind when not socket-activated\n"
               "                                 (default %s)\n"
               "      --metrics-socket PATH      also bind PATH (mode 0600) for metrics when not\n"
               "                                 socket-activated; each client gets one OpenMetrics\n"
               "                                 document (credgate stats)\n"
               "      --rules-dir DIR            drop-in folder; repeat for more, first has the highest\n"
               "                                 precedence (default %s, %s)\n"
               "  -t, --check-config             check the policy, list its files, print errors and\n"
               "                                 warnings, and exit\n"
               "      --drop-in FILE [--as NAME] with -t: check FILE as the drop-in NAME (default: its\n"
               "                                 own name) of the first folder, with the rest of the\n"
               "                                 installed policy\n"
               "      --timeout SEC              close connections with no request for SEC seconds\n"
               "      --max-connections N        stop accepting at N open connections\n"
               "      --max-connections-per-uid N  refuse a uid's connections beyond N\n"
               "      --idle-exit SEC            exit after SEC idle seconds when socket-activated (0: never)\n"
               "      --log none|deny|all        which decisions to audit\n"
               "      --log-target journal|stderr  where log and audit entries go\n"
               "  -h, --help                     show this help\n"
               "  -V, --version                  show the version\n\n"
               "Options override the policy file's settings, also across reloads (SIGHUP).\n"
               "See credgated(8) and credgate.conf(5).\n",
               CREDGATE_CONFIG_FILE, CREDGATE_SOCKET, CREDGATE_RULES_DIR_ETC, CREDGATE_RULES_DIR_VENDOR);
}

static int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret) {
        char *end;
        errno = 0;
        if (!s[0] || s[0] < '0' || s[0] > '9')
                return -EINVAL;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || *end || v < min || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int bad_value(const char *opt, const char *v, const char *want) {
        fprintf(stderr, "credgated: %s: '%s' is not %s\n", opt, v, want);
        return -1;
}

/* Return: 1 to go on, 0 to exit successfully, -1 on a usage error. */
static int parse_args(int argc, char **argv, Args *a) {
        enum {
                OPT_TIMEOUT = 0x100,
                OPT_RULES_DIR,
                OPT_MAX_CONN,
                OPT_MAX_PER_UID,
                OPT_IDLE_EXIT,
                OPT_LOG,
                OPT_LOG_TARGET,
                OPT_DROP_IN,
                OPT_AS,
                OPT_METRICS_SOCKET,
        };
        static const struct option opts[] = {
                { "config", required_argument, NULL, 'c' },
                { "socket", required_argument, NULL, 's' },
                { "metrics-socket", required_argument, NULL, OPT_METRICS_SOCKET },
                { "check-config", no_argument, NULL, 't' },
                { "rules-dir", required_argument, NULL, OPT_RULES_DIR },
                { "timeout", required_argument, NULL, OPT_TIMEOUT },
                { "max-connections", required_argument, NULL, OPT_MAX_CONN },
                { "max-connections-per-uid", required_argument, NULL, OPT_MAX_PER_UID },
                { "idle-exit", required_argument, NULL, OPT_IDLE_EXIT },
                { "log", required_argument, NULL, OPT_LOG },
                { "log-target", required_argument, NULL, OPT_LOG_TARGET },
                { "drop-in", required_argument, NULL, OPT_DROP_IN },
                { "as", required_argument, NULL, OPT_AS },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        SettingsOverride *o = &a->override;
        int c;

        while ((c = getopt_long(argc, argv, "c:s:thV", opts, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        a->config = optarg;
                        break;
                case 's':
                        a->socket = optarg;
                        break;
                case OPT_METRICS_SOCKET:
                        if (!*optarg)
                                return bad_value("--metrics-socket", optarg, "a path");
                        a->metrics_socket = optarg;
                        break;
                case 't':
                        a->check_only = true;
                        break;
                case OPT_DROP_IN:
                        a->dropin_file = optarg;
                        break;
                case OPT_AS:
                        a->dropin_name = optarg;
                        break;
                case OPT_RULES_DIR:
                        if (a->n_rule_dirs == MAX_RULE_DIRS)
                                return bad_value("--rules-dir", optarg, "accepted: too many folders");
                        a->rule_dirs[a->n_rule_dirs++] = optarg;
                        break;
                case OPT_TIMEOUT:
                        if (parse_uint(optarg, 1, SETTING_TIMEOUT_MAX, &o->v.request_timeout) < 0)
                                return bad_value("--timeout", optarg, "a number of seconds in 1..3600");
                        o->request_timeout = true;
                        break;
                case OPT_MAX_CONN:
                        if (parse_uint(optarg, 1, SETTING_CONNECTIONS_MAX, &o->v.max_connections) < 0)
                                return bad_value("--max-connections", optarg, "a number in 1..1048576");
                        o->max_connections = true;
                        break;
                case OPT_MAX_PER_UID:
                        if (parse_uint(optarg, 1, SETTING_CONNECTIONS_MAX, &o->v.max_connections_per_uid) < 0)
                                return bad_value("--max-connections-per-uid", optarg, "a number in 1..1048576");
                        o->max_connections_per_uid = true;
                        break;
                case OPT_IDLE_EXIT:
                        if (parse_uint(optarg, 0, SETTING_IDLE_EXIT_MAX, &o->v.idle_exit) < 0)
                                return bad_value("--idle-exit", optarg, "a number of seconds in 0..86400");
                        o->idle_exit = true;
                        break;
                case OPT_LOG:
                        if (settings_parse_audit(optarg, &o->v.log) < 0)
                                return bad_value("--log", optarg, "none, deny or all");
                        o->log = true;
                        break;
                case OPT_LOG_TARGET:
                        if (strcmp(optarg, "journal") == 0)
                                a->log_target = LOG_TARGET_JOURNAL;
                        else if (strcmp(optarg, "stderr") == 0)
                                a->log_target = LOG_TARGET_STDERR;
                        else
                                return bad_value("--log-target", optarg, "journal or stderr");
                        break;
                case 'h':
                        help();
                        return 0;
                case 'V':
                        printf("credgated %s\n", PACKAGE_VERSION);
                        return 0;
                default:
                        fprintf(stderr, "Try 'credgated --help'.\n");
                        return -1;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "credgated: unexpected argument '%s'\nTry 'credgated --help'.\n", argv[optind]);
                return -1;
        }
        if ((a->dropin_file || a->dropin_name) && !a->check_only) {
                fprintf(stderr, "credgated: --drop-in and --as only check a file: use them with -t\n");
                return -1;
        }
        if (a->dropin_name && !a->dropin_file) {
                fprintf(stderr, "credgated: --as names the file of --drop-in, which is missing\n");
                return -1;
        }
        if (a->dropin_file) {
                const char *slash = strrchr(a->dropin_file, '/');
                const char *name = a->dropin_name ? a->dropin_name : slash ? slash + 1 : a->dropin_file;
                size_t n = strlen(name);
                if (n <= 5 || strcmp(name + n - 5, ".conf") != 0 || name[0] == '.' || strchr(name, '/')) {
                        fprintf(stderr,
                                "credgated: %s '%s' is not a name the daemon reads: drop-ins are NAME.conf files "
                                "(not starting with '.'); %s\n",
                                a->dropin_name ? "--as" : "--drop-in", name,
                                a->dropin_name ? "give one such as --as 50-site.conf"
                                               : "give the name it will be installed as with --as NAME.conf");
                        return -1;
                }
                a->dropin_name = name;
        }
        if (a->n_rule_dirs == 0) {
                a->rule_dirs[a->n_rule_dirs++] = CREDGATE_RULES_DIR_ETC;
                a->rule_dirs[a->n_rule_dirs++] = CREDGATE_RULES_DIR_VENDOR;
        }
        return 1;
}

/* -t: every file looked at and what became of it, then the diagnostics. */
static void print_check(const Args *a, const Sources *src, const Diags *d, int r, const Policy *p) {
        for (size_t i = 0; i < src->n; i++) {
                const Source *s = &src->v[i];
                if (s->state == SOURCE_LOADED)
                        printf("%-8s %s (%zu rules)\n", source_state_name(s->state), s->path, s->n_rules);
                else
                        printf("%-8s %s%s%s\n", source_state_name(s->state), s->path, s->note ? ": " : "",
                               s->note ? s->note : "");
        }
        fflush(stdout);
        for (size_t i = 0; i < d->n; i++)
                fprintf(stderr, "%s\n", d->v[i].text);
        if (r < 0)
                fprintf(stderr, "%s: %zu error(s), %zu warning(s): policy refused\n", a->config, d->n_errors,
                        d->n_warnings);
        else {
                printf("revision %s\n", policy_revision(p));
                printf("%s: policy OK, %zu rules from %zu files, %zu warning(s)\n", a->config, policy_n_rules(p),
                       policy_n_files(p), d->n_warnings);
        }
}

/* Say why listen_bind() refused the folder of @path (-EPERM). */
static void log_untrusted_folder(const char *path) {
        _cleanup_free_ char *copy = strdup(path);
        const char *dir = copy ? dirname(copy) : "its folder";
        struct stat st;

        if (!copy || stat(dir, &st) < 0)
                log_error("cannot listen on '%s': its folder must be owned by root (or by the daemon's user) and "
                          "writable by nobody else",
                          path);
        else if (st.st_uid != 0 && st.st_uid != geteuid())
                log_error("cannot listen on '%s': its folder '%s' is owned by uid %u, so that user could put a "
                          "fake daemon's socket there; use a folder owned by root (or by the daemon's user), such "
                          "as /run/credgate",
                          path, dir, (unsigned) st.st_uid);
        else if (!(st.st_mode & (S_IWGRP | S_IWOTH)))
                log_error("cannot listen on '%s': %s", path, strerror(EPERM));
        else if (st.st_mode & S_ISVTX)
                /* A shared folder such as /tmp: chmod is no fix. */
                log_error("cannot listen on '%s': its folder '%s' is writable by %s (mode %04o), so another user "
                          "could put a fake daemon's socket there first (the sticky bit does not stop that); use a "
                          "folder only root can write, such as /run/credgate",
                          path, dir, (st.st_mode & S_IWOTH) ? "others" : "group", (unsigned) (st.st_mode & 07777));
        else
                log_error("cannot listen on '%s': its folder '%s' is writable by %s (mode %04o), so another user "
                          "could put a fake daemon's socket there; fix with: chmod go-w '%s'",
                          path, dir, (st.st_mode & S_IWOTH) ? "others" : "group", (unsigned) (st.st_mode & 07777),
                          dir);
}

/* Bind @path (listen_bind_mode()), saying why when it cannot. Return: the fd, or -errno. */
static int bind_logged(const char *path, mode_t mode) {
        int fd = listen_bind_mode(path, mode);
        if (fd == -EPERM)
                log_untrusted_folder(path);
        else if (fd < 0) {
                const char *why = fd == -EADDRINUSE      ? "a server is already running there"
                                  : fd == -EEXIST        ? "the path exists and is not a socket; not touching it"
                                  : fd == -ENAMETOOLONG ? "the path is too long for a Unix socket"
                                  : fd == -ENOTDIR      ? "a component of the path is not a folder"
                                                         : strerror(-fd);
                log_error("cannot listen on '%s': %s", path, why);
        }
        return fd;
}

static int listen_all(Server *s, const Args *a, bool *ret_activated) {
        _cleanup_free_ int *fds = NULL;
        _cleanup_free_ bool *metrics = NULL;
        int bad = -1, n_decision = 0;
        int n = listen_activated(&fds, &metrics, &bad);

        if (n == -EPROTOTYPE) {
                log_error("socket activation: fd %d is not a listening AF_UNIX stream socket", bad);
                return n;
        }
        if (n < 0) {
                log_error("socket activation failed: %s", strerror(-n));
                return n;
        }
        *ret_activated = n > 0;
        for (int i = 0; i < n; i++) {
                int r = metrics[i] ? server_add_metrics_listener(s, fds[i], NULL) : server_add_listener(s, fds[i], NULL);
                if (r < 0)
                        return r;
                n_decision += !metrics[i];
        }
        if (n > 0 && n_decision == 0) {
                /* Started by the metrics socket alone: credgated.socket must be there too. */
                log_error("socket activation: only a metrics socket was passed; start credgated.socket");
                return -ENOENT;
        }
        if (n > 0)
                return 0;

        if (a->metrics_socket) {
                int fd = bind_logged(a->metrics_socket, 0600);
                if (fd < 0)
                        return fd;
                int r = server_add_metrics_listener(s, fd, a->metrics_socket);
                if (r < 0)
                        return r;
        }
        int fd = bind_logged(a->socket, 0666);
        if (fd < 0)
                return fd;
        return server_add_listener(s, fd, a->socket);
}

int main(int argc, char **argv) {
        Args a = { .config = CREDGATE_CONFIG_FILE, .socket = CREDGATE_SOCKET, .log_target = log_default_target() };
        _cleanup_(policy_unrefp) Policy *policy = NULL;
        _cleanup_(server_freep) Server *server = NULL;
        Settings settings = SETTINGS_DEFAULTS;
        Diags d = {};
        Sources src = {};
        int r;

        r = parse_args(argc, argv, &a);
        if (r <= 0)
                return r < 0 ? EXIT_USAGE : EXIT_SUCCESS;
        log_set_target(a.log_target);
        if (!a.check_only)
                log_open();

        PolicyOptions po = {
                .main_file = a.config,
                .rule_dirs = a.rule_dirs,
                .n_rule_dirs = a.n_rule_dirs,
                .check_ownership = true,
                .trusted_uid = geteuid(),
                .dropin_file = a.dropin_file,
                .dropin_name = a.dropin_name,
        };
        r = policy_load_full(&po, &d, a.check_only ? &src : NULL, &settings, &policy);
        if (a.check_only && r == 0) {
                KnownIds known = {};
                r = known_ids_load("/etc/nsswitch.conf", &known);
                if (r == 0)
                        r = policy_lint(policy, &known, &d);
                known_ids_done(&known);
        }
        if (a.check_only) {
                print_check(&a, &src, &d, r, policy);
                sources_done(&src);
                diags_done(&d);
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        }
        for (size_t i = 0; i < d.n; i++)
                log_msg(d.v[i].warning ? LOG_WARNING : LOG_ERR, "%s", d.v[i].text);
        if (r < 0)
                log_error("refusing to start: the policy has %zu error(s)", d.n_errors);
        diags_done(&d);
        if (r < 0)
                return EXIT_FAILURE;

        ServerConfig cfg = { .policy = po, .override = a.override, .log_target = a.log_target };
        r = server_new(&cfg, policy, &settings, &server);
        if (r < 0) {
                log_error("cannot set up the event loop: %s", strerror(-r));
                return EXIT_FAILURE;
        }
        bool activated = false;
        if (listen_all(server, &a, &activated) < 0)
                return EXIT_FAILURE;
        server_set_activated(server, activated);

        r = server_run(server);
        if (r < 0) {
                log_error("event loop failed: %s", strerror(-r));
                return EXIT_FAILURE;
        }
        return EXIT_SUCCESS;
}
