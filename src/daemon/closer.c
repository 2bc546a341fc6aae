/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Off-loop close(): see closer.h for why. The event loop appends fds to a
 * queue and wakes the thread only when it sleeps, so a busy loop pays one
 * mutex round trip per fd. Sockets get SO_LINGER switched off first, and
 * while the thread closes, a per-thread timer interrupts it every
 * CLOSER_INTERRUPT_MS, so no release that waits interruptibly (a lingering
 * socket in flight, a tty draining) holds up the fds queued behind it.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "closer.h"

#define CLOSER_BATCH 64
#define CLOSER_INTERRUPT_MS 20

struct Closer {
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        int *q;
        size_t n, cap;
        bool sleeping, stop;
        _Atomic uint64_t busy_since; /* start of the close under way, 0 when none */
};

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

static int interrupt_signal(void) {
        return SIGRTMIN + 2;
}

static void on_interrupt(int sig) {
        /* Nothing to do: the signal only ends an interruptible wait. */
}

static void install_handler(void) {
        struct sigaction sa = { .sa_handler = on_interrupt, .sa_flags = SA_RESTART };
        sigemptyset(&sa.sa_mask);
        (void) sigaction(interrupt_signal(), &sa, NULL);
}

static void close_now(int fd) {
        struct linger off = { .l_onoff = 0 };
        /* Fails harmlessly (ENOTSOCK) for anything but a socket. */
        (void) setsockopt(fd, SOL_SOCKET, SO_LINGER, &off, sizeof(off));
        close(fd);
}

static void arm(timer_t t, bool has_timer, bool on) {
        long ns = on ? CLOSER_INTERRUPT_MS * 1000000L : 0;
        struct itimerspec its = { .it_value.tv_nsec = ns, .it_interval.tv_nsec = ns };
        if (has_timer)
                (void) timer_settime(t, 0, &its, NULL);
}

static void *run(void *p) {
        Closer *c = p;
        int *batch = NULL;
        size_t cap = 0;
        timer_t timer;
        sigset_t mask;

        /* Created with every signal blocked; take only our own interrupt. */
        sigemptyset(&mask);
        sigaddset(&mask, interrupt_signal());
        pthread_sigmask(SIG_UNBLOCK, &mask, NULL);
        struct sigevent sev = { .sigev_notify = SIGEV_THREAD_ID, .sigev_signo = interrupt_signal() };
        sev._sigev_un._tid = gettid(); /* sigev_notify_thread_id, which glibc 2.36 does not name */
        bool has_timer = timer_create(CLOCK_MONOTONIC, &sev, &timer) == 0;

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
                arm(timer, has_timer, true);
                for (size_t i = 0; i < n; i++) {
                        atomic_store_explicit(&c->busy_since, now_usec(), memory_order_relaxed);
                        close_now(batch[i]);
                }
                atomic_store_explicit(&c->busy_since, 0, memory_order_relaxed);
                arm(timer, has_timer, false);
                pthread_mutex_lock(&c->lock);
        }
        pthread_mutex_unlock(&c->lock);
        if (has_timer)
                timer_delete(timer);
        free(batch);
        return NULL;
}

int closer_new(Closer **ret) {
        static pthread_once_t once = PTHREAD_ONCE_INIT;
        sigset_t all, old;

        (void) pthread_once(&once, install_handler);
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

uint64_t closer_busy_usec(const Closer *c, uint64_t now) {
        if (!c)
                return 0;
        uint64_t since = atomic_load_explicit(&((Closer *) c)->busy_since, memory_order_relaxed);
        return since && now > since ? now - since : 0;
}
