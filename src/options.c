/*
 * options.c: the POOLMALLOC_* environment variables: the core's option table and the parser.
 *
 * Every core option lives in one table below (name, kind, range, default, description, and
 * what it may do in a privileged or late-started process); the parser, the error messages,
 * POOLMALLOC_VERBOSE and `poolmalloc --help` (options-help.c) are all generated from it and
 * from the groups other layers register (options.h), so documentation cannot drift from
 * behaviour.
 *
 * pm_options_init runs inside the first malloc, possibly before libc has finished starting:
 * nothing here allocates, calls getenv or stdio, or depends on the locale. The environment is
 * read by walking `environ`, numbers are parsed by hand, output goes through pm_warn.
 */
#include "options.h"

#include <limits.h>
#include <unistd.h>

extern char **environ;

#define KIB 1024ll
#define MIB (1024ll * KIB)
#define GIB (1024ll * MIB)

/* ---- the table ----------------------------------------------------------------------------- */

/* The defaults, once, for both pm_opt and pm_options_defaults. */
#define PM_OPTIONS_DEFAULTS                                                                    \
    {                                                                                          \
        .mmap_threshold = 128 << 10, .arena_size = 4 << 20, .purge_delay_ms = 250,             \
        .large_cache = (size_t)1 << 30, .arena_retain = 1, .huge_pages = false, .stats = false, \
        .stats_file = "",                                                                      \
        .verbose = false, .poison = false, .strict = false,                                    \
    }

pm_options pm_opt = PM_OPTIONS_DEFAULTS;
static const pm_options default_options = PM_OPTIONS_DEFAULTS;
int pm_opt_stats_format = PM_STATS_FORMAT_TEXT;
static bool opt_help; /* POOLMALLOC_HELP: an action, not a setting */

#define SECURE_OK PM_OPT_SECURE_OK
#define LATE_OK PM_OPT_LATE_OK

/* The secure-execution rule (SECURE_OK) in one sentence: under setuid/setgid/capabilities we
 * obey only tuning that changes neither what the program writes nor whether it survives. */
