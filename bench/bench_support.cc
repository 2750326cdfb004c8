// Pieces shared by the benchmark programs: cached buffers, ISA lists, and timing against a baseline.
#include "bench_support.h"

#include <sys/resource.h>

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <utility>

namespace sinkkit_bench {

namespace {

// Minimum number of pairs free of context switches for the ratio to be taken from them alone.
const std::size_t kMinUndisturbedPairs = 3;

// Shortest sample, in seconds, around which the thread's CPU time is also read.
const double kCpuTimeMinSample = 1e-3;

struct FreeDeleter {
    void operator()(void *p) const { std::free(p); }
};

using Storage = std::unique_ptr<void, FreeDeleter>;

// Buffers by role and size in bytes. They are never freed, so pointers stay valid across benchmarks.
std::map<std::pair<std::string, std::size_t>, Storage> &buffer_cache()
{
    static std::map<std::pair<std::string, std::size_t>, Storage> cache;
    return cache;
}

// Returns 64-byte-aligned memory of bytes bytes for role, and whether it was just allocated.
std::pair<void *, bool> cached_bytes(const char *role, std::size_t bytes)
{
    auto key = std::make_pair(std::string(role), bytes);
    auto found = buffer_cache().find(key);
    if (found != buffer_cache().end())
        return {found->second.get(), false};

    const std::size_t rounded = (bytes + 63) / 64 * 64;
    void *memory = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    if (memory == nullptr) {
        std::fprintf(stderr, "bench: failed to allocate %zu bytes for buffer '%s'\n", bytes, role);
        std::exit(1);
    }
    buffer_cache().emplace(key, Storage(memory));
    return {memory, true};
}

// xorshift64*: fast, deterministic, and good enough for benchmark data.
std::uint64_t next_random(std::uint64_t &state)
{
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545F4914F6CDD1DULL;
}

// Returns the "model name" line of /proc/cpuinfo, or "unknown" where there is none.
std::string cpu_model_name()
{
    std::ifstream cpuinfo("/proc/cpuinfo");
    std::string line;
    while (std::getline(cpuinfo, line)) {
        if (line.rfind("model name", 0) == 0) {
            const std::size_t colon = line.find(':');
            if (colon != std::string::npos && colon + 2 <= line.size())
                return line.substr(colon + 2);
        }
    }
    return "unknown";
}

double median_of(std::vector<double> values)
{
    if (values.empty())
        return 0.0;
    const std::size_t middle = values.size() / 2;
    std::nth_element(values.begin(), values.begin() + middle, values.end());
    const double upper = values[middle];
    if (values.size() % 2 == 1)
        return upper;
    const double lower = *std::max_element(values.begin(), values.begin() + middle);
    return 0.5 * (lower + upper);
}

double seconds_for(const std::function<void()> &fn, std::size_t calls)
{
    const auto start = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < calls; i++)
        fn();
    const auto stop = std::chrono::steady_clock::now();
    return std::chrono::duration<double>(stop - start).count();
}

// Returns the CPU time the calling thread has used, in seconds. It is a system call (about a
// microsecond in a virtual machine), so it is read around samples that last milliseconds only.
double thread_cpu_seconds()
{
    struct timespec now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

// One timed sample: wall-clock seconds, and the thread's CPU seconds when cpu_time is set.
struct Sample {
    double wall;
    double cpu;
};

Sample sample_of(const std::function<void()> &fn, std::size_t calls, bool cpu_time)
{
    const double cpu_start = cpu_time ? thread_cpu_seconds() : 0.0;
    const double wall = seconds_for(fn, calls);
    const double cpu = cpu_time ? thread_cpu_seconds() - cpu_start : 0.0;
    return {wall, cpu};
}

// Returns how many times the scheduler has switched the calling thread out so far, or 0 where the
// count is not available (then every pair counts as undisturbed).
long context_switches()
{
#if defined(RUSAGE_THREAD)
    struct rusage usage;
    if (getrusage(RUSAGE_THREAD, &usage) == 0)
        return usage.ru_nvcsw + usage.ru_nivcsw;
#endif
    return 0;
}

// Returns the median ratio of the pairs during which the thread was never switched out, since the
// others also timed another process. When fewer than kMinUndisturbedPairs remain (long samples on a
// busy machine), returns the median ratio of the thread's CPU times instead. Those leave out the
// time spent switched out but still include the cache misses that the other process caused.
// Without CPU times, returns the median of all wall-clock ratios.
double choose_ratio(const std::vector<double> &undisturbed_ratios, const std::vector<double> &cpu_ratios,
                    const std::vector<double> &all_ratios)
{
    if (undisturbed_ratios.size() >= kMinUndisturbedPairs)
        return median_of(undisturbed_ratios);
    if (!cpu_ratios.empty())
        return median_of(cpu_ratios);
    return median_of(all_ratios);
}

// ISAs that an x86-64 or AArch64 build is expected to have, to explain the ones it lacks.
bool isa_expected_here(sinkkit_isa isa)
{
#if defined(__x86_64__)
    return isa == SINKKIT_ISA_AVX2 || isa == SINKKIT_ISA_AVX512;
#elif defined(__aarch64__)
    return isa == SINKKIT_ISA_NEON || isa == SINKKIT_ISA_SVE;
#else
    (void)isa;
    return false;
#endif
}

}  // namespace

float *float_buffer(const char *role, std::size_t count)
{
    auto [memory, fresh] = cached_bytes(role, count * sizeof(float));
    float *data = static_cast<float *>(memory);
    if (fresh) {
        std::uint64_t state = 0x9E3779B97F4A7C15ULL ^ count;
        for (std::size_t i = 0; i < count; i++) {
            const double unit = (double)(next_random(state) >> 11) * 0x1.0p-53;
            data[i] = (float)(4.0 * unit - 2.0);
        }
    }
    return data;
}

sinkkit_channel_stats stats_buffer(const char *role, std::size_t channels)
{
    const std::string name(role);
    sinkkit_channel_stats stats = {};
    stats.channels = channels;
    stats.max_abs = static_cast<float *>(cached_bytes((name + ".max_abs").c_str(), channels * sizeof(float)).first);
    stats.argmax_token = static_cast<std::uint64_t *>(
        cached_bytes((name + ".argmax_token").c_str(), channels * sizeof(std::uint64_t)).first);
    stats.sum_squares =
        static_cast<double *>(cached_bytes((name + ".sum_squares").c_str(), channels * sizeof(double)).first);
    sinkkit_channel_stats_reset(&stats);
    return stats;
}

const std::vector<KernelIsa> &kernel_isas()
{
    static const std::vector<KernelIsa> isas = [] {
        const sinkkit_isa order[] = {SINKKIT_ISA_SCALAR, SINKKIT_ISA_AVX2, SINKKIT_ISA_AVX512, SINKKIT_ISA_NEON,
                                     SINKKIT_ISA_SVE};
        std::vector<KernelIsa> list;
        for (sinkkit_isa isa : order) {
            const sinkkit_kernel_table *table = sinkkit_kernel_table_for(isa);
            if (table == nullptr) {
                if (isa_expected_here(isa))
                    std::fprintf(stderr, "bench: skipping %s: not compiled in (the compiler lacks its flags)\n",
                                 sinkkit_isa_name(isa));
                continue;
            }
            list.push_back({isa, sinkkit_isa_name(isa), table, sinkkit_isa_supported(isa)});
        }
        return list;
    }();
    return isas;
}

const KernelIsa &scalar_kernel_isa()
{
    return kernel_isas().front();
}

const KernelIsa &widest_kernel_isa()
{
    const KernelIsa *widest = &kernel_isas().front();
    for (const KernelIsa &isa : kernel_isas()) {
        if (isa.supported)
            widest = &isa;
    }
    return *widest;
}

const bench_roofline &widest_roofline()
{
#if defined(SINKKIT_HAVE_AVX512)
    if (sinkkit_isa_supported(SINKKIT_ISA_AVX512))
        return bench_roofline_avx512;
#endif
#if defined(SINKKIT_HAVE_AVX2)
    if (sinkkit_isa_supported(SINKKIT_ISA_AVX2))
        return bench_roofline_avx2;
#endif
    return bench_roofline_generic;
}

bool skip_unsupported(benchmark::State &state, const KernelIsa &isa)
{
    if (isa.supported)
        return false;
    const std::string message = std::string(isa.name) + " not supported by this CPU";
    state.SkipWithError(message.c_str());
    return true;
}

std::string shape_name(std::initializer_list<std::size_t> dims)
{
    std::string name;
    for (std::size_t dim : dims) {
        if (!name.empty())
            name += 'x';
        name += std::to_string(dim);
    }
    return name;
}

std::size_t calls_per_sample(double bytes_per_call)
{
    const double target_bytes = 4.0 * 1024.0 * 1024.0;
    if (bytes_per_call >= target_bytes)
        return 1;
    return (std::size_t)(target_bytes / bytes_per_call + 0.5);
}

PairedTiming time_paired(benchmark::State &state, const std::function<void()> &subject,
                         const std::function<void()> &baseline, std::size_t calls, bool single_thread)
{
    // One untimed call of each warms the caches and the branch predictors the same way. Their
    // durations decide whether samples are long enough for the CPU clock's cost not to matter.
    const double shortest = std::min(sample_of(subject, 1, false).wall, sample_of(baseline, 1, false).wall);
    const bool cpu_time = single_thread && shortest * (double)calls >= kCpuTimeMinSample;

    std::vector<double> all_ratios;
    std::vector<double> undisturbed_ratios;
    std::vector<double> cpu_ratios;
    double subject_total = 0.0;
    double baseline_total = 0.0;
    bool subject_first = true;

    for (auto _ : state) {
        const long switches_before = context_switches();
        Sample subject_sample;
        Sample baseline_sample;
        if (subject_first) {
            subject_sample = sample_of(subject, calls, cpu_time);
            baseline_sample = sample_of(baseline, calls, cpu_time);
        } else {
            baseline_sample = sample_of(baseline, calls, cpu_time);
            subject_sample = sample_of(subject, calls, cpu_time);
        }
        subject_first = !subject_first;

        state.SetIterationTime(subject_sample.wall);
        all_ratios.push_back(subject_sample.wall / baseline_sample.wall);
        if (context_switches() == switches_before)
            undisturbed_ratios.push_back(subject_sample.wall / baseline_sample.wall);
        if (cpu_time)
            cpu_ratios.push_back(subject_sample.cpu / baseline_sample.cpu);
        subject_total += subject_sample.wall;
        baseline_total += baseline_sample.wall;
    }

    const double samples = (double)std::max<std::int64_t>(state.iterations(), 1);
    PairedTiming timing;
    // With other threads at work, the waiting thread's context switches and CPU time do not
    // measure the work.
    timing.median_ratio = single_thread ? choose_ratio(undisturbed_ratios, cpu_ratios, all_ratios)
                                        : median_of(all_ratios);
    timing.undisturbed_pairs = undisturbed_ratios.size();
    timing.mean_subject_seconds = subject_total / (samples * (double)calls);
    timing.mean_baseline_seconds = baseline_total / (samples * (double)calls);
    timing.calls = calls;
    return timing;
}

void time_alone(benchmark::State &state, const std::function<void()> &fn, std::size_t calls, double bytes)
{
    fn();
    double total = 0.0;
    for (auto _ : state) {
        const double seconds = seconds_for(fn, calls);
        state.SetIterationTime(seconds);
        total += seconds;
    }

    const double total_calls = (double)state.iterations() * (double)calls;
    state.SetBytesProcessed((std::int64_t)(total_calls * bytes));
    state.counters["ns_per_call"] = total_calls > 0.0 ? total / total_calls * 1e9 : 0.0;
    state.counters["working_set"] = bytes;
}

void report_against_roofline(benchmark::State &state, const PairedTiming &timing, double subject_bytes,
                             double roofline_bytes)
{
    state.SetBytesProcessed((std::int64_t)((double)state.iterations() * (double)timing.calls * subject_bytes));
    state.counters["roofline_ratio"] = timing.median_ratio;
    state.counters["roofline_GBps"] =
        timing.mean_baseline_seconds > 0.0 ? roofline_bytes / timing.mean_baseline_seconds * 1e-9 : 0.0;
    state.counters["ns_per_call"] = timing.mean_subject_seconds * 1e9;
    state.counters["undisturbed_pairs"] = (double)timing.undisturbed_pairs;
    state.counters["working_set"] = subject_bytes;
}

void report_against_scalar(benchmark::State &state, const PairedTiming &timing, double bytes)
{
    state.SetBytesProcessed((std::int64_t)((double)state.iterations() * (double)timing.calls * bytes));
    state.counters["scalar_speedup"] = timing.median_ratio;
    state.counters["ns_per_call"] = timing.mean_subject_seconds * 1e9;
    state.counters["undisturbed_pairs"] = (double)timing.undisturbed_pairs;
    state.counters["working_set"] = bytes;
}

benchmark::internal::Benchmark *register_manual(const std::string &name,
                                                std::function<void(benchmark::State &)> fn)
{
    return benchmark::RegisterBenchmark(name.c_str(), std::move(fn))
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
}

int run_main(int argc, char **argv, void (*register_benchmarks)())
{
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;

    benchmark::AddCustomContext("cpu_model", cpu_model_name());
    benchmark::AddCustomContext("sinkkit_version", sinkkit_version());
    benchmark::AddCustomContext("sinkkit_widest_isa", widest_kernel_isa().name);
    benchmark::AddCustomContext("roofline_isa", widest_roofline().name);

    register_benchmarks();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}

}  // namespace sinkkit_bench
