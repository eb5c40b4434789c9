"""What an admin asks about the past and the inside of a guest: metrics history, the cluster log,
guest addresses through the QEMU guest agent and a container's interfaces.

Each answer has the shape and the failure modes of Proxmox's own code (cited per handler). The numbers
are the simulator's own, deterministic for a guest and a time bucket, so tests can reason about them.
"""

from __future__ import annotations

import math
import time
from typing import Any

from pmcp.sim.api.cluster import guest_figures
from pmcp.sim.api.common import Ctx, guest_of, node_of
from pmcp.sim.errors import ApiError
from pmcp.sim.routes import route

# pve-cluster src/PVE/RRD.pm create_rrd_data: (resolution in seconds, number of points) per timeframe.
RRD_SETUP = {
    "hour": (60, 70),
    "day": (60 * 30, 70),
    "week": (60 * 180, 70),
    "month": (60 * 720, 70),
    "year": (60 * 10080, 70),
    "decade": (60 * 10080 * 10, 70),  # PVE 9 only (the 8.4 schema's enum refuses it before we get here)
}


def _wave(seed: int, t: int, reso: int) -> float:
    """A repeatable 0..1 load shape: daily rhythm plus a per-guest phase (no randomness between calls)."""
    day = math.sin((t % 86400) / 86400 * 2 * math.pi + seed % 17)
    jitter = math.sin(t / max(reso, 60) * 0.7 + seed)
    return min(1.0, max(0.0, 0.5 + 0.35 * day + 0.15 * jitter))


def _buckets(timeframe: str) -> tuple[int, int, int]:
    reso, count = RRD_SETUP[timeframe]
    ctime = reso * int(time.time() / reso)
    return ctime - reso * count, reso, count


@route("GET", "/nodes/{node}/rrddata")
def node_rrddata(ctx: Ctx, p: dict) -> list:
    """pve-manager PVE/API2/Nodes.pm rrddata -> PVE::RRD::create_rrd_data("pve2-node/$node", ...):
    one entry per resolution step, `time` plus the node data sources (loadavg, cpu, iowait, memory,
    swap, root disk, network rates)."""
    n = node_of(ctx, p["node"])
    start, reso, count = _buckets(p["timeframe"])
    seed = sum(map(ord, p["node"]))
    mx = p.get("cf") == "MAX"
    out = []
    for i in range(count):
        t = start + i * reso
        load = _wave(seed, t, reso) * (1.25 if mx else 1.0)
        cpu = round(min(1.0, n["cpu"] * 2 * load), 4)
        out.append(
            {
                "time": t,
                "cpu": cpu,
                "iowait": round(cpu / 40, 5),
                "loadavg": round(cpu * n["maxcpu"], 2),
                "maxcpu": n["maxcpu"],
                "memtotal": n["maxmem"],
                "memused": int(n["maxmem"] * min(0.98, n["mem_ratio"] * (0.8 + 0.4 * load))),
                "swaptotal": 8 * 1024**3,
                "swapused": 0,
                "roottotal": 100 * 1024**3,
                "rootused": 12 * 1024**3,
                "netin": round(200_000 * load, 2),
                "netout": round(120_000 * load, 2),
            }
        )
    return out


def _guest_rrddata(ctx: Ctx, p: dict, kind: str) -> list:
    """qemu-server PVE/API2/Qemu.pm / pve-container PVE/API2/LXC.pm rrddata ->
    create_rrd_data("pve2-vm/$vmid", ...). pvestatd writes stopped guests too (cpu, mem and rates 0)."""
    g = guest_of(ctx, p["node"], p["vmid"], kind)
    start, reso, count = _buckets(p["timeframe"])
    f = guest_figures(g, time.time())
    running_since = g.get("started_at") or float("inf")
    mx = p.get("cf") == "MAX"
    out = []
    for i in range(count):
        t = start + i * reso
        up = g["status"] == "running" and t + reso > running_since
        load = _wave(g["vmid"], t, reso) * (1.25 if mx else 1.0) if up else 0.0
        out.append(
            {
                "time": t,
                "maxcpu": f["cpus"],
                "cpu": round(min(1.0, max(g["cpu_load"], 0.02) * 2 * load), 4),
                "maxmem": g["maxmem"],
                "mem": int(g["maxmem"] * min(0.98, g["mem_ratio"] * (0.7 + 0.6 * load))) if up else 0,
                "maxdisk": g["maxdisk"],
                "disk": f["disk"],
                "netin": round(50_000 * load, 2),
                "netout": round(30_000 * load, 2),
                "diskread": round(80_000 * load, 2),
                "diskwrite": round(40_000 * load, 2),
            }
        )
    return out


@route("GET", "/nodes/{node}/qemu/{vmid}/rrddata")
def qemu_rrddata(ctx: Ctx, p: dict) -> list:
    return _guest_rrddata(ctx, p, "qemu")


@route("GET", "/nodes/{node}/lxc/{vmid}/rrddata")
def lxc_rrddata(ctx: Ctx, p: dict) -> list:
    return _guest_rrddata(ctx, p, "lxc")


# --- the cluster log ------------------------------------------------------------------------------


