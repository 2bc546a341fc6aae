/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * credgate stats: read the daemon's metrics socket (one OpenMetrics document
 * per connection, credgated(8), METRICS) and print a short summary, the
 * document itself, or the per-rule counts.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define METRICS_SOCKET_DEFAULT "/run/credgate/metrics.sock"
#define DOC_MAX (256u << 20) /* 256 MiB: far above 100,000 rules' counts */
#define READ_TIMEOUT_MS 15000

enum { OPT_OPENMETRICS = 0x200, OPT_RULES, OPT_METRICS_SOCKET };

/* One sample of the document: "name{labels} value". */
typedef struct Sample {
        char *name, *labels; /* labels: the text between the braces, or "" */
        double value;
} Sample;

typedef struct Doc {
        char *text;
        size_t len;
        Sample *v;
        size_t n;
} Doc;

static void doc_done(Doc *d) {
        free(d->text);
        free(d->v);
        *d = (Doc){};
}

/* Read the whole document from @path. Return: 0, or EXIT_ERROR after a message. */
static int doc_read(const char *path, Doc *d) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        size_t cap = 64 * 1024;
        int fd, r = 0;

        if (strlen(path) >= sizeof(sa.sun_path))
                return fail("metrics socket '%s': path too long", path);
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return fail("socket: %m");
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                int e = errno;
                close(fd);
                if (e == ENOENT || e == ECONNREFUSED)
                        return fail("cannot connect to the metrics socket '%s': %s (enable credgated-metrics.socket, "
                                    "or run credgated with --metrics-socket)",
                                    path, strerror(e));
                return fail("cannot connect to the metrics socket '%s': %s", path, strerror(e));
        }
        d->text = malloc(cap);
        while (d->text) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                if (d->len + 1 == cap) {
                        char *m = cap < DOC_MAX ? realloc(d->text, cap * 2) : NULL;
                        if (!m) {
                                r = fail("metrics document too large");
                                break;
                        }
                        d->text = m;
                        cap *= 2;
                }
                if (poll(&p, 1, READ_TIMEOUT_MS) != 1) {
                        r = fail("metrics socket '%s': no document within %d s", path, READ_TIMEOUT_MS / 1000);
                        break;
                }
                ssize_t k = read(fd, d->text + d->len, cap - d->len - 1);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        r = fail("metrics socket '%s': %m", path);
                        break;
                }
                if (k == 0)
                        break;
                d->len += (size_t) k;
        }
        close(fd);
        if (!d->text)
                return fail("%s", strerror(ENOMEM));
        d->text[d->len] = '\0';
        if (r == 0 && (d->len < 6 || strcmp(d->text + d->len - 6, "# EOF\n") != 0))
                r = fail("metrics socket '%s': the document ended early (no \"# EOF\")", path);
        return r;
}

/* Split the document's samples (in place: the text is cut into strings). Return: 0 or EXIT_ERROR. */
static int doc_parse(Doc *d) {
        size_t cap = 0;
        for (char *line = d->text, *next; *line; line = next) {
                next = strchr(line, '\n');
                *next++ = '\0';
                if (line[0] == '#' || line[0] == '\0')
                        continue;
                char *sp = strrchr(line, ' ');
                if (!sp)
                        return fail("metrics: cannot read line '%s'", line);
                *sp = '\0';
                Sample s = { .name = line, .labels = "" };
                char *brace = strchr(line, '{');
                if (brace) {
                        *brace = '\0';
                        s.labels = brace + 1;
                        size_t n = strlen(s.labels);
                        if (n == 0 || s.labels[n - 1] != '}')
                                return fail("metrics: cannot read labels of '%s'", line);
                        s.labels[n - 1] = '\0';
                }
                s.value = strtod(sp + 1, NULL);
                if (d->n == cap) {
                        cap = cap ? cap * 2 : 256;
                        Sample *v = reallocarray(d->v, cap, sizeof(Sample));
                        if (!v)
                                return fail("%s", strerror(ENOMEM));
                        d->v = v;
                }
                d->v[d->n++] = s;
        }
        return 0;
}

/* The value of @name with exactly @labels ("" for none), or -1. */
static double get(const Doc *d, const char *name, const char *labels) {
        for (size_t i = 0; i < d->n; i++)
                if (strcmp(d->v[i].name, name) == 0 && strcmp(d->v[i].labels, labels) == 0)
                        return d->v[i].value;
        return -1;
}

