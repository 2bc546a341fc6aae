/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the per-uid run queues (uidsched.c): the per-uid quota,
 * who is served in a turn and how much, that a uid with many connections
 * gets no more than one with one, and that users live exactly as long as
 * their connections, also when the last one goes in the middle of a turn.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "macro.h"
#include "testutil.h"
#include "uidsched.h"

typedef struct TConn {
        SchedNode node; /* first */
        uint32_t uid;
        unsigned work;   /* units left to serve */
        unsigned served; /* units served */
        bool detach;     /* detach when served */
} TConn;

static Sched sched;
static uint32_t order[4096]; /* uids in the order served */
static size_t n_order;

static unsigned serve(SchedNode *node, unsigned max, void *userdata) {
        TConn *c = (TConn *) node;
        unsigned used = c->work < max ? c->work : max;
        ck_assert_uint_gt(max, 0);
        c->work -= used;
        c->served += used;
        if (n_order < ELEMENTSOF(order))
                order[n_order++] = c->uid;
        if (c->detach)
                sched_detach(&sched, node);
        else if (c->work > 0)
                sched_push(&sched, node);
        return used;
}

static void setup(void) {
        memset(&sched, 0, sizeof(sched));
        n_order = 0;
}

static void teardown(void) {
        sched_done(&sched);
}

static void attach(TConn *c, uint32_t uid, unsigned work) {
        *c = (TConn){ .uid = uid, .work = work };
        ck_assert_int_eq(sched_attach(&sched, &c->node, uid, 100), 0);
        if (work > 0)
                sched_push(&sched, &c->node);
}

START_TEST(test_quota) {
        SchedNode n[3];
        ck_assert_int_eq(sched_attach(&sched, &n[0], 7, 2), 0);
        ck_assert_int_eq(sched_attach(&sched, &n[1], 7, 2), 0);
        ck_assert_int_eq(sched_attach(&sched, &n[2], 7, 2), -EUSERS);
        ck_assert_int_eq(sched_attach(&sched, &n[2], 8, 2), 0);
        ck_assert_uint_eq(sched_count(&sched, 7), 2);
        sched_detach(&sched, &n[0]);
        ck_assert_uint_eq(sched_count(&sched, 7), 1);
        ck_assert_int_eq(sched_attach(&sched, &n[0], 7, 2), 0);
        ck_assert_int_eq(sched_attach(&sched, &n[0], 9, 0), -EUSERS);
        sched_detach(&sched, &n[0]);
        sched_detach(&sched, &n[1]);
        sched_detach(&sched, &n[2]);
        ck_assert_uint_eq(sched_count(&sched, 7), 0);
        ck_assert_ptr_null(sched.users);
}
END_TEST

START_TEST(test_flood_gets_one_share) {
        /* uid 1 has 1,000 connections with 100 units each, uid 2 one with 1. */
        static TConn flood[1000];
        TConn victim;
        for (size_t i = 0; i < ELEMENTSOF(flood); i++) {
                flood[i] = (TConn){ .uid = 1, .work = 100 };
                ck_assert_int_eq(sched_attach(&sched, &flood[i].node, 1, 1024), 0);
                sched_push(&sched, &flood[i].node);
        }
        attach(&victim, 2, 1);
        ck_assert_uint_eq(sched.n_active, 2);
        sched_turn(&sched, 1024, 64, 64, serve, NULL);
        /* Two users: 512 each; the victim is served in this very turn. */
        ck_assert_uint_eq(victim.served, 1);
        unsigned total = 0;
        for (size_t i = 0; i < ELEMENTSOF(flood); i++)
                total += flood[i].served;
        ck_assert_uint_eq(total, 512);
        /* 64 per connection at a time: 8 connections got their share. */
        ck_assert_uint_eq(flood[0].served, 64);
        ck_assert_uint_eq(flood[8].served, 0);
        ck_assert_uint_eq(sched.n_active, 1);
        for (size_t i = 0; i < ELEMENTSOF(flood); i++)
                sched_detach(&sched, &flood[i].node);
        sched_detach(&sched, &victim.node);
}
END_TEST

