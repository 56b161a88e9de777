/*
 * report.c: where the exit report (POOLMALLOC_STATS, POOLMALLOC_STATS_FILE) goes, and
 * writing it there at exit.
 *
 * The report is written from a destructor rather than atexit(): glibc's atexit may allocate,
 * and a destructor of the preloaded library runs after the program's own exit handlers, so it
 * sees the program's final state.
 *
 * By exit time the program may have done anything to its descriptors: closed stderr
 * (coreutils do), closed every descriptor above 2 and opened its own files (daemons do, with
 * closefrom), changed directory. So the destination is settled at start: the stats file is
 * opened then (an unopenable one is reported while stderr still works), and a duplicate of
 * stderr is kept, both close-on-exec and numbered high. We remember what each refers to
 * (device and inode) and at exit write only through a descriptor that still refers to it:
 * never into a file of the program's that happens to have taken the number.
 */
#include "options.h"

#include <unistd.h>

static struct {
    bool on;
    int err_fd;            /* our duplicate of stderr, or -1 */
    pm_file_id err_id;     /* what stderr was at start */
    bool err_known;        /* stderr was open at start */
    int file_fd;           /* POOLMALLOC_STATS_FILE if it existed at start, or -1 */
    bool file_ok;          /* it could be opened (or created) at start */
    pm_file_id file_id;
    pid_t file_pid;        /* who opened it: a forked child's %p names another file */
    char dir[1024];        /* the start-up directory, for a relative stats file */
} report = {.err_fd = -1, .file_fd = -1};

static bool same_file(int fd, const pm_file_id *want) {
    pm_file_id now;
    return pm_os_fd_identity(fd, &now) && now.dev == want->dev && now.ino == want->ino;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* POOLMALLOC_STATS_FILE, made absolute against the start-up directory, with each %p replaced
 * by the pid (one file per process of a process tree). */
static void report_path(char *out, size_t len) {
    const char *path = pm_opt.stats_file;
    size_t o = 0;
    if (path[0] != '/' && report.dir[0] != 0)
        o = (size_t)pm_snprintf(out, len, "%s/", report.dir);
    for (const char *p = path; *p && o + 1 < len; p++) {
        if (p[0] == '%' && p[1] == 'p') {
            o += (size_t)pm_snprintf(out + o, len - o, "%d", (int)getpid());
            p++;
        } else {
            out[o++] = *p;
        }
    }
    out[o < len ? o : len - 1] = 0;
}

#define PATH_LEN (sizeof report.dir + sizeof pm_opt.stats_file + 32)

/* Checks the stats file while stderr still works; on failure one line naming the variable,
 * the value and the reason, and the report goes to stderr instead. An existing file is opened
 * now and held; a missing one is only checked (its directory must be writable) and created at
 * exit: a process that never exits normally (killed, or _exit after fork) leaves no empty
 * file behind. */
static void open_stats_file(void) {
    int saved = errno;
    if (pm_opt.stats_file[0] != '/' && getcwd(report.dir, sizeof report.dir) == NULL)
        report.dir[0] = 0; /* getcwd with a buffer does not allocate */
    char path[PATH_LEN];
    report_path(path, sizeof path);
    report.file_fd = pm_os_open_append(path, false);
    int err = report.file_fd >= 0 ? 0 : errno;
    if (err == ENOENT)
        err = pm_os_creatable(path);
    if (report.file_fd >= 0 && !pm_os_fd_identity(report.file_fd, &report.file_id)) {
        pm_os_close(report.file_fd);
        report.file_fd = -1;
    }
    report.file_ok = err == 0;
    if (!report.file_ok)
        pm_warn("cannot open POOLMALLOC_STATS_FILE='%s' (%s): statistics go to stderr",
                pm_opt.stats_file, pm_strerror(err));
    report.file_pid = getpid();
    errno = saved;
}

static void close_destinations(void) {
    pm_os_close(report.err_fd);
    pm_os_close(report.file_fd);
    report.err_fd = report.file_fd = -1;
    report.file_ok = false;
}

/* Runs in pm_init, and again if the late environment changed the options. */
void pm_stats_init(void) {
    close_destinations();
    /* A stats file alone turns the report on: naming a file and getting nothing is a trap. */
    report.on = pm_opt.stats || pm_opt.stats_file[0] != 0;
    if (!report.on)
        return;
    int saved = errno;
    report.err_known = pm_os_fd_identity(2, &report.err_id);
    report.err_fd = report.err_known ? pm_os_dup_high(2) : -1;
    errno = saved;
    if (pm_opt.stats_file[0] != 0)
        open_stats_file();
}

/* A descriptor that is still the stderr we started with, or -1: our duplicate, else fd 2. */
static int trusted_stderr(void) {
    if (!report.err_known)
        return -1;
    if (same_file(report.err_fd, &report.err_id))
        return report.err_fd;
    return same_file(2, &report.err_id) ? 2 : -1;
}

/* The stats file's descriptor if it still is that file and ours (not a forked child's,
 * whose %p names another file), else the file opened (or created) by name; -1 with errno. */
static int stats_file_now(bool *opened) {
    *opened = false;
    if (report.file_fd >= 0 && report.file_pid == getpid() &&
        same_file(report.file_fd, &report.file_id))
        return report.file_fd;
    char path[PATH_LEN];
    report_path(path, sizeof path);
    int fd = pm_os_open_append(path, true);
    *opened = fd >= 0;
    return fd;
}

__attribute__((destructor)) static void pm_stats_exit_report(void) {
    if (!report.on || atomic_load(&pm_initialized) != 2)
        return;
    int saved = errno;
    bool json = pm_opt_stats_format == PM_STATS_FORMAT_JSON;
    bool opened = false;
    int fd = -1;
    if (pm_opt.stats_file[0] != 0 && report.file_ok) {
        /* (A file that failed at start was reported then; its report goes to stderr.) */
        fd = stats_file_now(&opened);
        int err = errno, efd = trusted_stderr();
        if (fd < 0 && efd >= 0)
            pm_fdprintf(efd, "poolmalloc: cannot open POOLMALLOC_STATS_FILE='%s' at exit (%s): "
                        "statistics go to stderr\n", pm_opt.stats_file, pm_strerror(err));
        json = json || ends_with(pm_opt.stats_file, ".json");
    }
    if (fd < 0)
        fd = trusted_stderr(); /* stderr gone or replaced: nowhere safe to write, so nothing */
    if (fd >= 0)
        pm_stats_print_fd(fd, json);
    if (opened)
        pm_os_close(fd);
    errno = saved;
}
