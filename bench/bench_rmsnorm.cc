// Head-wise RMSNorm per ISA against the copy roofline (x to y on the same buffers), the naive two-loop
// version, memcpy, and a two-thread split of the tokens.
#include <pthread.h>

#include <atomic>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "bench_support.h"

namespace {

using sinkkit_bench::KernelIsa;

struct Shape {
    std::size_t tokens;
    std::size_t heads;
    std::size_t head_dim;
};

// Decode, short prefill, long prefill, a 128 MiB prefill (x plus y), a small-head model, and Qwen3's
// k projection (8 KV heads).
const Shape kShapes[] = {{1, 32, 128}, {16, 32, 128}, {512, 32, 128}, {4096, 32, 128}, {512, 12, 64}, {512, 8, 128}};

const Shape kTwoThreadShape = {4096, 32, 128};

const float kEps = 1e-6f;

struct GammaVariant {
    sinkkit_gamma_kind kind;
    const char *name;
};

// SHARED first: it is the case the speed targets name.
const GammaVariant kGammas[] = {
    {SINKKIT_GAMMA_SHARED, "shared"}, {SINKKIT_GAMMA_NONE, "none"}, {SINKKIT_GAMMA_PER_HEAD, "per_head"}};

std::size_t element_count(const Shape &shape)
{
    return shape.tokens * shape.heads * shape.head_dim;
}

std::string name_of(const Shape &shape)
{
    return sinkkit_bench::shape_name({shape.tokens, shape.heads, shape.head_dim});
}

sinkkit_head_layout token_major(const Shape &shape)
{
    sinkkit_head_layout layout = {};
    layout.tokens = shape.tokens;
    layout.heads = shape.heads;
    layout.head_dim = shape.head_dim;
    layout.token_stride = shape.heads * shape.head_dim;
    layout.head_stride = shape.head_dim;
    return layout;
}

std::size_t gamma_count(const Shape &shape, sinkkit_gamma_kind kind)
{
    if (kind == SINKKIT_GAMMA_SHARED)
        return shape.head_dim;
    if (kind == SINKKIT_GAMMA_PER_HEAD)
        return shape.heads * shape.head_dim;
    return 0;
}

// The buffers of one shape, shared by every ISA and gamma kind.
struct RmsnormBuffers {
    const float *x;
    float *y;
    const float *gamma;  // heads * head_dim floats, enough for any gamma kind
};

RmsnormBuffers buffers_for(const Shape &shape)
{
    const std::size_t n = element_count(shape);
    return {sinkkit_bench::float_buffer("x", n), sinkkit_bench::float_buffer("y", n),
            sinkkit_bench::float_buffer("gamma", shape.heads * shape.head_dim)};
}

// Bytes a call must move at least: read x, write y, read gamma once.
double kernel_bytes(const Shape &shape, sinkkit_gamma_kind kind)
{
    return (double)((2 * element_count(shape) + gamma_count(shape, kind)) * sizeof(float));
}

double copy_bytes(const Shape &shape)
{
    return (double)(2 * element_count(shape) * sizeof(float));
}

// Returns one call of isa's kernel on the shape's buffers, or of the naive version when isa is
// nullptr.
std::function<void()> rmsnorm_call(const Shape &shape, GammaVariant gamma, const KernelIsa *isa)
{
    const RmsnormBuffers buffers = buffers_for(shape);
    const sinkkit_head_layout layout = token_major(shape);
    const float *gamma_data = gamma.kind == SINKKIT_GAMMA_NONE ? nullptr : buffers.gamma;

    if (isa == nullptr)
        return [=] { bench_naive_rmsnorm_f32(&layout, buffers.x, buffers.y, gamma_data, gamma.kind, kEps); };

    sinkkit_rmsnorm_f32_fn fn = isa->table->headwise_rmsnorm_f32;
    return [=] { fn(&layout, buffers.x, buffers.y, gamma_data, gamma.kind, kEps, nullptr); };
}

void bm_rmsnorm(benchmark::State &state, Shape shape, GammaVariant gamma, const KernelIsa *isa)
{
    if (sinkkit_bench::skip_unsupported(state, *isa))
        return;

    const RmsnormBuffers buffers = buffers_for(shape);
    const std::size_t n = element_count(shape);
    const bench_roofline &roofline = sinkkit_bench::widest_roofline();
    const std::function<void()> copy = [&] { roofline.copy(buffers.x, buffers.y, n); };

    const double bytes = kernel_bytes(shape, gamma.kind);
    const auto timing = sinkkit_bench::time_paired(state, rmsnorm_call(shape, gamma, isa), copy,
                                                   sinkkit_bench::calls_per_sample(bytes));
    sinkkit_bench::report_against_roofline(state, timing, bytes, copy_bytes(shape));
}

// The naive version against the scalar kernel, on the same buffers.
void bm_rmsnorm_naive(benchmark::State &state, Shape shape, GammaVariant gamma)
{
    const double bytes = kernel_bytes(shape, gamma.kind);
    const auto timing = sinkkit_bench::time_paired(state, rmsnorm_call(shape, gamma, nullptr),
                                                   rmsnorm_call(shape, gamma, &sinkkit_bench::scalar_kernel_isa()),
                                                   sinkkit_bench::calls_per_sample(bytes));
    sinkkit_bench::report_against_scalar(state, timing, bytes);
}

// memcpy of the same bytes, reported beside the copy roofline.
void bm_memcpy(benchmark::State &state, Shape shape)
{
    const RmsnormBuffers buffers = buffers_for(shape);
    const std::size_t n = element_count(shape);
    const bench_roofline &roofline = sinkkit_bench::widest_roofline();

    const std::function<void()> libc_copy = [&] {
        std::memcpy(buffers.y, buffers.x, n * sizeof(float));
        benchmark::ClobberMemory();
    };
    const std::function<void()> copy = [&] { roofline.copy(buffers.x, buffers.y, n); };

    const double bytes = copy_bytes(shape);
    const auto timing = sinkkit_bench::time_paired(state, libc_copy, copy, sinkkit_bench::calls_per_sample(bytes));
    sinkkit_bench::report_against_roofline(state, timing, bytes, bytes);
}

// Two worker threads owned by the benchmark. run() has each execute work(index) once and waits for both.
class WorkerPair {
  public:
    explicit WorkerPair(std::function<void(int)> work) : work_(std::move(work))
    {
        pthread_barrier_init(&start_, nullptr, 3);
        pthread_barrier_init(&done_, nullptr, 3);
        for (int i = 0; i < 2; i++) {
            args_[i] = {this, i};
            if (pthread_create(&threads_[i], nullptr, thread_main, &args_[i]) != 0) {
                std::perror("bench: pthread_create");
                std::exit(1);
            }
        }
    }

