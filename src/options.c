/*
 * options.c: the POOLMALLOC_* environment variables.
 *
 * Every option lives in one table below (name, kind, range, default, description); the parser,
 * the error messages, POOLMALLOC_VERBOSE and `poolmalloc --help` (POOLMALLOC_HELP=1) are all
 * generated from it, so documentation cannot drift from behaviour.
 *
 * pm_options_init runs inside the first malloc, possibly before libc has finished starting:
 * nothing here allocates, calls getenv or stdio, or depends on the locale. The environment is
 * read by walking `environ`, numbers are parsed by hand, output goes through pm_fdprintf.
 */
#include "options.h"

#include <limits.h>
#include <unistd.h>

extern char **environ;

/* ---- the table --------------------------------------------------------------------------- */

enum option_kind {
    KIND_SIZE,      /* bytes, with an optional K/M/G suffix */
    KIND_POW2_SIZE, /* a power-of-two size (the arena size) */
    KIND_MS,        /* milliseconds (optional ms/s suffix); -1 or "never" means never */
    KIND_INT,       /* a decimal integer */
    KIND_BOOL,      /* 1/0, yes/no, on/off, true/false */
    KIND_STATS,     /* a boolean, or "json" */
    KIND_PATH,      /* a file name */
    KIND_TRIPLE,    /* three comma-separated non-negative integers */
    KIND_FLAGS,     /* comma-separated flag names and/or a number */
};

#define NOT_IN_STRUCT SIZE_MAX /* POOLMALLOC_HELP: an action, not a pm_options field */

typedef struct option_def {
    const char *name; /* after the POOLMALLOC_ prefix */
    enum option_kind kind;
    size_t offset;    /* of the field in pm_options */
    long long min, max;
    const char *default_text; /* spelled as a user would write it; a test checks it parses */
    const char *help;         /* one line */
} option_def;

#define KIB 1024ll
#define MIB (1024ll * KIB)
#define GIB (1024ll * MIB)
#define FIELD(f) offsetof(pm_options, f)

static const option_def option_table[] = {
    {"MMAP_THRESHOLD", KIND_SIZE, FIELD(mmap_threshold), 1 * KIB, 128 * KIB, "128K",
     "requests above this size get their own mapping instead of a pool block"},
    {"ARENA_SIZE", KIND_POW2_SIZE, FIELD(arena_size), 1 * MIB, 4 * MIB, "4M",
     "memory mapped from the OS at a time and carved into pools"},
    {"PURGE_DELAY", KIND_MS, FIELD(purge_delay_ms), -1, 3600 * 1000, "50",
     "milliseconds free pool memory waits before going back to the OS (-1 never, 0 at once)"},
    {"LARGE_CACHE", KIND_SIZE, FIELD(large_cache), 0, 4 * GIB, "1G",
     "bytes of freed large-block mappings kept for reuse (0: unmap at once)"},
    {"ARENA_RETAIN", KIND_INT, FIELD(arena_retain), 0, 1024, "1",
     "empty arenas kept mapped rather than returned to the OS"},
    {"STATS", KIND_STATS, FIELD(stats), 0, 1, "0",
     "print allocator statistics at exit (json: one JSON object per line)"},
    {"STATS_FILE", KIND_PATH, FIELD(stats_file), 0, sizeof(((pm_options *)0)->stats_file) - 1,
     "", "append the exit statistics to this file, not stderr (%p becomes the pid)"},
    {"VERBOSE", KIND_BOOL, FIELD(verbose), 0, 1, "0",
     "print the effective options on stderr at start"},
    {"POISON", KIND_BOOL, FIELD(poison), 0, 1, "0",
     "fill new blocks with 0xCD and freed blocks with 0xDD, to expose misuse"},
    {"STRICT", KIND_BOOL, FIELD(strict), 0, 1, "0",
     "make a bad value or an unknown POOLMALLOC_ name fatal instead of a warning"},
    {"GC_THRESHOLD", KIND_TRIPLE, FIELD(gc_threshold), 0, INT_MAX, "2000,10,10",
     "cycle collector thresholds for generations 0, 1 and 2 (0 disables a generation)"},
    {"GC", KIND_BOOL, FIELD(gc_enabled), 0, 1, "1",
     "run the cycle collector automatically"},
    {"GC_DEBUG", KIND_FLAGS, FIELD(gc_debug), 0, INT_MAX, "0",
     "cycle collector debug flags: a number or names from the list in ACCEPTS"},
    {"HELP", KIND_BOOL, NOT_IN_STRUCT, 0, 1, "0",
     "print this table on stderr at start"},
};
#define NUM_OPTIONS (sizeof option_table / sizeof option_table[0])

