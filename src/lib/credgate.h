/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libcredgate: ask credgated for authorization decisions.
 *
 * Conventions
 *   - Every call returns 0 on success or a negative errno-style code; see
 *     credgate_strerror(). Decisions come back through an out-parameter,
 *     which is written only on success.
 *   - Only an explicit "ALLOW" reply from the daemon yields CREDGATE_ALLOW.
 *     An "ERR" reply, a short read, a timeout, or a malformed or unexpected
 *     reply is an error, never an allow.
 *   - Socket path: the argument if not NULL, else $CREDGATE_SOCKET if set and
 *     not empty, else CREDGATE_SOCKET_DEFAULT. The variable is read with
 *     secure_getenv(): a setuid, setgid or file-capability program (AT_SECURE)
 *     ignores it and uses the default unless it passes a path itself.
 *   - Each call that talks to the daemon gives up after the connection's
 *     timeout (default CREDGATE_TIMEOUT_DEFAULT_MS) with -ETIMEDOUT.
 *   - The library never logs and never writes to stdout or stderr, and it
 *     never raises SIGPIPE.
 *
 * Thread safety
 *   One credgate connection must not be used by two threads at the same
 *   time; separate connections may be used concurrently. credgate_check_once(),
 *   credgate_peer_creds() and credgate_strerror() are thread-safe.
 *
 * After any error except -EINVAL for a bad argument, a connection is broken:
 * further calls return -ENOTCONN. Close it and open a new one.
 */
#ifndef CREDGATE_H
#define CREDGATE_H

#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CREDGATE_SOCKET_DEFAULT "/run/credgate/credgate.sock"
#define CREDGATE_TIMEOUT_DEFAULT_MS 5000
#define CREDGATE_ACTION_MAX 255

/* DENY is the zero value: an unset decision denies. */
typedef enum credgate_decision {
        CREDGATE_DENY = 0,
        CREDGATE_ALLOW = 1,
} credgate_decision;

/* The kernel-verified identity of a socket peer. */
typedef struct credgate_creds {
        pid_t pid;
        uid_t uid;
        gid_t gid;
        size_t n_groups;
        gid_t *groups; /* supplementary groups, ascending, no duplicates */
} credgate_creds;

/* A connection to credgated; reusable for many requests. */
typedef struct credgate credgate;

/*
 * Connect to the daemon at @socket_path (NULL: $CREDGATE_SOCKET or the
 * default).
 *
 * Return: 0 and *ret, -ENOENT/-ECONNREFUSED when no daemon listens,
 * -ETIMEDOUT, -ENAMETOOLONG, -ENOMEM, or another -errno from connect().
 */
int credgate_open(const char *socket_path, credgate **ret);

/* Close @c (NULL is fine). Return: NULL. */
credgate *credgate_close(credgate *c);

/*
 * Set the time limit for each later call on @c, in milliseconds (> 0).
 * Return: 0, or -EINVAL.
 */
int credgate_set_timeout(credgate *c, int timeout_ms);

/*
 * May this process perform @action? @action is 1..255 characters of
 * [A-Za-z0-9._:/-].
 *
 * Return: 0 and *ret, -EINVAL for a bad action, or an error (see above).
 */
int credgate_check(credgate *c, const char *action, credgate_decision *ret);

/*
 * Check @n actions at once: all requests are sent before the replies are
 * read (pipelined). ret_decisions[i] answers actions[i]; the array is written
 * only when every reply arrived.
 *
 * Return: 0, -EINVAL when any action is bad (nothing is sent), -EBADMSG when
 * the daemon sent more than @n replies, or an error.
 */
int credgate_check_many(credgate *c, const char *const *actions, size_t n, credgate_decision *ret_decisions);

/*
 * Broker query: may the peer of @peer_fd perform @action? @peer_fd is a
 * connected Unix stream socket, e.g. one a service accepted; the daemon
 * decides for the process at its other end, not for the caller. @peer_fd
 * stays open and owned by the caller.
 *
 * Return: 0 and *ret, -EINVAL for a bad action, -EBADF when the daemon
 * refuses the fd (not a connected Unix stream socket), -EPERM when this
 * process is not a broker the daemon's policy names (settings "brokers"):
 * the daemon answered "ERR not-a-broker", or its socket refused the
 * descriptor (SO_PASSRIGHTS), or an error.
 */
int credgate_check_peer(credgate *c, int peer_fd, const char *action, credgate_decision *ret);

/*
 * A decision with its reason (EXPLAIN). Fill with credgate_explain(),
 * free with credgate_explanation_clear().
 */
typedef struct credgate_explanation {
        credgate_decision decision;
        /* Which rule decided: "id:NAME" (the rule's id), "FILE:LINE" (a rule
         * without id; FILE %XX-escaped, see credgate(7) protocol), or
         * "default". */
        char *ref;
        /* The rule's message, 1..200 printable ASCII characters, or NULL. */
        char *message;
} credgate_explanation;

/*
 * As credgate_check(), and say why: the deciding rule and its message, to
 * show to a user who was denied. Messages are written by the policy's
 * authors and readable by every local user.
 * Return: 0 and *ret (free with credgate_explanation_clear()), -EINVAL for a
 * bad action, or an error (see above).
 */
int credgate_explain(credgate *c, const char *action, credgate_explanation *ret);

/* As credgate_check_peer(), with the reason of credgate_explain(). */
int credgate_explain_peer(credgate *c, int peer_fd, const char *action, credgate_explanation *ret);

/* Free what credgate_explain() put in @e and zero it (NULL is fine). */
void credgate_explanation_clear(credgate_explanation *e);

/*
 * Ask the daemon who it sees on this connection.
 * Return: 0 and *ret (free with credgate_creds_clear()), or an error.
 */
int credgate_whoami(credgate *c, credgate_creds *ret);

/* Return: 0 when the daemon answers PONG, or an error. */
int credgate_ping(credgate *c);

/*
 * One-shot check: connect, ask, close.
 * Return: as credgate_open() and credgate_check().
 */
int credgate_check_once(const char *socket_path, const char *action, credgate_decision *ret);

/*
 * The peer credentials of any connected Unix stream socket @fd (no daemon
 * involved): SO_PEERCRED and SO_PEERGROUPS as the kernel recorded them at
 * connect() time.
 *
 * Return: 0 and *ret (free with credgate_creds_clear()), -ENOTCONN when @fd
 * has no connected peer (including listening sockets), or another -errno.
 */
int credgate_peer_creds(int fd, credgate_creds *ret);

/* Free what credgate_whoami()/credgate_peer_creds() allocated; zeroes *c. */
void credgate_creds_clear(credgate_creds *c);

/*
 * A description of an error code returned by this library (negative or
 * positive). Return: a static string, never NULL.
 */
const char *credgate_strerror(int error);

#ifdef __cplusplus
}
#endif

#endif
