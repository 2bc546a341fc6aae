/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Policy loader: reads a libconfig file, validates every setting, resolves
 * user and group names and feeds the rules to the PolicyBuilder.
 *
 * It reports every problem it finds (not just the first) as "FILE:LINE:
 * message", and refuses the policy on any error. Two rules keep a typo from
 * ever widening access: ids must be quoted strings (libconfig silently wraps
 * an overflowing integer, "4294967296" would read as 0 = root), and a name
 * that cannot be resolved in a deny rule is an error, not a warning.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libconfig.h>
#include <malloc.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "action.h"
#include "macro.h"
#include "policy-load.h"

#define ID_MAX UINT32_C(4294967294) /* 4294967295 is (uid_t)-1, "no id" */
#define POLICY_FILE_MAX (256u << 20)

typedef struct Loader {
        const char *path;
        Diags *diags;
        PolicyBuilder *b;
        IdRange *uids, *gids;
        size_t n_uids, n_gids, cap_uids, cap_gids;
} Loader;

void diags_done(Diags *d) {
        if (!d)
                return;
        for (size_t i = 0; i < d->n; i++)
                free(d->v[i].text);
        free(d->v);
        *d = (Diags){};
}

_printf_(4, 5) static void diag(Loader *l, bool warning, int line, const char *fmt, ...) {
        Diags *d = l->diags;
        char *msg = NULL, *text = NULL;
        va_list ap;

        va_start(ap, fmt);
        int r = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (r < 0)
                msg = NULL;

        if (line > 0)
                r = asprintf(&text, "%s:%d: %s%s", l->path, line, warning ? "warning: " : "", msg ? msg : "out of memory");
        else
                r = asprintf(&text, "%s: %s%s", l->path, warning ? "warning: " : "", msg ? msg : "out of memory");
        free(msg);

        /* Count the error even if we cannot store its text: never lose one. */
        if (warning)
                d->n_warnings++;
        else
                d->n_errors++;
        if (r < 0)
                return;
        Diag *v = reallocarray(d->v, d->n + 1, sizeof(Diag));
        if (!v) {
                free(text);
                return;
        }
        d->v = v;
        d->v[d->n++] = (Diag){ .warning = warning, .text = text };
}

static int line_of(const config_setting_t *s) {
        return (int) config_setting_source_line(s);
}

static bool is_list(const config_setting_t *s) {
        int t = config_setting_type(s);
        return t == CONFIG_TYPE_ARRAY || t == CONFIG_TYPE_LIST;
}

static int push_range(IdRange **v, size_t *n, size_t *cap, IdRange r) {
        if (*n == *cap) {
                size_t c = *cap ? *cap * 2 : 8;
                IdRange *m = reallocarray(*v, c, sizeof(IdRange));
                if (!m)
                        return -ENOMEM;
                *v = m;
                *cap = c;
        }
        (*v)[(*n)++] = r;
        return 0;
}

/* "1000" or "1000-1999": digits only, each end in 0..ID_MAX. */
static int parse_id(const char *s, size_t n, uint32_t *ret) {
        uint64_t v = 0;
        if (n == 0 || n > 10)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                v = v * 10 + (uint64_t) (s[i] - '0');
        }
        if (v > ID_MAX)
                return -ERANGE;
        *ret = (uint32_t) v;
        return 0;
}

static int parse_id_range(const char *s, IdRange *ret) {
        const char *dash = strchr(s, '-');
        uint32_t lo, hi;
        int r;

        if (!dash) {
                r = parse_id(s, strlen(s), &lo);
                hi = lo;
        } else {
                r = parse_id(s, (size_t) (dash - s), &lo);
                if (r >= 0)
                        r = parse_id(dash + 1, strlen(dash + 1), &hi);
        }
        if (r < 0)
                return r;
        if (lo > hi)
                return -EDOM;
        *ret = (IdRange){ lo, hi };
        return 0;
}

static int lookup_user(const char *name, uint32_t *ret) {
        struct passwd pw, *res = NULL;
        char buf[4096];
        int r = getpwnam_r(name, &pw, buf, sizeof(buf), &res);
        if (r != 0)
                return -r;
        if (!res)
                return -ENOENT;
        if ((uint32_t) pw.pw_uid > ID_MAX)
                return -ERANGE;
        *ret = (uint32_t) pw.pw_uid;
        return 0;
}

