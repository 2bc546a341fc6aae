/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: the policy loader. The input is the text of a main policy
 * file, written to a memfd and loaded through policy_load() exactly as
 * 'credgated --check-config' reads a file; the same text is also parsed as
 * a drop-in file (policy_parse() with main_file false).
 *
 * Oracle (docs/policy.md):
 *   - a load fails with at least one error diagnostic, or succeeds with none;
 *   - on a loaded policy, policy_check() answers a set of probe actions and
 *     identities, deterministically, and every verdict names either the
 *     default (and has its decision) or a rule line inside the file;
 *   - invalid actions are denied;
 *   - a text without "allow" (and without '\' escapes, which could spell it)
 *     never yields ALLOW, not even by default;
 *   - no more rules than the text has "action" keys;
 *   - the drop-in reading of the same text decides exactly as the main file
 *     wherever a rule decides (a drop-in has no default: deny);
 *   - a verdict's rule id is one the text spells, in the action grammar;
 *   - brokers (who may pass descriptors): without a "brokers" key (and
 *     without escapes) exactly uid 0, in the main file and the drop-in;
 *   - lint: a rule reported as never deciding (shadowed by an earlier one)
 *     decides no probe, and policy_lint() gives warnings only;
 *   - a verdict's message is printable ASCII, 1..200 bytes (it goes into
 *     EXPLAIN replies verbatim);
 *   - console conditions, under four fake login states (none, active on
 *     seat0, present on seat1, unreadable): a rule with one decides only
 *     when its level is held on its seat, or, when the state is unreadable,
 *     only if it is a deny; the state is asked for nothing else; a text
 *     without "console" (and escapes) decides the same in every state; no
 *     allow rule for anyone carries a condition; the lint's shadowed rules
 *     decide in no state; the drop-in agrees in every state.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "action.h"
#include "lint.h"
#include "macro.h"
#include "policy-load.h"
#include "policy-parse.h"

