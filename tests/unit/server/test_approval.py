"""Approval by the person: the official SDK client with an elicitation callback that accepts, one that
declines and one without elicitation, in both protocol eras (2025-11 sessions: ``legacy``; 2026-07 single
exchanges, where the question rides in an input_required result: ``auto``), under both policies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from mcp_types import ElicitResult

from pmcp.server.config import Approval, ApprovalScope

from .conftest import Served, connect, free_guests

ERAS = ["legacy", "auto"]


def _running_vm(served: Served, n: int) -> int:
    return free_guests(served, "qemu", "running")[n]


class Person:
    """An elicitation callback: the person's answer, and what they were shown."""

    def __init__(self, action: str) -> None:
        self.action = action
        self.shown: list[str] = []

    async def __call__(self, context: Any, params: Any) -> ElicitResult:
        self.shown.append(params.message)
        return ElicitResult(action=self.action, content={} if self.action == "accept" else None)


def stop(served: Served, era: str, args: dict[str, Any], person: Person | None) -> Any:
    async def go() -> Any:
        kwargs = {"elicitation_callback": person} if person else {}
        async with connect(served, mode=era, **kwargs) as client:
            return await client.call_tool("guest_power", {"action": "stop"} | args)

    return anyio.run(go)


def outcomes(served: Served, tool: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in served.audit_path.read_text().splitlines()]
    return [r for r in records if r.get("tool") == tool and r["phase"] == "outcome"]


