/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the decision audit log (audit.c) on its stderr target:
 * which decisions each level logs, the exact line (decision, action, the
 * deciding rule, the peer, the broker), and the per-uid rate limit with its
 * "suppressed" summary, both at the next entry and from audit_flush().
 *
 * Each test points fd 2 at a temporary file while it calls audit.c and reads
 * back exactly what was written; time is whatever the test passes as now.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "macro.h"
#include "testutil.h"

#define T0 (UINT64_C(1000) * 1000000) /* an arbitrary start of time, in µs */

#define PREFIX "credgated: audit: "

static Audit *audit;
static int saved_stderr = -1, capture_fd = -1;
static char *out; /* what the last capture read */

/* ------------------------------------------------------------------------
 * Capturing stderr
 */

static void capture_begin(void) {
        char path[] = "/tmp/credgate-test-audit-XXXXXX";

        ck_assert_int_eq(capture_fd, -1);
        capture_fd = mkostemp(path, O_CLOEXEC);
        ck_assert_int_ge(capture_fd, 0);
        unlink(path);
        fflush(stderr);
        saved_stderr = fcntl(2, F_DUPFD_CLOEXEC, 3);
        ck_assert_int_ge(saved_stderr, 0);
        ck_assert_int_eq(dup2(capture_fd, 2), 2);
}

/* Put stderr back; safe to call when no capture runs. */
static void capture_restore(void) {
        if (saved_stderr >= 0) {
                fflush(stderr);
                (void) dup2(saved_stderr, 2);
                close(saved_stderr);
                saved_stderr = -1;
        }
}

