"""Run every bench/bench_*.py and write BENCHMARKS.md: a machine header, then one section per script.

Each script prints its markdown section to stdout (progress goes to stderr). Naming scripts runs
only those and keeps the other sections of BENCHMARKS.md as they were.

Run: .venv/bin/python bench/run.py [bench_startup ...]
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "BENCHMARKS.md"
SECTION = re.compile(r"<!-- bench:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /bench:(?P=name) -->\n", re.S)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1])  # type: ignore[index]
        ram = f"{kib / 2**20:.0f} GiB RAM"
    except (OSError, TypeError):
        ram = "RAM unknown"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {ram}, Linux {platform.release()}, "
        f"Python {platform.python_version()} (runner); load average at start {load}"
    )


def run(script: Path) -> tuple[str, bool]:
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if proc.returncode == 0 and proc.stdout.strip():
        return proc.stdout.strip() + "\n", True
    return f"## {script.name}\n\nFailed (exit {proc.returncode}); run it alone to see why.\n", False


def main(argv: list[str]) -> int:
    scripts = sorted((ROOT / "bench").glob("bench_*.py"))
    wanted = {a.removesuffix(".py") for a in argv}
    unknown = wanted - {s.stem for s in scripts}
    if unknown:
        print(f"no such bench script: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    sections = {m["name"]: m["body"] for m in SECTION.finditer(OUT.read_text())} if OUT.exists() else {}
    sections = {name: body for name, body in sections.items() if name in {s.stem for s in scripts}}
    ok = True
    for script in scripts:
        if wanted and script.stem not in wanted:
            continue
        print(f"bench/run.py: {script.name} ...", file=sys.stderr)
        body, good = run(script)
        ok &= good
        today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        sections[script.stem] = f"{body}\n_Measured {today}._\n"
    parts = [
        "# Benchmarks\n",
        f"Machine: {machine()}.  ",
        f"Written by `make bench` (bench/run.py) on {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d')}.\n",
    ]
    for name in sorted(sections):
        parts.append(f"<!-- bench:{name} -->\n{sections[name]}<!-- /bench:{name} -->\n")
    OUT.write_text("\n".join(parts))
    print(f"bench/run.py: wrote {OUT.relative_to(ROOT)}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
