/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the policy loader (policy-load.c) and the compiled policy
 * (policy.c): every load error with its exact "FILE:LINE:" position, the
 * first-match rule across exact rules and patterns, ids, names, patterns,
 * and a large generated policy checked against a brute-force first-match
 * loop so that the hash index can never drift from file order.
 */
#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "action.h"
#include "macro.h"
#include "policy-load.h"
#include "policy.h"
#include "testutil.h"

#define ALLOW DECISION_ALLOW
#define DENY DECISION_DENY

/* ------------------------------------------------------------------------
 * Fixture: one loaded policy per test; its temp files are unlinked right after loading.
 */

static struct {
        char *path;     /* the policy file given to policy_load(), already unlinked */
        char *extra[4]; /* more temp files (@include targets), unlinked by the next load() */
        Diags diags;
        Policy *policy;
        int r;
} L;

/* Forget the last load. */
static void release(void) {
        L.path = mfree(L.path);
        diags_done(&L.diags);
        L.policy = policy_unref(L.policy);
        L.r = 0;
}

static void setup(void) {
        memset(&L, 0, sizeof(L));
}

static void teardown(void) {
        release();
        for (size_t i = 0; i < ELEMENTSOF(L.extra); i++)
                L.extra[i] = mfree(L.extra[i]);
}

/*
 * Write the policy text to a temp file and load it; the result stays in L.
 * Files are unlinked at once: a failing assertion skips the teardown.
 */
__attribute__((format(printf, 1, 2))) static int load(const char *fmt, ...) {
        char *text = NULL;
        va_list ap;

        release();
        va_start(ap, fmt);
        ck_assert_int_ge(vasprintf(&text, fmt, ap), 0);
        va_end(ap);
        L.path = test_write_tmp(text);
        free(text);
        L.r = policy_load(L.path, &L.diags, &L.policy);
        unlink(L.path);
        for (size_t i = 0; i < ELEMENTSOF(L.extra); i++)
                if (L.extra[i])
                        unlink(L.extra[i]);
        return L.r;
}

/* A temp file for the next load() to include. Return: its path. */
static const char *tmp_extra(const char *text) {
        for (size_t i = 0; i < ELEMENTSOF(L.extra); i++)
                if (!L.extra[i])
                        return L.extra[i] = test_write_tmp(text);
        ck_abort_msg("too many temp files");
        return NULL;
}

static const char *dump_diags(void) {
        static char buf[8192];
        size_t n = 0;

        buf[0] = '\0';
        for (size_t i = 0; i < L.diags.n && n < sizeof(buf); i++)
                n += (size_t) snprintf(buf + n, sizeof(buf) - n, "  %s\n", L.diags.v[i].text);
        return L.diags.n > 0 ? buf : "  (no diagnostics)\n";
}

/* Is there a diagnostic "PATH:LINE: [warning: ]..." (or "PATH: ..." for line 0) containing @needle? */
static bool has_diag(bool warning, unsigned line, const char *needle) {
        char prefix[512];

        if (line > 0)
                snprintf(prefix, sizeof(prefix), "%s:%u: %s", L.path, line, warning ? "warning: " : "");
        else
                snprintf(prefix, sizeof(prefix), "%s: %s", L.path, warning ? "warning: " : "");
        for (size_t i = 0; i < L.diags.n; i++) {
                const Diag *d = &L.diags.v[i];
                if (d->warning == warning && strncmp(d->text, prefix, strlen(prefix)) == 0 &&
                    strstr(d->text + strlen(prefix), needle))
                        return true;
        }
        return false;
}

#define assert_diag(warning, line, needle)                                                                             \
        ck_assert_msg(has_diag(warning, line, needle), "expected %s at line %u containing \"%s\", got:\n%s",           \
                      (warning) ? "a warning" : "an error", (unsigned) (line), needle, dump_diags())
#define assert_error(line, needle) assert_diag(false, line, needle)
#define assert_warning(line, needle) assert_diag(true, line, needle)

/* The policy was refused with exactly @n errors, and nothing was handed out. */
#define assert_refused(n)                                                                                              \
        do {                                                                                                           \
                ck_assert_msg(L.r == -EINVAL, "policy_load() returned %d, want -EINVAL; diagnostics:\n%s", L.r,        \
                              dump_diags());                                                                           \
                ck_assert_msg(L.policy == NULL, "a refused policy must not be returned");                              \
                ck_assert_msg(L.diags.n_errors == (size_t) (n), "want %zu errors, got %zu:\n%s", (size_t) (n),         \
                              L.diags.n_errors, dump_diags());                                                         \
        } while (0)

#define assert_loaded(n_warn)                                                                                          \
        do {                                                                                                           \
                ck_assert_msg(L.r == 0 && L.policy, "policy_load() returned %d, want 0; diagnostics:\n%s", L.r,        \
                              dump_diags());                                                                           \
                ck_assert_msg(L.diags.n_errors == 0 && L.diags.n_warnings == (size_t) (n_warn),                        \
                              "want 0 errors and %zu warnings, got:\n%s", (size_t) (n_warn), dump_diags());            \
        } while (0)

/* ------------------------------------------------------------------------
 * Identities and verdicts
 */

#define CREDS(u, g) ((PeerCreds){ .pid = 1, .uid = (u), .gid = (g) })
#define CREDS_G(u, g, ...)                                                                                             \
        ((PeerCreds){ .pid = 1,                                                                                        \
                      .uid = (u),                                                                                      \
                      .gid = (g),                                                                                      \
                      .groups = (gid_t[]){ __VA_ARGS__ },                                                              \
                      .n_groups = sizeof((gid_t[]){ __VA_ARGS__ }) / sizeof(gid_t) })

/* @line is the deciding rule's line, or 0 for "decided by the default". */
#define expect(action, creds, decision, line) expect_at(__LINE__, action, creds, decision, line)

static void expect_at(int at, const char *action, PeerCreds c, Decision want, unsigned line) {
        Verdict v = policy_check(L.policy, action, &c);

        ck_assert_msg(v.decision == want && v.line == line && v.by_default == (line == 0),
                      "test line %d: '%s' for uid %u gid %u (%zu groups): got %s from %s %u, want %s from %s %u", at,
                      action, c.uid, c.gid, c.n_groups, v.decision == ALLOW ? "ALLOW" : "DENY",
                      v.by_default ? "default" : "rule on line", v.line, want == ALLOW ? "ALLOW" : "DENY",
                      line ? "rule on line" : "default", line);
        if (line > 0)
                ck_assert_msg(v.file && strcmp(v.file, L.path) == 0, "test line %d: verdict file '%s', want '%s'", at,
                              v.file ? v.file : "(null)", L.path);
        else
                ck_assert_msg(v.file == NULL, "test line %d: a default verdict names file '%s'", at, v.file);
}

static char *repeat(char c, size_t n) {
        char *s = malloc(n + 1);
        ck_assert_ptr_nonnull(s);
        memset(s, c, n);
        s[n] = '\0';
        return s;
}

/* ------------------------------------------------------------------------
 * Load errors
 */

/* Files with exactly one error: its line (0 for "FILE: message") and text. */
static const struct {
        const char *name, *text;
        unsigned line;
        const char *message;
} one_error[] = {
        { "trailing comma (libconfig reports the ')' after it)",
          "default = \"deny\";\n"
          "rules = (\n"
          "  { action = \"a\"; effect = \"allow\"; anyone = true; }, );\n",
          3, "syntax error" },
        { "duplicate setting",
          "rules = (\n"
          "  { action = \"a\"; effect = \"allow\";\n"
          "    uids = [\"1\"]; uids = [\"2\"]; }\n"
          ");\n",
          3, "duplicate setting" },
        { "unknown top-level key",
          "default = \"deny\";\n"
          "rules = (\n"
          "  { action = \"a\"; effect = \"allow\"; anyone = true; }\n"
          ");\n"
          "defaults = \"allow\";\n",
          5, "unknown setting 'defaults'" },
        { "unknown rule key",
          "rules = (\n"
          "  { action = \"a\"; effect = \"allow\";\n"
          "    user = [\"root\"]; anyone = true; }\n"
          ");\n",
          3, "unknown key 'user' in rule" },
        { "missing rules", "default = \"deny\";\n", 0, "missing 'rules'" },
        { "empty file", "", 0, "missing 'rules'" },
        { "rules is a string", "default = \"deny\";\nrules = \"x\";\n", 2, "'rules' must be a list" },
        { "rules is a group",
          "default = \"deny\";\n\nrules = { action = \"a\"; effect = \"allow\"; anyone = true; };\n", 3,
          "'rules' must be a list" },
        { "rules is a number", "rules = 5;\n", 1, "'rules' must be a list" },
        { "missing action (the rule's brace line)",
          "rules = (\n"
          "  { action = \"a\"; effect = \"allow\"; anyone = true; },\n"
          "  {\n"
          "    effect = \"allow\";\n"
          "    anyone = true;\n"
          "  }\n"
          ");\n",
          3, "rule has no 'action'" },
        { "action not a string",
          "rules = (\n"
          "  { effect = \"allow\";\n"
          "    action = 5; anyone = true; }\n"
          ");\n",
          3, "'action' must be a string" },
        { "missing effect (the rule's brace line)",
          "rules = (\n"
          "\n"
          "  { action = \"a\";\n"
          "    anyone = true; }\n"
          ");\n",
          3, "rule has no 'effect'" },
        { "effect \"permit\"",
          "rules = (\n"
          "  { action = \"a\"; anyone = true;\n"
          "    effect = \"permit\"; }\n"
          ");\n",
          3, "'effect' must be \"allow\" or \"deny\"" },
        { "effect \"Allow\"", "rules = (\n  { action = \"a\"; anyone = true; effect = \"Allow\"; }\n);\n", 2,
          "'effect' must be \"allow\" or \"deny\"" },
        { "effect true", "rules = (\n  { action = \"a\"; anyone = true; effect = true; }\n);\n", 2,
          "'effect' must be \"allow\" or \"deny\"" },
        { "default \"maybe\"",
          "rules = (\n  { action = \"a\"; effect = \"allow\"; anyone = true; }\n);\ndefault = \"maybe\";\n", 4,
          "'default' must be \"allow\" or \"deny\"" },
        { "default \"Allow\"",
          "rules = (\n  { action = \"a\"; effect = \"allow\"; anyone = true; }\n);\ndefault = \"Allow\";\n", 4,
          "'default' must be \"allow\" or \"deny\"" },
        { "default 1", "rules = (\n  { action = \"a\"; effect = \"allow\"; anyone = true; }\n);\n\ndefault = 1;\n", 5,
          "'default' must be \"allow\" or \"deny\"" },
        { "anyone not a bool",
          "rules = (\n"
          "  { action = \"a\"; effect = \"allow\";\n"
          "    anyone = \"yes\"; }\n"
          ");\n",
          3, "'anyone' must be true or false" },
};

START_TEST(test_one_error) {
        load("%s", one_error[_i].text);
        ck_assert_msg(L.r == -EINVAL && !L.policy && L.diags.n_errors == 1,
                      "%s: want -EINVAL, no policy and 1 error; got %d, %zu errors:\n%s", one_error[_i].name, L.r,
                      L.diags.n_errors, dump_diags());
        ck_assert_msg(has_diag(false, one_error[_i].line, one_error[_i].message),
                      "%s: want an error at line %u containing \"%s\", got:\n%s", one_error[_i].name,
                      one_error[_i].line, one_error[_i].message, dump_diags());
}
END_TEST

/* Index 2 is a 256-character action, built at run time. */
static const char *const bad_patterns[] = {
        "a b", "", NULL, "a?b", "a[b]", "a\\\\b", "a\\tb", "org.\xc3\xa9", "a,b", "{a}", "org.example.*;x",
};

START_TEST(test_bad_pattern) {
        _cleanup_free_ char *long_action = repeat('a', 256);
        const char *a = bad_patterns[_i] ? bad_patterns[_i] : long_action;

        load("rules = (\n"
             "  { effect = \"allow\"; anyone = true;\n"
             "    action = \"%s\"; }\n"
             ");\n",
             a);
        assert_refused(1);
        assert_error(3, "bad action");
}
END_TEST

START_TEST(test_rule_not_a_group) {
        load("rules = (\n"
             "  { action = \"a\"; effect = \"allow\"; anyone = true; },\n"
             "  \"org.example.run\",\n"
             "  ( { action = \"b\"; effect = \"allow\"; anyone = true; } )\n"
             ");\n");
        assert_refused(2);
        assert_error(3, "each rule must be a group");
        assert_error(4, "each rule must be a group");
}
END_TEST

