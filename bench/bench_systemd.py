"""The systemd runtime (`--runtime systemd`) beside the compose runtime: install time, the update gap under
load, and `systemd-analyze security` of the server's unit; prints a markdown section for BENCHMARKS.md.

On a Debian 12 host with systemd 252 as PID 1 (a container, tests/support/systemd_host.py), with no Docker
inside it: `pmcp demo --stack --runtime systemd` (fresh, then again), then two rounds of `pmcp update` twice
(a new pmcp file each time; the second round with --force) and `pmcp rollback`, while two clients call the
server from this machine over its own TLS: a 2025-11 session with `guest_power` reboot calls in flight (each
waits for a 1 s Proxmox task with progress), and the 2026-07 single-exchange era. The compose runtime's
numbers are bench_install and bench_update's.

Run: .venv/bin/python bench/bench_systemd.py (needs dist/pmcp and a Docker engine; root).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.systemd_host import PREFIX, booted  # noqa: E402
from tests.support.update_load import LOAD_TEST_LIMITS, ClientLoop, make_variant, running_vm  # noqa: E402


def main() -> int:
    dist = ROOT / "dist" / "pmcp"
    if not dist.is_file():
        print("dist/pmcp missing: run `make dist` first", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="pmcp-bench-systemd-"))
    files = {"/usr/local/sbin/pmcp": dist}
    for v in (2, 3):
        files[f"/usr/local/sbin/pmcp-v{v}"] = make_variant(dist, work / f"pmcp-v{v}", body=f"v{v}\n")
    rows: list[dict[str, object]] = []
    with booted(files) as host:
        t0 = time.monotonic()
        host.sh(f"pmcp demo --stack --runtime systemd --prefix {PREFIX}")
        install_s = time.monotonic() - t0
        t0 = time.monotonic()
        host.sh(f"pmcp demo --stack --runtime systemd --prefix {PREFIX}")
        again_s = time.monotonic() - t0
        security = host.sh(f"systemd-analyze security --no-pager {host.unit('a')}", check=False).stdout
        host.set_server_env(LOAD_TEST_LIMITS)
        rss = host.sh(f"systemctl show -p MemoryCurrent --value {host.unit('b')}").stdout.strip()
        ca, token, url = host.ca_file(work / "ca.pem"), host.token(), host.url
        long_call = (
            "guest_power",
            {"action": "reboot", "vmid": running_vm(url, token, ca), "wait_seconds": 60},
        )
        commands = ["pmcp-v2 update", "pmcp-v3 update", "pmcp rollback"]
        for n, command in enumerate([*commands, *(f"{c} --force" for c in commands[:2]), commands[2]], 1):
            loops = [
                ClientLoop(url, token, ca, kind="handshake", long_call=long_call).start(),
                ClientLoop(url, token, ca, kind="single-exchange").start(),
            ]
            time.sleep(1)
            t0 = time.monotonic()
            proc = host.sh(f"{command} --prefix {PREFIX}", check=False)
            seconds = time.monotonic() - t0
            time.sleep(1)
            for loop in loops:
                stats = loop.stop()
                rows.append({"run": n, "command": command.split()[1], "ok": proc.returncode == 0,
                             "seconds": seconds, **stats.to_dict()})  # fmt: skip
            if proc.returncode != 0:
                print(f"{command} failed: {proc.stdout[-800:]} {proc.stderr[-800:]}", file=sys.stderr)
    print_markdown(rows, install_s, again_s, security, rss)
    ok = all(r["ok"] and r["failed"] == 0 and r["long_failed"] == 0 for r in rows)
    return 0 if rows and ok else 1


def compose_figures() -> dict[str, str]:
    """The compose runtime's figures as BENCHMARKS.md last recorded them (bench_install, bench_update), so
    the table never shows numbers typed in by hand that the code has since left behind."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    out = dict.fromkeys(("install", "again", "took", "gap"), "–")
    install = re.search(r"`pmcp install` \(fresh, image present, incl\. verify\) \| ([\d.]+)", text)
    again = re.search(r"`pmcp install` again \(nothing to change, incl\. verify\) \| ([\d.]+)", text)
    if install and again:
        out["install"], out["again"] = f"{float(install[1]):.1f} s", f"{float(again[1]):.1f} s"
    update = re.search(r"<!-- bench:bench_update -->(.*?)<!-- /bench:bench_update -->", text, re.S)
    row = re.compile(r"^\| \d+ \| (update|rollback) \| ok \| ([\d.]+) \|.*\| ([\d.]+) \|$", re.M)
    found = row.findall(update[1]) if update else []
    if found:
        took = sorted(float(t) for command, t, _ in found if command == "update")
        gaps = sorted(float(g) for *_, g in found)
        out["took"] = f"{took[len(took) // 2]:.1f} s" if took else "–"
        out["gap"] = f"{gaps[-1]:.2f} s ({gaps[len(gaps) // 2]:.2f})"
    return out


