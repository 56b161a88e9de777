/*
 * print.h: output helpers that never allocate, beyond the pm_snprintf family of internal.h:
 * a buffered writer for multi-line reports, the shortest spelling of a size, and errno
 * values in words.
 */
#ifndef PM_PRINT_H
#define PM_PRINT_H

#include "internal.h"

/* The reason for errno value err in words ("No such file or directory"), as strerror gives it
 * in the C locale, but from a fixed table: strerror may allocate or read locale data. Unknown
 * values read "errno N" from a small rotating set of static buffers (enough for the two or
 * three reasons one message names). */
PM_HIDDEN const char *pm_strerror(int err);

/* Writes "size" as the shortest exact form: 0, 4096, 128K, 4M, 1G. */
PM_HIDDEN void pm_format_size(char *buf, size_t len, uint64_t size);

/* A buffered writer that never allocates: output goes to fd when the buffer fills (fd >= 0),
 * or stays in the buffer (fd < 0; longer output is cut and `truncated` is set). */
typedef struct pm_writer {
    char *buf;
    size_t cap, len;
    int fd;
    size_t column; /* characters since the last newline, for pm_writer_pad */
    bool truncated;
} pm_writer;
PM_HIDDEN void pm_writer_init(pm_writer *w, char *buf, size_t cap, int fd);
PM_HIDDEN void pm_writer_printf(pm_writer *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Spaces up to the given column (at least one, so columns never run together). */
PM_HIDDEN void pm_writer_pad(pm_writer *w, size_t column);
PM_HIDDEN void pm_writer_flush(pm_writer *w);

#endif /* PM_PRINT_H */
