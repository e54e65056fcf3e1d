"""Renders a bench JSON (python -m lrsched_fused.bench --out DIR) as the
Markdown table of benchmarks/RESULTS_CPU.md.

    python benchmarks/render_table.py benchmarks/results/bench_cpu.json
"""
import json
import sys


def main(path):
    with open(path) as f:
        run = json.load(f)
    m = run["machine"]
    print(f"Command: `{run['command']}`  ")
    print(f"Started {run['started_utc']} UTC, {run['seconds']:.0f} s; {run['device']}, {run['threads']} threads, "
          f"{run['rounds']} rounds x {run['min_run_time'] / run['rounds']:.2f} s per implementation; "
          f"{m.get('cpu_model')} (nproc {m['nproc']}, torch CPU capability {m['cpu_capability']}); "
          f"torch {m['torch']}, Python {m['python']}; 1-min load average {run['load_average_1min']['start']:.1f} "
          f"at start, {run['load_average_1min']['end']:.1f} at end.\n")
    print("| workload | dtype | optimizer + schedule | implementation | ms/step (median) | IQR ms | GB/s | "
          "share of add_ ceiling | time / ours | load |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in run["results"]:
        name = f"{r['optimizer']} + {r['schedule']}"
        if "error" in r:
            print(f"| {r['workload']} | {r['dtype']} | {name} | {r['impl']} | n/a: {r['error']} | | | | | |")
            continue
        ratio = "" if r["time_over_ours"] is None else f"{r['time_over_ours']:.2f}"
        impl = f"**{r['impl']}**" if r["impl"] == "ours" else r["impl"]
        print(f"| {r['workload']} | {r['dtype']} | {name} | {impl} | {r['median_ms']:.2f} | {r['iqr_ms']:.2f} | "
              f"{r['gbps']:.1f} | {100 * r['share_of_ceiling']:.0f}% | {ratio} | {r['load_average_1min']:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1])
