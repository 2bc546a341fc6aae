/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * credgate test: files of expected decisions (libconfig syntax) run against
 * a policy loaded as eval loads it, with rule coverage and JUnit output.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <libconfig.h>

#include "action.h"
#include "cli.h"
#include "policy-load.h"

/* ------------------------------------------------------------------------ */
/* test */

typedef struct TestCase {
        const char *file; /* the test file, as given */
        int line;         /* of the case's opening '{' */
        char *who;        /* "user NAME" or "uid N" */
        PeerCreds id;
        char **actions;
        size_t n_actions;
        Decision expect;
        char *rule; /* the rule that must decide (id, FILE:LINE or "default"), or NULL */
        ConsoleSim console; /* the case's simulated login state (its seat points into seat) */
        char *seat;
} TestCase;

typedef struct TestRun {
        TestCase *cases;
        size_t n_cases;
        size_t n_errors;
} TestRun;

/* One case and action, once evaluated. */
typedef struct TestResult {
        const TestCase *c;
        const char *action;
        Verdict v;
        bool pass;
} TestResult;

static void test_run_done(TestRun *t) {
        for (size_t i = 0; i < t->n_cases; i++) {
                TestCase *c = &t->cases[i];
                free(c->who);
                peer_creds_done(&c->id);
                for (size_t k = 0; k < c->n_actions; k++)
                        free(c->actions[k]);
                free(c->actions);
                free(c->rule);
                free(c->seat);
        }
        free(t->cases);
        *t = (TestRun){};
}

_printf_(4, 5) static void test_error(TestRun *t, const char *file, int line, const char *fmt, ...) {
        va_list ap;

        if (line > 0)
                fprintf(stderr, "%s:%d: ", file, line);
        else
                fprintf(stderr, "%s: ", file);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        t->n_errors++;
}

static bool is_list(const config_setting_t *s) {
        int type = config_setting_type(s);
        return type == CONFIG_TYPE_ARRAY || type == CONFIG_TYPE_LIST;
}

static const char *type_name(const config_setting_t *s) {
        switch (config_setting_type(s)) {
        case CONFIG_TYPE_GROUP:
                return "a group";
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
                return "an integer";
        case CONFIG_TYPE_FLOAT:
                return "a float";
        case CONFIG_TYPE_STRING:
                return "a string";
        case CONFIG_TYPE_BOOL:
                return "a boolean";
        case CONFIG_TYPE_ARRAY:
        case CONFIG_TYPE_LIST:
                return "a list";
        default:
                return "something else";
        }
}

/*
 * The strings of list setting @s (NULL: none given). Return: the count, or
 * -1 after reporting an error (not a list of strings).
 */
static ssize_t string_list(TestRun *t, const char *file, const config_setting_t *s, const char ***ret) {
        int n;

        *ret = NULL;
        if (!s)
                return 0;
        if (!is_list(s)) {
                test_error(t, file, config_setting_source_line(s), "'%s' must be a list of strings, not %s",
                           config_setting_name(s), type_name(s));
                return -1;
        }
        n = config_setting_length(s);
        if (n == 0)
                return 0;
        const char **v = calloc((size_t) n, sizeof(char *));
        if (!v) {
                test_error(t, file, 0, "%s", strerror(ENOMEM));
                return -1;
        }
        for (int i = 0; i < n; i++) {
                const config_setting_t *e = config_setting_get_elem(s, (unsigned) i);
                if (config_setting_type(e) != CONFIG_TYPE_STRING) {
                        test_error(t, file, config_setting_source_line(s),
                                   "'%s' must be a list of strings: element %d is %s", config_setting_name(s), i + 1,
                                   type_name(e));
                        free(v);
                        return -1;
                }
                v[i] = config_setting_get_string(e);
        }
        *ret = v;
        return n;
}

/* Does @s name a rule of @p (an id or FILE:LINE), or the default? */
static bool rule_named(const Policy *p, const char *s) {
        char buf[PATH_MAX + 32];

        if (strcmp(s, "default") == 0)
                return true;
        for (size_t i = 0; i < policy_n_rules(p); i++) {
                const char *file, *id;
                unsigned line;

                policy_rule(p, i, &file, &line, &id);
                if (id && strcmp(id, s) == 0)
                        return true;
                snprintf(buf, sizeof(buf), "%s:%u", file, line);
                if (strcmp(buf, s) == 0)
                        return true;
        }
        return false;
}

