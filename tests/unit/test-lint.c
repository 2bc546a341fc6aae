/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the policy lint (lint.c and policy_find_shadowed()).
 *
 * The lint must never be wrong. On thousands of random policies every
 * "can never decide" it reports is checked by brute force: over every action
 * of a small alphabet and every identity of a small id space, whatever the
 * shadowed rule matches the earlier rule matches too, and policy_check()
 * never names the shadowed rule. Inclusion of '*' patterns is also checked to
 * be exact (reported exactly when it holds), and the stale-id warnings to
 * follow the user database only where nsswitch.conf says it can be listed.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lint.h"
#include "macro.h"
#include "policy-load.h"
#include "policy.h"
#include "testutil.h"

/* ------------------------------------------------------------------------
 * A model of the rules, written from docs/policy.md, independent of policy.c
 */

#define ID_SPACE 9 /* ids 0..8 in the brute force; rules use 0..7 */
#define MAX_RULES 8

typedef struct ModelRule {
        char action[8];
        Decision effect;
        bool anyone;
        IdRange uids[2], gids[2];
        size_t n_uids, n_gids;
        ConsoleLevel console; /* CONSOLE_NONE: no condition */
        int seat;             /* with console: 0 any seat, 1 "seat0", 2 "seat1" */
} ModelRule;

/* A login state of the brute force: the uid's level on seat0 and seat1, or
 * an error reading it. 10 of them: 3 x 3 levels, and the error. */
#define N_LOGIN_STATES 10
typedef struct LoginState {
        ConsoleLevel on[2];
        bool error;
} LoginState;

static LoginState login_state(unsigned k) {
        return k == 9 ? (LoginState){ .error = true } : (LoginState){ .on = { (ConsoleLevel) (k % 3), (ConsoleLevel) (k / 3) } };
}

/* The console condition, from credgate.conf(5): errors fail closed (an allow
 * does not match, a deny does); otherwise the level held on the seat named,
 * or the best on any seat, must reach the rule's. */
static bool console_model(const ModelRule *r, LoginState st) {
        if (r->console == CONSOLE_NONE)
                return true;
        if (st.error)
                return r->effect == DECISION_DENY;
        ConsoleLevel l = r->seat ? st.on[r->seat - 1] : st.on[0] > st.on[1] ? st.on[0] : st.on[1];
        return l >= r->console;
}

static int state_level(void *userdata, uint32_t uid, const char *seat) {
        const LoginState *st = userdata;
        (void) uid;
        if (st->error)
                return -EIO;
        if (!seat)
                return st->on[0] > st->on[1] ? st->on[0] : st->on[1];
        return strcmp(seat, "seat0") == 0 ? st->on[0] : strcmp(seat, "seat1") == 0 ? st->on[1] : CONSOLE_NONE;
}

/* '*' matches any run of characters, everything else itself. */
static bool glob(const char *p, const char *s) {
        if (*p == '\0')
                return *s == '\0';
        if (*p == '*')
                return glob(p + 1, s) || (*s && glob(p, s + 1));
        return *s == *p && glob(p + 1, s + 1);
}

static bool in(const IdRange *r, size_t n, uint32_t id) {
        for (size_t i = 0; i < n; i++)
                if (id >= r[i].lo && id <= r[i].hi)
                        return true;
        return false;
}

static bool subject(const ModelRule *r, uint32_t uid, uint32_t gid, const uint32_t *groups, size_t n_groups) {
        if (r->anyone || in(r->uids, r->n_uids, uid) || in(r->gids, r->n_gids, gid))
                return true;
        for (size_t i = 0; i < n_groups; i++)
                if (in(r->gids, r->n_gids, groups[i]))
                        return true;
        return false;
}

/* Every string of 1..@max characters over "abc" ('c' never appears in a rule), in turn. */
static bool next_action(char *s, size_t max) {
        size_t n = strlen(s);
        for (size_t i = n; i-- > 0;) {
                if (s[i] != 'c') {
                        s[i]++;
                        return true;
                }
                s[i] = 'a';
        }
        if (n == max)
                return false;
        s[n] = 'a';
        s[n + 1] = '\0';
        return true;
}

/* ------------------------------------------------------------------------
 * Random policies
 */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n) {
        rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
        return (uint32_t) ((rng_state >> 33) % n);
}

