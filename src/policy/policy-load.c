/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Where the policy comes from: the main file and the drop-in folders. Finds
 * the drop-in files (masking, ordering), refuses files and folders that
 * someone other than root could have written (as sudo and doas do), reads
 * each file and hands its text to the parser.
 *
 * Files are checked on the descriptor that is then read, so what was
 * checked is what is parsed. Symlinks are judged by their target.
 *
 * The folders above each file and drop-in folder are judged too, up to '/':
 * whoever can rename entries in one of them can swap or hide everything
 * below it. They are found by resolving the path one component at a time,
 * so that the folders holding a symlink and those above its target are all
 * judged. Once every one of them is trusted, nobody untrusted can change
 * what the path leads to between that walk and the open().
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <nettle/sha2.h>

#include "macro.h"
#include "policy-load.h"

#define POLICY_FILE_MAX (256u << 20)
#define SYMLINKS_MAX 40 /* as the kernel's path walk */

/* A folder above a policy file, judged once per load. */
typedef struct Judged {
        char *path;
        int r; /* 0 or -EPERM */
} Judged;

typedef struct Loader {
        const PolicyOptions *o;
        Diags *diags;
        Sources *sources;
        Judged *judged;
        size_t n_judged;
        struct sha256_ctx revision; /* over the loaded files, in evaluation order */
} Loader;

void sources_done(Sources *s) {
        if (!s)
                return;
        for (size_t i = 0; i < s->n; i++) {
                free(s->v[i].path);
                free(s->v[i].note);
        }
        free(s->v);
        *s = (Sources){};
}

const char *source_state_name(SourceState s) {
        switch (s) {
        case SOURCE_LOADED:
                return "loaded";
        case SOURCE_MASK:
                return "mask";
        case SOURCE_MASKED:
                return "masked";
        case SOURCE_SKIPPED:
                return "skipped";
        case SOURCE_FAILED:
                return "failed";
        }
        return "failed";
}

_printf_(4, 5) static void note_source(Loader *l, const char *path, SourceState st, const char *fmt, ...) {
        Sources *s = l->sources;
        char *note = NULL;

        if (!s)
                return;
        if (fmt) {
                va_list ap;
                va_start(ap, fmt);
                if (vasprintf(&note, fmt, ap) < 0)
                        note = NULL;
                va_end(ap);
        }
        Source *v = reallocarray(s->v, s->n + 1, sizeof(Source));
        if (!v) {
                free(note);
                return;
        }
        s->v = v;
        char *p = strdup(path);
        if (!p) {
                free(note);
                return;
        }
        s->v[s->n++] = (Source){ .path = p, .state = st, .note = note };
}

/* Owned by root (or the daemon's own user) and not writable by group or others. */
static int check_secure(Loader *l, const char *path, const struct stat *st) {
        if (!l->o->check_ownership)
                return 0;
        if (st->st_uid != 0 && st->st_uid != l->o->trusted_uid) {
                diags_add(l->diags, false, path, 0, "refusing: owned by uid %u; must be owned by root",
                          (unsigned) st->st_uid);
                return -EPERM;
        }
        if (st->st_mode & (S_IWGRP | S_IWOTH)) {
                diags_add(l->diags, false, path, 0,
                          "refusing: writable by %s (mode %04o); fix with: chmod go-w '%s'",
                          (st->st_mode & S_IWOTH) ? "others" : "group", (unsigned) (st->st_mode & 07777), path);
                return -EPERM;
        }
        return 0;
}

/*
 * Judge @dir, a folder on the way to @path (as configured): owned by root or
 * the daemon's euid, writable by nobody else. A refusal is reported once per
 * folder and load, however many paths pass through it.
 * Return: 0, -EPERM after recording a refusal, -ENOMEM.
 */
static int judge_folder(Loader *l, const char *dir, const struct stat *st, const char *path) {
        for (size_t i = 0; i < l->n_judged; i++)
                if (strcmp(l->judged[i].path, dir) == 0)
                        return l->judged[i].r;

        int r = -EPERM;
        if (st->st_uid != 0 && st->st_uid != l->o->trusted_uid)
                diags_add(l->diags, false, dir, 0,
                          "refusing: folder above '%s' is owned by uid %u; must be owned by root; fix with: "
                          "chown root '%s'",
                          path, (unsigned) st->st_uid, dir);
        else if ((st->st_mode & S_IWOTH) && (st->st_mode & S_ISVTX))
                /* The sticky bit stops renames, not new entries: /tmp is no place for a policy. */
                diags_add(l->diags, false, dir, 0,
                          "refusing: folder above '%s' is writable by others (mode %04o; the sticky bit does not "
                          "stop anyone from creating entries); fix with: keep the policy in a folder only root can "
                          "write, such as /etc/credgate",
                          path, (unsigned) (st->st_mode & 07777));
        else if (st->st_mode & (S_IWGRP | S_IWOTH))
                diags_add(l->diags, false, dir, 0,
                          "refusing: folder above '%s' is writable by %s (mode %04o); fix with: chmod go-w '%s'", path,
                          (st->st_mode & S_IWOTH) ? "others" : "group", (unsigned) (st->st_mode & 07777), dir);
        else
                r = 0;

        Judged *v = reallocarray(l->judged, l->n_judged + 1, sizeof(Judged));
        if (!v)
                return -ENOMEM;
        l->judged = v;
        if (!(v[l->n_judged].path = strdup(dir)))
                return -ENOMEM;
        v[l->n_judged++].r = r;
        return r;
}