START_TEST(test_empty_subject) {
        load("rules = (\n"
             "  { action = \"a\"; effect = \"allow\"; },\n"
             "  { action = \"b\"; effect = \"allow\";\n"
             "    users = []; groups = (); uids = []; gids = (); },\n"
             "  { action = \"c\"; effect = \"deny\";\n"
             "    anyone = false; }\n"
             ");\n");
        assert_refused(3);
        assert_error(2, "rule has no subject");
        assert_error(3, "rule has no subject");
        assert_error(5, "rule has no subject");
}
END_TEST

START_TEST(test_scalar_where_list_belongs) {
        load("rules = (\n"
             "  { action = \"a\"; effect = \"allow\"; users = \"root\"; },\n"
             "  { action = \"a\"; effect = \"allow\"; groups = \"adm\"; },\n"
             "  { action = \"a\"; effect = \"allow\"; uids = \"1\"; },\n"
             "  { action = \"a\"; effect = \"allow\"; gids = \"1\"; },\n"
             "  { action = \"a\"; effect = \"allow\"; groups = { adm = true; }; }\n"
             ");\n");
        assert_refused(5);
        assert_error(2, "'users' must be a list");
        assert_error(3, "'groups' must be a list");
        assert_error(4, "'uids' must be a list");
        assert_error(5, "'gids' must be a list");
        assert_error(6, "'groups' must be a list");
}
END_TEST

START_TEST(test_non_string_entries) {
        load("rules = (\n"
             "  { action = \"a\"; effect = \"allow\"; users = [1]; },\n"
             "  { action = \"a\"; effect = \"allow\"; groups = [true]; },\n"
             "  { action = \"a\"; effect = \"allow\"; users = ( (\"root\") ); },\n"
             "  { action = \"a\"; effect = \"allow\"; gids = ( [\"1\"] ); },\n"
             "  { action = \"a\"; effect = \"allow\"; groups = ( { name = \"adm\"; } ); }\n"
             ");\n");
        assert_refused(5);
        assert_error(2, "'users' entries must be strings");
        assert_error(3, "'groups' entries must be strings");
        assert_error(4, "'users' entries must be strings");
        assert_error(5, "'gids' entries must be strings");
        assert_error(6, "'groups' entries must be strings");
}
END_TEST

/* Load @fmt, whose one %s becomes the path of a temp file holding @included. */
#define load_with_include(fmt, included) load(fmt, tmp_extra(included))

/* The error names the line of the @include directive in the policy file. */
static void assert_include_refused(unsigned line) {
        assert_refused(1);
        ck_assert_msg(has_diag(false, line, "@include is not supported"), "want an @include error at line %u, got:\n%s",
                      line, dump_diags());
}

START_TEST(test_include_setting_refused) {
        load_with_include("rules = (\n"
                          "  { action = \"a\"; effect = \"deny\"; uids = [\"0\"]; }\n"
                          ");\n"
                          "@include \"%s\"\n",
                          "default = \"allow\";\n");
        assert_include_refused(4);
}
END_TEST

START_TEST(test_include_rule_refused) {
        load_with_include("rules = (\n"
                          "  { action = \"a\"; effect = \"deny\"; uids = [\"0\"]; },\n"
                          "@include \"%s\"\n"
                          ");\n",
                          "{ action = \"*\"; effect = \"allow\"; anyone = true; }\n");
        assert_include_refused(3);
}
END_TEST

/* An @include that supplies only a value, not a setting of its own, must be refused too. */
START_TEST(test_include_value_refused) {
        load_with_include("rules = (\n"
                          "  { effect = \"allow\"; anyone = true; action =\n"
                          "@include \"%s\"\n"
                          "  ; }\n"
                          ");\n",
                          "\"*\"\n");
        assert_include_refused(3);
}
END_TEST

START_TEST(test_include_list_element_refused) {
        load_with_include("rules = (\n"
                          "  { action = \"a\"; effect = \"allow\"; uids = [\n"
                          "@include \"%s\"\n"
                          "  ]; }\n"
                          ");\n",
                          "\"0\"\n");
        assert_include_refused(3);
}
END_TEST

/* libconfig joins adjacent strings: ["1000" "1001"] would be the one id
 * "10001001", so a missing comma must be an error, comments between or not. */
START_TEST(test_joined_strings_refused) {
        static const char *const cases[] = {
                "  { action = \"a\"; effect = \"deny\"; uids = [\"1000\" \"1001\"]; }\n",
                "  { action = \"a\"; effect = \"deny\"; uids = [\"1000\" # one\n \"1001\"]; }\n",
                "  { action = \"a\"; effect = \"deny\"; users = [\"root\" /* x */ \"bin\"]; }\n",
                "  { action = \"a\" \"b\"; effect = \"deny\"; anyone = true; }\n",
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                load("rules = (\n%s);\n", cases[i]);
                assert_refused(1);
                ck_assert_msg(has_diag(false, 2, "two strings in a row") || has_diag(false, 3, "two strings in a row"),
                              "case %zu: want a joined-strings error, got:\n%s", i, dump_diags());
        }
        /* A comma, or a quote inside a comment or an escaped quote, is fine. */
        load("rules = (\n  { action = \"a\"; effect = \"deny\"; uids = [\"1000\", # \"x\"\n \"1001\"]; }\n);\n");
        ck_assert_msg(L.r == 0, "comma-separated ids refused:\n%s", dump_diags());
}
END_TEST

START_TEST(test_missing_file) {
        const char *path = "/nonexistent/credgate-test.conf";
        char want[256];

        L.r = policy_load(path, &L.diags, &L.policy);
        ck_assert_int_eq(L.r, -EINVAL);
        ck_assert_ptr_null(L.policy);
        ck_assert_uint_eq(L.diags.n_errors, 1);
        snprintf(want, sizeof(want), "%s: cannot open: ", path);
        ck_assert_msg(strncmp(L.diags.v[0].text, want, strlen(want)) == 0, "got '%s', want '%s...'", L.diags.v[0].text,
                      want);
}
END_TEST

/* A path that is not a regular file must be an error, never an exit(): the
 * daemon reloads on SIGHUP and has to survive a broken config path. */
START_TEST(test_directory_refused) {
        char dir[] = "/tmp/credgate-test-dir-XXXXXX";
        int status;

        ck_assert_ptr_nonnull(mkdtemp(dir));
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                Diags d = {};
                Policy *p = NULL;
                int r = policy_load(dir, &d, &p);
                bool ok = r == -EINVAL && !p && d.n_errors == 1 && d.n == 1 &&
                          strncmp(d.v[0].text, dir, strlen(dir)) == 0 && d.v[0].text[strlen(dir)] == ':';
                policy_unref(p);
                diags_done(&d);
                _exit(ok ? 0 : 1);
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        rmdir(dir);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "policy_load() on a directory must return -EINVAL with one 'PATH: ...' error; the process %s %d",
                      WIFEXITED(status) ? "exited with status" : "was killed by signal",
                      WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}
END_TEST

START_TEST(test_several_errors_all_reported) {
        load("default = \"maybe\";\n"                                                /* 1 */
             "colour = \"blue\";\n"                                                  /* 2 */
             "rules = (\n"                                                           /* 3 */
             "  { action = \"a\"; effect = \"permit\"; anyone = true; },\n"          /* 4 */
             "  { action = \"a b\"; effect = \"allow\"; anyone = true; },\n"         /* 5 */
             "  { action = \"ok\"; effect = \"allow\"; uids = [\"1\"]; },\n"         /* 6 */
             "  { action = \"c\"; effect = \"allow\"; uids = (\"5-3\", 7); },\n"     /* 7 */
             "  { action = \"d\"; effect = \"allow\"; frob = 1; anyone = true; },\n" /* 8 */
             "  { action = \"e\"; effect = \"deny\"; }\n"                            /* 9 */
             ");\n");
        assert_refused(8);
        assert_error(1, "'default' must be");
        assert_error(2, "unknown setting 'colour'");
        assert_error(4, "'effect' must be");
        assert_error(5, "bad action 'a b'");
        assert_error(7, "reversed range");
        assert_error(7, "quoted");
        assert_error(8, "unknown key 'frob'");
        assert_error(9, "rule has no subject");
}
END_TEST