static void random_action(char *buf, bool pattern) {
        size_t n = 1 + rnd(pattern ? 5 : 4);
        for (size_t i = 0; i < n; i++)
                buf[i] = pattern && rnd(3) == 0 ? '*' : "ab"[rnd(2)];
        buf[n] = '\0';
        if (pattern && !strchr(buf, '*'))
                buf[rnd((uint32_t) n)] = '*';
}

static IdRange random_range(void) {
        uint32_t a = rnd(8), b = rnd(4) == 0 ? rnd(8) : a;
        return a <= b ? (IdRange){ a, b } : (IdRange){ b, a };
}

static void random_rule(ModelRule *r) {
        *r = (ModelRule){ .effect = rnd(2) ? DECISION_ALLOW : DECISION_DENY, .anyone = rnd(7) == 0 };
        random_action(r->action, rnd(2));
        if (rnd(3) == 0 && !(r->anyone && r->effect == DECISION_ALLOW)) {
                r->console = (ConsoleLevel) (1 + rnd(2));
                r->seat = (int) rnd(3);
        }
        if (r->anyone)
                return;
        r->n_uids = rnd(3);
        r->n_gids = rnd(3);
        if (r->n_uids + r->n_gids == 0)
                r->n_uids = 1;
        for (size_t i = 0; i < r->n_uids; i++)
                r->uids[i] = random_range();
        for (size_t i = 0; i < r->n_gids; i++)
                r->gids[i] = random_range();
}

static Policy *build(const ModelRule *rules, size_t n) {
        PolicyBuilder *b = policy_builder_new();
        Policy *p = NULL;

        ck_assert_ptr_nonnull(b);
        ck_assert_int_eq(policy_builder_add_file(b, "t.conf"), 0);
        for (size_t i = 0; i < n; i++) {
                RuleSpec s = {
                        .action = rules[i].action,
                        .effect = rules[i].effect,
                        .anyone = rules[i].anyone,
                        .uids = rules[i].uids,
                        .n_uids = rules[i].n_uids,
                        .gids = rules[i].gids,
                        .n_gids = rules[i].n_gids,
                        .line = (unsigned) i + 1,
                        .console = rules[i].console,
                        .seat = rules[i].seat == 0 ? NULL : rules[i].seat == 1 ? "seat0" : "seat1",
                };
                ck_assert_int_eq(policy_builder_add_rule(b, &s), 0);
        }
        ck_assert_int_eq(policy_builder_finish(b, &p), 0);
        return p;
}

typedef struct Found {
        size_t n;
        uint32_t rule[MAX_RULES], by[MAX_RULES];
} Found;

static int collect(const Policy *p, size_t rule, size_t by, void *userdata) {
        Found *f = userdata;
        (void) p;
        ck_assert_uint_lt(f->n, MAX_RULES);
        ck_assert_uint_lt(by, rule);
        f->rule[f->n] = (uint32_t) rule;
        f->by[f->n++] = (uint32_t) by;
        return 0;
}

/* ------------------------------------------------------------------------ */