static int lookup_group(const char *name, uint32_t *ret) {
        struct group gr, *res = NULL;
        _cleanup_free_ char *buf = NULL;
        size_t size = 16384;
        int r;

        /* Groups with many members need a larger buffer. */
        for (;;) {
                char *m = realloc(buf, size);
                if (!m)
                        return -ENOMEM;
                buf = m;
                r = getgrnam_r(name, &gr, buf, size, &res);
                if (r != ERANGE || size >= (1u << 24))
                        break;
                size *= 2;
        }
        if (r != 0)
                return -r;
        if (!res)
                return -ENOENT;
        if ((uint32_t) gr.gr_gid > ID_MAX)
                return -ERANGE;
        *ret = (uint32_t) gr.gr_gid;
        return 0;
}

/*
 * One subject key: users, groups, uids or gids. Appends to l->uids/l->gids.
 * Return: number of entries (0 for an empty list), or -1 after an error.
 */
static int load_subject(Loader *l, const config_setting_t *s, const char *key, Decision effect) {
        bool names = strcmp(key, "users") == 0 || strcmp(key, "groups") == 0;
        bool is_uid = strcmp(key, "users") == 0 || strcmp(key, "uids") == 0;
        int n = 0, errors = 0;

        if (!is_list(s)) {
                diag(l, false, line_of(s), "'%s' must be a list, e.g. %s = [\"%s\"]", key, key,
                     names ? (is_uid ? "alice" : "wheel") : "1000");
                return -1;
        }
        for (int i = 0; i < config_setting_length(s); i++) {
                const config_setting_t *e = config_setting_get_elem(s, (unsigned) i);
                int line = line_of(e) > 0 ? line_of(e) : line_of(s);
                int t = config_setting_type(e);
                const char *v = config_setting_get_string(e);
                IdRange range;
                int r;

                if (!names && (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64 || t == CONFIG_TYPE_FLOAT)) {
                        diag(l, false, line,
                             "'%s' entries must be quoted strings such as \"1000\": libconfig silently wraps large "
                             "integers, so a bare number is refused",
                             key);
                        errors++;
                        continue;
                }
                if (t != CONFIG_TYPE_STRING || !v) {
                        diag(l, false, line, "'%s' entries must be strings", key);
                        errors++;
                        continue;
                }
                if (names) {
                        uint32_t id = 0;
                        r = is_uid ? lookup_user(v, &id) : lookup_group(v, &id);
                        if (r < 0) {
                                const char *what = is_uid ? "user" : "group";
                                const char *why = r == -ENOENT ? "unknown" : "cannot resolve";
                                if (effect == DECISION_ALLOW)
                                        diag(l, true, line, "%s %s '%s' in an allow rule: this entry matches nobody",
                                             why, what, v);
                                else {
                                        diag(l, false, line,
                                             "%s %s '%s' in a deny rule: refusing a policy that could deny less than "
                                             "written",
                                             why, what, v);
                                        errors++;
                                }
                                continue;
                        }
                        range = (IdRange){ id, id };
                } else {
                        r = parse_id_range(v, &range);
                        if (r == -ERANGE) {
                                diag(l, false, line, "'%s' entry '%s': id out of range (0..4294967294)", key, v);
                                errors++;
                                continue;
                        }
                        if (r == -EDOM) {
                                diag(l, false, line, "'%s' entry '%s': reversed range", key, v);
                                errors++;
                                continue;
                        }
                        if (r < 0) {
                                diag(l, false, line,
                                     "'%s' entry '%s': not a decimal id or range (digits only, e.g. \"1000\" or "
                                     "\"1000-1999\")",
                                     key, v);
                                errors++;
                                continue;
                        }
                }
                r = is_uid ? push_range(&l->uids, &l->n_uids, &l->cap_uids, range)
                           : push_range(&l->gids, &l->n_gids, &l->cap_gids, range);
                if (r < 0) {
                        diag(l, false, line, "out of memory");
                        return -1;
                }
                n++;
        }
        if (errors > 0)
                return -1;
        /* An entry list that only holds unresolvable names still counts as
         * given: it matches nobody, which is what the admin will be warned of. */
        return config_setting_length(s);
}

static int parse_effect(const config_setting_t *s, Decision *ret) {
        const char *v = config_setting_get_string(s);
        if (!v)
                return -EINVAL;
        if (strcmp(v, "allow") == 0)
                *ret = DECISION_ALLOW;
        else if (strcmp(v, "deny") == 0)
                *ret = DECISION_DENY;
        else
                return -EINVAL;
        return 0;
}