/* POOLMALLOC_GC_DEBUG names. The bits are the object API's PM_GC_DEBUG_* flags. */
static const struct {
    const char *name;
    long bit;
} gc_debug_flags[] = {
    {"stats", PM_GC_DEBUG_STATS},
    {"saveall", PM_GC_DEBUG_SAVEALL},
    {"leak", PM_GC_DEBUG_LEAK},
    {"checks", PM_GC_DEBUG_CHECKS},
};
#define NUM_GC_DEBUG_FLAGS (sizeof gc_debug_flags / sizeof gc_debug_flags[0])

/* The defaults, once, for both pm_opt and pm_options_defaults. */
#define PM_OPTIONS_DEFAULTS                                                                    \
    {                                                                                          \
        .mmap_threshold = 128 << 10, .arena_size = 4 << 20, .purge_delay_ms = 50,              \
        .large_cache = (size_t)1 << 30, .arena_retain = 1, .stats = false, .stats_file = "",    \
        .verbose = false, .poison = false, .strict = false, .gc_threshold = {2000, 10, 10},    \
        .gc_enabled = true, .gc_debug = 0,                                                     \
    }

pm_options pm_opt = PM_OPTIONS_DEFAULTS;
static const pm_options default_options = PM_OPTIONS_DEFAULTS;
int pm_opt_stats_format = PM_STATS_FORMAT_TEXT;
static bool opt_help; /* POOLMALLOC_HELP */