static const pm_option_desc core_options[] = {
    /* Blocks are told apart by address, not size, so the threshold may change at any time
     * (mallopt(M_MMAP_THRESHOLD) does): obeyed late and under setuid. */
    /* The range is real: sizes up to the lookup table's end always take the pool fast path,
     * and no class is larger than PM_MAX_CLASS_SIZE. */
    {"MMAP_THRESHOLD", PM_KIND_SIZE, SECURE_OK | LATE_OK, &pm_opt.mmap_threshold,
     PM_SMALL_LOOKUP_MAX, PM_MAX_CLASS_SIZE, "128K", "requests above this size get their own mapping instead of a pool block",
     NULL},
    /* Arena geometry: fixed once the first arena is mapped (not late); a wrong geometry has
     * broken programs before, so a user may not choose it for a privileged one. */
    {"ARENA_SIZE", PM_KIND_POW2_SIZE, 0, &pm_opt.arena_size, 1 * MIB, 4 * MIB, "4M",
     "memory mapped from the OS at a time and carved into pools (ignored under setuid)", NULL},
    /* Read at each purge: late and setuid are fine. */
    {"PURGE_DELAY", PM_KIND_MS, SECURE_OK | LATE_OK, &pm_opt.purge_delay_ms, -1, 3600 * 1000,
     "250",
     "milliseconds free pool memory waits before going back to the OS (-1 never, 0 at once; up "
     "to 16x longer while purged memory keeps being taken back)",
     NULL},
    /* Read at each large free. */
    {"LARGE_CACHE", PM_KIND_SIZE, SECURE_OK | LATE_OK, &pm_opt.large_cache, 0, 4 * GIB, "1G",
     "bytes of freed large-block mappings kept for reuse (0: unmap at once)", NULL},
    /* Read when an arena empties. */
    {"ARENA_RETAIN", PM_KIND_INT, SECURE_OK | LATE_OK, &pm_opt.arena_retain, 0, 1024, "1",
     "empty arenas kept mapped rather than returned to the OS", NULL},
    /* Read at each large malloc; changes only how memory is backed: late and setuid are fine. */
    {"HUGE_PAGES", PM_KIND_BOOL, SECURE_OK | LATE_OK, &pm_opt.huge_pages, 0, 1, "0",
     "give large blocks of 4 MiB and more transparent huge pages while the program fills them",
     NULL},
    /* Output: not under setuid. Late is fine: the report's destination is settled then. */
    {"STATS", PM_KIND_STATS, LATE_OK, &pm_opt.stats, 0, 1, "0",
     "print allocator statistics at exit (json: one JSON object per line; ignored under setuid)",
     NULL},
    /* Creates or appends to a file the user names: never under setuid. */
    {"STATS_FILE", PM_KIND_PATH, LATE_OK, &pm_opt.stats_file, 0,
     sizeof(((pm_options *)0)->stats_file) - 1, "",
     "append the exit statistics to this file, not stderr; turns them on (%p becomes the pid; "
     "ignored under setuid)", NULL},
    {"VERBOSE", PM_KIND_BOOL, LATE_OK, &pm_opt.verbose, 0, 1, "0",
     "print the effective options on stderr at start (ignored under setuid)", NULL},
    /* Fills blocks, changes no output and kills nothing: obeyed under setuid. Not late: heaps
     * made before it was read run unpoisoned fast paths, and half a debugging mode misleads. */
    {"POISON", PM_KIND_BOOL, SECURE_OK, &pm_opt.poison, 0, 1, "0",
     "fill new blocks with 0xCD and freed blocks with 0xDD, to expose misuse", NULL},
    /* Lets the environment abort the program: never under setuid. */
    {"STRICT", PM_KIND_BOOL, LATE_OK, &pm_opt.strict, 0, 1, "0",
     "make a bad value or an unknown POOLMALLOC_ name fatal instead of a warning (ignored "
     "under setuid)", NULL},
    {"HELP", PM_KIND_BOOL, LATE_OK, &opt_help, 0, 1, "0",
     "print this table on stderr at start (ignored under setuid)", NULL},
};
#define NUM_CORE_OPTIONS (sizeof core_options / sizeof core_options[0])

void pm_options_defaults(pm_options *out) {
    *out = default_options;
}

/* ---- every option: the core table, then the groups other layers registered ---------------- */

/* Bounds of the "pm_options" section (the linker defines them when any group is linked; weak,
 * so that a program with no group links too). Hidden: each module sees its own groups. */
extern const pm_option_group *const __start_pm_options[] __attribute__((weak, visibility("hidden")));
extern const pm_option_group *const __stop_pm_options[] __attribute__((weak, visibility("hidden")));

static size_t num_groups(void) {
    return __start_pm_options == NULL ? 0 : (size_t)(__stop_pm_options - __start_pm_options);
}

size_t pm_options_count(void) {
    size_t n = NUM_CORE_OPTIONS;
    for (size_t g = 0; g < num_groups(); g++)
        n += __start_pm_options[g]->count;
    return n;
}

const pm_option_desc *pm_option_at(size_t i) {
    if (i < NUM_CORE_OPTIONS)
        return &core_options[i];
    i -= NUM_CORE_OPTIONS;
    for (size_t g = 0; g < num_groups(); g++) {
        if (i < __start_pm_options[g]->count)
            return &__start_pm_options[g]->options[i];
        i -= __start_pm_options[g]->count;
    }
    return NULL;
}

const char *pm_options_name(size_t i, const char **default_text) {
    const pm_option_desc *d = pm_option_at(i);
    if (d == NULL)
        return NULL;
    if (default_text != NULL)
        *default_text = d->default_text;
    return d->name;
}

/* A core option's value lives in pm_opt, or in the copy a caller parses into; another layer's
 * lives in its own variable. */
void *pm_option_storage(const pm_option_desc *d, const pm_options *into) {
    uintptr_t at = (uintptr_t)d->storage, core = (uintptr_t)&pm_opt;
    if (into != NULL && at >= core && at < core + sizeof pm_opt)
        return (char *)into + (at - core);
    return d->storage;
}

/* ---- small string helpers (no libc calls that could allocate or use the locale) ---------- */