/* Is @v's cause what @rule names? */
static bool rule_matches(const Verdict *v, const char *rule) {
        char buf[PATH_MAX + 32];

        if (!v->file)
                return v->by_default && strcmp(rule, "default") == 0;
        if (v->id && strcmp(v->id, rule) == 0)
                return true;
        snprintf(buf, sizeof(buf), "%s:%u", v->file, v->line);
        return strcmp(buf, rule) == 0;
}

static const char *const case_keys[] = { "user", "uid", "gid", "group", "groups", "gids", "action",
                                         "actions", "expect", "rule", "console", "seat" };

/* Parse case @s of @file into @t; errors are counted in @t. @sim is the login state of cases that
 * give none. */
static void parse_case(TestRun *t, const Policy *p, const ConsoleSim *sim, const char *file,
                       const config_setting_t *s) {
        const config_setting_t *m[ELEMENTSOF(case_keys)] = {};
        _cleanup_free_ const char **groups = NULL, **gids = NULL, **actions = NULL;
        int line = config_setting_source_line(s);
        size_t errors = t->n_errors;
        ssize_t n_groups, n_gids, n_actions = 0;
        const char *str[ELEMENTSOF(case_keys)] = {};
        Decision expect = DECISION_DENY;
        char err[512];

        if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
                test_error(t, file, line, "a case must be a group { ... }, not %s", type_name(s));
                return;
        }
        for (int i = 0; i < config_setting_length(s); i++) {
                const config_setting_t *e = config_setting_get_elem(s, (unsigned) i);
                const char *name = config_setting_name(e);
                size_t k;

                for (k = 0; k < ELEMENTSOF(case_keys); k++)
                        if (strcmp(name, case_keys[k]) == 0)
                                break;
                if (k == ELEMENTSOF(case_keys)) {
                        test_error(t, file, config_setting_source_line(e), "unknown key '%s'", name);
                        continue;
                }
                m[k] = e;
                if (strcmp(name, "groups") == 0 || strcmp(name, "gids") == 0 || strcmp(name, "actions") == 0)
                        continue; /* lists: checked below */
                if (config_setting_type(e) != CONFIG_TYPE_STRING) {
                        test_error(t, file, config_setting_source_line(e), "'%s' must be a string, not %s", name,
                                   type_name(e));
                        continue;
                }
                str[k] = config_setting_get_string(e);
        }
        /* Indexes into case_keys. */
        enum { K_USER, K_UID, K_GID, K_GROUP, K_GROUPS, K_GIDS, K_ACTION, K_ACTIONS, K_EXPECT, K_RULE, K_CONSOLE, K_SEAT };
        ConsoleSim console = *sim;

        n_groups = string_list(t, file, m[K_GROUPS], &groups);
        n_gids = string_list(t, file, m[K_GIDS], &gids);
        if (m[K_ACTIONS]) {
                n_actions = string_list(t, file, m[K_ACTIONS], &actions);
                if (n_actions == 0)
                        test_error(t, file, config_setting_source_line(m[K_ACTIONS]), "'actions' is empty");
        }
        if (t->n_errors > errors)
                return;

        if (!!m[K_USER] == !!m[K_UID]) {
                test_error(t, file, line, "give exactly one of 'user' and 'uid'");
                return;
        }
        if (m[K_GID] && m[K_GROUP]) {
                test_error(t, file, line, "give at most one of 'gid' and 'group'");
                return;
        }
        if (!!m[K_ACTION] == !!m[K_ACTIONS]) {
                test_error(t, file, line, "give exactly one of 'action' and 'actions'");
                return;
        }
        if (m[K_ACTION]) {
                actions = calloc(1, sizeof(char *));
                if (!actions) {
                        test_error(t, file, 0, "%s", strerror(ENOMEM));
                        return;
                }
                actions[0] = str[K_ACTION];
                n_actions = 1;
        }
        for (ssize_t i = 0; i < n_actions; i++)
                if (!action_valid(actions[i], strnlen(actions[i], ACTION_MAX + 1), false)) {
                        test_error(t, file, config_setting_source_line(m[K_ACTION] ? m[K_ACTION] : m[K_ACTIONS]),
                                   "bad action '%s': use 1-%d characters of A-Z a-z 0-9 . _ : / -", actions[i],
                                   ACTION_MAX);
                        return;
                }
        if (!str[K_EXPECT]) {
                test_error(t, file, line, "missing 'expect' (\"allow\" or \"deny\")");
                return;
        }
        if (strcmp(str[K_EXPECT], "allow") == 0)
                expect = DECISION_ALLOW;
        else if (strcmp(str[K_EXPECT], "deny") != 0) {
                test_error(t, file, config_setting_source_line(m[K_EXPECT]),
                           "'expect' must be \"allow\" or \"deny\", not \"%s\"", str[K_EXPECT]);
                return;
        }
        if (str[K_CONSOLE]) {
                if (console_level_from_name(str[K_CONSOLE], &console.level) < 0) {
                        test_error(t, file, config_setting_source_line(m[K_CONSOLE]),
                                   "'console' must be \"active\", \"present\" or \"none\", not \"%s\"",
                                   str[K_CONSOLE]);
                        return;
                }
                console.given = true;
                console.seat = NULL;
        }
        if (str[K_SEAT]) {
                if (!policy_seat_valid(str[K_SEAT])) {
                        test_error(t, file, config_setting_source_line(m[K_SEAT]),
                                   "'seat' must be a seat name such as \"seat0\", not \"%s\"", str[K_SEAT]);
                        return;
                }
                if (!str[K_CONSOLE] || console.level == CONSOLE_NONE) {
                        test_error(t, file, config_setting_source_line(m[K_SEAT]),
                                   "'seat' needs 'console' \"active\" or \"present\" in the same case");
                        return;
                }
                console.seat = str[K_SEAT];
        }
        if (str[K_RULE] && !rule_named(p, str[K_RULE])) {
                test_error(t, file, config_setting_source_line(m[K_RULE]),
                           "rule '%s' is not \"default\", a rule id or the FILE:LINE of a rule of the policy",
                           str[K_RULE]);
                return;
        }

        IdentityRequest q = {
                .user = str[K_USER],
                .uid = str[K_UID],
                .gid = str[K_GID],
                .group = str[K_GROUP],
                .has_groups = m[K_GROUPS] || m[K_GIDS],
                .groups = groups,
                .n_groups = (size_t) n_groups,
                .gids = gids,
                .n_gids = (size_t) n_gids,
                .uid_label = "uid",
                .gid_label = "gid",
                .group_label = "group",
                .groups_label = "groups",
                .gids_label = "gids",
                .no_gid_hint = "give its primary group with 'gid' or 'group' (and its groups with 'gids' or 'groups')",
        };
        PeerCreds id = {};
        if (resolve_identity(&q, &id, err, sizeof(err)) < 0) {
                test_error(t, file, line, "%s", err);
                return;
        }

        TestCase *v = reallocarray(t->cases, t->n_cases + 1, sizeof(TestCase));
        if (!v) {
                peer_creds_done(&id);
                test_error(t, file, 0, "%s", strerror(ENOMEM));
                return;
        }
        t->cases = v;
        TestCase *c = &t->cases[t->n_cases];
        *c = (TestCase){ .file = file, .line = line, .id = id, .expect = expect, .console = console };
        t->n_cases++;
        char cdesc[POLICY_SEAT_MAX + 32], cbuf[POLICY_SEAT_MAX + 48] = "";
        if (console.level != CONSOLE_NONE)
                snprintf(cbuf, sizeof(cbuf), " (console %s)", console_sim_describe(&console, cdesc, sizeof(cdesc)));
        if (str[K_USER] ? asprintf(&c->who, "user %s%s", str[K_USER], cbuf) < 0
                        : asprintf(&c->who, "uid %u%s", (unsigned) id.uid, cbuf) < 0)
                c->who = NULL;
        c->seat = console.seat ? strdup(console.seat) : NULL;
        c->console.seat = c->seat;
        c->actions = calloc((size_t) n_actions, sizeof(char *));
        c->n_actions = c->actions ? (size_t) n_actions : 0;
        for (size_t i = 0; i < c->n_actions; i++)
                c->actions[i] = strdup(actions[i]);
        c->rule = str[K_RULE] ? strdup(str[K_RULE]) : NULL;
        bool oom = !c->who || !c->actions || (str[K_RULE] && !c->rule) || (console.seat && !c->seat);
        for (size_t i = 0; i < c->n_actions; i++)
                oom = oom || !c->actions[i];
        if (oom)
                test_error(t, file, 0, "%s", strerror(ENOMEM));
}

