"""Renders a bench JSON (python3 benchmarks/bench.py --out DIR or --json PATH)
as a Markdown table: the one in benchmarks/RESULTS_CPU.md, and the one
benchmarks/gpu_check.sh writes to summary.md.

    python3 benchmarks/render_table.py benchmarks/results/bench_cpu.json
"""
import json
import sys


def milliseconds(value):
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def render(run):
    m = run["machine"]
    hardware = f"{m['gpu']} (CUDA {m.get('cuda')}), " if m.get("gpu") else ""
    lines = [f"Command: `{run['command']}`  ",
             f"Started {run['started_utc']} UTC, {run['seconds']:.0f} s; {run['device']}, {run['threads']} threads, "
             f"{run['rounds']} rounds x {run['min_run_time'] / run['rounds']:.2f} s per implementation; {hardware}"
             f"{m.get('cpu_model')} (nproc {m['nproc']}, torch CPU capability {m['cpu_capability']}); "
             f"torch {m['torch']}, Python {m['python']}; 1-min load average {run['load_average_1min']['start']:.1f} "
             f"at start, {run['load_average_1min']['end']:.1f} at end.", ""]
    with_ceiling = any("ceiling_gbps" in r for r in run["results"])  # older runs did not record it per row
    ceiling_head, ceiling_rule = (" ceiling GB/s |", "---:|") if with_ceiling else ("", "")
    lines += [f"| workload | dtype | optimizer + schedule | implementation | ms/step (median) | IQR ms | GB/s |"
              f"{ceiling_head} share of add_ ceiling | time / ours | load |",
              f"|---|---|---|---|---:|---:|---:|{ceiling_rule}---:|---:|---:|"]
    for r in run["results"]:
        name = f"{r['optimizer']} + {r['schedule']}"
        if "error" in r:
            lines.append(f"| {r['workload']} | {r['dtype']} | {name} | {r['impl']} | n/a: {r['error']} | | |"
                         f"{' |' if with_ceiling else ''} | | |")
            continue
        ratio = "" if r["time_over_ours"] is None else f"{r['time_over_ours']:.2f}"
        impl = f"**{r['impl']}**" if r["impl"] == "ours" else r["impl"]
        ceiling = f" {r['ceiling_gbps']:.1f} |" if with_ceiling else ""
        lines.append(f"| {r['workload']} | {r['dtype']} | {name} | {impl} | {milliseconds(r['median_ms'])} | "
                     f"{milliseconds(r['iqr_ms'])} | {r['gbps']:.1f} |{ceiling} {100 * r['share_of_ceiling']:.0f}% | "
                     f"{ratio} | {r['load_average_1min']:.1f} |")
    return lines


def main(path):
    with open(path) as f:
        print("\n".join(render(json.load(f))))


if __name__ == "__main__":
    main(sys.argv[1])
