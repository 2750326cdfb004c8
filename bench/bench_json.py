"""Reads the Google Benchmark JSON files that the sinkkit benchmark programs write.

Each benchmark is named family/implementation/shape (for example rmsnorm_shared/avx512/512x32x128),
with /manual_time appended by Google Benchmark. Every repetition is kept, so callers can take the
median and the spread themselves whether or not the run wrote aggregate rows.
"""

import json
import statistics


class Result:
    """The repetitions of one benchmark: family, implementation, shape and per-repetition values."""

    def __init__(self, family, impl, shape):
        self.family = family
        self.impl = impl
        self.shape = shape
        self.values = {}  # field name -> list with one value per repetition
        self.error = None  # Google Benchmark's error message when the benchmark was skipped

    def add(self, field, value):
        self.values.setdefault(field, []).append(float(value))

    def median(self, field):
        """Returns the median over repetitions of field, or None when no repetition reported it."""
        values = self.values.get(field)
        return statistics.median(values) if values else None

    def spread(self, field):
        """Returns (min, max) over repetitions of field, or None."""
        values = self.values.get(field)
        return (min(values), max(values)) if values else None

    def repetitions(self, field):
        return len(self.values.get(field, []))


def split_name(run_name):
    """Returns (family, impl, shape) from a benchmark name, or None for a name of another form."""
    parts = [part for part in run_name.split("/") if part != "manual_time"]
    if len(parts) != 3:
        return None
    return tuple(parts)


def load(paths):
    """Reads the JSON files in paths. Returns (contexts, results): the context objects in file order,
    and a dict from (family, impl, shape) to Result, in the order the benchmarks first appear."""
    contexts = []
    results = {}
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
        contexts.append(document.get("context", {}))

        for entry in document.get("benchmarks", []):
            if entry.get("run_type", "iteration") != "iteration":
                continue
            key = split_name(entry.get("run_name", entry["name"]))
            if key is None:
                continue
            result = results.setdefault(key, Result(*key))

            if entry.get("error_occurred"):
                result.error = entry.get("error_message", "skipped")
                continue
            for field in ("bytes_per_second", "roofline_ratio", "roofline_GBps", "scalar_speedup", "speedup",
                          "ns_per_call", "undisturbed_pairs", "working_set", "real_time"):
                if field in entry:
                    result.add(field, entry[field])
    return contexts, results


def describe_machine(contexts):
    """Returns a one-line description of the machine from the first context: CPU model, core count and
    cache sizes, as Google Benchmark and the programs recorded them."""
    if not contexts:
        return "unknown machine"
    context = contexts[0]
    caches = []
    for cache in context.get("caches", []):
        if cache.get("type") == "Instruction":
            continue
        caches.append("L%d %s" % (cache["level"], format_bytes(cache["size"])))
    return "%s, %s CPUs, %s" % (context.get("cpu_model", "unknown CPU"), context.get("num_cpus", "?"),
                                ", ".join(caches))


def format_bytes(size):
    """Returns size in bytes as 512B, 48K, 2M or 1G (binary units)."""
    size = float(size)
    for unit in ("B", "K", "M", "G"):
        if size < 1024 or unit == "G":
            text = ("%.1f" % size).rstrip("0").rstrip(".")
            return text + unit
        size /= 1024
    return str(size)