/* Read the test file @file into @t; errors are counted in @t. */
static void parse_test_file(TestRun *t, const Policy *p, const ConsoleSim *sim, const char *file) {
        config_t cfg;
        const config_setting_t *root, *cases;

        config_init(&cfg);
        if (config_read_file(&cfg, file) != CONFIG_TRUE) {
                if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
                        test_error(t, file, 0, "cannot read the test file: %s", strerror(errno ? errno : EIO));
                else
                        test_error(t, file, config_error_line(&cfg), "%s", config_error_text(&cfg));
                config_destroy(&cfg);
                return;
        }
        root = config_root_setting(&cfg);
        cases = NULL;
        for (int i = 0; i < config_setting_length(root); i++) {
                const config_setting_t *e = config_setting_get_elem(root, (unsigned) i);
                if (strcmp(config_setting_name(e), "cases") == 0)
                        cases = e;
                else
                        test_error(t, file, config_setting_source_line(e), "unknown setting '%s'",
                                   config_setting_name(e));
        }
        if (!cases)
                test_error(t, file, 0, "no 'cases' list");
        else if (!is_list(cases))
                test_error(t, file, config_setting_source_line(cases), "'cases' must be a list ( ... ), not %s",
                           type_name(cases));
        else
                for (int i = 0; i < config_setting_length(cases); i++)
                        parse_case(t, p, sim, file, config_setting_get_elem(cases, (unsigned) i));
        config_destroy(&cfg);
}

