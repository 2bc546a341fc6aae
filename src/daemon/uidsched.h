/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/*
 * Fair turns for the event loop: connections with work wait in the run
 * queue of their uid, and the uids with work take turns. Each turn gives
 * every such uid the same bounded share, however many connections it has,
 * so one user's flood only ever delays another user by one share. No I/O
 * here: the server says what has work, this says who goes next.
 */

typedef struct SchedUser SchedUser;

/* Embedded in a connection. */
typedef struct SchedNode {
        struct SchedNode *prev, *next; /* in user->queue while queued */
        SchedUser *user;
        bool queued;
} SchedNode;

struct SchedUser {
        uint32_t uid;
        uint32_t n_conns;
        SchedNode *head, *tail;       /* connections with work, next first */
        SchedUser *prev, *next;       /* in the active ring while head != NULL */
        unsigned pinned;              /* in a turn: not freed meanwhile */
};

typedef struct Sched {
        void *users;                  /* tsearch() tree of SchedUser, by uid */
        SchedUser *head, *tail;       /* users with work, next first */
        unsigned n_active;
} Sched;

/*
 * Count a connection of @uid against @max (per-uid quota) and bind @node to
 * its user.
 * Return: 0, -EUSERS when @uid is at @max, or -ENOMEM.
 */
int sched_attach(Sched *s, SchedNode *node, uint32_t uid, uint64_t max);

/* Dequeue @node and uncount its connection (the user goes with its last). */
void sched_detach(Sched *s, SchedNode *node);

/* Put @node at the back of its user's queue (no-op when queued). */
void sched_push(Sched *s, SchedNode *node);

/* Take @node out of its user's queue (no-op when not queued). */
void sched_remove(Sched *s, SchedNode *node);

/* Open connections of @uid. */
uint32_t sched_count(const Sched *s, uint32_t uid);

/*
 * One turn: calls @serve(node, max, userdata) for the queued connections,
 * user by user in ring order, each user once, until the user's share of
 * @budget (budget / active users, at least @min_share) is used or its
 * queue is empty. @serve gets each node dequeued, returns what it used
 * (>= 1 counts; the server counts request lines and reads) and re-queues the
 * node itself (sched_push) if it has more work, which puts it at the back;
 * it may also detach it. @per_node caps one call.
 */
void sched_turn(Sched *s, unsigned budget, unsigned min_share, unsigned per_node,
                unsigned (*serve)(SchedNode *node, unsigned max, void *userdata), void *userdata);

/* Free every user (the nodes must be detached or about to be freed). */
void sched_done(Sched *s);
