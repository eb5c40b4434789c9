"""What the person's approval costs a destructive call, per protocol era (a section for BENCHMARKS.md).

The official SDK client calls ``reset_guest`` on a running VM of the simulator (tasks take no time), side by
side in one run: without elicitation (``confirm: true``), and with an elicitation callback that accepts at
once, in the 2025-11 era (an ``elicitation/create`` request on the call's stream) and in the 2026-07 era (the
call ends with ``input_required``; the client calls again with the answer). A new client per call, so
each row includes connecting (``initialize`` in 2025-11, ``server/discover`` in 2026-07).

Run: .venv/bin/python bench/bench_approval.py
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp_types import ElicitResult

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pmcp.sim.testing import running_sim  # noqa: E402
from tests.unit.server.conftest import connect, free_guests, serve  # noqa: E402

ROUNDS = 30


async def accept(context: Any, params: Any) -> ElicitResult:
    return ElicitResult(action="accept", content={})


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with (
        running_sim(nodes=1, guests=10, task_seconds=0.0) as sim,
        tempfile.TemporaryDirectory() as tmp,
        serve(sim, Path(tmp) / "srv") as served,
    ):
        vmid = free_guests(served, "qemu", "running")[0]
        cases = [
            ("2025-11, no elicitation (confirm: true)", "legacy", None),
            ("2025-11, elicitation accepted", "legacy", accept),
            ("2026-07, no elicitation (confirm: true)", "auto", None),
            ("2026-07, elicitation accepted (input_required, retry)", "auto", accept),
        ]
        times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        for _ in range(ROUNDS):  # interleaved, so load changes hit every case alike
            for name, era, callback in cases:

                async def once(era: str = era, callback: Any = callback) -> None:
                    kwargs = {"elicitation_callback": callback} if callback else {}
                    async with connect(served, mode=era, **kwargs) as client:
                        r = await client.call_tool("reset_guest", {"vmid": vmid, "confirm": True})
                        assert r.structured_content["outcome"] == "ok", r.content[0].text

                started = time.perf_counter()
                anyio.run(once)
                times[name].append(time.perf_counter() - started)
        for name, _, _ in cases:
            rows.append((name, statistics.median(times[name]) * 1000))
    print("## Approval: what asking the person costs a destructive call (bench_approval.py)\n")
    print(
        "`reset_guest` through the official SDK client against `pmcp serve` and the simulator (tasks "
        f"take no time), {ROUNDS} rounds interleaved; a new client per call (connecting included); the "
        "person's answer is instant.\n"
    )
    print("| case | ms (median) |")
    print("| --- | ---: |")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
