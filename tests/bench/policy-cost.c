/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * policy-cost: what one decision costs in the policy index alone, without
 * sockets. Loads a policy file with the daemon's loader and times
 * policy_check() in a loop (see docs/performance.md, "What a decision costs").
 *
 *   policy-cost FILE [ACTION...]
 *   policy-cost --lint FILE       time policy_lint() (credgated -t, credgate test) instead
 */
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "diag.h"
#include "lint.h"
#include "macro.h"
#include "policy-load.h"

#define ROUNDS 2000000

static double now_s(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double) t.tv_sec + (double) t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
        static const char *const default_actions[] = { "bench.allowed", "org.pkgnone.act0", "org.pkg5000.act3" };
        _cleanup_(policy_unrefp) Policy *p = NULL;
        Diags diags = {};
        gid_t groups[] = { 100, 200 };
        PeerCreds id = { .pid = 1, .uid = getuid(), .gid = getgid(), .groups = groups, .n_groups = 2 };

        bool lint = argc == 3 && strcmp(argv[1], "--lint") == 0;
        if (lint)
                argv++, argc--;
        if (argc < 2 || argv[1][0] == '-') {
                fprintf(stderr, "Usage: %s FILE [ACTION...]\n"
                                "       %s --lint FILE\n"
                                "Times policy_check() on FILE for each ACTION (default: the benchmark's),\n"
                                "or the lint of credgated -t on FILE.\n",
                        argv[0], argv[0]);
                return 2;
        }
        if (policy_load(argv[1], &diags, &p) < 0) {
                fprintf(stderr, "%s: cannot load %s (check it with credgated -t)\n", argv[0], argv[1]);
                return 1;
        }
        if (lint) {
                KnownIds known = {};
                size_t before = diags.n;
                double t0 = now_s();
                if (known_ids_load("/etc/nsswitch.conf", &known) < 0 || policy_lint(p, &known, &diags) < 0)
                        return 1;
                double t = now_s() - t0;
                printf("lint: %zu rules, %zu warnings in %.3f s (%zu users, %zu groups known)\n", policy_n_rules(p),
                       diags.n - before, t, known.n_uids, known.n_gids);
                known_ids_done(&known);
                diags_done(&diags);
                return 0;
        }
        const char *const *actions = argc > 2 ? (const char *const *) argv + 2 : default_actions;
        size_t n = argc > 2 ? (size_t) argc - 2 : ELEMENTSOF(default_actions);

        for (size_t a = 0; a < n; a++) {
                unsigned allowed = 0;
                double t0 = now_s();
                for (unsigned i = 0; i < ROUNDS; i++)
                        allowed += policy_check(p, actions[a], &id).decision == DECISION_ALLOW;
                double ns = (now_s() - t0) / ROUNDS * 1e9;
                printf("%-32s %7.1f ns/check  %s\n", actions[a], ns, allowed ? "ALLOW" : "DENY");
        }
        diags_done(&diags);
        return 0;
}
