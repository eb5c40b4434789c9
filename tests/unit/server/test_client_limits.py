"""Per-client limits through the official SDK client against the simulator: a client token's own mode
(tools/list and tools/call), its guest scope (lists, lookups by VMID, tasks) and its hourly budget of
destructive actions, with several tokens of one admin-mode server side by side."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from pmcp import authtokens
from pmcp.authtokens import TokenLimits
from pmcp.server.auth import TokenStore
from pmcp.server.config import ConfigError, Mode, ServerConfig
from pmcp.server.limits import DestructiveBudget
from pmcp.server.policy import GuestScope, client_mode, split_tags
from pmcp.sim.testing import running_sim

from .conftest import Served, connect, serve

SCOPE = TokenLimits(mode="operator", tags=("web",), pools=("lab",))


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, dict[str, str]]]:
    with (
        running_sim(nodes=2, guests=30, seed=7, task_seconds=0.05) as sim,
        serve(sim, Path(tmp_path_factory.mktemp("limits")), mode=Mode.ADMIN) as s,
    ):
        path = s.config.auth_token_file
        assert path is not None
        tokens = {
            "viewer": authtokens.add(path, "viewer", TokenLimits(mode="read-only")),
            "ops": authtokens.add(path, "ops", TokenLimits(mode="operator")),
            "web": authtokens.add(path, "web", SCOPE),
            "careful": authtokens.add(path, "careful", TokenLimits(budget=2)),
            "webadmin": authtokens.add(path, "webadmin", TokenLimits(tags=("web",))),
        }
        add_tag(s, guests(s, "qemu", "stopped", pool_not="lab")[0], "web")  # in scope by its tag only
        add_tag(s, guests(s, "qemu", "running")[-1], "pmcp-protected")
        yield s, tokens


def guests(s: Served, kind: str | None, status: str | None, pool_not: str | None = None) -> list[int]:
    return [
        int(v)
        for v, g in sorted(s.sim.state.world["guests"].items(), key=lambda kv: int(kv[0]))
        if (kind is None or g["type"] == kind)
        and (status is None or g["status"] == status)
        and not g["template"]
        and "pmcp-protected" not in str(g["config"].get("tags", ""))
        and (pool_not is None or g.get("pool") != pool_not)
    ]


def add_tag(s: Served, vmid: int, tag: str) -> None:
    g = s.sim.state.world["guests"][str(vmid)]
    tags = ";".join([*split_tags(g["config"].get("tags")), tag])
    path = f"/nodes/{g['node']}/{g['type']}/{vmid}/config"
    assert s.sim.request("PUT", path, params={"tags": tags})[0] == 200


def in_scope(s: Served) -> set[int]:
    return {
        int(v)
        for v, g in s.sim.state.world["guests"].items()
        if "web" in split_tags(g["config"].get("tags")) or g.get("pool") == "lab"
    }


def status_of(s: Served, vmid: int) -> str:
    return str(s.sim.state.world["guests"][str(vmid)]["status"])


def call(s: Served, token: str, name: str, args: dict[str, Any], era: str = "legacy") -> Any:
    async def go() -> Any:
        async with connect(s, mode=era, token=token) as client:
            return await client.call_tool(name, args)

    return anyio.run(go)


def tool_names(s: Served, token: str, era: str) -> set[str]:
    async def go() -> set[str]:
        async with connect(s, mode=era, token=token) as client:
            return {t.name for t in (await client.list_tools()).tools}

    return anyio.run(go)


def text(result: Any) -> str:
    return str(result.content[0].text)


@pytest.mark.parametrize(("era", "n"), [("legacy", 1), ("auto", 2)])
def test_a_read_only_token_cannot_start_a_vm_the_operator_token_can(
    limited: tuple[Served, dict[str, str]], era: str, n: int
) -> None:
    s, t = limited
    listed = tool_names(s, t["viewer"], era)
    assert "list_guests" in listed and "capabilities" in listed
    assert not listed & {"guest_power", "snapshot"}, "not advertised to this token"
    assert {"guest_power"} <= tool_names(s, t["ops"], era) and "delete_guest" not in tool_names(
        s, t["ops"], era
    )
    assert "delete_guest" in tool_names(s, s.token, era), "a token without limits has the server's mode"

    vmid = guests(s, "qemu", "stopped", pool_not="lab")[n]
    refused = call(s, t["viewer"], "guest_power", {"action": "start", "vmid": vmid}, era)
    assert refused.is_error and "limited to mode read-only" in text(refused), text(refused)
    assert "--token-name viewer --mode operator" in text(refused), "the answer names the fix"
    assert status_of(s, vmid) == "stopped"
    started = call(s, t["ops"], "guest_power", {"action": "start", "vmid": vmid}, era)
    assert not started.is_error and started.structured_content["outcome"] == "ok", text(started)
    assert status_of(s, vmid) == "running"
    stop = call(s, t["ops"], "guest_power", {"action": "stop", "vmid": vmid, "confirm": True}, era)
    assert stop.is_error and "limited to mode operator" in text(stop)
    assert status_of(s, vmid) == "running"
    audit = [json.loads(line) for line in s.audit_path.read_text().splitlines()]
    assert any(
        e["client"] == "viewer" and e["phase"] == "refused" and e["tool"] == "guest_power" for e in audit
    ), "refusals by a token's mode are audited"


def test_a_scoped_token_does_not_see_or_touch_guests_outside_its_scope(
    limited: tuple[Served, dict[str, str]],
) -> None:
    s, t = limited
    web = t["web"]
    inside = in_scope(s)
    listed = call(s, web, "list_guests", {"limit": 200}).structured_content
    assert {g["vmid"] for g in listed["guests"]} == inside and listed["total"] == len(inside)
    counts = call(s, web, "cluster_overview", {}).structured_content["guests"]
    assert counts["vms"] + counts["containers"] == len(inside)

    outside = next(v for v in guests(s, "qemu", "stopped") if v not in inside)
    for name, args in [
        ("guest_info", {"vmid": outside}),
        ("guest_power", {"action": "start", "vmid": outside}),
        ("guest_info", {"show": "snapshots", "vmid": outside}),
        ("tasks", {"vmid": outside}),
    ]:
        r = call(s, web, name, args)
        assert r.is_error and f"vmid {outside}: not in this client's scope (tag web or pool lab)" in text(r)
    missing = call(s, web, "guest_info", {"vmid": 999_999})
    assert text(missing) == text(call(s, web, "guest_info", {"vmid": outside})).replace(
        str(outside), "999999"
    ), "a guest outside the scope and no guest at all get the same answer"
    assert status_of(s, outside) == "stopped"

    by_tag = next(v for v in guests(s, "qemu", "stopped") if v in inside)
    assert not call(s, web, "guest_power", {"action": "start", "vmid": by_tag}).is_error
    assert status_of(s, by_tag) == "running"
    tasks = call(s, web, "tasks", {"limit": 200}).structured_content["tasks"]
    assert tasks and all(int(task["id"]) in inside for task in tasks)

    caps = call(s, web, "capabilities", {}).structured_content
    assert caps["client"]["scope"] == {"tags": ["web"], "pools": ["lab"]}
    assert caps["client"]["mode"] == "operator" and caps["mode"] == "admin"
    assert "delete_guest" in caps["tools_disabled"] and "guest_power" in caps["tools_available"]
    assert not any(p.startswith("/vms/") and int(p[5:]) not in inside for p in caps["permissions"])
    clone = call(s, t["webadmin"], "create_guest", {"source": by_tag, "name": "copy"})
    assert clone.is_error and "creates no guests" in text(clone)


def test_a_guest_taken_out_of_the_scope_pool_is_refused_at_once(
    limited: tuple[Served, dict[str, str]],
) -> None:
    """The locator's memory says where a guest is, never whether it is in scope: pool membership is
    read fresh from the cluster listing (status/current carries no pool)."""
    s, t = limited
    world = s.sim.state.world["guests"]
    member = next(
        v
        for v in guests(s, None, None)
        if world[str(v)].get("pool") == "lab" and "web" not in split_tags(world[str(v)]["config"].get("tags"))
    )
    seen = call(s, t["web"], "guest_info", {"vmid": member})
    assert not seen.is_error, text(seen)
    assert s.sim.request("PUT", "/pools", params={"poolid": "lab", "vms": str(member), "delete": 1})[0] == 200
    gone = call(s, t["web"], "guest_info", {"vmid": member})
    assert gone.is_error and "not in this client's scope" in text(gone)
    assert not call(s, t["ops"], "guest_info", {"vmid": member}).is_error, "other tokens are unaffected"


def test_the_budget_refuses_the_n_plus_first_destructive_action(
    limited: tuple[Served, dict[str, str]],
) -> None:
    """budget=2: two confirmed destructive calls act, the third is refused with the retry time, in
    any session; plans never count; a call refused before acting gives its one back."""
    s, t = limited
    careful = t["careful"]
    running = [v for v in guests(s, "lxc", "running")][:3]
    assert len(running) == 3
    world = s.sim.state.world["guests"]
    protected = next(int(v) for v, g in world.items() if "pmcp-protected" in str(g["config"].get("tags")))
    r = call(s, careful, "guest_power", {"action": "stop", "vmid": protected, "confirm": True})
    assert r.is_error and "pmcp-protected" in text(r)
    budget = call(s, careful, "capabilities", {}).structured_content["client"]["destructive_budget"]
    assert budget["per_hour"] == 2 and budget["remaining"] == 2, "a refused call took nothing"

    for vmid in running[:2]:  # each call in its own session: counted per token, not per session
        plan = call(s, careful, "guest_power", {"action": "stop", "vmid": vmid})
        assert plan.structured_content["outcome"] == "plan"
        done = call(s, careful, "guest_power", {"action": "stop", "vmid": vmid, "confirm": True}, era="auto")
        assert done.structured_content["outcome"] == "ok", text(done)
    third = call(s, careful, "guest_power", {"action": "stop", "vmid": running[2], "confirm": True})
    assert third.is_error, text(third)
    assert "has taken its 2 destructive actions of the last hour" in text(third)
    assert "retry after" in text(third) and "--token-name careful --budget N" in text(third)
    assert status_of(s, running[2]) == "running", "nothing was done"
    assert (
        call(s, careful, "guest_power", {"action": "stop", "vmid": running[2]}).structured_content["outcome"]
        == "plan"
    )
    budget = call(s, careful, "capabilities", {}).structured_content["client"]["destructive_budget"]
    assert budget["remaining"] == 0 and 0 < budget["next_freed_in_seconds"] <= 3600
    other = call(s, s.token, "guest_power", {"action": "stop", "vmid": running[2], "confirm": True})
    assert not other.is_error, "another token has its own budget (the server's default)"


def test_a_token_never_gets_more_than_the_server_and_scopes_match_as_proxmox_names() -> None:
    assert client_mode(Mode.OPERATOR, "admin") is Mode.OPERATOR, "never above the install's mode"
    assert client_mode(Mode.ADMIN, "read-only") is Mode.READ_ONLY
    assert client_mode(Mode.OPERATOR, None) is Mode.OPERATOR
    scope = GuestScope(tags=["Web"], pools=["lab"])
    assert scope.contains(["WEB"], None) and scope.contains([], "lab/sub") and scope.contains([], "lab")
    assert not scope.contains(["webserver"], "laboratory") and not scope.contains([], None)
    assert scope.contains_item({"vmid": 100, "tags": "db;web", "pool": "prod"})
    assert GuestScope().contains([], None), "no scope: every guest"


def test_the_budget_is_a_sliding_hour_and_a_lowered_budget_holds_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    now = [1000.0]
    monkeypatch.setattr("pmcp.server.limits.time.time", lambda: now[0])
    budget = DestructiveBudget(default=3)
    assert [budget.take("a", None) for _ in range(3)] == [None, None, None]
    now[0] += 600
    assert budget.take("a", None) == pytest.approx(3000.0), "the oldest leaves the window in 50 min"
    assert budget.take("b", None) is None, "another token has its own"
    assert budget.take("a", 1) == pytest.approx(3000.0), "lowered to 1: wait until two have left"
    assert budget.take("c", 0) == float("inf")
    now[0] += 3000
    assert budget.remaining("a", None) == (3, 3, None)
    (tmp_path / "secret").write_text("s3cr3t-value\n")
    env = {"PROXMOX_TOKEN_ID": "pmcp@pve!mcp", "PROXMOX_TOKEN_SECRET_FILE": str(tmp_path / "secret")}
    assert ServerConfig.from_env(env).destructive_per_hour == 10, "the default"
    assert ServerConfig.from_env(env | {"PMCP_DESTRUCTIVE_PER_HOUR": "0"}).destructive_per_hour == 0
    with pytest.raises(ConfigError, match="PMCP_DESTRUCTIVE_PER_HOUR='-1': use at least 0"):
        ServerConfig.from_env(env | {"PMCP_DESTRUCTIVE_PER_HOUR": "-1"})


def test_the_servers_of_one_install_share_one_count(tmp_path: Path) -> None:
    """A restart, or the old and new server of an update side by side: one count per token, kept in
    the install's sessions directory (0600), so a new process does not start a fresh hour."""
    old, new = DestructiveBudget(2, tmp_path), DestructiveBudget(2, tmp_path)
    assert old.take("ci", None) is None and new.take("ci", None) is None
    assert old.take("ci", None) is not None and new.take("ci", None) is not None
    assert new.remaining("ci", None)[:2] == (2, 0)
    new.refund("ci")
    assert old.remaining("ci", None)[:2] == (2, 1), "a refund is seen by the other server too"
    assert (tmp_path / "budget-ci").stat().st_mode & 0o777 == 0o600
    (tmp_path / "budget-ci").write_text("not json")
    assert old.take("ci", None) is None, "a damaged file starts the count again, it never blocks a call"