START_TEST(test_shadow_reports_are_true) {
        size_t reported = 0, opposite = 0, late_console = 0, early_console = 0;

        rng_state = 12;
        for (int round = 0; round < 4000; round++) {
                ModelRule rules[MAX_RULES];
                size_t n = 2 + rnd(MAX_RULES - 1);
                Found f = {};

                for (size_t i = 0; i < n; i++)
                        random_rule(&rules[i]);
                Policy *p = build(rules, n);
                ck_assert_int_eq(policy_find_shadowed(p, SIZE_MAX, collect, &f), 0);

                for (size_t k = 0; k < f.n; k++) {
                        const ModelRule *late = &rules[f.rule[k]], *early = &rules[f.by[k]];
                        char a[8] = "";
                        uint32_t groups[2];

                        reported++;
                        opposite += late->effect != early->effect;
                        late_console += late->console != CONSOLE_NONE;
                        early_console += early->console != CONSOLE_NONE;
                        /* In every login state (errors too) where the late rule's console
                         * condition holds, the early one's does... */
                        for (unsigned ls = 0; ls < N_LOGIN_STATES; ls++)
                                if (console_model(late, login_state(ls)) && !console_model(early, login_state(ls)))
                                        ck_abort_msg("round %d: login state %u holds for rule %u, not rule %u", round, ls,
                                                     f.rule[k] + 1, f.by[k] + 1);
                        /* Every action the late rule matches, the early one matches... */
                        while (next_action(a, 6))
                                if (glob(late->action, a) && !glob(early->action, a))
                                        ck_abort_msg(
                                              "round %d: '%s' matches rule %u (%s) but not rule %u (%s)", round, a,
                                              f.rule[k] + 1, late->action, f.by[k] + 1, early->action);
                        /* ...every identity too (no groups, one, two)... */
                        for (uint32_t uid = 0; uid < ID_SPACE; uid++)
                                for (uint32_t gid = 0; gid < ID_SPACE; gid++)
                                        for (uint32_t g = 0; g < ID_SPACE * ID_SPACE + ID_SPACE + 1; g++) {
                                                size_t ng = g == 0 ? 0 : g <= ID_SPACE ? 1 : 2;
                                                groups[0] = g <= ID_SPACE ? g - 1 : (g - ID_SPACE - 1) / ID_SPACE;
                                                groups[1] = (g - ID_SPACE - 1) % ID_SPACE;
                                                if (subject(late, uid, gid, groups, ng) &&
                                                    !subject(early, uid, gid, groups, ng))
                                                        ck_abort_msg("round %d: uid %u gid %u matches rule %u, not rule %u",
                                                              round, uid, gid, f.rule[k] + 1, f.by[k] + 1);
                                        }
                        /* ...so the daemon's evaluation never lets the late rule decide. */
                        for (a[0] = '\0'; next_action(a, 5);) {
                                if (!glob(late->action, a))
                                        continue;
                                for (uint32_t uid = 0; uid < ID_SPACE; uid++) {
                                        gid_t gl[1] = { (gid_t) (uid + 3) % ID_SPACE };
                                        PeerCreds id = { .uid = uid, .gid = uid, .groups = gl, .n_groups = 1 };
                                        LoginState st = login_state((uid + (unsigned) strlen(a) + (unsigned) a[0]) %
                                                                    N_LOGIN_STATES);
                                        Console c = { .level = state_level, .userdata = &st };
                                        Verdict v = policy_check_console(p, a, &id, &c);
                                        if (!v.by_default && v.rule == f.rule[k])
                                                ck_abort_msg("round %d: rule %u decided '%s' for uid %u", round,
                                                      f.rule[k] + 1, a, uid);
                                }
                        }
                }
                policy_unref(p);
        }
        /* The generator must produce both kinds, or this test proves little. */
        ck_assert_uint_gt(reported, 500);
        ck_assert_uint_gt(opposite, 100);
        ck_assert_uint_gt(late_console, 100);
        ck_assert_uint_gt(early_console, 30);
}
END_TEST

/* For two rules with the same subject, shadowing is pattern inclusion, and
 * that is decided exactly: reported exactly when every action of the later
 * one matches the earlier one. A counterexample, when there is one, is the
 * later pattern with 'c' for each '*', so strings up to its length decide. */
START_TEST(test_pattern_inclusion_exact) {
        size_t yes = 0, no = 0;

        rng_state = 99;
        for (int round = 0; round < 20000; round++) {
                ModelRule rules[2];
                Found f = {};
                char a[8] = "";
                bool included = true;

                for (size_t i = 0; i < 2; i++) {
                        random_rule(&rules[i]);
                        rules[i].anyone = true;
                        rules[i].console = CONSOLE_NONE; /* the same subject: actions alone decide */
                        rules[i].seat = 0;
                }
                Policy *p = build(rules, 2);
                ck_assert_int_eq(policy_find_shadowed(p, SIZE_MAX, collect, &f), 0);
                /* No ck_assert in the loops: each one costs Check a write(). */
                while (included && next_action(a, strlen(rules[1].action)))
                        included = !glob(rules[1].action, a) || glob(rules[0].action, a);
                if ((f.n == 1) != included)
                        ck_abort_msg("'%s' then '%s': lint says %s, brute force says %s",
                              rules[0].action, rules[1].action, f.n ? "shadowed" : "not shadowed",
                              included ? "shadowed" : "not shadowed");
                yes += included;
                no += !included;
                policy_unref(p);
        }
        ck_assert_uint_gt(yes, 1000);
        ck_assert_uint_gt(no, 1000);
}
END_TEST

