/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The line protocol of one connection (session.c), driven without sockets:
 * framing, the order of the checks behind every ERR reason, pipelining,
 * requests split at any byte, back-pressure and the statistics.
 *
 * Every feed goes through a fresh heap copy of the bytes (session_feed()
 * writes into its input), so valgrind and ASan see any read past what the
 * client sent or any pointer kept into the caller's buffer.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <sys/socket.h>
#include <fcntl.h>

#include "action.h"
#include "macro.h"
#include "session.h"
#include "testutil.h"

/* What the session replies to WHOAMI with the default identity below. */
#define CREDS_LINE "CREDS pid=4242 uid=1000 gid=1000 groups=4,50,100\n"

static Policy *policy;
static Session session;
static Stats stats;

/*
 * Per-test allocations, freed by the teardown: a failing assertion in
 * CK_FORK=no mode (valgrind runs) jumps out of the test and must not leak.
 */
static void **scratch;
static size_t n_scratch, cap_scratch;

static void *track(void *p) {
        ck_assert_ptr_nonnull(p);
        if (n_scratch == cap_scratch) {
                cap_scratch = cap_scratch ? 2 * cap_scratch : 64;
                scratch = realloc(scratch, cap_scratch * sizeof(void *));
                ck_assert_ptr_nonnull(scratch);
        }
        scratch[n_scratch++] = p;
        return p;
}

static void *tmalloc(size_t n) {
        return track(malloc(n ? n : 1));
}

static void *trealloc(void *old, size_t n) {
        if (!old)
                return tmalloc(n);
        void *p = realloc(old, n);
        ck_assert_ptr_nonnull(p);
        for (size_t i = n_scratch; i-- > 0;)
                if (scratch[i] == old) {
                        scratch[i] = p;
                        return p;
                }
        ck_abort_msg("untracked buffer");
        return NULL;
}

static void scratch_free(void) {
        for (size_t i = 0; i < n_scratch; i++)
                free(scratch[i]);
        free(scratch);
        scratch = NULL;
        n_scratch = cap_scratch = 0;
}

/* A growing byte buffer for the replies collected from a session. */
typedef struct Buf {
        char *data;
        size_t n, cap;
} Buf;

static void buf_add(Buf *b, const char *data, size_t n) {
        if (b->n + n + 1 > b->cap) {
                size_t cap = b->cap ? b->cap : 256;
                while (cap < b->n + n + 1)
                        cap *= 2;
                b->data = trealloc(b->data, cap);
                b->cap = cap;
        }
        memcpy(b->data + b->n, data, n);
        b->n += n;
        b->data[b->n] = '\0';
}

static void add_rule(PolicyBuilder *b, const char *action, Decision effect, bool anyone, const IdRange *uids,
                     size_t n_uids, const IdRange *gids, size_t n_gids) {
        RuleSpec r = {
                .action = action,
                .effect = effect,
                .anyone = anyone,
                .uids = uids,
                .n_uids = n_uids,
                .gids = gids,
                .n_gids = n_gids,
                .line = 1,
        };
        ck_assert_int_eq(policy_builder_add_rule(b, &r), 0);
}

static char long_action[ACTION_MAX + 1]; /* 255 x 'a', allowed by the policy */

static void add_explained(PolicyBuilder *b, const char *action, Decision effect, const char *id, const char *message,
                          unsigned line) {
        RuleSpec r = { .action = action, .effect = effect, .anyone = true, .line = line, .id = id, .message = message };
        ck_assert_int_eq(policy_builder_add_rule(b, &r), 0);
}

static Policy *make_policy(Decision dflt) {
        static const IdRange uid1000 = { 1000, 1000 }, gid50 = { 50, 50 };
        PolicyBuilder *b = policy_builder_new();
        Policy *p = NULL;

        ck_assert_ptr_nonnull(b);
        ck_assert_int_eq(policy_builder_add_file(b, "test.conf"), 0);
        add_rule(b, "org.example.allow", DECISION_ALLOW, true, NULL, 0, NULL, 0);
        add_rule(b, "org.example.deny", DECISION_DENY, true, NULL, 0, NULL, 0);
        add_rule(b, "org.example.uid", DECISION_ALLOW, false, &uid1000, 1, NULL, 0);
        add_rule(b, "org.example.group", DECISION_ALLOW, false, NULL, 0, &gid50, 1);
        add_rule(b, "org.example.pat.*", DECISION_ALLOW, true, NULL, 0, NULL, 0);
        add_rule(b, long_action, DECISION_ALLOW, true, NULL, 0, NULL, 0);
        add_explained(b, "org.example.why.deny", DECISION_DENY, "no-bob-backup",
                      "Backups run from the ops rota; ask #ops -- or not", 7);
        add_explained(b, "org.example.why.allow", DECISION_ALLOW, NULL, "ALLOW", 8);
        add_explained(b, "org.example.why.plain", DECISION_ALLOW, "plain", NULL, 9);
        add_explained(b, "org.example.home.{uid}", DECISION_ALLOW, NULL, NULL, 10);
        add_explained(b, "org.example.grp.{gid}.x", DECISION_ALLOW, NULL, NULL, 11);
        policy_builder_set_default(b, dflt);
        ck_assert_int_eq(policy_builder_finish(b, &p), 0);
        ck_assert_ptr_nonnull(p);
        return p;
}

/* Whether start_session() makes a broker session (the check-peer cases do). */
static bool as_broker;

/* (Re)start the global session with the given identity. */
static void start_session(pid_t pid, uid_t uid, gid_t gid, const gid_t *groups, size_t n_groups) {
        PeerCreds c = { .pid = pid, .uid = uid, .gid = gid, .n_groups = n_groups };

        if (n_groups > 0) {
                c.groups = malloc(n_groups * sizeof(gid_t));
                ck_assert_ptr_nonnull(c.groups);
                memcpy(c.groups, groups, n_groups * sizeof(gid_t));
        }
        session_done(&session);
        session_init(&session, &c);
        ck_assert_ptr_null(c.groups);
        ck_assert_uint_eq(c.n_groups, 0);
        ck_assert(!session.broker); /* not a broker unless the server says so */
        session.broker = as_broker;
        stats = (Stats){};
}

static void setup(void) {
        static const gid_t groups[] = { 4, 50, 100 };

        memset(long_action, 'a', ACTION_MAX);
        long_action[ACTION_MAX] = '\0';
        policy = make_policy(DECISION_DENY);
        session = (Session){};
        start_session(4242, 1000, 1000, groups, ELEMENTSOF(groups));
}

static void teardown(void) {
        session_done(&session);
        policy = policy_unref(policy);
        scratch_free();
}

/* Feed @n bytes of @data through a writable heap copy. */
static int feed_n(const char *data, size_t n) {
        char *copy = malloc(n ? n : 1);
        ck_assert_ptr_nonnull(copy);
        if (n > 0)
                memcpy(copy, data, n);
        int r = session_feed(&session, policy, &stats, copy, n, NULL, 0, false);
        free(copy);
        return r;
}

static int feed(const char *text) {
        return feed_n(text, strlen(text));
}

/* Take every pending reply byte as a string and mark it sent. */
static char *drain(void) {
        size_t n = session_pending(&session);
        char *s = tmalloc(n + 1);

        if (n > 0)
                memcpy(s, session_out(&session), n);
        s[n] = '\0';
        session_sent(&session, n);
        ck_assert_uint_eq(session_pending(&session), 0);
        return s;
}

/* Assert that the pending replies are exactly @expected, and consume them. */
static void expect_out(const char *expected) {
        char *got = drain();
        ck_assert_str_eq(got, expected);
}

/* Feed @text in one piece and expect exactly @expected back. */
static void roundtrip(const char *text, const char *expected) {
        ck_assert_int_ge(feed(text), 0);
        expect_out(expected);
}

/* ------------------------------------------------------------------------- */
/* Requests and their replies */

START_TEST(test_ping) {
        ck_assert_int_eq(feed("PING\n"), 1);
        expect_out("PONG\n");
        ck_assert(!session.closing);
        ck_assert(session_wants_input(&session));
        ck_assert_uint_eq(stats.requests, 1);
        ck_assert_uint_eq(stats.errors, 0);
}
END_TEST

START_TEST(test_whoami) {
        ck_assert_int_eq(feed("WHOAMI\n"), 1);
        expect_out(CREDS_LINE);
        ck_assert(!session.closing);
}
END_TEST

START_TEST(test_whoami_no_groups) {
        start_session(1, 0, 0, NULL, 0);
        roundtrip("WHOAMI\n", "CREDS pid=1 uid=0 gid=0 groups=\n");
}
END_TEST

