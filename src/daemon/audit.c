/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The decision audit log: one entry per decision, to the journal (with
 * structured fields and a fixed MESSAGE_ID, so `journalctl
 * MESSAGE_ID=...` finds them) or one line per decision on stderr.
 *
 * A flood must not flood the journal: each uid may log AUDIT_BURST entries
 * per interval; the rest are counted, and the count is logged when the
 * interval ends. Uids share a fixed table of buckets, so the limiter's
 * memory does not grow with the number of uids an attacker can use.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <syslog.h>
#include <systemd/sd-journal.h>

#include "audit.h"

#define N_BUCKETS 4096

typedef struct Bucket {
        uint32_t uid;
        bool used;
        uint64_t window_start;
        uint32_t logged;
        uint64_t suppressed;
} Bucket;

struct Audit {
        LogTarget target;
        AuditLevel level;
        Bucket buckets[N_BUCKETS];
};

int audit_new(LogTarget target, AuditLevel level, Audit **ret) {
        Audit *a = calloc(1, sizeof(Audit));
        if (!a)
                return -ENOMEM;
        a->target = target;
        a->level = level;
        *ret = a;
        return 0;
}

Audit *audit_free(Audit *a) {
        free(a);
        return NULL;
}

void audit_set_level(Audit *a, AuditLevel level) {
        a->level = level;
}

static void emit_suppressed(Audit *a, uint32_t uid, uint64_t n) {
        if (a->target == LOG_TARGET_JOURNAL)
                (void) sd_journal_send("MESSAGE=audit: %" PRIu64 " decision entries for uid %" PRIu32 " suppressed", n, uid,
                                       "MESSAGE_ID=" AUDIT_SUPPRESSED_MESSAGE_ID, "PRIORITY=%i", LOG_WARNING,
                                       "SYSLOG_IDENTIFIER=credgated", "CREDGATE_UID=%" PRIu32, uid,
                                       "CREDGATE_SUPPRESSED=%" PRIu64, n, NULL);
        else
                (void) fprintf(stderr, "credgated: audit: suppressed=%" PRIu64 " uid=%" PRIu32 "\n", n, uid);
}

/* Does the uid's rate limit let this entry through? */
static bool ratelimit(Audit *a, uint32_t uid, uint64_t now) {
        Bucket *b = &a->buckets[(uid * UINT32_C(2654435761)) % N_BUCKETS];

        if (!b->used || now >= b->window_start + AUDIT_INTERVAL_USEC) {
                if (b->used && b->suppressed > 0)
                        emit_suppressed(a, b->uid, b->suppressed);
                *b = (Bucket){ .uid = uid, .used = true, .window_start = now };
        }
        /* Two uids landing in one bucket share its limit: a limiter that
         * errs towards logging less, never towards unbounded logging. */
        if (b->logged < AUDIT_BURST) {
                b->logged++;
                return true;
        }
        b->suppressed++;
        return false;
}

void audit_decision(Audit *a, uint64_t now_usec, const char *action, const Verdict *v, const PeerCreds *subject,
                    const PeerCreds *broker) {
        char rule[4096];
        bool allow = v->decision == DECISION_ALLOW;

        if (!a || a->level == AUDIT_NONE || (a->level == AUDIT_DENY && allow))
                return;
        /* The limit follows whoever caused the entry: the broker for broker queries. */
        if (!ratelimit(a, (uint32_t) (broker ? broker->uid : subject->uid), now_usec))
                return;

        if (v->by_default || !v->file)
                snprintf(rule, sizeof(rule), "default");
        else
                snprintf(rule, sizeof(rule), "%s:%u", v->file, v->line);
        const char *d = allow ? "ALLOW" : "DENY";

        if (a->target == LOG_TARGET_JOURNAL) {
                if (broker)
                        (void) sd_journal_send(
                                "MESSAGE=%s %s for pid %" PRIi32 " uid %" PRIu32 " (asked by pid %" PRIi32 " uid %" PRIu32
                                ") by %s",
                                d, action, (int32_t) subject->pid, (uint32_t) subject->uid, (int32_t) broker->pid,
                                (uint32_t) broker->uid, rule, "MESSAGE_ID=" AUDIT_DECISION_MESSAGE_ID,
                                "PRIORITY=%i", allow ? LOG_INFO : LOG_NOTICE, "SYSLOG_IDENTIFIER=credgated",
                                "CREDGATE_ACTION=%s", action, "CREDGATE_DECISION=%s", d, "CREDGATE_RULE=%s", rule,
                                "CREDGATE_PEER_PID=%" PRIi32, (int32_t) subject->pid,
                                "CREDGATE_PEER_UID=%" PRIu32, (uint32_t) subject->uid,
                                "CREDGATE_PEER_GID=%" PRIu32, (uint32_t) subject->gid,
                                "CREDGATE_BROKER_PID=%" PRIi32, (int32_t) broker->pid,
                                "CREDGATE_BROKER_UID=%" PRIu32, (uint32_t) broker->uid, NULL);
                else
                        (void) sd_journal_send(
                                "MESSAGE=%s %s for pid %" PRIi32 " uid %" PRIu32 " by %s", d, action,
                                (int32_t) subject->pid, (uint32_t) subject->uid, rule,
                                "MESSAGE_ID=" AUDIT_DECISION_MESSAGE_ID, "PRIORITY=%i", allow ? LOG_INFO : LOG_NOTICE,
                                "SYSLOG_IDENTIFIER=credgated", "CREDGATE_ACTION=%s", action, "CREDGATE_DECISION=%s", d,
                                "CREDGATE_RULE=%s", rule, "CREDGATE_PEER_PID=%" PRIi32, (int32_t) subject->pid,
                                "CREDGATE_PEER_UID=%" PRIu32, (uint32_t) subject->uid,
                                "CREDGATE_PEER_GID=%" PRIu32, (uint32_t) subject->gid, NULL);
                return;
        }
        if (broker)
                (void) fprintf(stderr,
                               "credgated: audit: decision=%s action=%s rule=%s pid=%" PRIi32 " uid=%" PRIu32
                               " gid=%" PRIu32 " broker_pid=%" PRIi32 " broker_uid=%" PRIu32 "\n",
                               d, action, rule, (int32_t) subject->pid, (uint32_t) subject->uid,
                               (uint32_t) subject->gid, (int32_t) broker->pid, (uint32_t) broker->uid);
        else
                (void) fprintf(stderr,
                               "credgated: audit: decision=%s action=%s rule=%s pid=%" PRIi32 " uid=%" PRIu32
                               " gid=%" PRIu32 "\n",
                               d, action, rule, (int32_t) subject->pid, (uint32_t) subject->uid,
                               (uint32_t) subject->gid);
}

void audit_flush(Audit *a, uint64_t now_usec) {
        if (!a)
                return;
        for (size_t i = 0; i < N_BUCKETS; i++) {
                Bucket *b = &a->buckets[i];
                if (b->used && b->suppressed > 0 && now_usec >= b->window_start + AUDIT_INTERVAL_USEC) {
                        emit_suppressed(a, b->uid, b->suppressed);
                        b->suppressed = 0;
                }
        }
}