/* Write @s with XML's special characters escaped (control characters become '?'). */
static void xml_put(FILE *f, const char *s) {
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;
                switch (c) {
                case '&':
                        fputs("&amp;", f);
                        break;
                case '<':
                        fputs("&lt;", f);
                        break;
                case '>':
                        fputs("&gt;", f);
                        break;
                case '"':
                        fputs("&quot;", f);
                        break;
                case '\'':
                        fputs("&apos;", f);
                        break;
                default:
                        fputc(c < 0x20 && c != '\t' && c != '\n' ? '?' : c, f);
                }
        }
}

/* "expected allow[ by RULE], got deny by GOT" */
static void describe(FILE *f, const TestResult *r) {
        char buf[PATH_MAX + 32];

        fprintf(f, "expected %s", r->c->expect == DECISION_ALLOW ? "allow" : "deny");
        if (r->c->rule)
                fprintf(f, " by %s", r->c->rule);
        fprintf(f, ", got %s by %s", r->v.decision == DECISION_ALLOW ? "allow" : "deny",
                verdict_by(&r->v, buf, sizeof(buf)));
}

static int write_junit(const char *path, char **files, size_t n_files, const TestResult *res, size_t n_res) {
        FILE *f = fopen(path, "we");
        size_t failed = 0;

        if (!f)
                return fail("--junit: cannot create '%s': %m", path);
        for (size_t i = 0; i < n_res; i++)
                failed += !res[i].pass;
        fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        fprintf(f, "<testsuites name=\"credgate test\" tests=\"%zu\" failures=\"%zu\" errors=\"0\">\n", n_res, failed);
        for (size_t k = 0; k < n_files; k++) {
                size_t n = 0, nf = 0;

                for (size_t i = 0; i < n_res; i++)
                        if (res[i].c->file == files[k]) {
                                n++;
                                nf += !res[i].pass;
                        }
                fputs("  <testsuite name=\"", f);
                xml_put(f, files[k]);
                fprintf(f, "\" tests=\"%zu\" failures=\"%zu\" errors=\"0\" skipped=\"0\">\n", n, nf);
                for (size_t i = 0; i < n_res; i++) {
                        const TestResult *r = &res[i];
                        if (r->c->file != files[k])
                                continue;
                        fputs("    <testcase classname=\"", f);
                        xml_put(f, files[k]);
                        fputs("\" name=\"", f);
                        fprintf(f, "%d: ", r->c->line);
                        xml_put(f, r->c->who);
                        fputc(' ', f);
                        xml_put(f, r->action);
                        if (r->pass) {
                                fputs("\"/>\n", f);
                                continue;
                        }
                        char *msg = NULL;
                        size_t len = 0;
                        FILE *m = open_memstream(&msg, &len);
                        if (m) {
                                describe(m, r);
                                fclose(m);
                        }
                        fputs("\">\n      <failure message=\"", f);
                        xml_put(f, msg ? msg : "failed");
                        fputs("\"/>\n    </testcase>\n", f);
                        free(msg);
                }
                fputs("  </testsuite>\n", f);
        }
        fputs("</testsuites>\n", f);
        if (fflush(f) != 0 || ferror(f)) {
                int e = errno ? errno : EIO;
                fclose(f);
                return fail("--junit: cannot write '%s': %s", path, strerror(e));
        }
        if (fclose(f) != 0)
                return fail("--junit: cannot write '%s': %m", path);
        return 0;
}