START_TEST(test_whoami_one_group) {
        static const gid_t g[] = { 27 };
        start_session(77, 5, 6, g, ELEMENTSOF(g));
        roundtrip("WHOAMI\n", "CREDS pid=77 uid=5 gid=6 groups=27\n");
}
END_TEST

START_TEST(test_whoami_large_ids) {
        /* 2^31 and (uid_t)-2 must print unsigned, never negative or truncated. */
        static const gid_t g[] = { 0, 2147483647u, 2147483648u, 4294967294u };
        start_session(2147483647, 4294967294u, 2147483648u, g, ELEMENTSOF(g));
        roundtrip("WHOAMI\n",
                  "CREDS pid=2147483647 uid=4294967294 gid=2147483648 groups=0,2147483647,2147483648,4294967294\n");
}
END_TEST

START_TEST(test_whoami_many_groups) {
        /* The reply is sized from the group count: 10-digit ids push it hardest. */
        enum { N = 1000 };
        static const char head[] = "CREDS pid=4294967 uid=4294967294 gid=4294967294 groups=";
        gid_t *g = tmalloc(N * sizeof(gid_t));
        Buf want = {};

        for (size_t i = 0; i < N; i++)
                g[i] = 4000000000u + (gid_t) i;
        start_session(4294967, 4294967294u, 4294967294u, g, N);
        buf_add(&want, head, strlen(head));
        for (size_t i = 0; i < N; i++) {
                char num[16];
                int n = snprintf(num, sizeof(num), "%s%u", i ? "," : "", (unsigned) g[i]);
                buf_add(&want, num, (size_t) n);
        }
        buf_add(&want, "\n", 1);
        roundtrip("WHOAMI\n", want.data);
}
END_TEST

START_TEST(test_check_allow_deny) {
        roundtrip("CHECK org.example.allow\n", "ALLOW\n");
        roundtrip("CHECK org.example.deny\n", "DENY\n");
        roundtrip("CHECK org.example.unknown\n", "DENY\n");
        roundtrip("CHECK org.example.uid\n", "ALLOW\n");
        roundtrip("CHECK org.example.group\n", "ALLOW\n"); /* supplementary group 50 */
        roundtrip("CHECK org.example.pat.x\n", "ALLOW\n");
        roundtrip("CHECK org.example.pat.\n", "ALLOW\n");
        roundtrip("CHECK org.example.pat\n", "DENY\n");
        roundtrip("CHECK ORG.EXAMPLE.ALLOW\n", "DENY\n"); /* case-sensitive */
        ck_assert(!session.closing);
        ck_assert_uint_eq(stats.requests, 9);
        ck_assert_uint_eq(stats.allowed, 5);
        ck_assert_uint_eq(stats.denied, 4);
        ck_assert_uint_eq(stats.errors, 0);
}
END_TEST

/* EXPLAIN answers like CHECK, plus the rule and its message; CHECK's replies stay as they were. */
START_TEST(test_explain) {
        roundtrip("EXPLAIN org.example.why.deny\n", "DENY id:no-bob-backup -- Backups run from the ops rota; ask #ops -- or not\n");
        roundtrip("CHECK org.example.why.deny\n", "DENY\n");
        roundtrip("EXPLAIN org.example.why.allow\n", "ALLOW test.conf:8 -- ALLOW\n");
        roundtrip("EXPLAIN org.example.why.plain\n", "ALLOW id:plain\n");
        roundtrip("EXPLAIN org.example.allow\n", "ALLOW test.conf:1\n");
        roundtrip("EXPLAIN org.example.unknown\n", "DENY default\n");
        roundtrip("EXPLAIN org.example.uid\n", "ALLOW test.conf:1\n");
        roundtrip("PING\nEXPLAIN org.example.deny\nCHECK org.example.allow\n", "PONG\nDENY test.conf:1\nALLOW\n");
        ck_assert(!session.closing);
        ck_assert_uint_eq(stats.requests, 10); /* PING counts too */
        ck_assert_uint_eq(stats.allowed, 5);
        ck_assert_uint_eq(stats.denied, 4);
}
END_TEST

/* {uid}: exactly the session's own uid, as printed: 1000, not 100, 10000 or 01000. {gid}: any gid it holds. */
START_TEST(test_placeholders) {
        roundtrip("CHECK org.example.home.1000\n", "ALLOW\n");
        roundtrip("CHECK org.example.home.100\n", "DENY\n");
        roundtrip("CHECK org.example.home.10000\n", "DENY\n");
        roundtrip("CHECK org.example.home.01000\n", "DENY\n");
        roundtrip("CHECK org.example.home.1000.x\n", "DENY\n");
        roundtrip("CHECK org.example.home.\n", "DENY\n");
        roundtrip("EXPLAIN org.example.home.1000\n", "ALLOW test.conf:10\n");
        roundtrip("CHECK org.example.grp.1000.x\n", "ALLOW\n"); /* primary */
        roundtrip("CHECK org.example.grp.50.x\n", "ALLOW\n");   /* supplementary */
        roundtrip("CHECK org.example.grp.51.x\n", "DENY\n");
        roundtrip("CHECK org.example.grp.050.x\n", "DENY\n");
        start_session(1, 0, 0, NULL, 0);
        roundtrip("CHECK org.example.home.0\n", "ALLOW\n");
        roundtrip("CHECK org.example.home.00\n", "DENY\n");
        roundtrip("CHECK org.example.grp.0.x\n", "ALLOW\n");
        start_session(1, 4294967294u, 4000000000u, NULL, 0);
        roundtrip("CHECK org.example.home.4294967294\n", "ALLOW\n");
        roundtrip("CHECK org.example.home.4294967295\n", "DENY\n");
        roundtrip("CHECK org.example.home.-2\n", "DENY\n");
        roundtrip("CHECK org.example.grp.4000000000.x\n", "ALLOW\n");
        roundtrip("CHECK org.example.home.42949672940\n", "DENY\n");
}
END_TEST

/* A rule without id is named FILE:LINE with FILE escaped so that the
 * reference holds no space or control byte and never reads as "id:..." or
 * "default". */
START_TEST(test_proto_ref) {
        char buf[64];
        Verdict v = { .file = "/etc/a b%\n\xc3\xa9.conf", .line = 12 };
        ck_assert_uint_eq(proto_ref(&v, buf, sizeof(buf)), strlen("/etc/a%20b%25%0A%C3%A9.conf:12"));
        ck_assert_str_eq(buf, "/etc/a%20b%25%0A%C3%A9.conf:12");
        v.file = "id:x";
        proto_ref(&v, buf, sizeof(buf));
        ck_assert_str_eq(buf, "%69d:x:12");
        v.file = "default";
        proto_ref(&v, buf, sizeof(buf));
        ck_assert_str_eq(buf, "%64efault:12");
        v.file = "defaults";
        proto_ref(&v, buf, sizeof(buf));
        ck_assert_str_eq(buf, "defaults:12");
        v.id = "r1";
        proto_ref(&v, buf, sizeof(buf));
        ck_assert_str_eq(buf, "id:r1");
        v = (Verdict){ .by_default = true };
        proto_ref(&v, buf, sizeof(buf));
        ck_assert_str_eq(buf, "default");
        v = (Verdict){ .file = "/a/very/long/path/that/does/not/fit/in/the/buffer/at/all.conf", .line = 1 };
        ck_assert_uint_eq(proto_ref(&v, buf, 20), 0);
}
END_TEST

START_TEST(test_check_uses_session_identity) {
        /* Another identity on the same policy: the uid and group rules no longer match. */
        static const gid_t g[] = { 4, 100 };
        start_session(99, 1001, 1001, g, ELEMENTSOF(g));
        roundtrip("CHECK org.example.uid\n", "DENY\n");
        roundtrip("CHECK org.example.group\n", "DENY\n");
        roundtrip("CHECK org.example.allow\n", "ALLOW\n");
        /* The primary gid counts for a group entry too. */
        start_session(99, 1001, 50, NULL, 0);
        roundtrip("CHECK org.example.group\n", "ALLOW\n");
}
END_TEST

START_TEST(test_check_default_allow) {
        policy = policy_unref(policy);
        policy = make_policy(DECISION_ALLOW);
        roundtrip("CHECK org.example.unknown\n", "ALLOW\n");
        roundtrip("CHECK org.example.deny\n", "DENY\n");
        ck_assert_uint_eq(stats.allowed, 1);
        ck_assert_uint_eq(stats.denied, 1);
}
END_TEST

START_TEST(test_check_action_alphabet) {
        roundtrip("CHECK Az09._:/-\n", "DENY\n");
        roundtrip("CHECK a\n", "DENY\n");
        ck_assert(!session.closing);
        ck_assert_uint_eq(stats.errors, 0);
}
END_TEST

