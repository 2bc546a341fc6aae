/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "peercred.h"
#include "policy.h"

#define LINE_MAX_BYTES 1024        /* a request line, newline included */
#define SESSION_OUT_HIGH (64 * 1024) /* stop reading requests above this much unsent reply */

#define SESSION_MAX_FDS 16 /* fds taken in with one read; more are an error */

typedef enum RequestType {
        REQ_CHECK,
        REQ_CHECK_PEER,
        REQ_PING,
        REQ_WHOAMI,
        REQ_EXPLAIN,
        REQ_EXPLAIN_PEER,
} RequestType;

/* Why a request is refused; the name is what goes after "ERR ". */
typedef enum ProtoError {
        PROTO_OK = 0,
        PROTO_BAD_REQUEST,
        PROTO_UNKNOWN_COMMAND,
        PROTO_BAD_ACTION,
        PROTO_LINE_TOO_LONG,
        PROTO_TIMEOUT,
        PROTO_NO_CREDENTIALS,
        PROTO_BAD_PEER_FD,
        PROTO_TOO_MANY_CONNECTIONS,
        PROTO_NOT_A_BROKER,
} ProtoError;

typedef struct Request {
        RequestType type;
        const char *action; /* points into the parsed line, NUL-terminated */
} Request;

#define PROTO_N_ERRORS (PROTO_NOT_A_BROKER + 1)

typedef struct Stats {
        uint64_t requests, allowed, denied, errors;
        uint64_t error_reasons[PROTO_N_ERRORS]; /* errors by ProtoError (index 0 unused) */
} Stats;

/* Count an ERR reply of reason @e. */
static inline void stats_error(Stats *st, ProtoError e) {
        st->errors++;
        if ((unsigned) e < PROTO_N_ERRORS)
                st->error_reasons[e]++;
}

/* File descriptors that arrived with one read, and the stream offset of
 * that read's last byte: they belong to the line containing that byte. */
typedef struct FdGroup {
        uint64_t at;
        int fds[SESSION_MAX_FDS];
        unsigned n;
        bool truncated; /* the kernel had more fds than we took */
} FdGroup;

/* Called for every decision; @broker is the client for CHECK-PEER, else NULL. */
typedef struct SessionHooks {
        void (*decision)(void *userdata, const char *action, const Verdict *v, const PeerCreds *subject,
                         const PeerCreds *broker);
        /* closes an fd a client sent (default: close()) */
        void (*close_fd)(void *userdata, int fd);
        /* login state for console conditions (NULL: no seats, see policy_check_console()) */
        const Console *console;
} SessionHooks;

/* Per-connection protocol state: framing, dispatch and queued replies. */
typedef struct Session {
        PeerCreds creds;
        char *in; /* bytes received but not yet handled (partial line or back-pressure) */
        size_t n_in;
        char *out; /* replies not yet sent: out[out_off..n_out) */
        size_t out_off, n_out, cap_out;
        bool closing; /* an ERR is queued: flush, then close; ignore further input */
        bool broker;  /* the policy names this client a broker: it may send CHECK-PEER */
        uint64_t pos;      /* stream offset of in[0] (of the next unhandled byte) */
        FdGroup *fdg;      /* received fds not yet handed to a line, oldest first */
        unsigned n_fdg;
        Policy *held_policy;       /* the policy for requests held back by back-pressure */
        const SessionHooks *hooks; /* optional */
        void *userdata;
} Session;

/*
 * The reference of an EXPLAIN reply for @v into @buf: "default", "id:NAME",
 * or "FILE:LINE" with FILE's bytes outside '!'..'~' and '%' written as %XX
 * (and its first byte too when FILE starts with "id:" or is "default"), so
 * that it holds no space and never reads as one of the other two forms.
 * Return: its length, or 0 when it does not fit in @size.
 */
size_t proto_ref(const Verdict *v, char *buf, size_t size);

/* "bad-request", ... for an error; NULL for PROTO_OK. */
const char *proto_error_name(ProtoError e);

/*
 * Parse one request line (without its newline). @line is modified in place
 * (arguments get NUL-terminated) and must have room for @len + 1 bytes.
 *
 * Return: PROTO_OK and *ret filled, or the error to reply with.
 */
ProtoError proto_parse(char *line, size_t len, Request *ret);

/* Take ownership of @creds (moved; *creds is zeroed). The session is not a
 * broker until the caller sets s->broker. */
void session_init(Session *s, PeerCreds *creds);
void session_done(Session *s);

/*
 * Feed @n bytes received from the client (@data is modified in place) and
 * handle every complete request while fewer than SESSION_OUT_HIGH reply bytes
 * are pending. Bytes not handled yet are kept; call again with n = 0 after
 * the output drained. After an error reply the session is closing and
 * discards all input.
 *
 * Requests kept back by back-pressure are answered with the policy that
 * was current when they were read (a reference is held meanwhile), so a
 * reload never changes the answer to a request already received.
 *
 * @fds (@n_fds of them, @truncated when the kernel had more) arrived with
 * these bytes; the session owns them from now on and closes every one.
 *
 * Return: number of complete requests handled (>= 0), or -ENOMEM.
 */
int session_feed(Session *s, Policy *p, Stats *stats, char *data, size_t n, const int *fds, size_t n_fds,
                 bool truncated);

/*
 * As session_feed(), but handle at most @max request lines (a bad line that
 * ends the session counts as one); complete lines beyond them are kept as a
 * backlog (session_has_backlog()) for a later call with n = 0. This is how
 * the server gives each connection a bounded share of a turn.
 */
int session_feed_max(Session *s, Policy *p, Stats *stats, char *data, size_t n, const int *fds, size_t n_fds,
                     bool truncated, unsigned max);

/* Queue "ERR <reason>" and start closing. Return: 0 or -ENOMEM. */
int session_fail(Session *s, ProtoError e, Stats *stats);

/* Pending reply bytes. */
static inline size_t session_pending(const Session *s) {
        return s->n_out - s->out_off;
}
static inline const char *session_out(const Session *s) {
        return s->out + s->out_off;
}
/* Mark @n pending bytes as sent. */
void session_sent(Session *s, size_t n);

/* Should the server read more from this client now? */
bool session_wants_input(const Session *s);

/* Are there complete requests kept back by back-pressure? */
bool session_has_backlog(const Session *s);