START_TEST(test_round_robin_within_user) {
        TConn a, b, c;
        attach(&a, 1, 10);
        attach(&b, 1, 10);
        attach(&c, 1, 10);
        /* Budget 6 for one user, 2 per connection: a, b, c in order. */
        sched_turn(&sched, 6, 1, 2, serve, NULL);
        ck_assert_uint_eq(a.served, 2);
        ck_assert_uint_eq(b.served, 2);
        ck_assert_uint_eq(c.served, 2);
        /* Each went to the back when served, so the queue is a, b, c again. */
        sched_turn(&sched, 2, 1, 2, serve, NULL);
        ck_assert_uint_eq(a.served, 4);
        ck_assert_uint_eq(b.served, 2);
        sched_detach(&sched, &a.node);
        sched_detach(&sched, &b.node);
        sched_detach(&sched, &c.node);
}
END_TEST

START_TEST(test_users_alternate) {
        TConn a, b;
        attach(&a, 1, 1000);
        attach(&b, 2, 1000);
        for (int t = 0; t < 10; t++)
                sched_turn(&sched, 100, 10, 100, serve, NULL);
        ck_assert_uint_eq(a.served, 500);
        ck_assert_uint_eq(b.served, 500);
        /* Within a turn each user is served once, one after the other. */
        ck_assert_uint_eq(n_order, 20);
        for (size_t i = 0; i + 1 < n_order; i++)
                ck_assert_uint_ne(order[i], order[i + 1]);
        sched_detach(&sched, &a.node);
        sched_detach(&sched, &b.node);
}
END_TEST

START_TEST(test_min_share) {
        static TConn v[100];
        for (size_t i = 0; i < ELEMENTSOF(v); i++)
                attach(&v[i], (uint32_t) i, 1000);
        /* 100 users, budget 100: each still gets the minimum share of 5. */
        sched_turn(&sched, 100, 5, 64, serve, NULL);
        for (size_t i = 0; i < ELEMENTSOF(v); i++)
                ck_assert_uint_eq(v[i].served, 5);
        for (size_t i = 0; i < ELEMENTSOF(v); i++)
                sched_detach(&sched, &v[i].node);
}
END_TEST

START_TEST(test_zero_use_counts_as_one) {
        /* A connection that has nothing (a read that found no line) still
         * costs a unit, so a turn always ends. */
        TConn a, b;
        attach(&a, 1, 0);
        attach(&b, 1, 0);
        sched_push(&sched, &a.node);
        sched_push(&sched, &b.node);
        sched_turn(&sched, 1, 1, 1, serve, NULL);
        ck_assert_uint_eq(n_order, 1);
        sched_detach(&sched, &a.node);
        sched_detach(&sched, &b.node);
}
END_TEST

START_TEST(test_last_connection_leaves_mid_turn) {
        TConn a, b;
        attach(&a, 1, 5);
        attach(&b, 2, 5);
        a.detach = true;
        sched_turn(&sched, 100, 10, 100, serve, NULL);
        /* uid 1 was pinned while it was served, then freed. */
        ck_assert_uint_eq(sched_count(&sched, 1), 0);
        ck_assert_uint_eq(b.served, 5);
        ck_assert_uint_eq(sched.n_active, 0);
        sched_detach(&sched, &b.node);
        ck_assert_ptr_null(sched.users);
}
END_TEST

START_TEST(test_push_remove_idempotent) {
        TConn a;
        attach(&a, 3, 1);
        sched_push(&sched, &a.node);
        ck_assert_uint_eq(sched.n_active, 1);
        sched_remove(&sched, &a.node);
        sched_remove(&sched, &a.node);
        ck_assert_uint_eq(sched.n_active, 0);
        sched_turn(&sched, 10, 1, 1, serve, NULL);
        ck_assert_uint_eq(a.served, 0);
        sched_detach(&sched, &a.node);
        sched_detach(&sched, &a.node);
}
END_TEST

static Suite *uidsched_suite(void) {
        Suite *s = suite_create("uidsched");
        TCase *tc = tcase_create("turns");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_quota);
        tcase_add_test(tc, test_flood_gets_one_share);
        tcase_add_test(tc, test_round_robin_within_user);
        tcase_add_test(tc, test_users_alternate);
        tcase_add_test(tc, test_min_share);
        tcase_add_test(tc, test_zero_use_counts_as_one);
        tcase_add_test(tc, test_last_connection_leaves_mid_turn);
        tcase_add_test(tc, test_push_remove_idempotent);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return test_run(uidsched_suite());
}
