/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "policy.h"
#include "session.h"

/* Decision handling time, in upper bounds (seconds): 1 us to 1 s, then +Inf. */
#define METRICS_N_BUCKETS 7
extern const double metrics_bucket_le[METRICS_N_BUCKETS];

/* Per-rule counts (settings.rule_stats): 16 bytes a rule. */
typedef struct RuleHits {
        uint64_t hits;
        uint64_t last; /* CLOCK_REALTIME seconds of the last hit, 0 for never */
} RuleHits;
_Static_assert(sizeof(RuleHits) == 16, "per-rule counts: 16 bytes a rule (issue 15)");

/* What the server counts beyond Stats. */
typedef struct MetricsCounters {
        uint64_t refused_uid_quota;        /* connections refused: the uid's quota was full */
        uint64_t paused_max_connections;   /* times accepting stopped at max_connections */
        uint64_t paused_out_of_fds;        /* times accepting stopped: out of descriptors */
        uint64_t reloads_ok, reloads_failed;
        uint64_t latency[METRICS_N_BUCKETS + 1]; /* requests per bucket, the last one +Inf */
        uint64_t latency_count;
        uint64_t latency_sum_ns;
} MetricsCounters;

/* Count @n requests handled in @ns nanoseconds in all (each at the average). */
void metrics_observe(MetricsCounters *c, uint64_t n, uint64_t ns);

/* Everything one document shows, taken at one moment. */
typedef struct MetricsSnapshot {
        Stats stats;
        MetricsCounters counters;
        unsigned connections;
        uint64_t audit_suppressed;
        uint64_t log_lost;
        uint64_t start_time; /* CLOCK_REALTIME seconds */
        Policy *policy;      /* a reference */
        RuleHits *hits;      /* a copy of policy_n_rules() entries, or NULL (rule_stats off) */
        uint64_t hits_since; /* CLOCK_REALTIME seconds the counts started (the policy's load) */
} MetricsSnapshot;

void metrics_snapshot_done(MetricsSnapshot *m);

/* Where a document being written stands. */
typedef struct MetricsCursor {
        unsigned part; /* 0: the fixed series, 1: rule hits, 2: rule last hits, 3: "# EOF", 4: done */
        bool started;  /* in parts 1 and 2: the family's header is out */
        size_t rule;
} MetricsCursor;

/*
 * Write the next piece of the OpenMetrics text document for @m into @buf
 * (at most @size bytes, @size >= 32768), whole lines only, and advance @cur.
 * The whole document is the concatenation of the pieces until @cur->part is
 * 4; it ends in "# EOF\n".
 * Return: the number of bytes written (0 once done).
 */
size_t metrics_render(const MetricsSnapshot *m, MetricsCursor *cur, char *buf, size_t size);

/* The label value of rule @i: "id:NAME" or "FILE:LINE", escaped for a label (\\ \" \n). */
void metrics_rule_label(const Policy *p, size_t i, char *buf, size_t size);

typedef struct MetricsServer MetricsServer;

/* Fill @ret with a snapshot of now (the server's counters). */
typedef void (*metrics_snapshot_t)(void *userdata, MetricsSnapshot *ret);

/*
 * Serve metrics documents on the event loop @e: on each connection to a
 * listener, take a snapshot, write the document non-blocking through a
 * 64 KiB buffer, and close. At most METRICS_MAX_CLIENTS at a time (more are
 * closed at once); a client that has not taken its document within
 * METRICS_CLIENT_TIMEOUT_USEC is dropped. Decisions never wait for it.
 * Return: 0 and *ret, or -errno.
 */
#define METRICS_MAX_CLIENTS 8
#define METRICS_CLIENT_TIMEOUT_USEC (5 * UINT64_C(1000000))
int metrics_server_new(sd_event *e, metrics_snapshot_t snapshot, void *userdata, MetricsServer **ret);
MetricsServer *metrics_server_free(MetricsServer *m);

/* Add a listening socket (owned from now on); @unlink_path is removed when freed. Return: 0 or -errno. */
int metrics_server_add_listener(MetricsServer *m, int fd, const char *unlink_path);

/* Documents written whole, and clients dropped (too many, too slow, or gone). */
void metrics_server_counts(const MetricsServer *m, uint64_t *ret_served, uint64_t *ret_dropped);

static inline void metrics_server_freep(MetricsServer **m) {
        metrics_server_free(*m);
}
