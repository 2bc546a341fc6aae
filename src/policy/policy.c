/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The compiled policy: an immutable, reference-counted array of rules in
 * evaluation order, plus two hash indexes so that a check never walks
 * unrelated rules:
 *
 *   - exact actions: action name -> chain of the rules naming it;
 *   - patterns: each pattern is keyed by the longer of its literal prefix
 *     (the text before the first '*') and its literal suffix (the text after
 *     the last '*'), in a prefix and a suffix index. A lookup hashes only
 *     the prefix and suffix lengths that occur in the policy, so a check
 *     tries only the patterns that share the action's prefix or suffix;
 *     just patterns with neither (such as "*" or "*.x.*") are tried on
 *     every check.
 *
 * Chains are in ascending rule order, so the first match of each chain is
 * that chain's best candidate and the overall first match is the smallest of
 * them: first-match order stays exact across exact rules and patterns.
 *
 * An action with the placeholders {uid} or {gid} is indexed like a pattern,
 * by its literal text before the first and after the last wildcard or
 * placeholder, and matched by match_placeholders() against the identity's
 * own numbers: "org.example.home.{uid}" costs what "org.example.home.*" does.
 */
#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <search.h>
#include <stdlib.h>
#include <string.h>

#include "action.h"
#include "macro.h"
#include "policy.h"

#define NONE UINT32_MAX

typedef struct Rule {
        uint32_t action; /* offset into strings */
        uint32_t next;   /* next rule in the same index chain, or NONE */
        uint32_t ranges; /* offset into ranges: n_uids uid ranges, then n_gids gid ranges */
        uint32_t n_uids, n_gids;
        uint32_t file;
        uint32_t line;
        uint32_t id; /* offset into strings, or NONE */
        uint32_t message; /* offset into strings, or NONE */
        uint32_t match; /* compiled action with placeholders (PH_UID, PH_GID), or NONE */
        uint8_t effect : 1;
        uint8_t anyone : 1;
        uint8_t pattern : 2; /* 0: exact; PATTERN_PREFIX or PATTERN_SUFFIX: the key it is indexed by */
        uint8_t console : 2; /* a ConsoleLevel: CONSOLE_NONE for no condition */
        uint16_t seat; /* with console: 1 + index into Policy.seats, or 0 for any seat */
} Rule;

/* 44 bytes: memory per rule is a benchmark target (docs/performance.md). */
_Static_assert(sizeof(Rule) == 44, "a Rule grew");

enum { PATTERN_PREFIX = 1, PATTERN_SUFFIX = 2 };

/* Placeholders in a compiled action: bytes that no action holds. */
#define PH_UID '\001'
#define PH_GID '\002'
#define WILDCARDS "*\001\002"
#define LEN_WORDS ((ACTION_MAX + 64) / 64)

typedef struct Slot {
        uint32_t hash;
        uint32_t len;
        uint32_t key;  /* offset into strings */
        uint32_t head; /* first rule of the chain, NONE when the slot is empty */
} Slot;

typedef struct Index {
        Slot *slots;
        uint32_t mask;
        unsigned shift; /* slot = mix(hash) >> shift */
        /* A one-hash Bloom filter of the keys, 16 bits per key: a lookup of
         * a prefix or suffix length that holds no key of this action is one
         * bit test in a small array instead of a probe sequence in the
         * table. NULL for the exact index, which is probed once anyway. */
        uint64_t *filter;
        unsigned filter_shift; /* bit = mix2(hash) >> filter_shift */
} Index;

struct Policy {
        unsigned n_ref;
        Decision default_decision;
        Rule *rules;
        size_t n_rules;
        char *strings;
        IdRange *ranges;
        char **files;
        size_t n_files;
        char **seats; /* the seats console conditions name, each once */
        size_t n_seats;
        Index exact, prefix, suffix;
        Rule brokers; /* only its subject counts: who may pass descriptors (CHECK-PEER) */
        char revision[POLICY_REVISION_LEN + 1]; /* "none" unless the loader set it */
        uint64_t prefix_lens[LEN_WORDS]; /* bit L: some pattern is keyed by a prefix of length L */
        uint64_t suffix_lens[LEN_WORDS]; /* bit L: some pattern is keyed by a suffix of length L */
};

struct PolicyBuilder {
        Policy *p;
        size_t cap_rules, n_strings, cap_strings, n_ranges, cap_ranges;
        bool brokers_set;
        void *ids; /* tsearch() tree of IdEntry: ids taken so far */
};

typedef struct IdEntry {
        const char *id; /* points into the entry's own allocation */
        uint32_t rule;
} IdEntry;

static int cmp_id(const void *a, const void *b) {
        return strcmp(((const IdEntry *) a)->id, ((const IdEntry *) b)->id);
}

