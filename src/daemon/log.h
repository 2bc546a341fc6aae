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

_printf_(2, 3) void log_msg(int priority, const char *fmt, ...);

#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
