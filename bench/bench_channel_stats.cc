// Channel statistics per ISA against the read roofline and the naive two-loop version. For a single
// token the roofline also reads and writes the three statistics arrays once, because at that size
// they are most of the traffic.
#include "bench_support.h"

namespace {

using sinkkit_bench::KernelIsa;

struct Shape {
    std::size_t tokens;
    std::size_t channels;
};

// One decode token of a 4096-wide model, a prefill of a 14336-wide FFN, and of a 11008-wide one.
const Shape kShapes[] = {{1, 4096}, {512, 14336}, {4096, 11008}};

// Bytes of max_abs, argmax_token and sum_squares per channel.
const std::size_t kStatsBytesPerChannel = sizeof(float) + sizeof(std::uint64_t) + sizeof(double);

bool roofline_includes_stats(const Shape &shape)
{
    return shape.tokens == 1;
}

// Returns the bytes a call must move at least: read the input, and read and write the statistics.
double kernel_bytes(const Shape &shape)
{
    const double input_bytes = (double)(shape.tokens * shape.channels * sizeof(float));
    return input_bytes + (double)(2 * shape.channels * kStatsBytesPerChannel);
}

// Returns one call of isa's kernel on the shape's buffers, or of the naive version when isa is
// nullptr. Repeated calls fold the same tokens again. The statistics stay finite and every call
// does the same work, which is all a timing needs.
std::function<void()> channel_stats_call(const Shape &shape, const KernelIsa *isa)
{
    const float *a = sinkkit_bench::float_buffer("x", shape.tokens * shape.channels);
    const sinkkit_channel_stats stats = sinkkit_bench::stats_buffer("stats", shape.channels);

    if (isa == nullptr) {
        return [=] {
            bench_naive_channel_stats_f32(stats.max_abs, stats.argmax_token, stats.sum_squares, shape.channels, a,
                                          shape.tokens, shape.channels, 0);
        };
    }

    sinkkit_channel_stats_f32_fn fn = isa->table->channel_stats_update_f32;
    return [=] {
        fn(stats.max_abs, stats.argmax_token, stats.sum_squares, shape.channels, a, shape.tokens, shape.channels, 0);
    };
}

void bm_channel_stats(benchmark::State &state, Shape shape, const KernelIsa *isa)
{
    if (sinkkit_bench::skip_unsupported(state, *isa))
        return;

    const std::function<void()> kernel = channel_stats_call(shape, isa);
    const std::size_t n = shape.tokens * shape.channels;
    const float *a = sinkkit_bench::float_buffer("x", n);
    const sinkkit_channel_stats stats = sinkkit_bench::stats_buffer("stats", shape.channels);

    const bench_roofline &roofline = sinkkit_bench::widest_roofline();
    const bool with_stats = roofline_includes_stats(shape);
    const std::function<void()> read = [&roofline, a, n, stats, with_stats] {
        float sum = roofline.sum(a, n);
        benchmark::DoNotOptimize(sum);
        if (with_stats)
            roofline.touch_stats(stats.max_abs, stats.argmax_token, stats.sum_squares, stats.channels);
    };

    const double bytes = kernel_bytes(shape);
    const double roofline_bytes = with_stats ? bytes : (double)(n * sizeof(float));

    const auto timing = sinkkit_bench::time_paired(state, kernel, read, sinkkit_bench::calls_per_sample(bytes));
    sinkkit_bench::report_against_roofline(state, timing, bytes, roofline_bytes);
}

// The naive version against the scalar kernel, on the same buffers.
void bm_channel_stats_naive(benchmark::State &state, Shape shape)
{
    const double bytes = kernel_bytes(shape);
    const auto timing = sinkkit_bench::time_paired(state, channel_stats_call(shape, nullptr),
                                                   channel_stats_call(shape, &sinkkit_bench::scalar_kernel_isa()),
                                                   sinkkit_bench::calls_per_sample(bytes));
    sinkkit_bench::report_against_scalar(state, timing, bytes);
}

void register_channel_stats()
{
    for (const Shape &shape : kShapes) {
        const std::string shape_name = sinkkit_bench::shape_name({shape.tokens, shape.channels});
        for (const KernelIsa &isa : sinkkit_bench::kernel_isas()) {
            sinkkit_bench::register_manual("channel_stats/" + std::string(isa.name) + "/" + shape_name,
                                           [shape, &isa](benchmark::State &state) {
                                               bm_channel_stats(state, shape, &isa);
                                           });
        }
        sinkkit_bench::register_manual("channel_stats/naive/" + shape_name, [shape](benchmark::State &state) {
            bm_channel_stats_naive(state, shape);
        });
    }
}

}  // namespace

int main(int argc, char **argv)
{
    return sinkkit_bench::run_main(argc, argv, register_channel_stats);
}
