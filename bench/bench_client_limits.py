"""What a client token's own limits cost (issue 15): one-guest and list calls at 5,000 guests for a
token without limits, one scoped by a tag, and one scoped by a pool; prints a markdown section.

A tag-scoped call decides from the guest's fresh `status/current` (no extra request); a pool-scoped
call whose guest's tags do not decide reads `/cluster/resources` once more (status/current carries no
pool): that listing is the cost this measures, next to the unscoped call in the same run.

Run: .venv/bin/python bench/bench_client_limits.py [--calls 100]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_server import mcp_calls, pct, stack  # noqa: E402

from pmcp import authtokens  # noqa: E402
from pmcp.server.policy import split_tags  # noqa: E402


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, stack(5000, Path(tmp) / "s") as (_, _, url, token):
        _, _, listed = anyio.run(mcp_calls, url, token, "list_guests", {"limit": 500, "detail": True}, 1)
        items = listed.structured_content["guests"]
        tagged = next(g for g in items if g.get("tags"))
        tag = split_tags(";".join(tagged["tags"]))[0]
        pooled = next(g for g in items if g.get("pool") and tag not in (g.get("tags") or []))
        tokens = Path(tmp) / "s" / "tokens"
        by_tag = authtokens.add(tokens, "tag", authtokens.TokenLimits(tags=(tag,)))
        by_pool = authtokens.add(tokens, "pool", authtokens.TokenLimits(pools=(pooled["pool"],)))
        for label, tok, vmid in [
            ("no limits", token, tagged["vmid"]),
            (f"scope tag:{tag} (decided by the tag)", by_tag, tagged["vmid"]),
            (f"scope pool:{pooled['pool']} (tags do not decide: one listing)", by_pool, pooled["vmid"]),
        ]:
            lat, total, _ = anyio.run(mcp_calls, url, tok, "guest_status", {"vmid": vmid}, args.calls)
            rows.append((f"guest_status, {label}", lat, total))
        for label, tok in [("no limits", token), (f"scope pool:{pooled['pool']}", by_pool)]:
            lat, total, _ = anyio.run(mcp_calls, url, tok, "list_guests", {}, 30)
            rows.append((f"list_guests, {label}", lat, total))
    print("## Per-client limits (scope) at 5,000 guests\n")
    print(
        f"{args.calls} sequential guest_status calls (30 list_guests) over one session per token, same "
        "server and simulator (three processes, loopback, TLS to the simulator), in one run.\n"
    )
    print("| call | p50 ms | p99 ms | calls/s |")
    print("| --- | ---: | ---: | ---: |")
    for name, lat, total in rows:
        p50, p99 = pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000
        print(f"| {name} | {p50:.2f} | {p99:.2f} | {len(lat) / total:.0f} |")
    base = pct(rows[0][1], 0.5)
    print(
        f"\nRatios to the unscoped guest_status (p50): tag {pct(rows[1][1], 0.5) / base:.2f}x, "
        f"pool {pct(rows[2][1], 0.5) / base:.2f}x.\n"
    )


if __name__ == "__main__":
    main()
