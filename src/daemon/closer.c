/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Off-loop close(): see closer.h for why. The event loop appends fds to a
 * queue and wakes the thread only when it sleeps, so a busy loop pays one
 * mutex round trip per fd. Sockets get SO_LINGER switched off first, so a
 * lingering TCP socket does not even block this thread.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "closer.h"

#define CLOSER_BATCH 64

struct Closer {
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        int *q;
        size_t n, cap;
        bool sleeping, stop;
};

static void close_now(int fd) {
        struct linger off = { .l_onoff = 0 };
        /* Fails harmlessly (ENOTSOCK) for anything but a socket. */
        (void) setsockopt(fd, SOL_SOCKET, SO_LINGER, &off, sizeof(off));
        close(fd);
}

static void *run(void *p) {
        Closer *c = p;
        int *batch = NULL;
        size_t cap = 0;

        pthread_mutex_lock(&c->lock);
        for (;;) {
                while (c->n == 0 && !c->stop) {
                        c->sleeping = true;
                        pthread_cond_wait(&c->cond, &c->lock);
                        c->sleeping = false;
                }
                if (c->n == 0 && c->stop)
                        break;
                /* Swap the queue out and close without holding the lock. */
                int *q = c->q;
                size_t n = c->n, qcap = c->cap;
                c->q = batch;
                c->cap = cap;
                c->n = 0;
                batch = q;
                cap = qcap;
                pthread_mutex_unlock(&c->lock);
                for (size_t i = 0; i < n; i++)
                        close_now(batch[i]);
                pthread_mutex_lock(&c->lock);
        }
        pthread_mutex_unlock(&c->lock);
        free(batch);
        return NULL;
}

int closer_new(Closer **ret) {
        sigset_t all, old;
        Closer *c = calloc(1, sizeof(Closer));
        if (!c)
                return -ENOMEM;
        pthread_mutex_init(&c->lock, NULL);
        pthread_cond_init(&c->cond, NULL);
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int r = pthread_create(&c->thread, NULL, run, c);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r != 0) {
                free(c);
                return -r;
        }
        *ret = c;
        return 0;
}

Closer *closer_free(Closer *c) {
        if (!c)
                return NULL;
        pthread_mutex_lock(&c->lock);
        c->stop = true;
        pthread_cond_signal(&c->cond);
        pthread_mutex_unlock(&c->lock);
        /* A close() that never returns (a hung FUSE server) must not keep
         * the daemon from exiting: give up on the thread after a second. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        if (pthread_timedjoin_np(c->thread, NULL, &ts) != 0) {
                pthread_detach(c->thread);
                return NULL;
        }
        for (size_t i = 0; i < c->n; i++)
                close_now(c->q[i]);
        free(c->q);
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->cond);
        free(c);
        return NULL;
}

void closer_close(Closer *c, int fd) {
        if (fd < 0)
                return;
        if (!c) {
                close_now(fd);
                return;
        }
        pthread_mutex_lock(&c->lock);
        if (c->n == c->cap) {
                size_t cap = c->cap ? c->cap * 2 : 64;
                int *m = reallocarray(c->q, cap, sizeof(int));
                if (!m) {
                        pthread_mutex_unlock(&c->lock);
                        close_now(fd);
                        return;
                }
                c->q = m;
                c->cap = cap;
        }
        c->q[c->n++] = fd;
        /* Wake the thread in batches (closer_flush() does the rest), so a
         * busy loop does not pay a wakeup per connection. */
        if (c->sleeping && c->n >= CLOSER_BATCH)
                pthread_cond_signal(&c->cond);
        pthread_mutex_unlock(&c->lock);
}

void closer_flush(Closer *c) {
        if (!c)
                return;
        pthread_mutex_lock(&c->lock);
        if (c->sleeping && c->n > 0)
                pthread_cond_signal(&c->cond);
        pthread_mutex_unlock(&c->lock);
}