/* Is there a component other than "" after *@rest? */
static bool more_components(const char *rest) {
        return rest[strspn(rest, "/")] != '\0';
}

/*
 * Judge every folder that resolving @path passes through, from '/' down,
 * following symlinks as the kernel does: the folders holding a link and the
 * ones above its target alike. The final component (the file or drop-in
 * folder itself) is left to check_secure() on its descriptor. A missing
 * component ends the walk, with what exists above it judged: whoever could
 * write there could have renamed the rest away. Other lookup errors end it
 * too; open() then reports them.
 * Return: 0, -EPERM after recording a refusal, -ENOMEM.
 */
static int check_folders_above(Loader *l, const char *path) {
        _cleanup_free_ char *done = NULL, *todo = NULL;
        struct stat st;
        size_t n_done = 0;
        unsigned links = 0;
        int r;

        if (!l->o->check_ownership)
                return 0;
        if (path[0] == '/')
                todo = strdup(path);
        else {
                _cleanup_free_ char *cwd = getcwd(NULL, 0);
                if (!cwd) {
                        if (errno == ENOMEM)
                                return -ENOMEM;
                        /* Without the folders above it there is no judging it. */
                        diags_add(l->diags, false, path, 0,
                                  "refusing: cannot tell which folders lie above it (getcwd: %s); give an absolute "
                                  "path",
                                  strerror(errno));
                        return -EPERM;
                }
                if (asprintf(&todo, "%s/%s", cwd, path) < 0)
                        todo = NULL;
        }
        size_t cap = 256;
        if (!todo || !(done = malloc(cap)))
                return -ENOMEM;
        done[0] = '\0'; /* the resolved prefix so far, "" for '/' */
        if (stat("/", &st) < 0)
                return 0;
        r = judge_folder(l, "/", &st, path);
        if (r < 0)
                return r;

        for (char *rest = todo;;) {
                rest += strspn(rest, "/");
                if (*rest == '\0')
                        return 0;
                size_t len = strcspn(rest, "/");
                char *comp = rest;
                rest += len;
                if (len == 1 && comp[0] == '.')
                        continue;
                if (len == 2 && comp[0] == '.' && comp[1] == '.') {
                        /* done holds no symlink: ".." is textual there. */
                        char *slash = strrchr(done, '/');
                        n_done = slash ? (size_t) (slash - done) : 0;
                        done[n_done] = '\0';
                        continue;
                }
                bool last = !more_components(rest);
                if (n_done + len + 2 > cap) {
                        char *m = realloc(done, n_done + len + 2);
                        if (!m)
                                return -ENOMEM;
                        done = m;
                        cap = n_done + len + 2;
                }
                done[n_done] = '/';
                memcpy(done + n_done + 1, comp, len);
                done[n_done + 1 + len] = '\0';
                if (lstat(done, &st) < 0)
                        return 0;
                if (S_ISLNK(st.st_mode)) {
                        _cleanup_free_ char *target = NULL, *next = NULL;
                        if (++links > SYMLINKS_MAX)
                                return 0;
                        target = malloc((size_t) st.st_size + 1);
                        if (!target)
                                return -ENOMEM;
                        ssize_t k = readlink(done, target, (size_t) st.st_size + 1);
                        if (k < 0 || k > st.st_size)
                                return 0; /* changed under us: open() will tell */
                        target[k] = '\0';
                        done[n_done] = '\0'; /* the link's folder, already judged */
                        if (target[0] == '/') {
                                n_done = 0;
                                done[0] = '\0';
                        }
                        if (asprintf(&next, "%s%s", target, rest) < 0)
                                return -ENOMEM;
                        free(todo);
                        todo = TAKE_PTR(next);
                        rest = todo;
                        continue;
                }
                if (last || !S_ISDIR(st.st_mode))
                        return 0;
                r = judge_folder(l, done, &st, path);
                if (r < 0)
                        return r;
                n_done += 1 + len;
        }
}

