/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The decision audit log: one entry per decision, to the journal (with
 * structured fields and a fixed MESSAGE_ID, so `journalctl
 * MESSAGE_ID=...` finds them) or one line per decision on stderr.
 *
 * A flood must not flood the journal: each uid may log AUDIT_BURST entries
 * per interval; the rest are counted, and the count is logged when the
 * interval ends. Every uid has its own budget, so no user can use up
 * another's and hide their entries; a uid's state is dropped once its
 * interval has ended and its count was reported, so the table only holds
 * uids that made decisions in the last interval.
 */
#include <errno.h>
#include <inttypes.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <syslog.h>
#include <systemd/sd-journal.h>

#include "audit.h"

typedef struct Bucket {
        uint32_t uid;
        uint32_t logged;
        uint64_t window_start;
        uint64_t suppressed;
} Bucket;

struct Audit {
        LogTarget target;
        AuditLevel level;
        uint64_t n_suppressed; /* entries the rate limit dropped, ever */
        void *buckets; /* tsearch() tree of Bucket, by uid */
};

static int cmp_bucket(const void *a, const void *b) {
        uint32_t x = ((const Bucket *) a)->uid, y = ((const Bucket *) b)->uid;
        return x < y ? -1 : x > y;
}

int audit_new(LogTarget target, AuditLevel level, Audit **ret) {
        Audit *a = calloc(1, sizeof(Audit));
        if (!a)
                return -ENOMEM;
        a->target = target;
        a->level = level;
        *ret = a;
        return 0;
}

static void emit_suppressed(Audit *a, uint32_t uid, uint64_t n);

static void flush_and_free(void *p, void *userdata) {
        Bucket *b = p;
        if (b->suppressed > 0)
                emit_suppressed(userdata, b->uid, b->suppressed);
        free(b);
}

Audit *audit_free(Audit *a) {
        if (!a)
                return NULL;
        /* Counts still pending are reported, not lost, at exit. */
        while (a->buckets) {
                Bucket *b = *(Bucket **) a->buckets;
                tdelete(b, &a->buckets, cmp_bucket);
                flush_and_free(b, a);
        }
        free(a);
        return NULL;
}

void audit_set_level(Audit *a, AuditLevel level) {
        a->level = level;
}

static void emit_suppressed(Audit *a, uint32_t uid, uint64_t n) {
        if (a->target == LOG_TARGET_JOURNAL)
                (void) log_journal_result(sd_journal_send(
                        "MESSAGE=audit: %" PRIu64 " decision entries for uid %" PRIu32 " suppressed", n, uid,
                        "MESSAGE_ID=" AUDIT_SUPPRESSED_MESSAGE_ID, "PRIORITY=%i", LOG_WARNING,
                        "SYSLOG_IDENTIFIER=credgated", "CREDGATE_UID=%" PRIu32, uid, "CREDGATE_SUPPRESSED=%" PRIu64, n,
                        NULL));
        else
                (void) fprintf(stderr, "credgated: audit: suppressed=%" PRIu64 " uid=%" PRIu32 "\n", n, uid);
}

/* Does the uid's rate limit let this entry through? */
static bool ratelimit(Audit *a, uint32_t uid, uint64_t now) {
        Bucket key = { .uid = uid };
        Bucket **found = tfind(&key, &a->buckets, cmp_bucket);
        Bucket *b;

        if (found)
                b = *found;
        else {
                /* Out of memory: log without limit rather than lose entries
                 * of a uid that never got a budget. */
                b = malloc(sizeof(Bucket));
                if (!b)
                        return true;
                *b = (Bucket){ .uid = uid, .window_start = now };
                Bucket **ins = tsearch(b, &a->buckets, cmp_bucket);
                if (!ins || *ins != b) {
                        free(b);
                        return true;
                }
        }
        if (now >= b->window_start + AUDIT_INTERVAL_USEC) {
                if (b->suppressed > 0)
                        emit_suppressed(a, b->uid, b->suppressed);
                *b = (Bucket){ .uid = uid, .window_start = now };
        }
        if (b->logged < AUDIT_BURST) {
                b->logged++;
                return true;
        }
        b->suppressed++;
        a->n_suppressed++;
        return false;
}

uint64_t audit_suppressed(const Audit *a) {
        return a ? a->n_suppressed : 0;
}

bool audit_wants(const Audit *a, Decision d) {
        return a && (a->level == AUDIT_ALL || (a->level == AUDIT_DENY && d != DECISION_ALLOW));
}

