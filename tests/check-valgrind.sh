#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# 'make check-valgrind' (see Makefile.am): memcheck over
#  1. every Check unit test binary, CK_FORK=no so the test code runs in the
#     process valgrind watches;
#  2. the real credgated, started through tests/valgrind-credgated.sh by
#     tests/integration/valgrind_daemon.py (one daemon, every kind of
#     request, reloads, SIGTERM) and by test_protocol.py;
#  3. 'credgated -t' on every policy file of the fuzz corpus and regressions.
# Fails on any memcheck error or definite leak (valgrind's exit status and,
# independently, the ERROR SUMMARY line of every log). Exit 77 (skip) only
# when valgrind is missing. Logs: $builddir/vg-logs/. VG_CREDGATED may name
# another daemon binary for step 2 (default: the built one).
set -uo pipefail

: "${srcdir:?}" "${builddir:?}" "${UNIT_TESTS:?}" "${PYTHON:?}" "${LIBTOOL:?}"
if [ -z "${VALGRIND:-}" ] || ! [ -x "$VALGRIND" ]; then
        echo "check-valgrind: SKIP: valgrind not found (configure looks for it on PATH)"
        exit 77
fi
logs=$builddir/vg-logs
mkdir -p "$logs"
rm -f "$logs"/*.log
cd "$builddir" || exit 1
fail=0
t0=$SECONDS

# 1. Unit tests. No fork mode means no per-test timeout either; the
# multiplier only matters if someone sets CK_FORK back.
for t in $UNIT_TESTS; do
        name=$(basename "$t")
        s=$SECONDS
        # shellcheck disable=SC2086 # LIBTOOL ("$SHELL ./libtool") and VALGRIND_FLAGS are lists
        # test-libcredgate starts the real credgated itself (natively:
        # valgrind does not follow the exec).
        CK_FORK=no CK_TIMEOUT_MULTIPLIER=20 CK_VERBOSITY=normal CREDGATED="$builddir/credgated" \
                $LIBTOOL --mode=execute "$VALGRIND" $VALGRIND_FLAGS --trace-children=no \
                --log-file="$logs/unit-$name.%p.log" "./$t" >"$logs/unit-$name.out" 2>&1
        rc=$?
        echo "check-valgrind: $name: exit $rc in $((SECONDS - s)) s: $(grep -h '^[0-9]*%: Checks' "$logs/unit-$name.out")"
        [ $rc -eq 0 ] || { fail=1; tail -n 20 "$logs/unit-$name.out"; }
done

# 2. The daemon: the dedicated run, and test_protocol.py (73 short daemon
# runs, standalone and socket-activated) which tolerates valgrind's pace.
# (test_daemon.py and test_broker.py do not: they look at the daemon's
# exit codes on refused sockets and at its /proc fds, which valgrind changes.)
for script in valgrind_daemon.py test_protocol.py; do
        s=$SECONDS
        VALGRIND="$VALGRIND" VALGRIND_FLAGS="$VALGRIND_FLAGS" VG_LOGDIR="$logs" \
                VG_CREDGATED="${VG_CREDGATED:-$builddir/credgated}" \
                CREDGATED="$srcdir/tests/valgrind-credgated.sh" CREDGATE_CLI="$builddir/credgate" \
                CREDGATE_SRCDIR="$srcdir" CREDGATE_BUILDDIR="$builddir" PYTHONPATH="$srcdir/tests/integration" \
                PYTHONDONTWRITEBYTECODE=1 SYSTEMD_SOCKET_ACTIVATE="${SYSTEMD_SOCKET_ACTIVATE:-}" \
                "$PYTHON" "$srcdir/tests/integration/$script" >"$logs/$script.out" 2>&1
        rc=$?
        echo "check-valgrind: $script: exit $rc in $((SECONDS - s)) s: $(grep -h '^# .* passed' "$logs/$script.out")"
        [ $rc -eq 0 ] || { fail=1; grep -v '^ok ' "$logs/$script.out" | tail -n 40; }
done

# 3. The policy loader on hostile text: every policy file of the fuzz
# corpus and regressions through 'credgated -t' (which loads, reports and
# exits; exit status 1 for a refused policy is expected).
# Copies, in a folder credgated trusts: below a folder others can write
# (a tree in /tmp) it would refuse them before parsing a byte.
s=$SECONDS
n_pol=0
if [ -n "${CREDGATE_TEST_TMPDIR:-}" ]; then base=$CREDGATE_TEST_TMPDIR
elif [ "$(id -u)" -eq 0 ]; then base=/run
else base=${XDG_RUNTIME_DIR:-$builddir}; fi
pol=$(mktemp -d "$base/cg-vgpol.XXXXXX") || exit 1
trap 'rm -rf "$pol"' EXIT
chmod 0755 "$pol"
mkdir -m 0755 "$pol/empty-rules.d"
for f in "$srcdir"/tests/fuzz/corpus/policy/* "$srcdir"/tests/fuzz/regressions/policy/*; do
        [ -f "$f" ] || continue
        case $f in */README) continue ;; esac
        n_pol=$((n_pol + 1))
        cp "$f" "$pol/$n_pol.conf" && chmod 0644 "$pol/$n_pol.conf"
        # shellcheck disable=SC2086 # VALGRIND_FLAGS is a list
        "$VALGRIND" $VALGRIND_FLAGS --trace-children=no --log-file="$logs/credgated.policy-$n_pol.%p.log" \
                "${VG_CREDGATED:-$builddir/credgated}" -t -c "$pol/$n_pol.conf" --rules-dir "$pol/empty-rules.d" \
                >/dev/null 2>&1
done
echo "check-valgrind: credgated -t on $n_pol fuzz policy files in $((SECONDS - s)) s"

# Every log, independently of exit statuses: no error report and no
# definite leak. A forked child that execs (test-libcredgate starts
# credgated) leaves a log without a summary; its errors, if any, were still
# logged as they happened. Every credgated log must end in a clean summary.
errors='(Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|Mismatched free|Source and destination overlap|Argument .* of function|definitely lost in|Process terminating|ERROR SUMMARY: [1-9])'
n_logs=0 n_daemon=0
for f in "$logs"/*.log; do
        [ -e "$f" ] || continue
        n_logs=$((n_logs + 1))
        bad=0
        grep -Eq "^==[0-9]+== +$errors" "$f" && bad=1
        case $f in
        */credgated.*)
                n_daemon=$((n_daemon + 1))
                grep -q 'ERROR SUMMARY: 0 errors' "$f" || bad=1
                ;;
        esac
        if [ $bad -ne 0 ]; then
                echo "check-valgrind: FAIL: $f:"
                grep -E "^==[0-9]+== +($errors|[0-9,]+ bytes in|   (at|by) 0x)" "$f" | head -n 40
                fail=1
        fi
done
if [ "$n_daemon" -eq 0 ]; then
        echo "check-valgrind: FAIL: no credgated ran under valgrind"
        fail=1
fi
echo "check-valgrind: $n_logs valgrind logs ($n_daemon of credgated), $([ $fail -eq 0 ] && echo "all clean" || echo "FAILED") in $((SECONDS - t0)) s"
exit $fail
