/*
 * options-help.c: options described in words: what a bad value's message says is expected,
 * the current values (POOLMALLOC_VERBOSE), the help table (POOLMALLOC_HELP, `poolmalloc
 * --help`) and the "did you mean" suggestion. Everything comes from the descriptors
 * (options.h), so a new option, in any layer, is described without a line here.
 */
#include "options.h"

/* "1M, 2M or 4M", or with sep "|" "1M|2M|4M" */
static void pow2_list(char *buf, size_t len, long long min, long long max, const char *sep) {
    size_t n = 0;
    buf[0] = 0;
    for (long long v = min; v <= max && n < len; v *= 2) {
        char one[24];
        pm_format_size(one, sizeof one, (uint64_t)v);
        const char *s = n == 0 ? "" : sep ? sep : v * 2 > max ? " or " : ", ";
        n += (size_t)pm_snprintf(buf + n, len - n, "%s%s", s, one);
    }
}

/* "stats, saveall, leak, checks" with the given separator. */
static size_t flag_list(char *buf, size_t len, const pm_option_flag *f, const char *sep) {
    size_t n = 0;
    buf[0] = 0;
    for (size_t i = 0; f != NULL && f[i].name != NULL && n < len; i++)
        n += (size_t)pm_snprintf(buf + n, len - n, "%s%s", i ? sep : "", f[i].name);
    return n;
}

void pm_option_describe_expected(const pm_option_desc *d, char *buf, size_t len) {
    char lo[24], hi[24], list[160];
    switch (d->kind) {
    case PM_KIND_SIZE:
        pm_format_size(lo, sizeof lo, (uint64_t)d->min);
        pm_format_size(hi, sizeof hi, (uint64_t)d->max);
        pm_snprintf(buf, len, "expected a size from %s to %s", lo, hi);
        break;
    case PM_KIND_POW2_SIZE:
        pow2_list(list, sizeof list, d->min, d->max, NULL);
        pm_snprintf(buf, len, "expected %s", list);
        break;
    case PM_KIND_MS:
        pm_snprintf(buf, len, "expected milliseconds from -1 (never) to %lld", d->max);
        break;
    case PM_KIND_INT:
        pm_snprintf(buf, len, "expected an integer from %lld to %lld", d->min, d->max);
        break;
    case PM_KIND_BOOL:
        pm_snprintf(buf, len, "expected a boolean: 1/0, yes/no, on/off or true/false");
        break;
    case PM_KIND_STATS:
        pm_snprintf(buf, len, "expected a boolean (1/0, yes/no, on/off, true/false) or json");
        break;
    case PM_KIND_PATH:
        pm_snprintf(buf, len, "expected a path of at most %lld bytes", d->max);
        break;
    case PM_KIND_TRIPLE:
        pm_snprintf(buf, len, "expected three integers from %lld to %lld separated by commas, "
                              "e.g. %s", d->min, d->max, d->default_text);
        break;
    case PM_KIND_FLAGS:
        flag_list(list, sizeof list, d->flag_names, ", ");
        pm_snprintf(buf, len, "expected a comma-separated list of %s, or a number from 0 to "
                              "%lld made of their bits", list, d->max);
        break;
    }
}

/* The ACCEPTS column of the help table. */
static void describe_range_short(const pm_option_desc *d, char *buf, size_t len) {
    char lo[24], hi[24];
    switch (d->kind) {
    case PM_KIND_SIZE:
        pm_format_size(lo, sizeof lo, (uint64_t)d->min);
        pm_format_size(hi, sizeof hi, (uint64_t)d->max);
        pm_snprintf(buf, len, "%s..%s", lo, hi);
        break;
    case PM_KIND_POW2_SIZE:
        pow2_list(buf, len, d->min, d->max, "|");
        break;
    case PM_KIND_MS:
    case PM_KIND_INT:
        pm_snprintf(buf, len, "%lld..%lld", d->min, d->max);
        break;
    case PM_KIND_BOOL:
        pm_snprintf(buf, len, "bool");
        break;
    case PM_KIND_STATS:
        pm_snprintf(buf, len, "bool|json");
        break;
    case PM_KIND_PATH:
        pm_snprintf(buf, len, "path");
        break;
    case PM_KIND_TRIPLE:
        pm_snprintf(buf, len, "n,n,n");
        break;
    case PM_KIND_FLAGS: {
        size_t n = flag_list(buf, len, d->flag_names, ",");
        if (n < len)
            pm_snprintf(buf + n, len - n, "|n");
        break;
    }
    }
}

/* A flags value as names where it can be: "stats,leak", "0". */
static void format_flags(const pm_option_desc *d, long flags, char *buf, size_t len) {
    long rest = flags;
    size_t n = 0;
    buf[0] = 0;
    for (const pm_option_flag *f = d->flag_names; f != NULL && f->name != NULL && n < len; f++)
        if ((rest & f->bit) == f->bit) {
            n += (size_t)pm_snprintf(buf + n, len - n, "%s%s", n ? "," : "", f->name);
            rest &= ~f->bit;
        }
    if ((rest != 0 || flags == 0) && n < len)
        pm_snprintf(buf + n, len - n, "%s%ld", n ? "," : "", rest);
}

