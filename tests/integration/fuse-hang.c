/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * fuse-hang: a FUSE file system that never answers FLUSH (issue 10, part 1).
 *
 *   fuse-hang MOUNTPOINT
 *
 * Speaks the kernel protocol on /dev/fuse directly (linux/fuse.h, no
 * libfuse) and mounts itself with mount(2), so it needs root (CAP_SYS_ADMIN).
 * The file system is a root folder holding one regular file "f", mode 0666,
 * mounted with allow_other so that every uid may open it.
 *
 * Every close() of a descriptor of "f" sends FUSE_FLUSH and waits for the
 * answer, which never comes (nor one to the FUSE_INTERRUPT that follows a
 * signal): the closing thread blocks, for a killed process uninterruptibly,
 * until this server goes away. Each FLUSH is logged on stdout as
 *
 *   flush pid=PID tgid=TGID nodeid=N
 *
 * (PID is the closing thread as the kernel reports it, TGID its process
 * from /proc). "ready" is printed once the mount is up and FUSE_INIT is
 * answered. SIGTERM or SIGINT ends the server: closing /dev/fuse aborts the
 * connection, which releases every thread stuck in FLUSH; it then detaches
 * the mount (the caller should umount2(MNT_DETACH) too, in case this
 * process was killed).
 *
 * Exit status: 0 after SIGTERM/SIGINT, 77 when /dev/fuse cannot be opened
 * or the mount is refused for lack of privilege (the reason on stderr), 1
 * on any other error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define FILE_INO 2
#define BUF_SIZE (FUSE_MIN_READ_BUFFER + 256 * 1024)
#define MAX_WRITE (128 * 1024)

static const char content[] = "fuse-hang: this file's FLUSH is never answered\n";
static volatile sig_atomic_t quit;
static int fuse_fd = -1;

static void on_signal(int sig) {
        (void) sig;
        quit = 1;
}

static int reply(uint64_t unique, int error, const void *data, size_t len) {
        struct fuse_out_header h = {
                .len = (uint32_t) (sizeof(h) + (error ? 0 : len)),
                .error = -error,
                .unique = unique,
        };
        struct iovec iov[2] = { { &h, sizeof(h) }, { (void *) data, error ? 0 : len } };
        ssize_t n = writev(fuse_fd, iov, error || len == 0 ? 1 : 2);
        if (n < 0 && errno != ENOENT) /* ENOENT: the request was interrupted meanwhile */
                return -errno;
        return 0;
}

static void fill_attr(uint64_t ino, struct fuse_attr *a) {
        memset(a, 0, sizeof(*a));
        a->ino = ino;
        a->nlink = ino == FUSE_ROOT_ID ? 2 : 1;
        a->mode = ino == FUSE_ROOT_ID ? (S_IFDIR | 0755) : (S_IFREG | 0666);
        a->size = ino == FUSE_ROOT_ID ? 0 : sizeof(content) - 1;
        a->blocks = 1;
        a->blksize = 4096;
        a->atime = a->mtime = a->ctime = (uint64_t) time(NULL);
}

static long tgid_of(uint32_t pid) {
        char path[64], line[256];
        long tgid = -1;
        snprintf(path, sizeof(path), "/proc/%u/status", pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, "Tgid:", 5) == 0) {
                        tgid = strtol(line + 5, NULL, 10);
                        break;
                }
        fclose(f);
        return tgid;
}