void audit_decision(Audit *a, uint64_t now_usec, const char *action, const Verdict *v, const PeerCreds *subject,
                    const PeerCreds *broker) {
        char rule[4096];
        bool allow = v->decision == DECISION_ALLOW;

        if (!audit_wants(a, v->decision))
                return;
        /* The limit follows whoever caused the entry: the broker for broker queries. */
        if (!ratelimit(a, (uint32_t) (broker ? broker->uid : subject->uid), now_usec))
                return;

        if (v->by_default || !v->file)
                snprintf(rule, sizeof(rule), "default");
        else
                snprintf(rule, sizeof(rule), "%s:%u", v->file, v->line);
        /* The id goes in a field of its own; in the message, after the place. */
        char by[4096 + 300];
        snprintf(by, sizeof(by), "%s%s%s%s", rule, v->id ? " (" : "", v->id ? v->id : "", v->id ? ")" : "");
        const char *d = allow ? "ALLOW" : "DENY";
        const char *rev = v->revision ? v->revision : "none";

        if (a->target == LOG_TARGET_JOURNAL) {
                if (broker)
                        (void) log_journal_result(sd_journal_send(
                                "MESSAGE=%s %s for pid %" PRIi32 " uid %" PRIu32 " (asked by pid %" PRIi32 " uid %" PRIu32
                                ") by %s",
                                d, action, (int32_t) subject->pid, (uint32_t) subject->uid, (int32_t) broker->pid,
                                (uint32_t) broker->uid, by, "MESSAGE_ID=" AUDIT_DECISION_MESSAGE_ID,
                                "PRIORITY=%i", allow ? LOG_INFO : LOG_NOTICE, "SYSLOG_IDENTIFIER=credgated",
                                "CREDGATE_ACTION=%s", action, "CREDGATE_DECISION=%s", d, "CREDGATE_RULE=%s", rule,
                                "CREDGATE_PEER_PID=%" PRIi32, (int32_t) subject->pid,
                                "CREDGATE_PEER_UID=%" PRIu32, (uint32_t) subject->uid,
                                "CREDGATE_PEER_GID=%" PRIu32, (uint32_t) subject->gid,
                                "CREDGATE_BROKER_PID=%" PRIi32, (int32_t) broker->pid,
                                "CREDGATE_BROKER_UID=%" PRIu32, (uint32_t) broker->uid,
                                "CREDGATE_POLICY_REVISION=%s", rev,
                                v->id ? "CREDGATE_RULE_ID=%s" : NULL, v->id, NULL));
                else
                        (void) log_journal_result(sd_journal_send(
                                "MESSAGE=%s %s for pid %" PRIi32 " uid %" PRIu32 " by %s", d, action,
                                (int32_t) subject->pid, (uint32_t) subject->uid, by,
                                "MESSAGE_ID=" AUDIT_DECISION_MESSAGE_ID, "PRIORITY=%i", allow ? LOG_INFO : LOG_NOTICE,
                                "SYSLOG_IDENTIFIER=credgated", "CREDGATE_ACTION=%s", action, "CREDGATE_DECISION=%s", d,
                                "CREDGATE_RULE=%s", rule, "CREDGATE_PEER_PID=%" PRIi32, (int32_t) subject->pid,
                                "CREDGATE_PEER_UID=%" PRIu32, (uint32_t) subject->uid,
                                "CREDGATE_PEER_GID=%" PRIu32, (uint32_t) subject->gid,
                                "CREDGATE_POLICY_REVISION=%s", rev,
                                v->id ? "CREDGATE_RULE_ID=%s" : NULL, v->id, NULL));
                return;
        }
        if (broker)
                (void) fprintf(stderr,
                               "credgated: audit: decision=%s action=%s rule=%s%s%s pid=%" PRIi32 " uid=%" PRIu32
                               " gid=%" PRIu32 " broker_pid=%" PRIi32 " broker_uid=%" PRIu32 " revision=%s\n",
                               d, action, rule, v->id ? " rule_id=" : "", v->id ? v->id : "", (int32_t) subject->pid,
                               (uint32_t) subject->uid,
                               (uint32_t) subject->gid, (int32_t) broker->pid, (uint32_t) broker->uid, rev);
        else
                (void) fprintf(stderr,
                               "credgated: audit: decision=%s action=%s rule=%s%s%s pid=%" PRIi32 " uid=%" PRIu32
                               " gid=%" PRIu32 " revision=%s\n",
                               d, action, rule, v->id ? " rule_id=" : "", v->id ? v->id : "", (int32_t) subject->pid,
                               (uint32_t) subject->uid,
                               (uint32_t) subject->gid, rev);
}

typedef struct FlushCtx {
        Audit *audit;
        uint64_t now;
        Bucket **expired;
        size_t n, cap;
} FlushCtx;

static void collect_expired(const void *node, VISIT v, void *userdata) {
        FlushCtx *f = userdata;
        Bucket *b = *(Bucket *const *) node;

        if (v != postorder && v != leaf)
                return;
        if (f->now < b->window_start + AUDIT_INTERVAL_USEC)
                return;
        if (f->n == f->cap) {
                size_t cap = f->cap ? f->cap * 2 : 64;
                Bucket **m = reallocarray(f->expired, cap, sizeof(Bucket *));
                if (!m)
                        return; /* try again at the next flush */
                f->expired = m;
                f->cap = cap;
        }
        f->expired[f->n++] = b;
}

void audit_flush(Audit *a, uint64_t now_usec) {
        FlushCtx f = { .audit = a, .now = now_usec };

        if (!a)
                return;
        /* Report and forget uids whose interval has ended; tdelete() cannot
         * run inside twalk(), so collect first. */
        twalk_r(a->buckets, collect_expired, &f);
        for (size_t i = 0; i < f.n; i++) {
                tdelete(f.expired[i], &a->buckets, cmp_bucket);
                flush_and_free(f.expired[i], a);
        }
        free(f.expired);
}