START_TEST(test_check_action_255) {
        char line[8 + ACTION_MAX];
        snprintf(line, sizeof(line), "CHECK %s\n", long_action);
        ck_assert_uint_eq(strlen(line), 6 + 255 + 1);
        /* The policy allows exactly this 255-character name: the whole name was checked. */
        roundtrip(line, "ALLOW\n");
        line[6 + 254] = 'b';
        roundtrip(line, "DENY\n");
        ck_assert(!session.closing);
}
END_TEST

/* ------------------------------------------------------------------------- */
/* Every ERR reason, in the documented order of checks */

typedef struct ErrCase {
        const char *line; /* without its newline */
        size_t len;
        ProtoError error;
} ErrCase;

#define E(s, e) { s, sizeof(s) - 1, e }
static const ErrCase err_cases[] = {
        /* 1. empty, or a byte outside printable ASCII */
        E("", PROTO_BAD_REQUEST),
        E("\0", PROTO_BAD_REQUEST),
        E("PING\0", PROTO_BAD_REQUEST),
        E("CHECK a\0b", PROTO_BAD_REQUEST),
        E("CHECK\ta", PROTO_BAD_REQUEST),
        E("PING\t", PROTO_BAD_REQUEST),
        E("PING\r", PROTO_BAD_REQUEST),
        E("CHECK a\r", PROTO_BAD_REQUEST),
        E("PING\x7f", PROTO_BAD_REQUEST),
        E("CHECK a\x7f", PROTO_BAD_REQUEST),
        E("PING\x80", PROTO_BAD_REQUEST),
        E("CHECK \xff", PROTO_BAD_REQUEST),
        E("CHECK caf\xc3\xa9", PROTO_BAD_REQUEST),
        E("\x1f", PROTO_BAD_REQUEST),
        E("\x1b[0m", PROTO_BAD_REQUEST),
        /* the byte check comes before the verb check and the argument checks */
        E("ping\t", PROTO_BAD_REQUEST),
        E("FOO\r", PROTO_BAD_REQUEST),
        E("CHECK a*b\x80", PROTO_BAD_REQUEST),
        /* 2. unknown or lower-case verb */
        E("check x", PROTO_UNKNOWN_COMMAND),
        E("ping", PROTO_UNKNOWN_COMMAND),
        E("Ping", PROTO_UNKNOWN_COMMAND),
        E("whoami", PROTO_UNKNOWN_COMMAND),
        E("FOO", PROTO_UNKNOWN_COMMAND),
        E("FOO a b", PROTO_UNKNOWN_COMMAND),
        E("PINGX", PROTO_UNKNOWN_COMMAND),
        E("PIN", PROTO_UNKNOWN_COMMAND),
        E("CHECKa", PROTO_UNKNOWN_COMMAND),
        E("WHOAMIx", PROTO_UNKNOWN_COMMAND),
        E(" PING", PROTO_UNKNOWN_COMMAND),
        E(" ", PROTO_UNKNOWN_COMMAND),
        E("FOO a*b", PROTO_UNKNOWN_COMMAND), /* verb before action */
        /* 3. wrong number of arguments, or an empty one */
        E("CHECK", PROTO_BAD_REQUEST),
        E("CHECK ", PROTO_BAD_REQUEST),
        E("CHECK a b", PROTO_BAD_REQUEST),
        E("CHECK  a", PROTO_BAD_REQUEST),
        E("CHECK a ", PROTO_BAD_REQUEST),
        E("CHECK  ", PROTO_BAD_REQUEST),
        E("CHECK a*b c", PROTO_BAD_REQUEST), /* arguments before action */
        E("PING x", PROTO_BAD_REQUEST),
        E("PING ", PROTO_BAD_REQUEST),
        E("WHOAMI x", PROTO_BAD_REQUEST),
        E("WHOAMI ", PROTO_BAD_REQUEST),
        /* 4. action outside the grammar */
        E("CHECK a*b", PROTO_BAD_ACTION),
        E("CHECK *", PROTO_BAD_ACTION),
        E("CHECK org.example.*", PROTO_BAD_ACTION),
        E("CHECK a!b", PROTO_BAD_ACTION),
        E("CHECK a,b", PROTO_BAD_ACTION),
        E("CHECK a\"b", PROTO_BAD_ACTION),
        E("CHECK a~", PROTO_BAD_ACTION),
        /* CHECK-PEER follows the same grammar */
        E("check-peer a", PROTO_UNKNOWN_COMMAND),
        E("CHECK-PEERS a", PROTO_UNKNOWN_COMMAND),
        E("CHECK-PEER", PROTO_BAD_REQUEST),
        E("CHECK-PEER ", PROTO_BAD_REQUEST),
        E("CHECK-PEER a b", PROTO_BAD_REQUEST),
        E("CHECK-PEER a*", PROTO_BAD_ACTION),
        /* EXPLAIN and EXPLAIN-PEER: the same grammar, the same errors */
        E("explain a", PROTO_UNKNOWN_COMMAND),
        E("EXPLAINS a", PROTO_UNKNOWN_COMMAND),
        E("EXPLAIN-PEERS a", PROTO_UNKNOWN_COMMAND),
        E("EXPLAIN", PROTO_BAD_REQUEST),
        E("EXPLAIN ", PROTO_BAD_REQUEST),
        E("EXPLAIN a b", PROTO_BAD_REQUEST),
        E("EXPLAIN  a", PROTO_BAD_REQUEST),
        E("EXPLAIN a*", PROTO_BAD_ACTION),
        E("EXPLAIN a{uid}", PROTO_BAD_ACTION),
        E("EXPLAIN a\x80", PROTO_BAD_REQUEST),
        E("EXPLAIN-PEER", PROTO_BAD_REQUEST),
        E("EXPLAIN-PEER a b", PROTO_BAD_REQUEST),
        E("EXPLAIN-PEER *", PROTO_BAD_ACTION),
};
#undef E

static const char *err_reply(ProtoError e) {
        switch (e) {
        case PROTO_BAD_REQUEST:
                return "ERR bad-request\n";
        case PROTO_UNKNOWN_COMMAND:
                return "ERR unknown-command\n";
        case PROTO_BAD_ACTION:
                return "ERR bad-action\n";
        case PROTO_LINE_TOO_LONG:
                return "ERR line-too-long\n";
        case PROTO_TIMEOUT:
                return "ERR timeout\n";
        case PROTO_NO_CREDENTIALS:
                return "ERR no-credentials\n";
        case PROTO_BAD_PEER_FD:
                return "ERR bad-peer-fd\n";
        case PROTO_TOO_MANY_CONNECTIONS:
                return "ERR too-many-connections\n";
        case PROTO_NOT_A_BROKER:
                return "ERR not-a-broker\n";
        case PROTO_OK:
                break;
        }
        ck_abort_msg("no reply for %d", (int) e);
        return NULL;
}

/* Print bytes readably in failure messages (truncated to fit @out). */
static const char *show(char out[static 128], const char *s, size_t n) {
        size_t k = 0;
        for (size_t i = 0; i < n && k + 5 < 128; i++) {
                unsigned char c = (unsigned char) s[i];
                if (c >= 0x20 && c < 0x7f)
                        out[k++] = (char) c;
                else
                        k += (size_t) snprintf(out + k, 128 - k, "\\x%02x", c);
        }
        out[k] = '\0';
        return out;
}

START_TEST(test_err_parse) {
        const ErrCase *c = &err_cases[_i];
        char *line = tmalloc(c->len + 1); /* proto_parse writes line[len] */
        Request req = { .type = REQ_WHOAMI, .action = "untouched" };

        memcpy(line, c->line, c->len);
        line[c->len] = '\n';
        ProtoError e = proto_parse(line, c->len, &req);
        char shown[128];
        ck_assert_msg(e == c->error, "'%s': got %d, expected %d", show(shown, c->line, c->len), (int) e,
                      (int) c->error);
}
END_TEST

START_TEST(test_err_session) {
        const ErrCase *c = &err_cases[_i];
        char *line = tmalloc(c->len + 1);

        memcpy(line, c->line, c->len);
        line[c->len] = '\n';
        ck_assert_int_ge(feed_n(line, c->len + 1), 0);

        char *got = drain(), shown[128], shown_got[128];
        ck_assert_msg(strcmp(got, err_reply(c->error)) == 0, "'%s': got '%s', expected '%s'",
                      show(shown, c->line, c->len), show(shown_got, got, strlen(got)), err_reply(c->error));
        ck_assert(session.closing);
        ck_assert(!session_wants_input(&session));
        ck_assert(!session_has_backlog(&session));
        ck_assert_uint_eq(stats.errors, 1);
        ck_assert_uint_eq(stats.requests, 0);
        /* Closed: later input is ignored. */
        ck_assert_int_eq(feed("PING\n"), 0);
        ck_assert_uint_eq(session_pending(&session), 0);
}
END_TEST

