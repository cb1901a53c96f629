"""From results files to Markdown tables, issue 4's targets and PNG plots.

Every table cell and verdict is computed from the rows of the committed
results files (benchmarks/results/*.json); when a device has several files or
rows for one key, the latest wins (files in date order, rows in file order).
"""

import json
from pathlib import Path
from typing import NamedTuple

CASE_ORDER = ("seed", "long", "wide", "batch_sweep", "T_sweep", "H_sweep")
IMPL_ORDER = ("stock", "stock_compiled", "fused", "fused_kernel", "fused_graph", "fused_cuda")
KEY_FIELDS = ("case", "B", "T", "I", "H", "O", "dtype", "precision", "mode", "impl")
PLOT_NAMES = ("time_vs_T", "time_vs_H", "memory_vs_T")

BENCH_BEGIN, BENCH_END = "<!-- bench-table:begin -->", "<!-- bench-table:end -->"
SPEED_BEGIN, SPEED_END = "<!-- speed-table:begin -->", "<!-- speed-table:end -->"


# ---------------------------------------------------------------- loading

def is_results(data):
    """A benchmark results file (not a static report, not tune.py's launch-parameter rows)."""
    return (isinstance(data, dict) and isinstance(data.get("rows"), list) and "device" in data
            and data.get("kind") != "tune")


def results_files(results_dir):
    """The benchmark results files in a folder (other JSON there, a static report say, is left out)."""
    found = []
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if is_results(data):
            found.append((path, data))
    return found


def row_key(row):
    return tuple(row[k] for k in KEY_FIELDS)


class Device(NamedTuple):
    name: str
    rows: dict          # row_key → latest row
    envs: list          # the environments of its files, oldest first

    def get(self, impl, **key):
        """The row of one implementation for key fields (case, B, ..., mode), or None."""
        return self.rows.get(tuple(key.get(k, impl if k == "impl" else None) for k in KEY_FIELDS))

    @property
    def is_cpu(self):
        return self.name.startswith("CPU ")


def by_device(files):
    """{device name: Device} from [(path, data)], latest row per key."""
    devices = {}
    for _, data in sorted(files, key=lambda f: (f[1].get("date") or "", f[0].name)):
        dev = devices.setdefault(data["device"], Device(data["device"], {}, []))
        dev.envs.append({k: data.get(k) for k in ("torch", "triton", "cuda", "date", "commit")})
        for row in data["rows"]:
            dev.rows[row_key(row)] = row
    return devices


# ---------------------------------------------------------------- formatting

def fmt_time(ms):
    if ms is None:
        return "—"
    if ms < 1:
        return f"{ms * 1e3:.3g} µs"
    if ms < 1e3:
        return f"{ms:.3g} ms"
    return f"{ms / 1e3:.3g} s"


def fmt_bytes(n):
    if n is None:
        return "—"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def fmt_ratio(x):
    return "—" if x is None else f"{x:.2f}×"


def speedup(stock, ours):
    """stock's time over ours (> 1: ours is faster), or None if either is missing.

    Where ours was timed in the same rounds as stock, the median of the per-round
    ratios (the row's ``over_stock``, timing.paired_ratio): on a shared machine a
    slow spell moves both medians apart but cancels in each round's ratio.
    Otherwise the ratio of the two medians.
    """
    if stock is None or ours is None:
        return None
    if ours.get("over_stock"):
        return 1 / ours["over_stock"]
    return stock["median_ms"] / ours["median_ms"]


def _sort_key(key):
    case, B, T, I, H, O, dtype, precision, mode, _ = key
    return (CASE_ORDER.index(case) if case in CASE_ORDER else len(CASE_ORDER), case, dtype, precision,
            mode != "forward", B, T, H, I, O)


# ---------------------------------------------------------------- tables

def device_heading(dev):
    first, last = dev.envs[0], dev.envs[-1]
    dates = first["date"] if first["date"] == last["date"] else f"{first['date']} to {last['date']}"
    commits = sorted({(e["commit"] or "unknown")[:10] for e in dev.envs})
    return (f"### {dev.name}\n\n"
            f"{dates}; torch {last['torch']}, triton {last['triton']}"
            f"{', CUDA ' + last['cuda'] if last['cuda'] and not dev.is_cpu else ''}; commit {', '.join(commits)}.")