@route("GET", "/cluster/log")
def cluster_log(ctx: Ctx, p: dict) -> list:
    """pve-manager PVE/API2/Cluster.pm 'log': Sys.Syslog on / reads every entry; anyone else only the
    entries of their own user (get_cluster_log($loguser, $max)); newest first; `id` is "uid:node"."""
    entries = ctx.world.get("clusterlog", [])
    if not ctx.has("/", "Sys.Syslog"):
        own = ctx.auth.userid
        entries = [e for e in entries if e["user"].split("!", 1)[0] == own]
    limit = p.get("max") or 50
    out = []
    for e in reversed(entries[-limit:]):
        out.append({**e, "id": f"{e['uid']}:{e['node']}"})
    return out


# --- inside a guest -------------------------------------------------------------------------------


def _address(vmid: int) -> str:
    return f"10.10.{vmid // 256 % 256}.{vmid % 256}"


def _mac(g: dict[str, Any]) -> str:
    net0 = str(g["config"].get("net0", ""))
    for part in net0.split(","):
        key, _, value = part.partition("=")
        if key in ("virtio", "e1000", "hwaddr", "vmxnet3", "rtl8139") and value.count(":") == 5:
            return value.lower()
    return "bc:24:11:00:00:%02x" % (g["vmid"] % 256)


def agent_runs(g: dict[str, Any]) -> bool:
    """The simulator's choice: a guest agent answers in running VMs that configure one, except in
    every seventh VMID, so "agent configured but not running" happens in every seeded world."""
    return g["status"] == "running" and g["vmid"] % 7 != 3


def _agent(ctx: Ctx, p: dict) -> dict[str, Any]:
    """qemu-server PVE/QemuServer/Agent.pm agent_available: three failures, in this order, all 500."""
    g = guest_of(ctx, p["node"], p["vmid"], "qemu")
    if "agent" not in g["config"] or str(g["config"]["agent"]).split(",")[0] not in ("1", "enabled=1"):
        raise ApiError(500, "No QEMU guest agent configured")
    if g["status"] != "running":
        raise ApiError(500, f"VM {g['vmid']} is not running")
    if not agent_runs(g):
        raise ApiError(500, "QEMU guest agent is not running")
    return g


@route("GET", "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces")
def agent_interfaces(ctx: Ctx, p: dict) -> dict:
    """qemu-server PVE/API2/Qemu/Agent.pm register_command: `{result: <guest-network-get-interfaces>}`."""
    g = _agent(ctx, p)
    return {
        "result": [
            {
                "name": "lo",
                "hardware-address": "00:00:00:00:00:00",
                "ip-addresses": [
                    {"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
                    {"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128},
                ],
            },
            {
                "name": "eth0" if g["config"].get("ostype") != "win11" else "Ethernet",
                "hardware-address": _mac(g),
                "ip-addresses": [
                    {"ip-address": _address(g["vmid"]), "ip-address-type": "ipv4", "prefix": 24},
                    {
                        "ip-address": f"fe80::be24:11ff:fe00:{g['vmid'] % 65536:x}",
                        "ip-address-type": "ipv6",
                        "prefix": 64,
                    },
                ],
            },
        ]
    }


@route("GET", "/nodes/{node}/qemu/{vmid}/agent/get-osinfo")
def agent_osinfo(ctx: Ctx, p: dict) -> dict:
    g = _agent(ctx, p)
    if g["config"].get("ostype") == "win11":
        info = {
            "id": "mswindows",
            "name": "Microsoft Windows",
            "pretty-name": "Windows 11 Pro",
            "version-id": "11",
        }
    else:
        info = {
            "id": "debian",
            "name": "Debian GNU/Linux",
            "pretty-name": "Debian GNU/Linux 12 (bookworm)",
            "version-id": "12",
            "kernel-release": "6.1.0-28-amd64",
            "machine": "x86_64",
        }
    return {"result": info}


@route("GET", "/nodes/{node}/lxc/{vmid}/interfaces")
def lxc_interfaces(ctx: Ctx, p: dict) -> list | None:
    """pve-container PVE/API2/LXC.pm 'ip' -> PVE::LXC::get_interfaces: `ip --json a` in the CT's
    network namespace; a stopped CT has no pid, so the answer is empty (null), not an error."""
    g = guest_of(ctx, p["node"], p["vmid"], "lxc")
    if g["status"] != "running":
        return None
    net0 = str(g["config"].get("net0", ""))
    ip = next((v.split("/")[0] for k, _, v in (s.partition("=") for s in net0.split(",")) if k == "ip"), "")
    addr = _address(g["vmid"]) if ip in ("", "dhcp", "manual") else ip
    mac = _mac(g)
    return [
        {
            "name": "lo",
            "hwaddr": "00:00:00:00:00:00",
            "hardware-address": "00:00:00:00:00:00",
            "inet": "127.0.0.1/8",
            "inet6": "::1/128",
            "ip-addresses": [
                {"ip-address": "127.0.0.1", "ip-address-type": "inet", "prefix": 8},
                {"ip-address": "::1", "ip-address-type": "inet6", "prefix": 128},
            ],
        },
        {
            "name": "eth0",
            "hwaddr": mac,
            "hardware-address": mac,
            "inet": f"{addr}/24",
            "ip-addresses": [{"ip-address": addr, "ip-address-type": "inet", "prefix": 24}],
        },
    ]
