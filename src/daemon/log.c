/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Where the daemon's messages go. Under systemd, stderr is a journal stream
 * ($JOURNAL_STREAM names its device and inode); then messages are sent
 * with sd_journal_send() so they carry a priority and fields. Elsewhere
 * (a terminal, a test) they are plain lines on stderr.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <systemd/sd-journal.h>

#include "log.h"

static bool to_journal;
/* Only the event loop's thread logs (the reload thread hands its
 * diagnostics back), so plain counters do. */
static uint64_t lost, lost_reported;
static int lost_error;

LogTarget log_default_target(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        bool j = e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
                 (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
        return j ? LOG_TARGET_JOURNAL : LOG_TARGET_STDERR;
}

void log_set_target(LogTarget t) {
        to_journal = t == LOG_TARGET_JOURNAL;
}

void log_open(void) {
        if (to_journal)
                log_msg(LOG_INFO, "credgated %s starting", PACKAGE_VERSION);
}

void log_msg(int priority, const char *fmt, ...) {
        char buf[2048];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);

        if (to_journal)
                (void) log_journal_result(
                        sd_journal_send("MESSAGE=%s", buf, "PRIORITY=%i", priority, "SYSLOG_IDENTIFIER=credgated", NULL));
        else
                (void) fprintf(stderr, "credgated: %s\n", buf);
}

int log_journal_result(int r) {
        if (r < 0) {
                lost++;
                lost_error = -r;
                return r;
        }
        if (lost > lost_reported) {
                uint64_t n = lost - lost_reported;
                if (sd_journal_send("MESSAGE=%" PRIu64 " journal entries (log and audit) were lost: %s", n,
                                    strerror(lost_error), "MESSAGE_ID=" LOG_LOST_MESSAGE_ID, "PRIORITY=%i", LOG_WARNING,
                                    "SYSLOG_IDENTIFIER=credgated", "CREDGATE_LOST=%" PRIu64, n, NULL) >= 0)
                        lost_reported += n;
        }
        return r;
}

uint64_t log_lost_count(void) {
        return lost;
}
