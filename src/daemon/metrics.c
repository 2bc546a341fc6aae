/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Metrics for operators: an OpenMetrics text document, written to whoever
 * connects to a metrics socket, then the connection is closed (no request
 * to parse). The document is rendered from a snapshot taken at accept
 * time, in pieces of at most the client's 64 KiB buffer as the socket
 * drains, so a large per-rule section never holds the loop for long, and
 * a reader that stalls costs a bounded buffer until it is dropped.
 *
 * Counter families are named with their _total suffix (as Prometheus' text
 * format wants, so promtool and node_exporter's textfile collector read the
 * same document); no label value comes from a client.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "macro.h"
#include "metrics.h"

const double metrics_bucket_le[METRICS_N_BUCKETS] = { 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1 };

#define CLIENT_BUF (64 * 1024)

void metrics_observe(MetricsCounters *c, uint64_t n, uint64_t ns) {
        if (n == 0)
                return;
        double each = (double) ns / (double) n / 1e9;
        size_t b = 0;
        while (b < METRICS_N_BUCKETS && each > metrics_bucket_le[b])
                b++;
        c->latency[b] += n;
        c->latency_count += n;
        c->latency_sum_ns += ns;
}

void metrics_snapshot_done(MetricsSnapshot *m) {
        m->policy = policy_unref(m->policy);
        m->hits = mfree(m->hits);
}

/* ---- rendering ------------------------------------------------------------ */

typedef struct Out {
        char *p;
        size_t n, size;
        bool full;
} Out;

_printf_(2, 3) static void out(Out *o, const char *fmt, ...) {
        va_list ap;
        if (o->full)
                return;
        va_start(ap, fmt);
        int k = vsnprintf(o->p + o->n, o->size - o->n, fmt, ap);
        va_end(ap);
        if (k < 0 || (size_t) k >= o->size - o->n)
                o->full = true;
        else
                o->n += (size_t) k;
}

static void family(Out *o, const char *name, const char *type, const char *help) {
        out(o, "# TYPE %s %s\n# HELP %s %s\n", name, type, name, help);
}

/* @s as a label value: backslash, double quote and newline escaped. */
static size_t escape_label(const char *s, char *buf, size_t size) {
        size_t n = 0;
        for (; *s && n + 3 < size; s++) {
                if (*s == '\\' || *s == '"') {
                        buf[n++] = '\\';
                        buf[n++] = *s;
                } else if (*s == '\n') {
                        buf[n++] = '\\';
                        buf[n++] = 'n';
                } else
                        buf[n++] = *s;
        }
        buf[n] = '\0';
        return n;
}

void metrics_rule_label(const Policy *p, size_t i, char *buf, size_t size) {
        const char *file, *id;
        unsigned line;
        char raw[PATH_MAX + 64];

        buf[0] = '\0';
        if (!policy_rule(p, i, &file, &line, &id))
                return;
        if (id)
                snprintf(raw, sizeof(raw), "id:%s", id);
        else {
                /* Rules on one line share FILE:LINE: the second is FILE:LINE#2, and so on. */
                size_t k = 1;
                for (size_t j = i; j-- > 0;) {
                        const char *f2;
                        unsigned l2;
                        if (!policy_rule(p, j, &f2, &l2, NULL) || f2 != file || l2 != line)
                                break;
                        k++;
                }
                if (k > 1)
                        snprintf(raw, sizeof(raw), "%s:%u#%zu", file, line, k);
                else
                        snprintf(raw, sizeof(raw), "%s:%u", file, line);
        }
        escape_label(raw, buf, size);
}

