"""Benchmark of `pmcp update` under load; prints a markdown section for BENCHMARKS.md.

Installs a demo stack (real engine, compose, Caddy, the simulator as a service) from dist/pmcp, then
runs N updates to "new versions" (copies of dist/pmcp with one more zip member, so new image tags)
while a client makes MCP calls (a read tool, through Caddy, TLS verified, the SDK client) in a loop.
Per update: requests made, failed, the longest gap between two answered requests, and how long the
update took. Everything is removed afterwards.

Needs root, a Docker engine (scripts/ensure-test-env) and dist/pmcp (make dist). Images: the offline
test images (tests/support/images.py) unless PMCP_PYTHON_BASE_IMAGE / PMCP_CADDY_IMAGE are set.

Run: .venv/bin/python bench/bench_update.py [--updates 3] [--grace 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pmcp import authtokens  # noqa: E402
from pmcp.paths import InstallPaths  # noqa: E402
from tests.support.update_load import ClientLoop, make_variant  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def images_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PMCP_PYTHON_BASE_IMAGE", "PMCP_CADDY_IMAGE") if os.environ.get(k)}
    if len(env) < 2:
        from tests.support import images

        env.setdefault("PMCP_PYTHON_BASE_IMAGE", images.python_base_image("bookworm"))
        env.setdefault("PMCP_CADDY_IMAGE", images.caddy_image())
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--grace", type=float, default=2.0)
    args = parser.parse_args()
    dist = ROOT / "dist" / "pmcp"
    if not dist.is_file():
        print("dist/pmcp missing: run `make dist` first", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="pmcp-bench-update-"))
    base = shutil.copy2(dist, work / "pmcp")
    env = {
        **images_env(),
        "PMCP_SELF": str(base),
        "PMCP_LOG_DIR": str(work / "logs"),
        "PMCP_LOCK_FILE": str(work / "pmcp.lock"),
    }
    os.environ.update(env)
    prefix = work / "stack"
    rows: list[dict[str, object]] = []
    try:
        from pmcp.lifecycle.demo_stack import demo_options
        from pmcp.lifecycle.install import install

        opts = demo_options(
            prefix, guests=12, https_port=free_port(), server_port=free_port(), sim_port=free_port()
        )
        started = time.monotonic()
        res = install(opts, kind="demo")
        if not res.ok:
            failed = [s for s in res.run.steps if s.status == "failed"] if hasattr(res, "run") else []
            print(f"demo stack install failed: {[(s.name, s.error) for s in failed]}", file=sys.stderr)
            return 1
        install_s = time.monotonic() - started
        paths = InstallPaths.at(prefix)
        token = authtokens.load(paths.client_tokens)["default"]
        url = f"https://localhost:{opts.https_port}/mcp"
        for i in range(args.updates):
            variant = make_variant(Path(base), work / f"pmcp-v{i + 2}", body=f"v{i + 2}\n")
            loop = ClientLoop(url, token, str(paths.caddy_root_ca)).start()
            t0 = time.monotonic()
            argv = ["update", "--prefix", str(prefix), "--grace", str(args.grace), "--json"]
            proc = subprocess.run(
                [sys.executable, "-m", "pmcp", *argv],
                cwd=ROOT,
                env={**os.environ, "PMCP_SELF": str(variant)},
                capture_output=True,
                text=True,
                timeout=600,
            )
            seconds = time.monotonic() - t0
            stats = loop.stop()
            out = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
            rows.append({"update": i + 1, "ok": proc.returncode == 0, "seconds": seconds, **stats.to_dict()})
            if proc.returncode != 0:
                print(f"update {i + 1} failed: {out.get('error') or proc.stderr[-500:]}", file=sys.stderr)
    finally:
        teardown(prefix)
        shutil.rmtree(work, ignore_errors=True)
    print_markdown(rows, install_s if rows else 0.0, args)
    return 0 if rows and all(r["ok"] and r["failed"] == 0 for r in rows) else 1


def teardown(prefix: Path) -> None:
    from pmcp.lifecycle.switch import PROJECT_LABEL
    from pmcp.stack.compose import project_name

    with contextlib.suppress(Exception):
        from pmcp.lifecycle.uninstall import uninstall

        uninstall(prefix, purge=True)
    project = project_name(prefix)
    for label in (f"com.docker.compose.project={project}", f"{PROJECT_LABEL}={project}"):
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True, check=False
        ).stdout.split()
        for cid in ids:
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)


def print_markdown(rows: list[dict[str, object]], install_s: float, args: argparse.Namespace) -> None:
    total = sum(int(r["requests"]) for r in rows)  # type: ignore[call-overload]
    failed = sum(int(r["failed"]) for r in rows)  # type: ignore[call-overload]
    gap = max((float(r["longest_gap_s"]) for r in rows), default=0.0)  # type: ignore[arg-type]
    print("## `pmcp update` under load (bench/bench_update.py)\n")
    print(
        f"A client calls the read tool `{rows[0]['tool'] if rows else '?'}` in a loop through Caddy (TLS, "
        f"the MCP SDK client) while `pmcp update --grace {args.grace:g}` replaces the server "
        f"{len(rows)} times (demo stack installed in {install_s:.0f} s; {os.cpu_count()} cores).\n"
    )
    print("| update | result | took (s) | requests | failed | longest gap (s) |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        result = "ok" if r["ok"] else "FAILED"
        took, gap_s = float(r["seconds"]), float(r["longest_gap_s"])  # type: ignore[arg-type]
        print(f"| {r['update']} | {result} | {took:.1f} | {r['requests']} | {r['failed']} | {gap_s:.2f} |")
    print(f"| **all** | | | **{total}** | **{failed}** | **{gap:.2f}** |")


if __name__ == "__main__":
    sys.exit(main())