/* The value of a label in @labels (unescaped into @buf). */
static const char *label(const char *labels, const char *key, char *buf, size_t size) {
        size_t kl = strlen(key), n = 0;
        const char *p = labels;
        while (p && *p) {
                if (strncmp(p, key, kl) == 0 && p[kl] == '=' && p[kl + 1] == '"') {
                        for (p += kl + 2; *p && *p != '"' && n + 1 < size; p++) {
                                if (*p == '\\' && p[1])
                                        p++, buf[n++] = *p == 'n' ? '\n' : *p;
                                else
                                        buf[n++] = *p;
                        }
                        buf[n] = '\0';
                        return buf;
                }
                p = strchr(p, ',');
                p = p ? p + 1 : NULL;
        }
        return NULL;
}

static const char *when(double t, char *buf, size_t size) {
        time_t tt = (time_t) t;
        struct tm tm;
        if (t <= 0 || !localtime_r(&tt, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
                snprintf(buf, size, "never");
        return buf;
}

static void print_summary(const Doc *d) {
        char a[64], b[64], rev[80] = "?";
        double start = get(d, "credgate_start_time_seconds", "");
        double now = (double) time(NULL);

        for (size_t i = 0; i < d->n; i++)
                if (strcmp(d->v[i].name, "credgate_policy_info") == 0)
                        label(d->v[i].labels, "revision", rev, sizeof(rev));
        printf("daemon:      started %s (%.0f s ago)\n", when(start, a, sizeof(a)), now - start);
        printf("policy:      %.0f rules from %.0f files, revision %.12s, loaded %s\n",
               get(d, "credgate_policy_rules", ""), get(d, "credgate_policy_files", ""), rev,
               when(get(d, "credgate_policy_loaded_timestamp_seconds", ""), b, sizeof(b)));
        printf("reloads:     %.0f succeeded, %.0f failed\n", get(d, "credgate_reloads_total", "result=\"success\""),
               get(d, "credgate_reloads_total", "result=\"failure\""));
        printf("decisions:   %.0f allowed, %.0f denied\n", get(d, "credgate_decisions_total", "result=\"allow\""),
               get(d, "credgate_decisions_total", "result=\"deny\""));
        double errs = 0;
        for (size_t i = 0; i < d->n; i++)
                if (strcmp(d->v[i].name, "credgate_errors_total") == 0)
                        errs += d->v[i].value;
        printf("errors:      %.0f", errs);
        const char *sep = " (";
        for (size_t i = 0; i < d->n; i++)
                if (strcmp(d->v[i].name, "credgate_errors_total") == 0 && d->v[i].value > 0) {
                        char r[64];
                        printf("%s%s %.0f", sep, label(d->v[i].labels, "reason", r, sizeof(r)) ? r : "?",
                               d->v[i].value);
                        sep = ", ";
                }
        printf("%s\n", *sep == ',' ? ")" : "");
        printf("connections: %.0f open; %.0f refused (uid quota); accepting paused %.0f times (max connections), "
               "%.0f (out of descriptors)\n",
               get(d, "credgate_connections", ""), get(d, "credgate_connections_refused_total", "reason=\"uid-quota\""),
               get(d, "credgate_accept_paused_total", "reason=\"max-connections\""),
               get(d, "credgate_accept_paused_total", "reason=\"out-of-descriptors\""));
        double count = get(d, "credgate_decision_duration_seconds_count", "");
        double sum = get(d, "credgate_decision_duration_seconds_sum", "");
        double fast = get(d, "credgate_decision_duration_seconds_bucket", "le=\"0.0001\"");
        if (count > 0)
                printf("handling:    %.0f requests, %.1f us on average, %.2f%% within 100 us\n", count,
                       sum / count * 1e6, 100.0 * fast / count);
        else
                printf("handling:    no requests yet\n");
        printf("audit:       %.0f entries suppressed by the rate limit, %.0f log entries lost\n",
               get(d, "credgate_audit_suppressed_total", ""), get(d, "credgate_log_lost_total", ""));
        bool on = false;
        for (size_t i = 0; i < d->n; i++)
                on = on || strcmp(d->v[i].name, "credgate_rule_hits_total") == 0;
        printf("rule counts: %s\n", on ? "on (credgate stats --rules)" : "off (settings.rule_stats)");
}

static int print_rules(const Doc *d) {
        char rule[8192], t[64];
        size_t n = 0;

        for (size_t i = 0; i < d->n; i++)
                n += strcmp(d->v[i].name, "credgate_rule_hits_total") == 0;
        if (n == 0 && get(d, "credgate_policy_rules", "") != 0)
                return fail("per-rule counts are off: set rule_stats = true in the settings of the policy "
                            "(credgate.conf(5)) and reload");
        printf("%12s  %-19s  %s\n", "HITS", "LAST HIT", "RULE");
        /* Both families list rules in evaluation order, the last hits only those
         * that decided: one walk over each finds every rule's last hit. */
        size_t j = 0;
        for (size_t i = 0; i < d->n; i++) {
                if (strcmp(d->v[i].name, "credgate_rule_hits_total") != 0)
                        continue;
                while (j < d->n && strcmp(d->v[j].name, "credgate_rule_last_hit_timestamp_seconds") != 0)
                        j++;
                double last = -1;
                if (j < d->n && strcmp(d->v[j].labels, d->v[i].labels) == 0)
                        last = d->v[j++].value;
                printf("%12.0f  %-19s  %s\n", d->v[i].value, when(last, t, sizeof(t)),
                       label(d->v[i].labels, "rule", rule, sizeof(rule)) ? rule : "?");
        }
        printf("counted since %s (the policy's load)\n",
               when(get(d, "credgate_policy_loaded_timestamp_seconds", ""), t, sizeof(t)));
        return 0;
}

void help_stats(void) {
        printf("Usage: credgate stats [--metrics-socket PATH] [--openmetrics | --rules]\n"
               "Read credgated's metrics socket and show the daemon's counters.\n\n"
               "  -m, --metrics-socket PATH  the metrics socket (default $CREDGATE_METRICS_SOCKET, else\n"
               "                             %s)\n"
               "      --openmetrics          print the OpenMetrics document as the daemon wrote it\n"
               "                             (for node_exporter's textfile collector)\n"
               "      --rules                per-rule counts and last-hit times, in evaluation order\n"
               "                             (needs rule_stats = true in the policy's settings)\n"
               "  -h, --help                 show this help\n\n"
               "The socket is root's alone unless the administrator chose otherwise (credgated(8)).\n"
               "Exit status: 0 on success, 2 on error.\n",
               METRICS_SOCKET_DEFAULT);
}

int cmd_stats(const Context *ctx, const Command *cmd, int argc, char **argv) {
        static const char optstring[] = ":m:h";
        static const struct option opts[] = {
                { "metrics-socket", required_argument, NULL, 'm' },
                { "openmetrics", no_argument, NULL, OPT_OPENMETRICS },
                { "rules", no_argument, NULL, OPT_RULES },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *path = secure_getenv("CREDGATE_METRICS_SOCKET");
        bool openmetrics = false, rules = false;
        Doc d = {};
        int opt, r;

        (void) ctx;
        if (!path || !*path)
                path = METRICS_SOCKET_DEFAULT;
        while ((opt = getopt_long(argc, argv, optstring, opts, NULL)) >= 0) {
                switch (opt) {
                case 'm':
                        if (!*optarg)
                                return usage_error(cmd, "--metrics-socket: empty path");
                        path = optarg;
                        break;
                case OPT_OPENMETRICS:
                        openmetrics = true;
                        break;
                case OPT_RULES:
                        rules = true;
                        break;
                case 'h':
                        help_stats();
                        return finish_output(EXIT_SUCCESS);
                default:
                        return option_error(cmd, optstring, opt, argv);
                }
        }
        if (optind < argc)
                return usage_error(cmd, "unexpected argument '%s'", argv[optind]);
        if (openmetrics && rules)
                return usage_error(cmd, "give at most one of --openmetrics and --rules");

        r = doc_read(path, &d);
        if (r == 0 && openmetrics)
                fwrite(d.text, 1, d.len, stdout);
        else if (r == 0 && (r = doc_parse(&d)) == 0) {
                if (rules)
                        r = print_rules(&d);
                else
                        print_summary(&d);
        }
        doc_done(&d);
        return r != 0 ? r : finish_output(EXIT_SUCCESS);
}
