/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

typedef struct Closer Closer;

/*
 * A thread that closes file descriptors for the event loop. The last
 * close() of a client-supplied fd runs whatever the file does on release:
 * a TCP socket with SO_LINGER waits for its peer, a FUSE file waits for its
 * server. Any local user can send us such an fd (or leave one unread in a
 * connection's queue), so such closes must never run on the event loop.
 *
 * Return: 0 and *ret, or -errno.
 */
int closer_new(Closer **ret);

/* Close every fd still queued (on this thread), stop the thread. Return: NULL. */
Closer *closer_free(Closer *c);

/*
 * Queue @fd for closing; closes it at once when @c is NULL or out of memory.
 * The thread is woken per batch: call closer_flush() when done queueing.
 */
void closer_close(Closer *c, int fd);

/* Wake the thread if anything is queued. */
void closer_flush(Closer *c);
