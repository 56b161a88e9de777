#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>
/* Which pages the kernel's fault-around maps (scripts/results/issue10-startup-2026-12-03.md):
 * maps 256 KiB of a file already in the page cache at an address `skew` bytes past a 64 KiB
 * boundary, touches page 0 or page 5, and counts the mapping's pages present in our page
 * tables (/proc/self/pagemap). Build: gcc -O2 -o fa issue10-fault-around-bench.c; run:
 * ./fa /usr/lib/x86_64-linux-gnu/libc.so.6 */
int main(int argc, char **argv) {
    int fd = open(argv[1], O_RDONLY), pm = open("/proc/self/pagemap", O_RDONLY);
    size_t len = 256 << 10;
    char buf[1 << 16]; while (read(fd, buf, sizeof buf) > 0) {}
    for (int touch = 0; touch <= 5; touch += 5)
    for (size_t skew = 0; skew < 65536; skew += 16384) {
        char *area = mmap(NULL, len + (2 << 20), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        uintptr_t a = ((uintptr_t)area + 65535) & ~(uintptr_t)65535;
        char *p = mmap((char *)(a + skew), len, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
        volatile char c = p[touch * 4096]; (void)c;
        uint64_t e[64]; pread(pm, e, sizeof e, ((uintptr_t)p >> 12) * 8);
        int n = 0, first = -1, last = -1;
        for (int i = 0; i < 64; i++) if (e[i] >> 63) { n++; if (first < 0) first = i; last = i; }
        printf("skew %2zu KiB, touch page %d: %2d pages mapped (pages %d-%d)\n", skew >> 10, touch, n, first, last);
        munmap(area, len + (2 << 20));
    }
}