START_TEST(test_subject_cover_cases) {
        static const struct {
                ModelRule early, late;
                bool shadowed;
        } cases[] = {
#define ANY(a) { .action = a, .anyone = true }
#define U(a, lo, hi) { .action = a, .uids = { { lo, hi } }, .n_uids = 1 }
                { ANY("x"), U("x", 5, 5), true },
                { U("x", 1, 10), { .action = "x", .uids = { { 2, 3 }, { 7, 9 } }, .n_uids = 2 }, true },
                { U("x", 1, 10), U("x", 2, 11), false },
                /* gids do not cover uids, nor the other way round */
                { { .action = "x", .gids = { { 1, 10 } }, .n_gids = 1 }, U("x", 2, 2), false },
                { { .action = "x", .uids = { { 1, 10 } }, .n_uids = 1, .gids = { { 4, 4 } }, .n_gids = 1 },
                  { .action = "x", .uids = { { 2, 2 } }, .n_uids = 1, .gids = { { 4, 4 } }, .n_gids = 1 }, true },
                /* only anyone covers anyone */
                { U("x", 0, 4294967294u), ANY("x"), false },
                /* other actions */
                { ANY("x"), ANY("y"), false },
                { ANY("a*"), ANY("ab*"), true },
                { ANY("ab*"), ANY("a*"), false },
                { ANY("*a*"), ANY("*a*a*"), true },
                { ANY("*ab*"), ANY("*a*b*"), false },
                { ANY("a*"), ANY("ab"), true },
                { ANY("ab"), ANY("a*"), false },
                /* placeholders: covered as a '*' would be, never counted as covering */
                { ANY("a.*"), ANY("a.{uid}"), true },
                { ANY("*"), ANY("{gid}.b"), true },
                { ANY("a.{uid}"), ANY("a.{uid}"), false },
                { ANY("a.{uid}"), ANY("a.5"), false },
                { ANY("a.b*"), ANY("a.{uid}"), false },
#undef ANY
#undef U
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                ModelRule rules[2] = { cases[i].early, cases[i].late };
                Found f = {};
                Policy *p = build(rules, 2);
                ck_assert_int_eq(policy_find_shadowed(p, SIZE_MAX, collect, &f), 0);
                ck_assert_msg((f.n == 1) == cases[i].shadowed, "case %zu: got %zu reports", i, f.n);
                policy_unref(p);
        }
}
END_TEST

/* A rule whose names all failed to resolve matches nobody: that is the
 * unresolved-name warning's business, not a shadowing. */
START_TEST(test_rule_matching_nobody_not_reported) {
        ModelRule rules[2] = { { .action = "x", .anyone = true }, { .action = "x" } };
        Found f = {};
        Policy *p = build(rules, 2);
        ck_assert_int_eq(policy_find_shadowed(p, SIZE_MAX, collect, &f), 0);
        ck_assert_uint_eq(f.n, 0);
        policy_unref(p);
}
END_TEST

/* The budget bounds the work per rule; the broad early rule, first in its
 * chain, is still found behind any number of later ones. */
static int count(const Policy *p, size_t rule, size_t by, void *userdata) {
        (void) p;
        (void) rule;
        ck_assert_uint_eq(by, 0);
        (*(size_t *) userdata)++;
        return 0;
}