def time_table(dev):
    """One line per shape, dtype, precision and mode; one column per implementation."""
    groups = {}
    for key, row in dev.rows.items():
        groups.setdefault(key[:-1], {})[row["impl"]] = row
    impls = [i for i in IMPL_ORDER if any(i in g for g in groups.values())]
    head = ["case", "B", "T", "I", "H", "dtype", "precision", "mode", *impls, "fused ran", "stock ÷ fused"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for gkey in sorted(groups, key=lambda k: _sort_key(k + ("",))):
        g = groups[gkey]
        case, B, T, I, H, O, dtype, precision, mode = gkey
        times = [fmt_time(g[i]["median_ms"]) if i in g else "—" for i in impls]
        cells = [case, B, T, I, H, dtype, precision, mode, *times, g["fused"]["backend"] if "fused" in g else "—",
                 fmt_ratio(speedup(g.get("stock"), g.get("fused")))]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def memory_table(dev):
    """Inference memory of the T sweep: what one forward allocates, stock against fused."""
    rows = [r for r in dev.rows.values() if r["case"] == "T_sweep" and r["mode"] == "forward"
            and r.get("peak_mem_bytes") is not None]
    if not rows:
        return None
    by_t = {}
    for r in rows:
        by_t.setdefault((r["B"], r["T"], r["I"], r["H"], r["dtype"], r["precision"]), {})[r["impl"]] = r
    lines = ["| B | T | I | H | dtype | precision | stock | fused |", "|---|---|---|---|---|---|---|---|"]
    for (B, T, I, H, dtype, precision), g in sorted(by_t.items(), key=lambda kv: (kv[0][5], kv[0][1])):
        cells = [B, T, I, H, dtype, precision,
                 *(fmt_bytes(g[i]["peak_mem_bytes"]) if i in g else "—" for i in ("stock", "fused"))]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def bench_section(devices):
    """benchmarks/README.md's generated part: per device, its targets, times and memory."""
    if not devices:
        return "No results committed yet."
    parts = []
    for dev in sorted(devices.values(), key=lambda d: (d.is_cpu, d.name)):
        parts.append(device_heading(dev))
        parts.append("Targets (computed from these rows):\n\n" + "\n".join(
            f"- {t.line()}" for t in targets(dev)))
        parts.append("Median time per call (20th–80th percentiles in the JSON). stock ÷ fused is the median of "
                     "per-round ratios where the two took turns (report.speedup):\n\n" + time_table(dev))
        memory = memory_table(dev)
        if memory:
            parts.append("Memory one inference call allocates above what it was given (CUDA allocator "
                         "statistics):\n\n" + memory)
    return "\n\n".join(parts)


# The top-level README's rows: the seed and the long case, then the family at the long case's size
# against cuDNN (and ATen's loop in bf16, where cuDNN has no RNN).
FAMILY_CASES = ("long_gru", "long_lstm", "long_2layer", "long_bidir", "long_2layer_bidir_gru")
HEADLINE = (("seed", "float32"), ("long", "float32"), ("long", "bfloat16"), ("long", "float16"),
            *((case, dtype) for case in FAMILY_CASES for dtype in ("float32", "float16", "bfloat16")))


def _path_note(row):
    """" (torch path)" where a fused row ran the stock path, else nothing."""
    return "" if row["backend"] in ("triton", "cuda") else f" ({row['backend']} path)"


def speed_section(devices):
    """The top-level README's speed table: the HEADLINE cases, stock against ours, per device."""
    head = "| device | case | dtype | precision | mode | stock | fused | speedup | fused in a CUDA graph |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for dev in sorted(devices.values(), key=lambda d: (d.is_cpu, d.name)):
        groups = {}
        for key, row in dev.rows.items():
            if (row["case"], row["dtype"]) in HEADLINE:
                groups.setdefault(key[:-1], {})[row["impl"]] = row
        for gkey in sorted(groups, key=lambda k: _sort_key(k + ("",))):
            g = groups[gkey]
            if "stock" not in g or "fused" not in g:
                continue
            case, B, T, I, H, O, dtype, precision, mode = gkey
            shape = f"{case} ({B}×{T}×{I}, H={H})"
            # Either fused column may have run the stock path ("auto" leaves some calls to cuDNN): say so.
            graph = (fmt_time(g["fused_graph"]["median_ms"]) + _path_note(g["fused_graph"]) if "fused_graph" in g
                     else "—")
            ran = _path_note(g["fused"])
            lines.append(f"| {dev.name} | {shape} | {dtype} | {precision} | {mode} | "
                         f"{fmt_time(g['stock']['median_ms'])} | {fmt_time(g['fused']['median_ms'])}{ran} | "
                         f"{fmt_ratio(speedup(g['stock'], g['fused']))} | {graph} |")
    if len(lines) == 2:
        return "No results committed yet."
    return "\n".join(lines)


def splice(text, begin, end, body):
    """text with what lies between the begin and end markers replaced by body."""
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"markers {begin} … {end} not found in order")
    return text[:i + len(begin)] + "\n" + body.strip() + "\n" + text[j:]