static int grow(void **v, size_t *cap, size_t need, size_t size) {
        if (need <= *cap)
                return 0;
        size_t n = *cap ? *cap : 16;
        while (n < need)
                n *= 2;
        void *m = reallocarray(*v, n, size);
        if (!m)
                return -ENOMEM;
        *v = m;
        *cap = n;
        return 0;
}

/*
 * Keys are hashed with a polynomial hash, h' = h * HASH_MUL + c + 1, so that
 * one pass over an action gives the hash of each of its prefixes and, by
 * subtraction, of each of its suffixes: H(s[k..n)) = H(s[0..n)) -
 * H(s[0..k)) * HASH_MUL^(n-k). Its low bits are weak, so slots are chosen
 * from its high bits after a multiplicative mix. The keys come from the
 * policy file, so a client cannot lengthen the probe sequences.
 */
#define HASH_MUL 0x01000193u
static uint32_t hash_step(uint32_t h, unsigned char c) {
        return h * HASH_MUL + c + 1u;
}
static uint32_t hash_pow[ACTION_MAX + 1]; /* HASH_MUL^L, filled by policy_builder_new() */

static void hash_pow_init(void) {
        hash_pow[0] = 1;
        for (size_t i = 1; i <= ACTION_MAX; i++)
                hash_pow[i] = hash_pow[i - 1] * HASH_MUL;
}

PolicyBuilder *policy_builder_new(void) {
        static pthread_once_t once = PTHREAD_ONCE_INIT;
        (void) pthread_once(&once, hash_pow_init);

        PolicyBuilder *b = calloc(1, sizeof(*b));
        if (!b)
                return NULL;
        b->p = calloc(1, sizeof(Policy));
        if (!b->p) {
                free(b);
                return NULL;
        }
        b->p->n_ref = 1;
        strcpy(b->p->revision, "none");
        return b;
}

static void policy_free(Policy *p) {
        if (!p)
                return;
        for (size_t i = 0; i < p->n_files; i++)
                free(p->files[i]);
        free(p->files);
        for (size_t i = 0; i < p->n_seats; i++)
                free(p->seats[i]);
        free(p->seats);
        free(p->rules);
        free(p->strings);
        free(p->ranges);
        free(p->exact.slots);
        free(p->prefix.slots);
        free(p->suffix.slots);
        free(p->prefix.filter);
        free(p->suffix.filter);
        free(p);
}

PolicyBuilder *policy_builder_free(PolicyBuilder *b) {
        if (!b)
                return NULL;
        tdestroy(b->ids, free);
        policy_free(b->p);
        free(b);
        return NULL;
}

int policy_builder_add_file(PolicyBuilder *b, const char *path) {
        Policy *p = b->p;
        char **f = reallocarray(p->files, p->n_files + 1, sizeof(char *));
        if (!f)
                return -ENOMEM;
        p->files = f;
        if (!(f[p->n_files] = strdup(path)))
                return -ENOMEM;
        p->n_files++;
        return 0;
}

void policy_builder_set_revision(PolicyBuilder *b, const char *hex) {
        if (hex && strlen(hex) == POLICY_REVISION_LEN && strspn(hex, "0123456789abcdef") == POLICY_REVISION_LEN)
                memcpy(b->p->revision, hex, POLICY_REVISION_LEN + 1);
}

const char *policy_revision(const Policy *p) {
        return p ? p->revision : "none";
}

void policy_builder_set_default(PolicyBuilder *b, Decision d) {
        b->p->default_decision = d == DECISION_ALLOW ? DECISION_ALLOW : DECISION_DENY;
}

static int cmp_range(const void *a, const void *b) {
        const IdRange *x = a, *y = b;
        return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Append @n ranges sorted and merged, so that lookups can bisect. */
static int add_ranges(PolicyBuilder *b, const IdRange *r, size_t n, uint32_t *ret_n) {
        if (n == 0) {
                *ret_n = 0;
                return 0;
        }
        if (n > UINT32_MAX - b->n_ranges || grow((void **) &b->p->ranges, &b->cap_ranges, b->n_ranges + n, sizeof(IdRange)) < 0)
                return -ENOMEM;
        IdRange *dst = b->p->ranges + b->n_ranges;
        memcpy(dst, r, n * sizeof(IdRange));
        qsort(dst, n, sizeof(IdRange), cmp_range);
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
                if (k > 0 && dst[i].lo <= dst[k - 1].hi + 1) { /* hi <= 4294967294: no overflow */
                        if (dst[i].hi > dst[k - 1].hi)
                                dst[k - 1].hi = dst[i].hi;
                } else
                        dst[k++] = dst[i];
        }
        b->n_ranges += k;
        *ret_n = (uint32_t) k;
        return 0;
}