#define check(cond, ...)                                                                          \
        do {                                                                                      \
                if (!(cond)) {                                                                    \
                        fprintf(stderr, "fuzz-policy: %s:%d: %s: ", __FILE__, __LINE__, #cond);  \
                        fprintf(stderr, __VA_ARGS__);                                             \
                        fputc('\n', stderr);                                                      \
                        abort();                                                                  \
                }                                                                                 \
        } while (0)

#define MAX_TEXT (64 * 1024)
#define MAX_DERIVED 8

/* Fake login states: the same for every uid (the policy never compares uids with it). */
typedef struct FakeLogin {
        int level0, level1; /* on seat0 and seat1, or a negative errno for both */
        unsigned asked;
} FakeLogin;

static int fake_level(void *userdata, uint32_t uid, const char *seat) {
        FakeLogin *f = userdata;
        (void) uid;
        f->asked++;
        if (f->level0 < 0)
                return f->level0;
        if (!seat)
                return f->level0 > f->level1 ? f->level0 : f->level1;
        return strcmp(seat, "seat0") == 0 ? f->level0 : strcmp(seat, "seat1") == 0 ? f->level1 : CONSOLE_NONE;
}

static FakeLogin logins[] = {
        { .level0 = CONSOLE_NONE, .level1 = CONSOLE_NONE },
        { .level0 = CONSOLE_ACTIVE, .level1 = CONSOLE_NONE },
        { .level0 = CONSOLE_NONE, .level1 = CONSOLE_PRESENT },
        { .level0 = -EIO, .level1 = -EIO },
};

/* Does the deciding rule's console condition allow it to decide in @f? */
static bool console_may_decide(const Policy *p, const Verdict *v, FakeLogin *f) {
        RuleInfo ri;
        if (v->by_default || !policy_rule_info(p, v->rule, &ri) || ri.console == CONSOLE_NONE)
                return true;
        unsigned saved = f->asked;
        int l = fake_level(f, 0, ri.seat);
        f->asked = saved;
        return l < 0 ? ri.effect == DECISION_DENY : l >= (int) ri.console;
}

static gid_t groups_staff[] = { 4, 27, 50, 100 };
static gid_t groups_big[] = { 2147483648u, 4294967294u };
static const PeerCreds ids[] = {
        { .pid = 1, .uid = 0, .gid = 0 },
        { .pid = 2, .uid = 1000, .gid = 1000, .n_groups = ELEMENTSOF(groups_staff), .groups = groups_staff },
        { .pid = 3, .uid = 65534, .gid = 65534 },
        { .pid = 4, .uid = 2, .gid = 4 },
        { .pid = 5, .uid = 4294967294u, .gid = 4294967294u, .n_groups = ELEMENTSOF(groups_big), .groups = groups_big },
};

static const char *const fixed_actions[] = {
        "org.example.status", "org.example.backup.run", "org.example.logs.read", "org.example.desktop.x",
        "a", "x", "org.example.", ":", "-", "org.example.backup.runx",
};

/* libconfig 1.5 (Debian 12) leaks on a syntax error right after a string:
 * the scanner's string buffer (strbuf_append(), 64 bytes) or the string
 * token itself (calloc() in libconfig_yylex(), e.g. for 'a =1""b";').
 * Third-party, bounded per parse, seen with memcheck too (PLATFORM-NOTES.md;
 * regressions/policy/libconfig-leak-*). LeakSanitizer asks the program for
 * its suppressions: this covers the libFuzzer build and ASan replays. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
        return "leak:strbuf_append\nleak:libconfig_yylex\n";
}

static int text_fd = -1;
static char text_path[64];

static size_t count(const char *text, const char *word) {
        size_t n = 0;
        for (const char *p = text; (p = strstr(p, word)); p++)
                n++;
        return n;
}

/* Probe actions: the fixed ones, and every quoted string of the text with
 * its '*' dropped or replaced (so patterns get probes that match them). */
static size_t probes(const char *text, char actions[][ACTION_MAX + 1], size_t max) {
        size_t n = 0;
        const char *p = text;
        while (n + 2 <= max && (p = strchr(p, '"'))) {
                const char *q = strchr(p + 1, '"');
                if (!q)
                        break;
                for (int variant = 0; variant < 2; variant++) {
                        size_t k = 0;
                        for (const char *s = p + 1; s < q && k < ACTION_MAX; s++) {
                                /* A placeholder becomes uid/gid 1000 (ids[1]): probes for owner-scoped rules. */
                                if ((size_t) (q - s) >= 5 && (strncmp(s, "{uid}", 5) == 0 || strncmp(s, "{gid}", 5) == 0) &&
                                    k + 4 <= ACTION_MAX) {
                                        memcpy(actions[n] + k, "1000", 4);
                                        k += 4;
                                        s += 4;
                                } else if (*s != '*')
                                        actions[n][k++] = *s;
                                else if (variant == 1)
                                        actions[n][k++] = 'x';
                        }
                        actions[n][k] = '\0';
                        if (action_valid(actions[n], k, false))
                                n++;
                }
                p = q + 1;
        }
        return n;
}

static int note_shadowed(const Policy *p, size_t rule, size_t by, void *userdata) {
        check(by < rule && rule < policy_n_rules(p), "rule %zu shadowed by %zu", rule, by);
        ((bool *) userdata)[rule] = true;
        return 0;
}

static void check_verdict(const Verdict *v, const Policy *p, const char *path, size_t n_lines, const char *text) {
        check(v->decision == DECISION_DENY || v->decision == DECISION_ALLOW, "decision %d", (int) v->decision);
        if (v->by_default) {
                check(v->decision == policy_default(p), "by default but not the default");
                check(!v->file, "by default with a file");
                check(!v->id, "by default with a rule id");
        } else {
                /* An id is the text's own: it appears there, in the action grammar. */
                check(!v->id || (action_valid(v->id, strlen(v->id), false) &&
                                 (strstr(text, v->id) || strchr(text, '\\'))),
                      "rule id '%s' not in the text", v->id);
                check(v->file && strcmp(v->file, path) == 0, "rule from '%s'", v->file ? v->file : "(null)");
                check(v->line >= 1 && v->line <= n_lines, "rule line %u of %zu", v->line, n_lines);
                check(!v->message || policy_message_valid(v->message), "message '%s' not printable ASCII",
                      v->message);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > MAX_TEXT)
                return 0;
        if (text_fd < 0) {
                text_fd = memfd_create("fuzz-policy.conf", MFD_CLOEXEC);
                check(text_fd >= 0, "memfd_create: %m");
                snprintf(text_path, sizeof(text_path), "/proc/self/fd/%d", text_fd);
        }
        check(ftruncate(text_fd, 0) == 0, "ftruncate: %m");
        check(pwrite(text_fd, data, size, 0) == (ssize_t) size, "pwrite: %m");

        /* The text as the parser sees it: read_file() refuses a NUL. */
        _cleanup_free_ char *text = malloc(size + 1);
        check(text, "out of memory");
        memcpy(text, data, size);
        text[size] = '\0';
        bool has_nul = strlen(text) != size;
        size_t n_lines = 1 + count(text, "\n");

        Diags diags = {};
        Policy *p = NULL;
        int r = policy_load(text_path, &diags, &p);
        check(r == 0 || r == -EINVAL || r == -ENOMEM, "policy_load = %d", r);
        if (r == -EINVAL)
                check(diags.n_errors >= 1 && !p, "failed without an error");
        for (size_t i = 0; i < diags.n; i++)
                check(!diags.v[i].text || strncmp(diags.v[i].text, text_path, strlen(text_path)) == 0,
                      "diagnostic '%s' does not name the file", diags.v[i].text);
        diags_done(&diags);
        if (r < 0)
                return 0;
        check(p, "loaded without a policy");
        check(!has_nul, "a text with a NUL loaded");
        check(policy_n_rules(p) <= count(text, "action"), "%zu rules from %zu 'action' keys", policy_n_rules(p),
              count(text, "action"));
        bool no_allow = !strstr(text, "allow") && !strchr(text, '\\');
        check(!no_allow || policy_default(p) == DECISION_DENY, "default allow without 'allow'");
        bool no_brokers = !strstr(text, "brokers") && !strchr(text, '\\');
        for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
                bool broker = policy_is_broker(p, &ids[i]);
                check(!no_brokers || broker == (ids[i].uid == 0), "uid %u broker %d without 'brokers'",
                      (unsigned) ids[i].uid, broker);
        }

        /* The same text as a drop-in: no default, same rules. */
        Policy *dp = NULL;
        Diags ddiags = {};
        size_t n_rules = 0;
        PolicyBuilder *b = policy_builder_new();
        check(b, "out of memory");
        check(policy_builder_add_file(b, text_path) == 0, "add_file");
        r = policy_parse(b, &ddiags, text_path, text, false, NULL, &n_rules);
        if (r == 0 && ddiags.n_errors == 0) {
                check(policy_builder_finish(b, &dp) == 0, "finish");
                check(policy_n_rules(dp) == n_rules && n_rules == policy_n_rules(p), "%zu drop-in rules, %zu main",
                      n_rules, policy_n_rules(p));
                for (size_t i = 0; i < ELEMENTSOF(ids); i++)
                        check(policy_is_broker(dp, &ids[i]) == (ids[i].uid == 0), "a drop-in named brokers");
        } else {
                check(r < 0 && ddiags.n_errors > 0, "drop-in parse = %d with %zu errors", r, ddiags.n_errors);
                policy_builder_free(b);
        }
        diags_done(&ddiags);

        _cleanup_free_ bool *shadowed = calloc(policy_n_rules(p) + 1, sizeof(bool));
        check(shadowed, "out of memory");
        check(policy_find_shadowed(p, LINT_CHAIN_BUDGET, note_shadowed, shadowed) == 0, "find_shadowed");
        Diags lint = {};
        check(policy_lint(p, NULL, &lint) == 0 && lint.n_errors == 0, "lint gave errors");
        diags_done(&lint);

        static char actions[ELEMENTSOF(fixed_actions) + MAX_DERIVED][ACTION_MAX + 1];
        size_t n_actions = probes(text, actions, MAX_DERIVED);
        for (size_t i = 0; i < ELEMENTSOF(fixed_actions); i++)
                strcpy(actions[n_actions++], fixed_actions[i]);

        bool no_console = !strstr(text, "console") && !strchr(text, '\\');
        for (size_t i = 0; i < policy_n_rules(p); i++) {
                RuleInfo ri;
                check(policy_rule_info(p, i, &ri), "rule_info %zu", i);
                check(!(ri.console && ri.anyone && ri.effect == DECISION_ALLOW),
                      "line %u: an allow for anyone with a console condition loaded", ri.line);
                check(!ri.seat || (ri.console && policy_seat_valid(ri.seat)), "line %u: a seat without console",
                      ri.line);
                check(!no_console || ri.console == CONSOLE_NONE, "line %u: a console condition without 'console'",
                      ri.line);
        }

        for (size_t a = 0; a < n_actions; a++)
                for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
                        Verdict v = policy_check(p, actions[a], &ids[i]), again = policy_check(p, actions[a], &ids[i]);
                        for (size_t k = 0; k < ELEMENTSOF(logins); k++) {
                                FakeLogin *f = &logins[k];
                                Console c = { .level = fake_level, .userdata = f };
                                f->asked = 0;
                                Verdict w = policy_check_console(p, actions[a], &ids[i], &c);
                                check_verdict(&w, p, text_path, n_lines, text);
                                check(console_may_decide(p, &w, f), "'%s' uid %u login %zu: line %u decided against "
                                      "its console condition", actions[a], (unsigned) ids[i].uid, k, w.line);
                                check(!policy_has_console(p) ? f->asked == 0 : true, "asked without console rules");
                                check(!no_allow || w.decision == DECISION_DENY, "ALLOW '%s' without 'allow'",
                                      actions[a]);
                                check(w.by_default || !shadowed[w.rule], "'%s' login %zu: decided by line %u, which "
                                      "lint says can never decide", actions[a], k, w.line);
                                if (k == 0 || !policy_has_console(p))
                                        check(w.decision == v.decision && w.by_default == v.by_default &&
                                                      w.line == v.line,
                                              "'%s': no seats differs from policy_check()", actions[a]);
                                if (dp) {
                                        f->asked = 0;
                                        Verdict d = policy_check_console(dp, actions[a], &ids[i], &c);
                                        if (!w.by_default)
                                                check(!d.by_default && d.decision == w.decision && d.line == w.line,
                                                      "'%s' login %zu: drop-in line %u, main line %u", actions[a], k,
                                                      d.line, w.line);
                                }
                        }
                        check_verdict(&v, p, text_path, n_lines, text);
                        check(v.decision == again.decision && v.by_default == again.by_default &&
                                      v.file == again.file && v.line == again.line,
                              "two answers for '%s'", actions[a]);
                        check(!no_allow || v.decision == DECISION_DENY, "ALLOW '%s' without 'allow'", actions[a]);
                        check(v.by_default || !shadowed[v.rule], "'%s' uid %u: decided by line %u, which lint says "
                              "can never decide", actions[a], (unsigned) ids[i].uid, v.line);
                        if (dp) {
                                Verdict d = policy_check(dp, actions[a], &ids[i]);
                                check_verdict(&d, dp, text_path, n_lines, text);
                                if (!v.by_default)
                                        check(!d.by_default && d.decision == v.decision && d.line == v.line,
                                              "'%s' uid %u: drop-in line %u, main line %u", actions[a],
                                              (unsigned) ids[i].uid, d.line, v.line);
                                else
                                        check(d.by_default && d.decision == DECISION_DENY,
                                              "'%s': drop-in matched where main did not", actions[a]);
                        }
                }
        /* An invalid action is denied, whatever the policy. */
        static const char *const bad[] = { "", "a b", "org.example.*", "*", "a\n" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                for (size_t k = 0; k < ELEMENTSOF(ids); k++)
                        check(policy_check(p, bad[i], &ids[k]).decision == DECISION_DENY, "ALLOW for invalid '%s'",
                              bad[i]);
        policy_unref(dp);
        policy_unref(p);
        return 0;
}