static void render_fixed(const MetricsSnapshot *m, Out *o) {
        const Stats *st = &m->stats;
        const MetricsCounters *c = &m->counters;
        char rev[POLICY_REVISION_LEN + 8];

        family(o, "credgate_decisions_total", "counter", "Requests decided (CHECK, EXPLAIN and their -PEER forms), by result.");
        out(o, "credgate_decisions_total{result=\"allow\"} %" PRIu64 "\n", st->allowed);
        out(o, "credgate_decisions_total{result=\"deny\"} %" PRIu64 "\n", st->denied);
        family(o, "credgate_errors_total", "counter", "Requests and connections answered with ERR, by reason.");
        for (unsigned e = PROTO_OK + 1; e < PROTO_N_ERRORS; e++)
                out(o, "credgate_errors_total{reason=\"%s\"} %" PRIu64 "\n", proto_error_name((ProtoError) e),
                    st->error_reasons[e]);
        family(o, "credgate_connections", "gauge", "Client connections open.");
        out(o, "credgate_connections %u\n", m->connections);
        family(o, "credgate_connections_refused_total", "counter",
               "Connections refused (ERR too-many-connections), by reason: the uid's max_connections_per_uid was full.");
        out(o, "credgate_connections_refused_total{reason=\"uid-quota\"} %" PRIu64 "\n", c->refused_uid_quota);
        family(o, "credgate_accept_paused_total", "counter",
               "Times the daemon stopped accepting connections (new clients wait in the listen backlog), by reason.");
        out(o, "credgate_accept_paused_total{reason=\"max-connections\"} %" PRIu64 "\n", c->paused_max_connections);
        out(o, "credgate_accept_paused_total{reason=\"out-of-descriptors\"} %" PRIu64 "\n", c->paused_out_of_fds);
        family(o, "credgate_reloads_total", "counter", "Policy reloads (SIGHUP), by result; a failed one keeps the old policy.");
        out(o, "credgate_reloads_total{result=\"success\"} %" PRIu64 "\n", c->reloads_ok);
        out(o, "credgate_reloads_total{result=\"failure\"} %" PRIu64 "\n", c->reloads_failed);
        family(o, "credgate_policy_rules", "gauge", "Rules in the policy in force.");
        out(o, "credgate_policy_rules %zu\n", policy_n_rules(m->policy));
        family(o, "credgate_policy_files", "gauge", "Files the policy in force was loaded from.");
        out(o, "credgate_policy_files %zu\n", policy_n_files(m->policy));
        family(o, "credgate_policy_info", "gauge",
               "The policy in force; revision is the SHA-256 over its files (credgated -t prints it).");
        escape_label(policy_revision(m->policy), rev, sizeof(rev));
        out(o, "credgate_policy_info{revision=\"%s\"} 1\n", rev);
        family(o, "credgate_policy_loaded_timestamp_seconds", "gauge",
               "When the policy in force was loaded (start or reload); per-rule counts start then.");
        out(o, "credgate_policy_loaded_timestamp_seconds %" PRIu64 "\n", m->hits_since);
        family(o, "credgate_audit_suppressed_total", "counter",
               "Audit entries not written: a uid's rate limit (200 per 10 s) was reached.");
        out(o, "credgate_audit_suppressed_total %" PRIu64 "\n", m->audit_suppressed);
        family(o, "credgate_log_lost_total", "counter",
               "Journal entries, audit entries included, that could not be written.");
        out(o, "credgate_log_lost_total %" PRIu64 "\n", m->log_lost);
        out(o, "# TYPE credgate_decision_duration_seconds histogram\n# UNIT credgate_decision_duration_seconds seconds\n"
               "# HELP credgate_decision_duration_seconds Time to handle a request, from its bytes read to its reply "
               "queued (requests read together count at their average).\n");
        uint64_t cum = 0;
        for (size_t b = 0; b < METRICS_N_BUCKETS; b++) {
                cum += c->latency[b];
                out(o, "credgate_decision_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n", metrics_bucket_le[b], cum);
        }
        out(o, "credgate_decision_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", c->latency_count);
        out(o, "credgate_decision_duration_seconds_sum %.9f\n", (double) c->latency_sum_ns / 1e9);
        out(o, "credgate_decision_duration_seconds_count %" PRIu64 "\n", c->latency_count);
        family(o, "credgate_start_time_seconds", "gauge", "When the daemon started (idle exit starts it anew).");
        out(o, "credgate_start_time_seconds %" PRIu64 "\n", m->start_time);
}

