/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Runs a fuzz target's LLVMFuzzerTestOneInput() over saved inputs, built
 * with the normal compiler and without libFuzzer, so that the seed corpus
 * and every input a fuzzer ever found stay regression tests in 'make check'.
 *
 * Usage: replay-TARGET [DIR|FILE...]. Without arguments it reads
 * $CREDGATE_SRCDIR/tests/fuzz/corpus/TARGET (must hold at least one file)
 * and tests/fuzz/regressions/TARGET (may be absent). Prints TAP, one line
 * per input; a target that finds a violation abort()s, which the TAP
 * driver reports as missing tests.
 */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "macro.h"

#ifndef FUZZ_TARGET
#error "FUZZ_TARGET must name the target"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Files {
        char **v;
        size_t n;
} Files;

static int add(Files *f, const char *path) {
        char **m = reallocarray(f->v, f->n + 1, sizeof(char *));
        if (!m)
                return -ENOMEM;
        f->v = m;
        if (!(f->v[f->n] = strdup(path)))
                return -ENOMEM;
        f->n++;
        return 0;
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Add @path, or every regular file in it (sorted, dot files skipped). */
static int collect(Files *f, const char *path, bool optional) {
        struct stat st;
        if (stat(path, &st) < 0) {
                if (optional && errno == ENOENT)
                        return 0;
                fprintf(stderr, "replay: '%s': %m\n", path);
                return -errno;
        }
        if (!S_ISDIR(st.st_mode))
                return add(f, path);
        DIR *d = opendir(path);
        if (!d) {
                fprintf(stderr, "replay: '%s': %m\n", path);
                return -errno;
        }
        size_t first = f->n;
        int r = 0;
        for (struct dirent *de; r == 0 && (de = readdir(d));) {
                if (de->d_name[0] == '.' || strcmp(de->d_name, "README") == 0)
                        continue;
                _cleanup_free_ char *p = NULL;
                if (asprintf(&p, "%s/%s", path, de->d_name) < 0)
                        r = -ENOMEM;
                else if (stat(p, &st) == 0 && S_ISREG(st.st_mode))
                        r = add(f, p);
        }
        closedir(d);
        qsort(f->v + first, f->n - first, sizeof(char *), cmp_str);
        return r;
}

static int read_all(const char *path, uint8_t **ret, size_t *ret_n) {
        FILE *fp = fopen(path, "re");
        uint8_t *buf = NULL;
        size_t n = 0, cap = 0;
        if (!fp)
                return -errno;
        for (;;) {
                if (n == cap) {
                        cap = cap ? cap * 2 : 4096;
                        uint8_t *m = realloc(buf, cap);
                        if (!m) {
                                free(buf);
                                fclose(fp);
                                return -ENOMEM;
                        }
                        buf = m;
                }
                size_t k = fread(buf + n, 1, cap - n, fp);
                n += k;
                if (k == 0)
                        break;
        }
        int r = ferror(fp) ? -EIO : 0;
        fclose(fp);
        if (r < 0) {
                free(buf);
                return r;
        }
        *ret = buf;
        *ret_n = n;
        return 0;
}

int main(int argc, char *argv[]) {
        Files f = {};
        int r = 0;

        if (argc > 1) {
                for (int i = 1; i < argc && r == 0; i++)
                        r = collect(&f, argv[i], false);
        } else {
                const char *src = getenv("CREDGATE_SRCDIR");
                _cleanup_free_ char *corpus = NULL, *regressions = NULL;
                if (!src)
                        src = ".";
                if (asprintf(&corpus, "%s/tests/fuzz/corpus/" FUZZ_TARGET, src) < 0 ||
                    asprintf(&regressions, "%s/tests/fuzz/regressions/" FUZZ_TARGET, src) < 0)
                        return EXIT_FAILURE;
                r = collect(&f, corpus, false);
                if (r == 0 && f.n == 0) {
                        fprintf(stderr, "replay: no seed inputs in '%s'\n", corpus);
                        r = -ENOENT;
                }
                if (r == 0)
                        r = collect(&f, regressions, true);
        }
        if (r < 0) {
                printf("1..0 # error: cannot list inputs\nBail out! cannot list inputs\n");
                return EXIT_FAILURE;
        }

        printf("1..%zu\n", f.n);
        fflush(stdout);
        int failed = 0;
        for (size_t i = 0; i < f.n; i++) {
                uint8_t *data = NULL;
                size_t n = 0;
                r = read_all(f.v[i], &data, &n);
                if (r < 0) {
                        printf("not ok %zu - %s: %s\n", i + 1, f.v[i], strerror(-r));
                        failed = 1;
                } else {
                        (void) LLVMFuzzerTestOneInput(data, n);
                        printf("ok %zu - " FUZZ_TARGET " %s\n", i + 1, f.v[i]);
                }
                fflush(stdout);
                free(data);
                free(f.v[i]);
        }
        free(f.v);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