int policy_builder_set_brokers(PolicyBuilder *b, bool anyone, const IdRange *uids, size_t n_uids,
                               const IdRange *gids, size_t n_gids) {
        Rule *r = &b->p->brokers;

        /* Set once: the ranges stay where they are appended. */
        if (b->brokers_set)
                return -EEXIST;
        *r = (Rule){ .next = NONE, .ranges = (uint32_t) b->n_ranges, .anyone = anyone, .effect = 1 };
        if (add_ranges(b, uids, n_uids, &r->n_uids) < 0 || add_ranges(b, gids, n_gids, &r->n_gids) < 0)
                return -ENOMEM;
        b->brokers_set = true;
        return 0;
}

bool policy_builder_find_id(const PolicyBuilder *b, const char *id, const char **ret_file, unsigned *ret_line) {
        IdEntry key = { .id = id };
        IdEntry **found = id ? tfind(&key, (void **) &b->ids, cmp_id) : NULL;
        if (!found)
                return false;
        const Rule *r = &b->p->rules[(*found)->rule];
        *ret_file = b->p->files[r->file];
        *ret_line = r->line;
        return true;
}

/* Take @id (of @len bytes) for rule @rule. Return: 0, -EEXIST, or -ENOMEM. */
static int take_id(PolicyBuilder *b, const char *id, size_t len, uint32_t rule) {
        IdEntry key = { .id = id };
        if (tfind(&key, &b->ids, cmp_id))
                return -EEXIST;
        IdEntry *e = malloc(sizeof(IdEntry) + len + 1);
        if (!e)
                return -ENOMEM;
        memcpy(e + 1, id, len + 1);
        *e = (IdEntry){ .id = (const char *) (e + 1), .rule = rule };
        IdEntry **ins = tsearch(e, &b->ids, cmp_id);
        if (!ins || *ins != e) {
                free(e);
                return -ENOMEM;
        }
        return 0;
}

bool policy_message_valid(const char *s) {
        size_t n = s ? strnlen(s, POLICY_MESSAGE_MAX + 1) : 0;
        if (n == 0 || n > POLICY_MESSAGE_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) s[i] < 0x20 || (unsigned char) s[i] > 0x7e)
                        return false;
        return true;
}

static const char *const console_names[] = {
        [CONSOLE_NONE] = "none",
        [CONSOLE_PRESENT] = "present",
        [CONSOLE_ACTIVE] = "active",
};

const char *console_level_name(ConsoleLevel l) {
        return (unsigned) l < ELEMENTSOF(console_names) ? console_names[l] : NULL;
}

int console_level_from_name(const char *s, ConsoleLevel *ret) {
        for (size_t i = 0; s && i < ELEMENTSOF(console_names); i++)
                if (strcmp(s, console_names[i]) == 0) {
                        *ret = (ConsoleLevel) i;
                        return 0;
                }
        return -EINVAL;
}