size_t metrics_render(const MetricsSnapshot *m, MetricsCursor *cur, char *buf, size_t size) {
        Out o = { .p = buf, .size = size };
        size_t n_rules = m->hits ? policy_n_rules(m->policy) : 0;
        char label[2 * (PATH_MAX + 64)];

        /* Whole lines only: what does not fit is taken back and goes first in the next piece. */
        while (cur->part < 4) {
                size_t mark = o.n;
                if (cur->part == 0 || cur->part == 3) {
                        if (cur->part == 0)
                                render_fixed(m, &o);
                        else
                                out(&o, "# EOF\n");
                        if (o.full) {
                                o.n = mark;
                                return o.n;
                        }
                        cur->part++;
                        continue;
                }
                bool hits = cur->part == 1;
                if (!cur->started) {
                        bool any = hits && n_rules > 0;
                        for (size_t i = 0; !any && i < n_rules; i++)
                                any = m->hits[i].hits > 0;
                        if (!any) {
                                cur->part++;
                                continue;
                        }
                        if (hits)
                                family(&o, "credgate_rule_hits_total", "counter",
                                       "Decisions per rule since the policy was loaded (settings.rule_stats).");
                        else
                                family(&o, "credgate_rule_last_hit_timestamp_seconds", "gauge",
                                       "When each rule last decided, for the rules that decided since the policy "
                                       "was loaded.");
                        if (o.full) {
                                o.n = mark;
                                return o.n;
                        }
                        cur->started = true;
                }
                for (; cur->rule < n_rules; cur->rule++) {
                        const RuleHits *h = &m->hits[cur->rule];
                        if (!hits && h->hits == 0)
                                continue;
                        size_t before = o.n;
                        metrics_rule_label(m->policy, cur->rule, label, sizeof(label));
                        if (hits)
                                out(&o, "credgate_rule_hits_total{rule=\"%s\"} %" PRIu64 "\n", label, h->hits);
                        else
                                out(&o, "credgate_rule_last_hit_timestamp_seconds{rule=\"%s\"} %" PRIu64 "\n", label,
                                    h->last);
                        if (o.full) {
                                o.n = before;
                                return o.n;
                        }
                }
                cur->rule = 0;
                cur->started = false;
                cur->part++;
        }
        return o.n;
}

/* ---- serving -------------------------------------------------------------- */

typedef struct Client {
        struct Client *next;
        MetricsServer *server;
        int fd;
        sd_event_source *io, *timer;
        MetricsSnapshot snap;
        MetricsCursor cur;
        size_t off, len;
        char buf[CLIENT_BUF];
} Client;

typedef struct Listener {
        int fd;
        sd_event_source *src;
} Listener;

#define ACCEPT_PAUSE_USEC (100 * UINT64_C(1000)) /* out of descriptors: try again after this */

struct MetricsServer {
        sd_event *event;
        metrics_snapshot_t snapshot;
        void *userdata;
        Listener *listeners;
        size_t n_listeners;
        char **unlink_paths;
        size_t n_unlink;
        Client *clients;
        unsigned n_clients;
        uint64_t served, dropped;
        sd_event_source *resume; /* re-enables the listeners after a pause */
};

static void client_free(Client *c, bool done) {
        MetricsServer *m = c->server;
        for (Client **p = &m->clients; *p; p = &(*p)->next)
                if (*p == c) {
                        *p = c->next;
                        break;
                }
        m->n_clients--;
        if (done)
                m->served++;
        else
                m->dropped++;
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->timer);
        close(c->fd);
        metrics_snapshot_done(&c->snap);
        free(c);
}

