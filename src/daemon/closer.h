/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdint.h>

typedef struct Closer Closer;

/*
 * A thread that closes file descriptors for the event loop. Closing can
 * block in the kernel in two ways a client can arrange:
 *
 *   - releasing a file (its last reference gone) runs its release code: a
 *     TCP socket with SO_LINGER and unsent data waits up to its linger
 *     time. That includes files still in flight inside a socket we close
 *     (queued SCM_RIGHTS messages are released with it). These waits are
 *     interruptible: the thread sends itself a signal every
 *     CLOSER_INTERRUPT_MS while it closes, which ends them.
 *   - close() of a descriptor of a file on a FUSE mount sends FLUSH and
 *     waits for the server, uninterruptibly, on every close. Nothing ends
 *     that but the FUSE server, which is why the server takes descriptors
 *     in only from brokers (see server.c) and gives their non-socket ones to
 *     a closer of their own.
 *
 * Return: 0 and *ret, or -errno.
 */
int closer_new(Closer **ret);

/* Close every fd still queued (on this thread), stop the thread; gives up
 * on a thread stuck in close() after a second. Return: NULL. */
Closer *closer_free(Closer *c);

/*
 * Queue @fd for closing; closes it at once when @c is NULL or out of memory.
 * The thread is woken per batch: call closer_flush() when done queueing.
 */
void closer_close(Closer *c, int fd);

/* Wake the thread if anything is queued. */
void closer_flush(Closer *c);

/* How long (µs, CLOCK_MONOTONIC) the close running now has taken at @now; 0 when idle. */
uint64_t closer_busy_usec(const Closer *c, uint64_t now);
