/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <syslog.h>

#include "macro.h"

typedef enum LogTarget {
        LOG_TARGET_JOURNAL,
        LOG_TARGET_STDERR,
} LogTarget;

/*
 * Daemon logging: to the journal (structured, through sd_journal_send) or one
 * line per message on stderr. A failed write is ignored: logging never
 * changes what the daemon does.
 */

/* journal when stderr is connected to the journal ($JOURNAL_STREAM), else stderr. */
LogTarget log_default_target(void);
void log_set_target(LogTarget t);

/*
 * With the journal as target, write the first entry now: libsystemd opens
 * its journal socket on the first entry, and one that first has to log
 * when the daemon is out of descriptors (accept() failing with EMFILE)
 * would lose that entry.
 */
void log_open(void);

_printf_(2, 3) void log_msg(int priority, const char *fmt, ...);

/* MESSAGE_ID of the entry that reports journal entries lost before it. */
#define LOG_LOST_MESSAGE_ID "b7a3c1e2d4f6480f9a1b2c3d4e5f6a73"

/*
 * Account for the result of one sd_journal_send() (log entries and audit
 * entries alike): a failure (say EMFILE, when libsystemd could not open its
 * socket) is counted, and the first entry that gets through afterwards is
 * followed by one that says how many were lost, so that the journal never
 * drops entries silently. Return: @r.
 */
int log_journal_result(int r);

/* Journal entries lost since startup (for STATUS=). */
uint64_t log_lost_count(void);

#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