void pm_options_defaults(pm_options *out) {
    *out = default_options;
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

static bool parse_triple(const char *s, const char *e, long long max, long out[3]) {
    long v[3];
    int count = 0;
    for (const char *p = s;; p++) {
        const char *is, *ie;
        long long n;
        p = item(p, e, &is, &ie);
        if (count == 3 || !parse_integer(is, ie, &n) || n < 0 || n > max)
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

/* "stats,leak", "3", "stats,8": names and numbers are ORed together. */
static bool parse_flags(const char *s, const char *e, long long max, long *out) {
    long flags = 0;
    for (const char *p = s;; p++) {
        const char *is, *ie;
        p = item(p, e, &is, &ie);
        bool named = false;
        for (size_t i = 0; i < NUM_GC_DEBUG_FLAGS; i++)
            if (word_is(is, ie, gc_debug_flags[i].name)) {
                flags |= gc_debug_flags[i].bit;
                named = true;
            }
        long long n;
        if (!named) {
            if (!parse_integer(is, ie, &n) || n < 0 || n > max)
                return false;
            flags |= (long)n;
        }
        if (p == e)
            break;
    }
    *out = flags;
    return true;
}

/* ---- describing values and ranges (messages, help, verbose) ------------------------------ */

void pm_format_size(char *buf, size_t len, uint64_t size) {
    if (size != 0 && size % GIB == 0)
        pm_snprintf(buf, len, "%lluG", (unsigned long long)(size / GIB));
    else if (size != 0 && size % MIB == 0)
        pm_snprintf(buf, len, "%lluM", (unsigned long long)(size / MIB));
    else if (size != 0 && size % KIB == 0)
        pm_snprintf(buf, len, "%lluK", (unsigned long long)(size / KIB));
    else
        pm_snprintf(buf, len, "%llu", (unsigned long long)size);
}

/* "1M, 2M or 4M" */
static void pow2_list(char *buf, size_t len, long long min, long long max) {
    size_t n = 0;
    buf[0] = 0;
    for (long long v = min; v <= max && n < len; v *= 2) {
        char one[24];
        pm_format_size(one, sizeof one, (uint64_t)v);
        const char *sep = n == 0 ? "" : v * 2 > max ? " or " : ", ";
        n += (size_t)pm_snprintf(buf + n, len - n, "%s%s", sep, one);
    }
}

/* What the error message says was expected. */
static void describe_expected(const option_def *d, char *buf, size_t len) {
    char lo[24], hi[24];
    switch (d->kind) {
    case KIND_SIZE:
        pm_format_size(lo, sizeof lo, (uint64_t)d->min);
        pm_format_size(hi, sizeof hi, (uint64_t)d->max);
        pm_snprintf(buf, len, "expected a size from %s to %s", lo, hi);
        break;
    case KIND_POW2_SIZE: {
        char list[64];
        pow2_list(list, sizeof list, d->min, d->max);
        pm_snprintf(buf, len, "expected %s", list);
        break;
    }
    case KIND_MS:
        pm_snprintf(buf, len, "expected milliseconds from -1 (never) to %lld", d->max);
        break;
    case KIND_INT:
        pm_snprintf(buf, len, "expected an integer from %lld to %lld", d->min, d->max);
        break;
    case KIND_BOOL:
        pm_snprintf(buf, len, "expected a boolean: 1/0, yes/no, on/off or true/false");
        break;
    case KIND_STATS:
        pm_snprintf(buf, len, "expected a boolean (1/0, yes/no, on/off, true/false) or json");
        break;
    case KIND_PATH:
        pm_snprintf(buf, len, "expected a path of at most %lld bytes", d->max);
        break;
    case KIND_TRIPLE:
        pm_snprintf(buf, len, "expected three integers from 0 to %lld separated by commas, "
                              "e.g. 2000,10,10", d->max);
        break;
    case KIND_FLAGS: {
        size_t n = (size_t)pm_snprintf(buf, len, "expected a number or a comma-separated list of");
        for (size_t i = 0; i < NUM_GC_DEBUG_FLAGS && n < len; i++)
            n += (size_t)pm_snprintf(buf + n, len - n, "%s%s", i ? ", " : " ",
                                     gc_debug_flags[i].name);
        break;
    }
    }
}

/* The ACCEPTS column of the help table. */
static void describe_range_short(const option_def *d, char *buf, size_t len) {
    char lo[24], hi[24];
    switch (d->kind) {
    case KIND_SIZE:
        pm_format_size(lo, sizeof lo, (uint64_t)d->min);
        pm_format_size(hi, sizeof hi, (uint64_t)d->max);
        pm_snprintf(buf, len, "%s..%s", lo, hi);
        break;
    case KIND_POW2_SIZE: {
        size_t n = 0;
        buf[0] = 0;
        for (long long v = d->min; v <= d->max && n < len; v *= 2) {
            pm_format_size(lo, sizeof lo, (uint64_t)v);
            n += (size_t)pm_snprintf(buf + n, len - n, "%s%s", n ? "|" : "", lo);
        }
        break;
    }
    case KIND_MS:
    case KIND_INT:
        pm_snprintf(buf, len, "%lld..%lld", d->min, d->max);
        break;
    case KIND_BOOL:
        pm_snprintf(buf, len, "bool");
        break;
    case KIND_STATS:
        pm_snprintf(buf, len, "bool|json");
        break;
    case KIND_PATH:
        pm_snprintf(buf, len, "path");
        break;
    case KIND_TRIPLE:
        pm_snprintf(buf, len, "n,n,n");
        break;
    case KIND_FLAGS: {
        size_t n = 0;
        for (size_t i = 0; i < NUM_GC_DEBUG_FLAGS && n < len; i++)
            n += (size_t)pm_snprintf(buf + n, len - n, "%s", gc_debug_flags[i].name),
                n += (size_t)pm_snprintf(buf + n, len - n, ",");
        if (n > 0 && n < len)
            buf[n - 1] = 0, n--;
        pm_snprintf(buf + n, len - n, "|n");
        break;
    }
    }
}

static void *field(const option_def *d, pm_options *o) {
    return d->offset == NOT_IN_STRUCT ? (void *)&opt_help : (char *)o + d->offset;
}
static const void *cfield(const option_def *d, const pm_options *o) {
    return d->offset == NOT_IN_STRUCT ? (const void *)&opt_help : (const char *)o + d->offset;
}

/* The option's value in o, written as a user would set it. */
static void format_value(const option_def *d, const pm_options *o, char *buf, size_t len) {
    const void *f = cfield(d, o);
    switch (d->kind) {
    case KIND_SIZE:
    case KIND_POW2_SIZE:
        pm_format_size(buf, len, *(const size_t *)f);
        break;
    case KIND_MS:
    case KIND_INT:
        pm_snprintf(buf, len, "%ld", *(const long *)f);
        break;
    case KIND_BOOL:
        pm_snprintf(buf, len, "%d", *(const bool *)f ? 1 : 0);
        break;
    case KIND_STATS:
        pm_snprintf(buf, len, "%s", !*(const bool *)f                             ? "0"
                                    : pm_opt_stats_format == PM_STATS_FORMAT_JSON ? "json"
                                                                                 : "1");
        break;
    case KIND_PATH:
        pm_snprintf(buf, len, "%s", (const char *)f);
        break;
    case KIND_TRIPLE: {
        const long *t = f;
        pm_snprintf(buf, len, "%ld,%ld,%ld", t[0], t[1], t[2]);
        break;
    }
    case KIND_FLAGS: {
        long flags = *(const long *)f, rest = flags;
        size_t n = 0;
        buf[0] = 0;
        for (size_t i = 0; i < NUM_GC_DEBUG_FLAGS && n < len; i++)
            if ((rest & gc_debug_flags[i].bit) == gc_debug_flags[i].bit) {
                n += (size_t)pm_snprintf(buf + n, len - n, "%s%s", n ? "," : "",
                                         gc_debug_flags[i].name);
                rest &= ~gc_debug_flags[i].bit;
            }
        if (rest != 0 || flags == 0)
            pm_snprintf(buf + n, len - n, "%s%ld", n ? "," : "", rest);
        break;
    }
    }
}

/* ---- parsing one option ------------------------------------------------------------------ */

static const option_def *find_option(const char *name, size_t len) {
    for (size_t i = 0; i < NUM_OPTIONS; i++) {
        const char *n = option_table[i].name;
        if (strlen(n) == len && memcmp(n, name, len) == 0)
            return &option_table[i];
    }
    return NULL;
}

/* Parses [s, e) as d's kind into d's field of o; false if it is not acceptable. */
static bool parse_value(const option_def *d, const char *s, const char *e, pm_options *o) {
    void *f = field(d, o);
    unsigned long long u;
    long long n;
    bool b;
    switch (d->kind) {
    case KIND_SIZE:
        if (!parse_size(s, e, &u) || u < (unsigned long long)d->min ||
            u > (unsigned long long)d->max)
            return false;
        *(size_t *)f = (size_t)u;
        return true;
    case KIND_POW2_SIZE:
        if (!parse_size(s, e, &u) || u < (unsigned long long)d->min ||
            u > (unsigned long long)d->max || (u & (u - 1)) != 0)
            return false;
        *(size_t *)f = (size_t)u;
        return true;
    case KIND_MS:
        if (!parse_ms(s, e, &n) || n < d->min || n > d->max)
            return false;
        *(long *)f = (long)n;
        return true;
    case KIND_INT:
        if (!parse_integer(s, e, &n) || n < d->min || n > d->max)
            return false;
        *(long *)f = (long)n;
        return true;
    case KIND_BOOL:
        if (!parse_bool(s, e, &b))
            return false;
        *(bool *)f = b;
        return true;
    case KIND_STATS:
        if (word_is(s, e, "json")) {
            *(bool *)f = true;
            pm_opt_stats_format = PM_STATS_FORMAT_JSON;
            return true;
        }
        if (!parse_bool(s, e, &b))
            return false;
        *(bool *)f = b;
        pm_opt_stats_format = PM_STATS_FORMAT_TEXT;
        return true;
    case KIND_PATH:
        if ((long long)(e - s) > d->max)
            return false;
        memcpy(f, s, (size_t)(e - s));
        ((char *)f)[e - s] = 0;
        return true;
    case KIND_TRIPLE:
        return parse_triple(s, e, d->max, (long *)f);
    case KIND_FLAGS:
        return parse_flags(s, e, d->max, (long *)f);
    }
    return false;
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

/* Edit distance, ignoring case, for "did you mean" (names are short). */
static size_t distance(const char *a, size_t la, const char *b, size_t lb) {
    size_t row[40];
    if (la >= 40 || lb >= 40)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (lower(a[i - 1]) != lower(b[j - 1]));
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static const option_def *closest_option(const char *name, size_t len) {
    const option_def *best = NULL;
    size_t best_d = 3; /* suggest only near misses */
    for (size_t i = 0; i < NUM_OPTIONS; i++) {
        const char *n = option_table[i].name;
        size_t dist = distance(name, len, n, strlen(n));
        if (dist < best_d) {
            best_d = dist;
            best = &option_table[i];
        }
    }
    return best;
}

/* pm_option_parse with the verb of the message ("ignored", or "rejected" when fatal). */
static int parse_option(const char *name, size_t name_len, const char *value, pm_options *into,
                        char *err, size_t errlen, const char *verb) {
    char tmp_err[8];
    if (errlen == 0) {
        err = tmp_err;
        errlen = sizeof tmp_err;
    }
    err[0] = 0;
    size_t plen = sizeof PM_OPTION_PREFIX - 1;
    if (name_len >= plen && memcmp(name, PM_OPTION_PREFIX, plen) == 0) {
        name += plen;
        name_len -= plen;
    }
    char shown[48];
    quote_value(shown, sizeof shown, value);
    const option_def *d = find_option(name, name_len);
    if (d == NULL) {
        /* pm_snprintf has no %.*s: copy the name to a terminated buffer. */
        char nbuf[64];
        size_t nl = name_len < sizeof nbuf - 1 ? name_len : sizeof nbuf - 1;
        memcpy(nbuf, name, nl);
        nbuf[nl] = 0;
        const option_def *near = closest_option(name, name_len);
        size_t n = (size_t)pm_snprintf(err, errlen, "unknown option " PM_OPTION_PREFIX "%s='%s' %s",
                                       nbuf, shown, verb);
        if (near != NULL && n < errlen)
            n += (size_t)pm_snprintf(err + n, errlen - n,
                                     " (did you mean " PM_OPTION_PREFIX "%s?)", near->name);
        for (size_t i = 0; i < NUM_OPTIONS && n < errlen; i++)
            n += (size_t)pm_snprintf(err + n, errlen - n, "%s%s", i ? ", " : "; known: ",
                                     option_table[i].name);
        return PM_OPTION_UNKNOWN;
    }
    const char *s = value, *e = value + strlen(value);
    while (s < e && is_space(*s))
        s++;
    while (e > s && is_space(e[-1]))
        e--;
    if (s == e && d->kind != KIND_PATH)
        return PM_OPTION_OK; /* empty: as if unset */
    if (d->kind == KIND_PATH) /* paths keep their spaces */
        s = value, e = value + strlen(value);
    pm_options candidate = *into; /* *into stays unchanged on error */
    if (parse_value(d, s, e, &candidate)) {
        *into = candidate;
        return PM_OPTION_OK;
    }
    char expected[160];
    describe_expected(d, expected, sizeof expected);
    pm_snprintf(err, errlen, PM_OPTION_PREFIX "%s='%s' %s: %s", d->name, shown, verb, expected);
    return PM_OPTION_BAD_VALUE;
}

int pm_option_parse(const char *name, const char *value, pm_options *into, char *err,
                    size_t errlen) {
    return parse_option(name, strlen(name), value, into, err, errlen, "ignored");
}

/* ---- the environment -------------------------------------------------------------------- */

static bool has_prefix(const char *entry) {
    return strncmp(entry, PM_OPTION_PREFIX, sizeof PM_OPTION_PREFIX - 1) == 0;
}

/* Parses one NAME=VALUE entry, reporting a problem (fatal if strict). */
static int apply_entry(const char *entry, pm_options *into) {
    const char *eq = strchr(entry, '=');
    if (eq == NULL)
        return 0;
    char err[1000];
    const char *verb = into->strict ? "rejected (POOLMALLOC_STRICT=1)" : "ignored";
    int r = parse_option(entry, (size_t)(eq - entry), eq + 1, into, err, sizeof err, verb);
    if (r == PM_OPTION_OK)
        return 0;
    if (into->strict)
        pm_fatal("%s", err);
    pm_warn("%s", err);
    return 1;
}

int pm_options_apply_env(char *const *env, pm_options *into) {
    if (env == NULL)
        return 0;
    int bad = 0;
    static const char strict_name[] = PM_OPTION_PREFIX "STRICT=";
    /* STRICT first, so that it governs every other variable whatever the order of environ. */
    for (char *const *e = env; *e != NULL; e++)
        if (strncmp(*e, strict_name, sizeof strict_name - 1) == 0)
            bad += apply_entry(*e, into);
    for (char *const *e = env; *e != NULL; e++)
        if (has_prefix(*e) && strncmp(*e, strict_name, sizeof strict_name - 1) != 0)
            bad += apply_entry(*e, into);
    return bad;
}

/* ---- output ------------------------------------------------------------------------------- */

void pm_writer_init(pm_writer *w, char *buf, size_t cap, int fd) {
    w->buf = buf;
    w->cap = cap;
    w->len = 0;
    w->fd = fd;
    w->column = 0;
    w->truncated = false;
    if (cap > 0)
        buf[0] = 0;
}

void pm_writer_flush(pm_writer *w) {
    if (w->fd >= 0 && w->len > 0)
        pm_os_write(w->fd, w->buf, w->len);
    if (w->fd >= 0)
        w->len = 0;
}

static void track_column(pm_writer *w, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        w->column = s[i] == '\n' ? 0 : w->column + 1;
}

void pm_writer_printf(pm_writer *w, const char *fmt, ...) {
    for (int attempt = 0; attempt < 2; attempt++) {
        size_t room = w->cap - w->len;
        va_list ap;
        va_start(ap, fmt);
        int n = pm_vsnprintf(w->buf + w->len, room, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < room) {
            track_column(w, w->buf + w->len, (size_t)n);
            w->len += (size_t)n;
            return;
        }
        if (w->fd < 0 || attempt == 1 || w->len == 0) {
            /* keep what fitted: a too-long item is cut rather than lost */
            size_t kept = room > 0 ? room - 1 : 0;
            track_column(w, w->buf + w->len, kept);
            w->len += kept;
            w->truncated = true;
            if (w->fd >= 0)
                pm_writer_flush(w);
            return;
        }
        pm_writer_flush(w);
    }
}

void pm_writer_pad(pm_writer *w, size_t column) {
    pm_writer_printf(w, " ");
    while (w->column < column && !(w->fd < 0 && w->truncated))
        pm_writer_printf(w, " ");
}

/* One line per option: NAME=value, and the default when it differs. */
static void print_options(int fd, const char *prefix, const pm_options *o) {
    char buf[2048];
    pm_writer w;
    pm_writer_init(&w, buf, sizeof buf, fd);
    for (size_t i = 0; i < NUM_OPTIONS; i++) {
        const option_def *d = &option_table[i];
        char now[300], def[300];
        format_value(d, o, now, sizeof now);
        if (d->offset == NOT_IN_STRUCT)
            continue; /* HELP is an action, not a setting */
        int saved = pm_opt_stats_format;
        pm_opt_stats_format = PM_STATS_FORMAT_TEXT;
        format_value(d, &default_options, def, sizeof def);
        pm_opt_stats_format = saved;
        pm_writer_printf(&w, "%s" PM_OPTION_PREFIX "%s=%s", prefix, d->name, now);
        if (strcmp(now, def) != 0)
            pm_writer_printf(&w, "  (default %s)", d->kind == KIND_PATH && !def[0] ? "stderr"
                                                                                   : def);
        pm_writer_printf(&w, "\n");
    }
    pm_writer_flush(&w);
}

void pm_options_print(int fd) {
    pm_init(); /* so that the environment has been read */
    print_options(fd, "", &pm_opt);
}

void pm_options_help(int fd) {
    char buf[4096];
    pm_writer w;
    pm_writer_init(&w, buf, sizeof buf, fd);
    pm_writer_printf(&w, "poolmalloc options: environment variables read once at start.\n"
                         "Sizes take K, M or G suffixes; booleans are 1/0, yes/no, on/off or "
                         "true/false; an empty value counts as unset.\n\n");
    /* Columns sized to the widest entry, so a new option cannot break the layout. */
    size_t col_default = 0, col_accepts = 0, col_help = 0;
    for (size_t i = 0; i < NUM_OPTIONS; i++) {
        char range[80];
        describe_range_short(&option_table[i], range, sizeof range);
        size_t name = sizeof PM_OPTION_PREFIX - 1 + strlen(option_table[i].name);
        size_t def = strlen(option_table[i].default_text) + 2;
        col_default = name > col_default ? name : col_default;
        col_accepts = def > col_accepts ? def : col_accepts;
        col_help = strlen(range) > col_help ? strlen(range) : col_help;
    }
    const size_t COL_DEFAULT = col_default + 3;
    const size_t COL_ACCEPTS = COL_DEFAULT + col_accepts + 3;
    const size_t COL_HELP = COL_ACCEPTS + col_help + 3;
    pm_writer_printf(&w, "NAME");
    pm_writer_pad(&w, COL_DEFAULT);
    pm_writer_printf(&w, "DEFAULT");
    pm_writer_pad(&w, COL_ACCEPTS);
    pm_writer_printf(&w, "ACCEPTS");
    pm_writer_pad(&w, COL_HELP);
    pm_writer_printf(&w, "DESCRIPTION\n");
    for (size_t i = 0; i < NUM_OPTIONS; i++) {
        const option_def *d = &option_table[i];
        char range[80];
        describe_range_short(d, range, sizeof range);
        pm_writer_printf(&w, PM_OPTION_PREFIX "%s", d->name);
        pm_writer_pad(&w, COL_DEFAULT);
        pm_writer_printf(&w, "%s", d->default_text[0] ? d->default_text : "\"\"");
        pm_writer_pad(&w, COL_ACCEPTS);
        pm_writer_printf(&w, "%s", range);
        pm_writer_pad(&w, COL_HELP);
        pm_writer_printf(&w, "%s\n", d->help);
    }
    pm_writer_flush(&w);
}

/* ---- start-up ------------------------------------------------------------------------------ */

void pm_options_init(void) {
    pm_options_apply_env(environ, &pm_opt);
    if (opt_help)
        pm_options_help(2);
    if (pm_opt.verbose)
        print_options(2, "poolmalloc: ", &pm_opt);
}

size_t pm_options_count(void) {
    return NUM_OPTIONS;
}
const char *pm_options_name(size_t i, const char **default_text) {
    if (i >= NUM_OPTIONS)
        return NULL;
    if (default_text != NULL)
        *default_text = option_table[i].default_text;
    return option_table[i].name;
}
