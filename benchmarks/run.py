"""Run every benchmark side by side with its peers and write BENCHMARKS.md.

    python3 dev.py bench            # full sizes (several minutes)
    python3 dev.py bench --quick    # small sizes, a smoke run
    python3 dev.py bench --only engine,dataset

Each `benchmarks/bench_<area>.py` exposes `run(quick: bool) -> list[dict]`; a row is
{"benchmark", "tool", "value", "unit", ...} plus optional "ratio", "target", "met", "note".
Rows are measured in one process run, peers beside slicewise, so ratios compare like with
like on whatever machine runs this; absolute numbers only describe that machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
AREAS = ["engine", "dataset", "transform", "integrations", "cluster", "coldstart", "training"]


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = float("nan")
    import slicewise as sw

    return (
        f"{cpu}; {os.cpu_count()} logical CPUs ({sw.cpu_count()} usable); "
        f"{mem_gb:.0f} GiB RAM; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}"
    )


def format_value(value) -> str:
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 1e6:
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return f"{value:.3g}"
    return str(value)


def render(results: dict[str, list[dict]], errors: dict[str, str], command: str, seconds: float) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine_description()}",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; took {seconds:.0f} s",
        "",
        "Peers run in the same process run as slicewise; `ratio` is slicewise relative to the",
        "named reference (above 1 is better for slicewise unless the row says otherwise).",
        "Absolute numbers describe this machine only; ratios and efficiencies carry.",
        "",
    ]
    for area in AREAS:
        if area not in results and area not in errors:
            continue
        lines += [f"## {area}", ""]
        if area in errors:
            lines += ["```", errors[area].rstrip(), "```", ""]
            continue
        rows = results[area]
        extra = [k for k in ("ratio", "target", "met", "note") if any(k in r for r in rows)]
        header = ["benchmark", "tool", "value", "unit", *extra]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for row in rows:
            cells = [format_value(row.get(k, "")) for k in header]
            lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        lines.append("")
    notes = HERE / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--only", default=",".join(AREAS), help="comma-separated areas")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    results: dict[str, list[dict]] = {}
    errors: dict[str, str] = {}
    started = time.perf_counter()
    for area in [a.strip() for a in args.only.split(",") if a.strip()]:
        print(f"[bench] {area} ...", flush=True)
        try:
            module = importlib.import_module(f"bench_{area}")
            results[area] = module.run(quick=args.quick)
        except Exception:  # one broken area must not hide the others' numbers
            errors[area] = traceback.format_exc()
            print(errors[area], file=sys.stderr)
        for row in results.get(area, []):
            print("   ", {k: format_value(v) for k, v in row.items()}, flush=True)
    command = "python3 dev.py bench" + (" --quick" if args.quick else "")
    if args.only != ",".join(AREAS):
        command += f" --only {args.only}"
    Path(args.output).write_text(render(results, errors, command, time.perf_counter() - started))
    print(f"[bench] wrote {args.output}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
