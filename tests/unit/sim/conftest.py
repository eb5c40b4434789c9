"""Fixtures for the simulator's tests: a running simulator and identities made through its API."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pmcp.sim.testing import RunningSim, running_sim


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSim]:
    with running_sim(nodes=3, guests=40, seed=7, task_seconds=0.05) as s:
        yield s


@dataclass
class Identity:
    userid: str
    tokenid: str
    secret: str

    @property
    def token(self) -> str:
        return f"{self.userid}!{self.tokenid}={self.secret}"


def ok(result: tuple[int, dict]) -> object:
    status, body = result
    assert status == 200, body
    return body["data"]


def make_identity(
    sim: RunningSim,
    userid: str,
    role: str | None = None,
    privs: str = "",
    user_acl: str | None = "/",
    token_acl: str | None = "/",
    token_role: str | None = None,
    privsep: int = 1,
    groups: str | None = None,
) -> Identity:
    """Create a role (if privs), a user, a token, and ACLs through the API, as the installer does."""
    if role and privs:
        existing = {r["roleid"] for r in ok(sim.request("GET", "/access/roles"))}
        if role not in existing:
            ok(sim.request("POST", "/access/roles", params={"roleid": role, "privs": privs}))
    params = {"userid": userid}
    if groups:
        params["groups"] = groups
    ok(sim.request("POST", "/access/users", params=params))
    created = ok(sim.request("POST", f"/access/users/{userid}/token/tok", params={"privsep": privsep}))
    if role and user_acl:
        ok(sim.request("PUT", "/access/acl", params={"path": user_acl, "roles": role, "users": userid}))
    if (token_role or role) and token_acl and privsep:
        ok(
            sim.request(
                "PUT",
                "/access/acl",
                params={"path": token_acl, "roles": token_role or role, "tokens": f"{userid}!tok"},
            )
        )
    return Identity(userid, "tok", created["value"])