START_TEST(test_err_action_256) {
        char line[8 + ACTION_MAX + 1];
        snprintf(line, sizeof(line), "CHECK %sa\n", long_action);
        ck_assert_uint_eq(strlen(line), 6 + 256 + 1);
        roundtrip(line, "ERR bad-action\n");
        ck_assert(session.closing);
}
END_TEST

START_TEST(test_parse_ok) {
        char l1[] = "CHECK org.example.x\n", l2[] = "PING\n", l3[] = "WHOAMI\n";
        Request r;

        ck_assert_int_eq(proto_parse(l1, sizeof(l1) - 2, &r), PROTO_OK);
        ck_assert_int_eq(r.type, REQ_CHECK);
        ck_assert_str_eq(r.action, "org.example.x");
        ck_assert_int_eq(proto_parse(l2, sizeof(l2) - 2, &r), PROTO_OK);
        ck_assert_int_eq(r.type, REQ_PING);
        ck_assert_int_eq(proto_parse(l3, sizeof(l3) - 2, &r), PROTO_OK);
        ck_assert_int_eq(r.type, REQ_WHOAMI);
}
END_TEST

START_TEST(test_error_names) {
        ck_assert_ptr_null(proto_error_name(PROTO_OK));
        ck_assert_str_eq(proto_error_name(PROTO_BAD_REQUEST), "bad-request");
        ck_assert_str_eq(proto_error_name(PROTO_UNKNOWN_COMMAND), "unknown-command");
        ck_assert_str_eq(proto_error_name(PROTO_BAD_ACTION), "bad-action");
        ck_assert_str_eq(proto_error_name(PROTO_LINE_TOO_LONG), "line-too-long");
        ck_assert_str_eq(proto_error_name(PROTO_TIMEOUT), "timeout");
        ck_assert_str_eq(proto_error_name(PROTO_NO_CREDENTIALS), "no-credentials");
        ck_assert_str_eq(proto_error_name(PROTO_BAD_PEER_FD), "bad-peer-fd");
        ck_assert_str_eq(proto_error_name(PROTO_TOO_MANY_CONNECTIONS), "too-many-connections");
        ck_assert_str_eq(proto_error_name(PROTO_NOT_A_BROKER), "not-a-broker");
}
END_TEST

/* ------------------------------------------------------------------------- */
/* Framing: the 1024-byte limit */

/* A line of @len bytes of 'a' after @prefix, then @tail (may be ""). */
static char *make_line(const char *prefix, size_t len, const char *tail) {
        size_t np = strlen(prefix), nt = strlen(tail);
        char *s = tmalloc(np + len + nt + 1);
        memcpy(s, prefix, np);
        memset(s + np, 'a', len);
        memcpy(s + np + len, tail, nt + 1);
        return s;
}

START_TEST(test_line_1024_with_newline) {
        /* 1023 bytes + '\n' is a complete line: it is parsed (no valid request is
         * that long, so the reply is the parser's, not line-too-long). */
        char *l = make_line("CHECK ", 1023 - 6, "\n");
        ck_assert_uint_eq(strlen(l), LINE_MAX_BYTES);
        roundtrip(l, "ERR bad-action\n");
}
END_TEST

START_TEST(test_line_1024_unknown_verb) {
        char *l = make_line("", 1023, "\n");
        ck_assert_uint_eq(strlen(l), LINE_MAX_BYTES);
        roundtrip(l, "ERR unknown-command\n");
}
END_TEST

START_TEST(test_line_1024_after_requests) {
        /* The limit is per line, wherever the line starts in the buffer. */
        char *l = make_line("PING\nCHECK org.example.allow\nCHECK ", 1023 - 6, "\n");
        roundtrip(l, "PONG\nALLOW\nERR bad-action\n");
}
END_TEST

START_TEST(test_line_1024_no_newline) {
        char *l = make_line("", 1024, "");
        ck_assert_int_ge(feed(l), 0);
        expect_out("ERR line-too-long\n");
        ck_assert(session.closing);
        ck_assert_uint_eq(stats.errors, 1);
}
END_TEST

START_TEST(test_line_1023_no_newline_waits) {
        char *l = make_line("CHECK ", 1023 - 6, "");
        ck_assert_int_eq(feed(l), 0);
        ck_assert_uint_eq(session_pending(&session), 0);
        ck_assert(!session.closing);
        ck_assert(session_wants_input(&session));
        ck_assert(!session_has_backlog(&session));
        /* The 1024th byte is the newline: still a line. */
        ck_assert_int_ge(feed("\n"), 0);
        expect_out("ERR bad-action\n");
}
END_TEST

START_TEST(test_line_1023_then_one_more) {
        char *l = make_line("", 1023, "");
        ck_assert_int_eq(feed(l), 0);
        ck_assert_uint_eq(session_pending(&session), 0);
        ck_assert_int_ge(feed("a"), 0);
        expect_out("ERR line-too-long\n");
}
END_TEST

START_TEST(test_line_1025_with_newline) {
        char *l = make_line("CHECK ", 1024 - 6, "\n");
        ck_assert_uint_eq(strlen(l), LINE_MAX_BYTES + 1);
        roundtrip(l, "ERR line-too-long\n");
}
END_TEST

START_TEST(test_line_too_long_in_pieces) {
        /* 1024 bytes without a newline, in pieces: the ERR comes with the 1024th byte. */
        static const size_t pieces[] = { 1, 7, 100, 500, 1023 };

        for (size_t k = 0; k < ELEMENTSOF(pieces); k++) {
                char *l = make_line("", 1024, "");
                start_session(1, 2, 3, NULL, 0);
                for (size_t off = 0; off < 1024; off += pieces[k]) {
                        size_t n = 1024 - off < pieces[k] ? 1024 - off : pieces[k];
                        ck_assert_int_ge(feed_n(l + off, n), 0);
                        if (off + n < 1024)
                                ck_assert_msg(session_pending(&session) == 0, "piece %zu: reply after %zu bytes",
                                              pieces[k], off + n);
                }
                expect_out("ERR line-too-long\n");
                ck_assert(session.closing);
        }
}
END_TEST

START_TEST(test_line_too_long_across_kept_partial) {
        /* A kept partial line plus a later piece that holds the newline too late. */
        char *a = make_line("CHECK ", 994, ""), *b = make_line("", 30, "\nPING\n");
        ck_assert_int_eq(feed(a), 0);
        ck_assert_int_ge(feed(b), 0);
        expect_out("ERR line-too-long\n");
}
END_TEST

START_TEST(test_line_too_long_after_requests) {
        char *l = make_line("PING\nWHOAMI\n", 1024, "");
        roundtrip(l, "PONG\n" CREDS_LINE "ERR line-too-long\n");
        ck_assert_uint_eq(stats.requests, 2);
        ck_assert_uint_eq(stats.errors, 1);
}
END_TEST

/* ------------------------------------------------------------------------- */
/* Pipelining and split requests */

static const char script[] = "PING\n"
                             "WHOAMI\n"
                             "CHECK org.example.allow\n"
                             "CHECK org.example.deny\n"
                             "CHECK org.example.pat.zz\n"
                             "PING\n"
                             "CHECK nope\n"
                             "FOO bar\n"
                             "PING\n"
                             "CHECK org.example.allow\n";
static const char script_out[] = "PONG\n" CREDS_LINE "ALLOW\nDENY\nALLOW\nPONG\nDENY\nERR unknown-command\n";

START_TEST(test_pipeline_in_order) {
        ck_assert_int_eq(feed("PING\nWHOAMI\nCHECK org.example.allow\nCHECK org.example.deny\nPING\n"), 5);
        expect_out("PONG\n" CREDS_LINE "ALLOW\nDENY\nPONG\n");
        ck_assert(!session.closing);
        ck_assert_uint_eq(stats.requests, 5);
}
END_TEST

START_TEST(test_pipeline_error_after_replies) {
        ck_assert_int_ge(feed(script), 7);
        expect_out(script_out);
        ck_assert(session.closing);
        ck_assert_uint_eq(stats.requests, 7);
        ck_assert_uint_eq(stats.errors, 1);
        /* What followed the bad line was discarded, and so is everything later. */
        ck_assert_int_eq(feed("PING\n"), 0);
        ck_assert_int_eq(feed("WHOAMI\nPING\n"), 0);
        ck_assert_int_eq(feed_n(NULL, 0), 0);
        ck_assert_uint_eq(session_pending(&session), 0);
        ck_assert_uint_eq(stats.requests, 7);
        ck_assert_uint_eq(stats.errors, 1);
        ck_assert(!session_wants_input(&session));
        ck_assert(!session_has_backlog(&session));
}
END_TEST

