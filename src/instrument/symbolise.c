/*
 * symbolise.c: return addresses to names with dladdr, at report time only (never inside an
 * allocation that is not itself a report). dladdr reads the loaded objects' dynamic symbol
 * tables: functions a binary does not export show as module+offset, which addr2line or
 * pprof resolve against the file.
 */
#define _GNU_SOURCE 1
#include "instrument/instrument.h"
#include "options.h"

#include <dlfcn.h>

void pm_symbolise(uintptr_t pc, pm_symbol *out) {
    Dl_info info;
    out->name = NULL;
    out->module = NULL;
    out->offset = pc;
    /* pc is a return address: pc - 1 lies in the call instruction, inside the caller even
     * when the call is the last instruction of a function. */
    if (pc == 0 || dladdr((void *)(pc - 1), &info) == 0)
        return;
    out->module = info.dli_fname;
    if (info.dli_sname != NULL && info.dli_saddr != NULL) {
        out->name = info.dli_sname;
        out->offset = pc - (uintptr_t)info.dli_saddr;
    } else if (info.dli_fbase != NULL) {
        out->offset = pc - (uintptr_t)info.dli_fbase;
    }
}

void pm_write_stack(pm_writer *w, const pm_stack *s, const char *indent) {
    if (s->depth == 0) {
        pm_writer_printf(w, "%s(stack not recorded: more distinct stacks than the table holds)\n",
                         indent);
        return;
    }
    for (uint32_t i = 0; i < s->depth; i++) {
        pm_symbol sym;
        pm_symbolise(s->pc[i], &sym);
        pm_writer_printf(w, "%s#%u 0x%lx", indent, i, (unsigned long)s->pc[i]);
        if (sym.name)
            pm_writer_printf(w, " %s+0x%lx", sym.name, (unsigned long)sym.offset);
        else if (sym.module)
            pm_writer_printf(w, " +0x%lx", (unsigned long)sym.offset);
        if (sym.module)
            pm_writer_printf(w, " (%s)", sym.module);
        pm_writer_printf(w, "\n");
    }
}

static const char *base_name(const char *path) {
    const char *b = path;
    for (const char *s = path; *s; s++)
        if (*s == '/')
            b = s + 1;
    return b;
}

/* Folded stacks separate frames with ';' and end with " count": neither may occur inside. */
static void write_clean(pm_writer *w, const char *s) {
    char buf[256];
    size_t n = 0;
    for (; *s && n + 1 < sizeof buf; s++)
        buf[n++] = (*s == ';' || *s == ' ' || *s == '\n') ? '_' : *s;
    buf[n] = 0;
    pm_writer_printf(w, "%s", buf);
}

/* Names already looked up for folded stacks: dladdr scans a module's whole symbol table (nearly
 * a million instructions a call in cc1), and the same frames recur in many stacks and in both
 * folded files. Used by profile dumps only, which run one at a time (prof.c's dump_lock); a
 * name stays valid as long as its module is loaded, so entries are dropped at each dump. */
#define NAME_CACHE 4096 /* a power of two */
PM_BIG_BSS static struct { uintptr_t pc; pm_symbol sym; } name_cache[NAME_CACHE];

void pm_symbol_cache_reset(void) { memset(name_cache, 0, sizeof name_cache); }

static void symbolise_cached(uintptr_t pc, pm_symbol *out) {
    uint32_t i = (uint32_t)((pc * 0x9E3779B97F4A7C15ull) >> 52) & (NAME_CACHE - 1);
    for (uint32_t probes = 0; probes < 8; probes++, i = (i + 1) & (NAME_CACHE - 1)) {
        if (name_cache[i].pc == pc) {
            *out = name_cache[i].sym;
            return;
        }
        if (name_cache[i].pc == 0) {
            pm_symbolise(pc, out);
            name_cache[i].pc = pc;
            name_cache[i].sym = *out;
            return;
        }
    }
    pm_symbolise(pc, out); /* a crowded neighbourhood: looked up, not kept */
}

void pm_write_frame_name(pm_writer *w, uintptr_t pc) {
    pm_symbol sym;
    symbolise_cached(pc, &sym);
    if (sym.name)
        write_clean(w, sym.name);
    else if (sym.module) {
        write_clean(w, base_name(sym.module));
        pm_writer_printf(w, "+0x%lx", (unsigned long)sym.offset);
    } else
        pm_writer_printf(w, "0x%lx", (unsigned long)pc);
}

static void write_json_string(pm_writer *w, const char *s) {
    pm_writer_printf(w, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            pm_writer_printf(w, "\\%c", c);
        else if (c < 0x20)
            pm_writer_printf(w, "\\u%04x", c);
        else
            pm_writer_printf(w, "%c", c);
    }
    pm_writer_printf(w, "\"");
}

void pm_write_stack_json(pm_writer *w, const pm_stack *s) {
    pm_writer_printf(w, "[");
    for (uint32_t i = 0; i < s->depth; i++) {
        pm_symbol sym;
        pm_symbolise(s->pc[i], &sym);
        pm_writer_printf(w, "%s{\"pc\":\"0x%lx\"", i ? "," : "", (unsigned long)s->pc[i]);
        if (sym.name) {
            pm_writer_printf(w, ",\"function\":");
            write_json_string(w, sym.name);
        }
        if (sym.module) {
            pm_writer_printf(w, ",\"offset\":%lu,\"module\":", (unsigned long)sym.offset);
            write_json_string(w, sym.module);
        }
        pm_writer_printf(w, "}");
    }
    pm_writer_printf(w, "]");
}
