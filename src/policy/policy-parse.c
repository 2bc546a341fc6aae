/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Policy parser: one policy file's text (libconfig syntax) to rules and
 * settings. Validates every setting, resolves user and group names and feeds
 * the rules to the PolicyBuilder.
 *
 * It reports every problem it finds (not just the first) as "FILE:LINE:
 * message". Two rules keep a typo from ever widening access: ids must be
 * quoted strings (libconfig silently wraps an overflowing integer,
 * "4294967296" would read as 0 = root), and a name that cannot be resolved in
 * a deny rule is an error, not a warning.
 */
#include <errno.h>
#include <grp.h>
#include <libconfig.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "action.h"
#include "ids.h"
#include "macro.h"
#include "policy-parse.h"


typedef struct Loader {
        const char *path;
        Diags *diags;
        PolicyBuilder *b;
        IdRange *uids, *gids;
        size_t n_uids, n_gids, cap_uids, cap_gids;
        size_t n_rules;
        const char *granting; /* what an unresolved name is in, when not an allow rule */
} Loader;

#define diag(l, warning, line, ...) diags_add((l)->diags, warning, (l)->path, line, __VA_ARGS__)

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

static int parse_id_range(const char *s, IdRange *ret) {
        const char *dash = strchr(s, '-');
        uint32_t lo, hi;
        int r;

        if (!dash) {
                r = id_parse(s, strlen(s), &lo);
                hi = lo;
        } else {
                r = id_parse(s, (size_t) (dash - s), &lo);
                if (r >= 0)
                        r = id_parse(dash + 1, strlen(dash + 1), &hi);
        }
        if (r < 0)
                return r;
        if (lo > hi)
                return -EDOM;
        *ret = (IdRange){ lo, hi };
        return 0;
}

static int lookup_user(const char *name, uint32_t *ret) {
        _cleanup_free_ char *buf = NULL;
        struct passwd pw;
        int r = id_get_passwd(name, 0, &pw, &buf);
        if (r < 0)
                return r;
        if ((uint32_t) pw.pw_uid > ID_MAX)
                return -ERANGE;
        *ret = (uint32_t) pw.pw_uid;
        return 0;
}

