// Head-wise RMSNorm per ISA against the copy roofline (x to y on the same buffers), the naive two-loop
// version, memcpy, a two-thread split of the tokens, the public entry point with non-temporal stores
// against the copy roofline, and the cost of the public entry point over a direct kernel call.
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

// 64 MiB each of x and y, far above the last-level cache, where skipping the read of each output line pays.
const Shape kStreamingShape = {4096, 32, 128};

// One token, one head of 16 floats: the kernel does almost nothing, so the time left is the argument
// checks and the dispatch of the public entry point.
const Shape kApiOverheadShape = {1, 1, 16};

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

// Returns true after skipping the benchmark with "call_name: status message" when status is not SINKKIT_OK.
bool skip_on_error(benchmark::State &state, sinkkit_status status, const char *call_name)
{
    if (status == SINKKIT_OK)
        return false;
    const std::string message = std::string(call_name) + ": " + sinkkit_status_message(status);
    state.SkipWithError(message.c_str());
    return true;
}

// Selects one ISA for the public entry points for the life of the object, then restores the choice
// that was in effect before. sinkkit_set_isa(SINKKIT_ISA_AUTO) restores the automatic choice only when
// that choice was the best ISA. An automatic choice capped by SINKKIT_ISA cannot be restored, so the
// capped ISA is selected by call instead.
class IsaSelection {
  public:
    explicit IsaSelection(sinkkit_isa isa)
    {
        status_ = sinkkit_get_dispatch_info(&previous_);
        if (status_ == SINKKIT_OK)
            status_ = sinkkit_set_isa(isa);
    }

    ~IsaSelection()
    {
        if (status_ != SINKKIT_OK)
            return;  // the selection was left as it was
        const bool was_automatic = !previous_.set_by_call && previous_.active == previous_.best;
        const sinkkit_isa restore = was_automatic ? SINKKIT_ISA_AUTO : previous_.active;
        if (sinkkit_set_isa(restore) != SINKKIT_OK)
            std::fprintf(stderr, "bench: failed to restore ISA %s\n", sinkkit_isa_name(restore));
    }

    IsaSelection(const IsaSelection &) = delete;
    IsaSelection &operator=(const IsaSelection &) = delete;

    sinkkit_status status() const { return status_; }

  private:
    sinkkit_dispatch_info previous_ = {};
    sinkkit_status status_;
};

// Sets the streaming threshold for the life of the object, then sets back the value in effect before.
// That value is never 0 (the request for the default), so setting it again restores it exactly.
class StreamingThreshold {
  public:
    explicit StreamingThreshold(std::size_t bytes) : previous_(sinkkit_streaming_threshold())
    {
        status_ = sinkkit_set_streaming_threshold(bytes);
        if (status_ == SINKKIT_OK && sinkkit_streaming_threshold() != bytes)
            status_ = SINKKIT_ERROR_INVALID_VALUE;  // another thread changed it, or 0 was requested
    }

    ~StreamingThreshold() { sinkkit_set_streaming_threshold(previous_); }

    StreamingThreshold(const StreamingThreshold &) = delete;
    StreamingThreshold &operator=(const StreamingThreshold &) = delete;

    sinkkit_status status() const { return status_; }

  private:
    std::size_t previous_;
    sinkkit_status status_;
};

// Returns one call of the public sinkkit_headwise_rmsnorm_f32 with a shared gamma on the shape's
// buffers. A status other than SINKKIT_OK is stored in *failure, which the caller checks after timing.
std::function<void()> public_rmsnorm_call(const Shape &shape, sinkkit_status *failure)
{
    const RmsnormBuffers buffers = buffers_for(shape);
    const sinkkit_head_layout layout = token_major(shape);
    return [=] {
        const sinkkit_status status = sinkkit_headwise_rmsnorm_f32(&layout, buffers.x, buffers.y, buffers.gamma,
                                                                   SINKKIT_GAMMA_SHARED, kEps, nullptr);
        if (status != SINKKIT_OK)
            *failure = status;
    };
}

// Runs isa's ordinary kernel and then the public call once each and compares their outputs bitwise,
// because sinkkit.h promises the same bits from streaming and ordinary stores. Returns false after
// skipping the benchmark when the public call failed or the outputs differ.
bool public_call_matches_kernel(benchmark::State &state, const Shape &shape, const KernelIsa &isa,
                                const std::function<void()> &public_call, const sinkkit_status &failure)
{
    const float *y = buffers_for(shape).y;
    const std::size_t n = element_count(shape);

    rmsnorm_call(shape, {SINKKIT_GAMMA_SHARED, "shared"}, &isa)();
    const std::uint64_t expected = hash_floats(y, n);
    public_call();
    if (skip_on_error(state, failure, "sinkkit_headwise_rmsnorm_f32"))
        return false;
    if (hash_floats(y, n) != expected) {
        state.SkipWithError("public call output differs from the ordinary kernel's output");
        return false;
    }
    return true;
}