START_TEST(test_pipeline_error_with_kept_input) {
        /* The bad line arrives while a partial line is kept (the copying path). */
        ck_assert_int_eq(feed("PING\nPI"), 1);
        ck_assert_int_ge(feed("NG\nBAD\nPING\nPI"), 1);
        expect_out("PONG\nPONG\nERR unknown-command\n");
        ck_assert_int_eq(feed("NG\n"), 0);
        ck_assert_uint_eq(session_pending(&session), 0);
}
END_TEST

START_TEST(test_partial_line_kept) {
        ck_assert_int_eq(feed("PING\nPI"), 1);
        expect_out("PONG\n");
        ck_assert(session_wants_input(&session));
        ck_assert(!session_has_backlog(&session));
        ck_assert_int_eq(feed("N"), 0);
        ck_assert_uint_eq(session_pending(&session), 0);
        ck_assert_int_eq(feed("G\nCHECK org.exa"), 1);
        expect_out("PONG\n");
        ck_assert_int_eq(feed("mple.allow\n"), 1);
        expect_out("ALLOW\n");
}
END_TEST

/* Run the script in pieces of @chunk bytes and return everything replied. */
static char *run_chunked(const char *text, size_t n, size_t chunk) {
        Buf out = {};
        static const gid_t groups[] = { 4, 50, 100 };

        start_session(4242, 1000, 1000, groups, ELEMENTSOF(groups));
        for (size_t off = 0; off < n; off += chunk) {
                size_t k = n - off < chunk ? n - off : chunk;
                ck_assert_int_ge(feed_n(text + off, k), 0);
                char *s = drain();
                buf_add(&out, s, strlen(s));
        }
        buf_add(&out, "", 0);
        return out.data;
}

START_TEST(test_split_byte_by_byte) {
        char *whole = run_chunked(script, sizeof(script) - 1, sizeof(script));
        ck_assert_str_eq(whole, script_out);
        Stats whole_stats = stats;

        char *bytes = run_chunked(script, sizeof(script) - 1, 1);
        ck_assert_str_eq(bytes, whole);
        ck_assert_mem_eq(&stats, &whole_stats, sizeof(Stats));
}
END_TEST

START_TEST(test_split_every_size) {
        for (size_t chunk = 2; chunk <= sizeof(script); chunk++) {
                char *got = run_chunked(script, sizeof(script) - 1, chunk);
                ck_assert_msg(strcmp(got, script_out) == 0, "chunk %zu: got '%s'", chunk, got);
                ck_assert_uint_eq(stats.requests, 7);
                ck_assert_uint_eq(stats.errors, 1);
        }
}
END_TEST

START_TEST(test_split_bad_bytes) {
        /* A bad byte split from its line still fails that line. */
        static const char text[] = "PING\nPING\r\nPING\n";
        char *got = run_chunked(text, sizeof(text) - 1, 1);
        ck_assert_str_eq(got, "PONG\nERR bad-request\n");
}
END_TEST

START_TEST(test_feed_empty) {
        ck_assert_int_eq(feed_n(NULL, 0), 0);
        ck_assert_int_eq(session_feed(&session, policy, &stats, NULL, 0, NULL, 0, false), 0);
        ck_assert_uint_eq(session_pending(&session), 0);
        ck_assert(session_wants_input(&session));
        ck_assert(!session_has_backlog(&session));
}
END_TEST

START_TEST(test_partial_send) {
        /* Replies sent in pieces come out intact, also when more are queued behind. */
        for (int i = 0; i < 12; i++)
                ck_assert_int_eq(feed("PING\n"), 1);
        ck_assert_uint_eq(session_pending(&session), 60);
        session_sent(&session, 33);
        ck_assert_uint_eq(session_pending(&session), 27);
        ck_assert_mem_eq(session_out(&session), "G\nPONG\nPONG\nPONG\nPONG\nPONG\n", 27);
        ck_assert_int_eq(feed("WHOAMI\nCHECK org.example.allow\n"), 2);
        expect_out("G\nPONG\nPONG\nPONG\nPONG\nPONG\n" CREDS_LINE "ALLOW\n");
        roundtrip("PING\n", "PONG\n");
}
END_TEST

/* ------------------------------------------------------------------------- */
/* Back-pressure */

/* @count copies of @line, then @tail. */
static char *repeat(const char *line, size_t count, const char *tail, size_t *ret_n) {
        size_t n = strlen(line), nt = strlen(tail);
        char *s = tmalloc(n * count + nt + 1);
        for (size_t i = 0; i < count; i++)
                memcpy(s + i * n, line, n);
        memcpy(s + n * count, tail, nt + 1);
        *ret_n = n * count + nt;
        return s;
}

/*
 * Feed @count copies of @req at once, then drive the session the way the
 * server does: drain, feed n = 0 while there is a backlog. Check that
 * handling stops at SESSION_OUT_HIGH every time and that each request is
 * answered exactly once, in order.
 */
static void backpressure(const char *req, const char *reply, size_t count) {
        size_t n, nr = strlen(reply), handled = 0, rounds = 0;
        /* handling stops at the first reply that reaches the mark */
        size_t per_round = (SESSION_OUT_HIGH + nr - 1) / nr;
        char *in = repeat(req, count, "", &n);
        Buf out = {};

        ck_assert_uint_gt(count, per_round);
        int r = feed_n(in, n);
        for (;;) {
                ck_assert_int_ge(r, 0);
                handled += (size_t) r;
                rounds++;
                if (handled < count) {
                        ck_assert_uint_eq((size_t) r, per_round);
                        ck_assert_uint_ge(session_pending(&session), SESSION_OUT_HIGH);
                        ck_assert_uint_lt(session_pending(&session), SESSION_OUT_HIGH + nr);
                        ck_assert(!session_wants_input(&session));
                        ck_assert(session_has_backlog(&session));
                } else
                        ck_assert_uint_eq(handled, count);
                ck_assert_uint_eq(session_pending(&session), (size_t) r * nr);
                char *s = drain();
                buf_add(&out, s, strlen(s));
                if (handled == count)
                        break;
                /* Output drained, backlog left: still no new input wanted. */
                ck_assert(session_has_backlog(&session));
                ck_assert(!session_wants_input(&session));
                r = session_feed(&session, policy, &stats, NULL, 0, NULL, 0, false);
        }
        ck_assert_uint_eq(rounds, (count + per_round - 1) / per_round);
        ck_assert(!session_has_backlog(&session));
        ck_assert(session_wants_input(&session));
        ck_assert(!session.closing);
        ck_assert_uint_eq(stats.requests, count);
        ck_assert_uint_eq(out.n, count * nr);
        for (size_t i = 0; i < count; i++)
                ck_assert_msg(memcmp(out.data + i * nr, reply, nr) == 0, "reply %zu differs", i);
}

START_TEST(test_backpressure_whoami) {
        backpressure("WHOAMI\n", CREDS_LINE, 20000);
}
END_TEST

START_TEST(test_backpressure_ping) {
        backpressure("PING\n", "PONG\n", 20000);
}
END_TEST

START_TEST(test_backpressure_partial_drain) {
        size_t n;
        char *in = repeat("PING\n", 20000, "", &n);
        size_t per_round = (SESSION_OUT_HIGH + 4) / 5;

        ck_assert_int_eq(feed_n(in, n), (int) per_round);
        /* Send 1000 bytes: room for exactly 200 more replies. */
        session_sent(&session, 1000);
        ck_assert_uint_lt(session_pending(&session), SESSION_OUT_HIGH);
        ck_assert(!session_wants_input(&session)); /* the backlog goes first */
        ck_assert_int_eq(session_feed(&session, policy, &stats, NULL, 0, NULL, 0, false), 200);
        ck_assert_uint_ge(session_pending(&session), SESSION_OUT_HIGH);
        ck_assert_uint_eq(stats.requests, per_round + 200);
}
END_TEST