def print_markdown(rows: list[dict[str, object]], install_s: float, again_s: float, security: str,
                   memory: str) -> None:  # fmt: skip
    print("## The systemd runtime beside compose (bench/bench_systemd.py)\n")
    print(
        "Debian 12, systemd 252 as PID 1 in a container (no Docker inside), `pmcp demo --stack --runtime "
        f"systemd` against the simulator; {os.cpu_count()} cores. Compose figures: bench_install's and "
        "bench_update's as BENCHMARKS.md holds them (same machine kind, not the same run). "
        "Before the unit set `NonBlocking=yes`, "
        "the worst gap in runs like this was 0.86-1.20 s (median 0.51-0.88): starting the next instance "
        "cleared O_NONBLOCK on the socket both share, and the live server blocked in accept() until another "
        "client connected (ARCHITECTURE.md, the systemd runtime).\n"
    )
    compose = compose_figures()
    print("| what | systemd | compose |\n|---|---:|---:|")
    print(f"| install, fresh (incl. simulator, identity, certificate, verify) | {install_s:.1f} s "
          f"| {compose['install']} (image present) |")  # fmt: skip
    print(f"| install again (nothing to change, incl. verify) | {again_s:.1f} s | {compose['again']} |")
    gaps = sorted(float(r["longest_gap_s"]) for r in rows)  # type: ignore[arg-type]
    failed = sum(int(r["failed"]) + int(r["long_failed"]) for r in rows)  # type: ignore[call-overload]
    took = sorted({float(r["seconds"]) for r in rows if r["command"] == "update"})  # type: ignore[arg-type]
    print(f"| update: took (median) | {took[len(took) // 2]:.1f} s | {compose['took']} |" if took else "")
    if gaps:
        worst, median = gaps[-1], gaps[len(gaps) // 2]
        print(
            f"| update/rollback: longest gap, worst (median) | {worst:.2f} s ({median:.2f}) "
            f"| {compose['gap']} |"
        )
    print(f"| failed calls under load | {failed} | 0 |")
    if memory.isdigit():
        print(f"| server memory (MemoryCurrent, idle) | {int(memory) / 2**20:.0f} MiB | - |")
    print("\n| run | command | result | took (s) | client | requests | failed | sessions "
          "| long calls (failed) | longest gap (s) |")  # fmt: skip
    print("|---:|---|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        long_calls = f"{r['long_calls']} ({r['long_failed']})" if r["kind"] == "handshake" else "-"
        took, gap = float(r["seconds"]), float(r["longest_gap_s"])  # type: ignore[arg-type]
        result = "ok" if r["ok"] else "FAILED"
        print(f"| {r['run']} | {r['command']} | {result} | {took:.1f} | {r['kind']} | {r['requests']} "
              f"| {r['failed']} | {r['sessions']} | {long_calls} | {gap:.2f} |")  # fmt: skip
    overall = re.search(r"Overall exposure level for \S+: (.+)", security)
    level = overall[1] if overall else "?"
    print(f"\n`systemd-analyze security` (systemd 252) of the server's unit: **{level}**")
    print("\n<details><summary>full output</summary>\n\n```")
    print(security.strip())
    print("```\n</details>\n")
    print(f"_Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}._")


if __name__ == "__main__":
    sys.exit(main())