void help_test(void) {
        printf("Usage: credgate test [-c FILE] [--rules-dir DIR]... [-v] [--coverage] [--junit FILE]\n"
               "                     [--console LEVEL [--seat SEAT]] TESTFILE...\n"
               "Run the cases of each TESTFILE against a policy, loaded as 'credgate eval' loads\n"
               "it, and report the cases whose decision (or deciding rule) is not the expected one.\n\n"
               "  -c, --config FILE   policy file (default %s)\n"
               "      --rules-dir DIR drop-in folder; repeat for more, the first has the highest\n"
               "                      precedence (default %s, %s)\n"
               "  -v, --verbose       show the cases that pass too\n"
               "      --coverage      list the rules no case reached, and the share of rules covered\n"
               "      --junit FILE    also write the results as JUnit XML to FILE\n"
               "      --console LEVEL login state for console conditions in cases that give none:\n"
               "                      active, present or none (the default: no session on a seat)\n"
               "      --seat SEAT     the seat of that simulated session (default seat0)\n"
               "  -h, --help          show this help\n\n"
               "A test file (libconfig syntax) holds\n"
               "  cases = ( { user = \"backup\"; action = \"org.example.backup.run\"; expect = \"allow\";\n"
               "              rule = \"backup-operators\"; } );\n"
               "See credgate(1) for every key.\n"
               "Exit status: 0 when every case passed, 1 when any failed, 2 on error.\n",
               CREDGATE_CONFIG_FILE, CREDGATE_RULES_DIR_ETC, CREDGATE_RULES_DIR_VENDOR);
}

