/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Per-uid round robin for the event loop (see sched.h). A turn visits each
 * user that has work once and gives it an equal share of the turn's budget;
 * within a user, its connections take turns too. Users are counted here as
 * well (the per-uid connection quota), so a user exists exactly while it
 * has connections, and a user in the middle of a turn is pinned so that
 * its last connection closing does not free it under the loop.
 */
#include <errno.h>
#include <search.h>
#include <stdlib.h>

#include "uidsched.h"

static int cmp_uid(const void *a, const void *b) {
        uint32_t x = ((const SchedUser *) a)->uid, y = ((const SchedUser *) b)->uid;
        return x < y ? -1 : x > y;
}

static void ring_remove(Sched *s, SchedUser *u) {
        if (u->prev)
                u->prev->next = u->next;
        else
                s->head = u->next;
        if (u->next)
                u->next->prev = u->prev;
        else
                s->tail = u->prev;
        u->prev = u->next = NULL;
        s->n_active--;
}

static void ring_append(Sched *s, SchedUser *u) {
        u->prev = s->tail;
        u->next = NULL;
        if (s->tail)
                s->tail->next = u;
        else
                s->head = u;
        s->tail = u;
        s->n_active++;
}

static void user_free(Sched *s, SchedUser *u) {
        tdelete(u, &s->users, cmp_uid);
        free(u);
}

int sched_attach(Sched *s, SchedNode *node, uint32_t uid, uint64_t max) {
        SchedUser key = { .uid = uid };
        SchedUser **found = tfind(&key, &s->users, cmp_uid);
        SchedUser *u;

        if (found) {
                u = *found;
                if (u->n_conns >= max)
                        return -EUSERS;
        } else {
                if (max < 1)
                        return -EUSERS;
                u = calloc(1, sizeof(SchedUser));
                if (!u)
                        return -ENOMEM;
                u->uid = uid;
                SchedUser **ins = tsearch(u, &s->users, cmp_uid);
                if (!ins || *ins != u) {
                        free(u);
                        return -ENOMEM;
                }
        }
        u->n_conns++;
        *node = (SchedNode){ .user = u };
        return 0;
}

void sched_push(Sched *s, SchedNode *node) {
        SchedUser *u = node->user;
        if (node->queued || !u)
                return;
        node->prev = u->tail;
        node->next = NULL;
        if (u->tail)
                u->tail->next = node;
        else {
                u->head = node;
                ring_append(s, u);
        }
        u->tail = node;
        node->queued = true;
}

void sched_remove(Sched *s, SchedNode *node) {
        SchedUser *u = node->user;
        if (!node->queued)
                return;
        if (node->prev)
                node->prev->next = node->next;
        else
                u->head = node->next;
        if (node->next)
                node->next->prev = node->prev;
        else
                u->tail = node->prev;
        node->prev = node->next = NULL;
        node->queued = false;
        if (!u->head)
                ring_remove(s, u);
}

void sched_detach(Sched *s, SchedNode *node) {
        SchedUser *u = node->user;
        if (!u)
                return;
        sched_remove(s, node);
        node->user = NULL;
        if (--u->n_conns == 0 && u->pinned == 0)
                user_free(s, u);
}

uint32_t sched_count(const Sched *s, uint32_t uid) {
        SchedUser key = { .uid = uid };
        SchedUser **found = tfind(&key, (void **) &s->users, cmp_uid);
        return found ? (*found)->n_conns : 0;
}

void sched_turn(Sched *s, unsigned budget, unsigned min_share, unsigned per_node,
                unsigned (*serve)(SchedNode *node, unsigned max, void *userdata), void *userdata) {
        unsigned n = s->n_active;
        if (n == 0)
                return;
        unsigned share = budget / n > min_share ? budget / n : min_share;

        /* Users that get work during the turn join at the back and wait for
         * the next one: each user present now is visited once. */
        for (unsigned i = 0; i < n && s->head; i++) {
                SchedUser *u = s->head;
                /* Rotate first: if it keeps work, it goes last. */
                ring_remove(s, u);
                ring_append(s, u);
                u->pinned++;
                unsigned left = share;
                while (left > 0 && u->head) {
                        SchedNode *node = u->head;
                        sched_remove(s, node);
                        unsigned used = serve(node, left < per_node ? left : per_node, userdata);
                        left -= used < 1 ? 1 : used > left ? left : used;
                }
                if (--u->pinned == 0 && u->n_conns == 0)
                        user_free(s, u);
        }
}

void sched_done(Sched *s) {
        while (s->head)
                ring_remove(s, s->head);
        tdestroy(s->users, free);
        s->users = NULL;
}