START_TEST(test_empty_rules_warns) {
        load("rules = ();\n");
        assert_loaded(1);
        assert_warning(1, "'rules' is empty");
        ck_assert_uint_eq(policy_n_rules(L.policy), 0);
        expect("org.example.run", CREDS(0, 0), DENY, 0);
        expect("x", CREDS(1000, 1000), DENY, 0);

        load("default = \"allow\";\n\nrules = [];\n");
        assert_loaded(1);
        assert_warning(3, "'rules' is empty");
        expect("org.example.run", CREDS(0, 0), ALLOW, 0);
        expect("x", CREDS_G(1000, 1000, 4, 100), ALLOW, 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * Matching
 */

START_TEST(test_first_match_exact_and_patterns) {
        load("default = \"allow\";\n"
             "rules = (\n"
             "  { action = \"org.example.*\";   effect = \"deny\";  uids = [\"1\"]; },\n"        /* 3 */
             "  { action = \"org.example.run\"; effect = \"allow\"; uids = [\"1\", \"2\"]; },\n" /* 4 */
             "  { action = \"org.example.run\"; effect = \"deny\";  uids = [\"2\", \"3\"]; },\n" /* 5 */
             "  { action = \"org.example.*\";   effect = \"allow\"; uids = [\"3\", \"4\"]; },\n" /* 6 */
             "  { action = \"*\";               effect = \"deny\";  uids = [\"1-5\"]; }\n"       /* 7 */
             ");\n");
        assert_loaded(0);
        expect("org.example.run", CREDS(1, 100), DENY, 3);  /* earlier pattern beats later exact rule */
        expect("org.example.run", CREDS(2, 100), ALLOW, 4); /* exact rules in file order */
        expect("org.example.run", CREDS(3, 100), DENY, 5);  /* earlier exact rule beats later pattern */
        expect("org.example.run", CREDS(4, 100), ALLOW, 6);
        expect("org.example.run", CREDS(5, 100), DENY, 7);
        expect("org.example.run", CREDS(6, 100), ALLOW, 0);
        expect("org.example.stop", CREDS(1, 100), DENY, 3);
        expect("org.example.stop", CREDS(2, 100), DENY, 7);
        expect("org.example.stop", CREDS(3, 100), ALLOW, 6);
        expect("net.example.run", CREDS(1, 100), DENY, 7);
        expect("net.example.run", CREDS(6, 100), ALLOW, 0);
}
END_TEST

START_TEST(test_first_match_between_patterns) {
        /* Prefixes of different lengths, in both orders. */
        load("rules = (\n"
             "  { action = \"org.*\";             effect = \"deny\";  uids = [\"1\"]; },\n"        /* 2 */
             "  { action = \"org.example.*\";     effect = \"allow\"; uids = [\"1\", \"2\"]; },\n" /* 3 */
             "  { action = \"org.*\";             effect = \"deny\";  uids = [\"2\", \"3\"]; },\n" /* 4 */
             "  { action = \"*.run\";             effect = \"allow\"; uids = [\"3\", \"4\"]; },\n" /* 5 */
             "  { action = \"org.example.r*\";    effect = \"deny\";  uids = [\"4\", \"5\"]; },\n" /* 6 */
             "  { action = \"*\";                 effect = \"allow\"; uids = [\"5\", \"6\"]; }\n"  /* 7 */
             ");\n");
        assert_loaded(0);
        expect("org.example.run", CREDS(1, 1), DENY, 2);
        expect("org.example.run", CREDS(2, 1), ALLOW, 3);
        expect("org.example.run", CREDS(3, 1), DENY, 4);
        expect("org.example.run", CREDS(4, 1), ALLOW, 5);
        expect("org.example.run", CREDS(5, 1), DENY, 6);
        expect("org.example.run", CREDS(6, 1), ALLOW, 7);
        expect("org.example.run", CREDS(7, 1), DENY, 0);
        expect("net.example.run", CREDS(3, 1), ALLOW, 5);
        expect("net.example.run", CREDS(4, 1), ALLOW, 5);
        expect("net.example.run", CREDS(5, 1), ALLOW, 7);
        expect("org.other", CREDS(2, 1), DENY, 4);
}
END_TEST

START_TEST(test_default_deny_and_allow) {
        static const char *const rules = "rules = (\n"
                                         "  { action = \"org.example.run\"; effect = \"allow\"; uids = [\"1000\"]; },\n"
                                         "  { action = \"org.example.stop\"; effect = \"deny\"; uids = [\"1000\"]; }\n"
                                         ");\n";

        load("%s", rules); /* no default: deny */
        assert_loaded(0);
        ck_assert_int_eq(policy_default(L.policy), DENY);
        expect("org.example.run", CREDS(1000, 1000), ALLOW, 2);
        expect("org.example.run", CREDS(1001, 1000), DENY, 0);
        expect("org.example.stop", CREDS(1000, 1000), DENY, 3);
        expect("org.example.other", CREDS(1000, 1000), DENY, 0);

        load("default = \"deny\";\n%s", rules);
        assert_loaded(0);
        ck_assert_int_eq(policy_default(L.policy), DENY);
        expect("org.example.other", CREDS(1000, 1000), DENY, 0);

        load("default = \"allow\";\n%s", rules);
        assert_loaded(0);
        ck_assert_int_eq(policy_default(L.policy), ALLOW);
        expect("org.example.run", CREDS(1000, 1000), ALLOW, 3);
        expect("org.example.run", CREDS(1001, 1000), ALLOW, 0);
        expect("org.example.stop", CREDS(1000, 1000), DENY, 4);
        expect("org.example.stop", CREDS(1001, 1000), ALLOW, 0);
        expect("org.example.other", CREDS(1000, 1000), ALLOW, 0);
}
END_TEST

START_TEST(test_root_gets_no_special_treatment) {
        load("rules = (\n"
             "  { action = \"org.example.run\"; effect = \"allow\"; uids = [\"1\"]; gids = [\"1\"]; },\n"
             "  { action = \"org.example.*\"; effect = \"allow\"; users = [\"daemon\"]; }\n"
             ");\n");
        assert_loaded(0);
        expect("org.example.run", CREDS_G(0, 0, 0), DENY, 0);
        expect("org.example.stop", CREDS_G(0, 0, 0), DENY, 0);
        expect("org.example.run", CREDS(1, 1), ALLOW, 2);

        load("rules = (\n"
             "  { action = \"org.example.run\"; effect = \"deny\"; uids = [\"0\"]; },\n"
             "  { action = \"org.example.run\"; effect = \"allow\"; anyone = true; }\n"
             ");\n");
        assert_loaded(0);
        expect("org.example.run", CREDS_G(0, 0, 0), DENY, 2);
        expect("org.example.run", CREDS(1000, 1000), ALLOW, 3);
}
END_TEST

START_TEST(test_subject_any_entry_matches) {
        load("rules = (\n"
             "  { action = \"a\"; effect = \"allow\";\n"
             "    users = [\"bin\"]; groups = [\"staff\"]; uids = [\"1000\"]; gids = [\"2000-2999\"]; }\n"
             ");\n");
        assert_loaded(0);
        expect("a", CREDS(2, 9), ALLOW, 2);
        expect("a", CREDS(9, 50), ALLOW, 2);
        expect("a", CREDS_G(9, 9, 50), ALLOW, 2);
        expect("a", CREDS(1000, 9), ALLOW, 2);
        expect("a", CREDS_G(9, 9, 10, 2999), ALLOW, 2);
        expect("a", CREDS_G(9, 9, 2, 1000, 3000), DENY, 0); /* uid-ish numbers in groups do not count */
        expect("a", CREDS(50, 2), DENY, 0);                 /* neither do gid-ish numbers as uids */
}
END_TEST

START_TEST(test_anyone_matches_everyone) {
        load("default = \"allow\";\n"
             "rules = (\n"
             "  { action = \"org.example.*\"; effect = \"deny\"; anyone = true; uids = [\"1\"]; }\n"
             ");\n");
        assert_loaded(0);
        expect("org.example.run", CREDS(0, 0), DENY, 3);
        expect("org.example.run", CREDS(4294967294u, 4294967294u), DENY, 3);
        expect("org.example.run", CREDS_G(1000, 100, 4, 50, 100), DENY, 3);
        expect("net.example.run", CREDS(1000, 100), ALLOW, 0);
}
END_TEST

START_TEST(test_verdict_names_the_rule) {
        load("# leading comment\n"
             "rules = (\n"
             "  { action = \"a\"; effect = \"allow\"; uids = [\"1\"]; },\n"
             "\n"
             "  {\n"
             "    action = \"a\";\n"
             "    effect = \"deny\";\n"
             "    uids = [\"2\"];\n"
             "  }\n"
             ");\n");
        assert_loaded(0);
        ck_assert_uint_eq(policy_n_rules(L.policy), 2);
        ck_assert_uint_eq(policy_n_files(L.policy), 1);
        ck_assert_str_eq(policy_file(L.policy, 0), L.path);
        ck_assert_ptr_null(policy_file(L.policy, 1));

        PeerCreds c = CREDS(2, 2);
        Verdict v = policy_check(L.policy, "a", &c);
        ck_assert_int_eq(v.decision, DENY);
        ck_assert_msg(!v.by_default, "a rule decided, by_default must be false");
        ck_assert_uint_eq(v.line, 5); /* the rule's opening brace */
        ck_assert_str_eq(v.file, L.path);
        ck_assert_msg(v.file != L.path, "the verdict must point at the policy's own copy of the path");

        c = CREDS(3, 3);
        v = policy_check(L.policy, "a", &c);
        ck_assert_int_eq(v.decision, DENY);
        ck_assert_msg(v.by_default, "no rule matched, by_default must be true");
        ck_assert_ptr_null(v.file);
        ck_assert_uint_eq(v.line, 0);
}
END_TEST

START_TEST(test_messages) {
        char long_msg[POLICY_MESSAGE_MAX + 2] = {}; /* 200 'm', then 201 'm' below: always terminated */
        memset(long_msg, 'm', POLICY_MESSAGE_MAX);
        load("rules = (\n"
             "  { id = \"no-bob\"; action = \"a\"; effect = \"deny\"; uids = [\"1\"]; message = \"Ask #ops; \\\"not\\\" me -- ok\"; },\n"
             "  { action = \"b\"; effect = \"allow\"; anyone = true; message = \"%s\"; },\n"
             "  { action = \"c\"; effect = \"allow\"; anyone = true; }\n"
             ");\n",
             long_msg);
        assert_loaded(0);
        PeerCreds c = CREDS(1, 1);
        Verdict v = policy_check(L.policy, "a", &c);
        ck_assert_str_eq(v.message, "Ask #ops; \"not\" me -- ok");
        ck_assert_str_eq(v.id, "no-bob");
        ck_assert_str_eq(policy_check(L.policy, "b", &c).message, long_msg);
        ck_assert_ptr_null(policy_check(L.policy, "c", &c).message);
        ck_assert_ptr_null(policy_check(L.policy, "d", &c).message);
        RuleInfo ri;
        ck_assert(policy_rule_info(L.policy, 0, &ri));
        ck_assert_str_eq(ri.message, v.message);

        long_msg[POLICY_MESSAGE_MAX] = 'm';
        load("rules = (\n"
             "  { action = \"a\"; effect = \"deny\"; anyone = true; message = \"\"; },\n"
             "  { action = \"b\"; effect = \"deny\"; anyone = true; message = \"%s\"; },\n"
             "  { action = \"c\"; effect = \"deny\"; anyone = true; message = \"tab\\there\"; },\n"
             "  { action = \"d\"; effect = \"deny\"; anyone = true; message = \"caf\xc3\xa9\"; },\n"
             "  { action = \"e\"; effect = \"deny\"; anyone = true; message = 5; },\n"
             "  { action = \"f\"; effect = \"deny\"; anyone = true; message = \"line\\nbreak\"; }\n"
             ");\n",
             long_msg);
        assert_refused(6);
        for (unsigned line = 2; line <= 7; line++)
                assert_error(line, "bad message: use 1-200 printable ASCII characters");
}
END_TEST

START_TEST(test_placeholder_errors) {
        load("rules = (\n"
             "  { action = \"a.*{uid}\"; effect = \"allow\"; anyone = true; },\n"
             "  { action = \"a.{gid}*\"; effect = \"allow\"; anyone = true; },\n"
             "  { action = \"a.{uid}{gid}\"; effect = \"allow\"; anyone = true; },\n"
             "  { action = \"a.{uid}0\"; effect = \"allow\"; anyone = true; },\n"
             "  { action = \"a.9{gid}\"; effect = \"allow\"; anyone = true; },\n"
             "  { action = \"a.{user}\"; effect = \"allow\"; anyone = true; },\n"
             "  { action = \"a.{UID}\"; effect = \"allow\"; anyone = true; },\n"
             "  { action = \"a.{uid\"; effect = \"allow\"; anyone = true; },\n"
             "  { action = \"a.uid}\"; effect = \"allow\"; anyone = true; },\n"
             "  { id = \"x{uid}\"; action = \"a\"; effect = \"allow\"; anyone = true; }\n"
             ");\n");
        assert_refused(10);
        for (unsigned line = 2; line <= 6; line++)
                assert_error(line, "a placeholder must not touch '*', a digit or another placeholder");
        for (unsigned line = 7; line <= 9; line++)
                assert_error(line, "the only placeholders are {uid} and {gid}");
        assert_error(10, "bad action 'a.uid}'");
        assert_error(11, "bad rule id 'x{uid}'");

        /* Each placeholder between separators, at either end, next to a '*' elsewhere: fine. */
        load("rules = (\n"
             "  { action = \"{uid}\"; effect = \"allow\"; anyone = true; },\n"
             "  { action = \"{uid}.a.{gid}\"; effect = \"allow\"; anyone = true; },\n"
             "  { action = \"a.{uid}.*\"; effect = \"allow\"; anyone = true; },\n"
             "  { action = \"*-{gid}.b\"; effect = \"allow\"; anyone = true; },\n"
             "  { action = \"x{uid}y{uid}z\"; effect = \"allow\"; anyone = true; }\n"
             ");\n");
        assert_loaded(0);
        expect("7", CREDS(7, 7), ALLOW, 2);
        expect("7.a.9", CREDS_G(7, 7, 9), ALLOW, 3);
        expect("7.a.9", CREDS(7, 7), DENY, 0);
        expect("a.7.q.r", CREDS(7, 7), ALLOW, 4);
        expect("a.7.", CREDS(7, 7), ALLOW, 4);
        expect("a.8.q", CREDS(7, 7), DENY, 0);
        expect("zz-5.b", CREDS_G(1, 1, 5), ALLOW, 5);
        expect("zz-5.b", CREDS_G(1, 1, 6), DENY, 0);
        expect("x3y3z", CREDS(3, 3), ALLOW, 6);
        expect("x3y4z", CREDS(3, 4), DENY, 0);
        RuleInfo ri;
        ck_assert(policy_rule_info(L.policy, 4, &ri));
        ck_assert_str_eq(ri.action, "x{uid}y{uid}z");
        ck_assert(ri.placeholders);
}
END_TEST

START_TEST(test_invalid_action_denied) {
        _cleanup_free_ char *a255 = repeat('a', 255);
        _cleanup_free_ char *a256 = repeat('a', 256);
        const char *bad[] = { "a b", "", "x*", "*", "a\tb", "a\nb", "org.\xc3\xa9", "a?b", "a\\b", "a\rb", a256 };

        load("default = \"allow\";\n"
             "rules = (\n"
             "  { action = \"*\"; effect = \"allow\"; anyone = true; }\n"
             ");\n");
        assert_loaded(0);
        expect(a255, CREDS(1000, 1000), ALLOW, 3);
        for (size_t k = 0; k < ELEMENTSOF(bad); k++) {
                PeerCreds c = CREDS_G(1000, 1000, 4);
                Verdict v = policy_check(L.policy, bad[k], &c);
                ck_assert_msg(v.decision == DENY, "invalid action #%zu '%s' must be denied even with default allow", k,
                              bad[k]);
        }
}
END_TEST

/* ------------------------------------------------------------------------
 * Patterns
 */

static void pattern_policy(const char *pattern) {
        load("rules = (\n"
             "  { action = \"%s\"; effect = \"allow\"; anyone = true; }\n"
             ");\n",
             pattern);
        assert_loaded(0);
}

/* Assert that @pattern matches every action in @yes and none in @no. */
#define assert_pattern(pattern, yes, no)                                                                               \
        do {                                                                                                           \
                pattern_policy(pattern);                                                                               \
                for (size_t _k = 0; _k < ELEMENTSOF(yes); _k++)                                                        \
                        expect_at(__LINE__, (yes)[_k], CREDS(1000, 1000), ALLOW, 2);                                   \
                for (size_t _k = 0; _k < ELEMENTSOF(no); _k++)                                                         \
                        expect_at(__LINE__, (no)[_k], CREDS(1000, 1000), DENY, 0);                                     \
        } while (0)

START_TEST(test_pattern_prefix) {
        static const char *const yes[] = { "org.example.", "org.example.a", "org.example.a.b", "org.example.-" };
        static const char *const no[] = { "org.example", "Org.example.a", "org.exampleXa", "xorg.example.a", "org" };

        assert_pattern("org.example.*", yes, no);
}
END_TEST

START_TEST(test_pattern_star_alone) {
        _cleanup_free_ char *a255 = repeat('z', 255);
        const char *yes[] = { "a", "org.example.run", "-", "/", "A:b_c-d/e.f", a255 };

        pattern_policy("*");
        for (size_t k = 0; k < ELEMENTSOF(yes); k++)
                expect(yes[k], CREDS(1000, 1000), ALLOW, 2);
}
END_TEST

START_TEST(test_pattern_a_b_c) {
        static const char *const yes[] = { "abc", "a-b-c", "axxbyyc", "abbc", "abcc", "aXbYcZc" };
        static const char *const no[] = { "ab", "acb", "bc", "abcx", "xabc", "ac", "Abc", "abC" };

        assert_pattern("a*b*c", yes, no);
}
END_TEST

START_TEST(test_pattern_suffix) {
        static const char *const yes[] = { "org.example.backup.run", ".run", "x.run", "a.run.run" };
        static const char *const no[] = { "org.example.run.now", "run", "org.example.backup.Run", "org.examplerun" };

        assert_pattern("*.run", yes, no);
}
END_TEST

START_TEST(test_pattern_backtracking) {
        /* The first place each '*' could stop is wrong: the matcher must back up and retry. */
        static const char *const yes[] = { "x.a.x.a.b", "a.a.b", ".a.b", ".a.a.b" };
        static const char *const no[] = { "x.a.x.a.c", ".a.bb", "a.b", ".a.b.x" };
        static const char *const yes2[] = { "aaaab", "aaab", "abaab", "axaab" };
        static const char *const no2[] = { "aab", "aaaa", "ab", "aaba", "aaabx" };
        static const char *const yes3[] = { "xabyab", "abab", "ababab", "abxxab" };
        static const char *const no3[] = { "ab", "aab", "abxa", "abba" };

        assert_pattern("*.a.b", yes, no);
        assert_pattern("a*aab", yes2, no2);
        assert_pattern("*ab*ab", yes3, no3);
}
END_TEST

START_TEST(test_pattern_empty_runs) {
        static const char *const yes[] = { "org.example.", "org.example.x" };
        static const char *const yes2[] = { "x", "xx", "axb", "ax", "xb" };
        static const char *const no2[] = { "a", "ab", "X" };
        static const char *const yes3[] = { "ab", "a:b", "a--b" };
        static const char *const no3[] = { "a", "b", "ba" };
        static const char *const none[] = { "org.example" };

        assert_pattern("org.example.*", yes, none);
        assert_pattern("*x*", yes2, no2);
        assert_pattern("a**b", yes3, no3);
}
END_TEST

START_TEST(test_pattern_case_sensitive) {
        static const char *const yes[] = { "org.Example.run" };
        static const char *const no[] = { "org.example.run", "ORG.EXAMPLE.RUN", "org.EXAMPLE.run" };

        assert_pattern("org.Example.*", yes, no);

        load("rules = (\n"
             "  { action = \"org.example.Run\"; effect = \"allow\"; anyone = true; }\n"
             ");\n");
        assert_loaded(0);
        expect("org.example.Run", CREDS(1, 1), ALLOW, 2);
        expect("org.example.run", CREDS(1, 1), DENY, 0);
}
END_TEST

START_TEST(test_pattern_literal_characters) {
        /* Every character but '*' is literal: '.', '/', ':', '-', '_' included. */
        static const char *const yes[] = { "a.b/c:d-e_fX", "a.b/c:d-e_f" };
        static const char *const no[] = { "aXb/c:d-e_f", "a.bXc:d-e_f", "a.b/cXd-e_f", "a.b/c:dXe_f", "a.b/c:d-eXf" };

        assert_pattern("a.b/c:d-e_f*", yes, no);
}
END_TEST

START_TEST(test_pattern_long) {
        _cleanup_free_ char *pat = repeat('p', 255);
        _cleanup_free_ char *act = repeat('p', 255);
        _cleanup_free_ char *exact = repeat('e', 255);

        pat[254] = '*';
        load("rules = (\n"
             "  { action = \"%s\"; effect = \"allow\"; uids = [\"1\"]; },\n"
             "  { action = \"%s\"; effect = \"allow\"; uids = [\"2\"]; }\n"
             ");\n",
             pat, exact);
        assert_loaded(0);
        expect(act, CREDS(1, 1), ALLOW, 2);
        act[254] = '\0';
        expect(act, CREDS(1, 1), ALLOW, 2); /* '*' matching the empty run at the very end */
        expect(exact, CREDS(2, 2), ALLOW, 3);
        expect(exact, CREDS(1, 1), DENY, 0);
}
END_TEST

START_TEST(test_pattern_many_stars) {
        /* 127 stars against a 255-character action must neither hang nor match. */
        char pat[256] = "";
        _cleanup_free_ char *act = repeat('a', 255);

        for (size_t k = 0; k < 126; k++)
                strcat(pat, "*a");
        strcat(pat, "*b");
        pattern_policy(pat);
        expect(act, CREDS(1, 1), DENY, 0);
        act[254] = 'b';
        expect(act, CREDS(1, 1), ALLOW, 2);
}
END_TEST

/* ------------------------------------------------------------------------
 * Ids
 */

static const struct {
        const char *id;
        const char *message;
} bad_ids[] = {
        { "4294967295", "out of range" },
        { "4294967296", "out of range" },
        { "9999999999", "out of range" },
        { "1-4294967295", "out of range" },
        { "99999999999", "out of range" },
        { "00000000000000000004294967295", "out of range" },
        { "-1", "not a decimal id" },
        { "+5", "not a decimal id" },
        { " 5", "not a decimal id" },
        { "5 ", "not a decimal id" },
        { "0x10", "not a decimal id" },
        { "", "not a decimal id" },
        { "5-3", "reversed range" },
        { "1-2-3", "not a decimal id" },
        { "1-", "not a decimal id" },
        { "-", "not a decimal id" },
        { "1 - 2", "not a decimal id" },
        { "1e3", "not a decimal id" },
        { "root", "not a decimal id" },
};

START_TEST(test_bad_id) {
        static const char *const keys[] = { "uids", "gids" };

        for (size_t k = 0; k < ELEMENTSOF(keys); k++) {
                load("rules = (\n"
                     "  { action = \"a\"; effect = \"allow\"; uids = [\"1\"]; },\n"
                     "  { action = \"b\"; effect = \"allow\";\n"
                     "    %s = [\"%s\"]; }\n"
                     ");\n",
                     keys[k], bad_ids[_i].id);
                assert_refused(1);
                assert_error(4, bad_ids[_i].message);
                assert_error(4, bad_ids[_i].id);
        }
}
END_TEST

START_TEST(test_bare_integer_ids) {
        load("rules = (\n"
             "  { action = \"a\"; effect = \"allow\"; uids = [1000]; },\n"
             "  { action = \"a\"; effect = \"allow\"; gids = [4294967296]; },\n"
             "  { action = \"a\"; effect = \"allow\"; uids = [4000000000L]; },\n"
             "  { action = \"a\"; effect = \"allow\"; gids = [0]; },\n"
             "  { action = \"a\"; effect = \"allow\"; uids = [1.5]; },\n"
             "  { action = \"a\"; effect = \"allow\";\n"
             "    gids = (\"1\", 2); }\n"
             ");\n");
        assert_refused(6);
        for (unsigned line = 2; line <= 6; line++)
                assert_error(line, "quoted strings such as \"1000\"");
        assert_error(8, "quoted");
}
END_TEST

START_TEST(test_id_range_ends) {
        load("rules = (\n"
             "  { action = \"u\"; effect = \"allow\"; uids = [\"1000-1999\"]; },\n"
             "  { action = \"g\"; effect = \"allow\"; gids = [\"1000-1999\"]; },\n"
             "  { action = \"one\"; effect = \"allow\"; uids = [\"7-7\"]; }\n"
             ");\n");
        assert_loaded(0);
        expect("u", CREDS(999, 0), DENY, 0);
        expect("u", CREDS(1000, 0), ALLOW, 2);
        expect("u", CREDS(1500, 0), ALLOW, 2);
        expect("u", CREDS(1999, 0), ALLOW, 2);
        expect("u", CREDS(2000, 0), DENY, 0);
        expect("g", CREDS(0, 999), DENY, 0);
        expect("g", CREDS(0, 1000), ALLOW, 3);
        expect("g", CREDS(0, 1999), ALLOW, 3);
        expect("g", CREDS(0, 2000), DENY, 0);
        expect("g", CREDS_G(0, 0, 999, 2000), DENY, 0);
        expect("g", CREDS_G(0, 0, 1000), ALLOW, 3);
        expect("g", CREDS_G(0, 0, 5, 1999, 2000), ALLOW, 3);
        expect("one", CREDS(6, 0), DENY, 0);
        expect("one", CREDS(7, 0), ALLOW, 4);
        expect("one", CREDS(8, 0), DENY, 0);
}
END_TEST

START_TEST(test_id_extremes) {
        load("rules = (\n"
             "  { action = \"zero\"; effect = \"allow\"; uids = [\"0\"]; gids = [\"0\"]; },\n"
             "  { action = \"half\"; effect = \"allow\"; uids = [\"2147483648\"]; gids = [\"2147483648\"]; },\n"
             "  { action = \"max\"; effect = \"allow\"; uids = [\"4294967294\"]; gids = [\"4294967294\"]; },\n"
             "  { action = \"top\"; effect = \"allow\"; uids = [\"4294967000-4294967294\"]; },\n"
             "  { action = \"all\"; effect = \"allow\"; uids = [\"0-4294967294\"]; }\n"
             ");\n");
        assert_loaded(0);
        expect("zero", CREDS(0, 5), ALLOW, 2);
        expect("zero", CREDS(5, 0), ALLOW, 2);
        expect("zero", CREDS_G(5, 5, 0), ALLOW, 2);
        expect("zero", CREDS_G(1, 1, 1, 2), DENY, 0);
        /* 2^31: libconfig would read a bare 2147483648 as -2147483648 */
        expect("half", CREDS(2147483648u, 5), ALLOW, 3);
        expect("half", CREDS(5, 2147483648u), ALLOW, 3);
        expect("half", CREDS_G(5, 5, 2147483648u), ALLOW, 3);
        expect("half", CREDS(2147483647u, 2147483647u), DENY, 0);
        expect("half", CREDS(2147483649u, 2147483649u), DENY, 0);
        expect("half", CREDS(0, 0), DENY, 0);
        /* 2^32-2, the largest id; (uid_t)-1 is not an id */
        expect("max", CREDS(4294967294u, 5), ALLOW, 4);
        expect("max", CREDS_G(5, 5, 4294967294u), ALLOW, 4);
        expect("max", CREDS(4294967293u, 4294967293u), DENY, 0);
        expect("max", CREDS(4294967295u, 4294967295u), DENY, 0);
        expect("top", CREDS(4294966999u, 0), DENY, 0);
        expect("top", CREDS(4294967000u, 0), ALLOW, 5);
        expect("top", CREDS(4294967294u, 0), ALLOW, 5);
        expect("top", CREDS(4294967295u, 0), DENY, 0);
        expect("all", CREDS(0, 0), ALLOW, 6);
        expect("all", CREDS(4294967294u, 0), ALLOW, 6);
        expect("all", CREDS(4294967295u, 0), DENY, 0);
}
END_TEST

START_TEST(test_id_overlapping_ranges) {
        /* Unsorted, overlapping and adjacent ranges; the compiler sorts and merges them. */
        load("rules = (\n"
             "  { action = \"a\"; effect = \"allow\"; uids = [\"31\", \"15-30\", \"5\", \"10-20\", \"40-50\", \"45\"]; "
             "}\n"
             ");\n");
        assert_loaded(0);
        static const uid_t in[] = { 5, 10, 15, 20, 25, 30, 31, 40, 45, 50 };
        static const uid_t out[] = { 0, 4, 6, 9, 32, 39, 51, 4294967294u };
        for (size_t k = 0; k < ELEMENTSOF(in); k++)
                expect("a", CREDS(in[k], 1), ALLOW, 2);
        for (size_t k = 0; k < ELEMENTSOF(out); k++)
                expect("a", CREDS(out[k], 1), DENY, 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * Names (Debian base users and groups)
 */

START_TEST(test_user_names) {
        load("rules = (\n"
             "  { action = \"root\"; effect = \"allow\"; users = [\"root\"]; },\n"
             "  { action = \"sys\"; effect = \"allow\"; users = [\"daemon\", \"bin\"]; },\n"
             "  { action = \"nobody\"; effect = \"allow\"; users = (\"nobody\"); }\n"
             ");\n");
        assert_loaded(0);
        expect("root", CREDS(0, 1000), ALLOW, 2);
        expect("root", CREDS(1000, 0), DENY, 0); /* users never match a gid */
        expect("sys", CREDS(1, 1000), ALLOW, 3);
        expect("sys", CREDS(2, 1000), ALLOW, 3);
        expect("sys", CREDS(3, 1000), DENY, 0);
        expect("sys", CREDS(0, 1), DENY, 0);
        expect("nobody", CREDS(65534, 65534), ALLOW, 4);
        expect("nobody", CREDS(65533, 65534), DENY, 0);
        expect("nobody", CREDS(4294967294u, 4294967294u), DENY, 0);
}
END_TEST

START_TEST(test_group_names_primary_and_supplementary) {
        load("rules = (\n"
             "  { action = \"logs\"; effect = \"allow\"; groups = [\"adm\"]; },\n"
             "  { action = \"site\"; effect = \"allow\"; groups = [\"staff\", \"users\"]; }\n"
             ");\n");
        assert_loaded(0);
        expect("logs", CREDS(1000, 4), ALLOW, 2);                 /* primary gid */
        expect("logs", CREDS_G(1000, 1000, 4), ALLOW, 2);         /* only supplementary */
        expect("logs", CREDS_G(1000, 1000, 1, 4, 100), ALLOW, 2); /* supplementary, not first */
        expect("logs", CREDS_G(1000, 1000, 100, 1000), DENY, 0);
        expect("logs", CREDS(4, 1000), DENY, 0); /* groups never match a uid */
        expect("site", CREDS(1000, 50), ALLOW, 3);
        expect("site", CREDS(1000, 100), ALLOW, 3);
        expect("site", CREDS_G(1000, 1000, 50), ALLOW, 3);
        expect("site", CREDS_G(1000, 1000, 3, 100), ALLOW, 3);
        expect("site", CREDS_G(1000, 1000, 4, 49, 51, 99, 101), DENY, 0);
}
END_TEST

START_TEST(test_unknown_name_in_deny_rule_is_error) {
        load("rules = (\n"
             "  { action = \"a\"; effect = \"deny\";\n"
             "    users = [\"root\", \"credgate-no-such-user\"]; },\n"
             "  { action = \"a\"; effect = \"deny\";\n"
             "    groups = [\"credgate-no-such-group\"]; },\n"
             "  { action = \"a\"; effect = \"allow\"; anyone = true; }\n"
             ");\n");
        assert_refused(2);
        assert_error(3, "unknown user 'credgate-no-such-user' in a deny rule");
        assert_error(5, "unknown group 'credgate-no-such-group' in a deny rule");
}
END_TEST

START_TEST(test_unknown_name_in_allow_rule_warns) {
        load("rules = (\n"
             "  { action = \"a\"; effect = \"allow\";\n"
             "    users = [\"credgate-no-such-user\", \"daemon\"]; },\n"
             "  { action = \"b\"; effect = \"allow\";\n"
             "    groups = [\"credgate-no-such-group\"]; }\n"
             ");\n");
        assert_loaded(2);
        assert_warning(3, "unknown user 'credgate-no-such-user' in an allow rule");
        assert_warning(5, "unknown group 'credgate-no-such-group' in an allow rule");
        expect("a", CREDS(1, 1), ALLOW, 2); /* the rest of the rule still works */
        static const uid_t ids[] = { 0, 2, 1000, 65534, 2147483648u, 4294967294u };
        for (size_t k = 0; k < ELEMENTSOF(ids); k++) {
                expect("a", CREDS_G(ids[k], ids[k], ids[k]), DENY, 0);
                expect("b", CREDS_G(ids[k], ids[k], ids[k]), DENY, 0);
        }
}
END_TEST


/* ------------------------------------------------------------------------
 * Rule ids
 */

START_TEST(test_rule_ids) {
        load("rules = (\n"
             "  { id = \"backup-operators\"; action = \"org.example.backup.run\"; effect = \"allow\"; uids = [\"34\"]; },\n"
             "  { action = \"org.example.*\"; effect = \"deny\"; anyone = true; },\n"
             "  { id = \"a.b_c:d/e-0\"; action = \"x\"; effect = \"allow\"; anyone = true; }\n"
             ");\n");
        assert_loaded(0);
        Verdict v = policy_check(L.policy, "org.example.backup.run", &CREDS(34, 34));
        ck_assert(v.decision == ALLOW && v.line == 2);
        ck_assert_str_eq(v.id, "backup-operators");
        v = policy_check(L.policy, "org.example.backup.run", &CREDS(35, 35));
        ck_assert(v.decision == DENY && v.line == 3);
        ck_assert_ptr_null(v.id); /* no id: none */
        v = policy_check(L.policy, "x", &CREDS(0, 0));
        ck_assert_str_eq(v.id, "a.b_c:d/e-0");
        v = policy_check(L.policy, "y", &CREDS(0, 0));
        ck_assert(v.by_default);
        ck_assert_ptr_null(v.id);

        /* The verdict's rule index leads back to the same rule. */
        const char *file, *id;
        unsigned line;
        v = policy_check(L.policy, "x", &CREDS(0, 0));
        ck_assert(policy_rule(L.policy, v.rule, &file, &line, &id));
        ck_assert_str_eq(file, L.path);
        ck_assert_uint_eq(line, 4);
        ck_assert_str_eq(id, "a.b_c:d/e-0");
        ck_assert(policy_rule(L.policy, 1, &file, &line, &id));
        ck_assert_uint_eq(line, 3);
        ck_assert_ptr_null(id);
        ck_assert(!policy_rule(L.policy, 3, &file, &line, &id));
        ck_assert(!policy_rule(NULL, 0, NULL, NULL, NULL));
}
END_TEST

START_TEST(test_rule_id_duplicate) {
        load("rules = (\n"
             "  { id = \"same\"; action = \"a\"; effect = \"allow\"; anyone = true; },\n"
             "  { id = \"other\"; action = \"b\"; effect = \"allow\"; anyone = true; },\n"
             "  { id = \"same\"; action = \"c\"; effect = \"deny\"; anyone = true; }\n"
             ");\n");
        assert_refused(1);
        char want[600];
        snprintf(want, sizeof(want), "duplicate rule id 'same': also the rule at %s:2", L.path);
        assert_error(4, want);
}
END_TEST

START_TEST(test_rule_id_bad) {
        static const char *const bad[] = { "\"a*b\"", "\"\"", "\"a b\"", "\"caf\\u00e9\"", "42", "true", "[\"a\"]" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                load("rules = (\n  { id = %s; action = \"a\"; effect = \"allow\"; anyone = true; }\n);\n", bad[i]);
                assert_refused(1);
                assert_error(2, "bad rule id");
        }
        char *long_id = repeat('i', ACTION_MAX + 1);
        load("rules = (\n  { id = \"%s\"; action = \"a\"; effect = \"allow\"; anyone = true; }\n);\n", long_id);
        assert_refused(1);
        long_id[ACTION_MAX] = '\0';
        load("rules = (\n  { id = \"%s\"; action = \"a\"; effect = \"allow\"; anyone = true; }\n);\n", long_id);
        assert_loaded(0);
        free(long_id);
}
END_TEST

START_TEST(test_rule_id_builder) {
        PolicyBuilder *b = policy_builder_new();
        Policy *p = NULL;
        const char *file;
        unsigned line;
        ck_assert_ptr_nonnull(b);
        ck_assert_int_eq(policy_builder_add_file(b, "f.conf"), 0);
        RuleSpec r = { .action = "a", .effect = DECISION_ALLOW, .anyone = true, .line = 7, .id = "x" };
        ck_assert_int_eq(policy_builder_add_rule(b, &r), 0);
        ck_assert(policy_builder_find_id(b, "x", &file, &line));
        ck_assert_str_eq(file, "f.conf");
        ck_assert_uint_eq(line, 7);
        ck_assert(!policy_builder_find_id(b, "y", &file, &line));
        r.line = 8;
        ck_assert_int_eq(policy_builder_add_rule(b, &r), -EEXIST);
        r.id = "bad*";
        ck_assert_int_eq(policy_builder_add_rule(b, &r), -EINVAL);
        ck_assert_int_eq(policy_builder_finish(b, &p), 0);
        ck_assert_uint_eq(policy_n_rules(p), 1);
        policy_unref(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * Console conditions (console, seat): ANDed with the subject, asked of a
 * Console only after action and subject matched, failing closed both ways.
 */

/* A fake login state: uid 1000 active on seat0, uid 1001 present on seat1,
 * everyone else on no seat; with fail set, every question is an error. */
static struct {
        unsigned asked;
        int fail; /* negative errno to answer with, or 0 */
} F;

static int fake_level(void *userdata, uint32_t uid, const char *seat) {
        (void) userdata;
        F.asked++;
        if (F.fail)
                return F.fail;
        if (uid == 1000 && (!seat || strcmp(seat, "seat0") == 0))
                return CONSOLE_ACTIVE;
        if (uid == 1001 && (!seat || strcmp(seat, "seat1") == 0))
                return CONSOLE_PRESENT;
        return CONSOLE_NONE;
}

static const Console fake_console = { .level = fake_level };

/* @line: the deciding rule's line, or 0 for the default. */
#define expect_c(action, creds, decision, line) expect_c_at(__LINE__, action, creds, decision, line)
static void expect_c_at(int at, const char *action, PeerCreds c, Decision want, unsigned line) {
        Verdict v = policy_check_console(L.policy, action, &c, &fake_console);
        ck_assert_msg(v.decision == want && v.line == line && v.by_default == (line == 0),
                      "test line %d: '%s' for uid %u (fail %d): got %s from line %u, want %s from line %u", at, action,
                      c.uid, F.fail, v.decision == ALLOW ? "ALLOW" : "DENY", v.line, want == ALLOW ? "ALLOW" : "DENY",
                      line);
}

static const char console_policy[] =
        "rules = (\n"
        "  { action = \"wifi.*\"; effect = \"allow\"; gids = [\"108\"]; console = \"active\"; },\n" /* 2 */
        "  { action = \"power.off\"; effect = \"allow\"; uids = [\"1000-1999\"]; console = \"present\"; },\n" /* 3 */
        "  { action = \"seat1.only\"; effect = \"allow\"; uids = [\"1000-1999\"]; console = \"present\"; seat = \"seat1\"; },\n" /* 4 */
        "  { action = \"seat0.active\"; effect = \"allow\"; uids = [\"1000-1999\"]; console = \"active\"; seat = \"seat0\"; },\n" /* 5 */
        "  { action = \"lock.*\"; effect = \"deny\"; uids = [\"1000-1999\"]; console = \"active\"; },\n" /* 6 */
        "  { action = \"lock.*\"; effect = \"allow\"; uids = [\"1000-1999\"]; },\n" /* 7 */
        "  { action = \"kiosk.*\"; effect = \"deny\"; anyone = true; console = \"present\"; }\n" /* 8 */
        ");\n";

START_TEST(test_console_levels_and_seats) {
        memset(&F, 0, sizeof(F));
        load("%s", console_policy);
        assert_loaded(0);
        ck_assert(policy_has_console(L.policy));

        /* The subject still counts: 1000 without group 108 is not allowed. */
        expect_c("wifi.connect", CREDS_G(1000, 1000, 108), ALLOW, 2);
        expect_c("wifi.connect", CREDS(1000, 1000), DENY, 0);
        expect_c("wifi.connect", CREDS_G(1001, 1001, 108), DENY, 0); /* present, not active */
        expect_c("wifi.connect", CREDS_G(1002, 1002, 108), DENY, 0); /* no seat (SSH) */
        expect_c("power.off", CREDS(1000, 1000), ALLOW, 3);          /* active implies present */
        expect_c("power.off", CREDS(1001, 1001), ALLOW, 3);
        expect_c("power.off", CREDS(1002, 1002), DENY, 0);
        expect_c("seat1.only", CREDS(1000, 1000), DENY, 0); /* on seat0, not seat1 */
        expect_c("seat1.only", CREDS(1001, 1001), ALLOW, 4);
        expect_c("seat0.active", CREDS(1000, 1000), ALLOW, 5);
        expect_c("seat0.active", CREDS(1001, 1001), DENY, 0);
        expect_c("lock.screen", CREDS(1000, 1000), DENY, 6);
        expect_c("lock.screen", CREDS(1002, 1002), ALLOW, 7);
        expect_c("kiosk.x", CREDS(1001, 1001), DENY, 8);
        expect_c("kiosk.x", CREDS(5, 5), DENY, 0);

        /* Without login state (policy_check(), or a NULL Console) nobody holds a seat. */
        ck_assert_int_eq(policy_check(L.policy, "wifi.connect", &CREDS_G(1000, 1000, 108)).decision, DENY);
        ck_assert(policy_check(L.policy, "wifi.connect", &CREDS_G(1000, 1000, 108)).by_default);
        ck_assert_int_eq(policy_check_console(L.policy, "lock.screen", &CREDS(1000, 1000), NULL).line, 7);
}
END_TEST

START_TEST(test_console_asked_last) {
        memset(&F, 0, sizeof(F));
        load("%s", console_policy);
        assert_loaded(0);
        /* Neither an unrelated action nor a subject that does not match asks. */
        expect_c("other.action", CREDS(1000, 1000), DENY, 0);
        expect_c("wifi.connect", CREDS(1000, 1000), DENY, 0);
        expect_c("power.off", CREDS(2000, 2000), DENY, 0);
        ck_assert_uint_eq(F.asked, 0);
        expect_c("power.off", CREDS(1000, 1000), ALLOW, 3);
        ck_assert_uint_eq(F.asked, 1);
}
END_TEST

START_TEST(test_console_fails_closed) {
        memset(&F, 0, sizeof(F));
        load("%s", console_policy);
        assert_loaded(0);
        static const int errors[] = { -EIO, -EACCES, -ENOMEM, -EINVAL, -1 };
        for (size_t i = 0; i < ELEMENTSOF(errors); i++) {
                F.fail = errors[i];
                /* An allow rule with a console condition does not match... */
                expect_c("wifi.connect", CREDS_G(1000, 1000, 108), DENY, 0);
                expect_c("power.off", CREDS(1001, 1001), DENY, 0);
                expect_c("seat0.active", CREDS(1000, 1000), DENY, 0);
                /* ...and a deny rule with one does, also for those it would not have matched. */
                expect_c("lock.screen", CREDS(1000, 1000), DENY, 6);
                expect_c("lock.screen", CREDS(1002, 1002), DENY, 6);
                expect_c("kiosk.x", CREDS(5, 5), DENY, 8);
        }
}
END_TEST

START_TEST(test_console_errors) {
        load("rules = (\n"
             "  { action = \"a\"; effect = \"allow\"; anyone = true; console = \"active\"; },\n"
             "  { action = \"b\"; effect = \"allow\"; uids = [\"1\"]; console = \"remote\"; },\n"
             "  { action = \"c\"; effect = \"allow\"; uids = [\"1\"]; console = true; },\n"
             "  { action = \"d\"; effect = \"allow\"; uids = [\"1\"]; seat = \"seat0\"; },\n"
             "  { action = \"e\"; effect = \"allow\"; uids = [\"1\"]; console = \"active\"; seat = \"tty1\"; },\n"
             "  { action = \"f\"; effect = \"allow\"; uids = [\"1\"]; console = \"active\"; seat = \"seat\"; },\n"
             "  { action = \"g\"; effect = \"allow\"; uids = [\"1\"]; console = \"none\"; },\n"
             "  { action = \"h\"; effect = \"allow\"; uids = [\"1\"]; console = \"active\"; seat = \"seat0 \"; },\n"
             "  { action = \"i\"; effect = \"allow\"; anyone = true; uids = [\"1\"]; console = \"present\"; }\n"
             ");\n");
        assert_refused(9);
        assert_error(2, "must name whom it allows, not anyone = true");
        assert_error(3, "'console' must be \"active\" or \"present\"");
        assert_error(4, "'console' must be \"active\" or \"present\"");
        assert_error(5, "'seat' needs 'console'");
        assert_error(6, "bad seat");
        assert_error(7, "bad seat");
        assert_error(8, "'console' must be");
        assert_error(9, "bad seat");
        assert_error(10, "must name whom it allows");

        /* A deny rule for anyone on a console is fine: it only denies more. */
        load("rules = ( { action = \"a\"; effect = \"deny\"; anyone = true; console = \"active\"; seat = \"seat-x_1\"; } );\n");
        assert_loaded(0);
}
END_TEST

START_TEST(test_console_builder) {
        PolicyBuilder *b = policy_builder_new();
        Policy *p = NULL;
        IdRange one = { 1000, 1000 };
        RuleInfo info;

        ck_assert_ptr_nonnull(b);
        ck_assert_int_eq(policy_builder_add_file(b, "f.conf"), 0);
        RuleSpec r = { .action = "a", .effect = DECISION_ALLOW, .uids = &one, .n_uids = 1, .console = CONSOLE_ACTIVE,
                       .seat = "seat0" };
        ck_assert_int_eq(policy_builder_add_rule(b, &r), 0);
        r.seat = NULL;
        r.console = CONSOLE_PRESENT;
        ck_assert_int_eq(policy_builder_add_rule(b, &r), 0);
        r.console = (ConsoleLevel) 3;
        ck_assert_int_eq(policy_builder_add_rule(b, &r), -EINVAL);
        r.console = CONSOLE_NONE;
        r.seat = "seat0";
        ck_assert_int_eq(policy_builder_add_rule(b, &r), -EINVAL);
        r.console = CONSOLE_ACTIVE;
        r.seat = "xseat0";
        ck_assert_int_eq(policy_builder_add_rule(b, &r), -EINVAL);
        r.seat = NULL;
        r.anyone = true;
        ck_assert_int_eq(policy_builder_add_rule(b, &r), -EINVAL);
        r.effect = DECISION_DENY;
        ck_assert_int_eq(policy_builder_add_rule(b, &r), 0);
        ck_assert_int_eq(policy_builder_finish(b, &p), 0);
        ck_assert_uint_eq(policy_n_rules(p), 3);
        ck_assert(policy_rule_info(p, 0, &info));
        ck_assert_int_eq(info.console, CONSOLE_ACTIVE);
        ck_assert_str_eq(info.seat, "seat0");
        ck_assert(policy_rule_info(p, 1, &info));
        ck_assert_int_eq(info.console, CONSOLE_PRESENT);
        ck_assert_ptr_null(info.seat);
        policy_unref(p);

        /* Names round-trip; others are refused. */
        ConsoleLevel l;
        for (int i = CONSOLE_NONE; i <= CONSOLE_ACTIVE; i++) {
                ck_assert_int_eq(console_level_from_name(console_level_name((ConsoleLevel) i), &l), 0);
                ck_assert_int_eq(l, i);
        }
        ck_assert_int_eq(console_level_from_name("Active", &l), -EINVAL);
        ck_assert_ptr_null(console_level_name((ConsoleLevel) 3));
        ck_assert(policy_seat_valid("seat0") && policy_seat_valid("seat-1_A"));
        ck_assert(!policy_seat_valid("seat") && !policy_seat_valid("Seat0") && !policy_seat_valid("seat/0") &&
                  !policy_seat_valid(NULL) && !policy_seat_valid(""));
        char long_seat[POLICY_SEAT_MAX + 2];
        memset(long_seat, 'x', sizeof(long_seat) - 1);
        memcpy(long_seat, "seat", 4);
        long_seat[POLICY_SEAT_MAX] = '\0';
        ck_assert(policy_seat_valid(long_seat));
        long_seat[POLICY_SEAT_MAX] = 'x';
        long_seat[POLICY_SEAT_MAX + 1] = '\0';
        ck_assert(!policy_seat_valid(long_seat));
}
END_TEST

/* Many rules, many seats: the compiled form keeps each rule's own seat and level. */
START_TEST(test_console_many_seats) {
        PolicyBuilder *b = policy_builder_new();
        Policy *p = NULL;
        char action[32], seat[32];
        IdRange r1000 = { 1000, 1000 };

        ck_assert_int_eq(policy_builder_add_file(b, "f.conf"), 0);
        for (int i = 0; i < 300; i++) {
                snprintf(action, sizeof(action), "a%d", i);
                snprintf(seat, sizeof(seat), "seat%d", i % 7);
                RuleSpec r = { .action = action, .effect = DECISION_ALLOW, .uids = &r1000, .n_uids = 1,
                               .console = i % 2 ? CONSOLE_ACTIVE : CONSOLE_PRESENT, .seat = i % 3 ? seat : NULL };
                ck_assert_int_eq(policy_builder_add_rule(b, &r), 0);
        }
        ck_assert_int_eq(policy_builder_finish(b, &p), 0);
        memset(&F, 0, sizeof(F));
        for (int i = 0; i < 300; i++) {
                snprintf(action, sizeof(action), "a%d", i);
                Verdict v = policy_check_console(p, action, &CREDS(1000, 1000), &fake_console);
                /* uid 1000 is active on seat0 only. */
                bool want = i % 3 == 0 || i % 7 == 0;
                if ((v.decision == ALLOW) != want)
                        ck_abort_msg("rule %d: got %s", i, v.decision == ALLOW ? "ALLOW" : "DENY");
        }
        policy_unref(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * Brokers: who may pass descriptors (settings.brokers)
 */

#define assert_broker(creds, want)                                                                                     \
        ck_assert_msg(policy_is_broker(L.policy, &(PeerCreds){ creds }) == (want), "test line %d: broker status",     \
                      __LINE__)

static const char rules_a[] = "rules = ( { action = \"a\"; effect = \"allow\"; anyone = true; } );\n";

START_TEST(test_brokers_default_root_only) {
        load("%s", rules_a);
        assert_loaded(0);
        ck_assert(policy_is_broker(L.policy, &CREDS(0, 0)));
        ck_assert(!policy_is_broker(L.policy, &CREDS(1000, 1000)));
        /* Group 0 is not root: the default names uid 0 only. */
        ck_assert(!policy_is_broker(L.policy, &CREDS_G(1000, 0, 0)));
        ck_assert(!policy_is_broker(L.policy, &CREDS(65534, 65534)));
        ck_assert(!policy_is_broker(NULL, &CREDS(0, 0)));
}
END_TEST

START_TEST(test_brokers_by_id_name_and_group) {
        load("settings = {\n"
             "  brokers = { uids = [\"1000-1009\"]; users = [\"daemon\"]; gids = [\"4000000000\"]; groups = [\"adm\"]; };\n"
             "};\n%s",
             rules_a);
        assert_loaded(0);
        ck_assert(policy_is_broker(L.policy, &CREDS(1005, 1)));
        ck_assert(policy_is_broker(L.policy, &CREDS(1, 1)));                   /* daemon */
        ck_assert(policy_is_broker(L.policy, &CREDS_G(2000, 2000, 4)));        /* adm, supplementary */
        ck_assert(policy_is_broker(L.policy, &CREDS(2000, 4000000000u)));     /* primary gid */
        ck_assert(!policy_is_broker(L.policy, &CREDS(1010, 1010)));
        /* Naming brokers replaces the default: root is not one unless listed. */
        ck_assert(!policy_is_broker(L.policy, &CREDS(0, 0)));
        /* Decisions are unchanged. */
        expect("a", CREDS(0, 0), ALLOW, 4);
}
END_TEST

START_TEST(test_brokers_empty_names_nobody) {
        load("settings = { brokers = { }; };\n%s", rules_a);
        assert_loaded(0);
        static const uid_t ids[] = { 0, 1, 1000, 65534, 4294967294u };
        for (size_t k = 0; k < ELEMENTSOF(ids); k++)
                ck_assert(!policy_is_broker(L.policy, &CREDS_G(ids[k], ids[k], ids[k])));
}
END_TEST

START_TEST(test_brokers_anyone_warns) {
        load("settings = {\n  brokers = { anyone = true; };\n};\n%s", rules_a);
        assert_loaded(1);
        assert_warning(2, "anyone = true lets every local user pass descriptors");
        ck_assert(policy_is_broker(L.policy, &CREDS(65534, 65534)));
}
END_TEST

START_TEST(test_brokers_unknown_name_warns) {
        load("settings = {\n  brokers = { users = [\"credgate-no-such-user\", \"root\"]; };\n};\n%s", rules_a);
        assert_loaded(1);
        assert_warning(2, "unknown user 'credgate-no-such-user' in 'brokers': this entry matches nobody");
        ck_assert(policy_is_broker(L.policy, &CREDS(0, 0)));
}
END_TEST

START_TEST(test_brokers_errors) {
        load("settings = {\n  brokers = [\"root\"];\n};\n%s", rules_a);
        assert_refused(1);
        assert_error(2, "'brokers' must be a group");
        load("settings = {\n  brokers = { user = [\"root\"]; };\n};\n%s", rules_a);
        assert_refused(1);
        assert_error(2, "unknown key 'user' in 'brokers'");
        load("settings = {\n  brokers = { uids = [0]; };\n};\n%s", rules_a);
        assert_refused(1);
        assert_error(2, "must be quoted strings");
        load("settings = {\n  brokers = { uids = [\"4294967295\"]; };\n};\n%s", rules_a);
        assert_refused(1);
        load("settings = {\n  brokers = { anyone = 1; };\n};\n%s", rules_a);
        assert_refused(1);
        assert_error(2, "'anyone' must be true or false");
        load("settings = {\n  brokers = { uids = \"0\"; };\n};\n%s", rules_a);
        assert_refused(1);
}
END_TEST

START_TEST(test_brokers_builder_default_and_once) {
        PolicyBuilder *b = policy_builder_new();
        Policy *p = NULL;
        ck_assert_ptr_nonnull(b);
        ck_assert_int_eq(policy_builder_set_brokers(b, false, &(IdRange){ 5, 7 }, 1, NULL, 0), 0);
        ck_assert_int_eq(policy_builder_set_brokers(b, true, NULL, 0, NULL, 0), -EEXIST);
        ck_assert_int_eq(policy_builder_finish(b, &p), 0);
        ck_assert(policy_is_broker(p, &CREDS(6, 6)));
        ck_assert(!policy_is_broker(p, &CREDS(0, 0)));
        policy_unref(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * The index against a brute-force first-match loop
 */

typedef struct GenRule {
        char action[48];
        Decision effect;
        bool anyone;
        size_t n_uids, n_gids;
        IdRange uids[3], gids[3];
} GenRule;

static uint64_t rng;
static uint32_t n_services; /* exact actions are org.svcS.opO, S < n_services, O < 50 */
static bool gen_placeholders; /* some patterns use {uid} and {gid}, and so do some queries */

static uint32_t rnd(uint32_t n) {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        return (uint32_t) ((rng * 2685821657736338717u) >> 32) % n;
}

static uint32_t gen_id(void) {
        switch (rnd(40)) {
        case 0:
                return 2147483647u + rnd(3);
        case 1:
                return 4294967294u - rnd(2);
        default:
                return rnd(256);
        }
}

static IdRange gen_range(void) {
        uint32_t lo = gen_id(), len = rnd(4);
        return (IdRange){ lo, lo > 4294967294u - len ? 4294967294u : lo + len };
}

static void gen_exact_action(char *buf, size_t size) {
        snprintf(buf, size, "org.svc%u.op%u", rnd(n_services), rnd(50));
}

static void gen_rule(GenRule *r, bool pattern) {
        bool wide = false;

        memset(r, 0, sizeof(*r));
        if (!pattern)
                gen_exact_action(r->action, sizeof(r->action));
        else
                switch (rnd(40)) {
                case 0 ... 9:
                        snprintf(r->action, sizeof(r->action), "org.svc%u.*", rnd(n_services));
                        break;
                case 10 ... 17:
                        snprintf(r->action, sizeof(r->action), "org.svc%u.op%u*", rnd(n_services), rnd(5));
                        break;
                case 18 ... 23:
                        snprintf(r->action, sizeof(r->action), "*.op%u", rnd(50));
                        break;
                case 24 ... 27:
                        snprintf(r->action, sizeof(r->action), "org.*.op%u", rnd(50));
                        break;
                case 28 ... 31:
                        snprintf(r->action, sizeof(r->action), "org.svc%u*", rnd(n_services));
                        break;
                case 32 ... 34:
                        snprintf(r->action, sizeof(r->action), "*op%u*", rnd(50));
                        break;
                case 35: /* a suffix longer than the prefix: indexed by the suffix */
                        snprintf(r->action, sizeof(r->action), "o*.op%u.x", rnd(55));
                        break;
                case 38:
                        snprintf(r->action, sizeof(r->action), "org.*");
                        wide = true;
                        break;
                case 36 ... 37:
                        if (!gen_placeholders) { /* a suffix longer than the prefix: indexed by the suffix */
                                snprintf(r->action, sizeof(r->action), "o*.op%u.x", rnd(55));
                                break;
                        }
                        /* fall through */
                case 39:
                        if (gen_placeholders)
                                switch (rnd(5)) { /* owner-scoped actions */
                                case 0:
                                        snprintf(r->action, sizeof(r->action), "org.svc%u.home.{uid}", rnd(n_services));
                                        break;
                                case 1:
                                        snprintf(r->action, sizeof(r->action), "org.svc%u.{gid}.op%u", rnd(n_services),
                                                 rnd(50));
                                        break;
                                case 2:
                                        snprintf(r->action, sizeof(r->action), "*.grp.{gid}");
                                        break;
                                case 3:
                                        snprintf(r->action, sizeof(r->action), "org.svc%u.{uid}.*", rnd(n_services));
                                        break;
                                default:
                                        snprintf(r->action, sizeof(r->action), "org.{uid}.home.{uid}");
                                        break;
                                }
                        else
                                snprintf(r->action, sizeof(r->action), "*");
                        wide = !gen_placeholders;
                        break;
                }
        r->effect = rnd(2) ? ALLOW : DENY;
        if (!wide && rnd(60) == 0) {
                r->anyone = true;
                return;
        }
        r->n_uids = rnd(3);
        r->n_gids = rnd(3);
        if (r->n_uids + r->n_gids == 0)
                r->n_uids = 1;
        for (size_t k = 0; k < r->n_uids; k++)
                r->uids[k] = gen_range();
        for (size_t k = 0; k < r->n_gids; k++)
                r->gids[k] = gen_range();
}

/* @n rules of which about @n_patterns are patterns, scattered through the file. */
static GenRule *gen_rules(size_t n, size_t n_patterns) {
        GenRule *v = calloc(n, sizeof(GenRule));
        ck_assert_ptr_nonnull(v);
        for (size_t i = 0; i < n; i++)
                gen_rule(&v[i], rnd((uint32_t) n) < n_patterns);
        return v;
}

static bool in_ranges(const IdRange *r, size_t n, uint32_t id) {
        for (size_t k = 0; k < n; k++)
                if (id >= r[k].lo && id <= r[k].hi)
                        return true;
        return false;
}

/* Write @pattern with each {uid} as @uid and each {gid} as @gid. */
static void render(const char *pattern, uint32_t uid, uint32_t gid, char *out, size_t size) {
        size_t n = 0;
        for (const char *p = pattern; *p && n + 12 < size;) {
                if (strncmp(p, "{uid}", 5) == 0 || strncmp(p, "{gid}", 5) == 0) {
                        n += (size_t) snprintf(out + n, size - n, "%u", p[1] == 'u' ? uid : gid);
                        p += 5;
                } else
                        out[n++] = *p++;
        }
        out[n] = '\0';
}

/* docs/policy.md: {uid} is the identity's uid, {gid} any gid it holds; the
 * generated patterns have at most one kind of placeholder. */
static bool rule_action_matches(const char *pattern, const char *action, const PeerCreds *c) {
        char buf[96];
        if (strstr(pattern, "{gid}")) {
                for (size_t k = 0; k <= c->n_groups; k++) {
                        render(pattern, c->uid, k == 0 ? c->gid : c->groups[k - 1], buf, sizeof(buf));
                        if (fnmatch(buf, action, 0) == 0)
                                return true;
                }
                return false;
        }
        render(pattern, c->uid, 0, buf, sizeof(buf));
        return strchr(buf, '*') ? fnmatch(buf, action, 0) == 0 : strcmp(buf, action) == 0;
}

/* The specification, literally: the first rule in order that matches decides. Return: its index or -1. */
static long brute_first_match(const GenRule *v, size_t n, const char *action, const PeerCreds *c) {
        for (size_t i = 0; i < n; i++) {
                const GenRule *r = &v[i];

                if (!rule_action_matches(r->action, action, c))
                        continue;
                if (r->anyone || in_ranges(r->uids, r->n_uids, c->uid) || in_ranges(r->gids, r->n_gids, c->gid))
                        return (long) i;
                for (size_t k = 0; k < c->n_groups; k++)
                        if (in_ranges(r->gids, r->n_gids, c->groups[k]))
                                return (long) i;
        }
        return -1;
}

static void gen_query(char *action, size_t size, PeerCreds *c, gid_t *groups) {
        switch (rnd(10)) {
        case 0:
                snprintf(action, size, "com.other%u", rnd(5)); /* matches only "*" */
                break;
        case 1:
                snprintf(action, size, "org.svc%u.zz%u", rnd(n_services + 5), rnd(3)); /* patterns only */
                break;
        case 2:
                snprintf(action, size, "org.svc%u.op%u.x", rnd(n_services), rnd(55));
                break;
        default:
                gen_exact_action(action, size);
                break;
        }
        *c = (PeerCreds){ .pid = 1, .uid = gen_id(), .gid = gen_id(), .groups = groups, .n_groups = 0 };
        for (size_t k = 0, n = rnd(4); k < n; k++) {
                gid_t g = gen_id();
                size_t at = 0;
                while (at < c->n_groups && groups[at] < g)
                        at++;
                if (at < c->n_groups && groups[at] == g)
                        continue;
                memmove(groups + at + 1, groups + at, (c->n_groups - at) * sizeof(gid_t));
                groups[at] = g;
                c->n_groups++;
        }
        if (!gen_placeholders || rnd(5) != 0)
                return;
        /* An owner-scoped action: the identity's own number, another one, or one next to it. */
        uint32_t own = rnd(2) ? c->uid : c->n_groups > 0 && rnd(2) ? c->groups[rnd((uint32_t) c->n_groups)] : c->gid;
        uint32_t num = rnd(4) == 0 ? gen_id() : rnd(6) == 0 ? own + 1 : own;
        switch (rnd(5)) {
        case 0:
                snprintf(action, size, "org.svc%u.home.%u", rnd(n_services), num);
                break;
        case 1:
                snprintf(action, size, "org.svc%u.%u.op%u", rnd(n_services), num, rnd(50));
                break;
        case 2:
                snprintf(action, size, "x.grp.%u", num);
                break;
        case 3:
                snprintf(action, size, "org.svc%u.%u.%s", rnd(n_services), num, rnd(2) ? "op1" : "");
                break;
        default:
                snprintf(action, size, "org.%u.home.%u", own, num);
                break;
        }
}

/*
 * Check @n_queries random queries: the verdict must name exactly the rule
 * the brute-force loop finds. @line_of_first is the line of rule 0; rule i
 * is on line line_of_first + i. Every kind of decision must occur.
 */
static void compare_with_brute_force(const Policy *p, const char *file, const GenRule *v, size_t n,
                                     unsigned line_of_first, size_t n_queries) {
        size_t by_exact = 0, by_pattern = 0, by_default = 0, by_placeholder = 0;

        for (size_t q = 0; q < n_queries; q++) {
                char action[64];
                gid_t groups[4];
                PeerCreds c;

                gen_query(action, sizeof(action), &c, groups);
                long want = brute_first_match(v, n, action, &c);
                Verdict got = policy_check(p, action, &c);

                if (want < 0) {
                        ck_assert_msg(got.by_default && got.decision == policy_default(p) && !got.file,
                                      "query %zu '%s' uid %u gid %u: want the default, got rule line %u", q, action,
                                      c.uid, c.gid, got.line);
                        by_default++;
                        continue;
                }
                const GenRule *r = &v[want];
                ck_assert_msg(
                        !got.by_default && got.line == line_of_first + (unsigned) want && got.decision == r->effect &&
                                got.file && strcmp(got.file, file) == 0,
                        "query %zu '%s' uid %u gid %u (%zu groups): want rule %ld ('%s', line %u), got %s line %u", q,
                        action, c.uid, c.gid, c.n_groups, want, r->action, line_of_first + (unsigned) want,
                        got.by_default ? "default" : "rule", got.line);
                if (strchr(r->action, '{'))
                        by_placeholder++;
                else if (strchr(r->action, '*'))
                        by_pattern++;
                else
                        by_exact++;
        }
        ck_assert_msg(!gen_placeholders || by_placeholder >= n_queries / 100, "%zu decided by placeholder rules",
                      by_placeholder);
        /* A comparison that never exercises one path proves nothing about it. */
        ck_assert_msg(by_exact >= n_queries / 10 && by_pattern >= n_queries / 10 && by_default >= n_queries / 10,
                      "unbalanced queries: %zu by exact rules, %zu by patterns, %zu by default", by_exact, by_pattern,
                      by_default);
}

START_TEST(test_index_large_builder_policy) {
        const size_t n = 20000 + 500;
        const char *file = "/etc/credgate/generated.conf";
        PolicyBuilder *b = policy_builder_new();
        _cleanup_free_ GenRule *v = NULL;

        rng = 0x9e3779b97f4a7c15u;
        n_services = 20;
        v = gen_rules(n, 500);
        ck_assert_ptr_nonnull(b);
        ck_assert_int_eq(policy_builder_add_file(b, file), 0);
        policy_builder_set_default(b, ALLOW);
        for (size_t i = 0; i < n; i++) {
                RuleSpec spec = {
                        .action = v[i].action,
                        .effect = v[i].effect,
                        .anyone = v[i].anyone,
                        .uids = v[i].uids,
                        .n_uids = v[i].n_uids,
                        .gids = v[i].gids,
                        .n_gids = v[i].n_gids,
                        .line = (unsigned) i + 1,
                };
                ck_assert_int_eq(policy_builder_add_rule(b, &spec), 0);
        }
        ck_assert_int_eq(policy_builder_finish(b, &L.policy), 0);
        ck_assert_uint_eq(policy_n_rules(L.policy), n);
        compare_with_brute_force(L.policy, file, v, n, 1, 3000);
}
END_TEST

/* The same with owner-scoped patterns ({uid}, {gid}) among the others, and queries aimed at them. */
START_TEST(test_index_placeholders) {
        const size_t n = 20000 + 500;
        const char *file = "/etc/credgate/generated.conf";
        PolicyBuilder *b = policy_builder_new();
        _cleanup_free_ GenRule *v = NULL;
        size_t n_ph = 0;

        rng = 0x243f6a8885a308d3u;
        n_services = 20;
        gen_placeholders = true;
        v = gen_rules(n, 500);
        ck_assert_int_eq(policy_builder_add_file(b, file), 0);
        for (size_t i = 0; i < n; i++) {
                RuleSpec spec = { .action = v[i].action, .effect = v[i].effect, .anyone = v[i].anyone,
                                  .uids = v[i].uids, .n_uids = v[i].n_uids, .gids = v[i].gids,
                                  .n_gids = v[i].n_gids, .line = (unsigned) i + 1 };
                n_ph += strchr(v[i].action, '{') != NULL;
                ck_assert_int_eq(policy_builder_add_rule(b, &spec), 0);
        }
        ck_assert_uint_ge(n_ph, 5);
        ck_assert_int_eq(policy_builder_finish(b, &L.policy), 0);
        compare_with_brute_force(L.policy, file, v, n, 1, 6000);
        gen_placeholders = false;
}
END_TEST

START_TEST(test_index_generated_file) {
        const size_t n = 3000;
        _cleanup_free_ GenRule *v = NULL;
        char *text = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&text, &size);

        rng = 0x2545f4914f6cdd1du;
        n_services = 8;
        v = gen_rules(n, 150);
        ck_assert_ptr_nonnull(f);
        fputs("default = \"deny\";\nrules = (\n", f);
        for (size_t i = 0; i < n; i++) {
                const GenRule *r = &v[i];
                fprintf(f, "  { action = \"%s\"; effect = \"%s\";", r->action, r->effect == ALLOW ? "allow" : "deny");
                if (r->anyone)
                        fputs(" anyone = true;", f);
                for (int g = 0; g < 2; g++) {
                        const IdRange *ids = g ? r->gids : r->uids;
                        size_t n_ids = g ? r->n_gids : r->n_uids;
                        if (n_ids == 0)
                                continue;
                        fprintf(f, " %s = [", g ? "gids" : "uids");
                        for (size_t k = 0; k < n_ids; k++)
                                fprintf(f, k ? ", \"%u-%u\"" : "\"%u-%u\"", ids[k].lo, ids[k].hi);
                        fputs("];", f);
                }
                fputs(i + 1 < n ? " },\n" : " }\n", f);
        }
        fputs(");\n", f);
        ck_assert_int_eq(fclose(f), 0);

        load("%s", text);
        free(text);
        assert_loaded(0);
        ck_assert_uint_eq(policy_n_rules(L.policy), n);
        compare_with_brute_force(L.policy, L.path, v, n, 3, 2000);
}
END_TEST

/* ------------------------------------------------------------------------
 * Builder and reference counting
 */

START_TEST(test_ref_unref) {
        load("rules = (\n"
             "  { action = \"a\"; effect = \"allow\"; anyone = true; }\n"
             ");\n");
        assert_loaded(0);

        Policy *p = L.policy;
        ck_assert_ptr_eq(policy_ref(p), p);
        ck_assert_ptr_null(policy_unref(p));
        /* One reference is left: the policy must still work (valgrind checks the rest). */
        expect("a", CREDS(1, 1), ALLOW, 2);
        ck_assert_str_eq(policy_file(p, 0), L.path);

        ck_assert_ptr_null(policy_ref(NULL));
        ck_assert_ptr_null(policy_unref(NULL));
        ck_assert_uint_eq(policy_n_rules(NULL), 0);
        ck_assert_int_eq(policy_default(NULL), DENY);

        PeerCreds c = CREDS(1, 1);
        Verdict v = policy_check(NULL, "a", &c);
        ck_assert_int_eq(v.decision, DENY);
        v = policy_check(L.policy, "a", NULL);
        ck_assert_int_eq(v.decision, DENY);
        v = policy_check(L.policy, NULL, &c);
        ck_assert_int_eq(v.decision, DENY);
}
END_TEST

START_TEST(test_builder_rejects_bad_action) {
        _cleanup_free_ char *a256 = repeat('a', 256);
        _cleanup_free_ char *a255 = repeat('a', 255);
        const char *bad[] = { NULL, "", "a b", "a?b", "a[b]", "org.\xc3\xa9", "a\nb", a256 };
        static const IdRange one = { 1, 1 };
        RuleSpec spec = { .action = "a", .effect = ALLOW, .uids = &one, .n_uids = 1, .line = 1 };
        PolicyBuilder *b = policy_builder_new();
        Policy *p = NULL;

        ck_assert_ptr_nonnull(b);
        ck_assert_int_eq(policy_builder_add_rule(b, &spec), -EINVAL); /* no file yet */
        ck_assert_int_eq(policy_builder_add_file(b, "test.conf"), 0);
        for (size_t k = 0; k < ELEMENTSOF(bad); k++) {
                spec.action = bad[k];
                ck_assert_msg(policy_builder_add_rule(b, &spec) == -EINVAL, "bad action #%zu '%s' was accepted", k,
                              bad[k] ? bad[k] : "(null)");
        }
        spec.action = a255;
        ck_assert_int_eq(policy_builder_add_rule(b, &spec), 0);
        spec.action = "org.example.*";
        spec.line = 2;
        ck_assert_int_eq(policy_builder_add_rule(b, &spec), 0);
        ck_assert_int_eq(policy_builder_finish(b, &p), 0);
        L.policy = p;
        ck_assert_uint_eq(policy_n_rules(p), 2);

        PeerCreds c = CREDS(1, 1);
        Verdict v = policy_check(p, a255, &c);
        ck_assert_msg(v.decision == ALLOW && v.line == 1, "the accepted 255-character rule must decide");
        v = policy_check(p, "org.example.x", &c);
        ck_assert_msg(v.decision == ALLOW && v.line == 2, "the accepted pattern must decide");
        ck_assert_str_eq(v.file, "test.conf");

        b = policy_builder_new();
        ck_assert_ptr_nonnull(b);
        policy_builder_free(b); /* a builder can be dropped unfinished */
        ck_assert_ptr_null(policy_builder_free(NULL));
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *policy_suite(void) {
        Suite *s = suite_create("policy");
        TCase *tc;

        tc = tcase_create("load-errors");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_loop_test(tc, test_one_error, 0, ELEMENTSOF(one_error));
        tcase_add_loop_test(tc, test_bad_pattern, 0, ELEMENTSOF(bad_patterns));
        tcase_add_test(tc, test_rule_not_a_group);
        tcase_add_test(tc, test_empty_subject);
        tcase_add_test(tc, test_scalar_where_list_belongs);
        tcase_add_test(tc, test_non_string_entries);
        tcase_add_test(tc, test_include_setting_refused);
        tcase_add_test(tc, test_include_rule_refused);
        tcase_add_test(tc, test_include_value_refused);
        tcase_add_test(tc, test_include_list_element_refused);
        tcase_add_test(tc, test_joined_strings_refused);
        tcase_add_test(tc, test_missing_file);
        tcase_add_test(tc, test_directory_refused);
        tcase_add_test(tc, test_several_errors_all_reported);
        tcase_add_test(tc, test_empty_rules_warns);
        suite_add_tcase(s, tc);

        tc = tcase_create("matching");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_first_match_exact_and_patterns);
        tcase_add_test(tc, test_first_match_between_patterns);
        tcase_add_test(tc, test_default_deny_and_allow);
        tcase_add_test(tc, test_root_gets_no_special_treatment);
        tcase_add_test(tc, test_subject_any_entry_matches);
        tcase_add_test(tc, test_anyone_matches_everyone);
        tcase_add_test(tc, test_verdict_names_the_rule);
        tcase_add_test(tc, test_invalid_action_denied);
        tcase_add_test(tc, test_messages);
        tcase_add_test(tc, test_placeholder_errors);
        suite_add_tcase(s, tc);

        tc = tcase_create("patterns");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_pattern_prefix);
        tcase_add_test(tc, test_pattern_star_alone);
        tcase_add_test(tc, test_pattern_a_b_c);
        tcase_add_test(tc, test_pattern_suffix);
        tcase_add_test(tc, test_pattern_backtracking);
        tcase_add_test(tc, test_pattern_empty_runs);
        tcase_add_test(tc, test_pattern_case_sensitive);
        tcase_add_test(tc, test_pattern_literal_characters);
        tcase_add_test(tc, test_pattern_long);
        tcase_add_test(tc, test_pattern_many_stars);
        suite_add_tcase(s, tc);

        tc = tcase_create("ids");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_loop_test(tc, test_bad_id, 0, ELEMENTSOF(bad_ids));
        tcase_add_test(tc, test_bare_integer_ids);
        tcase_add_test(tc, test_id_range_ends);
        tcase_add_test(tc, test_id_extremes);
        tcase_add_test(tc, test_id_overlapping_ranges);
        suite_add_tcase(s, tc);

        tc = tcase_create("names");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_user_names);
        tcase_add_test(tc, test_group_names_primary_and_supplementary);
        tcase_add_test(tc, test_unknown_name_in_deny_rule_is_error);
        tcase_add_test(tc, test_unknown_name_in_allow_rule_warns);
        suite_add_tcase(s, tc);

        tc = tcase_create("rule-ids");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_rule_ids);
        tcase_add_test(tc, test_rule_id_duplicate);
        tcase_add_test(tc, test_rule_id_bad);
        tcase_add_test(tc, test_rule_id_builder);
        suite_add_tcase(s, tc);

        tc = tcase_create("console");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_console_levels_and_seats);
        tcase_add_test(tc, test_console_asked_last);
        tcase_add_test(tc, test_console_fails_closed);
        tcase_add_test(tc, test_console_errors);
        tcase_add_test(tc, test_console_builder);
        tcase_add_test(tc, test_console_many_seats);
        suite_add_tcase(s, tc);

        tc = tcase_create("brokers");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_brokers_default_root_only);
        tcase_add_test(tc, test_brokers_by_id_name_and_group);
        tcase_add_test(tc, test_brokers_empty_names_nobody);
        tcase_add_test(tc, test_brokers_anyone_warns);
        tcase_add_test(tc, test_brokers_unknown_name_warns);
        tcase_add_test(tc, test_brokers_errors);
        tcase_add_test(tc, test_brokers_builder_default_and_once);
        suite_add_tcase(s, tc);

        tc = tcase_create("index");
        tcase_add_checked_fixture(tc, setup, teardown);
        /* the brute-force loop is slow under sanitizers */
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_index_large_builder_policy);
        tcase_add_test(tc, test_index_placeholders);
        tcase_add_test(tc, test_index_generated_file);
        suite_add_tcase(s, tc);

        tc = tcase_create("api");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_ref_unref);
        tcase_add_test(tc, test_builder_rejects_bad_action);
        suite_add_tcase(s, tc);

        return s;
}

int main(void) {
        return test_run(policy_suite());
}