static bool is_dev_null(const struct stat *st) {
        return S_ISCHR(st->st_mode) && st->st_rdev == makedev(1, 3);
}

/*
 * Open and read @path. With @may_mask, an empty file or /dev/null is a mask
 * (return 1, no text). Return: 0 with *ret_text, 1 for a mask, or -errno
 * after recording the reason.
 */
static int read_file(Loader *l, const char *path, bool may_mask, char **ret_text) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        _cleanup_free_ char *text = NULL;
        struct stat st;
        size_t n = 0;

        if (fd < 0 || fstat(fd, &st) < 0) {
                diags_add(l->diags, false, path, 0, "cannot open: %s", strerror(errno));
                return -EINVAL;
        }
        if (may_mask && (is_dev_null(&st) || (S_ISREG(st.st_mode) && st.st_size == 0)))
                return 1;
        /* libconfig's scanner exit()s on a directory: only read regular files. */
        if (!S_ISREG(st.st_mode)) {
                diags_add(l->diags, false, path, 0, "not a regular file");
                return -EINVAL;
        }
        if (check_secure(l, path, &st) < 0)
                return -EPERM;
        if ((uint64_t) st.st_size > POLICY_FILE_MAX) {
                diags_add(l->diags, false, path, 0, "file too large (more than %u MiB)", POLICY_FILE_MAX >> 20);
                return -EINVAL;
        }
        size_t cap = (size_t) st.st_size + 1;
        if (!(text = malloc(cap)))
                return -ENOMEM;
        for (;;) {
                if (n + 1 == cap) {
                        if (cap > POLICY_FILE_MAX) {
                                diags_add(l->diags, false, path, 0, "file too large (more than %u MiB)",
                                          POLICY_FILE_MAX >> 20);
                                return -EINVAL;
                        }
                        char *m = realloc(text, cap * 2);
                        if (!m)
                                return -ENOMEM;
                        text = m;
                        cap *= 2;
                }
                ssize_t k = read(fd, text + n, cap - n - 1);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        diags_add(l->diags, false, path, 0, "cannot read: %s", strerror(errno));
                        return -EINVAL;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        text[n] = '\0';
        if (memchr(text, '\0', n)) {
                diags_add(l->diags, false, path, 0, "file contains a NUL byte");
                return -EINVAL;
        }
        *ret_text = TAKE_PTR(text);
        return 0;
}

typedef struct DropIn {
        char *name;
        char *path;
} DropIn;

static int cmp_dropin(const void *a, const void *b) {
        return strcmp(((const DropIn *) a)->name, ((const DropIn *) b)->name);
}

static const DropIn *find_dropin(const DropIn *v, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(v[i].name, name) == 0)
                        return &v[i];
        return NULL;
}

static bool ends_with_conf(const char *name) {
        size_t n = strlen(name);
        return n > 5 && strcmp(name + n - 5, ".conf") == 0;
}

/* Collect the *.conf names of one folder; earlier folders win. */
static int scan_dir(Loader *l, const char *dir, DropIn **v, size_t *n) {
        struct stat st;
        int fd, r;

        /* Judged even when the folder is missing: it may have been renamed away. */
        r = check_folders_above(l, dir);
        if (r < 0) {
                if (r == -EPERM)
                        note_source(l, dir, SOURCE_FAILED, "insecure folder above it");
                return r;
        }
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT)
                        return 0; /* a folder that does not exist holds no rules */
                diags_add(l->diags, false, dir, 0, "cannot open folder: %s", strerror(errno));
                return -EINVAL;
        }
        if (fstat(fd, &st) < 0 || check_secure(l, dir, &st) < 0) {
                close(fd);
                note_source(l, dir, SOURCE_FAILED, "insecure folder");
                return -EPERM;
        }
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return -ENOMEM;
        }
        r = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                _cleanup_free_ char *path = NULL;
                if (de->d_name[0] == '.')
                        continue;
                if (asprintf(&path, "%s/%s", dir, de->d_name) < 0) {
                        r = -ENOMEM;
                        break;
                }
                if (!ends_with_conf(de->d_name)) {
                        note_source(l, path, SOURCE_SKIPPED, "not a .conf file");
                        continue;
                }
                const DropIn *prev = find_dropin(*v, *n, de->d_name);
                if (prev) {
                        struct stat pst;
                        bool mask = stat(prev->path, &pst) == 0 &&
                                    (is_dev_null(&pst) || (S_ISREG(pst.st_mode) && pst.st_size == 0));
                        if (mask)
                                note_source(l, path, SOURCE_MASKED, "masked by '%s'", prev->path);
                        else
                                note_source(l, path, SOURCE_SKIPPED, "overridden by '%s'", prev->path);
                        continue;
                }
                DropIn *m = reallocarray(*v, *n + 1, sizeof(DropIn));
                if (!m) {
                        r = -ENOMEM;
                        break;
                }
                *v = m;
                (*v)[*n] = (DropIn){ .name = strdup(de->d_name), .path = TAKE_PTR(path) };
                if (!(*v)[*n].name) {
                        free((*v)[*n].path);
                        r = -ENOMEM;
                        break;
                }
                (*n)++;
        }
        closedir(d);
        return r;
}