START_TEST(test_backpressure_new_input_queues_behind) {
        /* More input while held back is answered after the backlog, in order. */
        size_t n, per_round = (SESSION_OUT_HIGH + 4) / 5;
        char *in = repeat("PING\n", per_round + 3, "", &n);
        Buf out = {};

        ck_assert_int_eq(feed_n(in, n), (int) per_round);
        ck_assert_int_eq(feed("CHECK org.example.allow\n"), 0);
        char *s = drain();
        buf_add(&out, s, strlen(s));
        ck_assert_int_eq(session_feed(&session, policy, &stats, NULL, 0, NULL, 0, false), 4);
        s = drain();
        buf_add(&out, s, strlen(s));
        ck_assert_uint_eq(out.n, (per_round + 3) * 5 + 6);
        ck_assert_str_eq(out.data + (per_round + 3) * 5, "ALLOW\n");
        ck_assert(!session_has_backlog(&session));
}
END_TEST

START_TEST(test_backpressure_error_in_backlog) {
        /* A bad line behind the backlog: every earlier reply, then its ERR, once. */
        size_t n, per_round = (SESSION_OUT_HIGH + 4) / 5, total = 0;
        char *in = repeat("PING\n", 20000, "NOPE\nPING\n", &n);
        char *s;

        ck_assert_int_eq(feed_n(in, n), (int) per_round);
        for (;;) {
                s = drain();
                total += strlen(s);
                if (session.closing || !session_has_backlog(&session))
                        break;
                ck_assert_int_ge(session_feed(&session, policy, &stats, NULL, 0, NULL, 0, false), 0);
        }
        size_t len = strlen(s);
        ck_assert_uint_ge(len, 20);
        ck_assert_str_eq(s + len - 20, "ERR unknown-command\n");
        ck_assert_uint_eq(total, 20000 * 5 + 20);
        ck_assert_uint_eq(stats.requests, 20000);
        ck_assert_uint_eq(stats.errors, 1);
        ck_assert(session.closing);
}
END_TEST

/* Requests read before a reload keep the policy of that moment, even when
 * back-pressure holds them until after the swap. */
START_TEST(test_backpressure_backlog_keeps_its_policy) {
        size_t n;
        char *text = repeat("CHECK org.none\n", 20000, "", &n);
        Policy *old = make_policy(DECISION_ALLOW), *new = make_policy(DECISION_DENY);
        size_t allow = 0, deny = 0;

        char *copy = tmalloc(n);
        memcpy(copy, text, n);
        ck_assert_int_gt(session_feed(&session, old, &stats, copy, n, NULL, 0, false), 0);
        ck_assert(session_has_backlog(&session));
        /* "reload": the caller now passes the new policy; the old one may be gone. */
        old = policy_unref(old);
        while (session_pending(&session) > 0 || session_has_backlog(&session)) {
                char *out = drain();
                for (char *p = out; (p = strstr(p, "ALLOW\n")); p++)
                        allow++;
                for (char *p = out; (p = strstr(p, "DENY\n")); p++)
                        deny++;
                ck_assert_int_ge(session_feed(&session, new, &stats, NULL, 0, NULL, 0, false), 0);
        }
        ck_assert_uint_eq(allow, 20000);
        ck_assert_uint_eq(deny, 0);
        /* Once the backlog is answered, later requests see the new policy. */
        roundtrip("CHECK org.none\n", "DENY\n");
        policy_unref(new);
}
END_TEST

START_TEST(test_backpressure_overlong_line_in_backlog) {
        /*
         * Held back behind the replies: 1024 bytes without a newline. That is
         * already a complete error; once the output drained, a server that
         * follows the API (feed n = 0 while session_has_backlog()) must reply
         * ERR line-too-long without waiting for the client to send more.
         */
        size_t n, per_round = (SESSION_OUT_HIGH + 4) / 5, total = 0;
        char *in = repeat("PING\n", per_round, "", &n);
        char *l = make_line("", 1024, "");
        size_t nl = strlen(l);
        char *both = tmalloc(n + nl);
        Buf out = {};

        memcpy(both, in, n);
        memcpy(both + n, l, nl);
        ck_assert_int_eq(feed_n(both, n + nl), (int) per_round);
        for (;;) {
                char *s = drain();
                total += strlen(s);
                buf_add(&out, s, strlen(s));
                if (!session_has_backlog(&session))
                        break;
                ck_assert_int_ge(session_feed(&session, policy, &stats, NULL, 0, NULL, 0, false), 0);
        }
        ck_assert_msg(session.closing || !session_wants_input(&session),
                      "a kept 1024-byte line without newline waits for more input (has_backlog=%d, "
                      "wants_input=%d) instead of getting ERR line-too-long",
                      session_has_backlog(&session), session_wants_input(&session));
        ck_assert_uint_eq(total, per_round * 5 + 18);
        ck_assert_str_eq(out.data + per_round * 5, "ERR line-too-long\n");
}
END_TEST

/* ------------------------------------------------------------------------- */
/* session_fail(), timeouts, closing */

START_TEST(test_fail_timeout) {
        ck_assert_int_eq(session_fail(&session, PROTO_TIMEOUT, &stats), 0);
        expect_out("ERR timeout\n");
        ck_assert(session.closing);
        ck_assert(!session_wants_input(&session));
        ck_assert_uint_eq(stats.errors, 1);
        ck_assert_uint_eq(stats.requests, 0);
}
END_TEST

START_TEST(test_fail_after_replies) {
        ck_assert_int_eq(feed("PING\nCHECK org.example.allow\n"), 2);
        ck_assert_int_eq(session_fail(&session, PROTO_TIMEOUT, &stats), 0);
        expect_out("PONG\nALLOW\nERR timeout\n");
}
END_TEST

START_TEST(test_fail_discards_partial) {
        ck_assert_int_eq(feed("PIN"), 0);
        ck_assert_int_eq(session_fail(&session, PROTO_TIMEOUT, &stats), 0);
        ck_assert_int_eq(feed("G\n"), 0);
        expect_out("ERR timeout\n");
        ck_assert(!session_has_backlog(&session));
}
END_TEST

START_TEST(test_fail_discards_backlog) {
        size_t n;
        char *in = repeat("PING\n", 20000, "", &n);
        ck_assert_int_gt(feed_n(in, n), 0);
        ck_assert(session_has_backlog(&session));
        ck_assert_int_eq(session_fail(&session, PROTO_TIMEOUT, &stats), 0);
        ck_assert(!session_has_backlog(&session));
        ck_assert(!session_wants_input(&session));
        char *s = drain();
        size_t len = strlen(s);
        ck_assert_str_eq(s + len - 12, "ERR timeout\n");
        ck_assert_int_eq(session_feed(&session, policy, &stats, NULL, 0, NULL, 0, false), 0);
        ck_assert_uint_eq(session_pending(&session), 0);
}
END_TEST

START_TEST(test_fail_once) {
        ck_assert_int_eq(session_fail(&session, PROTO_TIMEOUT, &stats), 0);
        ck_assert_int_eq(session_fail(&session, PROTO_BAD_REQUEST, &stats), 0);
        ck_assert_int_eq(feed("\n"), 0);
        expect_out("ERR timeout\n");
        ck_assert_uint_eq(stats.errors, 1);
}
END_TEST

START_TEST(test_fail_no_credentials) {
        ck_assert_int_eq(session_fail(&session, PROTO_NO_CREDENTIALS, NULL), 0);
        expect_out("ERR no-credentials\n");
        ck_assert_uint_eq(stats.errors, 0);
}
END_TEST

START_TEST(test_done_twice) {
        ck_assert_int_eq(feed("PING\nPI"), 1);
        session_done(&session);
        ck_assert_ptr_null(session.in);
        ck_assert_ptr_null(session.out);
        ck_assert_ptr_null(session.creds.groups);
        session_done(&session);
        session_done(NULL);
}
END_TEST

/* ------------------------------------------------------------------------- */
/* Statistics */

START_TEST(test_stats) {
        ck_assert_int_eq(feed("CHECK org.example.allow\nCHECK org.example.uid\nCHECK org.example.pat.1\n"
                              "CHECK org.example.deny\nCHECK x\nPING\nWHOAMI\nPING\n"),
                         8);
        ck_assert_uint_eq(stats.requests, 8);
        ck_assert_uint_eq(stats.allowed, 3);
        ck_assert_uint_eq(stats.denied, 2);
        ck_assert_uint_eq(stats.errors, 0);
        ck_assert_int_ge(feed("CHECK a*\nPING\n"), 0);
        ck_assert_uint_eq(stats.requests, 8);
        ck_assert_uint_eq(stats.allowed, 3);
        ck_assert_uint_eq(stats.denied, 2);
        ck_assert_uint_eq(stats.errors, 1);
}
END_TEST

