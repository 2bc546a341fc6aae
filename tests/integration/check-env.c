/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * check-env: ask credgated through libcredgate with no socket path, so that
 * the library picks it ($CREDGATE_SOCKET or the default), and print what
 * came back. test_secure_env.py copies it, makes the copy setuid or gives
 * it a file capability, and shows that such a program ignores
 * $CREDGATE_SOCKET (issue 10).
 *
 *   check-env [ACTION]
 *
 * Prints "secure=N" (getauxval(AT_SECURE)), then "ALLOW", "DENY" or
 * "error: CODE: TEXT". Exit status: 0 allow, 1 deny, 2 error.
 *
 * It is linked with libcredgate's code itself, not with libcredgate.so: the
 * dynamic loader ignores LD_LIBRARY_PATH under AT_SECURE, so an uninstalled
 * shared library could not be found by a setuid copy.
 */
#include <stdio.h>
#include <sys/auxv.h>

#include "credgate.h"

int main(int argc, char **argv) {
        credgate_decision d = CREDGATE_DENY;
        int r;

        printf("secure=%lu\n", getauxval(AT_SECURE));
        r = credgate_check_once(NULL, argc > 1 ? argv[1] : "t.env", &d);
        if (r < 0)
                printf("error: %d: %s\n", r, credgate_strerror(r));
        else
                printf("%s\n", d == CREDGATE_ALLOW ? "ALLOW" : "DENY");
        if (fflush(stdout) != 0)
                return 2;
        return r < 0 ? 2 : d == CREDGATE_ALLOW ? 0 : 1;
}