START_TEST(test_broad_first_rule_found_in_long_chain) {
        PolicyBuilder *b = policy_builder_new();
        Policy *p = NULL;
        size_t n = 0;

        ck_assert_int_eq(policy_builder_add_file(b, "t.conf"), 0);
        ck_assert_int_eq(policy_builder_add_rule(b, &(RuleSpec){ .action = "org.x.*", .effect = DECISION_DENY, .anyone = true, .line = 1 }), 0);
        for (uint32_t i = 0; i < 5000; i++) {
                IdRange u = { i, i };
                ck_assert_int_eq(policy_builder_add_rule(b, &(RuleSpec){ .action = "org.x.run", .effect = DECISION_ALLOW,
                                                                         .uids = &u, .n_uids = 1, .line = 2 + i }),
                                 0);
        }
        ck_assert_int_eq(policy_builder_finish(b, &p), 0);
        ck_assert_int_eq(policy_find_shadowed(p, LINT_CHAIN_BUDGET, count, &n), 0);
        ck_assert_uint_eq(n, 5000);
        policy_unref(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * Messages and stale ids
 */

static char *lint_text(const char *policy, const KnownIds *known, size_t *ret_warnings) {
        char *path = test_write_tmp(policy);
        Diags d = {};
        Policy *p = NULL;
        char *out = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&out, &n);

        ck_assert_int_eq(policy_load(path, &d, &p), 0);
        size_t before = d.n;
        ck_assert_int_eq(policy_lint(p, known, &d), 0);
        for (size_t i = before; i < d.n; i++) {
                ck_assert(d.v[i].warning);
                fprintf(f, "%s\n", strstr(d.v[i].text, ":") + 1); /* without the temp path */
        }
        fclose(f);
        *ret_warnings = d.n - before;
        diags_done(&d);
        policy_unref(p);
        unlink(path);
        free(path);
        return out;
}

START_TEST(test_messages_name_both_rules) {
        size_t n;
        char *out = lint_text("rules = (\n"
                              "  { id = \"ops\"; action = \"org.example.*\"; effect = \"allow\"; gids = [\"4\", \"27\"]; },\n"
                              "  { id = \"no-backup\"; action = \"org.example.backup.run\"; effect = \"deny\"; gids = [\"4\"]; },\n"
                              "  { action = \"org.example.status\"; effect = \"allow\"; gids = [\"27\"]; },\n"
                              "  { action = \"org.example.status\"; effect = \"allow\"; gids = [\"28\"]; }\n"
                              ");\n",
                              NULL, &n);
        ck_assert_uint_eq(n, 2);
        ck_assert_msg(strstr(out, "3: warning: rule 'no-backup' can never decide: the rule at ") &&
                              strstr(out, ":2 (ops) comes first") && strstr(out, "it allows what this one would deny") &&
                              strstr(out, "probably a mistake"),
                      "%s", out);
        ck_assert_msg(strstr(out, "4: warning: this rule can never decide") && strstr(out, "both allow, so this one is redundant"),
                      "%s", out);
        free(out);
}
END_TEST

START_TEST(test_stale_ranges) {
        uint32_t uids[] = { 0, 1000, 1001 }, gids[] = { 0, 100 };
        KnownIds k = { .complete_uids = true, .complete_gids = true, .uids = uids, .gids = gids, .n_uids = 3, .n_gids = 2 };
        const char *policy = "rules = (\n"
                             "  { action = \"a\"; effect = \"allow\"; uids = [\"1000-1999\", \"5000\"]; },\n"
                             "  { id = \"g\"; action = \"b\"; effect = \"deny\"; gids = [\"100\", \"200-299\"]; uids = [\"1001\"]; }\n"
                             ");\n";
        size_t n;
        char *out = lint_text(policy, &k, &n);

        ck_assert_msg(n == 2, "%s", out);
        ck_assert_msg(strstr(out, "2: warning: uid 5000: no user on this host has it (passwd: ") != NULL, "%s", out);
        ck_assert_msg(strstr(out, "3: warning: rule 'g': gids 200-299: no group on this host has an id in it") != NULL,
                      "%s", out);
        free(out);

        /* Where the database cannot be listed, no such warning. */
        k.complete_uids = k.complete_gids = false;
        out = lint_text(policy, &k, &n);
        ck_assert_msg(n == 0, "%s", out);
        free(out);
}
END_TEST

START_TEST(test_nsswitch_sources) {
        static const struct {
                const char *text;
                bool uids, gids;
        } cases[] = {
                { "passwd: files systemd\ngroup: files systemd\n", true, true },
                { "passwd:   files [NOTFOUND=return] systemd # comment\ngroup: files\n", true, true },
                { "passwd: files sss\ngroup: files systemd\n", false, false },
                { "passwd: files systemd\ngroup: files ldap\n", true, false },
                { "passwd: compat\ngroup: compat\n", false, false },
                { "hosts: files dns\n", true, true }, /* glibc's default for a database without a line: files */
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char *path = test_write_tmp(cases[i].text);
                KnownIds k;
                ck_assert_int_eq(known_ids_load(path, &k), 0);
                ck_assert_msg(k.complete_uids == cases[i].uids && k.complete_gids == cases[i].gids, "case %zu", i);
                /* root is always there where the files are read */
                if (k.complete_uids)
                        ck_assert(k.n_uids > 0 && k.uids[0] == 0);
                known_ids_done(&k);
                unlink(path);
                free(path);
        }
}
END_TEST

static Suite *lint_suite(void) {
        Suite *s = suite_create("lint");
        TCase *tc = tcase_create("shadowed");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_shadow_reports_are_true);
        tcase_add_test(tc, test_pattern_inclusion_exact);
        tcase_add_test(tc, test_subject_cover_cases);
        tcase_add_test(tc, test_rule_matching_nobody_not_reported);
        tcase_add_test(tc, test_broad_first_rule_found_in_long_chain);
        tcase_add_test(tc, test_messages_name_both_rules);
        suite_add_tcase(s, tc);
        tc = tcase_create("stale");
        tcase_add_test(tc, test_stale_ranges);
        tcase_add_test(tc, test_nsswitch_sources);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return test_run(lint_suite());
}