static void load_rule(Loader *l, const config_setting_t *rule) {
        static const char *const subject_keys[] = { "users", "groups", "uids", "gids" };
        const config_setting_t *action = NULL, *effect = NULL, *anyone = NULL;
        int line = line_of(rule), errors = 0, entries = 0;
        Decision eff = DECISION_DENY;

        if (config_setting_type(rule) != CONFIG_TYPE_GROUP) {
                diag(l, false, line, "each rule must be a group: { action = \"...\"; effect = \"...\"; ... }");
                return;
        }
        l->n_uids = l->n_gids = 0;

        for (int i = 0; i < config_setting_length(rule); i++) {
                const config_setting_t *s = config_setting_get_elem(rule, (unsigned) i);
                const char *name = config_setting_name(s);
                bool known = false;

                if (strcmp(name, "action") == 0)
                        action = s, known = true;
                else if (strcmp(name, "effect") == 0)
                        effect = s, known = true;
                else if (strcmp(name, "anyone") == 0)
                        anyone = s, known = true;
                for (size_t k = 0; k < ELEMENTSOF(subject_keys); k++)
                        known = known || strcmp(name, subject_keys[k]) == 0;
                if (!known) {
                        diag(l, false, line_of(s),
                             "unknown key '%s' in rule (expected action, effect, users, groups, uids, gids, anyone)",
                             name);
                        errors++;
                }
        }

        if (!action) {
                diag(l, false, line, "rule has no 'action'");
                errors++;
        } else {
                const char *a = config_setting_get_string(action);
                if (!a) {
                        diag(l, false, line_of(action), "'action' must be a string");
                        errors++;
                } else if (!action_valid(a, strlen(a), true)) {
                        diag(l, false, line_of(action),
                             "bad action '%s': use 1-255 characters of A-Z a-z 0-9 . _ : / - and '*' as wildcard", a);
                        errors++;
                }
        }
        if (!effect) {
                diag(l, false, line, "rule has no 'effect' (\"allow\" or \"deny\")");
                errors++;
        } else if (parse_effect(effect, &eff) < 0) {
                diag(l, false, line_of(effect), "'effect' must be \"allow\" or \"deny\"");
                errors++;
        }

        bool any = false;
        if (anyone) {
                if (config_setting_type(anyone) != CONFIG_TYPE_BOOL) {
                        diag(l, false, line_of(anyone), "'anyone' must be true or false");
                        errors++;
                } else
                        any = config_setting_get_bool(anyone);
        }
        /* Subjects are only resolved once the effect is known: an unknown name
         * is a warning in an allow rule but an error in a deny rule. */
        for (size_t k = 0; k < ELEMENTSOF(subject_keys); k++) {
                const config_setting_t *s = config_setting_get_member(rule, subject_keys[k]);
                if (!s)
                        continue;
                int r = load_subject(l, s, subject_keys[k], effect && errors == 0 ? eff : DECISION_DENY);
                if (r < 0)
                        errors++;
                else
                        entries += r;
        }
        if (!any && entries == 0 && errors == 0) {
                diag(l, false, line,
                     "rule has no subject: give at least one non-empty users, groups, uids or gids, or anyone = true");
                errors++;
        }
        if (errors > 0)
                return;

        RuleSpec spec = {
                .action = config_setting_get_string(action),
                .effect = eff,
                .anyone = any,
                .uids = l->uids,
                .n_uids = l->n_uids,
                .gids = l->gids,
                .n_gids = l->n_gids,
                .line = (unsigned) (line > 0 ? line : 0),
        };
        if (policy_builder_add_rule(l->b, &spec) < 0)
                diag(l, false, line, "out of memory");
}

static void load_root(Loader *l, config_t *cfg) {
        const config_setting_t *root = config_root_setting(cfg);
        const config_setting_t *rules = NULL;

        for (int i = 0; i < config_setting_length(root); i++) {
                const config_setting_t *s = config_setting_get_elem(root, (unsigned) i);
                const char *name = config_setting_name(s);

                if (strcmp(name, "default") == 0) {
                        Decision d;
                        if (parse_effect(s, &d) < 0)
                                diag(l, false, line_of(s), "'default' must be \"allow\" or \"deny\"");
                        else
                                policy_builder_set_default(l->b, d);
                } else if (strcmp(name, "rules") == 0)
                        rules = s;
                else
                        diag(l, false, line_of(s), "unknown setting '%s' (expected default, rules)", name);
        }

        if (!rules) {
                diag(l, false, 0, "missing 'rules' (write rules = ( ... ); even when empty)");
                return;
        }
        if (!is_list(rules)) {
                diag(l, false, line_of(rules), "'rules' must be a list: rules = ( { ... }, ... );");
                return;
        }
        if (config_setting_length(rules) == 0)
                diag(l, true, line_of(rules), "'rules' is empty: every request gets the default");
        for (int i = 0; i < config_setting_length(rules); i++)
                load_rule(l, config_setting_get_elem(rules, (unsigned) i));
}

/*
 * libconfig joins adjacent string literals, so a missing comma turns
 * ["1000" "1001"] into the single id "10001001" and a deny rule would deny
 * less than it says. Its API cannot tell; scan the text for a string that
 * follows another with only blanks or comments between them.
 * Return: the line of the first such pair, or 0.
 */