static int load_one(Loader *l, PolicyBuilder *b, const char *path, bool main_file, Settings *settings) {
        _cleanup_free_ char *text = NULL;
        size_t n_rules = 0;

        int r = check_folders_above(l, path);
        if (r < 0) {
                if (r == -EPERM)
                        note_source(l, path, SOURCE_FAILED, "insecure folder above it");
                return r;
        }
        r = read_file(l, path, !main_file, &text);
        if (r == 1) {
                note_source(l, path, SOURCE_MASK, "empty or /dev/null: masks files of this name");
                return 0;
        }
        if (r >= 0)
                r = policy_parse(b, l->diags, path, text, main_file, settings, &n_rules);
        if (r < 0) {
                note_source(l, path, SOURCE_FAILED, NULL);
                return r;
        }
        /* The revision: each loaded file as its length in decimal, a newline,
         * then its bytes (read_file() refuses a NUL, so strlen() is its size). */
        char len[24];
        int k = snprintf(len, sizeof(len), "%zu\n", strlen(text));
        sha256_update(&l->revision, (size_t) k, (const uint8_t *) len);
        sha256_update(&l->revision, strlen(text), (const uint8_t *) text);
        note_source(l, path, SOURCE_LOADED, NULL);
        if (l->sources && l->sources->n > 0 && l->sources->v[l->sources->n - 1].state == SOURCE_LOADED)
                l->sources->v[l->sources->n - 1].n_rules = n_rules;
        return 0;
}

int policy_load_full(const PolicyOptions *o, Diags *diags, Sources *sources, Settings *settings,
                     Policy **ret_policy) {
        _cleanup_(policy_builder_freep) PolicyBuilder *b = policy_builder_new();
        Loader l = { .o = o, .diags = diags, .sources = sources };
        size_t errors_before = diags->n_errors;
        DropIn *dropins = NULL;
        size_t n_dropins = 0;
        int r = 0;

        if (!b)
                return -ENOMEM;
        sha256_init(&l.revision);
        if (o->dropin_file) {
                if (!(dropins = malloc(sizeof(DropIn))))
                        return -ENOMEM;
                dropins[0] = (DropIn){ .name = strdup(o->dropin_name), .path = strdup(o->dropin_file) };
                n_dropins = 1;
                if (!dropins[0].name || !dropins[0].path)
                        r = -ENOMEM;
        }
        for (size_t i = 0; i < o->n_rule_dirs && r != -ENOMEM; i++)
                r = scan_dir(&l, o->rule_dirs[i], &dropins, &n_dropins);
        if (n_dropins > 0)
                qsort(dropins, n_dropins, sizeof(DropIn), cmp_dropin);

        /* Drop-ins first, by name, so an admin's 10-*.conf beats a vendor's
         * 50-*.conf; the main file's rules come last. First match wins. */
        for (size_t i = 0; i < n_dropins && r != -ENOMEM; i++)
                r = load_one(&l, b, dropins[i].path, false, NULL);
        if (r != -ENOMEM)
                r = load_one(&l, b, o->main_file, true, settings);

        for (size_t i = 0; i < n_dropins; i++) {
                free(dropins[i].name);
                free(dropins[i].path);
        }
        free(dropins);
        for (size_t i = 0; i < l.n_judged; i++)
                free(l.judged[i].path);
        free(l.judged);

        if (r == -ENOMEM)
                return r;
        if (diags->n_errors > errors_before)
                r = -EINVAL;
        else {
                uint8_t digest[SHA256_DIGEST_SIZE];
                char hex[2 * SHA256_DIGEST_SIZE + 1];
                sha256_digest(&l.revision, sizeof(digest), digest);
                for (size_t i = 0; i < sizeof(digest); i++)
                        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
                policy_builder_set_revision(b, hex);
                r = policy_builder_finish(TAKE_PTR(b), ret_policy);
        }
        /* libconfig's tree of a large policy is many times the size of the
         * compiled one; hand the freed memory back to the system. */
        malloc_trim(0);
        return r;
}

int policy_load(const char *path, Diags *diags, Policy **ret_policy) {
        PolicyOptions o = { .main_file = path };
        Settings st = SETTINGS_DEFAULTS;
        return policy_load_full(&o, diags, NULL, &st, ret_policy);
}