// The public entry point with the streaming threshold below the output span, so that it writes y
// with non-temporal stores, against the ordinary-store copy roofline that bm_rmsnorm uses.
void bm_rmsnorm_streaming(benchmark::State &state, Shape shape, const KernelIsa *isa)
{
    if (sinkkit_bench::skip_unsupported(state, *isa))
        return;

    const IsaSelection selection(isa->isa);
    if (skip_on_error(state, selection.status(), "sinkkit_set_isa"))
        return;
    // Any threshold below the output span selects streaming, and half of the span leaves a wide margin.
    const std::size_t output_bytes = element_count(shape) * sizeof(float);
    const StreamingThreshold threshold(output_bytes / 2);
    if (skip_on_error(state, threshold.status(), "sinkkit_set_streaming_threshold"))
        return;

    sinkkit_status failure = SINKKIT_OK;
    const std::function<void()> streaming = public_rmsnorm_call(shape, &failure);
    if (!public_call_matches_kernel(state, shape, *isa, streaming, failure))
        return;

    const RmsnormBuffers buffers = buffers_for(shape);
    const std::size_t n = element_count(shape);
    const bench_roofline &roofline = sinkkit_bench::widest_roofline();
    const std::function<void()> copy = [&] { roofline.copy(buffers.x, buffers.y, n); };

    const double bytes = kernel_bytes(shape, SINKKIT_GAMMA_SHARED);
    const auto timing = sinkkit_bench::time_paired(state, streaming, copy, sinkkit_bench::calls_per_sample(bytes));
    if (skip_on_error(state, failure, "sinkkit_headwise_rmsnorm_f32"))
        return;
    sinkkit_bench::report_against_roofline(state, timing, bytes, copy_bytes(shape));
}

// A bare non-temporal copy of the shape's bytes against the ordinary-store copy, both of the widest
// ISA: the floor, up to noise, for any kernel that streams y, shown beside the streaming row.
void bm_copy_streaming(benchmark::State &state, Shape shape)
{
    const bench_roofline &roofline = sinkkit_bench::widest_roofline();
    if (roofline.copy_streaming == nullptr) {
        state.SkipWithError("the widest roofline has no non-temporal copy");
        return;
    }

    const RmsnormBuffers buffers = buffers_for(shape);
    const std::size_t n = element_count(shape);
    const std::function<void()> streaming_copy = [&] { roofline.copy_streaming(buffers.x, buffers.y, n); };
    const std::function<void()> copy = [&] { roofline.copy(buffers.x, buffers.y, n); };

    const double bytes = copy_bytes(shape);
    const auto timing = sinkkit_bench::time_paired(state, streaming_copy, copy, sinkkit_bench::calls_per_sample(bytes));
    sinkkit_bench::report_against_roofline(state, timing, bytes, bytes);
}

// The public entry point against isa's ordinary kernel called through its table, on a vector so
// small that the ratio measures the argument checks and the dispatch. Streaming is disabled, so
// that both run the same kernel whatever SINKKIT_STREAMING_THRESHOLD sets. Sets api_ratio (median of
// public time / direct time), ns_per_call (public call) and kernel_ns_per_call (direct call).
void bm_api_overhead(benchmark::State &state, Shape shape, const KernelIsa *isa)
{
    if (sinkkit_bench::skip_unsupported(state, *isa))
        return;

    const IsaSelection selection(isa->isa);
    if (skip_on_error(state, selection.status(), "sinkkit_set_isa"))
        return;
    const StreamingThreshold threshold(SIZE_MAX);
    if (skip_on_error(state, threshold.status(), "sinkkit_set_streaming_threshold"))
        return;

    sinkkit_status failure = SINKKIT_OK;
    const std::function<void()> public_call = public_rmsnorm_call(shape, &failure);
    if (!public_call_matches_kernel(state, shape, *isa, public_call, failure))
        return;
    const std::function<void()> direct_call = rmsnorm_call(shape, {SINKKIT_GAMMA_SHARED, "shared"}, isa);

    const double bytes = kernel_bytes(shape, SINKKIT_GAMMA_SHARED);
    const auto timing =
        sinkkit_bench::time_paired(state, public_call, direct_call, sinkkit_bench::calls_per_sample(bytes));
    if (skip_on_error(state, failure, "sinkkit_headwise_rmsnorm_f32"))
        return;

    state.SetBytesProcessed((std::int64_t)((double)state.iterations() * (double)timing.calls * bytes));
    state.counters["api_ratio"] = timing.median_ratio;
    state.counters["ns_per_call"] = timing.mean_subject_seconds * 1e9;
    state.counters["kernel_ns_per_call"] = timing.mean_baseline_seconds * 1e9;
    state.counters["undisturbed_pairs"] = (double)timing.undisturbed_pairs;
    state.counters["working_set"] = bytes;
}

void register_public_api()
{
    for (const KernelIsa &isa : sinkkit_bench::kernel_isas()) {
        if (isa.table->headwise_rmsnorm_f32_streaming == nullptr)
            continue;
        sinkkit_bench::register_manual(std::string("rmsnorm_shared_streaming/") + isa.name + "/" +
                                           name_of(kStreamingShape),
                                       [&isa](benchmark::State &state) {
                                           bm_rmsnorm_streaming(state, kStreamingShape, &isa);
                                       });
    }
    sinkkit_bench::register_manual(std::string("copy_streaming/") + sinkkit_bench::widest_roofline().name + "/" +
                                       name_of(kStreamingShape),
                                   [](benchmark::State &state) { bm_copy_streaming(state, kStreamingShape); });
    for (const KernelIsa &isa : sinkkit_bench::kernel_isas()) {
        sinkkit_bench::register_manual(std::string("api_overhead/") + isa.name + "/" + name_of(kApiOverheadShape),
                                       [&isa](benchmark::State &state) {
                                           bm_api_overhead(state, kApiOverheadShape, &isa);
                                       });
    }
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
    register_public_api();
}

}  // namespace

int main(int argc, char **argv)
{
    return sinkkit_bench::run_main(argc, argv, register_rmsnorm);
}