@pytest.fixture(scope="module")
def fallback(sim: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from .conftest import serve

    with serve(sim, tmp_path_factory.mktemp("confirm"), approval=Approval.CONFIRM) as s:
        yield s


@pytest.fixture(scope="module")
def strict(sim: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from .conftest import serve

    with serve(sim, tmp_path_factory.mktemp("elicit"), approval=Approval.ELICIT) as s:
        yield s


def _restart(served: Served, vmid: int) -> None:
    with served.sim.state.lock:  # the shared world's guest back as it was, for the other tests
        served.sim.state.world["guests"][str(vmid)].update(status="running")


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("policy", ["fallback", "strict"])
def test_an_accept_acts_even_without_confirm(era: str, policy: str, request: pytest.FixtureRequest) -> None:
    served: Served = request.getfixturevalue(policy)
    vmid = _running_vm(served, 0)
    person = Person("accept")
    result = stop(served, era, {"vmid": vmid, "wait_seconds": 30}, person)
    assert not result.is_error, result.content[0].text
    assert result.structured_content["outcome"] == "ok"
    assert served.sim.state.guest(vmid)["status"] == "stopped"
    assert (
        len(person.shown) == 1 and f"VM {vmid}" in person.shown[0] and "pulling the plug" in person.shown[0]
    )
    *earlier, record = outcomes(served, "guest_power")
    assert record["approval"] == {"by": "person", "how": "elicitation", "answer": "accept"}
    assert record["outcome"] == "ok"
    # 2026-07: the first exchange ended with the question (input_required), the second one acted
    assert bool(earlier and earlier[-1]["outcome"] == "approval-asked") is (era == "auto")
    _restart(served, vmid)


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("answer", ["decline", "cancel"])
def test_a_decline_changes_nothing_even_with_confirm(fallback: Served, era: str, answer: str) -> None:
    """confirm=true is the model's word: it does not replace the person's answer."""
    vmid = _running_vm(fallback, 0)
    fallback.sim.state.clear_requests()
    person = Person(answer)
    result = stop(fallback, era, {"vmid": vmid, "confirm": True}, person)
    assert not result.is_error, result.content[0].text
    assert result.structured_content["outcome"] == "declined"
    assert "Nothing done" in result.content[0].text
    assert len(person.shown) == 1
    assert fallback.sim.state.guest(vmid)["status"] == "running"
    assert not [p for m, p in fallback.sim.state.requests if m == "POST"], "nothing was sent to Proxmox"
    record = outcomes(fallback, "guest_power")[-1]
    assert record["approval"] == {"by": "person", "how": "elicitation", "answer": answer}
    assert record["outcome"] == "declined"


@pytest.mark.parametrize("era", ERAS)
def test_without_elicitation_the_fallback_takes_confirm(fallback: Served, era: str) -> None:
    vmid = _running_vm(fallback, 1)
    plan = stop(fallback, era, {"vmid": vmid}, None)
    assert plan.structured_content["outcome"] == "plan"
    assert "confirm=true" in plan.structured_content["plan"]["to_proceed"]
    assert fallback.sim.state.guest(vmid)["status"] == "running"
    done = stop(fallback, era, {"vmid": vmid, "confirm": True, "wait_seconds": 30}, None)
    assert done.structured_content["outcome"] == "ok"
    assert fallback.sim.state.guest(vmid)["status"] == "stopped"
    assert outcomes(fallback, "guest_power")[-1]["approval"] == {
        "by": "model",
        "how": "confirm",
        "answer": "accept",
    }
    _restart(fallback, vmid)


@pytest.mark.parametrize("era", ERAS)
def test_without_elicitation_the_strict_policy_refuses(strict: Served, era: str) -> None:
    vmid = _running_vm(strict, 1)
    strict.sim.state.clear_requests()
    result = stop(strict, era, {"vmid": vmid, "confirm": True}, None)
    assert result.is_error
    text = result.content[0].text
    assert "elicitation" in text and "--approval confirm" in text
    assert strict.sim.state.guest(vmid)["status"] == "running"
    assert not [p for m, p in strict.sim.state.requests if m == "POST"]
    assert outcomes(strict, "guest_power")[-1]["outcome"] == "refused"


@pytest.mark.parametrize("era", ERAS)
def test_scope_changes_asks_before_every_change(make_server: Any, era: str) -> None:
    """--approval-scope changes: a change that does not plan by itself (guest_power start) is asked too;
    declined, nothing starts."""
    with make_server(approval_scope=ApprovalScope.CHANGES) as served:
        vmid = next(
            int(v)
            for v, g in sorted(served.sim.state.world["guests"].items(), key=lambda kv: int(kv[0]))
            if g["type"] == "qemu" and g["status"] == "stopped" and not g["template"]
        )
        person = Person("decline")

        async def go() -> Any:
            async with connect(served, mode=era, elicitation_callback=person) as client:
                return await client.call_tool("guest_power", {"action": "start", "vmid": vmid})

        result = anyio.run(go)
        # guest_power plans (it has confirm), so a decline is its "declined" outcome, not an error
        assert "declined" in result.content[0].text
        assert result.is_error or result.structured_content["outcome"] == "declined"
        assert person.shown and "guest_power" in person.shown[0]
        assert served.sim.state.guest(vmid)["status"] == "stopped"


def test_one_accept_approves_one_call(fallback: Served) -> None:
    """2026-07, driven by hand: the answer and the sealed state act once; sent again they are asked anew, and
    the state does not carry over to other arguments (the SDK binds it to the tool and its arguments)."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import CallToolResult, InputRequiredResult

    from pmcp.server.approval import ELICIT_KEY

    vmid, other = _running_vm(fallback, 0), _running_vm(fallback, 1)
    fallback.sim.state.clear_requests()
    yes = {ELICIT_KEY: ElicitResult(action="accept", content={})}

    async def go() -> tuple[Any, Any, str]:
        async with connect(fallback, mode="auto", elicitation_callback=Person("accept")) as client:
            s = client.session
            first = await s.call_tool(
                "guest_power", {"action": "reset", "vmid": vmid}, allow_input_required=True
            )
            assert isinstance(first, InputRequiredResult), first
            again = dict(input_responses=yes, request_state=first.request_state, allow_input_required=True)
            done = await s.call_tool("guest_power", {"action": "reset", "vmid": vmid}, **again)
            replay = await s.call_tool("guest_power", {"action": "reset", "vmid": vmid}, **again)
            try:
                moved = await s.call_tool("guest_power", {"action": "reset", "vmid": other}, **again)
                error = f"answered: {moved}"
            except MCPError as exc:
                error = str(exc)
            return done, replay, error

    done, replay, error = anyio.run(go)
    assert isinstance(done, CallToolResult) and done.structured_content["outcome"] == "ok"
    assert isinstance(replay, InputRequiredResult)  # asked again: nothing acted on the replayed answer
    assert "requestState" in error
    resets = [p for m, p in fallback.sim.state.requests if m == "POST" and p.endswith("/status/reset")]
    assert len(resets) == 1


def test_an_answer_reaches_any_server_of_the_install_but_no_other_client(
    make_server: Any, tmp_path: Any
) -> None:
    """2026-07: the question asked by one server process is answered on another (as during `pmcp update`),
    once for the whole install (the servers share the sessions directory); the sealed state names the
    client token, so another client cannot send it."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import CallToolResult, InputRequiredResult

    from pmcp import authtokens
    from pmcp.server.approval import ELICIT_KEY

    yes = {ELICIT_KEY: ElicitResult(action="accept", content={})}
    shared = tmp_path / "sessions"
    with make_server(session_dir=shared) as one, make_server(session_dir=shared) as two:
        vmid = _running_vm(one, 0)
        other = authtokens.add(one.config.auth_token_file, "other-client")

        async def ask(served: Served, token: str | None = None, state: str | None = None) -> Any:
            async with connect(served, mode="auto", token=token, elicitation_callback=Person("accept")) as c:
                extra = {"input_responses": yes, "request_state": state} if state else {}
                try:
                    return await c.session.call_tool(
                        "guest_power", {"action": "reset", "vmid": vmid}, allow_input_required=True, **extra
                    )
                except MCPError as exc:
                    return str(exc)

        async def go() -> tuple[Any, Any, Any]:
            first = await ask(one)
            assert isinstance(first, InputRequiredResult)
            stolen = await ask(one, other, first.request_state)
            done = await ask(two, state=first.request_state)
            replayed = await ask(one, state=first.request_state)
            return done, stolen, replayed

        done, stolen, replayed = anyio.run(go)
    assert isinstance(done, CallToolResult) and done.structured_content["outcome"] == "ok", done
    assert isinstance(stolen, str) and "requestState" in stolen, stolen
    assert isinstance(replayed, InputRequiredResult)  # spent on two, so one asks again


@pytest.mark.parametrize("era", ERAS)
def test_the_persons_accept_counts_against_the_hourly_budget(make_server: Any, era: str) -> None:
    """An accept acts without confirm=true, so it is what takes a destructive action of the client's hour;
    a decline takes none."""
    with make_server(destructive_per_hour=1) as served:
        vmid = _running_vm(served, 0)
        served.sim.state.clear_requests()

        async def reset(person: Person, confirm: bool) -> Any:
            async with connect(served, mode=era, elicitation_callback=person) as client:
                return await client.call_tool(
                    "guest_power", {"action": "reset", "vmid": vmid, "confirm": confirm}
                )

        declined = anyio.run(reset, Person("decline"), True)  # taken before the body, given back
        first = anyio.run(reset, Person("accept"), False)  # taken at the accept
        second = anyio.run(reset, Person("accept"), False)
    assert declined.structured_content["outcome"] == "declined"
    assert first.structured_content["outcome"] == "ok", first.content[0].text
    assert second.is_error and "destructive actions" in second.content[0].text
    resets = [p for m, p in served.sim.state.requests if m == "POST" and p.endswith("/status/reset")]
    assert len(resets) == 1