static int handle(const struct fuse_in_header *in, const void *arg, size_t arglen, int *initialized) {
        switch (in->opcode) {
        case FUSE_INIT: {
                const struct fuse_init_in *ii = arg;
                struct fuse_init_out out = { 0 };
                if (arglen < 16) /* major, minor, max_readahead, flags */
                        return reply(in->unique, EINVAL, NULL, 0);
                out.major = FUSE_KERNEL_VERSION;
                if (ii->major != FUSE_KERNEL_VERSION) {
                        /* The kernel speaks a newer major: tell it ours, it sends INIT again. */
                        if (ii->major > FUSE_KERNEL_VERSION)
                                return reply(in->unique, 0, &out, 8);
                        fprintf(stderr, "fuse-hang: kernel FUSE major %u unsupported\n", ii->major);
                        return -EPROTO;
                }
                if (ii->minor < 12) {
                        fprintf(stderr, "fuse-hang: kernel FUSE 7.%u too old\n", ii->minor);
                        return -EPROTO;
                }
                out.minor = ii->minor < FUSE_KERNEL_MINOR_VERSION ? ii->minor : FUSE_KERNEL_MINOR_VERSION;
                out.max_readahead = ii->max_readahead;
                out.flags = 0; /* in particular no FUSE_WRITEBACK_CACHE, no async anything */
                out.max_background = 16;
                out.congestion_threshold = 12;
                out.max_write = MAX_WRITE;
                out.time_gran = 1;
                size_t len = out.minor < 23 ? FUSE_COMPAT_22_INIT_OUT_SIZE : sizeof(out);
                *initialized = 1;
                return reply(in->unique, 0, &out, len);
        }
        case FUSE_LOOKUP: {
                const char *name = arg;
                struct fuse_entry_out e = { 0 };
                if (in->nodeid != FUSE_ROOT_ID || arglen == 0 || strnlen(name, arglen) == arglen ||
                    strcmp(name, "f") != 0)
                        return reply(in->unique, ENOENT, NULL, 0);
                e.nodeid = FILE_INO;
                e.generation = 1;
                e.entry_valid = e.attr_valid = 60;
                fill_attr(FILE_INO, &e.attr);
                return reply(in->unique, 0, &e, sizeof(e));
        }
        case FUSE_GETATTR: {
                struct fuse_attr_out a = { 0 };
                if (in->nodeid != FUSE_ROOT_ID && in->nodeid != FILE_INO)
                        return reply(in->unique, ENOENT, NULL, 0);
                a.attr_valid = 60;
                fill_attr(in->nodeid, &a.attr);
                return reply(in->unique, 0, &a, sizeof(a));
        }
        case FUSE_SETATTR:
                return reply(in->unique, EPERM, NULL, 0);
        case FUSE_OPEN:
        case FUSE_OPENDIR: {
                struct fuse_open_out o = { .fh = in->nodeid };
                if ((in->opcode == FUSE_OPEN) != (in->nodeid == FILE_INO))
                        return reply(in->unique, in->opcode == FUSE_OPEN ? EISDIR : ENOTDIR, NULL, 0);
                return reply(in->unique, 0, &o, sizeof(o));
        }
        case FUSE_READ: {
                const struct fuse_read_in *r = arg;
                size_t size = sizeof(content) - 1, off = 0, n = 0;
                if (arglen >= sizeof(*r) && r->offset < size) {
                        off = (size_t) r->offset;
                        n = size - off < r->size ? size - off : r->size;
                }
                return reply(in->unique, 0, content + off, n);
        }
        case FUSE_READDIR:
                return reply(in->unique, 0, NULL, 0); /* an empty listing is enough */
        case FUSE_RELEASE:
        case FUSE_RELEASEDIR:
        case FUSE_ACCESS:
                return reply(in->unique, 0, NULL, 0);
        case FUSE_STATFS: {
                struct fuse_statfs_out s = { 0 };
                s.st.blocks = s.st.bfree = s.st.bavail = 1;
                s.st.files = 2;
                s.st.bsize = s.st.frsize = 4096;
                s.st.namelen = 255;
                return reply(in->unique, 0, &s, sizeof(s));
        }
        case FUSE_FLUSH:
                /* Never answered: this is the point of the program. */
                printf("flush pid=%u tgid=%ld nodeid=%llu\n", in->pid, tgid_of(in->pid),
                       (unsigned long long) in->nodeid);
                return 0;
        case FUSE_INTERRUPT: /* of a FLUSH: ignored as well */
        case FUSE_FORGET:
        case FUSE_BATCH_FORGET: /* no reply expected */
                return 0;
        case FUSE_DESTROY:
                return reply(in->unique, 0, NULL, 0);
        default: /* GETXATTR, LISTXATTR, WRITE, ...: not implemented */
                return reply(in->unique, ENOSYS, NULL, 0);
        }
}

int main(int argc, char **argv) {
        static char buf[BUF_SIZE] __attribute__((aligned(8)));
        char opts[256];
        int initialized = 0, status = 0;

        if (argc != 2) {
                fprintf(stderr, "usage: fuse-hang MOUNTPOINT\n");
                return 2;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);

        struct sigaction sa = { .sa_handler = on_signal }; /* no SA_RESTART: read() returns EINTR */
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);

        fuse_fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
        if (fuse_fd < 0) {
                fprintf(stderr, "fuse-hang: cannot open /dev/fuse: %s\n", strerror(errno));
                return 77;
        }
        snprintf(opts, sizeof(opts), "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions",
                 fuse_fd);
        if (mount("fuse-hang", argv[1], "fuse", MS_NOSUID | MS_NODEV, opts) < 0) {
                int e = errno;
                fprintf(stderr, "fuse-hang: cannot mount a FUSE file system on %s: %s\n", argv[1], strerror(e));
                return e == EPERM || e == EACCES || e == ENODEV ? 77 : 1;
        }

        while (!quit) {
                ssize_t n = read(fuse_fd, buf, sizeof(buf));
                if (n < 0) {
                        if (errno == EINTR || errno == ENOENT || errno == EAGAIN)
                                continue;
                        if (errno != ENODEV) { /* ENODEV: unmounted */
                                fprintf(stderr, "fuse-hang: read /dev/fuse: %s\n", strerror(errno));
                                status = 1;
                        }
                        break;
                }
                if ((size_t) n < sizeof(struct fuse_in_header)) {
                        fprintf(stderr, "fuse-hang: short request (%zd bytes)\n", n);
                        status = 1;
                        break;
                }
                const struct fuse_in_header *in = (const void *) buf;
                int was = initialized;
                int r = handle(in, buf + sizeof(*in), (size_t) n - sizeof(*in), &initialized);
                if (r < 0) {
                        fprintf(stderr, "fuse-hang: reply to opcode %u: %s\n", in->opcode, strerror(-r));
                        status = 1;
                        break;
                }
                if (!was && initialized)
                        printf("ready\n");
        }
        /* Closing /dev/fuse aborts the connection: every FLUSH waiting on us ends. */
        close(fuse_fd);
        (void) umount2(argv[1], MNT_DETACH);
        return status;
}
