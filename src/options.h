/*
 * options.h: the POOLMALLOC_* options: descriptors, the parser, and how a layer above the core
 * declares options of its own.
 *
 * Every option is a descriptor (pm_option_desc) pointing at the variable that holds its value.
 * The core's options live in options.c's table and in pm_opt; a layer above the core (the
 * object system) declares a table of its own with PM_OPTION_GROUP, which puts a pointer to it
 * in the "pm_options" ELF section. The parser, the messages, POOLMALLOC_VERBOSE and
 * `poolmalloc --help` walk the core table and then that section, so they see every option of
 * every layer linked into the program, and the core needs no field for a layer's options.
 */
#ifndef PM_OPTIONS_H
#define PM_OPTIONS_H

#include "internal.h"
#include "print.h"

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

/* ---- descriptors ------------------------------------------------------------------------- */

enum pm_option_kind {
    PM_KIND_SIZE,      /* bytes, with an optional K/M/G suffix; storage size_t */
    PM_KIND_POW2_SIZE, /* a power-of-two size; storage size_t */
    PM_KIND_MS,        /* milliseconds (ms/s suffix); -1 or "never" means never; storage long */
    PM_KIND_INT,       /* a decimal integer; storage long */
    PM_KIND_BOOL,      /* 1/0, yes/no, on/off, true/false; storage bool */
    PM_KIND_STATS,     /* a boolean, or "json"; storage bool (+ pm_opt_stats_format) */
    PM_KIND_PATH,      /* a file name; storage char[max + 1] */
    PM_KIND_TRIPLE,    /* three comma-separated integers in [min, max]; storage long[3] */
    PM_KIND_FLAGS,     /* comma-separated names from `flags` and/or a number; storage long */
};

/* pm_option_desc.flags */
enum {
    /* Obeyed under secure execution (AT_SECURE: setuid, setgid, file capabilities). Options
     * without it are ignored there, silently, as glibc ignores MALLOC_* tunables: whoever runs
     * a privileged program must not be able to make it write, print or abort. */
    PM_OPT_SECURE_OK = 1,
    /* May still be applied when the environment becomes readable only after memory is in use
     * (pm_options_refresh). Options without it are reported and keep their value. */
    PM_OPT_LATE_OK = 2,
};

/* A name for each bit of a PM_KIND_FLAGS option, NULL-terminated. */
typedef struct pm_option_flag {
    const char *name;
    long bit;
} pm_option_flag;

typedef struct pm_option_desc {
    const char *name;         /* after the POOLMALLOC_ prefix */
    enum pm_option_kind kind;
    unsigned flags;           /* PM_OPT_* */
    void *storage;            /* the variable the value lives in (see the kinds) */
    long long min, max;       /* the accepted range (PATH: max is the longest length) */
    const char *default_text; /* spelled as a user would write it; a test checks it parses */
    const char *help;         /* one line for `poolmalloc --help` */
    const pm_option_flag *flag_names; /* PM_KIND_FLAGS only */
} pm_option_desc;

typedef struct pm_option_group {
    const pm_option_desc *options;
    size_t count;
} pm_option_group;

/* Registers a table of options declared outside options.c: one line at file scope, after the
 * table. The section holds pointers (one word each, so the linker packs them without gaps). */
#define PM_OPTION_GROUP(id, table)                                                             \
    static const pm_option_group id = {table, sizeof(table) / sizeof((table)[0])};             \
    static const pm_option_group *const id##_entry                                             \
        __attribute__((section("pm_options"), used, aligned(sizeof(void *)))) = &id

/* Every option: the core table first, then each group in link order. NULL past the end. */
PM_HIDDEN size_t pm_options_count(void);
PM_HIDDEN const pm_option_desc *pm_option_at(size_t i);
/* For tests and tools: the name and default text of option i, NULL past the end. */
PM_HIDDEN const char *pm_options_name(size_t i, const char **default_text);

/* ---- parsing ------------------------------------------------------------------------------ */

/* Parses one option, NAME=VALUE. name is the environment name (POOLMALLOC_X) or the short
 * name (X). A core option's value goes into *into (a pm_options, usually a copy in tests); an
 * option declared by another layer goes into its own storage. No environment, no output, no
 * allocation. An empty value leaves the option unchanged and is OK, as an unset variable
 * would. On error nothing changes and err (if errlen > 0) holds one line without the
 * "poolmalloc: " prefix. */
PM_HIDDEN int pm_option_parse(const char *name, const char *value, pm_options *into, char *err,
                              size_t errlen);

/* The built-in defaults (what pm_opt holds before pm_options_init). */
PM_HIDDEN void pm_options_defaults(pm_options *out);

/* Applies every POOLMALLOC_* variable in env (a NULL-terminated environ-style array) to *into,
 * reporting bad values on stderr (fatal under POOLMALLOC_STRICT). Returns the number of bad
 * or unknown entries. Secure execution is detected from the auxiliary vector. */
PM_HIDDEN int pm_options_apply_env(char *const *env, pm_options *into);
/* The same with secure execution given, so that tests can take the secure path unprivileged:
 * with secure set, only PM_OPT_SECURE_OK options apply and nothing is printed. */
PM_HIDDEN int pm_options_apply_env_secure(char *const *env, pm_options *into, bool secure);

/* ---- the late environment ------------------------------------------------------------------ */

/* When the first allocation comes before libc has set `environ` (an IFUNC resolver or an early
 * library constructor), pm_options_init finds no environment and records that reading it is
 * pending. pm_options_refresh applies it once it exists: options marked PM_OPT_LATE_OK take
 * effect, the others keep their defaults and each one set gets one line on stderr. Costs one
 * load when nothing is pending; the core calls it from its constructor and its slow paths.
 * pm_options_refresh is declared in internal.h, for the core. */
/* For tests: pm_options_init's decision with a given environment pointer (NULL or empty means
 * "not yet"); returns true if reading was deferred. */
PM_HIDDEN bool pm_options_init_from(char *const *env);
PM_HIDDEN bool pm_options_pending(void);

/* ---- options-help.c: describing options ------------------------------------------------- */

/* "expected a size from 1K to 128K": what a bad value's message says is accepted. */
PM_HIDDEN void pm_option_describe_expected(const pm_option_desc *d, char *buf, size_t len);
/* The option's current value (in into for a core option), as a user would write it. */
PM_HIDDEN void pm_option_format_value(const pm_option_desc *d, const pm_options *into,
                                      char *buf, size_t len);
/* The known option nearest to name by edit distance, if near enough to suggest; else NULL. */
PM_HIDDEN const pm_option_desc *pm_option_closest(const char *name, size_t len);
/* POOLMALLOC_VERBOSE: one line per option, with its default when it differs. */
PM_HIDDEN void pm_options_print_values(int fd, const char *prefix, const pm_options *o);
/* Parses text as option d's kind into storage (no range message, no side channel): for
 * describing defaults. */
PM_HIDDEN bool pm_option_parse_text(const pm_option_desc *d, const char *text, void *storage);
/* Where option d's value lives when parsing into `into` (options.c). */
PM_HIDDEN void *pm_option_storage(const pm_option_desc *d, const pm_options *into);

/* report.c: pm_stats_init (internal.h) settles where the exit report goes; it may run again
 * after the late environment changed the options. */

#endif /* PM_OPTIONS_H */