static int lookup_group(const char *name, uint32_t *ret) {
        _cleanup_free_ char *buf = NULL;
        struct group gr;
        int r = id_get_group(name, 0, &gr, &buf);
        if (r < 0)
                return r;
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
                                        diag(l, true, line, "%s %s '%s' in %s: this entry matches nobody", why,
                                             what, v, l->granting ? l->granting : "an allow rule");
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
        const config_setting_t *action = NULL, *effect = NULL, *anyone = NULL, *id = NULL, *message = NULL,
                               *console = NULL, *seat = NULL;
        const char *id_text = NULL, *message_text = NULL, *seat_text = NULL;
        ConsoleLevel level = CONSOLE_NONE;
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
                else if (strcmp(name, "id") == 0)
                        id = s, known = true;
                else if (strcmp(name, "message") == 0)
                        message = s, known = true;
                else if (strcmp(name, "console") == 0)
                        console = s, known = true;
                else if (strcmp(name, "seat") == 0)
                        seat = s, known = true;
                for (size_t k = 0; k < ELEMENTSOF(subject_keys); k++)
                        known = known || strcmp(name, subject_keys[k]) == 0;
                if (!known) {
                        diag(l, false, line_of(s),
                             "unknown key '%s' in rule (expected id, action, effect, users, groups, uids, gids, anyone, "
                             "console, seat, message)",
                             name);
                        errors++;
                }
        }

        if (!action) {
                diag(l, false, line, "rule has no 'action'");
                errors++;
        } else {
                const char *a = config_setting_get_string(action), *why;
                if (!a) {
                        diag(l, false, line_of(action), "'action' must be a string");
                        errors++;
                } else if (policy_action_check(a, &why) < 0) {
                        diag(l, false, line_of(action), "bad action '%s': %s", a, why);
                        errors++;
                }
        }
        if (message) {
                message_text = config_setting_get_string(message);
                if (!policy_message_valid(message_text)) {
                        diag(l, false, line_of(message),
                             "bad message: use 1-%d printable ASCII characters (no newline, tab or other control "
                             "character, nothing beyond ASCII); every local user can read it",
                             POLICY_MESSAGE_MAX);
                        errors++;
                        message_text = NULL;
                }
        }
        if (id) {
                const char *file;
                unsigned other;
                id_text = config_setting_get_string(id);
                if (!id_text || !action_valid(id_text, strlen(id_text), false)) {
                        diag(l, false, line_of(id),
                             "bad rule id%s%s%s: use 1-255 characters of A-Z a-z 0-9 . _ : / - (no '*')",
                             id_text ? " '" : "", id_text ? id_text : "", id_text ? "'" : "");
                        errors++;
                        id_text = NULL;
                } else if (policy_builder_find_id(l->b, id_text, &file, &other)) {
                        diag(l, false, line_of(id), "duplicate rule id '%s': also the rule at %s:%u", id_text, file,
                             other);
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
        if (console) {
                const char *c = config_setting_get_string(console);
                if (!c || console_level_from_name(c, &level) < 0 || level == CONSOLE_NONE) {
                        diag(l, false, line_of(console), "'console' must be \"active\" or \"present\"");
                        errors++;
                        level = CONSOLE_NONE;
                } else if (any && effect && eff == DECISION_ALLOW) {
                        /* A display manager's greeter and a lock screen run as users with
                         * sessions on the seat too: "whoever sits there" is not a subject. */
                        diag(l, false, line_of(console),
                             "an allow rule with 'console' must name whom it allows, not anyone = true: greeter "
                             "and lock-screen sessions sit on seats too (for ordinary users, for example, "
                             "uids = [\"1000-59999\"])");
                        errors++;
                }
        }
        if (seat) {
                seat_text = config_setting_get_string(seat);
                if (!seat_text || !policy_seat_valid(seat_text)) {
                        diag(l, false, line_of(seat),
                             "bad seat: a logind seat name is \"seat\" and 1-%d of A-Z a-z 0-9 - _ (such as "
                             "\"seat0\")",
                             POLICY_SEAT_MAX - 4);
                        errors++;
                } else if (!console) {
                        diag(l, false, line_of(seat), "'seat' needs 'console' (\"active\" or \"present\")");
                        errors++;
                }
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
                .id = id_text,
                .message = message_text,
                .console = level,
                .seat = seat_text,
        };
        if (policy_builder_add_rule(l->b, &spec) < 0)
                diag(l, false, line, "out of memory");
        else
                l->n_rules++;
}

static const struct {
        const char *name;
        int64_t min, max;
        size_t offset;
} int_settings[] = {
        { "request_timeout", 1, SETTING_TIMEOUT_MAX, offsetof(Settings, request_timeout) },
        { "max_connections", 1, SETTING_CONNECTIONS_MAX, offsetof(Settings, max_connections) },
        { "max_connections_per_uid", 1, SETTING_CONNECTIONS_MAX, offsetof(Settings, max_connections_per_uid) },
        { "idle_exit", 0, SETTING_IDLE_EXIT_MAX, offsetof(Settings, idle_exit) },
};

void settings_apply_override(Settings *st, const SettingsOverride *o) {
        if (o->request_timeout)
                st->request_timeout = o->v.request_timeout;
        if (o->max_connections)
                st->max_connections = o->v.max_connections;
        if (o->max_connections_per_uid)
                st->max_connections_per_uid = o->v.max_connections_per_uid;
        if (o->idle_exit)
                st->idle_exit = o->v.idle_exit;
        if (o->log)
                st->log = o->v.log;
}

int settings_parse_audit(const char *s, AuditLevel *ret) {
        if (strcmp(s, "none") == 0)
                *ret = AUDIT_NONE;
        else if (strcmp(s, "deny") == 0)
                *ret = AUDIT_DENY;
        else if (strcmp(s, "all") == 0)
                *ret = AUDIT_ALL;
        else
                return -EINVAL;
        return 0;
}

const char *settings_audit_name(AuditLevel a) {
        switch (a) {
        case AUDIT_NONE:
                return "none";
        case AUDIT_DENY:
                return "deny";
        case AUDIT_ALL:
                return "all";
        }
        return "deny";
}

/*
 * brokers = { users = [...]; groups = [...]; uids = [...]; gids = [...];
 * anyone = false; }: who may pass descriptors. A grant like an allow rule,
 * so an unknown name is a warning and matches nobody; an empty group names
 * no broker at all.
 */
static void load_brokers(Loader *l, const config_setting_t *g) {
        static const char *const keys[] = { "users", "groups", "uids", "gids" };
        bool anyone = false;
        int errors = 0;

        if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
                diag(l, false, line_of(g), "'brokers' must be a group: brokers = { users = [\"root\"]; };");
                return;
        }
        l->n_uids = l->n_gids = 0;
        l->granting = "'brokers'";
        for (int i = 0; i < config_setting_length(g); i++) {
                const config_setting_t *s = config_setting_get_elem(g, (unsigned) i);
                const char *name = config_setting_name(s);
                bool known = false;

                for (size_t k = 0; k < ELEMENTSOF(keys); k++)
                        if (strcmp(name, keys[k]) == 0) {
                                known = true;
                                if (load_subject(l, s, name, DECISION_ALLOW) < 0)
                                        errors++;
                        }
                if (strcmp(name, "anyone") == 0) {
                        known = true;
                        if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
                                diag(l, false, line_of(s), "'anyone' must be true or false");
                                errors++;
                        } else
                                anyone = config_setting_get_bool(s);
                }
                if (!known) {
                        diag(l, false, line_of(s),
                             "unknown key '%s' in 'brokers' (expected users, groups, uids, gids, anyone)", name);
                        errors++;
                }
        }
        l->granting = NULL;
        if (errors > 0)
                return;
        if (anyone)
                diag(l, true, line_of(g),
                     "'brokers': anyone = true lets every local user pass descriptors to the daemon; one that "
                     "passes a file whose close() never returns can stall its closing thread (credgate.conf(5))");
        if (policy_builder_set_brokers(l->b, anyone, l->uids, l->n_uids, l->gids, l->n_gids) < 0)
                diag(l, false, line_of(g), "out of memory");
}

