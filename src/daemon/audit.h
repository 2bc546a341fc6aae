/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "log.h"
#include "peercred.h"
#include "policy-parse.h"
#include "policy.h"


/* MESSAGE_ID of a decision entry, and of a "N entries suppressed" entry. */
#define AUDIT_DECISION_MESSAGE_ID "b7a3c1e2d4f6480f9a1b2c3d4e5f6a71"
#define AUDIT_SUPPRESSED_MESSAGE_ID "b7a3c1e2d4f6480f9a1b2c3d4e5f6a72"

/* Per uid: at most AUDIT_BURST entries per AUDIT_INTERVAL_USEC. */
#define AUDIT_BURST 200
#define AUDIT_INTERVAL_USEC (10 * UINT64_C(1000000))

typedef struct Audit Audit;

/* Return: 0 and *ret, or -ENOMEM. */
int audit_new(LogTarget target, AuditLevel level, Audit **ret);
Audit *audit_free(Audit *a);
void audit_set_level(Audit *a, AuditLevel level);

/* Would a decision of this kind be logged at all? (Cheap; before any work.) */
bool audit_wants(const Audit *a, Decision d);

/*
 * Record one decision, if the level asks for it and the uid's rate limit
 * allows. @broker is the client that asked with CHECK-PEER (NULL for CHECK);
 * @subject is the identity the decision was made for. Never fails: a lost
 * log entry must not change a decision.
 */
void audit_decision(Audit *a, uint64_t now_usec, const char *action, const Verdict *v, const PeerCreds *subject,
                    const PeerCreds *broker);

/* Decision entries the per-uid rate limit dropped since audit_new(). */
uint64_t audit_suppressed(const Audit *a);

/* Emit "N entries suppressed" for uids whose window has ended. */
void audit_flush(Audit *a, uint64_t now_usec);