START_TEST(test_stats_shared) {
        /* One Stats for many sessions (as in the server): counts add up. */
        Session other;
        PeerCreds c = { .pid = 5, .uid = 1000, .gid = 1000 };

        session_init(&other, &c);
        ck_assert_int_eq(feed("CHECK org.example.allow\n"), 1);
        char buf[] = "CHECK org.example.uid\nCHECK org.example.deny\nBAD\n";
        ck_assert_int_ge(session_feed(&other, policy, &stats, buf, sizeof(buf) - 1, NULL, 0, false), 2);
        ck_assert_uint_eq(stats.requests, 3);
        ck_assert_uint_eq(stats.allowed, 2);
        ck_assert_uint_eq(stats.denied, 1);
        ck_assert_uint_eq(stats.errors, 1);
        ck_assert(!session.closing);
        ck_assert(other.closing);
        session_done(&other);
}
END_TEST

/* ------------------------------------------------------------------------- */
/* Broker queries: CHECK-PEER with an fd attached. The session's own identity
 * is uid 1000 (allowed org.example.uid); the peer of a socketpair we make is
 * this test process, which is not uid 1000 when run as root in CI. */

static bool fd_is_open(int fd) {
        return fcntl(fd, F_GETFD) >= 0;
}

/* Feed @text with the fds in @fds (the session takes ownership). */
static int feed_fds(const char *text, const int *fds, size_t n_fds, bool truncated) {
        size_t n = strlen(text);
        char *copy = malloc(n + 1);
        ck_assert_ptr_nonnull(copy);
        memcpy(copy, text, n);
        int r = session_feed(&session, policy, &stats, copy, n, fds, n_fds, truncated);
        free(copy);
        return r;
}

static int pair[2] = { -1, -1 };

static void peer_setup(void) {
        as_broker = true;
        setup();
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
}

static void peer_teardown(void) {
        close(pair[0]);
        close(pair[1]);
        teardown();
        as_broker = false;
}

/* A client the policy does not name as a broker: the server reads it with
 * no room for fds, so it can only report that some came (truncated). */
static void nonbroker_setup(void) {
        as_broker = false;
        setup();
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
}

START_TEST(test_nonbroker_check_peer_refused) {
        int fd = dup(pair[0]);
        /* Its own CHECKs work as ever. */
        roundtrip("CHECK org.example.uid\n", "ALLOW\n");
        feed_fds("PING\nCHECK-PEER org.example.allow\nPING\n", &fd, 0, true);
        expect_out("PONG\nERR not-a-broker\n");
        ck_assert(session.closing);
        close(fd);
}
END_TEST

START_TEST(test_nonbroker_check_peer_without_fd) {
        roundtrip("CHECK-PEER org.example.allow\n", "ERR not-a-broker\n");
        ck_assert(session.closing);
}
END_TEST

START_TEST(test_nonbroker_check_peer_fd_closed) {
        /* Should a descriptor reach the session anyway, it is closed. */
        int fd = dup(pair[0]);
        feed_fds("CHECK-PEER org.example.allow\n", &fd, 1, false);
        expect_out("ERR not-a-broker\n");
        ck_assert(!fd_is_open(fd));
}
END_TEST

START_TEST(test_nonbroker_grammar_first) {
        roundtrip("CHECK-PEER a*b\n", "ERR bad-action\n");
        start_session(1, 1000, 1000, NULL, 0);
        roundtrip("CHECK-PEER\n", "ERR bad-request\n");
}
END_TEST

START_TEST(test_nonbroker_fd_on_ping) {
        feed_fds("PING\nPING\n", NULL, 0, true);
        expect_out("PONG\nERR bad-peer-fd\n");
        ck_assert(session.closing);
}
END_TEST

/* session_feed_max(): a bounded share per call, the rest kept in order. */
START_TEST(test_feed_max_keeps_the_rest) {
        char *text = strdup("PING\nCHECK org.example.uid\nWHOAMI\nPING\nCHECK org.example.deny\nPING\nPI");
        ck_assert_ptr_nonnull(text);
        ck_assert_int_eq(session_feed_max(&session, policy, &stats, text, strlen(text), NULL, 0, false, 2), 2);
        free(text);
        expect_out("PONG\nALLOW\n");
        ck_assert(session_has_backlog(&session));
        ck_assert(!session_wants_input(&session));
        ck_assert_int_eq(session_feed_max(&session, policy, &stats, NULL, 0, NULL, 0, false, 1), 1);
        ck_assert_str_eq(drain(), "CREDS pid=4242 uid=1000 gid=1000 groups=4,50,100\n");
        ck_assert_int_eq(session_feed_max(&session, policy, &stats, NULL, 0, NULL, 0, false, 5), 3);
        expect_out("PONG\nDENY\nPONG\n");
        /* Only the partial "PI" is left: no backlog, input welcome again. */
        ck_assert(!session_has_backlog(&session));
        ck_assert(session_wants_input(&session));
        roundtrip("NG\n", "PONG\n");
}
END_TEST

START_TEST(test_feed_max_bad_line_counts) {
        char *text = strdup("PING\nFOO\nPING\n");
        ck_assert_ptr_nonnull(text);
        ck_assert_int_eq(session_feed_max(&session, policy, &stats, text, strlen(text), NULL, 0, false, 5), 2);
        free(text);
        expect_out("PONG\nERR unknown-command\n");
        ck_assert(!session_has_backlog(&session));
}
END_TEST

START_TEST(test_peer_decides_for_fd_peer) {
        int fd = dup(pair[0]);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_ne(getuid(), 1000);
        /* The session itself (uid 1000) is allowed; the fd's peer is not. */
        roundtrip("CHECK org.example.uid\n", "ALLOW\n");
        ck_assert_int_ge(feed_fds("CHECK-PEER org.example.uid\n", &fd, 1, false), 1);
        expect_out("DENY\n");
        ck_assert_msg(!fd_is_open(fd), "the daemon must close a received fd");
        fd = dup(pair[0]);
        ck_assert_int_ge(feed_fds("CHECK-PEER org.example.allow\n", &fd, 1, false), 1);
        expect_out("ALLOW\n");
        ck_assert(!fd_is_open(fd));
        ck_assert(!session.closing);
}
END_TEST

START_TEST(test_explain_peer) {
        int fd = dup(pair[0]);
        char want[64];
        /* The peer (this process) gets its own {uid}, not the session's 1000. */
        snprintf(want, sizeof(want), "CHECK-PEER org.example.home.%u\n", (unsigned) getuid());
        ck_assert_int_ge(feed_fds(want, &fd, 1, false), 1);
        expect_out("ALLOW\n");
        fd = dup(pair[0]);
        ck_assert_int_ge(feed_fds("EXPLAIN-PEER org.example.home.1000\n", &fd, 1, false), 1);
        expect_out("DENY default\n");
        ck_assert(!fd_is_open(fd));
        fd = dup(pair[0]);
        ck_assert_int_ge(feed_fds("EXPLAIN-PEER org.example.why.deny\n", &fd, 1, false), 1);
        expect_out("DENY id:no-bob-backup -- Backups run from the ops rota; ask #ops -- or not\n");
        roundtrip("EXPLAIN-PEER org.example.allow\n", "ERR bad-peer-fd\n");
}
END_TEST

START_TEST(test_nonbroker_explain_peer_refused) {
        roundtrip("EXPLAIN org.example.uid\n", "ALLOW test.conf:1\n");
        roundtrip("EXPLAIN-PEER org.example.allow\n", "ERR not-a-broker\n");
        ck_assert(session.closing);
}
END_TEST

START_TEST(test_peer_fd_on_last_line_of_chunk) {
        int fd = dup(pair[0]);
        ck_assert_int_ge(feed_fds("PING\nCHECK-PEER org.example.allow\n", &fd, 1, false), 2);
        expect_out("PONG\nALLOW\n");
        ck_assert(!fd_is_open(fd));
}
END_TEST

START_TEST(test_peer_fd_with_partial_line) {
        int fd = dup(pair[0]);
        ck_assert_int_eq(feed_fds("CHECK-PEER org.exa", &fd, 1, false), 0);
        ck_assert(fd_is_open(fd));
        ck_assert_int_eq(feed("mple.allow\n"), 1);
        expect_out("ALLOW\n");
        ck_assert(!fd_is_open(fd));
}
END_TEST

START_TEST(test_peer_missing_fd) {
        roundtrip("PING\nCHECK-PEER org.example.allow\nPING\n", "PONG\nERR bad-peer-fd\n");
        ck_assert(session.closing);
}
END_TEST

START_TEST(test_peer_two_fds) {
        int fds[2] = { dup(pair[0]), dup(pair[1]) };
        feed_fds("CHECK-PEER org.example.allow\n", fds, 2, false);
        expect_out("ERR bad-peer-fd\n");
        ck_assert(!fd_is_open(fds[0]) && !fd_is_open(fds[1]));
}
END_TEST

