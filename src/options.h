/*
 * options.h: the POOLMALLOC_* option parser and a small buffered writer shared by options.c
 * and stats.c. Internal (hidden) except where marked PM_API in poolmalloc.h.
 */
#ifndef PM_OPTIONS_H
#define PM_OPTIONS_H

#include "internal.h"

#define PM_OPTION_PREFIX "POOLMALLOC_"

/* pm_option_parse results. */
enum {
    PM_OPTION_OK = 0,
    PM_OPTION_BAD_VALUE = -1, /* err holds "NAME='value' ignored: expected ..." */
    PM_OPTION_UNKNOWN = -2,   /* err holds "unknown option NAME=value ignored ...; known: ..." */
};

/* Statistics report formats (POOLMALLOC_STATS=json, or a POOLMALLOC_STATS_FILE ending .json). */
enum { PM_STATS_FORMAT_TEXT = 0, PM_STATS_FORMAT_JSON = 1 };

/* The report format chosen by POOLMALLOC_STATS. It lives outside pm_options so that the core's
 * struct stays as internal.h has it; pm_option_parse sets it when it parses POOLMALLOC_STATS. */
PM_HIDDEN extern int pm_opt_stats_format;

/* Parses one option, NAME=VALUE, into *into. name is the environment name (POOLMALLOC_X) or
 * the short name (X). Pure: no environment, no output, no allocation (apart from the stats
 * format above). An empty value leaves the option unchanged and is OK, as an unset variable
 * would. On error *into is unchanged and err (if errlen > 0) holds one line without the
 * "poolmalloc: " prefix. */
PM_HIDDEN int pm_option_parse(const char *name, const char *value, pm_options *into, char *err,
                              size_t errlen);

/* The built-in defaults (what pm_opt holds before pm_options_init). */
PM_HIDDEN void pm_options_defaults(pm_options *out);

/* Applies every POOLMALLOC_* variable in env (a NULL-terminated environ-style array) to *into,
 * reporting bad values on stderr (fatal under POOLMALLOC_STRICT). Returns the number of bad
 * or unknown entries. pm_options_init is pm_options_apply_env(environ, &pm_opt) plus the
 * POOLMALLOC_VERBOSE/POOLMALLOC_HELP output. */
PM_HIDDEN int pm_options_apply_env(char *const *env, pm_options *into);

/* The option table, for tests and tools: NULL past the end. */
PM_HIDDEN size_t pm_options_count(void);
PM_HIDDEN const char *pm_options_name(size_t i, const char **default_text);

/* Writes "size" as the shortest exact form: 0, 4096, 128K, 4M, 1G. */
PM_HIDDEN void pm_format_size(char *buf, size_t len, uint64_t size);

/* A buffered writer that never allocates: output goes to fd when the buffer fills (fd >= 0),
 * or stays in the buffer (fd < 0; longer output is cut and `truncated` is set). */
typedef struct pm_writer {
    char *buf;
    size_t cap, len;
    int fd;
    size_t column;  /* characters since the last newline, for pm_writer_pad */
    bool truncated;
} pm_writer;
PM_HIDDEN void pm_writer_init(pm_writer *w, char *buf, size_t cap, int fd);
PM_HIDDEN void pm_writer_printf(pm_writer *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Spaces up to the given column (at least one, so columns never run together). */
PM_HIDDEN void pm_writer_pad(pm_writer *w, size_t column);
PM_HIDDEN void pm_writer_flush(pm_writer *w);

#endif /* PM_OPTIONS_H */
