/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * credgated: parse the command line, load the policy, take or bind the
 * socket, serve. Only startup may exit; after that every error ends in a
 * reply and the daemon keeps serving.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "listen.h"
#include "log.h"
#include "macro.h"
#include "policy-load.h"
#include "server.h"

#define EXIT_USAGE 2
#define TIMEOUT_MAX_SEC 86400

typedef struct Args {
        const char *config;
        const char *socket;
        bool check_only;
        uint64_t timeout_sec;
} Args;

static void help(void) {
        printf("Usage: credgated [OPTION]...\n"
               "Answer allow/deny for the kernel-verified identity of each local client.\n\n"
               "  -c, --config FILE     policy file (default %s)\n"
               "  -s, --socket PATH     socket to bind when not socket-activated\n"
               "                        (default %s)\n"
               "  -t, --check-config    check the policy, print errors and warnings, and exit\n"
               "      --timeout SEC     close connections idle for SEC seconds (default 10)\n"
               "  -h, --help            show this help\n"
               "  -V, --version         show the version\n\n"
               "See credgated(8) and credgate.conf(5).\n",
               CREDGATE_CONFIG_FILE, CREDGATE_SOCKET);
}

static int parse_seconds(const char *s, uint64_t max, uint64_t *ret) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s || *end || s[0] == '-' || v == 0 || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

/* Return: 1 to go on, 0 to exit successfully, -1 on a usage error. */
static int parse_args(int argc, char **argv, Args *a) {
        enum { OPT_TIMEOUT = 0x100 };
        static const struct option opts[] = {
                { "config", required_argument, NULL, 'c' },
                { "socket", required_argument, NULL, 's' },
                { "check-config", no_argument, NULL, 't' },
                { "timeout", required_argument, NULL, OPT_TIMEOUT },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "c:s:thV", opts, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        a->config = optarg;
                        break;
                case 's':
                        a->socket = optarg;
                        break;
                case 't':
                        a->check_only = true;
                        break;
                case OPT_TIMEOUT:
                        if (parse_seconds(optarg, TIMEOUT_MAX_SEC, &a->timeout_sec) < 0) {
                                fprintf(stderr, "credgated: --timeout: '%s' is not a number of seconds in 1..%d\n",
                                        optarg, TIMEOUT_MAX_SEC);
                                return -1;
                        }
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
        return 1;
}

static int load(const Args *a, Policy **ret) {
        Diags d = {};
        int r = policy_load(a->config, &d, ret);

        for (size_t i = 0; i < d.n; i++) {
                if (a->check_only)
                        fprintf(stderr, "%s\n", d.v[i].text);
                else
                        log_msg(d.v[i].warning ? LOG_WARNING : LOG_ERR, "%s", d.v[i].text);
        }
        if (r < 0 && a->check_only)
                fprintf(stderr, "%s: %zu error(s), %zu warning(s): policy refused\n", a->config, d.n_errors,
                        d.n_warnings);
        else if (r < 0)
                log_error("refusing to start: the policy '%s' has %zu error(s)", a->config, d.n_errors);
        diags_done(&d);
        return r;
}

static int listen_all(Server *s, const Args *a) {
        _cleanup_free_ int *fds = NULL;
        int bad = -1;
        int n = listen_activated(&fds, &bad);

        if (n == -EPROTOTYPE) {
                log_error("socket activation: fd %d is not a listening AF_UNIX stream socket", bad);
                return n;
        }
        if (n < 0) {
                log_error("socket activation failed: %s", strerror(-n));
                return n;
        }
        for (int i = 0; i < n; i++) {
                int r = server_add_listener(s, fds[i], NULL);
                if (r < 0)
                        return r;
        }
        if (n > 0)
                return 0;

        int fd = listen_bind(a->socket);
        if (fd < 0) {
                const char *why = fd == -EADDRINUSE      ? "a server is already running there"
                                  : fd == -EEXIST        ? "the path exists and is not a socket; not touching it"
                                  : fd == -ENAMETOOLONG ? "the path is too long for a Unix socket"
                                                         : strerror(-fd);
                log_error("cannot listen on '%s': %s", a->socket, why);
                return fd;
        }
        return server_add_listener(s, fd, a->socket);
}

int main(int argc, char **argv) {
        Args a = { .config = CREDGATE_CONFIG_FILE, .socket = CREDGATE_SOCKET, .timeout_sec = 10 };
        _cleanup_(policy_unrefp) Policy *policy = NULL;
        _cleanup_(server_freep) Server *server = NULL;
        int r;

        log_setup();
        r = parse_args(argc, argv, &a);
        if (r <= 0)
                return r < 0 ? EXIT_USAGE : EXIT_SUCCESS;

        if (load(&a, &policy) < 0)
                return EXIT_FAILURE;
        if (a.check_only) {
                printf("%s: policy OK, %zu rules\n", a.config, policy_n_rules(policy));
                return EXIT_SUCCESS;
        }

        ServerConfig cfg = { .config_path = a.config, .timeout_usec = a.timeout_sec * UINT64_C(1000000) };
        r = server_new(&cfg, policy, &server);
        if (r < 0) {
                log_error("cannot set up the event loop: %s", strerror(-r));
                return EXIT_FAILURE;
        }
        if (listen_all(server, &a) < 0)
                return EXIT_FAILURE;

        r = server_run(server);
        if (r < 0) {
                log_error("event loop failed: %s", strerror(-r));
                return EXIT_FAILURE;
        }
        return EXIT_SUCCESS;
}
