/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <syslog.h>

#include "macro.h"

/*
 * Daemon logging: to the journal (structured, through sd_journal_send) when
 * stderr is connected to it, else one line per message on stderr. A failed
 * write is ignored: logging never changes what the daemon does.
 */
void log_setup(void);
_printf_(2, 3) void log_msg(int priority, const char *fmt, ...);

#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