int cmd_test(const Context *ctx, const Command *cmd, int argc, char **argv) {
        static const char optstring[] = ":c:vh";
        static const struct option opts[] = {
                { "config", required_argument, NULL, 'c' },
                { "rules-dir", required_argument, NULL, OPT_RULES_DIR },
                { "verbose", no_argument, NULL, 'v' },
                { "coverage", no_argument, NULL, OPT_COVERAGE },
                { "junit", required_argument, NULL, OPT_JUNIT },
                { "console", required_argument, NULL, OPT_CONSOLE },
                { "seat", required_argument, NULL, OPT_SEAT },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(policy_unrefp) Policy *policy = NULL;
        _cleanup_free_ TestResult *res = NULL;
        _cleanup_free_ bool *covered = NULL;
        PolicyArgs pa = POLICY_ARGS_DEFAULT;
        ConsoleSim sim = {};
        char simbuf[POLICY_SEAT_MAX + 32];
        const char *junit = NULL;
        bool verbose = false, coverage = false;
        TestRun t = {};
        size_t n_res = 0, passed = 0, failed = 0, n_rules;
        int opt, r;

        while ((opt = getopt_long(argc, argv, optstring, opts, NULL)) >= 0) {
                if ((r = policy_option(cmd, &pa, opt, optarg)) != 1 || (r = console_option(cmd, &sim, opt, optarg)) != 1) {
                        if (r != 0)
                                return r;
                        continue;
                }
                switch (opt) {
                case 'v':
                        verbose = true;
                        break;
                case OPT_COVERAGE:
                        coverage = true;
                        break;
                case OPT_JUNIT:
                        if (*optarg == '\0')
                                return usage_error(cmd, "--junit: empty file name");
                        junit = optarg;
                        break;
                case 'h':
                        help_test();
                        return finish_output(EXIT_SUCCESS);
                default:
                        return option_error(cmd, optstring, opt, argv);
                }
        }
        if (*pa.config == '\0')
                return usage_error(cmd, "--config: empty file name");
        if (optind >= argc)
                return usage_error(cmd, "no test file given");
        if ((r = console_options_done(cmd, &sim)) != 0)
                return r;

        if ((r = load_policy(&pa, true, &policy)) != 0)
                return r;
        if (sim.given)
                printf("console: %s (simulated, for cases that give none)\n",
                       console_sim_describe(&sim, simbuf, sizeof(simbuf)));

        for (int i = optind; i < argc; i++)
                parse_test_file(&t, policy, &sim, argv[i]);
        if (t.n_errors > 0) {
                fail("%zu error(s) in the test files: no case was run", t.n_errors);
                test_run_done(&t);
                return EXIT_ERROR;
        }

        n_rules = policy_n_rules(policy);
        for (size_t i = 0; i < t.n_cases; i++)
                n_res += t.cases[i].n_actions;
        if ((n_res > 0 && !(res = calloc(n_res, sizeof(TestResult)))) ||
            (n_rules > 0 && !(covered = calloc(n_rules, sizeof(bool))))) {
                test_run_done(&t);
                return fail("%s", strerror(ENOMEM));
        }

        n_res = 0;
        for (size_t i = 0; i < t.n_cases; i++) {
                const TestCase *c = &t.cases[i];
                for (size_t k = 0; k < c->n_actions; k++) {
                        TestResult *x = &res[n_res++];
                        char buf[PATH_MAX + 32];

                        x->c = c;
                        x->action = c->actions[k];
                        Console console = console_sim(&c->console);
                        x->v = policy_check_console(policy, x->action, &c->id, &console);
                        if (x->v.file && x->v.rule < n_rules)
                                covered[x->v.rule] = true;
                        x->pass = x->v.decision == c->expect && (x->v.file || x->v.by_default) &&
                                  (!c->rule || rule_matches(&x->v, c->rule));
                        if (x->pass)
                                passed++;
                        else
                                failed++;
                        if (x->pass && verbose)
                                printf("PASS %s:%d: %s %s: %s by %s\n", c->file, c->line, c->who, x->action,
                                       x->v.decision == DECISION_ALLOW ? "allow" : "deny",
                                       verdict_by(&x->v, buf, sizeof(buf)));
                        else if (!x->pass) {
                                printf("FAIL %s:%d: %s %s: ", c->file, c->line, c->who, x->action);
                                describe(stdout, x);
                                putchar('\n');
                        }
                }
        }

        if (coverage) {
                size_t n_covered = 0;

                for (size_t i = 0; i < n_rules; i++)
                        n_covered += covered[i];
                if (n_covered < n_rules) {
                        printf("rules that decided no case:\n");
                        for (size_t i = 0; i < n_rules; i++) {
                                const char *file, *id;
                                unsigned line;

                                if (covered[i] || !policy_rule(policy, i, &file, &line, &id))
                                        continue;
                                printf("  %s:%u%s%s\n", file, line, id ? " " : "", id ? id : "");
                        }
                }
                printf("coverage: %zu of %zu rules (%zu%%)\n", n_covered, n_rules,
                       n_rules ? n_covered * 100 / n_rules : 100);
        }

        if (junit && (r = write_junit(junit, argv + optind, (size_t) (argc - optind), res, n_res)) != 0) {
                test_run_done(&t);
                return r;
        }
        printf("%zu passed, %zu failed\n", passed, failed);
        test_run_done(&t);
        return finish_output(failed > 0 ? EXIT_DENY : EXIT_SUCCESS);
}