START_TEST(test_peer_truncated) {
        int fd = dup(pair[0]);
        feed_fds("CHECK-PEER org.example.allow\n", &fd, 1, true);
        expect_out("ERR bad-peer-fd\n");
        ck_assert(!fd_is_open(fd));
}
END_TEST

START_TEST(test_peer_fd_on_other_line) {
        int fd = dup(pair[0]);
        feed_fds("PING\n", &fd, 1, false);
        expect_out("ERR bad-peer-fd\n");
        ck_assert(!fd_is_open(fd));
        /* An fd that arrived with a later line does not belong to an earlier CHECK-PEER. */
        start_session(1, 1000, 1000, NULL, 0);
        fd = dup(pair[0]);
        feed_fds("CHECK-PEER org.example.allow\nPING\n", &fd, 1, false);
        expect_out("ERR bad-peer-fd\n");
        ck_assert(!fd_is_open(fd));
}
END_TEST

START_TEST(test_peer_grammar_first) {
        int fd = dup(pair[0]);
        feed_fds("CHECK-PEER a*b\n", &fd, 1, false);
        expect_out("ERR bad-action\n");
        ck_assert(!fd_is_open(fd));
}
END_TEST

START_TEST(test_peer_bad_fd_kinds) {
        int fds[5];
        int dgram[2], pipefd[2];
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_DGRAM, 0, dgram), 0);
        ck_assert_int_eq(pipe(pipefd), 0);
        fds[0] = socket(AF_UNIX, SOCK_STREAM, 0); /* unconnected */
        fds[1] = socket(AF_UNIX, SOCK_STREAM, 0); /* listening (abstract address) */
        snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "credgate-test-%d", (int) getpid());
        ck_assert_int_eq(bind(fds[1], (struct sockaddr *) &sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(fds[1], 1), 0);
        fds[2] = dgram[0];
        fds[3] = pipefd[0];
        fds[4] = socket(AF_INET, SOCK_STREAM, 0);
        for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
                ck_assert_int_ge(fds[i], 0);
                start_session(1, 1000, 1000, NULL, 0);
                feed_fds("CHECK-PEER org.example.allow\n", &fds[i], 1, false);
                char *out = drain();
                ck_assert_msg(strcmp(out, "ERR bad-peer-fd\n") == 0, "fd kind %zu: got '%s'", i, out);
                ck_assert(!fd_is_open(fds[i]));
        }
        close(dgram[1]);
        close(pipefd[1]);
}
END_TEST

START_TEST(test_peer_fds_after_closing_are_closed) {
        int fd = dup(pair[0]);
        roundtrip("FOO\n", "ERR unknown-command\n");
        feed_fds("CHECK-PEER org.example.allow\n", &fd, 1, false);
        ck_assert_uint_eq(session_pending(&session), 0);
        ck_assert(!fd_is_open(fd));
}
END_TEST

START_TEST(test_peer_pending_fd_closed_by_done) {
        int fd = dup(pair[0]);
        feed_fds("CHECK-PEER org.exa", &fd, 1, false);
        ck_assert(fd_is_open(fd));
        session_done(&session);
        ck_assert(!fd_is_open(fd));
}
END_TEST

static Suite *session_suite(void) {
        Suite *s = suite_create("session");
        TCase *tc;

        tc = tcase_create("requests");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_ping);
        tcase_add_test(tc, test_whoami);
        tcase_add_test(tc, test_whoami_no_groups);
        tcase_add_test(tc, test_whoami_one_group);
        tcase_add_test(tc, test_whoami_large_ids);
        tcase_add_test(tc, test_whoami_many_groups);
        tcase_add_test(tc, test_check_allow_deny);
        tcase_add_test(tc, test_explain);
        tcase_add_test(tc, test_placeholders);
        tcase_add_test(tc, test_proto_ref);
        tcase_add_test(tc, test_check_uses_session_identity);
        tcase_add_test(tc, test_check_default_allow);
        tcase_add_test(tc, test_check_action_alphabet);
        tcase_add_test(tc, test_check_action_255);
        tcase_add_test(tc, test_parse_ok);
        suite_add_tcase(s, tc);

        tc = tcase_create("check-peer");
        tcase_add_checked_fixture(tc, peer_setup, peer_teardown);
        tcase_add_test(tc, test_peer_decides_for_fd_peer);
        tcase_add_test(tc, test_explain_peer);
        tcase_add_test(tc, test_peer_fd_on_last_line_of_chunk);
        tcase_add_test(tc, test_peer_fd_with_partial_line);
        tcase_add_test(tc, test_peer_missing_fd);
        tcase_add_test(tc, test_peer_two_fds);
        tcase_add_test(tc, test_peer_truncated);
        tcase_add_test(tc, test_peer_fd_on_other_line);
        tcase_add_test(tc, test_peer_grammar_first);
        tcase_add_test(tc, test_peer_bad_fd_kinds);
        tcase_add_test(tc, test_peer_fds_after_closing_are_closed);
        tcase_add_test(tc, test_peer_pending_fd_closed_by_done);
        suite_add_tcase(s, tc);

        tc = tcase_create("non-broker");
        tcase_add_checked_fixture(tc, nonbroker_setup, peer_teardown);
        tcase_add_test(tc, test_nonbroker_check_peer_refused);
        tcase_add_test(tc, test_nonbroker_check_peer_without_fd);
        tcase_add_test(tc, test_nonbroker_explain_peer_refused);
        tcase_add_test(tc, test_nonbroker_check_peer_fd_closed);
        tcase_add_test(tc, test_nonbroker_grammar_first);
        tcase_add_test(tc, test_nonbroker_fd_on_ping);
        suite_add_tcase(s, tc);

        tc = tcase_create("feed-max");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_feed_max_keeps_the_rest);
        tcase_add_test(tc, test_feed_max_bad_line_counts);
        suite_add_tcase(s, tc);

        tc = tcase_create("errors");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_loop_test(tc, test_err_parse, 0, (int) ELEMENTSOF(err_cases));
        tcase_add_loop_test(tc, test_err_session, 0, (int) ELEMENTSOF(err_cases));
        tcase_add_test(tc, test_err_action_256);
        tcase_add_test(tc, test_error_names);
        suite_add_tcase(s, tc);

        tc = tcase_create("framing");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_line_1024_with_newline);
        tcase_add_test(tc, test_line_1024_unknown_verb);
        tcase_add_test(tc, test_line_1024_after_requests);
        tcase_add_test(tc, test_line_1024_no_newline);
        tcase_add_test(tc, test_line_1023_no_newline_waits);
        tcase_add_test(tc, test_line_1023_then_one_more);
        tcase_add_test(tc, test_line_1025_with_newline);
        tcase_add_test(tc, test_line_too_long_in_pieces);
        tcase_add_test(tc, test_line_too_long_across_kept_partial);
        tcase_add_test(tc, test_line_too_long_after_requests);
        suite_add_tcase(s, tc);

        tc = tcase_create("pipelining");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_pipeline_in_order);
        tcase_add_test(tc, test_pipeline_error_after_replies);
        tcase_add_test(tc, test_pipeline_error_with_kept_input);
        tcase_add_test(tc, test_partial_line_kept);
        tcase_add_test(tc, test_split_byte_by_byte);
        tcase_add_test(tc, test_split_every_size);
        tcase_add_test(tc, test_split_bad_bytes);
        tcase_add_test(tc, test_feed_empty);
        tcase_add_test(tc, test_partial_send);
        suite_add_tcase(s, tc);

        tc = tcase_create("backpressure");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_backpressure_whoami);
        tcase_add_test(tc, test_backpressure_ping);
        tcase_add_test(tc, test_backpressure_partial_drain);
        tcase_add_test(tc, test_backpressure_new_input_queues_behind);
        tcase_add_test(tc, test_backpressure_error_in_backlog);
        tcase_add_test(tc, test_backpressure_overlong_line_in_backlog);
        tcase_add_test(tc, test_backpressure_backlog_keeps_its_policy);
        suite_add_tcase(s, tc);

        tc = tcase_create("fail");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_fail_timeout);
        tcase_add_test(tc, test_fail_after_replies);
        tcase_add_test(tc, test_fail_discards_partial);
        tcase_add_test(tc, test_fail_discards_backlog);
        tcase_add_test(tc, test_fail_once);
        tcase_add_test(tc, test_fail_no_credentials);
        tcase_add_test(tc, test_done_twice);
        suite_add_tcase(s, tc);

        tc = tcase_create("stats");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_stats);
        tcase_add_test(tc, test_stats_shared);
        suite_add_tcase(s, tc);

        return s;
}

int main(void) {
        return test_run(session_suite());
}
