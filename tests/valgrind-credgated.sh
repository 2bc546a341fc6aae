#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Stand-in for credgated in 'make check-valgrind': set $CREDGATED to this
# script and every daemon the integration harness starts runs under
# memcheck, one log per process in $VG_LOGDIR. exec keeps the pid, so the
# harness's signals reach the daemon; valgrind's own exit status (1 on an
# error or a definite leak, see --error-exitcode) is what the harness sees.
#
# Environment: VALGRIND, VALGRIND_FLAGS, VG_LOGDIR, VG_CREDGATED (the real
# daemon binary; it links only convenience libraries, so it is no libtool
# wrapper script).
set -eu
: "${VALGRIND:?}" "${VG_LOGDIR:?}" "${VG_CREDGATED:?}"
# shellcheck disable=SC2086 # VALGRIND_FLAGS is a list of options
exec "$VALGRIND" ${VALGRIND_FLAGS:-} --trace-children=no \
        --log-file="$VG_LOGDIR/credgated.%p.log" "$VG_CREDGATED" "$@"
