// The copy and read rooflines over a ladder of working-set sizes, from L1 to memory, for the plot.
#include <cstring>

#include "bench_support.h"

namespace {

// Working sets of 8 KiB to 256 MiB: x and y together for a copy, x alone for a read.
const std::size_t kSmallestWorkingSet = 8 * 1024;
const std::size_t kLargestWorkingSet = 256 * 1024 * 1024;

void bm_copy(benchmark::State &state, std::size_t working_set, bool use_memcpy)
{
    const std::size_t n = working_set / (2 * sizeof(float));
    const float *x = sinkkit_bench::float_buffer("sweep.x", n);
    float *y = sinkkit_bench::float_buffer("sweep.y", n);
    const bench_roofline &roofline = sinkkit_bench::widest_roofline();

    std::function<void()> copy;
    if (use_memcpy) {
        copy = [=] {
            std::memcpy(y, x, n * sizeof(float));
            benchmark::ClobberMemory();
        };
    } else {
        copy = [=, &roofline] { roofline.copy(x, y, n); };
    }

    const double bytes = (double)working_set;
    sinkkit_bench::time_alone(state, copy, sinkkit_bench::calls_per_sample(bytes), bytes);
}

void bm_read(benchmark::State &state, std::size_t working_set)
{
    const std::size_t n = working_set / sizeof(float);
    const float *x = sinkkit_bench::float_buffer("sweep.x", n);
    const bench_roofline &roofline = sinkkit_bench::widest_roofline();

    const std::function<void()> read = [=, &roofline] {
        float sum = roofline.sum(x, n);
        benchmark::DoNotOptimize(sum);
    };

    const double bytes = (double)working_set;
    sinkkit_bench::time_alone(state, read, sinkkit_bench::calls_per_sample(bytes), bytes);
}

void register_rooflines()
{
    const std::string isa = sinkkit_bench::widest_roofline().name;

    for (std::size_t size = kSmallestWorkingSet; size <= kLargestWorkingSet; size *= 2) {
        const std::string bytes = std::to_string(size);
        sinkkit_bench::register_manual("roofline_copy/" + isa + "/" + bytes,
                                       [size](benchmark::State &state) { bm_copy(state, size, false); });
        sinkkit_bench::register_manual("roofline_copy/memcpy/" + bytes,
                                       [size](benchmark::State &state) { bm_copy(state, size, true); });
        sinkkit_bench::register_manual("roofline_read/" + isa + "/" + bytes,
                                       [size](benchmark::State &state) { bm_read(state, size); });
    }
}

}  // namespace

int main(int argc, char **argv)
{
    return sinkkit_bench::run_main(argc, argv, register_rooflines);
}
