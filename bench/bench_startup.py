"""Start-up of dist/pmcp; prints a markdown section for BENCHMARKS.md.

``pmcp --help`` cold (first run after copying: shiv unpacks its site-packages) and warm (median of
many), each next to the floor of any click CLI, ``python3 -c "import click"``, measured in the same
run with the same interpreter and the same click. Targets: warm <= 1.5x the floor, cold <= 1.5 s.

Run: .venv/bin/python bench/bench_startup.py [--runs 21] [--python /usr/bin/python3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "dist" / "pmcp"
WARM_TARGET = 1.5
COLD_TARGET_S = 1.5


def default_python() -> str:
    """Debian's own python3 when present: what a Proxmox host runs the file with."""
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="warm runs (median)")
    parser.add_argument("--cold-runs", type=int, default=5, help="cold runs (median)")
    parser.add_argument("--python", default=default_python())
    parser.add_argument("--file", type=Path, default=DIST)
    args = parser.parse_args()
    if not args.file.exists():
        print(f"{args.file} is missing. Fix: make dist", file=sys.stderr)
        return 1

    base_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    base_env = {k: v for k, v in base_env.items() if not k.startswith("SHIV_")}
    version = subprocess.run(
        [args.python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True
    ).stdout.strip()

    with tempfile.TemporaryDirectory(prefix="pmcp-bench-") as tmp:
        cold = []
        for i in range(args.cold_runs):
            copy = Path(tmp, f"cold{i}", "pmcp")
            copy.parent.mkdir()
            shutil.copy2(args.file, copy)
            env = {**base_env, "SHIV_ROOT": str(copy.parent / "shiv")}
            cold.append(timed([args.python, str(copy), "--help"], env))

        warm_env = {**base_env, "SHIV_ROOT": str(Path(tmp, "warm"))}
        pmcp = [args.python, str(args.file), "--help"]
        timed(pmcp, warm_env)  # unpack, then write the .pyc files
        timed(pmcp, warm_env)
        site_packages = next(Path(tmp, "warm").glob("pmcp_*/site-packages"))
        floor_env = {**base_env, "PYTHONPATH": str(site_packages)}
        floor_cmd = [args.python, "-c", "import click"]
        timed(floor_cmd, floor_env)
        # Any SHIV_* variable sends the launcher through shiv's own bootstrap: the stock path, for comparison.
        stock_env = {**warm_env, "SHIV_ENTRY_POINT": "pmcp.cli:main"}
        warm, floor, version_runs, stock = [], [], [], []
        for _ in range(args.runs):  # interleaved, so drift hits all alike
            floor.append(timed(floor_cmd, floor_env))
            warm.append(timed(pmcp, warm_env))
            version_runs.append(timed([args.python, str(args.file), "--version"], warm_env))
            stock.append(timed(pmcp, stock_env))

    size = args.file.stat().st_size
    sha = hashlib.sha256(args.file.read_bytes()).hexdigest()
    f_med, w_med, c_med = (statistics.median(x) for x in (floor, warm, cold))
    v_med, s_med = statistics.median(version_runs), statistics.median(stock)
    ratio_w, ratio_c = w_med / f_med, c_med / f_med

    def verdict(ok: bool) -> str:
        return "meets target" if ok else "**misses target**"

    print("## Start-up of dist/pmcp\n")
    print(f"File: {size:,} bytes ({size / 2**20:.1f} MiB), sha256 `{sha[:16]}…`. ")
    print(f"Interpreter: `{args.python}` (Python {version}); PYTHONDONTWRITEBYTECODE unset.\n")
    print("| what | median | ratio to floor | target |")
    print("| --- | --- | --- | --- |")
    print(f'| floor: `python3 -c "import click"` ({args.runs} runs) | {f_med * 1000:.0f} ms | 1.00x | |')
    print(
        f"| `pmcp --help` warm ({args.runs} runs) | {w_med * 1000:.0f} ms | {ratio_w:.2f}x "
        f"| <= {WARM_TARGET}x: {verdict(ratio_w <= WARM_TARGET)} |"
    )
    print(f"| `pmcp --version` warm ({args.runs} runs) | {v_med * 1000:.0f} ms | {v_med / f_med:.2f}x | |")
    print(
        f"| `pmcp --help` warm through shiv's stock bootstrap ({args.runs} runs) | {s_med * 1000:.0f} ms "
        f"| {s_med / f_med:.2f}x | (comparison) |"
    )
    print(
        f"| `pmcp --help` cold: fresh copy, fresh SHIV_ROOT ({args.cold_runs} runs) | {c_med * 1000:.0f} ms "
        f"| {ratio_c:.2f}x | <= {COLD_TARGET_S} s: {verdict(c_med <= COLD_TARGET_S)} |"
    )
    print(
        "\nWarm runs skip shiv's bootstrap (build.py's launcher finds the unpacked site-packages by its "
        "build id); cold runs unpack every bundled file once."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