/* Write what can be written; render the next piece when the buffer is empty. */
static int on_client_io(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        Client *c = userdata;

        for (;;) {
                if (c->off == c->len) {
                        if (c->cur.part >= 4) {
                                (void) shutdown(c->fd, SHUT_WR);
                                client_free(c, true);
                                return 0;
                        }
                        c->off = 0;
                        c->len = metrics_render(&c->snap, &c->cur, c->buf, sizeof(c->buf));
                        if (c->len == 0 && c->cur.part < 4) {
                                client_free(c, false); /* cannot happen: a piece holds any line */
                                return 0;
                        }
                        continue;
                }
                ssize_t k = send(c->fd, c->buf + c->off, c->len - c->off, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (k < 0 && (errno == EAGAIN || errno == EINTR))
                        return 0; /* EPOLLOUT brings us back */
                if (k <= 0) {
                        client_free(c, false);
                        return 0;
                }
                c->off += (size_t) k;
        }
}

static int on_client_timeout(sd_event_source *src, uint64_t usec, void *userdata) {
        client_free(userdata, false);
        return 0;
}

static void set_accepting(MetricsServer *m, bool on) {
        for (size_t i = 0; i < m->n_listeners; i++)
                (void) sd_event_source_set_enabled(m->listeners[i].src, on ? SD_EVENT_ON : SD_EVENT_OFF);
}

static int on_resume(sd_event_source *src, uint64_t usec, void *userdata) {
        set_accepting(userdata, true);
        return 0;
}

static int on_accept(sd_event_source *src, int lfd, uint32_t revents, void *userdata) {
        MetricsServer *m = userdata;

        for (int i = 0; i < 16; i++) {
                int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)) {
                        /* The client stays in the backlog and the listener stays
                         * readable: pause instead of spinning on the loop. */
                        uint64_t now = 0;
                        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &now);
                        set_accepting(m, false);
                        if (!m->resume && sd_event_add_time(m->event, &m->resume, CLOCK_MONOTONIC, 0, 0, on_resume,
                                                            m) < 0) {
                                set_accepting(m, true);
                                return 0;
                        }
                        (void) sd_event_source_set_time(m->resume, now + ACCEPT_PAUSE_USEC);
                        (void) sd_event_source_set_enabled(m->resume, SD_EVENT_ONESHOT);
                        return 0;
                }
                if (fd < 0)
                        return 0; /* EAGAIN: all taken */
                Client *c = m->n_clients < METRICS_MAX_CLIENTS ? calloc(1, sizeof(Client)) : NULL;
                uint64_t now = 0;
                if (!c) {
                        m->dropped++;
                        close(fd);
                        continue;
                }
                *c = (Client){ .server = m, .fd = fd, .next = m->clients };
                m->clients = c;
                m->n_clients++;
                m->snapshot(m->userdata, &c->snap);
                (void) sd_event_now(m->event, CLOCK_MONOTONIC, &now);
                if (sd_event_add_io(m->event, &c->io, fd, EPOLLOUT, on_client_io, c) < 0 ||
                    sd_event_add_time(m->event, &c->timer, CLOCK_MONOTONIC, now + METRICS_CLIENT_TIMEOUT_USEC, 0,
                                      on_client_timeout, c) < 0) {
                        client_free(c, false);
                        continue;
                }
        }
        return 0;
}

int metrics_server_new(sd_event *e, metrics_snapshot_t snapshot, void *userdata, MetricsServer **ret) {
        MetricsServer *m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->event = sd_event_ref(e);
        m->snapshot = snapshot;
        m->userdata = userdata;
        *ret = m;
        return 0;
}

int metrics_server_add_listener(MetricsServer *m, int fd, const char *unlink_path) {
        Listener *l = reallocarray(m->listeners, m->n_listeners + 1, sizeof(Listener));
        if (!l) {
                close(fd);
                return -ENOMEM;
        }
        m->listeners = l;
        l = &m->listeners[m->n_listeners];
        *l = (Listener){ .fd = fd };
        int r = sd_event_add_io(m->event, &l->src, fd, EPOLLIN, on_accept, m);
        if (r < 0) {
                close(fd);
                return r;
        }
        m->n_listeners++;
        if (unlink_path) {
                char **v = reallocarray(m->unlink_paths, m->n_unlink + 1, sizeof(char *));
                if (!v)
                        return -ENOMEM;
                m->unlink_paths = v;
                if (!(v[m->n_unlink] = strdup(unlink_path)))
                        return -ENOMEM;
                m->n_unlink++;
        }
        return 0;
}

MetricsServer *metrics_server_free(MetricsServer *m) {
        if (!m)
                return NULL;
        while (m->clients)
                client_free(m->clients, false);
        sd_event_source_disable_unref(m->resume);
        for (size_t i = 0; i < m->n_listeners; i++) {
                sd_event_source_disable_unref(m->listeners[i].src);
                close(m->listeners[i].fd);
        }
        free(m->listeners);
        for (size_t i = 0; i < m->n_unlink; i++) {
                (void) unlink(m->unlink_paths[i]);
                free(m->unlink_paths[i]);
        }
        free(m->unlink_paths);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}

void metrics_server_counts(const MetricsServer *m, uint64_t *ret_served, uint64_t *ret_dropped) {
        *ret_served = m ? m->served : 0;
        *ret_dropped = m ? m->dropped : 0;
}