/* settings = { request_timeout = 10; ... }: every value range-checked, since
 * libconfig wraps overflowing integers (4294967296 reads as 0). */
static void load_settings(Loader *l, const config_setting_t *g, Settings *st) {
        if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
                diag(l, false, line_of(g), "'settings' must be a group: settings = { request_timeout = 10; };");
                return;
        }
        for (int i = 0; i < config_setting_length(g); i++) {
                const config_setting_t *s = config_setting_get_elem(g, (unsigned) i);
                const char *name = config_setting_name(s);
                bool known = false;

                if (strcmp(name, "brokers") == 0) {
                        load_brokers(l, s);
                        continue;
                }
                if (strcmp(name, "log") == 0) {
                        const char *v = config_setting_get_string(s);
                        if (!v || settings_parse_audit(v, &st->log) < 0)
                                diag(l, false, line_of(s), "'log' must be \"none\", \"deny\" or \"all\"");
                        continue;
                }
                if (strcmp(name, "rule_stats") == 0) {
                        if (config_setting_type(s) != CONFIG_TYPE_BOOL)
                                diag(l, false, line_of(s), "'rule_stats' must be true or false");
                        else
                                st->rule_stats = config_setting_get_bool(s);
                        continue;
                }
                for (size_t k = 0; k < ELEMENTSOF(int_settings); k++) {
                        if (strcmp(name, int_settings[k].name) != 0)
                                continue;
                        known = true;
                        int t = config_setting_type(s);
                        long long v = config_setting_get_int64(s);
                        if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
                                diag(l, false, line_of(s), "'%s' must be an integer", name);
                        else if (v < int_settings[k].min || v > int_settings[k].max)
                                diag(l, false, line_of(s), "'%s' must be %lld..%lld (got %lld)", name,
                                     (long long) int_settings[k].min, (long long) int_settings[k].max, v);
                        else
                                *(uint64_t *) ((char *) st + int_settings[k].offset) = (uint64_t) v;
                }
                if (!known)
                        diag(l, false, line_of(s),
                             "unknown setting '%s' (expected request_timeout, max_connections, "
                             "max_connections_per_uid, idle_exit, log, rule_stats, brokers)",
                             name);
        }
        if (st->max_connections_per_uid > st->max_connections)
                diag(l, true, line_of(g), "max_connections_per_uid (%llu) is above max_connections (%llu)",
                     (unsigned long long) st->max_connections_per_uid, (unsigned long long) st->max_connections);
}

