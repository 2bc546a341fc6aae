/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the metrics document (metrics.c): every series with the
 * counts it was given, families whole (TYPE and HELP, then their samples),
 * the document ending in "# EOF", rule labels escaped and unique, the
 * last-hit family only for rules that decided, the latency buckets, and
 * rendering in pieces: whole lines in each, the same document whatever the
 * piece size. promtool itself runs on a live daemon's document in
 * tests/integration/test_metrics.py.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "metrics.h"
#include "testutil.h"

/* A policy of @n rules in "f.conf" (and one odd file name), rule 1 with an id, 2 and 3 on one line. */
static Policy *make_policy(size_t n) {
        PolicyBuilder *b = policy_builder_new();
        Policy *p = NULL;
        char action[32];

        ck_assert_ptr_nonnull(b);
        ck_assert_int_eq(policy_builder_add_file(b, "/etc/credgate/rules.d/we\"ird\\na\nme.conf"), 0);
        ck_assert_int_eq(policy_builder_add_rule(b, &(RuleSpec){ .action = "odd", .effect = DECISION_ALLOW,
                                                                  .anyone = true, .line = 3 }),
                         0);
        ck_assert_int_eq(policy_builder_add_file(b, "f.conf"), 0);
        for (size_t i = 1; i < n; i++) {
                snprintf(action, sizeof(action), "a%zu", i);
                RuleSpec r = { .action = action, .effect = DECISION_DENY, .anyone = true,
                               .line = (unsigned) (i == 3 ? 3 : i + 1), .id = i == 1 ? "first" : NULL };
                ck_assert_int_eq(policy_builder_add_rule(b, &r), 0);
        }
        policy_builder_set_revision(b, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
        ck_assert_int_eq(policy_builder_finish(b, &p), 0);
        return p;
}

static MetricsSnapshot snapshot(size_t n_rules, bool rule_stats) {
        MetricsSnapshot m = {
                .stats = { .requests = 20, .allowed = 11, .denied = 7, .errors = 2 },
                .connections = 3,
                .audit_suppressed = 5,
                .log_lost = 1,
                .start_time = 1700000000,
                .hits_since = 1700000100,
                .policy = make_policy(n_rules),
        };
        m.stats.error_reasons[PROTO_BAD_ACTION] = 1;
        m.stats.error_reasons[PROTO_TOO_MANY_CONNECTIONS] = 1;
        m.counters.refused_uid_quota = 1;
        m.counters.paused_max_connections = 4;
        m.counters.reloads_ok = 2;
        m.counters.reloads_failed = 1;
        metrics_observe(&m.counters, 10, 10 * 500);      /* 0.5 us each */
        metrics_observe(&m.counters, 3, 3 * 50000);      /* 50 us each */
        metrics_observe(&m.counters, 1, 2000000000ull);  /* 2 s */
        if (rule_stats) {
                m.hits = calloc(n_rules, sizeof(RuleHits));
                ck_assert_ptr_nonnull(m.hits);
                m.hits[1] = (RuleHits){ .hits = 9, .last = 1700000200 };
                m.hits[2] = (RuleHits){ .hits = 1, .last = 1700000300 };
        }
        return m;
}

/* The whole document, rendered in pieces of @piece bytes. */
static char *render_all(const MetricsSnapshot *m, size_t piece, size_t *ret_pieces) {
        MetricsCursor cur = {};
        size_t n = 0, cap = 1 << 20, pieces = 0;
        char *doc = malloc(cap), *buf = malloc(piece);

        ck_assert(doc && buf);
        while (cur.part < 4) {
                size_t k = metrics_render(m, &cur, buf, piece);
                if (k == 0 || k > piece || buf[k - 1] != '\n')
                        ck_abort_msg("piece %zu of at most %zu bytes: %zu bytes, not whole lines", pieces, piece, k);
                while (n + k + 1 > cap)
                        ck_assert_ptr_nonnull(doc = realloc(doc, cap *= 2));
                memcpy(doc + n, buf, k);
                n += k;
                pieces++;
        }
        ck_assert_uint_eq(metrics_render(m, &cur, buf, piece), 0);
        doc[n] = '\0';
        free(buf);
        if (ret_pieces)
                *ret_pieces = pieces;
        return doc;
}

static bool has_line(const char *doc, const char *line) {
        size_t n = strlen(line);
        for (const char *p = doc; (p = strstr(p, line)); p++)
                if ((p == doc || p[-1] == '\n') && p[n] == '\n')
                        return true;
        return false;
}

#define assert_line(doc, line)                                                                 \
        do {                                                                                   \
                if (!has_line(doc, line)) {                                                    \
                        fprintf(stderr, "%s", doc);                                            \
                        ck_abort_msg("no line '%s' in the document (on stderr)", line);       \
                }                                                                              \
        } while (0)

START_TEST(test_series) {
        MetricsSnapshot m = snapshot(5, false);
        char *doc = render_all(&m, 1 << 20, NULL);

        assert_line(doc, "credgate_decisions_total{result=\"allow\"} 11");
        assert_line(doc, "credgate_decisions_total{result=\"deny\"} 7");
        assert_line(doc, "credgate_errors_total{reason=\"bad-action\"} 1");
        assert_line(doc, "credgate_errors_total{reason=\"too-many-connections\"} 1");
        assert_line(doc, "credgate_errors_total{reason=\"timeout\"} 0");
        assert_line(doc, "credgate_connections 3");
        assert_line(doc, "credgate_connections_refused_total{reason=\"uid-quota\"} 1");
        assert_line(doc, "credgate_accept_paused_total{reason=\"max-connections\"} 4");
        assert_line(doc, "credgate_accept_paused_total{reason=\"out-of-descriptors\"} 0");
        assert_line(doc, "credgate_reloads_total{result=\"success\"} 2");
        assert_line(doc, "credgate_reloads_total{result=\"failure\"} 1");
        assert_line(doc, "credgate_policy_rules 5");
        assert_line(doc, "credgate_policy_files 2");
        assert_line(doc, "credgate_policy_info{revision=\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"} 1");
        assert_line(doc, "credgate_policy_loaded_timestamp_seconds 1700000100");
        assert_line(doc, "credgate_audit_suppressed_total 5");
        assert_line(doc, "credgate_log_lost_total 1");
        assert_line(doc, "credgate_start_time_seconds 1700000000");
        /* Cumulative buckets: 10 at 0.5 us, 3 at 50 us, 1 at 2 s (above every bound). */
        assert_line(doc, "credgate_decision_duration_seconds_bucket{le=\"1e-06\"} 10");
        assert_line(doc, "credgate_decision_duration_seconds_bucket{le=\"1e-05\"} 10");
        assert_line(doc, "credgate_decision_duration_seconds_bucket{le=\"0.0001\"} 13");
        assert_line(doc, "credgate_decision_duration_seconds_bucket{le=\"1\"} 13");
        assert_line(doc, "credgate_decision_duration_seconds_bucket{le=\"+Inf\"} 14");
        assert_line(doc, "credgate_decision_duration_seconds_count 14");
        assert_line(doc, "credgate_decision_duration_seconds_sum 2.000155000");
        /* No per-rule series without rule_stats; the end marker, once, last. */
        ck_assert_ptr_null(strstr(doc, "credgate_rule_"));
        ck_assert_ptr_eq(strstr(doc, "# EOF\n"), doc + strlen(doc) - 6);
        free(doc);
        metrics_snapshot_done(&m);
}
END_TEST

/* Every sample follows its family's TYPE and HELP; no family appears twice; counters end in _total. */
START_TEST(test_families_whole) {
        MetricsSnapshot m = snapshot(50, true);
        char *doc = render_all(&m, 1 << 20, NULL);
        char family[128] = "", type[32] = "";
        char seen[64][128];
        size_t n_seen = 0;

        for (char *line = strtok(doc, "\n"); line; line = strtok(NULL, "\n")) {
                if (strncmp(line, "# TYPE ", 7) == 0) {
                        ck_assert_int_eq(sscanf(line, "# TYPE %127s %31s", family, type), 2);
                        for (size_t i = 0; i < n_seen; i++)
                                ck_assert_msg(strcmp(seen[i], family) != 0, "family %s twice", family);
                        ck_assert_uint_lt(n_seen, 64);
                        strcpy(seen[n_seen++], family);
                        if (strcmp(type, "counter") == 0)
                                ck_assert_msg(strlen(family) > 6 && strcmp(family + strlen(family) - 6, "_total") == 0,
                                              "counter %s without _total", family);
                        continue;
                }
                if (line[0] == '#')
                        continue;
                ck_assert_msg(family[0] && strncmp(line, family, strlen(family)) == 0,
                              "sample '%s' outside its family (%s)", line, family);
        }
        ck_assert_uint_eq(n_seen, 16);
        free(doc);
        metrics_snapshot_done(&m);
}
END_TEST

START_TEST(test_rule_labels) {
        MetricsSnapshot m = snapshot(5, true);
        char *doc = render_all(&m, 1 << 20, NULL);

        /* Escaped file name; an id; two rules on one line told apart. */
        assert_line(doc, "credgate_rule_hits_total{rule=\"/etc/credgate/rules.d/we\\\"ird\\\\na\\nme.conf:3\"} 0");
        assert_line(doc, "credgate_rule_hits_total{rule=\"id:first\"} 9");
        assert_line(doc, "credgate_rule_hits_total{rule=\"f.conf:3\"} 1");
        assert_line(doc, "credgate_rule_hits_total{rule=\"f.conf:3#2\"} 0");
        assert_line(doc, "credgate_rule_hits_total{rule=\"f.conf:5\"} 0");
        /* Last hits only for the rules that decided. */
        assert_line(doc, "credgate_rule_last_hit_timestamp_seconds{rule=\"id:first\"} 1700000200");
        assert_line(doc, "credgate_rule_last_hit_timestamp_seconds{rule=\"f.conf:3\"} 1700000300");
        char *p = strstr(doc, "credgate_rule_last_hit_timestamp_seconds{");
        size_t n = 0;
        for (; p; p = strstr(p + 1, "credgate_rule_last_hit_timestamp_seconds{"))
                n++;
        ck_assert_uint_eq(n, 2);
        free(doc);

        /* No rule decided yet: no last-hit family at all (not an empty one). */
        memset(m.hits, 0, 5 * sizeof(RuleHits));
        doc = render_all(&m, 1 << 20, NULL);
        ck_assert_ptr_null(strstr(doc, "credgate_rule_last_hit"));
        ck_assert_ptr_nonnull(strstr(doc, "credgate_rule_hits_total{"));
        free(doc);
        metrics_snapshot_done(&m);
}
END_TEST

/* 100,000 rules in 32 KiB pieces: the same document as in one piece, whole lines in each. */
START_TEST(test_pieces) {
        MetricsSnapshot m = snapshot(100000, true);
        for (size_t i = 0; i < 100000; i += 7)
                m.hits[i] = (RuleHits){ .hits = i + 1, .last = 1700000000 + i };
        size_t pieces = 0;
        char *whole = render_all(&m, 64 << 20, NULL);
        char *cut = render_all(&m, 32768, &pieces);
        ck_assert_uint_gt(pieces, 100);
        ck_assert_uint_eq(strlen(cut), strlen(whole));
        ck_assert(strcmp(cut, whole) == 0);
        free(cut);
        free(whole);
        metrics_snapshot_done(&m);
}
END_TEST

START_TEST(test_observe_buckets) {
        MetricsCounters c = {};
        metrics_observe(&c, 0, 5);
        ck_assert_uint_eq(c.latency_count, 0);
        metrics_observe(&c, 1, 1000); /* exactly 1 us: the first bucket (le is inclusive) */
        metrics_observe(&c, 4, 4 * 1001);
        metrics_observe(&c, 2, 2 * 1000000000ull); /* 1 s each */
        ck_assert_uint_eq(c.latency[0], 1);
        ck_assert_uint_eq(c.latency[1], 4);
        ck_assert_uint_eq(c.latency[METRICS_N_BUCKETS - 1], 2);
        ck_assert_uint_eq(c.latency[METRICS_N_BUCKETS], 0);
        ck_assert_uint_eq(c.latency_count, 7);
        ck_assert_uint_eq(c.latency_sum_ns, 1000 + 4004 + 2000000000ull);
}
END_TEST

static Suite *metrics_suite(void) {
        Suite *s = suite_create("metrics");
        TCase *tc = tcase_create("document");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_series);
        tcase_add_test(tc, test_families_whole);
        tcase_add_test(tc, test_rule_labels);
        tcase_add_test(tc, test_pieces);
        tcase_add_test(tc, test_observe_buckets);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return test_run(metrics_suite());
}