bool policy_seat_valid(const char *s) {
        size_t n = s ? strnlen(s, POLICY_SEAT_MAX + 1) : 0;
        if (n <= 4 || n > POLICY_SEAT_MAX || strncmp(s, "seat", 4) != 0)
                return false;
        return strspn(s + 4, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == n - 4;
}

/* The Rule.seat of @seat: 0 for NULL (any seat), else 1 + its index in p->seats, added when new.
 * Return: 0 and *ret, or -ENOMEM. */
static int seat_index(Policy *p, const char *seat, uint16_t *ret) {
        size_t i = 0;
        if (!seat) {
                *ret = 0;
                return 0;
        }
        while (i < p->n_seats && strcmp(p->seats[i], seat) != 0)
                i++;
        if (i == p->n_seats) {
                if (i >= UINT16_MAX)
                        return -ENOMEM;
                char **v = reallocarray(p->seats, i + 1, sizeof(char *));
                if (!v)
                        return -ENOMEM;
                p->seats = v;
                if (!(v[i] = strdup(seat)))
                        return -ENOMEM;
                p->n_seats++;
        }
        *ret = (uint16_t) (i + 1);
        return 0;
}

/* Compile @s (checked by policy_action_check()) into @out: placeholders to PH_UID and PH_GID. */
static size_t compile_action(const char *s, char *out) {
        size_t n = 0;
        for (size_t i = 0; s[i];) {
                if (s[i] == '{') {
                        out[n++] = s[i + 1] == 'u' ? PH_UID : PH_GID;
                        i += 5;
                } else
                        out[n++] = s[i++];
        }
        out[n] = '\0';
        return n;
}

int policy_action_check(const char *a, const char **ret_why) {
        size_t len = a ? strnlen(a, ACTION_MAX + 1) : 0;
        bool placeholders = false;
        char prev = '\0'; /* the previous token: a character, or 'P' for a placeholder */

        *ret_why = "use 1-255 characters of A-Z a-z 0-9 . _ : / - with '*' as wildcard and {uid} or {gid} as "
                   "placeholders";
        if (len == 0 || len > ACTION_MAX)
                return -EINVAL;
        for (size_t i = 0; i < len;) {
                bool ph = a[i] == '{';
                if (ph && strncmp(a + i, "{uid}", 5) != 0 && strncmp(a + i, "{gid}", 5) != 0) {
                        *ret_why = "the only placeholders are {uid} and {gid}";
                        return -EINVAL;
                }
                if (!ph && !(action_char_class[(unsigned char) a[i]] & (ACTION_CLASS_CHAR | ACTION_CLASS_STAR)))
                        return -EINVAL;
                char c = ph ? 'P' : a[i];
                bool touches = prev == 'P' ? (c == '*' || c == 'P' || (c >= '0' && c <= '9'))
                                           : c == 'P' && (prev == '*' || (prev >= '0' && prev <= '9'));
                if (touches) {
                        *ret_why = "a placeholder must not touch '*', a digit or another placeholder (where its "
                                   "number ends would be ambiguous): put a separator such as '.' between them";
                        return -EINVAL;
                }
                placeholders = placeholders || ph;
                prev = c;
                i += ph ? 5 : 1;
        }
        return placeholders ? 1 : 0;
}

int policy_builder_add_rule(PolicyBuilder *b, const RuleSpec *s) {
        Policy *p = b->p;
        size_t len = s->action ? strnlen(s->action, ACTION_MAX + 1) : 0;
        size_t id_len = s->id ? strnlen(s->id, ACTION_MAX + 1) : 0;
        size_t msg_len = s->message ? strlen(s->message) : 0;
        const char *why;
        int r0, ph = policy_action_check(s->action, &why);

        uint16_t seat;

        if (ph < 0 || p->n_files == 0 || (s->id && !action_valid(s->id, id_len, false)) ||
            (s->message && !policy_message_valid(s->message)))
                return -EINVAL;
        /* Greeters and lock screens sit on seats too: an allow on a console
         * condition must name whom it allows (see credgate.conf(5)). */
        if ((unsigned) s->console > CONSOLE_ACTIVE || (s->seat && (!s->console || !policy_seat_valid(s->seat))) ||
            (s->console && s->anyone && s->effect == DECISION_ALLOW))
                return -EINVAL;
        if (seat_index(p, s->seat, &seat) < 0)
                return -ENOMEM;
        size_t need = len + 1 + (s->id ? id_len + 1 : 0) + (s->message ? msg_len + 1 : 0) + (ph ? len + 1 : 0);
        if (p->n_rules >= NONE - 1 || b->n_strings + need > UINT32_MAX)
                return -ENOMEM;
        if (grow((void **) &p->rules, &b->cap_rules, p->n_rules + 1, sizeof(Rule)) < 0 ||
            grow((void **) &p->strings, &b->cap_strings, b->n_strings + need, 1) < 0)
                return -ENOMEM;
        if (s->id && (r0 = take_id(b, s->id, id_len, (uint32_t) p->n_rules)) < 0)
                return r0;

        Rule *r = &p->rules[p->n_rules];
        *r = (Rule){
                .action = (uint32_t) b->n_strings,
                .next = NONE,
                .ranges = (uint32_t) b->n_ranges,
                .file = (uint32_t) (p->n_files - 1),
                .line = s->line,
                .effect = s->effect == DECISION_ALLOW,
                .anyone = s->anyone,
                .pattern = ph || memchr(s->action, '*', len) != NULL,
                .console = s->console,
                .seat = seat,
                .id = NONE,
                .message = NONE,
                .match = NONE,
        };
        if (add_ranges(b, s->uids, s->n_uids, &r->n_uids) < 0 || add_ranges(b, s->gids, s->n_gids, &r->n_gids) < 0)
                return -ENOMEM;
        memcpy(p->strings + b->n_strings, s->action, len + 1);
        b->n_strings += len + 1;
        if (s->id) {
                r->id = (uint32_t) b->n_strings;
                memcpy(p->strings + b->n_strings, s->id, id_len + 1);
                b->n_strings += id_len + 1;
        }
        if (s->message) {
                r->message = (uint32_t) b->n_strings;
                memcpy(p->strings + b->n_strings, s->message, msg_len + 1);
                b->n_strings += msg_len + 1;
        }
        if (ph) {
                r->match = (uint32_t) b->n_strings;
                b->n_strings += compile_action(s->action, p->strings + b->n_strings) + 1;
        }
        p->n_rules++;
        return 0;
}

#define FILTER_MUL 0x85ebca77u

static int index_init(Index *x, size_t n, bool filter) {
        size_t size = 16;
        unsigned bits = 4;
        while (size < 2 * n) {
                size *= 2;
                bits++;
        }
        x->shift = 32 - bits;
        x->slots = malloc(size * sizeof(Slot));
        if (!x->slots)
                return -ENOMEM;
        for (size_t i = 0; i < size; i++)
                x->slots[i].head = NONE;
        x->mask = (uint32_t) (size - 1);
        if (filter) {
                unsigned fbits = 6; /* 2^fbits bits: 16 per key, 64 to 2^24 */
                while (fbits < 24 && (UINT64_C(1) << fbits) < 16 * (uint64_t) n)
                        fbits++;
                x->filter_shift = 32 - fbits;
                x->filter = calloc((size_t) 1 << (fbits - 6), sizeof(uint64_t));
                if (!x->filter)
                        return -ENOMEM;
        }
        return 0;
}

static inline void filter_add(Index *x, uint32_t hash) {
        uint32_t b = (hash * FILTER_MUL) >> x->filter_shift;
        x->filter[b >> 6] |= UINT64_C(1) << (b & 63);
}

/* May @x hold a key with this hash? false is certain. */
static inline __attribute__((always_inline)) bool index_may_hold(const Index *x, uint32_t hash) {
        uint32_t b = (hash * FILTER_MUL) >> x->filter_shift;
        return (x->filter[b >> 6] >> (b & 63)) & 1;
}

static inline __attribute__((always_inline)) Slot *index_find(const Index *x, const char *strings, const char *key, uint32_t len, uint32_t hash) {
        for (uint32_t i = (hash * 0x9e3779b1u) >> x->shift;; i = (i + 1) & x->mask) {
                Slot *s = &x->slots[i];
                if (s->head == NONE ||
                    (s->hash == hash && s->len == len && memcmp(strings + s->key, key, len) == 0))
                        return s;
        }
}

static uint32_t hash_n(const char *s, size_t n) {
        uint32_t h = 0;
        for (size_t i = 0; i < n; i++)
                h = hash_step(h, (unsigned char) s[i]);
        return h;
}

int policy_builder_finish(PolicyBuilder *b, Policy **ret_policy) {
        _cleanup_(policy_builder_freep) PolicyBuilder *bb = b;
        Policy *p = b->p;
        size_t n_pre = 0, n_suf = 0;

        /* Without a brokers setting, root alone may pass descriptors. */
        if (!b->brokers_set && policy_builder_set_brokers(b, false, &(IdRange){ 0, 0 }, 1, NULL, 0) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < p->n_rules; i++) {
                Rule *r = &p->rules[i];
                if (!r->pattern)
                        continue;
                const char *a = p->strings + (r->match != NONE ? r->match : r->action);
                size_t n = strlen(a), pre = strcspn(a, WILDCARDS), suf = 0;
                while (suf < n && !strchr(WILDCARDS, a[n - 1 - suf]))
                        suf++;
                r->pattern = suf > pre ? PATTERN_SUFFIX : PATTERN_PREFIX;
                n_pre += r->pattern == PATTERN_PREFIX;
                n_suf += r->pattern == PATTERN_SUFFIX;
        }
        if (index_init(&p->exact, p->n_rules - n_pre - n_suf, false) < 0 || index_init(&p->prefix, n_pre, true) < 0 ||
            index_init(&p->suffix, n_suf, true) < 0)
                return -ENOMEM;

        /* Walk backwards and push to the front: every chain ends up ascending. */
        for (size_t i = p->n_rules; i-- > 0;) {
                Rule *r = &p->rules[i];
                uint32_t base = r->match != NONE ? r->match : r->action;
                const char *a = p->strings + base;
                uint32_t key = base, len;
                Index *x = &p->exact;
                uint64_t *lens = NULL;

                if (r->pattern == PATTERN_PREFIX) {
                        len = (uint32_t) strcspn(a, WILDCARDS);
                        x = &p->prefix;
                        lens = p->prefix_lens;
                } else if (r->pattern == PATTERN_SUFFIX) {
                        size_t n = strlen(a), suf = 0;
                        while (suf < n && !strchr(WILDCARDS, a[n - 1 - suf]))
                                suf++;
                        len = (uint32_t) suf;
                        key = base + (uint32_t) (n - suf);
                        x = &p->suffix;
                        lens = p->suffix_lens;
                } else
                        len = (uint32_t) strlen(a);

                uint32_t h = hash_n(p->strings + key, len);
                Slot *s = index_find(x, p->strings, p->strings + key, len, h);
                if (s->head == NONE)
                        *s = (Slot){ .hash = h, .len = len, .key = key, .head = NONE };
                r->next = s->head;
                s->head = (uint32_t) i;
                if (lens) {
                        lens[len / 64] |= UINT64_C(1) << (len % 64);
                        filter_add(x, h);
                }
        }

        *ret_policy = TAKE_PTR(b->p);
        return 0;
}

Policy *policy_ref(Policy *p) {
        if (p)
                p->n_ref++;
        return p;
}

Policy *policy_unref(Policy *p) {
        if (p && --p->n_ref == 0)
                policy_free(p);
        return NULL;
}

static bool ranges_contain(const IdRange *r, size_t n, uint32_t id) {
        size_t lo = 0, hi = n;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (id < r[mid].lo)
                        hi = mid;
                else if (id > r[mid].hi)
                        lo = mid + 1;
                else
                        return true;
        }
        return false;
}