    ~WorkerPair()
    {
        stop_.store(true);
        pthread_barrier_wait(&start_);
        for (pthread_t thread : threads_)
            pthread_join(thread, nullptr);
        pthread_barrier_destroy(&start_);
        pthread_barrier_destroy(&done_);
    }

    WorkerPair(const WorkerPair &) = delete;
    WorkerPair &operator=(const WorkerPair &) = delete;

    void run()
    {
        pthread_barrier_wait(&start_);
        pthread_barrier_wait(&done_);
    }

  private:
    struct ThreadArg {
        WorkerPair *pair;
        int index;
    };

    static void *thread_main(void *opaque)
    {
        const ThreadArg *arg = static_cast<const ThreadArg *>(opaque);
        WorkerPair *pair = arg->pair;
        for (;;) {
            pthread_barrier_wait(&pair->start_);
            if (pair->stop_.load())
                return nullptr;
            pair->work_(arg->index);
            pthread_barrier_wait(&pair->done_);
        }
    }

    std::function<void(int)> work_;
    pthread_barrier_t start_;
    pthread_barrier_t done_;
    pthread_t threads_[2];
    ThreadArg args_[2];
    std::atomic<bool> stop_{false};
};

// Returns a hash of the bits of y[0..n), to compare two outputs without a second large buffer.
std::uint64_t hash_floats(const float *y, std::size_t n)
{
    std::uint64_t hash = 0xCBF29CE484222325ULL;
    for (std::size_t i = 0; i < n; i++) {
        std::uint32_t bits;
        std::memcpy(&bits, &y[i], sizeof bits);
        hash = (hash ^ bits) * 0x100000001B3ULL;
    }
    return hash;
}

// The tokens split in two halves, one per thread, against the whole call on one thread.
void bm_rmsnorm_two_threads(benchmark::State &state, Shape shape, const KernelIsa *isa)
{
    const RmsnormBuffers buffers = buffers_for(shape);
    const sinkkit_head_layout whole = token_major(shape);
    sinkkit_rmsnorm_f32_fn fn = isa->table->headwise_rmsnorm_f32;

    sinkkit_head_layout halves[2] = {whole, whole};
    halves[0].tokens = shape.tokens / 2;
    halves[1].tokens = shape.tokens - halves[0].tokens;
    const std::size_t second_offset = halves[0].tokens * whole.token_stride;
    const std::size_t offsets[2] = {0, second_offset};

    WorkerPair workers([&](int index) {
        fn(&halves[index], buffers.x + offsets[index], buffers.y + offsets[index], buffers.gamma,
           SINKKIT_GAMMA_SHARED, kEps, nullptr);
    });

    const std::function<void()> two_threads = [&] { workers.run(); };
    const std::function<void()> one_thread = [&] {
        fn(&whole, buffers.x, buffers.y, buffers.gamma, SINKKIT_GAMMA_SHARED, kEps, nullptr);
    };

    // Kernels must give bitwise the same output however the tokens are split, so a difference here
    // means the benchmark split the work wrongly.
    const std::size_t n = element_count(shape);
    one_thread();
    const std::uint64_t expected = hash_floats(buffers.y, n);
    two_threads();
    if (hash_floats(buffers.y, n) != expected) {
        state.SkipWithError("two-thread output differs from one-thread output");
        return;
    }

    const double bytes = kernel_bytes(shape, SINKKIT_GAMMA_SHARED);
    const auto timing = sinkkit_bench::time_paired(state, two_threads, one_thread, 1, false);
    state.SetBytesProcessed((std::int64_t)((double)state.iterations() * bytes));
    state.counters["ns_per_call"] = timing.mean_subject_seconds * 1e9;
    state.counters["speedup"] = timing.median_ratio > 0.0 ? 1.0 / timing.median_ratio : 0.0;
    state.counters["working_set"] = bytes;
}

void register_rmsnorm()
{
    for (const Shape &shape : kShapes) {
        for (const GammaVariant &gamma : kGammas) {
            const std::string family = std::string("rmsnorm_") + gamma.name;
            for (const KernelIsa &isa : sinkkit_bench::kernel_isas()) {
                sinkkit_bench::register_manual(family + "/" + isa.name + "/" + name_of(shape),
                                               [shape, gamma, &isa](benchmark::State &state) {
                                                   bm_rmsnorm(state, shape, gamma, &isa);
                                               });
            }
            sinkkit_bench::register_manual(family + "/naive/" + name_of(shape),
                                           [shape, gamma](benchmark::State &state) {
                                               bm_rmsnorm_naive(state, shape, gamma);
                                           });
        }
        sinkkit_bench::register_manual("copy/memcpy/" + name_of(shape),
                                       [shape](benchmark::State &state) { bm_memcpy(state, shape); });
    }

    const KernelIsa &widest = sinkkit_bench::widest_kernel_isa();
    sinkkit_bench::register_manual(std::string("rmsnorm_shared_2threads/") + widest.name + "/" +
                                       name_of(kTwoThreadShape),
                                   [&widest](benchmark::State &state) {
                                       bm_rmsnorm_two_threads(state, kTwoThreadShape, &widest);
                                   });
}

}  // namespace

int main(int argc, char **argv)
{
    return sinkkit_bench::run_main(argc, argv, register_rmsnorm);
}
