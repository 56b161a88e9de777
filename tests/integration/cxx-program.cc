// cxx-program.cc: an ordinary C++ program that test-preload runs twice, plainly and under
// LD_PRELOAD=libpoolmalloc.so, comparing the output. It is built WITHOUT poolmalloc, so only
// the preload can put it on our allocator.
//
// It uses new/delete (plain, array, sized), aligned new (alignas(64) and alignas(4096) types,
// which C++17 routes to operator new(size_t, align_val_t)), the standard containers,
// std::thread with objects freed by threads that did not allocate them, a std::new_handler,
// std::bad_alloc and nothrow new.
//
//   cxx-program                    prints its results
//   cxx-program --expect-preload   the same, and fails unless poolmalloc served the program
//                                  (pm_owns, found with dlsym, owns what new returned)
//   cxx-program --tap=- ...        as a test of `make check` (every check_PROGRAM is one):
//                                  a plain run, reported in TAP
#include <dlfcn.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <queue>
#include <string>
#include <thread>
#include <vector>

namespace {

struct alignas(64) CacheLine {
    std::uint64_t words[8];
};

struct alignas(4096) Page {
    unsigned char bytes[4096];
};

// Stores here keep the compiler from eliding a new/delete pair (C++14 allows it).
void *volatile escape;

using owns_fn = int (*)(const void *);
owns_fn pm_owns = nullptr;  // set by --expect-preload
int failures = 0;

// Under --expect-preload: p must come from poolmalloc.
void expect_ours(const void *p, const char *what) {
    if (pm_owns != nullptr && !pm_owns(p)) {
        std::fprintf(stderr, "cxx-program: %s (%p) was not allocated by poolmalloc\n", what, p);
        failures++;
    }
}

bool aligned(const void *p, std::size_t a) {
    return (reinterpret_cast<std::uintptr_t>(p) & (a - 1)) == 0;
}

std::uint64_t mix(std::uint64_t h, std::uint64_t v) {
    return (h ^ v) * 0x100000001b3ull;
}

std::uint64_t containers() {
    std::uint64_t h = 1469598103934665603ull;
    for (int round = 0; round < 20; round++) {
        std::map<std::string, std::vector<int>> m;
        for (int i = 0; i < 5000; i++) {
            std::string key = "key-" + std::to_string(i * 7919 % 10007) + std::string(i % 40, 'x');
            m[key].assign(static_cast<std::size_t>(i % 17), i);
        }
        for (const auto &kv : m)
            h = mix(h, kv.first.size() * 31 + kv.second.size());
        auto s = std::make_unique<std::string>(1000, 'q');
        expect_ours(s.get(), "make_unique<std::string>");
        expect_ours(s->data(), "std::string buffer");
    }
    return h;
}

std::uint64_t plain_and_array_new() {
    std::uint64_t h = 7;
    for (int i = 0; i < 100000; i++) {
        auto *one = new std::uint64_t(static_cast<std::uint64_t>(i));
        auto *many = new std::uint32_t[static_cast<std::size_t>(i % 300 + 1)];
        many[0] = static_cast<std::uint32_t>(i);
        escape = one;
        escape = many;
        h = mix(h, *one + many[0]);
        if (i == 0) {
            expect_ours(one, "new uint64_t");
            expect_ours(many, "new uint32_t[]");
        }
        delete one;  // sized delete (C++14)
        delete[] many;
    }
    return h;
}

std::uint64_t aligned_new() {
    std::uint64_t h = 11;
    for (int i = 0; i < 2000; i++) {
        auto *line = new CacheLine();
        auto *lines = new CacheLine[static_cast<std::size_t>(i % 10 + 1)]();
        auto *page = new Page();
        auto *pages = new Page[2]();
        if (!aligned(line, 64) || !aligned(lines, 64) || !aligned(page, 4096) ||
            !aligned(pages, 4096)) {
            std::fprintf(stderr, "cxx-program: aligned new returned a misaligned block\n");
            failures++;
        }
        if (i == 0) {
            expect_ours(line, "new alignas(64)");
            expect_ours(page, "new alignas(4096)");
            expect_ours(pages, "new alignas(4096)[]");
        }
        escape = lines;
        escape = pages;
        line->words[0] = static_cast<std::uint64_t>(i);
        page->bytes[4095] = static_cast<unsigned char>(i);
        h = mix(h, line->words[0] + page->bytes[4095] + lines[0].words[7] + pages[1].bytes[0]);
        delete line;
        delete[] lines;
        delete page;
        delete[] pages;
    }
    auto v = std::make_unique<std::vector<Page>>(3);
    expect_ours(v->data(), "vector<Page> buffer");
    return h;
}

// Producers make strings, consumers free them: every delete crosses threads.
std::uint64_t threads() {
    std::mutex lock;
    std::queue<std::string *> q;
    std::atomic<bool> done{false};
    std::atomic<std::uint64_t> sum{0};
    std::atomic<int> foreign{0};
    std::vector<std::thread> producers, consumers;
    for (int p = 0; p < 3; p++) {
        producers.emplace_back([&, p] {
            for (int i = 0; i < 30000; i++) {
                auto *s = new std::string(static_cast<std::size_t>(20 + (i + p) % 200), 'a' + p);
                if (pm_owns != nullptr && !pm_owns(s))
                    foreign++;
                std::lock_guard<std::mutex> g(lock);
                q.push(s);
            }
        });
    }
    for (int c = 0; c < 2; c++) {
        consumers.emplace_back([&] {
            for (;;) {
                std::string *s = nullptr;
                {
                    std::lock_guard<std::mutex> g(lock);
                    if (!q.empty()) {
                        s = q.front();
                        q.pop();
                    }
                }
                if (s == nullptr) {
                    if (done.load())
                        return;
                    std::this_thread::yield();
                    continue;
                }
                sum += s->size();
                delete s;
            }
        });
    }
    for (auto &t : producers)
        t.join();
    done = true;
    for (auto &t : consumers)
        t.join();
    if (foreign.load() != 0) {
        std::fprintf(stderr, "cxx-program: %d strings made on threads were not ours\n",
                     foreign.load());
        failures++;
    }
    return sum.load();
}

int handler_calls = 0;
void give_up_handler() {
    // The first call pretends to free memory; the second removes itself, so new throws.
    if (++handler_calls >= 2)
        std::set_new_handler(nullptr);
}

void allocation_failure() {
    std::size_t impossible = SIZE_MAX / 4;
    std::set_new_handler(give_up_handler);
    const char *caught = "nothing";
    try {
        char *p = new char[impossible];
        escape = p;
        delete[] p;
    } catch (const std::bad_alloc &) {
        caught = "std::bad_alloc";
    }
    std::printf("new of %zu bytes: %s caught, new_handler called %d times\n", impossible, caught,
                handler_calls);
    std::set_new_handler(nullptr);
    try {
        auto *p = new Page[impossible / sizeof(Page)];
        escape = p;
        delete[] p;
        std::printf("aligned new of an impossible size: no exception\n");
    } catch (const std::bad_alloc &) {
        std::printf("aligned new of an impossible size: std::bad_alloc caught\n");
    }
    char *n = new (std::nothrow) char[impossible];
    escape = n;
    std::printf("nothrow new of an impossible size: %s\n", n == nullptr ? "nullptr" : "a block");
    delete[] n;
}

int run() {
    std::printf("containers %016llx\n", static_cast<unsigned long long>(containers()));
    std::printf("new/delete %016llx\n", static_cast<unsigned long long>(plain_and_array_new()));
    std::printf("aligned new %016llx\n", static_cast<unsigned long long>(aligned_new()));
    std::printf("threads %llu\n", static_cast<unsigned long long>(threads()));
    allocation_failure();
    return failures;
}

}  // namespace

int main(int argc, char **argv) {
    bool tap = argc > 1 && std::strncmp(argv[1], "--tap", 5) == 0;
    if (argc > 1 && std::strcmp(argv[1], "--expect-preload") == 0) {
        pm_owns = reinterpret_cast<owns_fn>(dlsym(RTLD_DEFAULT, "pm_owns"));
        if (pm_owns == nullptr) {
            std::fprintf(stderr, "cxx-program: pm_owns not found: poolmalloc is not preloaded\n");
            return 2;
        }
    }
    if (tap)
        std::printf("1..1\n# the C++ workload without poolmalloc; test-preload runs it preloaded\n");
    int failed = run();
    if (tap)
        std::printf("%s 1 - cxx-program runs on the system allocator\n", failed ? "not ok" : "ok");
    if (failed)
        std::fprintf(stderr, "cxx-program: %d checks failed\n", failed);
    return failed ? 1 : 0;
}
