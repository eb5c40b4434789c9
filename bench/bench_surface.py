"""What a model must read before it can act: tools/list bytes per mode (a markdown section for BENCHMARKS.md).

The SDK client lists the tools of a real server (against the simulator) in each mode. "Model-facing" is
what a client puts into the model's context (name, description, input schema); "full" adds titles,
annotations and output schemas. Target (issue 14): model-facing <= 16 KB in admin mode.

Run: .venv/bin/python bench/bench_surface.py
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pmcp.server.config import Mode  # noqa: E402
from pmcp.sim.testing import running_sim  # noqa: E402
from tests.unit.server.conftest import connect, serve  # noqa: E402

# As reported in issue 14 for the peers' whole tools/list (not measured here).
PEERS = [("ProxmoxMCP-Plus 0.6.7", "81.5 KB"), ("mcp-proxmox", "34 KB"), ("proxmox-mcp-server", "196 KB")]


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with running_sim(nodes=1, guests=5) as sim, tempfile.TemporaryDirectory() as tmp:
        for mode in (Mode.READ_ONLY, Mode.OPERATOR, Mode.ADMIN):
            with serve(sim, Path(tmp) / mode.value, mode=mode) as served:

                async def listing(served=served):
                    async with connect(served) as client:
                        return (await client.list_tools()).tools

                tools = anyio.run(listing)
            full = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]
            model = [
                {"name": t.name, "description": t.description, "inputSchema": t.input_schema} for t in tools
            ]
            rows.append((mode.value, len(tools), len(json.dumps(model, separators=(",", ":"))),
                         len(json.dumps(full, separators=(",", ":")))))  # fmt: skip
    print("## Tool surface (tools/list)\n")
    print("Bytes of compact JSON as the official SDK client receives them from `pmcp serve`.\n")
    print("| mode | tools | model-facing bytes (name, description, input schema) | full tools/list bytes |")
    print("| --- | ---: | ---: | ---: |")
    for mode, n, model_bytes, full_bytes in rows:
        print(f"| {mode} | {n} | {model_bytes} | {full_bytes} |")
    print(
        "\nPeers' whole tools/list, as reported in issue 14: " + ", ".join(f"{n} {b}" for n, b in PEERS) + "."
    )
    print("Target: model-facing <= 16 KB in admin mode.")


if __name__ == "__main__":
    main()