static bool subject_matches(const Policy *p, const Rule *r, const PeerCreds *id) {
        if (r->anyone)
                return true;
        /* A rule whose names all failed to resolve has no ranges, and a policy
         * without any has p->ranges == NULL: NULL + 0 is undefined in C. */
        if (r->n_uids == 0 && r->n_gids == 0)
                return false;
        const IdRange *uids = p->ranges + r->ranges, *gids = uids + r->n_uids;
        if (ranges_contain(uids, r->n_uids, id->uid) || ranges_contain(gids, r->n_gids, id->gid))
                return true;
        for (size_t i = 0; r->n_gids > 0 && i < id->n_groups; i++)
                if (ranges_contain(gids, r->n_gids, id->groups[i]))
                        return true;
        return false;
}

static bool holds_gid(const PeerCreds *id, uint32_t gid) {
        if (id->gid == gid)
                return true;
        for (size_t i = 0; i < id->n_groups; i++)
                if (id->groups[i] == gid)
                        return true;
        return false;
}

/*
 * Does the compiled action @m ('*', PH_UID, PH_GID and literal characters)
 * match @s for @id? A placeholder takes the whole run of digits at its place
 * (it never touches a digit in the pattern, so a shorter run could not
 * match), written as the number is: no sign, no leading zero.
 */
