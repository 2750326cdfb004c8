// Row and head moments per ISA against the read roofline (a sum of the same bytes) and the naive
// two-loop version.
#include "bench_support.h"

namespace {

using sinkkit_bench::KernelIsa;

struct RowShape {
    std::size_t rows;
    std::size_t cols;
};

// One token of a 4096-wide model, a prefill of it, and a prefill of a 11008-wide FFN activation.
const RowShape kRowShapes[] = {{1, 4096}, {512, 4096}, {4096, 11008}};

struct HeadShape {
    std::size_t tokens;
    std::size_t heads;
    std::size_t head_dim;
};

const HeadShape kHeadShapes[] = {{512, 32, 128}};

// Sums the bytes with the widest roofline loop; the result is kept so the loads cannot be dropped.
std::function<void()> read_roofline(const float *x, std::size_t n)
{
    const bench_roofline &roofline = sinkkit_bench::widest_roofline();
    return [&roofline, x, n] {
        float sum = roofline.sum(x, n);
        benchmark::DoNotOptimize(sum);
    };
}

// Returns one call of isa's kernel on the shape's buffers, or of the naive version when isa is
// nullptr.
std::function<void()> row_moments_call(const RowShape &shape, const KernelIsa *isa)
{
    const float *x = sinkkit_bench::float_buffer("x", shape.rows * shape.cols);
    float *mean = sinkkit_bench::float_buffer("mean", shape.rows);
    float *variance = sinkkit_bench::float_buffer("variance", shape.rows);

    if (isa == nullptr)
        return [=] { bench_naive_row_moments_f32(x, shape.rows, shape.cols, shape.cols, mean, variance); };

    sinkkit_row_moments_f32_fn fn = isa->table->row_moments_f32;
    return [=] { fn(x, shape.rows, shape.cols, shape.cols, mean, variance, 0); };
}

void bm_row_moments(benchmark::State &state, RowShape shape, const KernelIsa *isa)
{
    if (sinkkit_bench::skip_unsupported(state, *isa))
        return;

    const std::size_t n = shape.rows * shape.cols;
    const double bytes = (double)(n * sizeof(float));
    const float *x = sinkkit_bench::float_buffer("x", n);
    const auto timing = sinkkit_bench::time_paired(state, row_moments_call(shape, isa), read_roofline(x, n),
                                                   sinkkit_bench::calls_per_sample(bytes));
    sinkkit_bench::report_against_roofline(state, timing, bytes, bytes);
}

// The naive version against the scalar kernel, on the same buffers.
void bm_row_moments_naive(benchmark::State &state, RowShape shape)
{
    const double bytes = (double)(shape.rows * shape.cols * sizeof(float));
    const auto timing = sinkkit_bench::time_paired(state, row_moments_call(shape, nullptr),
                                                   row_moments_call(shape, &sinkkit_bench::scalar_kernel_isa()),
                                                   sinkkit_bench::calls_per_sample(bytes));
    sinkkit_bench::report_against_scalar(state, timing, bytes);
}

// Returns one call of the public head-moments entry point, which runs the ISA that
// sinkkit_set_isa selected, or of the naive version when naive is set.
std::function<void()> head_moments_call(const HeadShape &shape, bool naive)
{
    const float *x = sinkkit_bench::float_buffer("x", shape.tokens * shape.heads * shape.head_dim);
    float *mean = sinkkit_bench::float_buffer("mean", shape.tokens * shape.heads);
    float *variance = sinkkit_bench::float_buffer("variance", shape.tokens * shape.heads);

    sinkkit_head_layout layout = {};
    layout.tokens = shape.tokens;
    layout.heads = shape.heads;
    layout.head_dim = shape.head_dim;
    layout.token_stride = shape.heads * shape.head_dim;
    layout.head_stride = shape.head_dim;

    if (naive)
        return [=] { bench_naive_head_moments_f32(&layout, x, mean, variance); };
    return [=] { sinkkit_head_moments_f32(&layout, x, mean, variance, 0); };
}

// Selects isa for the public entry points. Skips the benchmark and returns false when that fails.
bool select_isa(benchmark::State &state, const KernelIsa &isa)
{
    if (sinkkit_set_isa(isa.isa) == SINKKIT_OK)
        return true;
    const std::string message = std::string("sinkkit_set_isa(") + isa.name + ") failed";
    state.SkipWithError(message.c_str());
    return false;
}

// The ISA is chosen with sinkkit_set_isa and the public entry point is timed, because head moments
// have no kernel-table entry of their own. This is the path callers get.
void bm_head_moments(benchmark::State &state, HeadShape shape, const KernelIsa *isa)
{
    if (sinkkit_bench::skip_unsupported(state, *isa) || !select_isa(state, *isa))
        return;

    const std::size_t n = shape.tokens * shape.heads * shape.head_dim;
    const double bytes = (double)(n * sizeof(float));
    const float *x = sinkkit_bench::float_buffer("x", n);
    const auto timing = sinkkit_bench::time_paired(state, head_moments_call(shape, false), read_roofline(x, n),
                                                   sinkkit_bench::calls_per_sample(bytes));
    sinkkit_bench::report_against_roofline(state, timing, bytes, bytes);
    sinkkit_set_isa(SINKKIT_ISA_AUTO);
}

// The naive version against the scalar path of the public entry point, on the same buffers.
void bm_head_moments_naive(benchmark::State &state, HeadShape shape)
{
    if (!select_isa(state, sinkkit_bench::scalar_kernel_isa()))
        return;

    const double bytes = (double)(shape.tokens * shape.heads * shape.head_dim * sizeof(float));
    const auto timing = sinkkit_bench::time_paired(state, head_moments_call(shape, true),
                                                   head_moments_call(shape, false),
                                                   sinkkit_bench::calls_per_sample(bytes));
    sinkkit_bench::report_against_scalar(state, timing, bytes);
    sinkkit_set_isa(SINKKIT_ISA_AUTO);
}

void register_moments()
{
    for (const RowShape &shape : kRowShapes) {
        const std::string shape_name = sinkkit_bench::shape_name({shape.rows, shape.cols});
        for (const KernelIsa &isa : sinkkit_bench::kernel_isas()) {
            sinkkit_bench::register_manual("row_moments/" + std::string(isa.name) + "/" + shape_name,
                                           [shape, &isa](benchmark::State &state) {
                                               bm_row_moments(state, shape, &isa);
                                           });
        }
        sinkkit_bench::register_manual("row_moments/naive/" + shape_name, [shape](benchmark::State &state) {
            bm_row_moments_naive(state, shape);
        });
    }

    for (const HeadShape &shape : kHeadShapes) {
        const std::string shape_name = sinkkit_bench::shape_name({shape.tokens, shape.heads, shape.head_dim});
        for (const KernelIsa &isa : sinkkit_bench::kernel_isas()) {
            sinkkit_bench::register_manual("head_moments/" + std::string(isa.name) + "/" + shape_name,
                                           [shape, &isa](benchmark::State &state) {
                                               bm_head_moments(state, shape, &isa);
                                           });
        }
        sinkkit_bench::register_manual("head_moments/naive/" + shape_name, [shape](benchmark::State &state) {
            bm_head_moments_naive(state, shape);
        });
    }
}

}  // namespace

int main(int argc, char **argv)
{
    return sinkkit_bench::run_main(argc, argv, register_moments);
}
