/*
 * instr-options.c: the instrumentation layer's options (POOLMALLOC_DEBUG, _LEAKS, _PROF and
 * their settings), registered with the core's option table (options.h: PM_OPTION_GROUP), so
 * that parsing, messages and --help cover them like any other, without living in the core's
 * own struct. None is obeyed under setuid: each writes files or reports on stderr.
 */
#include "instrument.h"

#include "options.h"

pm_instr_options_t pm_instr_opt = {
    .debug_quarantine = 8 << 20,
    .prof_sample = 512 << 10,
    .prof_file = "poolmalloc.%p.heap",
};

#define GIB ((size_t)1 << 30)

static const pm_option_desc instr_option_table[] = {
    {"DEBUG", PM_KIND_BOOL, 0, &pm_instr_opt.debug, 0, 1, "0",
     "check every block: forbidden bytes around it, freed blocks filled and quarantined (ignored under setuid)", NULL},
    {"DEBUG_QUARANTINE", PM_KIND_SIZE, 0, &pm_instr_opt.debug_quarantine, 0, GIB, "8M",
     "bytes of freed blocks POOLMALLOC_DEBUG keeps and checks before reusing them (ignored under setuid)", NULL},
    {"LEAKS", PM_KIND_BOOL, 0, &pm_instr_opt.leaks, 0, 1, "0",
     "report the blocks still allocated at exit, grouped by allocation stack (ignored under setuid)", NULL},
    {"LEAKS_FILE", PM_KIND_PATH, 0, &pm_instr_opt.leaks_file, 0,
     sizeof pm_instr_opt.leaks_file - 1, "",
     "write the leak report to this file, not stderr (%p: pid; a .json name gets JSON) (ignored under setuid)", NULL},
    {"PROF", PM_KIND_BOOL, 0, &pm_instr_opt.prof, 0, 1, "0",
     "sample allocations and write a heap profile at exit (pprof text and folded stacks) (ignored under setuid)", NULL},
    {"PROF_SAMPLE", PM_KIND_SIZE, 0, &pm_instr_opt.prof_sample, 1, GIB, "512K",
     "mean bytes allocated between two samples of POOLMALLOC_PROF (ignored under setuid)", NULL},
    {"PROF_FILE", PM_KIND_PATH, 0, &pm_instr_opt.prof_file, 0,
     sizeof pm_instr_opt.prof_file - 16, "poolmalloc.%p.heap",
     "the exit heap profile (%p: pid), plus .live.folded and .alloc.folded (ignored under setuid)", NULL},
    {"PROF_SIGNAL", PM_KIND_INT, 0, &pm_instr_opt.prof_signal, 0, 64, "0",
     "a signal number that writes a numbered heap profile (0: none; e.g. 12 for SIGUSR2) (ignored under setuid)", NULL},
};
PM_OPTION_GROUP(instr_options_group, instr_option_table);