static bool match_placeholders(const char *m, const char *s, const PeerCreds *id) {
        for (;;) {
                switch (*m) {
                case '\0':
                        return *s == '\0';
                case '*':
                        while (*m == '*')
                                m++;
                        if (*m == '\0')
                                return true;
                        for (; *s; s++)
                                if (match_placeholders(m, s, id))
                                        return true;
                        return false;
                case PH_UID:
                case PH_GID: {
                        uint64_t v = 0;
                        size_t n = 0;
                        while (s[n] >= '0' && s[n] <= '9' && n < 11)
                                v = v * 10 + (uint64_t) (s[n++] - '0');
                        if (n == 0 || n > 10 || (n > 1 && s[0] == '0') || v > UINT32_MAX - 1)
                                return false;
                        if (*m == PH_UID ? v != id->uid : !holds_gid(id, (uint32_t) v))
                                return false;
                        m++;
                        s += n;
                        break;
                }
                default:
                        if (*m++ != *s++)
                                return false;
                }
        }
}

/*
 * Does rule @r's console condition hold for @id? Asked last, after action
 * and subject matched. When the login state cannot be read, fail closed:
 * an allow rule does not match, a deny rule does.
 */
static bool console_holds(const Policy *p, const Rule *r, const PeerCreds *id, const Console *c) {
        if (!c)
                return false; /* no login state: no seats, no consoles */
        int level = c->level(c->userdata, id->uid, r->seat ? p->seats[r->seat - 1] : NULL);
        if (level < 0)
                return !r->effect;
        return level >= r->console;
}

/* First rule of chain @head, before @best, that matches @action and @id.
 * The first @skip characters of the action equal those of every pattern in
 * the chain (a prefix chain's key is its patterns' literal prefix), so the
 * match starts after them. */
static inline __attribute__((always_inline)) uint32_t chain_first(const Policy *p, uint32_t head, uint32_t best, const char *action, const PeerCreds *id, size_t skip, const Console *c) {
        for (uint32_t i = head; i != NONE && i < best; i = p->rules[i].next) {
                const Rule *r = &p->rules[i];
                if (r->pattern && (r->match != NONE ? !match_placeholders(p->strings + r->match + skip, action + skip, id)
                                                    : fnmatch(p->strings + r->action + skip, action + skip, 0) != 0))
                        continue;
                if (subject_matches(p, r, id) && (!r->console || console_holds(p, r, id, c)))
                        return i;
        }
        return best;
}

/* Chains of @x whose key is the prefix (or suffix) of @action of each
 * length set in @lens, up to @len. */
