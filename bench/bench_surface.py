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
    print(
        "Before grouping (commit 256a437: seven power tools, separate reads, clone and restore tools): admin "
        "35 tools, 22,175 bytes model-facing, 58,846 full; main before this change (with approval, undo, "
        "audit_status): 23,445. Now related operations are one tool with an "
        "`action`/`show`/`topic` argument, with more in them (create from ISO/CT template, set_guest_config, "
        "cluster_info, download_template)."
    )
    print("Target: model-facing <= 16 KB (16,000 bytes) in admin mode.")


if __name__ == "__main__":
    main()