/* Stop capturing. Return: everything written meanwhile (valid until the next capture). */
static const char *capture_end(void) {
        size_t n = 0, cap = 4096;
        char *buf = malloc(cap);

        capture_restore();
        ck_assert_ptr_nonnull(buf);
        ck_assert_int_eq(lseek(capture_fd, 0, SEEK_SET), 0);
        for (;;) {
                if (n + 1 == cap) {
                        char *m = realloc(buf, cap *= 2);
                        ck_assert_ptr_nonnull(m);
                        buf = m;
                }
                ssize_t k = read(capture_fd, buf + n, cap - n - 1);
                ck_assert_int_ge(k, 0);
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        buf[n] = '\0';
        close(capture_fd);
        capture_fd = -1;
        free(out);
        out = buf;
        return out;
}

static size_t count(const char *s, const char *needle) {
        size_t n = 0;
        for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

static size_t lines(const char *s) {
        return count(s, "\n");
}

/* Cut the text for messages: the first and last lines of a long capture. */
static const char *shown(const char *s) {
        static char buf[1024];
        size_t n = strlen(s);

        if (n < sizeof(buf))
                return s;
        snprintf(buf, sizeof(buf), "%.400s\n[... %zu bytes ...]\n%s", s, n - 800, s + n - 400);
        return buf;
}

#define assert_output(want)                                                                                            \
        ck_assert_msg(strcmp(out, want) == 0, "stderr:\n%s\nwant:\n%s", shown(out), want)

static void setup(void) {
        audit = NULL;
        out = NULL;
}

static void teardown(void) {
        capture_restore();
        if (capture_fd >= 0)
                close(capture_fd);
        capture_fd = -1;
        audit = audit_free(audit);
        out = mfree(out);
}

static void new_audit(AuditLevel level) {
        ck_assert_int_eq(audit_new(LOG_TARGET_STDERR, level, &audit), 0);
        ck_assert_ptr_nonnull(audit);
}

/* ------------------------------------------------------------------------
 * Verdicts and identities
 */

#define DROPIN "/etc/credgate/rules.d/10-admin.conf"
#define MAIN "/etc/credgate/credgate.conf"

/* The policy revision every entry names (policy_revision()). */
#define REV "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"

static const Verdict v_allow = { .decision = DECISION_ALLOW, .file = DROPIN, .line = 7, .revision = REV };
static const Verdict v_deny = { .decision = DECISION_DENY, .file = MAIN, .line = 12, .revision = REV };
static const Verdict v_default_deny = { .decision = DECISION_DENY, .by_default = true, .revision = REV };
static const Verdict v_default_allow = { .decision = DECISION_ALLOW, .by_default = true, .revision = REV };

#define ID(p, u, g) ((PeerCreds){ .pid = (p), .uid = (u), .gid = (g) })

/* Three users with their own budgets. */
static const PeerCreds alice = ID(4242, 1000, 100);
static const PeerCreds bob = ID(4343, 1001, 100);
static const PeerCreds broker = ID(77, 50, 50);

#define LINE_ALLOW_ALICE PREFIX "decision=ALLOW action=org.example.run rule=" DROPIN ":7 pid=4242 uid=1000 gid=100 revision=" REV "\n"
#define LINE_DENY_ALICE PREFIX "decision=DENY action=org.example.run rule=" MAIN ":12 pid=4242 uid=1000 gid=100 revision=" REV "\n"

/* @n deny decisions for @who (asked by @by, or NULL) at @now. */
static void flood(const PeerCreds *who, const PeerCreds *by, uint64_t now, size_t n) {
        for (size_t i = 0; i < n; i++)
                audit_decision(audit, now, "org.example.run", &v_deny, who, by);
}

/* ------------------------------------------------------------------------
 * Levels
 */

START_TEST(test_level_all) {
        new_audit(AUDIT_ALL);
        capture_begin();
        audit_decision(audit, T0, "org.example.run", &v_allow, &alice, NULL);
        audit_decision(audit, T0, "org.example.run", &v_deny, &alice, NULL);
        capture_end();
        assert_output(LINE_ALLOW_ALICE LINE_DENY_ALICE);
}
END_TEST

START_TEST(test_level_deny) {
        new_audit(AUDIT_DENY);
        capture_begin();
        audit_decision(audit, T0, "org.example.run", &v_allow, &alice, NULL);
        audit_decision(audit, T0, "org.example.run", &v_default_allow, &alice, NULL);
        audit_decision(audit, T0, "org.example.run", &v_deny, &alice, NULL);
        audit_decision(audit, T0, "org.example.run", &v_allow, &alice, &broker);
        capture_end();
        assert_output(LINE_DENY_ALICE);
}
END_TEST

START_TEST(test_level_none) {
        new_audit(AUDIT_NONE);
        capture_begin();
        audit_decision(audit, T0, "org.example.run", &v_allow, &alice, NULL);
        audit_decision(audit, T0, "org.example.run", &v_deny, &alice, NULL);
        audit_decision(audit, T0, "org.example.run", &v_default_deny, &alice, &broker);
        audit_flush(audit, T0 + 10 * AUDIT_INTERVAL_USEC);
        capture_end();
        assert_output("");
}
END_TEST

START_TEST(test_set_level) {
        new_audit(AUDIT_NONE);
        capture_begin();
        audit_decision(audit, T0, "org.example.run", &v_deny, &alice, NULL);
        audit_set_level(audit, AUDIT_ALL);
        audit_decision(audit, T0, "org.example.run", &v_allow, &alice, NULL);
        audit_set_level(audit, AUDIT_DENY);
        audit_decision(audit, T0, "org.example.run", &v_allow, &alice, NULL);
        audit_decision(audit, T0, "org.example.run", &v_deny, &alice, NULL);
        audit_set_level(audit, AUDIT_NONE);
        audit_decision(audit, T0, "org.example.run", &v_deny, &alice, NULL);
        capture_end();
        assert_output(LINE_ALLOW_ALICE LINE_DENY_ALICE);
}
END_TEST

/* Decisions the level does not log do not use up the uid's budget. */
START_TEST(test_unlogged_decisions_cost_nothing) {
        new_audit(AUDIT_DENY);
        capture_begin();
        for (size_t i = 0; i < 3 * AUDIT_BURST; i++)
                audit_decision(audit, T0, "org.example.run", &v_allow, &alice, NULL);
        audit_decision(audit, T0, "org.example.run", &v_deny, &alice, NULL);
        audit_set_level(audit, AUDIT_NONE);
        flood(&bob, NULL, T0, 3 * AUDIT_BURST);
        audit_set_level(audit, AUDIT_DENY);
        flood(&bob, NULL, T0, 1);
        capture_end();
        ck_assert_uint_eq(lines(out), 2);
        ck_assert_msg(strncmp(out, LINE_DENY_ALICE, strlen(LINE_DENY_ALICE)) == 0 && count(out, " uid=1001 ") == 1 &&
                              !strstr(out, "suppressed"),
                      "stderr:\n%s", shown(out));
}
END_TEST

/* ------------------------------------------------------------------------
 * Line format
 */

START_TEST(test_format_rule_and_default) {
        new_audit(AUDIT_ALL);
        capture_begin();
        audit_decision(audit, T0, "org.example.run", &v_allow, &alice, NULL);
        audit_decision(audit, T0, "org.example.stop", &v_default_deny, &ID(1, 0, 0), NULL);
        audit_decision(audit, T0, "a.b.c", &v_default_allow, &ID(2147483647, 4294967294u, 4294967294u), NULL);
        capture_end();
        assert_output(LINE_ALLOW_ALICE
                      PREFIX "decision=DENY action=org.example.stop rule=default pid=1 uid=0 gid=0 revision=" REV "\n"
                      PREFIX "decision=ALLOW action=a.b.c rule=default pid=2147483647 uid=4294967294 gid=4294967294 revision=" REV "\n");
}
END_TEST

START_TEST(test_format_rule_id) {
        Verdict v = v_deny;
        v.id = "no-bob-backup";
        new_audit(AUDIT_ALL);
        capture_begin();
        audit_decision(audit, T0, "org.example.run", &v, &alice, NULL);
        audit_decision(audit, T0, "org.example.run", &v, &alice, &broker);
        capture_end();
        assert_output(PREFIX "decision=DENY action=org.example.run rule=" MAIN
                             ":12 rule_id=no-bob-backup pid=4242 uid=1000 gid=100 revision=" REV "\n"
                      PREFIX "decision=DENY action=org.example.run rule=" MAIN
                             ":12 rule_id=no-bob-backup pid=4242 uid=1000 gid=100 broker_pid=77 broker_uid=50 revision=" REV "\n");
}
END_TEST

START_TEST(test_format_broker) {
        new_audit(AUDIT_ALL);
        capture_begin();
        audit_decision(audit, T0, "org.example.run", &v_deny, &alice, &broker);
        audit_decision(audit, T0, "org.example.open", &v_default_allow, &bob, &broker);
        capture_end();
        assert_output(PREFIX "decision=DENY action=org.example.run rule=" MAIN
                             ":12 pid=4242 uid=1000 gid=100 broker_pid=77 broker_uid=50 revision=" REV "\n"
                      PREFIX "decision=ALLOW action=org.example.open rule=default pid=4343 uid=1001 gid=100 "
                             "broker_pid=77 broker_uid=50 revision=" REV "\n");
}
END_TEST

/* A NULL audit (none configured) and its destructor do nothing. */
START_TEST(test_null_audit) {
        capture_begin();
        audit_decision(NULL, T0, "org.example.run", &v_deny, &alice, NULL);
        audit_flush(NULL, T0);
        ck_assert_ptr_null(audit_free(NULL));
        capture_end();
        assert_output("");
}
END_TEST

/* ------------------------------------------------------------------------
 * Rate limit
 */

START_TEST(test_burst_then_suppressed) {
        new_audit(AUDIT_DENY);
        capture_begin();
        flood(&alice, NULL, T0, AUDIT_BURST + 37);
        /* Still the same window a microsecond before it ends. */
        flood(&alice, NULL, T0 + AUDIT_INTERVAL_USEC - 1, 5);
        capture_end();
        ck_assert_msg(lines(out) == AUDIT_BURST && count(out, LINE_DENY_ALICE) == AUDIT_BURST,
                      "want %d identical lines, got %zu:\n%s", AUDIT_BURST, lines(out), shown(out));
        ck_assert_msg(!strstr(out, "suppressed"), "a summary before the window ended:\n%s", shown(out));
}
END_TEST

START_TEST(test_other_uid_not_affected) {
        new_audit(AUDIT_DENY);
        capture_begin();
        flood(&alice, NULL, T0, 2 * AUDIT_BURST);
        flood(&bob, NULL, T0 + 1, AUDIT_BURST);
        flood(&alice, NULL, T0 + 2, 1);
        capture_end();
        ck_assert_uint_eq(lines(out), 2 * AUDIT_BURST);
        ck_assert_msg(count(out, LINE_DENY_ALICE) == AUDIT_BURST && count(out, " uid=1001 ") == AUDIT_BURST,
                      "want %d lines for each uid:\n%s", AUDIT_BURST, shown(out));
        /* bob's lines came after all of alice's: his budget was his own. */
        ck_assert_msg(strstr(out, " uid=1001 ") > strstr(out, LINE_DENY_ALICE), "order:\n%s", shown(out));
}
END_TEST

/* No uid can spend another's budget, whatever their numbers: uids that are
 * equal modulo a table size (5096 and 1000, 102400 and 0) once shared one. */
START_TEST(test_no_shared_budgets) {
        static const uint32_t pairs[][2] = { { 5096, 1000 }, { 102400, 0 }, { 1000 + 65536, 1000 } };
        for (size_t i = 0; i < ELEMENTSOF(pairs); i++) {
                const PeerCreds attacker = ID(1, pairs[i][0], 1), victim = ID(2, pairs[i][1], 1);
                char want[256];

                audit = audit_free(audit);
                new_audit(AUDIT_DENY);
                capture_begin();
                flood(&attacker, NULL, T0, 3 * AUDIT_BURST);
                flood(&victim, NULL, T0 + 1, 1);
                capture_end();
                snprintf(want, sizeof(want), " pid=2 uid=%u gid=1 revision=" REV "\n", (unsigned) pairs[i][1]);
                ck_assert_msg(count(out, want) == 1, "uid %u's entry was hidden by uid %u:\n%s",
                              (unsigned) pairs[i][1], (unsigned) pairs[i][0], shown(out));
                out = mfree(out);
        }
}
END_TEST

/* A count still pending at exit is reported, not lost. */
START_TEST(test_pending_count_reported_at_exit) {
        new_audit(AUDIT_DENY);
        capture_begin();
        flood(&alice, NULL, T0, AUDIT_BURST + 5);
        audit = audit_free(audit);
        capture_end();
        ck_assert_msg(count(out, PREFIX "suppressed=5 uid=1000\n") == 1, "want the pending count:\n%s", shown(out));
}
END_TEST

/* The next window logs again, starting with the count of what was suppressed. */
START_TEST(test_next_window_reports_suppressed) {
        new_audit(AUDIT_DENY);
        capture_begin();
        flood(&alice, NULL, T0, AUDIT_BURST + 37);
        flood(&alice, NULL, T0 + AUDIT_INTERVAL_USEC - 1, 1);
        capture_end();
        ck_assert_uint_eq(lines(out), AUDIT_BURST);

        capture_begin();
        flood(&alice, NULL, T0 + AUDIT_INTERVAL_USEC, 1);
        capture_end();
        assert_output(PREFIX "suppressed=38 uid=1000\n" LINE_DENY_ALICE);

        /* A whole new budget: AUDIT_BURST in this window, then silence again. */
        capture_begin();
        flood(&alice, NULL, T0 + AUDIT_INTERVAL_USEC + 1, AUDIT_BURST + 3);
        capture_end();
        ck_assert_msg(lines(out) == AUDIT_BURST - 1 && !strstr(out, "suppressed"),
                      "want %d more lines and no summary, got %zu:\n%s", AUDIT_BURST - 1, lines(out), shown(out));

        /* Long after: the summary of the second window, only once. */
        capture_begin();
        flood(&alice, NULL, T0 + 7 * AUDIT_INTERVAL_USEC, 2);
        capture_end();
        assert_output(PREFIX "suppressed=4 uid=1000\n" LINE_DENY_ALICE LINE_DENY_ALICE);
}
END_TEST

START_TEST(test_flush_summary_exactly_once) {
        new_audit(AUDIT_DENY);
        capture_begin();
        flood(&alice, NULL, T0, AUDIT_BURST + 5);
        flood(&bob, NULL, T0 + 100, AUDIT_BURST + 9);
        capture_end();
        ck_assert_uint_eq(lines(out), 2 * AUDIT_BURST);

        /* Neither window has ended. */
        capture_begin();
        audit_flush(audit, T0);
        audit_flush(audit, T0 + AUDIT_INTERVAL_USEC - 1);
        capture_end();
        assert_output("");

        /* alice's has, bob's not yet. */
        capture_begin();
        audit_flush(audit, T0 + AUDIT_INTERVAL_USEC);
        capture_end();
        assert_output(PREFIX "suppressed=5 uid=1000\n");

        capture_begin();
        audit_flush(audit, T0 + AUDIT_INTERVAL_USEC + 100);
        capture_end();
        assert_output(PREFIX "suppressed=9 uid=1001\n");

        /* Never again: not from a later flush, nor from the next entry. */
        capture_begin();
        audit_flush(audit, T0 + AUDIT_INTERVAL_USEC + 101);
        audit_flush(audit, T0 + 5 * AUDIT_INTERVAL_USEC);
        flood(&alice, NULL, T0 + 5 * AUDIT_INTERVAL_USEC, 1);
        audit_flush(audit, T0 + 9 * AUDIT_INTERVAL_USEC);
        capture_end();
        assert_output(LINE_DENY_ALICE);
}
END_TEST

/* Nothing suppressed, nothing to say. */
START_TEST(test_flush_without_suppression_is_silent) {
        new_audit(AUDIT_ALL);
        capture_begin();
        flood(&alice, NULL, T0, AUDIT_BURST);
        capture_end();
        ck_assert_uint_eq(lines(out), AUDIT_BURST);

        capture_begin();
        audit_flush(audit, T0 + AUDIT_INTERVAL_USEC);
        audit_flush(audit, T0 + 3 * AUDIT_INTERVAL_USEC);
        flood(&alice, NULL, T0 + 3 * AUDIT_INTERVAL_USEC, 1);
        capture_end();
        assert_output(LINE_DENY_ALICE);
}
END_TEST

/* A broker's queries count against the broker, whoever they are about. */
START_TEST(test_broker_limit_follows_broker) {
        new_audit(AUDIT_DENY);
        capture_begin();
        for (size_t i = 0; i < AUDIT_BURST + 11; i++) {
                PeerCreds subject = i % 2 ? ID(5000 + (pid_t) i, 20000 + (uid_t) i, 100) : alice;
                audit_decision(audit, T0, "org.example.run", &v_deny, &subject, &broker);
        }
        capture_end();
        ck_assert_msg(lines(out) == AUDIT_BURST && count(out, " broker_uid=50 revision=" REV "\n") == AUDIT_BURST,
                      "want %d broker lines, got %zu:\n%s", AUDIT_BURST, lines(out), shown(out));

        /* alice's own budget is untouched, even for queries about her by others... */
        capture_begin();
        flood(&alice, NULL, T0 + 1, 1);
        capture_end();
        assert_output(LINE_DENY_ALICE);

        /* ... and bob's exhausted budget does not silence the broker's queries about him. */
        capture_begin();
        flood(&bob, NULL, T0 + 2, AUDIT_BURST + 1);
        capture_end();
        ck_assert_uint_eq(lines(out), AUDIT_BURST);
        capture_begin();
        audit_flush(audit, T0 + AUDIT_INTERVAL_USEC);
        audit_decision(audit, T0 + AUDIT_INTERVAL_USEC, "org.example.run", &v_deny, &bob, &broker);
        capture_end();
        /* The broker's window ended: its summary names the broker; bob's has not. */
        assert_output(PREFIX "suppressed=11 uid=50\n" PREFIX "decision=DENY action=org.example.run rule=" MAIN
                             ":12 pid=4343 uid=1001 gid=100 broker_pid=77 broker_uid=50 revision=" REV "\n");
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *audit_suite(void) {
        Suite *s = suite_create("audit");
        TCase *tc;

        tc = tcase_create("levels");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_level_all);
        tcase_add_test(tc, test_level_deny);
        tcase_add_test(tc, test_level_none);
        tcase_add_test(tc, test_set_level);
        tcase_add_test(tc, test_unlogged_decisions_cost_nothing);
        suite_add_tcase(s, tc);

        tc = tcase_create("format");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_format_rule_and_default);
        tcase_add_test(tc, test_format_broker);
        tcase_add_test(tc, test_format_rule_id);
        tcase_add_test(tc, test_null_audit);
        suite_add_tcase(s, tc);

        tc = tcase_create("ratelimit");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_burst_then_suppressed);
        tcase_add_test(tc, test_other_uid_not_affected);
        tcase_add_test(tc, test_next_window_reports_suppressed);
        tcase_add_test(tc, test_flush_summary_exactly_once);
        tcase_add_test(tc, test_flush_without_suppression_is_silent);
        tcase_add_test(tc, test_broker_limit_follows_broker);
        tcase_add_test(tc, test_no_shared_budgets);
        tcase_add_test(tc, test_pending_count_reported_at_exit);
        suite_add_tcase(s, tc);

        return s;
}

int main(void) {
        return test_run(audit_suite());
}