#define FOR_EACH_LEN(l, lens, len)                                                           \
        for (size_t _w = 0; _w < LEN_WORDS && _w * 64 <= (len); _w++)                          \
                for (uint64_t _b = (lens)[_w]; _b && (l = _w * 64 + (size_t) __builtin_ctzll(_b)) <= (len); \
                     _b &= _b - 1)

Verdict policy_check(const Policy *p, const char *action, const PeerCreds *id) {
        return policy_check_console(p, action, id, NULL);
}

Verdict policy_check_console(const Policy *p, const char *action, const PeerCreds *id, const Console *c) {
        Verdict v = { .decision = DECISION_DENY, .revision = p ? p->revision : NULL };
        uint32_t pre[ACTION_MAX + 1], best = NONE; /* pre[k]: hash of the first k characters */
        size_t len, l;

        if (!p || !id || !action)
                return v;
        /* One pass: check the grammar (an invalid action is denied) and
         * hash every prefix. */
        pre[0] = 0;
        for (len = 0; action[len]; len++) {
                if (len >= ACTION_MAX || !action_char((unsigned char) action[len]))
                        return v;
                pre[len + 1] = hash_step(pre[len], (unsigned char) action[len]);
        }
        if (len == 0)
                return v;

        best = chain_first(p, index_find(&p->exact, p->strings, action, (uint32_t) len, pre[len])->head, best, action,
                           id, 0, c);
        FOR_EACH_LEN(l, p->prefix_lens, len)
                if (index_may_hold(&p->prefix, pre[l]))
                        best = chain_first(p, index_find(&p->prefix, p->strings, action, (uint32_t) l, pre[l])->head,
                                           best, action, id, l, c);
        FOR_EACH_LEN(l, p->suffix_lens, len) {
                uint32_t h = pre[len] - pre[len - l] * hash_pow[l];
                if (index_may_hold(&p->suffix, h))
                        best = chain_first(p, index_find(&p->suffix, p->strings, action + len - l, (uint32_t) l, h)->head,
                                           best, action, id, 0, c);
        }

        if (best == NONE) {
                v.decision = p->default_decision;
                v.by_default = true;
                return v;
        }
        const Rule *r = &p->rules[best];
        v.decision = r->effect ? DECISION_ALLOW : DECISION_DENY;
        v.file = p->files[r->file];
        v.line = r->line;
        v.id = r->id != NONE ? p->strings + r->id : NULL;
        v.message = r->message != NONE ? p->strings + r->message : NULL;
        v.rule = best;
        return v;
}

bool policy_is_broker(const Policy *p, const PeerCreds *id) {
        return p && id && subject_matches(p, &p->brokers, id);
}

bool policy_has_console(const Policy *p) {
        for (size_t i = 0; p && i < p->n_rules; i++)
                if (p->rules[i].console)
                        return true;
        return false;
}

size_t policy_n_rules(const Policy *p) {
        return p ? p->n_rules : 0;
}

size_t policy_n_files(const Policy *p) {
        return p ? p->n_files : 0;
}

const char *policy_file(const Policy *p, size_t i) {
        return p && i < p->n_files ? p->files[i] : NULL;
}

bool policy_rule(const Policy *p, size_t i, const char **ret_file, unsigned *ret_line, const char **ret_id) {
        if (!p || i >= p->n_rules)
                return false;
        const Rule *r = &p->rules[i];
        if (ret_file)
                *ret_file = p->files[r->file];
        if (ret_line)
                *ret_line = r->line;
        if (ret_id)
                *ret_id = r->id != NONE ? p->strings + r->id : NULL;
        return true;
}

Decision policy_default(const Policy *p) {
        return p ? p->default_decision : DECISION_DENY;
}

bool policy_rule_info(const Policy *p, size_t i, RuleInfo *ret) {
        if (!p || i >= p->n_rules)
                return false;
        const Rule *r = &p->rules[i];
        const IdRange *uids = r->n_uids + r->n_gids > 0 ? p->ranges + r->ranges : NULL;
        *ret = (RuleInfo){
                .file = p->files[r->file],
                .line = r->line,
                .id = r->id != NONE ? p->strings + r->id : NULL,
                .message = r->message != NONE ? p->strings + r->message : NULL,
                .action = p->strings + r->action,
                .placeholders = r->match != NONE,
                .effect = r->effect ? DECISION_ALLOW : DECISION_DENY,
                .anyone = r->anyone,
                .uids = uids,
                .n_uids = r->n_uids,
                .gids = uids ? uids + r->n_uids : NULL,
                .n_gids = r->n_gids,
                .console = (ConsoleLevel) r->console,
                .seat = r->seat ? p->seats[r->seat - 1] : NULL,
        };
        return true;
}

