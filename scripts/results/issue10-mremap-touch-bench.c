/* The mremap microbenchmark of scripts/results/issue10-purge-and-stale-cache-2026-12-01.md:
 * what touching 64 MiB costs when its pages are fresh (page faults), already in place, and just
 * moved by mremap(MREMAP_FIXED) (page-table entries moved, nothing copied). large.c stitches
 * cached pieces together with such moves. Build: gcc -O2 -o mr issue10-mremap-touch-bench.c. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
static double now(void){ struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec*1e3+t.tv_nsec/1e6; }
int main(void){
  size_t sz = 64u<<20;
  for (int round=0; round<3; round++){
  char *a = mmap(NULL, sz, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
  double t0=now(); memset(a, 1, sz); double t1=now();
  memset(a, 2, sz); double t2=now();
  char *b = mmap(NULL, sz, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
  char *c = mremap(a, sz, sz, MREMAP_MAYMOVE|MREMAP_FIXED, b);
  double t3=now(); memset(c, 3, sz); double t4=now(); memset(c, 4, sz); double t5=now();
  printf("first touch %.1f ms, again in place %.1f ms, after mremap move %.1f ms (%.1f), again %.1f ms\n", t1-t0, t2-t1, t4-t3, t3-t2, t5-t4);
  munmap(c, sz);
  }
  return 0;
}
