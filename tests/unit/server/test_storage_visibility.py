"""Backups and disk images a mode's token cannot see are named, not silently missing.

Proxmox leaves a volume out of a storage listing unless the token passes check_volume_access
(pve-storage src/PVE/Storage.pm): a backup needs Datastore.AllocateSpace on its storage and
VM.Backup on its guest, a disk image Datastore.Audit and VM.Config.Disk. The tokens here are made
the way install makes them: the mode's role (pmcp.host.pve.mode_privileges), privilege-separated,
with the role on / for both the user and the token."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from pmcp.server.config import Mode
from pmcp.sim.testing import RunningSim, running_sim

from .conftest import connect, mode_token, serve


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSim]:
    with running_sim(nodes=1, guests=12, seed=3, task_seconds=0.05) as s:
        vm = next(g for g in s.state.world["guests"].values() if g["type"] == "qemu" and not g["template"])
        status, upid = s.request("POST", f"/nodes/{vm['node']}/vzdump", params={"vmid": vm["vmid"]})
        assert status == 200, upid
        for _ in range(200):
            if s.state.task(upid["data"])["status"] == "stopped":
                break
            time.sleep(0.02)
        s.vmid = vm["vmid"]  # type: ignore[attr-defined]
        s.node = vm["node"]  # type: ignore[attr-defined]
        yield s


def call(sim: RunningSim, tmp: Path, mode: str, tool: str, args: dict[str, Any]) -> Any:
    token_id, secret = mode_token(sim, mode)
    with serve(sim, tmp, Mode(mode), proxmox_token_id=token_id, proxmox_token_secret=secret) as served:

        async def go() -> Any:
            async with connect(served) as client:
                return await client.call_tool(tool, args)

        result = anyio.run(go)
    assert not result.is_error, result.content[0].text
    return result


def test_read_only_names_the_privilege_that_hides_backups(sim: RunningSim, tmp_path: Path) -> None:
    r = call(sim, tmp_path, "read-only", "list_storage", {"content": "backup", "vmid": sim.vmid})
    data = r.structured_content
    assert data["total"] == 0
    assert data["hidden"] and all("Datastore.AllocateSpace" in h for h in data["hidden"])
    assert "Not shown: backups on local are not shown" in r.content[0].text


def test_operator_sees_the_backups_and_nothing_is_hidden(sim: RunningSim, tmp_path: Path) -> None:
    data = call(
        sim, tmp_path, "operator", "list_storage", {"content": "backup", "vmid": sim.vmid}
    ).structured_content
    assert data["total"] >= 1 and "hidden" not in data


def test_disk_images_need_vm_config_disk_which_only_admin_holds(sim: RunningSim, tmp_path: Path) -> None:
    args = {"node": sim.node, "storage": "local-lvm", "content": "images"}
    data = call(sim, tmp_path, "operator", "list_storage", args).structured_content
    assert data["total"] == 0
    assert data["hidden"] == [
        "disk images of guests it lacks it on are not shown: Proxmox shows them only with "
        "Datastore.Audit on /storage/local-lvm and VM.Config.Disk on the guest; this token lacks "
        "VM.Config.Disk on /vms"
    ]
    admin = call(sim, tmp_path / "admin", "admin", "list_storage", args).structured_content
    assert admin["total"] > 0 and "hidden" not in admin, "the images exist; operator does not see them"