def update_readmes(results_dir, bench_readme, top_readme):
    """Regenerate the tables between the markers of both READMEs from every results file."""
    devices = by_device(results_files(results_dir))
    for path, begin, end, body in ((bench_readme, BENCH_BEGIN, BENCH_END, bench_section(devices)),
                                   (top_readme, SPEED_BEGIN, SPEED_END, speed_section(devices))):
        path = Path(path)
        path.write_text(splice(path.read_text(), begin, end, body))
    return devices


# ---------------------------------------------------------------- targets

class Target(NamedTuple):
    name: str
    met: object         # True, False, or None when the rows to decide it are missing
    detail: str

    def line(self):
        verdict = {True: "met", False: "NOT met", None: "not measured"}[self.met]
        return f"{self.name}: **{verdict}** ({self.detail})"


def _ratio_target(dev, name, minimum, case, dtype, precision, mode):
    stock = dev.get("stock", case=case, **_shape(dev, case, dtype), dtype=dtype, precision=precision, mode=mode)
    fused = dev.get("fused", case=case, **_shape(dev, case, dtype), dtype=dtype, precision=precision, mode=mode)
    r = speedup(stock, fused)
    if r is None:
        return Target(name, None, f"no stock and fused rows for {case} {dtype} {precision} {mode}")
    return Target(name, r >= minimum, f"stock {fmt_time(stock['median_ms'])}, fused {fmt_time(fused['median_ms'])}:"
                                      f" {r:.2f}×, needs ≥ {minimum}×")


def _shape(dev, case, dtype):
    """The B, T, I, H, O of a fixed-shape case as recorded (the first row found)."""
    for row in dev.rows.values():
        if row["case"] == case and row["dtype"] == dtype:
            return {k: row[k] for k in "BTIHO"}
    return {}


GRAPH_LIMIT_MS = 5e-3       # issue 4: seed forward ≤ 5 µs inside a CUDA graph
# "Flat": what one inference call allocates at the longest T is within 10% (or
# 4 KiB, the allocator's granularity for small blocks is 512 B) of the shortest T's.
FLAT_RATIO, FLAT_SLACK = 1.10, 4096
CPU_OVERHEAD = 1.05         # issue 11: the CPU fallback ≤ 5% over the seed model


def memory_target(dev):
    """Flat memory in one precision's T sweep up to T = 65,536: TF32's (the GPU grid's sweep precision
    since the third H200 run), else IEEE's (the runs before; the CPU's)."""
    name = "inference memory independent of T up to 65,536"
    sweeps = {}
    for r in dev.rows.values():
        if (r["case"] == "T_sweep" and r["mode"] == "forward" and r["impl"] == "fused"
                and r.get("peak_mem_bytes") is not None):
            sweeps.setdefault(r["precision"], []).append(r)
    full = {p: sorted(rows, key=lambda r: r["T"]) for p, rows in sweeps.items()
            if len(rows) >= 2 and max(r["T"] for r in rows) >= 65536}
    if not full:
        return Target(name, None, "no fused T-sweep memory up to T = 65,536")
    rows = full.get("tf32") or full.get("ieee") or next(iter(full.values()))
    lo, hi = rows[0], rows[-1]
    flat = hi["peak_mem_bytes"] <= max(lo["peak_mem_bytes"] * FLAT_RATIO, lo["peak_mem_bytes"] + FLAT_SLACK)
    stock = dev.get("stock", **{k: hi[k] for k in KEY_FIELDS if k != "impl"})
    has_stock = stock is not None and stock.get("peak_mem_bytes") is not None
    stock_text = f"; stock {fmt_bytes(stock['peak_mem_bytes'])}" if has_stock else ""
    return Target(name, flat, f"fused {fmt_bytes(lo['peak_mem_bytes'])} at T={lo['T']}, "
                              f"{fmt_bytes(hi['peak_mem_bytes'])} at T={hi['T']}{stock_text}")