/* Is every id of the merged ranges @sub also in the merged ranges @sup? A
 * range of @sub lies inside one range of @sup or is not covered: merged
 * ranges neither overlap nor touch. */
static bool ranges_cover(const IdRange *sup, size_t n_sup, const IdRange *sub, size_t n_sub) {
        for (size_t k = 0; k < n_sub; k++) {
                size_t lo = 0, hi = n_sup;
                while (lo < hi) {
                        size_t mid = lo + (hi - lo) / 2;
                        if (sup[mid].hi < sub[k].lo)
                                lo = mid + 1;
                        else
                                hi = mid;
                }
                if (lo == n_sup || sup[lo].lo > sub[k].lo || sup[lo].hi < sub[k].hi)
                        return false;
        }
        return true;
}

/*
 * Does @a's console condition hold whenever @b's does, also when the login
 * state cannot be read? No condition holds always; otherwise @b needs one
 * at least as strict (a level as high, on @a's seat or any seat if @a
 * names none), and when login state fails @a must match whenever @b does:
 * the same effect, or @a a deny (which then matches).
 */
static bool console_covers(const Rule *a, const Rule *b) {
        if (!a->console)
                return true;
        return b->console >= a->console && (!a->seat || a->seat == b->seat) && (a->effect == b->effect || !a->effect);
}

/* Does every identity that @b's subject matches match @a's too? Sufficient
 * conditions only: anyone, or uids and gids each a superset, and a console
 * condition that covers @b's. */
static bool subject_covers(const Policy *p, const Rule *a, const Rule *b) {
        if (!console_covers(a, b))
                return false;
        if (a->anyone)
                return true;
        if (b->anyone)
                return false;
        const IdRange *au = p->ranges + a->ranges, *bu = p->ranges + b->ranges;
        return ranges_cover(au, a->n_uids, bu, b->n_uids) && ranges_cover(au + a->n_uids, a->n_gids, bu + b->n_uids, b->n_gids);
}

/*
 * The earliest rule of chain @head, before @best and among its first
 * @budget, that covers rule @j: its action matches @probe (@j's action with
 * each '*' replaced by a byte no action holds, so that only a '*' can match
 * it: a pattern then matches @probe exactly when it matches every action @j
 * matches) and its subject covers @j's.
 */
static uint32_t chain_cover(const Policy *p, uint32_t head, uint32_t best, uint32_t j, const char *probe, size_t budget) {
        for (uint32_t i = head; i != NONE && i < best && i < j && budget > 0; i = p->rules[i].next, budget--) {
                const Rule *r = &p->rules[i];
                /* A placeholder rule's actions depend on who asks: never counted as covering. */
                if (r->match != NONE || (r->pattern && fnmatch(p->strings + r->action, probe, 0) != 0))
                        continue;
                if (subject_covers(p, r, &p->rules[j]))
                        return i;
        }
        return best;
}

int policy_find_shadowed(const Policy *p, size_t budget, int (*cb)(const Policy *p, size_t rule, size_t by, void *userdata),
                         void *userdata) {
        char probe[ACTION_MAX + 1];
        uint32_t pre[ACTION_MAX + 1];
        size_t l;

        for (size_t j = 0; p && j < p->n_rules; j++) {
                const Rule *r = &p->rules[j];
                uint32_t best = NONE, base = r->match != NONE ? r->match : r->action;
                size_t len = strlen(p->strings + base);

                if (!r->anyone && r->n_uids + r->n_gids == 0)
                        continue;
                /* A placeholder stands for some digits: as far as covering goes, a '*'. */
                pre[0] = 0;
                for (size_t k = 0; k < len; k++) {
                        char c = p->strings[base + k];
                        probe[k] = strchr(WILDCARDS, c) ? '\001' : c;
                        pre[k + 1] = hash_step(pre[k], (unsigned char) probe[k]);
                }
                probe[len] = '\0';

                if (!r->pattern)
                        best = chain_cover(p, index_find(&p->exact, p->strings, probe, (uint32_t) len, pre[len])->head,
                                           best, (uint32_t) j, probe, budget);
                FOR_EACH_LEN(l, p->prefix_lens, len)
                        best = chain_cover(p, index_find(&p->prefix, p->strings, probe, (uint32_t) l, pre[l])->head, best,
                                           (uint32_t) j, probe, budget);
                FOR_EACH_LEN(l, p->suffix_lens, len) {
                        uint32_t h = pre[len] - pre[len - l] * hash_pow[l];
                        best = chain_cover(p, index_find(&p->suffix, p->strings, probe + len - l, (uint32_t) l, h)->head,
                                           best, (uint32_t) j, probe, budget);
                }
                if (best != NONE) {
                        int k = cb(p, j, best, userdata);
                        if (k < 0)
                                return k;
                }
        }
        return 0;
}