/* The value held in f, d's kind of storage, as a user would write it. */
static void format_storage(const pm_option_desc *d, const void *f, char *buf, size_t len) {
    switch (d->kind) {
    case PM_KIND_SIZE:
    case PM_KIND_POW2_SIZE:
        pm_format_size(buf, len, *(const size_t *)f);
        break;
    case PM_KIND_MS:
    case PM_KIND_INT:
        pm_snprintf(buf, len, "%ld", *(const long *)f);
        break;
    case PM_KIND_BOOL:
        pm_snprintf(buf, len, "%d", *(const bool *)f ? 1 : 0);
        break;
    case PM_KIND_STATS:
        pm_snprintf(buf, len, "%s", !*(const bool *)f                             ? "0"
                                    : pm_opt_stats_format == PM_STATS_FORMAT_JSON ? "json"
                                                                                 : "1");
        break;
    case PM_KIND_PATH:
        pm_snprintf(buf, len, "%s", (const char *)f);
        break;
    case PM_KIND_TRIPLE: {
        const long *t = f;
        pm_snprintf(buf, len, "%ld,%ld,%ld", t[0], t[1], t[2]);
        break;
    }
    case PM_KIND_FLAGS:
        format_flags(d, *(const long *)f, buf, len);
        break;
    }
}

void pm_option_format_value(const pm_option_desc *d, const pm_options *into, char *buf,
                            size_t len) {
    format_storage(d, pm_option_storage(d, into), buf, len);
}

/* The default, written as format_storage would write it ("128K" stays "128K", "0" of a
 * STATS option stays "0"), so that it compares with a current value. */
static void format_default(const pm_option_desc *d, char *buf, size_t len) {
    union {
        size_t size;
        long number, triple[3];
        bool flag;
        char path[1024];
    } scratch;
    memset(&scratch, 0, sizeof scratch);
    int format = pm_opt_stats_format; /* parsing a STATS value sets it: keep the real one */
    bool ok = (size_t)d->max < sizeof scratch.path && pm_option_parse_text(d, d->default_text, &scratch);
    pm_opt_stats_format = format;
    if (d->kind == PM_KIND_STATS && ok)
        pm_snprintf(buf, len, "%s", scratch.flag ? "1" : "0");
    else if (ok)
        format_storage(d, &scratch, buf, len);
    else
        pm_snprintf(buf, len, "%s", d->default_text);
}

/* ---- did you mean ------------------------------------------------------------------------- */

static char lower(char c) {
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Edit distance, ignoring case (names are short). */
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

const pm_option_desc *pm_option_closest(const char *name, size_t len) {
    const pm_option_desc *best = NULL;
    size_t best_d = 3; /* suggest only near misses */
    for (size_t i = 0; i < pm_options_count(); i++) {
        const pm_option_desc *d = pm_option_at(i);
        size_t dist = distance(name, len, d->name, strlen(d->name));
        if (dist < best_d) {
            best_d = dist;
            best = d;
        }
    }
    return best;
}

/* ---- POOLMALLOC_VERBOSE and the help table ------------------------------------------------- */

static bool is_action(const pm_option_desc *d) {
    return strcmp(d->name, "HELP") == 0; /* an action, not a setting */
}

void pm_options_print_values(int fd, const char *prefix, const pm_options *o) {
    char buf[2048];
    pm_writer w;
    pm_writer_init(&w, buf, sizeof buf, fd);
    for (size_t i = 0; i < pm_options_count(); i++) {
        const pm_option_desc *d = pm_option_at(i);
        if (is_action(d))
            continue;
        char now[300], def[300];
        pm_option_format_value(d, o, now, sizeof now);
        format_default(d, def, sizeof def);
        pm_writer_printf(&w, "%s" PM_OPTION_PREFIX "%s=%s", prefix, d->name, now);
        if (strcmp(now, def) != 0) /* an empty path means stderr */
            pm_writer_printf(&w, "  (default %s)", def[0] ? def : "stderr");
        pm_writer_printf(&w, "\n");
    }
    pm_writer_flush(&w);
}

void pm_options_print(int fd) {
    pm_init(); /* so that the environment has been read */
    pm_options_print_values(fd, "", &pm_opt);
}

void pm_options_help(int fd) {
    char buf[4096];
    pm_writer w;
    pm_writer_init(&w, buf, sizeof buf, fd);
    pm_writer_printf(&w, "poolmalloc options: environment variables read once at start.\n"
                         "Sizes take K, M or G suffixes; booleans are 1/0, yes/no, on/off or "
                         "true/false; an empty value counts as unset.\n"
                         "Under setuid, setgid or file capabilities only options that change "
                         "neither output nor survival are obeyed.\n\n");
    /* Columns sized to the widest entry, so a new option cannot break the layout. */
    size_t col_default = 0, col_accepts = 0, col_help = 0;
    for (size_t i = 0; i < pm_options_count(); i++) {
        const pm_option_desc *d = pm_option_at(i);
        char range[80];
        describe_range_short(d, range, sizeof range);
        size_t name = sizeof PM_OPTION_PREFIX - 1 + strlen(d->name);
        size_t def = strlen(d->default_text) + 2;
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
    for (size_t i = 0; i < pm_options_count(); i++) {
        const pm_option_desc *d = pm_option_at(i);
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
