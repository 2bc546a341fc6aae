/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Where the daemon's messages go. Under systemd, stderr is a journal stream
 * ($JOURNAL_STREAM names its device and inode); then messages are sent
 * with sd_journal_send() so they carry a priority and fields. Elsewhere
 * (a terminal, a test) they are plain lines on stderr.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <systemd/sd-journal.h>

#include "log.h"

static bool to_journal;

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

void log_msg(int priority, const char *fmt, ...) {
        char buf[2048];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);

        if (to_journal)
                (void) sd_journal_send("MESSAGE=%s", buf, "PRIORITY=%i", priority, "SYSLOG_IDENTIFIER=credgated", NULL);
        else
                (void) fprintf(stderr, "credgated: %s\n", buf);
}
