/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "peercred.h"

/* DENY is the zero value: zeroed memory, early returns and errors all deny. */
typedef enum Decision {
        DECISION_DENY = 0,
        DECISION_ALLOW = 1,
} Decision;

typedef struct Policy Policy;
typedef struct PolicyBuilder PolicyBuilder;

/*
 * A console condition: what an identity's uid must hold on a seat (a
 * logind seat: keyboard and screen). Ordered: ACTIVE implies PRESENT.
 */
typedef enum ConsoleLevel {
        CONSOLE_NONE = 0,    /* no session on the seat (or no condition) */
        CONSOLE_PRESENT = 1, /* a session on the seat, in the foreground or not */
        CONSOLE_ACTIVE = 2,  /* the seat's foreground (active) session */
} ConsoleLevel;

/*
 * Login state, as policy checks ask for it: only for a rule with a console
 * condition whose action and subject already matched.
 */
typedef struct Console {
        /* The most @uid holds on @seat (NULL: on any seat), a ConsoleLevel, or
         * a negative errno when the login state cannot be read. A machine
         * without logind has no seats: CONSOLE_NONE, not an error. */
        int (*level)(void *userdata, uint32_t uid, const char *seat);
        void *userdata;
} Console;

/* "active", "present" and "none"; parsed back by console_level_from_name(). Return: NULL for others. */
const char *console_level_name(ConsoleLevel l);
/* Return: 0 and *ret, or -EINVAL. */
int console_level_from_name(const char *s, ConsoleLevel *ret);

#define POLICY_SEAT_MAX 64

/* Is @s a logind seat name: "seat" and 1 or more of A-Z a-z 0-9 - _, at most POLICY_SEAT_MAX bytes? */
bool policy_seat_valid(const char *s);

/* An inclusive range of uids or gids, both ends in 0..4294967294. */
typedef struct IdRange {
        uint32_t lo, hi;
} IdRange;

/* One rule as the loader hands it to the builder. */
typedef struct RuleSpec {
        const char *action; /* exact name or pattern with '*' */
        Decision effect;
        bool anyone;
        const IdRange *uids;
        size_t n_uids;
        const IdRange *gids; /* match the primary gid and every supplementary group */
        size_t n_gids;
        unsigned line; /* the rule's line in its file */
        const char *id; /* optional name, unique in the policy (action grammar, no '*'); NULL for none */
        const char *message; /* optional text for EXPLAIN (policy_message_valid()); NULL for none */
        ConsoleLevel console; /* a console condition, ANDed with the subject; CONSOLE_NONE for none */
        const char *seat; /* with a console condition: the one seat it asks about (policy_seat_valid());
                           * NULL for any seat */
} RuleSpec;

#define POLICY_MESSAGE_MAX 200

/* Is @s a rule message: 1..POLICY_MESSAGE_MAX bytes of printable ASCII (0x20..0x7e)? */
bool policy_message_valid(const char *s);

/*
 * Check the action pattern of a rule: 1..ACTION_MAX characters of the
 * action grammar, '*' wildcards, and the placeholders {uid} (the decimal uid
 * of the identity judged) and {gid} (any gid it holds). A placeholder must
 * not touch '*', a digit or another placeholder, so that where its number
 * ends is never in doubt.
 *
 * Return: 0 (no placeholder), 1 (placeholders), or -EINVAL with a reason in
 * *ret_why (static text).
 */
int policy_action_check(const char *action, const char **ret_why);

/* Where a decision came from: a rule (file, line, id) or the default. */
typedef struct Verdict {
        Decision decision;
        bool by_default;
        const char *file; /* valid while the Policy lives; NULL by default */
        unsigned line;
        const char *id; /* the rule's id, valid while the Policy lives; NULL when it has none */
        const char *message; /* the rule's message, valid while the Policy lives; NULL when it has none */
        uint32_t rule; /* the deciding rule's index (see policy_rule()); meaningful only when file is set */
        const char *revision; /* the deciding policy's revision (policy_revision()), valid while it lives */
} Verdict;

/*
 * Builder: the loader adds files and rules in evaluation order, then
 * policy_builder_finish() compiles them into an immutable Policy.
 */
PolicyBuilder *policy_builder_new(void);
PolicyBuilder *policy_builder_free(PolicyBuilder *b);

/* Start a new source file; later rules belong to it. Return: 0 or -ENOMEM. */
int policy_builder_add_file(PolicyBuilder *b, const char *path);

/* Add a rule (copied). Return: 0, -EINVAL for a bad action, id, message or console condition
 * (a seat without a console level, or an allow rule for anyone with a console condition),
 * -EEXIST for an id already taken, or -ENOMEM. */
