/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Reloads run policy_load_full() in a worker thread; the event loop keeps
 * answering with the old policy meanwhile and swaps in the new one when the
 * thread reports through a pipe. The thread shares nothing with the loop
 * while it runs: its own libconfig state, its own result struct.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "macro.h"
#include "reload.h"

typedef struct Job {
        const PolicyOptions *opts;
        int notify_fd;
        int r;
        Policy *policy;
        Settings settings;
        Diags diags;
} Job;

struct Reloader {
        const PolicyOptions *opts;
        reload_done_t done;
        void *userdata;
        int pipe[2];
        sd_event_source *src;
        pthread_t thread;
        bool running;
        Job job;
};

static void *run(void *p) {
        Job *j = p;
        j->settings = SETTINGS_DEFAULTS;
        j->r = policy_load_full(j->opts, &j->diags, NULL, &j->settings, &j->policy);
        /* A pipe write of one byte cannot be short; EINTR cannot happen with
         * all signals blocked in this thread. */
        (void) !write(j->notify_fd, "x", 1);
        return NULL;
}

static void finish(Reloader *r) {
        pthread_join(r->thread, NULL);
        r->running = false;
}

static int on_done(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        Reloader *r = userdata;
        char buf[16];

        (void) !read(fd, buf, sizeof(buf));
        if (!r->running)
                return 0;
        finish(r);
        Job j = r->job;
        r->job = (Job){};
        r->done(r->userdata, j.r, j.r >= 0 ? j.policy : NULL, &j.settings, &j.diags);
        if (j.r < 0)
                policy_unref(j.policy);
        diags_done(&j.diags);
        return 0;
}

int reloader_new(sd_event *e, const PolicyOptions *opts, reload_done_t done, void *userdata, Reloader **ret) {
        Reloader *r = calloc(1, sizeof(Reloader));
        if (!r)
                return -ENOMEM;
        r->opts = opts;
        r->done = done;
        r->userdata = userdata;
        if (pipe2(r->pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
                int k = -errno;
                free(r);
                return k;
        }
        int k = sd_event_add_io(e, &r->src, r->pipe[0], EPOLLIN, on_done, r);
        if (k < 0) {
                close(r->pipe[0]);
                close(r->pipe[1]);
                free(r);
                return k;
        }
        *ret = r;
        return 0;
}

Reloader *reloader_free(Reloader *r) {
        if (!r)
                return NULL;
        if (r->running) {
                finish(r);
                policy_unref(r->job.policy);
                diags_done(&r->job.diags);
        }
        sd_event_source_disable_unref(r->src);
        close(r->pipe[0]);
        close(r->pipe[1]);
        free(r);
        return NULL;
}

int reloader_start(Reloader *r) {
        sigset_t all, old;

        if (r->running)
                return -EBUSY;
        r->job = (Job){ .opts = r->opts, .notify_fd = r->pipe[1] };
        /* The thread must never take a signal meant for the event loop. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int k = pthread_create(&r->thread, NULL, run, &r->job);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (k != 0)
                return -k;
        r->running = true;
        return 0;
}

bool reloader_busy(const Reloader *r) {
        return r && r->running;
}
