/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the policy sources (policy-load.c) and the settings group
 * (policy-parse.c), on real temporary folders and files: the evaluation
 * order of drop-ins across folders, overriding and masking, what the Sources
 * report says about every file, drop-in errors with their "FILE:LINE:", the
 * ownership and mode checks, and every setting's range.
 *
 * Each test gets a fresh temporary tree: ROOT/main.conf (the main file) and
 * the drop-in folders ROOT/etc and ROOT/usr (highest precedence first). The
 * trees live in one folder per TCase, which the runner process removes even
 * when a failed test (a forked child) never reached its teardown. That
 * folder is not in /tmp: the checks judge every folder above a policy file,
 * and /tmp is writable by others (testtmp.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "policy-load.h"
#include "policy-parse.h"
#include "policy.h"
#include "testtmp.h"
#include "testutil.h"

#define ALLOW DECISION_ALLOW
#define DENY DECISION_DENY

/* A uid and gid that are not ours, for the ownership checks (as root). */
#define OTHER_UID 1000
#define OTHER_GID 1000

/* ------------------------------------------------------------------------
 * Fixture: a temporary tree, and the result of the last load.
 */

static char base[64]; /* per TCase, made and removed by the runner process */

static struct {
        char root[128];
        char **paths; /* every path string handed out by P(), freed in teardown */
        size_t n_paths;
        Diags diags;
        Sources sources;
        Settings settings;
        Policy *policy;
        int r;
} T;

/* ROOT/@rel as a string that lives until the teardown; @rel NULL is ROOT. */
static const char *P(const char *rel) {
        char *p = NULL;
        char **v;

        ck_assert_int_ge(rel ? asprintf(&p, "%s/%s", T.root, rel) : asprintf(&p, "%s", T.root), 0);
        v = reallocarray(T.paths, T.n_paths + 1, sizeof(char *));
        ck_assert_ptr_nonnull(v);
        T.paths = v;
        T.paths[T.n_paths++] = p;
        return p;
}

/* Forget the last load. */
static void release(void) {
        diags_done(&T.diags);
        sources_done(&T.sources);
        T.policy = policy_unref(T.policy);
        T.settings = SETTINGS_DEFAULTS;
        T.r = 0;
}

static void mkdir_mode(const char *rel, mode_t mode) {
        const char *p = P(rel);
        ck_assert_msg(mkdir(p, 0700) == 0, "mkdir '%s': %m", p);
        /* chmod, not mkdir's mode: the umask must not decide what is tested. */
        ck_assert_msg(chmod(p, mode) == 0, "chmod '%s': %m", p);
}

/* Write @text to ROOT/@rel (created or truncated) with exactly @mode. */
static void put(const char *rel, mode_t mode, const char *text) {
        const char *p = P(rel);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        size_t n = strlen(text);

        ck_assert_msg(fd >= 0, "open '%s': %m", p);
        ck_assert_int_eq(write(fd, text, n), (ssize_t) n);
        ck_assert_int_eq(fchmod(fd, mode), 0);
        close(fd);
}

/* ROOT/@rel becomes a symlink to @target (absolute, or relative to its folder). */
static void link_to(const char *target, const char *rel) {
        const char *p = P(rel);
        ck_assert_msg(symlink(target, p) == 0, "symlink '%s': %m", p);
}

static void chown_rel(const char *rel, uid_t uid, gid_t gid) {
        const char *p = P(rel);
        ck_assert_msg(lchown(p, uid, gid) == 0, "chown '%s': %m", p);
}

/* A drop-in or main file whose only rule allows @action for anyone. */
#define ONE_RULE(action) "rules = (\n  { action = \"" action "\"; effect = \"allow\"; anyone = true; }\n);\n"
#define MAIN_TEXT "default = \"deny\";\n" ONE_RULE("main.only")

static void setup(void) {
        memset(&T, 0, sizeof(T));
        T.settings = SETTINGS_DEFAULTS;
        snprintf(T.root, sizeof(T.root), "%s/t-XXXXXX", base);
        ck_assert_ptr_nonnull(mkdtemp(T.root));
        mkdir_mode("etc", 0755);
        mkdir_mode("usr", 0755);
        put("main.conf", 0644, MAIN_TEXT);
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        (void) st;
        (void) ftw;
        if (type == FTW_DP)
                return rmdir(path) < 0 ? -1 : 0;
        return unlink(path) < 0 ? -1 : 0;
}

static void teardown(void) {
        release();
        if (T.root[0])
                (void) nftw(T.root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        for (size_t i = 0; i < T.n_paths; i++)
                free(T.paths[i]);
        free(T.paths);
        memset(&T, 0, sizeof(T));
}

static void base_setup(void) {
        if (test_trusted_mkdtemp(base, sizeof(base), "credgate-src") < 0)
                abort();
}

static void base_teardown(void) {
        (void) nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/*
 * Load ROOT/main.conf with the drop-in folders ROOT/@dir... (NULL-terminated,
 * highest precedence first). Ownership checks trust our own euid.
 */
static int load_opts(bool check, uid_t trusted, ...) {
        const char *dirs[8];
        size_t n = 0;
        va_list ap;

        release();
        va_start(ap, trusted);
        for (const char *d; (d = va_arg(ap, const char *));) {
                ck_assert_uint_lt(n, ELEMENTSOF(dirs));
                dirs[n++] = P(d);
        }
        va_end(ap);

        PolicyOptions o = {
                .main_file = P("main.conf"),
                .rule_dirs = dirs,
                .n_rule_dirs = n,
                .check_ownership = check,
                .trusted_uid = trusted,
        };
        T.r = policy_load_full(&o, &T.diags, &T.sources, &T.settings, &T.policy);
        return T.r;
}

#define load(...) load_opts(false, geteuid(), __VA_ARGS__, NULL)
#define load_checked(...) load_opts(true, geteuid(), __VA_ARGS__, NULL)

static const char *dump(void) {
        static char buf[16384];
        size_t n = 0;

        buf[0] = '\0';
        n += (size_t) snprintf(buf + n, sizeof(buf) - n, "  r = %d; diagnostics:\n", T.r);
        for (size_t i = 0; i < T.diags.n && n < sizeof(buf); i++)
                n += (size_t) snprintf(buf + n, sizeof(buf) - n, "    %s\n", T.diags.v[i].text);
        for (size_t i = 0; i < T.sources.n && n < sizeof(buf); i++) {
                const Source *s = &T.sources.v[i];
                n += (size_t) snprintf(buf + n, sizeof(buf) - n, "  source %s: %s%s%s (%zu rules)\n", s->path,
                                       source_state_name(s->state), s->note ? ", " : "", s->note ? s->note : "",
                                       s->n_rules);
        }
        return buf;
}

/* Is there a diagnostic "ROOT/@rel:LINE: [warning: ]..." ("ROOT/@rel: ..." for line 0) containing @needle? */
static bool has_diag(bool warning, const char *rel, unsigned line, const char *needle) {
        char prefix[PATH_MAX + 64];

        if (line > 0)
                snprintf(prefix, sizeof(prefix), "%s:%u: %s", P(rel), line, warning ? "warning: " : "");
        else
                snprintf(prefix, sizeof(prefix), "%s: %s", P(rel), warning ? "warning: " : "");
        for (size_t i = 0; i < T.diags.n; i++) {
                const Diag *d = &T.diags.v[i];
                if (d->warning == warning && strncmp(d->text, prefix, strlen(prefix)) == 0 &&
                    strstr(d->text + strlen(prefix), needle))
                        return true;
        }
        return false;
}

#define assert_error(rel, line, needle)                                                                                \
        ck_assert_msg(has_diag(false, rel, line, needle), "want an error '%s:%u' containing \"%s\", got:\n%s", rel,   \
                      (unsigned) (line), needle, dump())
#define assert_warning(rel, line, needle)                                                                              \
        ck_assert_msg(has_diag(true, rel, line, needle), "want a warning '%s:%u' containing \"%s\", got:\n%s", rel,   \
                      (unsigned) (line), needle, dump())

#define assert_loaded(n_warn)                                                                                          \
        do {                                                                                                           \
                ck_assert_msg(T.r == 0 && T.policy, "want a loaded policy, got:\n%s", dump());                        \
                ck_assert_msg(T.diags.n_errors == 0 && T.diags.n_warnings == (size_t) (n_warn),                        \
                              "want 0 errors and %zu warnings, got:\n%s", (size_t) (n_warn), dump());                  \
        } while (0)

#define assert_refused(n)                                                                                              \
        do {                                                                                                           \
                ck_assert_msg(T.r == -EINVAL && !T.policy, "want -EINVAL and no policy, got:\n%s", dump());           \
                ck_assert_msg(T.diags.n_errors == (size_t) (n), "want %zu errors, got %zu:\n%s", (size_t) (n),         \
                              T.diags.n_errors, dump());                                                               \
        } while (0)

static const Source *source_find(const char *rel) {
        const char *p = P(rel);
        const Source *found = NULL;

        for (size_t i = 0; i < T.sources.n; i++)
                if (strcmp(T.sources.v[i].path, p) == 0) {
                        ck_assert_msg(!found, "'%s' is listed twice:\n%s", rel, dump());
                        found = &T.sources.v[i];
                }
        return found;
}

/* ROOT/@rel is listed once, in @state, with a note containing @note (NULL: no note). */
#define assert_source(rel, state, note) assert_source_at(__LINE__, rel, state, note)

static void assert_source_at(int at, const char *rel, SourceState state, const char *note) {
        const Source *s = source_find(rel);

        ck_assert_msg(s, "test line %d: '%s' is not listed:\n%s", at, rel, dump());
        ck_assert_msg(s->state == state, "test line %d: '%s' is %s, want %s:\n%s", at, rel,
                      source_state_name(s->state), source_state_name(state), dump());
        if (note)
                ck_assert_msg(s->note && strstr(s->note, note),
                              "test line %d: '%s': note '%s', want one containing '%s'", at, rel,
                              s->note ? s->note : "(none)", note);
        else
                ck_assert_msg(!s->note, "test line %d: '%s': unexpected note '%s'", at, rel, s->note);
}

#define assert_not_listed(rel)                                                                                         \
        ck_assert_msg(!source_find(rel), "'%s' must not be listed:\n%s", rel, dump())

/* A note such as "masked by 'ROOT/etc/50-v.conf'". */
static const char *by(const char *what, const char *rel) {
        char *s = NULL;
        ck_assert_int_ge(asprintf(&s, "%s '%s'", what, P(rel)), 0);
        char **v = reallocarray(T.paths, T.n_paths + 1, sizeof(char *));
        ck_assert_ptr_nonnull(v);
        T.paths = v;
        T.paths[T.n_paths++] = s;
        return s;
}

/* @rel is the file of the deciding rule, or NULL for "decided by the default". */
#define expect(action, uid, decision, rel, line) expect_at(__LINE__, action, uid, decision, rel, line)

static void expect_at(int at, const char *action, uid_t uid, Decision want, const char *rel, unsigned line) {
        PeerCreds c = { .pid = 1, .uid = uid, .gid = uid };
        Verdict v = policy_check(T.policy, action, &c);
        const char *want_file = rel ? P(rel) : NULL;

        ck_assert_msg(T.policy, "test line %d: no policy:\n%s", at, dump());
        ck_assert_msg(v.decision == want && v.by_default == !rel && v.line == line &&
                              (rel ? v.file && strcmp(v.file, want_file) == 0 : !v.file),
                      "test line %d: '%s' for uid %u: got %s from %s:%u, want %s from %s:%u", at, action, uid,
                      v.decision == ALLOW ? "ALLOW" : "DENY", v.by_default ? "default" : v.file ? v.file : "(null)",
                      v.line, want == ALLOW ? "ALLOW" : "DENY", rel ? want_file : "default", line);
}

/* ------------------------------------------------------------------------
 * Evaluation order
 */

/*
 * The files in evaluation order: byte order of the name, whatever the folder.
 * Byte order, not numeric or locale order: "10-" before "9-", "B" before "_"
 * before "a", and a UTF-8 name (first byte 0xc3) after "z".
 */
static const char *const order[] = {
        "usr/10-x.conf", "etc/9-x.conf", "usr/B.conf", "etc/_m.conf",
        "usr/a.conf",    "etc/z.conf",   "usr/\xc3\xa9.conf",
        "main.conf",
};

START_TEST(test_order_by_name_across_folders) {
        const size_t n = ELEMENTSOF(order);

        /* File i holds rules for "at.i", "at.i-1", ..., "at.0" (in that
         * order, so "at.i" is on line 2). "at.k" is in files k..n-1 and is
         * decided by file k exactly when file k comes before every later
         * file: together, the full order. Effects alternate by file. */
        for (size_t i = 0; i < n; i++) {
                char *text = NULL;
                size_t size = 0;
                FILE *f = open_memstream(&text, &size);

                ck_assert_ptr_nonnull(f);
                fputs("rules = (\n", f);
                for (size_t k = i + 1; k-- > 0;)
                        fprintf(f, "  { action = \"at.%zu\"; effect = \"%s\"; anyone = true; }%s\n", k,
                                i % 2 ? "deny" : "allow", k > 0 ? "," : "");
                fputs(");\n", f);
                if (strcmp(order[i], "main.conf") == 0)
                        fputs("default = \"allow\";\n", f);
                ck_assert_int_eq(fclose(f), 0);
                put(order[i], 0644, text);
                free(text);
        }

        load("etc", "usr");
        assert_loaded(0);
        for (size_t k = 0; k < n; k++) {
                char action[32];
                snprintf(action, sizeof(action), "at.%zu", k);
                expect(action, 1000, k % 2 ? DENY : ALLOW, order[k], 2);
        }
        expect("at.none", 1000, ALLOW, NULL, 0);

        /* The policy's own file list is the evaluation order too. */
        ck_assert_uint_eq(policy_n_files(T.policy), n);
        for (size_t i = 0; i < n; i++)
                ck_assert_msg(strcmp(policy_file(T.policy, i), P(order[i])) == 0, "file %zu is '%s', want '%s'", i,
                              policy_file(T.policy, i), P(order[i]));
        for (size_t i = 0; i < n; i++) {
                assert_source(order[i], SOURCE_LOADED, NULL);
                ck_assert_uint_eq(source_find(order[i])->n_rules, i + 1);
        }
        ck_assert_uint_eq(T.sources.n, n);
}
END_TEST

/* An admin overrides a vendor rule with a lower-numbered file, and only so. */
START_TEST(test_admin_overrides_vendor) {
        put("usr/50-vendor.conf", 0644,
            "rules = (\n"
            "  { action = \"org.vendor.run\"; effect = \"allow\"; anyone = true; },\n"
            "  { action = \"org.vendor.stop\"; effect = \"allow\"; anyone = true; }\n"
            ");\n");
        put("etc/10-admin.conf", 0644,
            "rules = (\n"
            "  { action = \"org.vendor.run\"; effect = \"deny\"; uids = [\"1000\"]; }\n"
            ");\n");
        put("etc/90-late.conf", 0644,
            "rules = (\n"
            "  { action = \"org.vendor.stop\"; effect = \"deny\"; anyone = true; }\n"
            ");\n");
        put("main.conf", 0644,
            "rules = (\n"
            "  { action = \"org.vendor.*\"; effect = \"deny\"; anyone = true; }\n"
            ");\n");

        load("etc", "usr");
        assert_loaded(0);
        expect("org.vendor.run", 1000, DENY, "etc/10-admin.conf", 2);
        expect("org.vendor.run", 1001, ALLOW, "usr/50-vendor.conf", 2);
        /* 90-late.conf comes after 50-vendor.conf: the vendor's rule decides. */
        expect("org.vendor.stop", 1000, ALLOW, "usr/50-vendor.conf", 3);
        /* The main file comes last, after every drop-in. */
        expect("org.vendor.other", 1000, DENY, "main.conf", 2);
        expect("org.other", 1000, DENY, NULL, 0);
}
END_TEST

START_TEST(test_no_folders_and_missing_folders) {
        load("does-not-exist", "etc/nor-this");
        assert_loaded(0);
        expect("main.only", 1000, ALLOW, "main.conf", 3);
        ck_assert_msg(T.sources.n == 1, "only the main file is listed:\n%s", dump());
        assert_source("main.conf", SOURCE_LOADED, NULL);

        /* Empty folders and no folders at all are fine too. */
        release();
        PolicyOptions o = { .main_file = P("main.conf") };
        T.r = policy_load_full(&o, &T.diags, &T.sources, &T.settings, &T.policy);
        assert_loaded(0);
        load("etc", "usr");
        assert_loaded(0);
        ck_assert_uint_eq(policy_n_files(T.policy), 1);
}
END_TEST

/* ------------------------------------------------------------------------
 * Overriding and masking
 */

START_TEST(test_same_name_earlier_folder_wins) {
        put("etc/50-v.conf", 0644, ONE_RULE("from.etc"));
        put("usr/50-v.conf", 0644, ONE_RULE("from.usr"));

        load("etc", "usr");
        assert_loaded(0);
        assert_source("etc/50-v.conf", SOURCE_LOADED, NULL);
        assert_source("usr/50-v.conf", SOURCE_SKIPPED, by("overridden by", "etc/50-v.conf"));
        expect("from.etc", 1000, ALLOW, "etc/50-v.conf", 2);
        expect("from.usr", 1000, DENY, NULL, 0);
        ck_assert_uint_eq(policy_n_files(T.policy), 2);

        /* Precedence is the order of the folders given, not their names. */
        load("usr", "etc");
        assert_loaded(0);
        assert_source("usr/50-v.conf", SOURCE_LOADED, NULL);
        assert_source("etc/50-v.conf", SOURCE_SKIPPED, by("overridden by", "usr/50-v.conf"));
        expect("from.usr", 1000, ALLOW, "usr/50-v.conf", 2);
        expect("from.etc", 1000, DENY, NULL, 0);
}
END_TEST

/* A broken file of the same name further down is never read. */
START_TEST(test_overridden_file_not_read) {
        put("etc/50-v.conf", 0644, ONE_RULE("from.etc"));
        put("usr/50-v.conf", 0644, "this is not a policy {{{\n");
        mkdir_mode("usr/60-dir.conf", 0755);
        put("etc/60-dir.conf", 0644, ONE_RULE("from.etc.60"));

        load("etc", "usr");
        assert_loaded(0);
        assert_source("usr/50-v.conf", SOURCE_SKIPPED, by("overridden by", "etc/50-v.conf"));
        assert_source("usr/60-dir.conf", SOURCE_SKIPPED, by("overridden by", "etc/60-dir.conf"));
        expect("from.etc.60", 1000, ALLOW, "etc/60-dir.conf", 2);
}
END_TEST

START_TEST(test_empty_file_masks) {
        put("etc/50-v.conf", 0644, "");
        put("usr/50-v.conf", 0644, ONE_RULE("from.usr"));
        put("usr/60-w.conf", 0644, ONE_RULE("from.usr.60"));

        load("etc", "usr");
        assert_loaded(0);
        assert_source("etc/50-v.conf", SOURCE_MASK, "masks");
        assert_source("usr/50-v.conf", SOURCE_MASKED, by("masked by", "etc/50-v.conf"));
        assert_source("usr/60-w.conf", SOURCE_LOADED, NULL);
        expect("from.usr", 1000, DENY, NULL, 0);
        expect("from.usr.60", 1000, ALLOW, "usr/60-w.conf", 2);
        /* A mask contributes no file to the policy. */
        ck_assert_uint_eq(policy_n_files(T.policy), 2);
}
END_TEST

START_TEST(test_dev_null_symlink_masks) {
        link_to("/dev/null", "etc/50-v.conf");
        put("usr/50-v.conf", 0644, ONE_RULE("from.usr"));

        load("etc", "usr");
        assert_loaded(0);
        assert_source("etc/50-v.conf", SOURCE_MASK, "masks");
        assert_source("usr/50-v.conf", SOURCE_MASKED, by("masked by", "etc/50-v.conf"));
        expect("from.usr", 1000, DENY, NULL, 0);
}
END_TEST

/* A symlink to an empty file is an empty file: a mask. */
START_TEST(test_symlink_to_empty_file_masks) {
        put("empty", 0644, "");
        link_to("../empty", "etc/50-v.conf");
        put("usr/50-v.conf", 0644, ONE_RULE("from.usr"));

        load("etc", "usr");
        assert_loaded(0);
        assert_source("etc/50-v.conf", SOURCE_MASK, "masks");
        assert_source("usr/50-v.conf", SOURCE_MASKED, by("masked by", "etc/50-v.conf"));
        expect("from.usr", 1000, DENY, NULL, 0);
}
END_TEST

/* A mask with nothing to hide is harmless, and needs no 'rules'. */
START_TEST(test_mask_without_target) {
        put("etc/50-v.conf", 0644, "");
        link_to("/dev/null", "usr/70-x.conf");

        load("etc", "usr");
        assert_loaded(0);
        assert_source("etc/50-v.conf", SOURCE_MASK, "masks");
        assert_source("usr/70-x.conf", SOURCE_MASK, "masks");
        expect("main.only", 1000, ALLOW, "main.conf", 3);
}
END_TEST

/* An empty file below a real one does not mask it: precedence goes down only. */
START_TEST(test_mask_in_later_folder_does_not_mask) {
        put("etc/50-v.conf", 0644, ONE_RULE("from.etc"));
        put("usr/50-v.conf", 0644, "");

        load("etc", "usr");
        assert_loaded(0);
        assert_source("etc/50-v.conf", SOURCE_LOADED, NULL);
        assert_source("usr/50-v.conf", SOURCE_SKIPPED, by("overridden by", "etc/50-v.conf"));
        expect("from.etc", 1000, ALLOW, "etc/50-v.conf", 2);
}
END_TEST

/* Only drop-ins mask: an empty or /dev/null main file is an error. */
START_TEST(test_main_file_is_never_a_mask) {
        put("main.conf", 0644, "");
        load("etc", "usr");
        assert_refused(1);
        assert_error("main.conf", 0, "missing 'rules'");
        assert_source("main.conf", SOURCE_FAILED, NULL);

        ck_assert_int_eq(unlink(P("main.conf")), 0);
        link_to("/dev/null", "main.conf");
        load("etc", "usr");
        assert_refused(1);
        assert_error("main.conf", 0, "not a regular file");
}
END_TEST

/* ------------------------------------------------------------------------
 * What the Sources report lists
 */

START_TEST(test_dotfiles_not_listed) {
        put("etc/.hidden.conf", 0644, "garbage {{{\n");
        put("etc/.50-v.conf.swp", 0644, "garbage {{{\n");
        put("usr/..conf", 0644, "garbage {{{\n");
        mkdir_mode("usr/.git", 0755);
        put("etc/50-v.conf", 0644, ONE_RULE("from.etc"));

        load("etc", "usr");
        assert_loaded(0);
        for (size_t i = 0; i < T.sources.n; i++)
                ck_assert_msg(!strstr(T.sources.v[i].path, "/."), "a dotfile or '.'/'..' is listed:\n%s", dump());
        ck_assert_msg(T.sources.n == 2, "want etc/50-v.conf and main.conf only:\n%s", dump());
        assert_source("etc/50-v.conf", SOURCE_LOADED, NULL);
}
END_TEST

START_TEST(test_non_conf_files_skipped) {
        static const char *const names[] = {
                "etc/README", "etc/50-v.conf.bak", "etc/50-v.conf~", "usr/50-v.CONF", "usr/conf", "usr/x.conf.d",
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                put(names[i], 0644, "garbage {{{\n");
        mkdir_mode("usr/subdir", 0755);
        put("usr/50-v.conf", 0644, ONE_RULE("from.usr"));

        load("etc", "usr");
        assert_loaded(0);
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                assert_source(names[i], SOURCE_SKIPPED, "not a .conf file");
        assert_source("usr/subdir", SOURCE_SKIPPED, "not a .conf file");
        assert_source("usr/50-v.conf", SOURCE_LOADED, NULL);
        assert_source("main.conf", SOURCE_LOADED, NULL);
        ck_assert_msg(T.sources.n == ELEMENTSOF(names) + 3, "unexpected entries:\n%s", dump());
        expect("from.usr", 1000, ALLOW, "usr/50-v.conf", 2);
}
END_TEST

/* Every rule-bearing file reports how many rules it contributed. */
START_TEST(test_sources_count_rules) {
        put("etc/10-a.conf", 0644,
            "rules = (\n"
            "  { action = \"a\"; effect = \"allow\"; anyone = true; },\n"
            "  { action = \"b\"; effect = \"allow\"; anyone = true; },\n"
            "  { action = \"c\"; effect = \"allow\"; anyone = true; }\n"
            ");\n");
        put("usr/20-b.conf", 0644, "rules = ();\n");

        load("etc", "usr");
        /* An empty drop-in is fine and, unlike an empty main file, no warning. */
        assert_loaded(0);
        ck_assert_uint_eq(source_find("etc/10-a.conf")->n_rules, 3);
        ck_assert_uint_eq(source_find("usr/20-b.conf")->n_rules, 0);
        ck_assert_uint_eq(source_find("main.conf")->n_rules, 1);
        ck_assert_uint_eq(policy_n_rules(T.policy), 4);
}
END_TEST

/* ------------------------------------------------------------------------
 * Drop-in errors
 */

START_TEST(test_dropin_default_refused) {
        put("etc/50-v.conf", 0644,
            "rules = (\n"
            "  { action = \"a\"; effect = \"allow\"; anyone = true; }\n"
            ");\n"
            "default = \"allow\";\n");
        load("etc", "usr");
        assert_refused(1);
        assert_error("etc/50-v.conf", 4, "unknown setting 'default' (a drop-in file holds only rules)");
        assert_source("etc/50-v.conf", SOURCE_FAILED, NULL);
}
END_TEST

START_TEST(test_dropin_settings_refused) {
        put("usr/50-v.conf", 0644,
            "settings = {\n"
            "  request_timeout = 99;\n"
            "};\n"
            "rules = (\n"
            "  { action = \"a\"; effect = \"allow\"; anyone = true; }\n"
            ");\n");
        load("etc", "usr");
        assert_refused(1);
        assert_error("usr/50-v.conf", 1, "unknown setting 'settings' (a drop-in file holds only rules)");
        /* Nor did it change the settings. */
        ck_assert_uint_eq(T.settings.request_timeout, SETTINGS_DEFAULTS.request_timeout);
}
END_TEST

START_TEST(test_dropin_missing_rules) {
        put("etc/50-v.conf", 0644, "# nothing but a comment\n");
        load("etc", "usr");
        assert_refused(1);
        assert_error("etc/50-v.conf", 0, "missing 'rules'");
        assert_source("etc/50-v.conf", SOURCE_FAILED, NULL);
}
END_TEST

START_TEST(test_errors_in_several_files_all_reported) {
        put("etc/10-a.conf", 0644,
            "rules = (\n"
            "  { action = \"a\"; effect = \"permit\"; anyone = true; }\n"
            ");\n");
        put("usr/20-b.conf", 0644, "rules = (\n\n  { action = \"b\"; effect = ; }\n);\n");
        put("usr/30-c.conf", 0644, ONE_RULE("fine"));
        put("etc/40-d.conf", 0644, "colour = \"blue\";\n");
        put("main.conf", 0644, "default = \"maybe\";\n" ONE_RULE("main.only"));

        load("etc", "usr");
        assert_refused(5);
        assert_error("etc/10-a.conf", 2, "'effect' must be \"allow\" or \"deny\"");
        assert_error("usr/20-b.conf", 3, "syntax error");
        assert_error("etc/40-d.conf", 1, "unknown setting 'colour'");
        assert_error("etc/40-d.conf", 0, "missing 'rules'");
        assert_error("main.conf", 1, "'default' must be \"allow\" or \"deny\"");
        assert_source("etc/10-a.conf", SOURCE_FAILED, NULL);
        assert_source("usr/20-b.conf", SOURCE_FAILED, NULL);
        assert_source("usr/30-c.conf", SOURCE_LOADED, NULL);
        assert_source("etc/40-d.conf", SOURCE_FAILED, NULL);
        assert_source("main.conf", SOURCE_FAILED, NULL);
}
END_TEST

/* A folder named x.conf must be an error, never an exit() in libconfig's
 * scanner: run the load in a child so that an exit shows as a failure. */
START_TEST(test_subdirectory_named_conf) {
        int status;

        mkdir_mode("etc/50-v.conf", 0755);
        put("etc/50-v.conf/inner.conf", 0644, ONE_RULE("inner"));
        put("usr/50-v.conf", 0644, ONE_RULE("from.usr"));

        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                load("etc", "usr");
                _exit(0);
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "loading a folder named x.conf ended the process (%s %d)",
                      WIFEXITED(status) ? "exit status" : "signal",
                      WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));

        load("etc", "usr");
        assert_refused(1);
        assert_error("etc/50-v.conf", 0, "not a regular file");
        assert_source("etc/50-v.conf", SOURCE_FAILED, NULL);
        /* It still takes the name: the vendor file below is not used instead. */
        assert_source("usr/50-v.conf", SOURCE_SKIPPED, by("overridden by", "etc/50-v.conf"));
        assert_not_listed("etc/50-v.conf/inner.conf");
}
END_TEST

/* Only /dev/null masks; another device is not a regular file (and must not be read). */
START_TEST(test_symlink_to_other_device_refused) {
        link_to("/dev/zero", "etc/50-v.conf");
        load("etc", "usr");
        assert_refused(1);
        assert_error("etc/50-v.conf", 0, "not a regular file");
}
END_TEST

/* ------------------------------------------------------------------------
 * Ownership and mode
 */

/* One refusal, naming the file, with the reason. */
#define assert_insecure(rel, reason)                                                                                   \
        do {                                                                                                           \
                assert_refused(1);                                                                                     \
                assert_error(rel, 0, reason);                                                                          \
        } while (0)

START_TEST(test_secure_tree_loads) {
        put("etc/10-a.conf", 0644, ONE_RULE("a"));
        put("usr/20-b.conf", 0444, ONE_RULE("b"));
        put("usr/30-c.conf", 0600, ONE_RULE("c"));
        put("target.conf", 0640, ONE_RULE("d"));
        link_to("../target.conf", "etc/40-d.conf");
        ck_assert_int_eq(chmod(P("etc"), 01755), 0);

        load_checked("etc", "usr");
        assert_loaded(0);
        expect("a", 1, ALLOW, "etc/10-a.conf", 2);
        expect("b", 1, ALLOW, "usr/20-b.conf", 2);
        expect("c", 1, ALLOW, "usr/30-c.conf", 2);
        expect("d", 1, ALLOW, "etc/40-d.conf", 2);
}
END_TEST

START_TEST(test_group_writable_file_refused) {
        put("etc/50-v.conf", 0664, ONE_RULE("a"));
        load_checked("etc", "usr");
        assert_insecure("etc/50-v.conf", "refusing: writable by group (mode 0664)");
        assert_source("etc/50-v.conf", SOURCE_FAILED, NULL);
}
END_TEST

START_TEST(test_world_writable_file_refused) {
        put("usr/50-v.conf", 0646, ONE_RULE("a"));
        load_checked("etc", "usr");
        assert_insecure("usr/50-v.conf", "refusing: writable by others (mode 0646)");

        /* Sticky or not, world-writable is world-writable. */
        put("usr/50-v.conf", 01666, ONE_RULE("a"));
        load_checked("etc", "usr");
        assert_insecure("usr/50-v.conf", "refusing: writable by others");
}
END_TEST

START_TEST(test_main_file_checked) {
        ck_assert_int_eq(chmod(P("main.conf"), 0620), 0);
        load_checked("etc", "usr");
        assert_insecure("main.conf", "refusing: writable by group (mode 0620)");
        assert_source("main.conf", SOURCE_FAILED, NULL);
}
END_TEST

START_TEST(test_group_writable_folder_refused) {
        put("etc/50-v.conf", 0644, ONE_RULE("a"));
        ck_assert_int_eq(chmod(P("etc"), 0775), 0);
        load_checked("etc", "usr");
        assert_insecure("etc", "refusing: writable by group (mode 0775)");
        assert_source("etc", SOURCE_FAILED, "insecure folder");
        /* Nothing from the refused folder was looked at. */
        assert_not_listed("etc/50-v.conf");

        /* A world-writable folder, even with the sticky bit as /tmp has. */
        ck_assert_int_eq(chmod(P("etc"), 0755), 0);
        ck_assert_int_eq(chmod(P("usr"), 01777), 0);
        load_checked("etc", "usr");
        assert_insecure("usr", "refusing: writable by others (mode 1777)");
}
END_TEST

/* A drop-in folder given as a symlink is judged by the folder it points to. */
START_TEST(test_symlink_to_insecure_folder_refused) {
        mkdir_mode("open", 0777);
        put("open/50-v.conf", 0644, ONE_RULE("a"));
        link_to("open", "link");
        load_checked("link", "usr");
        assert_insecure("link", "refusing: writable by others");
}
END_TEST

START_TEST(test_symlink_to_insecure_file_refused) {
        put("target.conf", 0666, ONE_RULE("a"));
        link_to("../target.conf", "etc/50-v.conf");
        load_checked("etc", "usr");
        /* The message names the file as configured, with its target's mode. */
        assert_insecure("etc/50-v.conf", "refusing: writable by others (mode 0666)");
        assert_source("etc/50-v.conf", SOURCE_FAILED, NULL);
}
END_TEST

START_TEST(test_file_owned_by_other_uid_refused) {
        if (geteuid() != 0) {
                fprintf(stderr, "SKIP: test_file_owned_by_other_uid_refused needs root to chown (euid %u)\n",
                        (unsigned) geteuid());
                return;
        }
        put("etc/50-v.conf", 0644, ONE_RULE("a"));
        chown_rel("etc/50-v.conf", OTHER_UID, OTHER_GID);
        load_checked("etc", "usr");
        assert_insecure("etc/50-v.conf", "refusing: owned by uid 1000; must be owned by root");

        /* The main file and the folders likewise. */
        chown_rel("etc/50-v.conf", 0, 0);
        chown_rel("main.conf", OTHER_UID, OTHER_GID);
        load_checked("etc", "usr");
        assert_insecure("main.conf", "refusing: owned by uid 1000");

        chown_rel("main.conf", 0, 0);
        chown_rel("usr", OTHER_UID, OTHER_GID);
        load_checked("etc", "usr");
        assert_insecure("usr", "refusing: owned by uid 1000");
        assert_source("usr", SOURCE_FAILED, "insecure folder");

        /* The daemon's own uid is trusted like root. */
        chown_rel("etc/50-v.conf", OTHER_UID, OTHER_GID);
        chown_rel("main.conf", OTHER_UID, OTHER_GID);
        load_opts(true, OTHER_UID, "etc", "usr", NULL);
        assert_loaded(0);
        expect("a", 1, ALLOW, "etc/50-v.conf", 2);
        /* ... but only that uid. */
        load_opts(true, OTHER_UID + 1, "etc", "usr", NULL);
        assert_refused(3);
        assert_error("etc/50-v.conf", 0, "owned by uid 1000");
        assert_error("main.conf", 0, "owned by uid 1000");
        assert_error("usr", 0, "owned by uid 1000");
}
END_TEST

/* A mask is exempt from the mode check: it holds nothing to trust. */
START_TEST(test_mask_exempt_from_mode_check) {
        put("etc/50-v.conf", 0666, "");
        link_to("/dev/null", "etc/60-w.conf"); /* /dev/null itself is crw-rw-rw- */
        put("usr/50-v.conf", 0644, ONE_RULE("from.usr"));
        put("usr/60-w.conf", 0644, ONE_RULE("from.usr.60"));

        load_checked("etc", "usr");
        assert_loaded(0);
        assert_source("etc/50-v.conf", SOURCE_MASK, "masks");
        assert_source("etc/60-w.conf", SOURCE_MASK, "masks");
        assert_source("usr/50-v.conf", SOURCE_MASKED, by("masked by", "etc/50-v.conf"));
        assert_source("usr/60-w.conf", SOURCE_MASKED, by("masked by", "etc/60-w.conf"));

        /* Once someone writes into the world-writable "mask", it is a file like any other. */
        put("etc/50-v.conf", 0666, ONE_RULE("planted"));
        load_checked("etc", "usr");
        assert_insecure("etc/50-v.conf", "refusing: writable by others");
}
END_TEST

/* Every insecure case at once: all refused with check_ownership, all loaded without. */
START_TEST(test_unchecked_loads_insecure_files) {
        bool root = geteuid() == 0;

        put("etc/10-g.conf", 0664, ONE_RULE("g"));
        put("etc/20-o.conf", 0646, ONE_RULE("o"));
        mkdir_mode("open", 0775);
        put("open/30-f.conf", 0644, ONE_RULE("f"));
        put("target.conf", 0666, ONE_RULE("l"));
        link_to("../target.conf", "etc/40-l.conf");
        if (root) {
                put("usr/50-u.conf", 0644, ONE_RULE("u"));
                chown_rel("usr/50-u.conf", OTHER_UID, OTHER_GID);
        } else
                fprintf(stderr, "SKIP: test_unchecked_loads_insecure_files: no foreign-owned file without root\n");

        load_opts(true, geteuid(), "etc", "open", "usr", NULL);
        assert_refused(root ? 5 : 4);
        assert_error("etc/10-g.conf", 0, "writable by group");
        assert_error("etc/20-o.conf", 0, "writable by others");
        assert_error("open", 0, "writable by group");
        assert_error("etc/40-l.conf", 0, "writable by others");
        if (root)
                assert_error("usr/50-u.conf", 0, "owned by uid 1000");

        load("etc", "open", "usr");
        assert_loaded(0);
        expect("g", 1, ALLOW, "etc/10-g.conf", 2);
        expect("o", 1, ALLOW, "etc/20-o.conf", 2);
        expect("f", 1, ALLOW, "open/30-f.conf", 2);
        expect("l", 1, ALLOW, "etc/40-l.conf", 2);
        if (root)
                expect("u", 1, ALLOW, "usr/50-u.conf", 2);
}
END_TEST

/* ------------------------------------------------------------------------
 * The folders above the files
 */

START_TEST(test_base_folder_trusted) {
        /* The premise of every checked test here: everything above ROOT passes. */
        ck_assert_msg(test_folder_trusted(P(NULL)), "'%s' or a folder above it is not trusted", P(NULL));
        load_checked("etc", "usr");
        assert_loaded(0);
}
END_TEST

START_TEST(test_group_writable_folder_above_refused) {
        put("etc/10-a.conf", 0644, ONE_RULE("a"));
        ck_assert_int_eq(chmod(P(NULL), 0775), 0);
        load_checked("etc", "usr");
        /* One error for the folder, however many paths pass through it. */
        assert_refused(1);
        /* ROOT itself ("ROOT: refusing: ..."). */
        ck_assert_msg(has_diag(false, NULL, 0, "refusing: folder above '") &&
                              has_diag(false, NULL, 0, "is writable by group (mode 0775); fix with: chmod go-w '"),
                      "want an error for ROOT, got:\n%s", dump());
        assert_source("etc", SOURCE_FAILED, "insecure folder above it");
        assert_source("usr", SOURCE_FAILED, "insecure folder above it");
        assert_source("main.conf", SOURCE_FAILED, "insecure folder above it");
        assert_not_listed("etc/10-a.conf");

        load("etc", "usr");
        assert_loaded(0);
        expect("a", 1, ALLOW, "etc/10-a.conf", 2);
}
END_TEST

/* Sticky (as /tmp) or not: anyone may still create entries. */
START_TEST(test_sticky_world_writable_folder_above_refused) {
        mkdir_mode("shared", 01777);
        mkdir_mode("shared/rules", 0755);
        put("shared/rules/10-a.conf", 0644, ONE_RULE("a"));
        load_checked("shared/rules", "etc");
        assert_refused(1);
        assert_error("shared", 0, "refusing: folder above '");
        assert_error("shared", 0, "is writable by others (mode 1777; the sticky bit does not stop anyone");
        assert_source("shared/rules", SOURCE_FAILED, "insecure folder above it");
        assert_not_listed("shared/rules/10-a.conf");
}
END_TEST

/* The real /tmp, as the daemon would see a policy left there. */
START_TEST(test_policy_in_tmp_refused) {
        char dir[] = "/tmp/credgate-test-tmp-XXXXXX", path[sizeof(dir) + 16];
        struct stat st;

        ck_assert_int_eq(stat("/tmp", &st), 0);
        if (!(st.st_mode & S_IWOTH)) {
                fprintf(stderr, "SKIP: test_policy_in_tmp_refused: /tmp is not world-writable here (mode %04o)\n",
                        (unsigned) (st.st_mode & 07777));
                return;
        }
        ck_assert_ptr_nonnull(mkdtemp(dir));
        ck_assert_int_eq(chmod(dir, 0755), 0);
        snprintf(path, sizeof(path), "%s/main.conf", dir);
        FILE *f = fopen(path, "we");
        ck_assert_ptr_nonnull(f);
        fputs(MAIN_TEXT, f);
        ck_assert_int_eq(fclose(f), 0);
        ck_assert_int_eq(chmod(path, 0644), 0);

        PolicyOptions o = { .main_file = path, .check_ownership = true, .trusted_uid = geteuid() };
        release();
        T.r = policy_load_full(&o, &T.diags, &T.sources, &T.settings, &T.policy);
        const char *want = "/tmp: refusing: folder above '";
        bool refused = T.r == -EINVAL && T.diags.n_errors == 1 && T.diags.n > 0 &&
                       strncmp(T.diags.v[0].text, want, strlen(want)) == 0;
        unlink(path);
        rmdir(dir);
        ck_assert_msg(refused, "want '/tmp: refusing: folder above ...', got:\n%s", dump());
}
END_TEST

START_TEST(test_folder_above_owned_by_other_uid_refused) {
        if (geteuid() != 0) {
                fprintf(stderr, "SKIP: test_folder_above_owned_by_other_uid_refused needs root to chown (euid %u)\n",
                        (unsigned) geteuid());
                return;
        }
        mkdir_mode("theirs", 0755);
        mkdir_mode("theirs/rules", 0755);
        put("theirs/rules/10-a.conf", 0644, ONE_RULE("a"));
        chown_rel("theirs", OTHER_UID, OTHER_GID);
        load_checked("theirs/rules", "etc");
        assert_refused(1);
        assert_error("theirs", 0, "refusing: folder above");
        assert_error("theirs", 0, "is owned by uid 1000; must be owned by root; fix with: chown root '");

        /* The daemon's own uid is trusted like root, for the folders above too. */
        load_opts(true, OTHER_UID, "theirs/rules", "etc", NULL);
        assert_loaded(0);
        expect("a", 1, ALLOW, "theirs/rules/10-a.conf", 2);
}
END_TEST

/* A symlink is followed: the folders above its target are judged. */
START_TEST(test_symlink_into_insecure_folder_refused) {
        mkdir_mode("open", 0777);
        put("open/main.conf", 0644, MAIN_TEXT);
        ck_assert_int_eq(unlink(P("main.conf")), 0);
        link_to("open/main.conf", "main.conf");
        load_checked("etc", "usr");
        assert_refused(1);
        assert_error("open", 0, "refusing: folder above '");
        assert_error("open", 0, "main.conf' is writable by others (mode 0777)");
        assert_source("main.conf", SOURCE_FAILED, "insecure folder above it");

        /* A drop-in that links there likewise. */
        put("good.conf", 0644, MAIN_TEXT);
        ck_assert_int_eq(unlink(P("main.conf")), 0);
        link_to("good.conf", "main.conf");
        put("open/20-b.conf", 0644, ONE_RULE("b"));
        link_to("../open/20-b.conf", "etc/20-b.conf");
        load_checked("etc", "usr");
        assert_refused(1);
        assert_error("open", 0, "refusing: folder above '");
        assert_source("etc/20-b.conf", SOURCE_FAILED, "insecure folder above it");
}
END_TEST

/* ... and so is the folder that holds a symlink: its owner can repoint it. */
START_TEST(test_symlink_in_insecure_folder_refused) {
        mkdir_mode("open", 0777);
        link_to("../etc", "open/rules");
        put("etc/10-a.conf", 0644, ONE_RULE("a"));
        load_checked("open/rules", "usr");
        assert_refused(1);
        assert_error("open", 0, "refusing: folder above '");
        assert_error("open", 0, "open/rules' is writable by others (mode 0777)");
        assert_source("open/rules", SOURCE_FAILED, "insecure folder above it");

        /* The same target, named through a trusted path, loads. */
        load_checked("etc", "usr");
        assert_loaded(0);
}
END_TEST

/* A drop-in folder that is missing is no excuse: it may have been renamed away. */
START_TEST(test_missing_folder_below_insecure_folder_refused) {
        mkdir_mode("open", 0777);
        load_checked("open/rules.d", "usr");
        assert_refused(1);
        assert_error("open", 0, "open/rules.d' is writable by others (mode 0777)");
        assert_source("open/rules.d", SOURCE_FAILED, "insecure folder above it");

        /* Missing below a trusted folder is fine, as before. */
        load_checked("etc/missing", "usr");
        assert_loaded(0);
}
END_TEST

/* ------------------------------------------------------------------------
 * Settings
 */

static bool settings_eq(const Settings *a, const Settings *b) {
        return a->request_timeout == b->request_timeout && a->max_connections == b->max_connections &&
               a->max_connections_per_uid == b->max_connections_per_uid && a->idle_exit == b->idle_exit &&
               a->log == b->log;
}

static const char *settings_str(const Settings *s) {
        static char buf[4][160];
        static int k;
        k = (k + 1) % 4;
        snprintf(buf[k], sizeof(buf[k]),
                 "{ request_timeout=%llu max_connections=%llu max_connections_per_uid=%llu idle_exit=%llu log=%s }",
                 (unsigned long long) s->request_timeout, (unsigned long long) s->max_connections,
                 (unsigned long long) s->max_connections_per_uid, (unsigned long long) s->idle_exit,
                 settings_audit_name(s->log));
        return buf[k];
}

#define assert_settings(want)                                                                                          \
        do {                                                                                                           \
                Settings w_ = (want);                                                                                  \
                ck_assert_msg(settings_eq(&T.settings, &w_), "settings %s, want %s", settings_str(&T.settings),       \
                              settings_str(&w_));                                                                      \
        } while (0)

/* Write a main file with "settings = {\n  @body\n};" (body on line 2) and load it alone. */
static int load_settings_text(const char *body) {
        char *text = NULL;
        ck_assert_int_ge(asprintf(&text, "settings = {\n  %s\n};\n" ONE_RULE("a"), body), 0);
        put("main.conf", 0644, text);
        free(text);
        return load_opts(false, geteuid(), NULL);
}

typedef enum Field {
        F_TIMEOUT,
        F_MAX,
        F_PER_UID,
        F_IDLE,
        F_LOG,
} Field;

static const struct {
        const char *body;
        Field field;
        bool ok;
        uint64_t value; /* for ok cases: the value read */
} setting_cases[] = {
        /* request_timeout: 1..3600 */
        { "request_timeout = 1;", F_TIMEOUT, true, 1 },
        { "request_timeout = 2;", F_TIMEOUT, true, 2 },
        { "request_timeout = 3599;", F_TIMEOUT, true, 3599 },
        { "request_timeout = 3600;", F_TIMEOUT, true, 3600 },
        { "request_timeout = 3600L;", F_TIMEOUT, true, 3600 },
        { "request_timeout = 0x20;", F_TIMEOUT, true, 32 },
        { "request_timeout = 0;", F_TIMEOUT, false, 0 },
        { "request_timeout = 3601;", F_TIMEOUT, false, 0 },
        { "request_timeout = -1;", F_TIMEOUT, false, 0 },
        { "request_timeout = 4294967296;", F_TIMEOUT, false, 0 },  /* libconfig reads 0 */
        { "request_timeout = 0x100000000;", F_TIMEOUT, false, 0 }, /* likewise */
        { "request_timeout = 2147483648;", F_TIMEOUT, false, 0 },  /* reads as -2147483648 */
        { "request_timeout = 4294967296L;", F_TIMEOUT, false, 0 }, /* a real 64-bit value */
        /* max_connections: 1..1048576 */
        { "max_connections = 1;", F_MAX, true, 1 },
        { "max_connections = 2;", F_MAX, true, 2 },
        { "max_connections = 1048575;", F_MAX, true, 1048575 },
        { "max_connections = 1048576;", F_MAX, true, 1048576 },
        { "max_connections = 0;", F_MAX, false, 0 },
        { "max_connections = 1048577;", F_MAX, false, 0 },
        { "max_connections = -1;", F_MAX, false, 0 },
        { "max_connections = 4294967296;", F_MAX, false, 0 },
        { "max_connections = 0x100000000;", F_MAX, false, 0 },
        { "max_connections = 4294967296L;", F_MAX, false, 0 },
        { "max_connections = 9223372036854775807L;", F_MAX, false, 0 },
        /* max_connections_per_uid: 1..1048576 */
        { "max_connections_per_uid = 1;", F_PER_UID, true, 1 },
        { "max_connections_per_uid = 1048576;", F_PER_UID, true, 1048576 },
        { "max_connections_per_uid = 0;", F_PER_UID, false, 0 },
        { "max_connections_per_uid = 1048577;", F_PER_UID, false, 0 },
        { "max_connections_per_uid = -1;", F_PER_UID, false, 0 },
        { "max_connections_per_uid = 4294967296;", F_PER_UID, false, 0 },
        { "max_connections_per_uid = 4294967296L;", F_PER_UID, false, 0 },
        /* idle_exit: 0..86400, 0 = never */
        { "idle_exit = 0;", F_IDLE, true, 0 },
        { "idle_exit = 1;", F_IDLE, true, 1 },
        { "idle_exit = 86400;", F_IDLE, true, 86400 },
        { "idle_exit = 86401;", F_IDLE, false, 0 },
        { "idle_exit = -1;", F_IDLE, false, 0 },
        { "idle_exit = 4294967296L;", F_IDLE, false, 0 },
        /* log: "none", "deny", "all" */
        { "log = \"none\";", F_LOG, true, AUDIT_NONE },
        { "log = \"deny\";", F_LOG, true, AUDIT_DENY },
        { "log = \"all\";", F_LOG, true, AUDIT_ALL },
        { "log = \"All\";", F_LOG, false, 0 },
        { "log = \"NONE\";", F_LOG, false, 0 },
        { "log = \"\";", F_LOG, false, 0 },
        { "log = \"allow\";", F_LOG, false, 0 },
        { "log = \"all \";", F_LOG, false, 0 },
        { "log = 2;", F_LOG, false, 0 },
        { "log = true;", F_LOG, false, 0 },
};

static const char *const field_names[] = { "request_timeout", "max_connections", "max_connections_per_uid",
                                           "idle_exit", "log" };

static void set_field(Settings *s, Field f, uint64_t v) {
        switch (f) {
        case F_TIMEOUT:
                s->request_timeout = v;
                break;
        case F_MAX:
                s->max_connections = v;
                break;
        case F_PER_UID:
                s->max_connections_per_uid = v;
                break;
        case F_IDLE:
                s->idle_exit = v;
                break;
        case F_LOG:
                s->log = (AuditLevel) v;
                break;
        }
}

START_TEST(test_setting_value) {
        const char *body = setting_cases[_i].body;
        Field f = setting_cases[_i].field;

        load_settings_text(body);
        if (setting_cases[_i].ok) {
                Settings want = SETTINGS_DEFAULTS;
                set_field(&want, f, setting_cases[_i].value);
                /* A per-uid quota above the total is legal but warned about. */
                bool warn = want.max_connections_per_uid > want.max_connections;
                ck_assert_msg(T.r == 0 && T.policy && T.diags.n_errors == 0 && T.diags.n_warnings == (warn ? 1u : 0u),
                              "'%s': want a loaded policy with %d warnings, got:\n%s", body, warn, dump());
                if (warn)
                        assert_warning("main.conf", 1, "max_connections_per_uid");
                ck_assert_msg(settings_eq(&T.settings, &want), "'%s': settings %s, want %s", body,
                              settings_str(&T.settings), settings_str(&want));
        } else {
                ck_assert_msg(T.r == -EINVAL && !T.policy && T.diags.n_errors == 1,
                              "'%s': want -EINVAL, no policy and one error, got:\n%s", body, dump());
                char needle[64];
                snprintf(needle, sizeof(needle), "'%s' must be", field_names[f]);
                ck_assert_msg(has_diag(false, "main.conf", 2, needle),
                              "'%s': want an error at main.conf:2 containing \"%s\", got:\n%s", body, needle, dump());
        }
}
END_TEST

/* The message of an integer out of range gives the range. */
START_TEST(test_setting_range_in_message) {
        load_settings_text("request_timeout = 0;");
        assert_error("main.conf", 2, "'request_timeout' must be 1..3600 (got 0)");
        load_settings_text("max_connections = 4294967296;");
        assert_error("main.conf", 2, "'max_connections' must be 1..1048576 (got 0)");
        load_settings_text("max_connections_per_uid = 1048577;");
        assert_error("main.conf", 2, "'max_connections_per_uid' must be 1..1048576 (got 1048577)");
        load_settings_text("idle_exit = 86401;");
        assert_error("main.conf", 2, "'idle_exit' must be 0..86400 (got 86401)");
}
END_TEST

static const char *const wrong_types[] = {
        "request_timeout = \"10\";", "request_timeout = 10.0;",   "max_connections = true;",
        "max_connections_per_uid = [1];", "idle_exit = \"0\";", "idle_exit = { a = 1; };",
};

START_TEST(test_setting_wrong_type) {
        load_settings_text(wrong_types[_i]);
        assert_refused(1);
        ck_assert_msg(has_diag(false, "main.conf", 2, "must be an integer"),
                      "'%s': want \"must be an integer\" at main.conf:2, got:\n%s", wrong_types[_i], dump());
        assert_settings(SETTINGS_DEFAULTS);
}
END_TEST

START_TEST(test_setting_unknown_key) {
        load_settings_text("timeout = 10;");
        assert_refused(1);
        assert_error("main.conf", 2, "unknown setting 'timeout'");

        load_settings_text("Request_Timeout = 10;");
        assert_refused(1);
        assert_error("main.conf", 2, "unknown setting 'Request_Timeout'");
}
END_TEST

START_TEST(test_settings_not_a_group) {
        static const char *const texts[] = {
                "settings = 5;\n",
                "settings = \"request_timeout = 5\";\n",
                "settings = [ 5 ];\n",
                "settings = ( { request_timeout = 5; } );\n",
        };
        for (size_t i = 0; i < ELEMENTSOF(texts); i++) {
                char *text = NULL;
                ck_assert_int_ge(asprintf(&text, "%s" ONE_RULE("a"), texts[i]), 0);
                put("main.conf", 0644, text);
                free(text);
                load_opts(false, geteuid(), NULL);
                ck_assert_msg(T.r == -EINVAL && T.diags.n_errors == 1 &&
                                      has_diag(false, "main.conf", 1, "'settings' must be a group"),
                              "'%s': want one error \"'settings' must be a group\" at line 1, got:\n%s", texts[i],
                              dump());
                assert_settings(SETTINGS_DEFAULTS);
        }
}
END_TEST

START_TEST(test_settings_several_errors) {
        put("main.conf", 0644,
            "settings = {\n"
            "  request_timeout = 0;\n"
            "  log = \"verbose\";\n"
            "  max_connections = 5;\n"
            "  colour = \"blue\";\n"
            "  idle_exit = \"never\";\n"
            "};\n" ONE_RULE("a"));
        load_opts(false, geteuid(), NULL);
        assert_refused(4);
        assert_error("main.conf", 2, "'request_timeout' must be 1..3600");
        assert_error("main.conf", 3, "'log' must be");
        assert_error("main.conf", 5, "unknown setting 'colour'");
        assert_error("main.conf", 6, "'idle_exit' must be an integer");
}
END_TEST

START_TEST(test_settings_defaults_when_absent) {
        load_opts(false, geteuid(), NULL);
        assert_loaded(0);
        assert_settings(SETTINGS_DEFAULTS);

        load_settings_text("");
        assert_loaded(0);
        assert_settings(SETTINGS_DEFAULTS);

        /* The documented defaults. */
        Settings d = SETTINGS_DEFAULTS;
        ck_assert_uint_eq(d.request_timeout, 10);
        ck_assert_uint_eq(d.max_connections, 16384);
        ck_assert_uint_eq(d.max_connections_per_uid, 1024);
        ck_assert_uint_eq(d.idle_exit, 0);
        ck_assert_int_eq(d.log, AUDIT_DENY);
}
END_TEST

START_TEST(test_settings_all_keys) {
        put("main.conf", 0644,
            "settings = {\n"
            "  request_timeout = 30;\n"
            "  max_connections = 500;\n"
            "  max_connections_per_uid = 50;\n"
            "  idle_exit = 600;\n"
            "  log = \"all\";\n"
            "};\n" ONE_RULE("a"));
        load_opts(false, geteuid(), NULL);
        assert_loaded(0);
        assert_settings(((Settings){ .request_timeout = 30,
                                     .max_connections = 500,
                                     .max_connections_per_uid = 50,
                                     .idle_exit = 600,
                                     .log = AUDIT_ALL }));
}
END_TEST

/* The file's settings go over what the caller passed in; unset keys keep the caller's values. */
START_TEST(test_settings_applied_over_caller_values) {
        Settings mine = { .request_timeout = 77, .max_connections = 700, .max_connections_per_uid = 7,
                          .idle_exit = 70, .log = AUDIT_NONE };

        put("main.conf", 0644, "settings = { log = \"all\"; };\n" ONE_RULE("a"));
        release();
        T.settings = mine;
        PolicyOptions o = { .main_file = P("main.conf") };
        T.r = policy_load_full(&o, &T.diags, &T.sources, &T.settings, &T.policy);
        assert_loaded(0);
        mine.log = AUDIT_ALL;
        assert_settings(mine);
}
END_TEST

START_TEST(test_settings_per_uid_above_total_warns) {
        put("main.conf", 0644,
            "settings = {\n"
            "  max_connections = 10;\n"
            "  max_connections_per_uid = 11;\n"
            "};\n" ONE_RULE("a"));
        load_opts(false, geteuid(), NULL);
        assert_loaded(1);
        assert_warning("main.conf", 1, "max_connections_per_uid (11) is above max_connections (10)");
}
END_TEST

/* ------------------------------------------------------------------------
 * Command-line overrides
 */

static const Settings file_settings = {
        .request_timeout = 10, .max_connections = 100, .max_connections_per_uid = 5, .idle_exit = 0, .log = AUDIT_DENY
};
static const Settings cli_settings = {
        .request_timeout = 99, .max_connections = 999, .max_connections_per_uid = 9, .idle_exit = 900, .log = AUDIT_NONE
};

START_TEST(test_override_none_marked) {
        Settings st = file_settings;
        SettingsOverride o = { .v = cli_settings };

        settings_apply_override(&st, &o);
        ck_assert_msg(settings_eq(&st, &file_settings), "an unmarked override changed %s", settings_str(&st));
}
END_TEST

/* Only the one field marked changes, whichever it is. */
START_TEST(test_override_one_field) {
        Settings st = file_settings, want = file_settings;
        SettingsOverride o = { .v = cli_settings };

        switch ((Field) _i) {
        case F_TIMEOUT:
                o.request_timeout = true;
                want.request_timeout = cli_settings.request_timeout;
                break;
        case F_MAX:
                o.max_connections = true;
                want.max_connections = cli_settings.max_connections;
                break;
        case F_PER_UID:
                o.max_connections_per_uid = true;
                want.max_connections_per_uid = cli_settings.max_connections_per_uid;
                break;
        case F_IDLE:
                o.idle_exit = true;
                want.idle_exit = cli_settings.idle_exit;
                break;
        case F_LOG:
                o.log = true;
                want.log = cli_settings.log;
                break;
        }
        settings_apply_override(&st, &o);
        ck_assert_msg(settings_eq(&st, &want), "override of %s: got %s, want %s", field_names[_i], settings_str(&st),
                      settings_str(&want));
}
END_TEST

START_TEST(test_override_all_and_zero) {
        Settings st = file_settings;
        SettingsOverride o = { .v = cli_settings, .request_timeout = true, .max_connections = true,
                               .max_connections_per_uid = true, .idle_exit = true, .log = true };

        settings_apply_override(&st, &o);
        ck_assert_msg(settings_eq(&st, &cli_settings), "got %s, want %s", settings_str(&st),
                      settings_str(&cli_settings));

        /* A marked field is replaced even by its zero value ("--idle-exit 0", "--log none"). */
        st = (Settings){ .request_timeout = 1, .max_connections = 1, .max_connections_per_uid = 1, .idle_exit = 60,
                         .log = AUDIT_ALL };
        o = (SettingsOverride){ .v = { .idle_exit = 0, .log = AUDIT_NONE }, .idle_exit = true, .log = true };
        settings_apply_override(&st, &o);
        ck_assert_uint_eq(st.idle_exit, 0);
        ck_assert_int_eq(st.log, AUDIT_NONE);
        ck_assert_uint_eq(st.request_timeout, 1);
}
END_TEST

START_TEST(test_parse_audit) {
        static const char *const bad[] = { "", "None", "DENY", "al", "all ", " all", "allow", "denyall", "0" };
        AuditLevel a;

        ck_assert_int_eq(settings_parse_audit("none", &a), 0);
        ck_assert_int_eq(a, AUDIT_NONE);
        ck_assert_int_eq(settings_parse_audit("deny", &a), 0);
        ck_assert_int_eq(a, AUDIT_DENY);
        ck_assert_int_eq(settings_parse_audit("all", &a), 0);
        ck_assert_int_eq(a, AUDIT_ALL);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                a = AUDIT_DENY;
                ck_assert_msg(settings_parse_audit(bad[i], &a) == -EINVAL, "'%s' accepted", bad[i]);
                ck_assert_msg(a == AUDIT_DENY, "'%s' changed the output on failure", bad[i]);
        }
        for (AuditLevel l = AUDIT_NONE; l <= AUDIT_ALL; l++) {
                ck_assert_int_eq(settings_parse_audit(settings_audit_name(l), &a), 0);
                ck_assert_int_eq(a, l);
        }
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *sources_suite(void) {
        Suite *s = suite_create("sources");
        TCase *tc;

        tc = tcase_create("order");
        tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_order_by_name_across_folders);
        tcase_add_test(tc, test_admin_overrides_vendor);
        tcase_add_test(tc, test_no_folders_and_missing_folders);
        suite_add_tcase(s, tc);

        tc = tcase_create("masking");
        tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_same_name_earlier_folder_wins);
        tcase_add_test(tc, test_overridden_file_not_read);
        tcase_add_test(tc, test_empty_file_masks);
        tcase_add_test(tc, test_dev_null_symlink_masks);
        tcase_add_test(tc, test_symlink_to_empty_file_masks);
        tcase_add_test(tc, test_mask_without_target);
        tcase_add_test(tc, test_mask_in_later_folder_does_not_mask);
        tcase_add_test(tc, test_main_file_is_never_a_mask);
        suite_add_tcase(s, tc);

        tc = tcase_create("listing");
        tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_dotfiles_not_listed);
        tcase_add_test(tc, test_non_conf_files_skipped);
        tcase_add_test(tc, test_sources_count_rules);
        suite_add_tcase(s, tc);

        tc = tcase_create("dropin-errors");
        tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_dropin_default_refused);
        tcase_add_test(tc, test_dropin_settings_refused);
        tcase_add_test(tc, test_dropin_missing_rules);
        tcase_add_test(tc, test_errors_in_several_files_all_reported);
        tcase_add_test(tc, test_subdirectory_named_conf);
        tcase_add_test(tc, test_symlink_to_other_device_refused);
        suite_add_tcase(s, tc);

        tc = tcase_create("ownership");
        tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_secure_tree_loads);
        tcase_add_test(tc, test_group_writable_file_refused);
        tcase_add_test(tc, test_world_writable_file_refused);
        tcase_add_test(tc, test_main_file_checked);
        tcase_add_test(tc, test_group_writable_folder_refused);
        tcase_add_test(tc, test_symlink_to_insecure_folder_refused);
        tcase_add_test(tc, test_symlink_to_insecure_file_refused);
        tcase_add_test(tc, test_file_owned_by_other_uid_refused);
        tcase_add_test(tc, test_mask_exempt_from_mode_check);
        tcase_add_test(tc, test_unchecked_loads_insecure_files);
        suite_add_tcase(s, tc);

        tc = tcase_create("folders-above");
        tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_base_folder_trusted);
        tcase_add_test(tc, test_group_writable_folder_above_refused);
        tcase_add_test(tc, test_sticky_world_writable_folder_above_refused);
        tcase_add_test(tc, test_policy_in_tmp_refused);
        tcase_add_test(tc, test_folder_above_owned_by_other_uid_refused);
        tcase_add_test(tc, test_symlink_into_insecure_folder_refused);
        tcase_add_test(tc, test_symlink_in_insecure_folder_refused);
        tcase_add_test(tc, test_missing_folder_below_insecure_folder_refused);
        suite_add_tcase(s, tc);

        tc = tcase_create("settings");
        tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_loop_test(tc, test_setting_value, 0, ELEMENTSOF(setting_cases));
        tcase_add_test(tc, test_setting_range_in_message);
        tcase_add_loop_test(tc, test_setting_wrong_type, 0, ELEMENTSOF(wrong_types));
        tcase_add_test(tc, test_setting_unknown_key);
        tcase_add_test(tc, test_settings_not_a_group);
        tcase_add_test(tc, test_settings_several_errors);
        tcase_add_test(tc, test_settings_defaults_when_absent);
        tcase_add_test(tc, test_settings_all_keys);
        tcase_add_test(tc, test_settings_applied_over_caller_values);
        tcase_add_test(tc, test_settings_per_uid_above_total_warns);
        suite_add_tcase(s, tc);

        tc = tcase_create("override");
        tcase_add_test(tc, test_override_none_marked);
        tcase_add_loop_test(tc, test_override_one_field, F_TIMEOUT, F_LOG + 1);
        tcase_add_test(tc, test_override_all_and_zero);
        tcase_add_test(tc, test_parse_audit);
        suite_add_tcase(s, tc);

        return s;
}

int main(void) {
        return test_run(sources_suite());
}
