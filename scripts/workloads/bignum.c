/*
 * bignum: arithmetic on multi-precision integers, the way a factoring or number-theory program
 * does it: every intermediate result is a freshly allocated array of 64-bit limbs (1 to 32
 * limbs, mostly under 256 bytes) that lives for a few operations and is freed. The arithmetic
 * (schoolbook multiplication, addition, a reduction by shifting) dominates; the allocator is a
 * short-lived small allocation per operation, millions of times, on one thread. What shows is
 * the allocator's instructions and cache misses per malloc+free pair inside a compute loop,
 * not its throughput in a tight malloc/free loop.
 * -t N runs N independent copies (see common.h).
 */
#include "common.h"

#define POOL_NUMBERS 48 /* live operands: a factor base, a sieve's candidates */
#define MAX_LIMBS 32
#define BIGNUM_OPS 5000000

typedef struct number {
    size_t limbs;
    uint64_t *limb; /* least significant first; allocated with exactly `limbs` entries */
} number;

typedef struct bignum_thread {
    uint64_t seed;
    uint64_t ops;
    uint64_t checksum;
} bignum_thread;

static uint64_t *limbs_new(size_t n) {
    return wl_malloc("bignum", n * sizeof(uint64_t));
}

static number number_random(uint64_t *seed, size_t limbs) {
    number x = {limbs, limbs_new(limbs)};
    for (size_t i = 0; i < limbs; i++)
        x.limb[i] = wl_rand(seed);
    return x;
}

/* Most operands are small (1-8 limbs), a few reach MAX_LIMBS, as in a sieve where most
 * numbers are near the modulus and few products grow. */
static size_t random_limbs(uint64_t *seed) {
    uint64_t r = wl_rand(seed) % 16;
    return r < 12 ? wl_rand_range(seed, 1, 8) : wl_rand_range(seed, 9, MAX_LIMBS / 2);
}

static number multiply(number a, number b) {
    number c = {a.limbs + b.limbs, limbs_new(a.limbs + b.limbs)};
    memset(c.limb, 0, c.limbs * sizeof(uint64_t));
    for (size_t i = 0; i < a.limbs; i++) {
        unsigned __int128 carry = 0;
        for (size_t j = 0; j < b.limbs; j++) {
            unsigned __int128 t = (unsigned __int128)a.limb[i] * b.limb[j] + c.limb[i + j] + carry;
            c.limb[i + j] = (uint64_t)t;
            carry = t >> 64;
        }
        c.limb[i + b.limbs] = (uint64_t)carry;
    }
    return c;
}

static number add(number a, number b) {
    if (a.limbs < b.limbs) {
        number t = a;
        a = b;
        b = t;
    }
    number c = {a.limbs + 1, limbs_new(a.limbs + 1)};
    uint64_t carry = 0;
    for (size_t i = 0; i < a.limbs; i++) {
        uint64_t bi = i < b.limbs ? b.limb[i] : 0;
        uint64_t s = a.limb[i] + bi;
        uint64_t c1 = s < bi;
        c.limb[i] = s + carry;
        carry = c1 | (c.limb[i] < s);
    }
    c.limb[a.limbs] = carry;
    return c;
}

/* Keeps the low `limbs` limbs, folding the high part in (a cheap stand-in for a reduction
 * modulo 2^(64 limbs) - 1): a new, shorter number, as a real reduction returns. */
static number reduce(number x, size_t limbs) {
    if (limbs > x.limbs)
        limbs = x.limbs;
    number r = {limbs, limbs_new(limbs)};
    memcpy(r.limb, x.limb, limbs * sizeof(uint64_t));
    for (size_t i = limbs; i < x.limbs; i++)
        r.limb[i % limbs] ^= x.limb[i] * 0x9e3779b97f4a7c15ull;
    return r;
}

static void number_free(number x) { free(x.limb); }

static void *bignum_main(void *arg) {
    bignum_thread *t = arg;
    number pool[POOL_NUMBERS];
    for (int i = 0; i < POOL_NUMBERS; i++)
        pool[i] = number_random(&t->seed, random_limbs(&t->seed));
    for (uint64_t op = 0; op < t->ops; op++) {
        number a = pool[wl_rand(&t->seed) % POOL_NUMBERS];
        number b = pool[wl_rand(&t->seed) % POOL_NUMBERS];
        number product = multiply(a, b);
        number sum = add(product, a);
        number_free(product);
        size_t slot = (size_t)(wl_rand(&t->seed) % POOL_NUMBERS);
        number reduced = reduce(sum, random_limbs(&t->seed));
        number_free(sum);
        t->checksum += reduced.limb[0];
        number_free(pool[slot]);
        pool[slot] = reduced;
        if (op % 64 == 0) { /* now and then a fresh operand, as new candidates arrive */
            slot = (size_t)(wl_rand(&t->seed) % POOL_NUMBERS);
            number_free(pool[slot]);
            pool[slot] = number_random(&t->seed, random_limbs(&t->seed));
        }
    }
    for (int i = 0; i < POOL_NUMBERS; i++)
        number_free(pool[i]);
    return NULL;
}

int main(int argc, char **argv) {
    wl_args args = wl_parse_args(argc, argv, 1, "multi-precision arithmetic: a short-lived limb "
                                                "array per operation");
    bignum_thread threads[WL_MAX_THREADS];
    uint64_t ops = wl_scaled(BIGNUM_OPS, args.scale);
    for (int i = 0; i < args.threads; i++)
        threads[i] = (bignum_thread){.seed = 0xb1640000u + (uint64_t)i, .ops = ops};
    wl_run_threads("bignum", args.threads, bignum_main, threads, sizeof threads[0]);
    uint64_t checksum = 0;
    for (int i = 0; i < args.threads; i++)
        checksum += threads[i].checksum;
    printf("checksum=%llu\n", (unsigned long long)checksum);
    wl_report(ops * 3 * (uint64_t)args.threads); /* three malloc+free pairs per operation */
    return 0;
}