def graph_target(dev, precision):
    name = f"seed forward ≤ 5 µs in a CUDA graph ({precision})"
    row = dev.get("fused_graph", case="seed", **_shape(dev, "seed", "float32"), dtype="float32",
                  precision=precision, mode="forward")
    if row is None:
        return Target(name, None, "no fused_graph seed forward row")
    return Target(name, row["median_ms"] <= GRAPH_LIMIT_MS, f"{fmt_time(row['median_ms'])} per call")


def cpu_target(dev):
    name = "CPU fallback ≤ 5% over the seed model (seed shape, forward)"
    key = dict(case="seed", **_shape(dev, "seed", "float32"), dtype="float32", precision="ieee", mode="forward")
    stock, fused = dev.get("stock", **key), dev.get("fused", **key)
    if stock is None or fused is None:
        return Target(name, None, "no seed forward rows")
    # The paired ratio (same round, timing.paired_ratio) where recorded: on a shared
    # CPU it is steadier than the ratio of the two medians.
    paired = fused.get("over_stock")
    r = paired if paired is not None else fused["median_ms"] / stock["median_ms"]
    how = "median of per-round ratios" if paired is not None else "ratio of medians"
    return Target(name, r <= CPU_OVERHEAD, f"fused {fmt_time(fused['median_ms'])}, stock "
                                           f"{fmt_time(stock['median_ms'])}: fused/stock = {r:.3f} ({how}), "
                                           f"{fused.get('threads')} thread(s), needs ≤ {CPU_OVERHEAD}")


def targets(dev):
    """Issue 4's GPU targets (or issue 11's CPU one) as met / not met / not measured."""
    if dev.is_cpu:
        return [cpu_target(dev)]
    found = []
    for precision in ("ieee", "tf32"):
        found += [_ratio_target(dev, f"seed forward ≥ 5× ({precision})", 5, "seed", "float32", precision, "forward"),
                  graph_target(dev, precision),
                  _ratio_target(dev, f"seed train ≥ 3× ({precision})", 3, "seed", "float32", precision, "train"),
                  _ratio_target(dev, f"long forward ≥ 2× ({precision})", 2, "long", "float32", precision, "forward")]
    found.append(_ratio_target(dev, "long forward ≥ 2× (bf16)", 2, "long", "bfloat16", "bf16", "forward"))
    found.append(memory_target(dev))
    return found


# ---------------------------------------------------------------- plots

def _series(dev, case, mode, impl, x):
    """{precision: rows sorted by x} of one implementation (the sweeps ran IEEE, later TF32, on the GPU)."""
    by_precision = {}
    for r in sorted((r for r in dev.rows.values() if r["case"] == case and r["mode"] == mode and r["impl"] == impl),
                    key=lambda r: r[x]):
        by_precision.setdefault(r["precision"], []).append(r)
    return by_precision


def plots(dev, out_dir, prefix=""):
    """PNG plots for one device: time per step against T, time against H, memory against T.

    Returns the paths written (a plot with no data is not drawn), or raises
    ImportError when matplotlib is missing.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = {
        "time_vs_T": ("T_sweep", "T", ("forward", "train"), lambda r: r["median_ms"] * 1e3 / r["T"],
                      "µs per time step"),
        "time_vs_H": ("H_sweep", "H", ("forward", "train"), lambda r: r["median_ms"] * 1e3, "µs per call"),
        "memory_vs_T": ("T_sweep", "T", ("forward",), lambda r: r["peak_mem_bytes"] / 2**20,
                        "MiB one call allocates"),
    }
    written = []
    for name, (case, x, modes, y, ylabel) in specs.items():
        panels = []
        for mode in modes:
            lines = []
            for impl in IMPL_ORDER:
                for precision, rows in _series(dev, case, mode, impl, x).items():
                    rows = [r for r in rows if name != "memory_vs_T" or r.get("peak_mem_bytes") is not None]
                    if rows:
                        lines.append((f"{impl} ({precision})", [r[x] for r in rows], [y(r) for r in rows]))
            if lines:
                panels.append((mode, lines))
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
        for ax, (mode, lines) in zip(axes[0], panels):
            for impl, xs, ys in lines:
                ax.plot(xs, ys, marker="o", label=impl)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(x)
            ax.set_ylabel(ylabel)
            ax.set_title(f"{case} {mode}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.suptitle(dev.name)
        fig.tight_layout()
        path = out_dir / f"{prefix}{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