static void load_root(Loader *l, config_t *cfg, bool main_file, Settings *settings) {
        const config_setting_t *root = config_root_setting(cfg);
        const config_setting_t *rules = NULL;

        for (int i = 0; i < config_setting_length(root); i++) {
                const config_setting_t *s = config_setting_get_elem(root, (unsigned) i);
                const char *name = config_setting_name(s);

                if (strcmp(name, "rules") == 0)
                        rules = s;
                else if (!main_file)
                        diag(l, false, line_of(s), "unknown setting '%s' (a drop-in file holds only rules)", name);
                else if (strcmp(name, "default") == 0) {
                        Decision d;
                        if (parse_effect(s, &d) < 0)
                                diag(l, false, line_of(s), "'default' must be \"allow\" or \"deny\"");
                        else
                                policy_builder_set_default(l->b, d);
                } else if (strcmp(name, "settings") == 0) {
                        if (settings)
                                load_settings(l, s, settings);
                } else
                        diag(l, false, line_of(s), "unknown setting '%s' (expected default, rules, settings)", name);
        }

        if (!rules) {
                diag(l, false, 0, "missing 'rules' (write rules = ( ... ); even when empty)");
                return;
        }
        if (!is_list(rules)) {
                diag(l, false, line_of(rules), "'rules' must be a list: rules = ( { ... }, ... );");
                return;
        }
        if (config_setting_length(rules) == 0 && main_file)
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

int policy_parse(PolicyBuilder *b, Diags *diags, const char *path, const char *text, bool main_file,
                 Settings *settings, size_t *ret_n_rules) {
        Loader l = { .path = path, .diags = diags, .b = b };
        size_t errors_before = diags->n_errors;
        config_t cfg;
        int r = 0;

        /* libconfig only honours @include at the start of a line. */
        int line = 1;
        for (const char *p = text; p; line++) {
                const char *q = p + strspn(p, " \t");
                if (strncmp(q, "@include", 8) == 0)
                        diag(&l, false, line, "@include is not supported: keep every rule in this file");
                p = strchr(p, '\n');
                if (p)
                        p++;
        }
        line = find_joined_strings(text);
        if (line > 0)
                diag(&l, false, line, "two strings in a row: libconfig would join them into one; add a comma");
        if (diags->n_errors > errors_before)
                return -EINVAL;

        if (policy_builder_add_file(b, path) < 0)
                return -ENOMEM;
        config_init(&cfg);
        if (config_read_string(&cfg, text) != CONFIG_TRUE) {
                diag(&l, false, config_error_line(&cfg), "%s",
                     config_error_text(&cfg) ? config_error_text(&cfg) : "parse error");
                r = -EINVAL;
        } else {
                load_root(&l, &cfg, main_file, settings);
                if (diags->n_errors > errors_before)
                        r = -EINVAL;
        }
        config_destroy(&cfg);
        free(l.uids);
        free(l.gids);
        if (ret_n_rules)
                *ret_n_rules = l.n_rules;
        return r;
}