int policy_builder_add_rule(PolicyBuilder *b, const RuleSpec *spec);

/* Where the rule with @id was added. Return: true and *ret_file (valid while @b lives) and
 * *ret_line, or false. */
bool policy_builder_find_id(const PolicyBuilder *b, const char *id, const char **ret_file, unsigned *ret_line);

void policy_builder_set_default(PolicyBuilder *b, Decision d);

#define POLICY_REVISION_LEN 64

/* The policy's revision (copied; POLICY_REVISION_LEN lowercase hex digits, else ignored). The
 * loader sets it to the SHA-256 over the loaded files (see credgated(8)). */
void policy_builder_set_revision(PolicyBuilder *b, const char *hex);

/*
 * Who may pass file descriptors to the daemon (broker queries, CHECK-PEER):
 * @anyone, or a uid in @uids, or a primary or supplementary gid in @gids
 * (copied). Without this call the policy names root (uid 0) alone.
 *
 * Return: 0, -EEXIST when already set, or -ENOMEM.
 */
int policy_builder_set_brokers(PolicyBuilder *b, bool anyone, const IdRange *uids, size_t n_uids,
                               const IdRange *gids, size_t n_gids);

/*
 * Compile everything added so far into an index. The builder is consumed
 * (freed) whatever the outcome.
 *
 * Return: 0 and *ret_policy, or -ENOMEM.
 */
int policy_builder_finish(PolicyBuilder *b, Policy **ret_policy);

Policy *policy_ref(Policy *p);
Policy *policy_unref(Policy *p);

/*
 * Decide @action (NUL-terminated) for the identity @id. The first rule in
 * evaluation order whose action matches and whose subject matches decides;
 * no match gives the policy's default. An invalid action is denied.
 *
 * Return: the verdict; its decision is ALLOW only for a complete match.
 */
Verdict policy_check(const Policy *p, const char *action, const PeerCreds *id);

/*
 * policy_check() with login state from @console for rules with a console
 * condition (policy_check() and a NULL @console: a machine without seats,
 * where no console condition holds). When @console answers with an error,
 * fail closed: an allow rule with a console condition does not match and a
 * deny rule with one does.
 */
Verdict policy_check_console(const Policy *p, const char *action, const PeerCreds *id, const Console *console);

/* Does any rule of @p have a console condition? */
bool policy_has_console(const Policy *p);

/* Does @p name @id a broker (see policy_builder_set_brokers())? Return: false for NULL. */
bool policy_is_broker(const Policy *p, const PeerCreds *id);

/* The revision the loader gave the policy, or "none" (a policy built without the loader). */
const char *policy_revision(const Policy *p);

size_t policy_n_rules(const Policy *p);
size_t policy_n_files(const Policy *p);
const char *policy_file(const Policy *p, size_t i);

/* Rule @i (0..policy_n_rules()-1, evaluation order): its file, line and id (NULL when it has
 * none), valid while @p lives. Any of the out pointers may be NULL.
 * Return: false when @i is out of range. */
bool policy_rule(const Policy *p, size_t i, const char **ret_file, unsigned *ret_line, const char **ret_id);
Decision policy_default(const Policy *p);

/* Everything about rule @i, valid while the Policy lives. */
typedef struct RuleInfo {
        const char *file;
        unsigned line;
        const char *id; /* NULL when it has none */
        const char *message; /* NULL when it has none */
        const char *action; /* as written, placeholders included */
        bool placeholders; /* the action has {uid} or {gid} */
        Decision effect;
        bool anyone;
        const IdRange *uids, *gids; /* sorted, merged ranges */
        size_t n_uids, n_gids;
        ConsoleLevel console; /* CONSOLE_NONE: no condition */
        const char *seat; /* NULL: any seat */
} RuleInfo;

/* Return: false when @i is out of range. */
bool policy_rule_info(const Policy *p, size_t i, RuleInfo *ret);

/*
 * Rules that can never decide: for each rule @rule that an earlier rule @by
 * always pre-empts (its action covers every action @rule matches and its
 * subject covers every identity @rule matches), call @cb with the earliest
 * such @by found. Only certainties are reported: candidates are found through
 * the policy's indexes, at most @budget of them per index chain and rule,
 * so a shadowing hidden behind more candidates than that goes unreported.
 * Rules that match nobody (names that did not resolve) are left out.
 *
 * Return: 0, or the first negative value @cb returned.
 */
int policy_find_shadowed(const Policy *p, size_t budget, int (*cb)(const Policy *p, size_t rule, size_t by, void *userdata),
                         void *userdata);

static inline void policy_unrefp(Policy **p) {
        policy_unref(*p);
}
static inline void policy_builder_freep(PolicyBuilder **b) {
        policy_builder_free(*b);
}