static int find_joined_strings(const char *p) {
        bool after_string = false;
        int line = 1;

        while (*p) {
                if (*p == '\n') {
                        line++;
                        p++;
                } else if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\f') {
                        p++;
                } else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
                        p += strcspn(p, "\n");
                } else if (p[0] == '/' && p[1] == '*') {
                        const char *end = strstr(p + 2, "*/");
                        const char *stop = end ? end + 2 : p + strlen(p);
                        for (; p < stop; p++)
                                line += *p == '\n';
                } else if (*p == '"') {
                        if (after_string)
                                return line;
                        for (p++; *p && *p != '"'; p++) {
                                if (*p == '\\' && p[1])
                                        p++;
                                line += *p == '\n';
                        }
                        if (*p)
                                p++;
                        after_string = true;
                } else {
                        after_string = false;
                        p++;
                }
        }
        return 0;
}

/*
 * Read the whole file: it must be a regular file (libconfig's scanner exits
 * the process on a directory) and must not use @include, which would pull in
 * rules from a file nobody checked. libconfig only honours @include at the
 * start of a line, so that is where we look.
 */
static int read_policy_file(Loader *l, char **ret) {
        _cleanup_close_ int fd = open(l->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        _cleanup_free_ char *text = NULL;
        struct stat st;
        size_t n = 0;

        if (fd < 0 || fstat(fd, &st) < 0) {
                diag(l, false, 0, "cannot open: %s", strerror(errno));
                return -EINVAL;
        }
        if (!S_ISREG(st.st_mode)) {
                diag(l, false, 0, "not a regular file");
                return -EINVAL;
        }
        if ((uint64_t) st.st_size > POLICY_FILE_MAX) {
                diag(l, false, 0, "file too large (more than %u MiB)", POLICY_FILE_MAX >> 20);
                return -EINVAL;
        }
        size_t cap = (size_t) st.st_size + 1;
        if (!(text = malloc(cap)))
                return -ENOMEM;
        for (;;) {
                if (n + 1 == cap) {
                        if (cap > POLICY_FILE_MAX) {
                                diag(l, false, 0, "file too large (more than %u MiB)", POLICY_FILE_MAX >> 20);
                                return -EINVAL;
                        }
                        char *m = realloc(text, cap * 2);
                        if (!m)
                                return -ENOMEM;
                        text = m;
                        cap *= 2;
                }
                ssize_t k = read(fd, text + n, cap - n - 1);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        diag(l, false, 0, "cannot read: %s", strerror(errno));
                        return -EINVAL;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        text[n] = '\0';
        if (memchr(text, '\0', n)) {
                diag(l, false, 0, "file contains a NUL byte");
                return -EINVAL;
        }

        int line = 1, errors = 0;
        for (const char *p = text; p; line++) {
                const char *q = p + strspn(p, " \t");
                if (strncmp(q, "@include", 8) == 0) {
                        diag(l, false, line, "@include is not supported: keep every rule in this file");
                        errors++;
                }
                p = strchr(p, '\n');
                if (p)
                        p++;
        }
        line = find_joined_strings(text);
        if (line > 0) {
                diag(l, false, line, "two strings in a row: libconfig would join them into one; add a comma");
                errors++;
        }
        if (errors > 0)
                return -EINVAL;
        *ret = TAKE_PTR(text);
        return 0;
}

int policy_load(const char *path, Diags *diags, Policy **ret_policy) {
        _cleanup_(policy_builder_freep) PolicyBuilder *b = policy_builder_new();
        Loader l = { .path = path, .diags = diags, .b = b };
        size_t errors_before = diags->n_errors;
        _cleanup_free_ char *text = NULL;
        config_t cfg;
        int r;

        if (!b)
                return -ENOMEM;
        config_init(&cfg);

        if (policy_builder_add_file(b, path) < 0) {
                r = -ENOMEM;
                goto out;
        }

        r = read_policy_file(&l, &text);
        if (r < 0)
                goto out;
        r = config_read_string(&cfg, text);
        if (r != CONFIG_TRUE) {
                diag(&l, false, config_error_line(&cfg), "%s",
                     config_error_text(&cfg) ? config_error_text(&cfg) : "parse error");
                r = -EINVAL;
                goto out;
        }

        load_root(&l, &cfg);
        if (diags->n_errors > errors_before) {
                r = -EINVAL;
                goto out;
        }
        r = policy_builder_finish(TAKE_PTR(b), ret_policy);

out:
        config_destroy(&cfg);
        free(l.uids);
        free(l.gids);
        /* libconfig's tree of a large policy is many times the size of the
         * compiled one; hand the freed memory back to the system. */
        malloc_trim(0);
        return r;
}
