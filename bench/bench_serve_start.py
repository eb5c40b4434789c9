"""How long `pmcp serve` takes from spawn to its first answered `initialize` (a markdown section).

Three ways to start the same dist/pmcp, interleaved so machine noise hits all alike:
- as the container ran it before: a fresh SHIV_ROOT (unpack on start) and PYTHONDONTWRITEBYTECODE=1 (the
  root file system is read-only, so every start compiled every imported module again);
- unpacked, no bytecode: what the same container does on a later start if nothing is compiled;
- unpacked and compiled once (`compileall --invalidation-mode unchecked-hash`): what the image now does at
  build time (stack/templates/Dockerfile), so a start only reads .pyc files.
Target (issue 16): <= 0.8 s to the first answered initialize. ``--before FILE``: another build (main's)
in the same interleaved runs; the server's CPU seconds are printed beside the wall times.

Run: .venv/bin/python bench/bench_serve_start.py [--runs 7] [--python /usr/bin/python3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pmcp import authtokens  # noqa: E402
from pmcp.demo import free_port  # noqa: E402
from pmcp.sim.testing import running_sim  # noqa: E402
from tests.support.mcp_raw import initialize  # noqa: E402

TARGET_S = 0.8
INIT = initialize("bench")


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (/proc), which a loaded machine's noise barely moves."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def first_answer(
    argv: list[str], env: dict[str, str], port: int, token: str, then: str | None = None
) -> tuple[float, float]:
    """(seconds, CPU seconds of the server) from spawn to an HTTP 200 answer to initialize on /mcp;
    with ``then`` (a tool name), to the answer of that tool's first call in the session it opened."""
    body = json.dumps(INIT).encode()
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "Host": f"127.0.0.1:{port}",
    }
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"pmcp serve exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            req = urllib.request.Request(f"http://127.0.0.1:{port}/mcp", data=body, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    resp.read()
                    if resp.status == 200:
                        if then is None:
                            return time.perf_counter() - start, cpu_seconds(proc.pid)
                        session = resp.headers["mcp-session-id"]
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.01)
        headers |= {"Mcp-Session-Id": session, "MCP-Protocol-Version": INIT["params"]["protocolVersion"]}  # type: ignore[index]
        for message in (
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": then, "arguments": {}}},
        ):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/mcp", data=json.dumps(message).encode(), headers=headers
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                answer = resp.read()
        assert b'"isError":true' not in answer, answer
        return time.perf_counter() - start, cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument(
        "--python", default="/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"
    )
    ap.add_argument("--file", type=Path, default=ROOT / "dist" / "pmcp")
    ap.add_argument("--before", type=Path, help="another build (e.g. main's) to compare, compiled alike")
    args = ap.parse_args()
    if not args.file.exists():
        print(f"{args.file} is missing. Fix: make dist", file=sys.stderr)
        return 1
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SHIV_", "PMCP_", "PROXMOX_", "PYTHON"))}
    with running_sim(nodes=1, guests=10) as sim, tempfile.TemporaryDirectory(prefix="pmcp-bench-") as tmp:
        tokens = Path(tmp, "tokens")
        token = authtokens.add(tokens, "bench")
        secret = Path(tmp, "secret")
        secret.write_text(sim.root_token_secret)
        server_env = base | {
            "PROXMOX_URL": sim.url,
            "PROXMOX_TOKEN_ID": sim.root_token_id,
            "PROXMOX_TOKEN_SECRET_FILE": str(secret),
            "PMCP_AUTH_TOKEN_FILE": str(tokens),
        }
        unpacked = Path(tmp, "unpacked")
        compiled = Path(tmp, "compiled")
        before = Path(tmp, "before")
        files = {
            "fresh": args.file,
            "unpacked": args.file,
            "compiled": args.file,
            "installed": args.file,
            "call": args.file,
        }
        roots = [(args.file, unpacked), (args.file, compiled)]
        if args.before:
            files |= {"before": args.before, "before-call": args.before}
            roots.append((args.before, before))
        for file, root in roots:
            subprocess.run([args.python, str(file), "--version"], env=base | {"SHIV_ROOT": str(root)},
                           check=True, capture_output=True)  # fmt: skip
        compile_cmd = ["-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash"]
        for root in (compiled, before) if args.before else (compiled,):
            subprocess.run([args.python, *compile_cmd, str(root)], capture_output=True)
        runs: dict[str, list[float]] = {kind: [] for kind in files}
        cpu: dict[str, list[float]] = {kind: [] for kind in files}
        for i in range(args.runs):
            for kind in runs:
                port = free_port()
                root = {"fresh": Path(tmp, f"fresh{i}"), "unpacked": unpacked}.get(kind, compiled)
                root = before if kind.startswith("before") else root
                env = server_env | {"SHIV_ROOT": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
                if kind == "installed":  # a session dir, as every install has: it warms up before accepting
                    env |= {"PMCP_SESSION_DIR": str(Path(tmp, f"sessions{i}"))}
                argv = [args.python, str(files[kind]), "serve", "--host", "127.0.0.1", "--port", str(port)]
                then = "list_guests" if kind.endswith("call") else None
                wall, used = first_answer(argv, env, port, token, then)
                runs[kind].append(wall)
                cpu[kind].append(used)
    version = subprocess.run([args.python, "-V"], capture_output=True, text=True).stdout.strip()
    med = {k: statistics.median(v) for k, v in runs.items()}
    mcpu = {k: statistics.median(v) for k, v in cpu.items()}
    print("## Server start: spawn to first answered initialize\n")
    print(f"`{args.python}` ({version}), dist/pmcp, {args.runs} runs each, interleaved, simulator.\n")
    print("| start | median s | ratio to compiled | server CPU s (median) | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    labels = {
        "fresh": "fresh SHIV_ROOT, no bytecode",
        "unpacked": "unpacked, no bytecode",
        "compiled": "unpacked and compiled at build time (the container)",
        "installed": "the same with a session dir, as installed (tools and the Proxmox session made first)",
        "before": f"the same, `{args.before}` (before deferring imports and tool schemas)",
    }
    for kind, label in labels.items():
        if kind not in med:
            continue
        ok = "meets" if med[kind] <= TARGET_S else "**misses**"
        ratio = med[kind] / med["compiled"]
        print(f"| {label} | {med[kind]:.2f} | {ratio:.2f}x | {mcpu[kind]:.2f} | <= {TARGET_S} s: {ok} |")
    calls = [("call", "compiled")] + ([("before-call", "before")] if args.before else [])
    parts = [
        f"{'now' if b == 'compiled' else 'before'} {med[k]:.2f} s (CPU {mcpu[k]:.2f} s)" for k, b in calls
    ]
    print(
        "\nTo the first answered `tools/call` (`list_guests`) in that session, compiled: "
        + ", ".join(parts)
        + ". What initialize no longer waits for is paid once, by the first tool call. The machine is "
        "shared: "
        "wall times move with its load, the server's CPU seconds much less."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