def test_the_auth_layer_refuses_a_token_whose_limits_it_cannot_read(tmp_path: Path) -> None:
    path = tmp_path / "client-tokens"
    path.write_text(
        "ok:" + "x" * 20 + "\nro:" + "y" * 20 + " ‖ mode=read-only\nnew:" + "z" * 20 + " ‖ hours=9\n"
    )
    store = TokenStore(path)
    assert store.match_limits("x" * 20) == ("ok", authtokens.NO_LIMITS)
    assert store.match_limits("y" * 20) == ("ro", TokenLimits(mode="read-only"))
    assert store.match_limits("z" * 20) == (None, authtokens.NO_LIMITS), "refused, never served unlimited"


def test_grouped_tools_keep_a_scoped_token_inside_its_scope(limited: tuple[Served, dict[str, str]]) -> None:
    """Issue 14's tools: a tagged bulk action plans only the scope's guests; cluster_info leaves out rows
    about other guests; a token limited to operator may set tags but not memory (set_guest_config)."""
    s, t = limited
    world = s.sim.state.world["guests"]
    inside = in_scope(s)
    everyone = {int(v) for v, g in world.items() if not g["template"]}
    tagged = next(v for v in sorted(everyone - inside) if str(v))
    add_tag(s, tagged, "batch")
    add_tag(s, next(v for v in sorted(inside) if not world[str(v)]["template"]), "batch")
    plan = call(s, t["web"], "guest_power", {"action": "start", "tag": "batch"})
    assert plan.structured_content["outcome"] == "plan", text(plan)
    assert str(tagged) not in text(plan), "a guest outside the scope is not even named"
    ha = call(s, t["web"], "cluster_info", {"topic": "templates"}).structured_content["items"]
    assert all(r.get("vmid") in inside for r in ha if "vmid" in r)
    vmid = next(v for v in sorted(inside) if not world[str(v)]["template"])
    tags = call(s, t["ops"], "set_guest_config", {"vmid": vmid, "tags": ["web", "ok"]})
    assert not tags.is_error, text(tags)
    memory = call(s, t["ops"], "set_guest_config", {"vmid": vmid, "memory_mib": 2048})
    assert memory.is_error and "limited to mode operator" in text(memory)
