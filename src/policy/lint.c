/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Policy lint, for credgated -t and credgate test: warnings an admin can act
 * on, and only ones that are true. A rule is reported as shadowed only when
 * an earlier rule provably matches every request it matches (see
 * policy_find_shadowed()); an id range is reported as stale only when the
 * host's user and group databases can be listed completely, so that "no
 * such user" is a fact and not a guess about a directory service.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ids.h"
#include "lint.h"
#include "macro.h"

void known_ids_done(KnownIds *k) {
        if (!k)
                return;
        free(k->uids);
        free(k->gids);
        *k = (KnownIds){};
}

/*
 * The sources of database @db in @nsswitch, as one string, into @buf.
 * Return: true when they are all sources that list completely.
 */
static bool sources_complete(const char *nsswitch, const char *db, char *buf, size_t size) {
        _cleanup_fclose_ FILE *f = fopen(nsswitch, "re");
        _cleanup_free_ char *line = NULL;
        size_t cap = 0, n = strlen(db);
        bool complete = true;

        snprintf(buf, size, "files");
        if (!f)
                return true; /* glibc's default without the file */
        while (getline(&line, &cap, f) >= 0) {
                char *p = line + strspn(line, " \t");
                if (strncmp(p, db, n) != 0 || p[n] != ':')
                        continue;
                buf[0] = '\0';
                p += n + 1;
                p[strcspn(p, "#\n")] = '\0';
                for (char *save = NULL, *tok = strtok_r(p, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
                        if (tok[0] == '[') /* an action such as [NOTFOUND=return] */
                                continue;
                        if (strcmp(tok, "files") != 0 && strcmp(tok, "systemd") != 0)
                                complete = false;
                        size_t used = strlen(buf);
                        snprintf(buf + used, size - used, "%s%s", used ? " " : "", tok);
                }
                return complete && buf[0] != '\0';
        }
        return true;
}

static int push_id(uint32_t **v, size_t *n, size_t *cap, uint32_t id) {
        if (*n == *cap) {
                size_t c = *cap ? *cap * 2 : 256;
                uint32_t *m = reallocarray(*v, c, sizeof(uint32_t));
                if (!m)
                        return -ENOMEM;
                *v = m;
                *cap = c;
        }
        (*v)[(*n)++] = id;
        return 0;
}

static int cmp_u32(const void *a, const void *b) {
        uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
        return x < y ? -1 : x > y;
}

static size_t sort_unique(uint32_t *v, size_t n) {
        size_t k = 0;
        if (n > 0)
                qsort(v, n, sizeof(uint32_t), cmp_u32);
        for (size_t i = 0; i < n; i++)
                if (k == 0 || v[i] != v[k - 1])
                        v[k++] = v[i];
        return k;
}

int known_ids_load(const char *nsswitch, KnownIds *ret) {
        KnownIds k = {};
        size_t cap_u = 0, cap_g = 0;
        int r = 0;

        k.complete_uids = sources_complete(nsswitch, "passwd", k.passwd_sources, sizeof(k.passwd_sources));
        k.complete_gids = k.complete_uids &&
                          sources_complete(nsswitch, "group", k.group_sources, sizeof(k.group_sources));
        if (k.complete_uids) {
                struct passwd *pw;
                setpwent();
                while (r == 0 && (pw = getpwent()))
                        if ((r = push_id(&k.uids, &k.n_uids, &cap_u, (uint32_t) pw->pw_uid)) == 0)
                                r = push_id(&k.gids, &k.n_gids, &cap_g, (uint32_t) pw->pw_gid);
                endpwent();
        }
        if (r == 0 && k.complete_gids) {
                struct group *gr;
                setgrent();
                while (r == 0 && (gr = getgrent()))
                        r = push_id(&k.gids, &k.n_gids, &cap_g, (uint32_t) gr->gr_gid);
                endgrent();
        }
        if (r < 0) {
                known_ids_done(&k);
                return r;
        }
        k.n_uids = sort_unique(k.uids, k.n_uids);
        k.n_gids = sort_unique(k.gids, k.n_gids);
        *ret = k;
        return 0;
}

/* Is some id of the sorted @v in lo..hi? */
static bool any_in(const uint32_t *v, size_t n, uint32_t lo, uint32_t hi) {
        size_t a = 0, b = n;
        while (a < b) {
                size_t mid = a + (b - a) / 2;
                if (v[mid] < lo)
                        a = mid + 1;
                else
                        b = mid;
        }
        return a < n && v[a] <= hi;
}

/* "FILE:LINE" or "FILE:LINE (id)" of rule @i. */
static const char *rule_name(const Policy *p, size_t i, char *buf, size_t size) {
        RuleInfo r;
        if (!policy_rule_info(p, i, &r))
                return "?";
        snprintf(buf, size, "%s:%u%s%s%s", r.file, r.line, r.id ? " (" : "", r.id ? r.id : "", r.id ? ")" : "");
        return buf;
}

static void warn_shadowed(Diags *d, const Policy *p, size_t rule, size_t by) {
        char name[4096];
        RuleInfo a, b;

        if (!policy_rule_info(p, rule, &b) || !policy_rule_info(p, by, &a))
                return;
        rule_name(p, by, name, sizeof(name));
        if (a.effect == b.effect)
                diags_add(d, true, b.file, (int) b.line,
                          "%s%s%s can never decide: the rule at %s comes first and matches every request this "
                          "one matches; both %s, so this one is redundant",
                          b.id ? "rule '" : "", b.id ? b.id : "this rule", b.id ? "'" : "", name,
                          a.effect == DECISION_ALLOW ? "allow" : "deny");
        else
                diags_add(d, true, b.file, (int) b.line,
                          "%s%s%s can never decide: the rule at %s comes first and matches every request this "
                          "one matches; it %s what this one would %s, which is probably a mistake (move this rule "
                          "above it, or narrow that one)",
                          b.id ? "rule '" : "", b.id ? b.id : "this rule", b.id ? "'" : "", name,
                          a.effect == DECISION_ALLOW ? "allows" : "denies",
                          b.effect == DECISION_ALLOW ? "allow" : "deny");
}

static int note_shadowed(const Policy *p, size_t rule, size_t by, void *userdata) {
        (void) p;
        ((uint32_t *) userdata)[rule] = (uint32_t) by;
        return 0;
}

static void warn_ranges(Diags *d, const RuleInfo *r, const IdRange *v, size_t n, const uint32_t *known,
                        size_t n_known, const char *what, const char *db, const char *sources) {
        for (size_t k = 0; k < n; k++) {
                if (any_in(known, n_known, v[k].lo, v[k].hi))
                        continue;
                if (v[k].lo == v[k].hi)
                        diags_add(d, true, r->file, (int) r->line,
                                  "%s%s%s%s%u: no %s on this host has it (%s: %s); a stale entry?", r->id ? "rule '" : "",
                                  r->id ? r->id : "", r->id ? "': " : "", what[0] == 'u' ? "uid " : "gid ", v[k].lo,
                                  what, db, sources);
                else
                        diags_add(d, true, r->file, (int) r->line,
                                  "%s%s%s%s%u-%u: no %s on this host has an id in it (%s: %s); a stale entry?",
                                  r->id ? "rule '" : "", r->id ? r->id : "", r->id ? "': " : "",
                                  what[0] == 'u' ? "uids " : "gids ", v[k].lo, v[k].hi, what, db, sources);
        }
}

int policy_lint(const Policy *p, const KnownIds *known, Diags *diags) {
        size_t n = policy_n_rules(p);
        _cleanup_free_ uint32_t *shadowed_by = n > 0 ? malloc(n * sizeof(uint32_t)) : NULL;

        if (n > 0 && !shadowed_by)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                shadowed_by[i] = UINT32_MAX;
        (void) policy_find_shadowed(p, LINT_CHAIN_BUDGET, note_shadowed, shadowed_by);

        for (size_t i = 0; i < n; i++) {
                RuleInfo r;
                if (!policy_rule_info(p, i, &r))
                        break;
                if (known && known->complete_uids)
                        warn_ranges(diags, &r, r.uids, r.n_uids, known->uids, known->n_uids, "user", "passwd",
                                    known->passwd_sources);
                if (known && known->complete_gids)
                        warn_ranges(diags, &r, r.gids, r.n_gids, known->gids, known->n_gids, "group", "group",
                                    known->group_sources);
                if (shadowed_by[i] != UINT32_MAX)
                        warn_shadowed(diags, p, i, shadowed_by[i]);
        }
        return 0;
}
