/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * example: the libcredgate(3) example program.
 *
 *   example [ACTION...]
 *
 * Connects to credgated (at $CREDGATE_SOCKET, else the default socket),
 * prints who the daemon sees, then asks about each ACTION (default
 * "org.example.status") and prints "ACTION: allow" or "ACTION: deny".
 * Exit status: 0 if every action is allowed, 1 if any is denied, 2 on an
 * error. Build it with:
 *
 *   cc -o example example.c $(pkg-config --cflags --libs credgate)
 */
#include <stdio.h>
#include <stdlib.h>

#include <credgate.h>

static int fail(const char *what, int r) {
        fprintf(stderr, "example: %s: %s\n", what, credgate_strerror(r));
        return 2;
}

static int print_whoami(credgate *c) {
        credgate_creds me;
        int r = credgate_whoami(c, &me);

        if (r < 0)
                return r;
        printf("whoami: pid=%ld uid=%lu gid=%lu groups=", (long) me.pid,
               (unsigned long) me.uid, (unsigned long) me.gid);
        for (size_t i = 0; i < me.n_groups; i++)
                printf("%s%lu", i ? "," : "", (unsigned long) me.groups[i]);
        printf("\n");
        credgate_creds_clear(&me);
        return 0;
}

int main(int argc, char **argv) {
        static const char *const defaults[] = { "org.example.status" };
        const char *const *actions = defaults;
        size_t n = 1;
        credgate *c = NULL;
        int r, status = 0;

        if (argc > 1) {
                actions = (const char *const *) argv + 1;
                n = (size_t) argc - 1;
        }

        /* NULL: use $CREDGATE_SOCKET, else the default socket. */
        r = credgate_open(NULL, &c);
        if (r < 0)
                return fail("cannot connect to credgated", r);

        r = print_whoami(c);
        if (r < 0) {
                credgate_close(c);
                return fail("whoami", r);
        }

        for (size_t i = 0; i < n; i++) {
                credgate_decision d;

                r = credgate_check(c, actions[i], &d);
                if (r < 0) {
                        /* An error is never an answer: treat it as "no". */
                        status = fail(actions[i], r);
                        break;
                }
                printf("%s: %s\n", actions[i],
                       d == CREDGATE_ALLOW ? "allow" : "deny");
                if (d != CREDGATE_ALLOW)
                        status = 1;
        }

        credgate_close(c);
        if (fflush(stdout) != 0)
                return 2;
        return status;
}
