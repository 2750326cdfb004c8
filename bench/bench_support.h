// Pieces shared by the benchmark programs: cached buffers, ISA lists, and timing against a baseline.
#ifndef SINKKIT_BENCH_SUPPORT_H
#define SINKKIT_BENCH_SUPPORT_H

#include <benchmark/benchmark.h>

#include <cstddef>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

extern "C" {
#include "kernels.h"
}
#include "naive.h"
#include "roofline.h"

namespace sinkkit_bench {

// Returns count floats for role, uniform in [-2, 2) from a fixed seed. The memory is allocated and
// written (so every page is touched) on first use and kept for the life of the process: every
// benchmark of a shape, whatever its ISA, runs on the same buffers.
float *float_buffer(const char *role, std::size_t count);

// Returns the cached channel-statistics arrays of role, reset by sinkkit_channel_stats_reset.
sinkkit_channel_stats stats_buffer(const char *role, std::size_t channels);

// A kernel ISA compiled into this build.
struct KernelIsa {
    sinkkit_isa isa;
    const char *name;
    const sinkkit_kernel_table *table;
    bool supported;  // the CPU and OS can run it
};

// Returns the compiled-in ISAs, scalar first. ISAs of this architecture that the build lacks are
// listed on stderr once, with the reason.
const std::vector<KernelIsa> &kernel_isas();

// Returns the scalar kernels, which every build has and every CPU runs.
const KernelIsa &scalar_kernel_isa();

// Returns the widest kernel ISA this CPU runs.
const KernelIsa &widest_kernel_isa();

// Returns the roofline loops of the widest ISA this CPU runs (AVX-512, then AVX2, then plain C).
const bench_roofline &widest_roofline();

// Skips the benchmark with a message when the CPU lacks isa. Returns true when it skipped.
bool skip_unsupported(benchmark::State &state, const KernelIsa &isa);

// Returns "512x32x128" for {512, 32, 128}.
std::string shape_name(std::initializer_list<std::size_t> dims);

// How many calls one timed sample makes: enough to move about 4 MiB, so that the clock reads
// (tens of nanoseconds) stay far below 1% of the sample, and at least one.
std::size_t calls_per_sample(double bytes_per_call);

struct PairedTiming {
    double median_ratio;             // median over pairs of subject time / baseline time
    double mean_subject_seconds;     // per call
    double mean_baseline_seconds;    // per call
    std::size_t calls;               // calls per sample
    std::size_t undisturbed_pairs;   // pairs during which the thread was never switched out
};

// Times subject and baseline alternately: every benchmark iteration times one sample of each
// (calls calls back to back), swapping which goes first so that neither always runs on the cache
// state the other left. The iteration time given to the library is the subject's sample, so the
// Time column is per sample, not per call. The ratio of each pair is taken while the machine is in
// the same state for both. Pairs during which the scheduler switched the thread out are left out
// when at least 3 others remain. Otherwise the thread's CPU times are compared, for samples of 1 ms
// or more. The median over the pairs discards what interrupts and other tenants' cache and memory
// traffic disturbed. single_thread is false when subject or baseline hands work to other threads,
// and then the median of all wall-clock ratios is used.
PairedTiming time_paired(benchmark::State &state, const std::function<void()> &subject,
                         const std::function<void()> &baseline, std::size_t calls, bool single_thread = true);

// Times fn alone, calls calls per iteration, and sets bytes_per_second, ns_per_call and working_set
// (bytes per call). The roofline sweep uses it because it has nothing to pair with.
void time_alone(benchmark::State &state, const std::function<void()> &fn, std::size_t calls, double bytes);

// Sets bytes_per_second from subject_bytes per call and the user counters roofline_ratio (the
// median time ratio against the roofline), roofline_GBps, ns_per_call, undisturbed_pairs and
// working_set (bytes per call).
void report_against_roofline(benchmark::State &state, const PairedTiming &timing, double subject_bytes,
                             double roofline_bytes);

// Reports the naive version (the subject) against the scalar kernel (the baseline). Sets
// bytes_per_second from bytes per call and the user counters ns_per_call, undisturbed_pairs,
// working_set and scalar_speedup. The last is the median of naive time / scalar time, which is how
// many times faster the scalar kernel is.
void report_against_scalar(benchmark::State &state, const PairedTiming &timing, double bytes);

// Registers fn under name, timed manually, in microseconds.
benchmark::internal::Benchmark *register_manual(const std::string &name,
                                                std::function<void(benchmark::State &)> fn);

// Parses the Google Benchmark flags, records the CPU and the ISAs in the JSON context, registers the
// benchmarks and runs them.
int run_main(int argc, char **argv, void (*register_benchmarks)());

}  // namespace sinkkit_bench

#endif  // SINKKIT_BENCH_SUPPORT_H