static char lower(char c) {
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Does [s, e) equal word, ignoring ASCII case? */
static bool word_is(const char *s, const char *e, const char *word) {
    for (; s < e; s++, word++)
        if (*word == 0 || lower(*s) != *word)
            return false;
    return *word == 0;
}

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Parses decimal digits at *s (not past e) into *out; false on no digits or overflow. */
static bool parse_digits(const char **s, const char *e, unsigned long long *out) {
    const char *p = *s;
    unsigned long long v = 0;
    if (p == e || *p < '0' || *p > '9')
        return false;
    for (; p < e && *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (ULLONG_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *s = p;
    *out = v;
    return true;
}

/* A whole decimal integer, optionally negative, in [s, e). */
static bool parse_integer(const char *s, const char *e, long long *out) {
    bool neg = s < e && *s == '-';
    if (neg)
        s++;
    unsigned long long v;
    if (!parse_digits(&s, e, &v) || s != e || v > (unsigned long long)LLONG_MAX)
        return false;
    *out = neg ? -(long long)v : (long long)v;
    return true;
}

/* "4096", "64K", "64k", "64KB", "64KiB", "2M", "1G", "16B". */
static bool parse_size(const char *s, const char *e, unsigned long long *out) {
    unsigned long long v;
    if (!parse_digits(&s, e, &v))
        return false;
    unsigned long long mult = 1;
    if (s < e) {
        switch (lower(*s)) {
        case 'k': mult = KIB; s++; break;
        case 'm': mult = MIB; s++; break;
        case 'g': mult = GIB; s++; break;
        default: break;
        }
        if (!(s == e || word_is(s, e, "b") || (mult > 1 && word_is(s, e, "ib"))))
            return false;
    }
    if (v > ULLONG_MAX / mult)
        return false;
    *out = v * mult;
    return true;
}

/* "50", "50ms", "2s", "-1", "never". */
static bool parse_ms(const char *s, const char *e, long long *out) {
    if (word_is(s, e, "never") || word_is(s, e, "-1")) {
        *out = -1;
        return true;
    }
    unsigned long long v;
    if (!parse_digits(&s, e, &v))
        return false;
    unsigned long long mult = 1;
    if (word_is(s, e, "s"))
        mult = 1000;
    else if (!(s == e || word_is(s, e, "ms")))
        return false;
    if (v > (unsigned long long)LLONG_MAX / mult)
        return false;
    *out = (long long)(v * mult);
    return true;
}

static bool parse_bool(const char *s, const char *e, bool *out) {
    static const char *const yes[] = {"1", "yes", "on", "true", "y"};
    static const char *const no[] = {"0", "no", "off", "false", "n"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (word_is(s, e, yes[i])) {
            *out = true;
            return true;
        }
        if (word_is(s, e, no[i])) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* The comma-separated item starting at p, trimmed, as [*is, *ie); returns where it ends. */
static const char *item(const char *p, const char *e, const char **is, const char **ie) {
    const char *q = p;
    while (q < e && *q != ',')
        q++;
    while (p < q && is_space(*p))
        p++;
    const char *b = q;
    while (b > p && is_space(b[-1]))
        b--;
    *is = p;
    *ie = b;
    return q;
}

static bool parse_triple(const char *s, const char *e, long long min, long long max,
                         long out[3]) {
    long v[3];
    int count = 0;
    for (const char *p = s;; p++) {
        const char *is, *ie;
        long long n;
        p = item(p, e, &is, &ie);
        if (count == 3 || !parse_integer(is, ie, &n) || n < min || n > max)
            return false;
        v[count++] = (long)n;
        if (p == e)
            break;
    }
    if (count != 3)
        return false;
    memcpy(out, v, sizeof v);
    return true;
}

/* "stats,leak", "3", "stats,8": names and numbers are ORed together; a number may hold only
 * bits that have names (max is their union), so a typo such as 99 is refused, not obeyed. */
static bool parse_flags(const char *s, const char *e, const pm_option_flag *names,
                        long long max, long *out) {
    long flags = 0;
    for (const char *p = s;; p++) {
        const char *is, *ie;
        p = item(p, e, &is, &ie);
        bool named = false;
        for (const pm_option_flag *f = names; f != NULL && f->name != NULL; f++)
            if (word_is(is, ie, f->name)) {
                flags |= f->bit;
                named = true;
            }
        long long n;
        if (!named) {
            if (!parse_integer(is, ie, &n) || n < 0 || (n & ~max) != 0)
                return false;
            flags |= (long)n;
        }
        if (p == e)
            break;
    }
    *out = flags;
    return true;
}

/* ---- parsing one option ------------------------------------------------------------------ */

static const pm_option_desc *find_option(const char *name, size_t len) {
    for (size_t i = 0; i < pm_options_count(); i++) {
        const pm_option_desc *d = pm_option_at(i);
        if (strlen(d->name) == len && memcmp(d->name, name, len) == 0)
            return d;
    }
    return NULL;
}

static bool in_range(unsigned long long u, const pm_option_desc *d) {
    return u >= (unsigned long long)d->min && u <= (unsigned long long)d->max;
}

/* Parses [s, e) as d's kind into f, d's storage; false (and f untouched) if not acceptable. */
static bool parse_value(const pm_option_desc *d, const char *s, const char *e, void *f) {
    unsigned long long u;
    long long n;
    bool b;
    switch (d->kind) {
    case PM_KIND_SIZE:
    case PM_KIND_POW2_SIZE:
        if (!parse_size(s, e, &u) || !in_range(u, d) ||
            (d->kind == PM_KIND_POW2_SIZE && (u & (u - 1)) != 0))
            return false;
        *(size_t *)f = (size_t)u;
        return true;
    case PM_KIND_MS:
    case PM_KIND_INT:
        if (!(d->kind == PM_KIND_MS ? parse_ms(s, e, &n) : parse_integer(s, e, &n)) ||
            n < d->min || n > d->max)
            return false;
        *(long *)f = (long)n;
        return true;
    case PM_KIND_BOOL:
        if (!parse_bool(s, e, &b))
            return false;
        *(bool *)f = b;
        return true;
    case PM_KIND_STATS: {
        bool json = word_is(s, e, "json");
        if (!json && !parse_bool(s, e, &b))
            return false;
        *(bool *)f = json || b;
        pm_opt_stats_format = json ? PM_STATS_FORMAT_JSON : PM_STATS_FORMAT_TEXT;
        return true;
    }
    case PM_KIND_PATH:
        if ((long long)(e - s) > d->max)
            return false;
        memcpy(f, s, (size_t)(e - s));
        ((char *)f)[e - s] = 0;
        return true;
    case PM_KIND_TRIPLE:
        return parse_triple(s, e, d->min, d->max, (long *)f);
    case PM_KIND_FLAGS:
        return parse_flags(s, e, d->flag_names, d->max, (long *)f);
    }
    return false;
}

bool pm_option_parse_text(const pm_option_desc *d, const char *text, void *storage) {
    return parse_value(d, text, text + strlen(text), storage);
}

/* The value as it appears in messages: at most 40 bytes, unprintable bytes as '?'. */
static void quote_value(char *buf, size_t len, const char *value) {
    size_t n = 0, limit = len > 4 ? len - 4 : 0;
    const char *v = value;
    for (; *v && n < limit && n < 40; v++)
        buf[n++] = (*v >= 0x20 && *v < 0x7f) ? *v : '?';
    if (*v && n + 3 < len) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    if (len > 0)
        buf[n < len ? n : len - 1] = 0;
}

/* "unknown option POOLMALLOC_X='v' ignored (did you mean ...?); known: A, B, ..." */
static void describe_unknown(const char *name, size_t name_len, const char *shown,
                             const char *verb, char *err, size_t errlen) {
    /* pm_snprintf has no %.*s: copy the name to a terminated buffer. */
    char nbuf[64];
    size_t nl = name_len < sizeof nbuf - 1 ? name_len : sizeof nbuf - 1;
    memcpy(nbuf, name, nl);
    nbuf[nl] = 0;
    const pm_option_desc *near = pm_option_closest(name, name_len);
    size_t n = (size_t)pm_snprintf(err, errlen, "unknown option " PM_OPTION_PREFIX "%s='%s' %s",
                                   nbuf, shown, verb);
    if (near != NULL && n < errlen)
        n += (size_t)pm_snprintf(err + n, errlen - n, " (did you mean " PM_OPTION_PREFIX "%s?)",
                                 near->name);
    for (size_t i = 0; i < pm_options_count() && n < errlen; i++)
        n += (size_t)pm_snprintf(err + n, errlen - n, "%s%s", i ? ", " : "; known: ",
                                 pm_option_at(i)->name);
}

/* Strips the POOLMALLOC_ prefix, if there, from [*name, *name + *len). */
static void strip_prefix(const char **name, size_t *len) {
    size_t plen = sizeof PM_OPTION_PREFIX - 1;
    if (*len >= plen && memcmp(*name, PM_OPTION_PREFIX, plen) == 0) {
        *name += plen;
        *len -= plen;
    }
}

/* pm_option_parse for a known option, with the verb of the message ("ignored", or "rejected"
 * when fatal). */
static int parse_known(const pm_option_desc *d, const char *value, pm_options *into, char *err,
                       size_t errlen, const char *verb) {
    const char *s = value, *e = value + strlen(value);
    if (d->kind != PM_KIND_PATH) { /* paths keep their spaces */
        while (s < e && is_space(*s))
            s++;
        while (e > s && is_space(e[-1]))
            e--;
        if (s == e)
            return PM_OPTION_OK; /* empty: as if unset */
    }
    if (parse_value(d, s, e, pm_option_storage(d, into)))
        return PM_OPTION_OK;
    char shown[48], expected[200];
    quote_value(shown, sizeof shown, value);
    pm_option_describe_expected(d, expected, sizeof expected);
    pm_snprintf(err, errlen, PM_OPTION_PREFIX "%s='%s' %s: %s", d->name, shown, verb, expected);
    return PM_OPTION_BAD_VALUE;
}

int pm_option_parse(const char *name, const char *value, pm_options *into, char *err,
                    size_t errlen) {
    char tmp_err[8];
    if (errlen == 0) {
        err = tmp_err;
        errlen = sizeof tmp_err;
    }
    err[0] = 0;
    size_t len = strlen(name);
    strip_prefix(&name, &len);
    const pm_option_desc *d = find_option(name, len);
    if (d != NULL)
        return parse_known(d, value, into, err, errlen, "ignored");
    char shown[48];
    quote_value(shown, sizeof shown, value);
    describe_unknown(name, len, shown, "ignored", err, errlen);
    return PM_OPTION_UNKNOWN;
}

/* ---- the environment -------------------------------------------------------------------- */

/* How an environment is being applied. */
typedef struct env_mode {
    bool secure; /* AT_SECURE: only SECURE_OK options, and not a word on stderr */
    bool late;   /* memory was in use before the environment could be read */
} env_mode;

/* "the environment was not readable ... keeps 4M": an option that cannot apply late. */
static void report_too_late(const pm_option_desc *d, const char *value, pm_options *into) {
    char shown[48], now[300];
    quote_value(shown, sizeof shown, value);
    pm_option_format_value(d, into, now, sizeof now);
    pm_warn(PM_OPTION_PREFIX "%s='%s' not applied: the environment became readable only after "
            "memory was in use, so it keeps %s", d->name, shown, now[0] ? now : "\"\"");
}

/* Parses one NAME=VALUE entry, reporting a problem (fatal if strict); 1 if it was bad. */
static int apply_entry(const char *entry, pm_options *into, env_mode mode) {
    const char *eq = strchr(entry, '=');
    if (eq == NULL)
        return 0;
    const char *name = entry, *value = eq + 1;
    size_t len = (size_t)(eq - entry);
    strip_prefix(&name, &len);
    const pm_option_desc *d = find_option(name, len);
    /* Secure: a privileged program obeys only harmless tuning and says nothing (see the
     * PM_OPT_SECURE_OK comment): a message would be text a user injects into its stderr. */
    if (mode.secure && (d == NULL || !(d->flags & PM_OPT_SECURE_OK)))
        return 0;
    if (mode.late && d != NULL && !(d->flags & PM_OPT_LATE_OK)) {
        if (value[0] != 0)
            report_too_late(d, value, into);
        return 0;
    }
    char err[1000];
    const char *verb = into->strict ? "rejected (POOLMALLOC_STRICT=1)" : "ignored";
    int r;
    if (d != NULL) {
        r = parse_known(d, value, into, err, sizeof err, verb);
    } else {
        char shown[48];
        quote_value(shown, sizeof shown, value);
        describe_unknown(name, len, shown, verb, err, sizeof err);
        r = PM_OPTION_UNKNOWN;
    }
    if (r == PM_OPTION_OK || mode.secure)
        return r == PM_OPTION_OK ? 0 : 1;
    pm_warn("%s", err);
    /* A configuration error, not a corrupt heap: exit with a status (2, as for a usage error)
     * rather than abort, whose core dump and "Aborted" would say poolmalloc crashed. */
    if (into->strict)
        _exit(2);
    return 1;
}

static int apply_env(char *const *env, pm_options *into, env_mode mode) {
    if (env == NULL)
        return 0;
    int bad = 0;
    /* Every process compares these: in .data (PM_STARTUP_DATA), not .rodata. */
    static char strict_name[] PM_STARTUP_DATA = PM_OPTION_PREFIX "STRICT=";
    static char prefix[] PM_STARTUP_DATA = PM_OPTION_PREFIX;
    const size_t strict_len = sizeof strict_name - 1, prefix_len = sizeof prefix - 1;
    /* STRICT first, so that it governs every other variable whatever the order of environ. */
    for (char *const *e = env; *e != NULL; e++)
        if (strncmp(*e, strict_name, strict_len) == 0)
            bad += apply_entry(*e, into, mode);
    for (char *const *e = env; *e != NULL; e++)
        if (strncmp(*e, prefix, prefix_len) == 0 &&
            strncmp(*e, strict_name, strict_len) != 0)
            bad += apply_entry(*e, into, mode);
    return bad;
}

int pm_options_apply_env_secure(char *const *env, pm_options *into, bool secure) {
    return apply_env(env, into, (env_mode){.secure = secure, .late = false});
}

int pm_options_apply_env(char *const *env, pm_options *into) {
    return pm_options_apply_env_secure(env, into, pm_os_secure_execution());
}

/* ---- start-up, and the late environment ------------------------------------------------------ */

/* Set while the environment could not be read yet; read with one relaxed load on slow paths. */
static _Atomic bool env_pending;

/* What the options ask for once read: the help table, the effective values, the report. */
static void announce(bool secure) {
    if (opt_help && !secure)
        pm_options_help(2);
    if (pm_opt.verbose && !secure)
        pm_options_print_values(2, "poolmalloc: ", &pm_opt);
}

/* Before libc has set `environ` (an IFUNC resolver or an early constructor calling malloc),
 * it is NULL; an empty one is treated alike, as libc may not have filled it yet. */
bool pm_options_init_from(char *const *env) {
    if (env == NULL || env[0] == NULL) {
        atomic_store_explicit(&env_pending, true, memory_order_relaxed);
        return true;
    }
    bool secure = pm_os_secure_execution();
    apply_env(env, &pm_opt, (env_mode){.secure = secure, .late = false});
    announce(secure);
    return false;
}

void pm_options_init(void) {
    pm_options_init_from(environ);
}

bool pm_options_pending(void) {
    return atomic_load_explicit(&env_pending, memory_order_relaxed);
}

static PM_COLD void refresh_slow(void) {
    char **env = environ;
    /* A NULL environ: libc has not started yet. Once it is set (even empty: `env -i`), the
     * environment is final and we apply it, exactly once, whichever thread gets here first. */
    if (env == NULL || !atomic_exchange(&env_pending, false))
        return;
    bool secure = pm_os_secure_execution();
    apply_env(env, &pm_opt, (env_mode){.secure = secure, .late = true});
    announce(secure);
    pm_inline_max_update();
    pm_stats_init(); /* the report may just have been turned on */
}

void pm_options_refresh(void) {
    if (PM_UNLIKELY(atomic_load_explicit(&env_pending, memory_order_relaxed)))
        refresh_slow();
}
