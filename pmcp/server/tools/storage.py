"""Storage: what storages exist with their usage, and what a storage holds."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from pmcp.server import validate
from pmcp.server.policy import Risk
from pmcp.server.registry import Call, Reply, tool
from pmcp.server.tools.backups import Backup, list_backups
from pmcp.server.tools.common import Node, Vmid, hidden_volumes, resolve_guest, scope_vmids, vmid_visible


class StorageItem(BaseModel):
    storage: str
    node: str | None = None
    type: str | None = None
    status: str | None = None
    content: str | None = None
    shared: bool | None = None
    used: int | None = None
    total: int | None = None
    avail: int | None = None


class StorageList(BaseModel):
    total: int
    storages: list[StorageItem]


async def _storages(call: Call, node: str | None) -> Reply:
    """Storages with type, content types and usage: on one node, or cluster-wide (one row per node)."""
    out: list[StorageItem] = []
    if node:
        for s in await call.px.get(validate.api_path("nodes", validate.node(node), "storage")) or []:
            out.append(
                StorageItem(
                    storage=s.get("storage"),
                    node=node,
                    type=s.get("type"),
                    content=s.get("content"),
                    status="available" if s.get("active") else "inactive",
                    shared=bool(s.get("shared")),
                    used=s.get("used"),
                    total=s.get("total"),
                    avail=s.get("avail"),
                )
            )
    else:
        for s in await call.px.get("/cluster/resources", type="storage") or []:
            if s.get("type") != "storage":
                continue
            total, used = s.get("maxdisk"), s.get("disk")
            out.append(
                StorageItem(
                    storage=s.get("storage"),
                    node=s.get("node"),
                    type=s.get("plugintype"),
                    status=s.get("status"),
                    content=s.get("content"),
                    shared=bool(s.get("shared")),
                    used=used,
                    total=total,
                    avail=(total - used) if isinstance(total, int) and isinstance(used, int) else None,
                )
            )
    out.sort(key=lambda s: (s.storage, s.node or ""))
    lines = [f"{len(out)} storage entries."]
    for s in out:
        pct = f"{100 * (s.used or 0) / s.total:.0f}% used" if s.total else "usage unknown"
        lines.append(f"- {s.storage} on {s.node or '?'} ({s.type}, {s.status}, {pct}, content {s.content})")
    return Reply(StorageList(total=len(out), storages=out), "\n".join(lines))


class Volume(BaseModel):
    volid: str
    content: str | None = None
    format: str | None = None
    size: int | None = None
    vmid: int | None = None
    ctime: int | None = None


class VolumeList(BaseModel):
    node: str
    storage: str
    total: int
    offset: int
    next_offset: int | None = None
    volumes: list[Volume]
    hidden: list[str] | None = Field(
        None, description="Volumes Proxmox does not show this server's token, and the privilege it lacks"
    )


async def _content(
    call: Call, node: str, storage: str, content: str | None, vmid: int | None, limit: int, offset: int
) -> Reply:
    """The volumes on one storage of one node (disk images, ISOs, templates, backups), paginated."""
    path = validate.api_path("nodes", validate.node(node), "storage", validate.storage(storage), "content")
    if vmid is not None and call.scope:
        await resolve_guest(call, vmid)  # applies the client's scope
    inside = await scope_vmids(call)
    raw = [
        v
        for v in await call.px.get(path, content=content, vmid=vmid) or []
        if vmid_visible(v.get("vmid"), inside, guestless=True)
    ]
    hidden = await hidden_volumes(call, storage, [content] if content else ["backup", "images"], vmid)
    vols = sorted(
        (
            Volume(
                volid=str(v.get("volid")),
                content=v.get("content"),
                format=v.get("format"),
                size=v.get("size"),
                vmid=v.get("vmid"),
                ctime=v.get("ctime"),
            )
            for v in raw
        ),
        key=lambda v: v.volid,
    )
    page = vols[offset : offset + limit]
    nxt = offset + len(page) if offset + len(page) < len(vols) else None
    lines = [
        f"{len(vols)} volume(s) on {storage}@{node}; showing {len(page)}"
        + (f", next offset={nxt}." if nxt else ".")
    ]
    lines += [f"- {v.volid} ({v.content}, {(v.size or 0) / 1024**3:.2f} GiB)" for v in page]
    lines += [f"Not shown: {h}." for h in hidden]
    data = VolumeList(
        node=node,
        storage=storage,
        total=len(vols),
        offset=offset,
        next_offset=nxt,
        volumes=page,
        hidden=hidden or None,
    )
    return Reply(data, "\n".join(lines))


class StorageAnswer(BaseModel):
    """list_storage's answer: the storages (total, storages), one storage's volumes (node, storage,
    volumes...) or the backups (storages searched, backups)."""

    total: int
    storages: list[StorageItem] | list[str] | None = None
    returned: int | None = None
    backups: list[Backup] | None = None
    node: str | None = None
    storage: str | None = None
    offset: int | None = None
    next_offset: int | None = None
    volumes: list[Volume] | None = None
    hidden: list[str] | None = Field(
        None, description="Volumes Proxmox does not show this server's token, and the privilege it lacks"
    )


# The storage list and one storage's content in one tool (issue 14: tools/list stays small).
@tool(Risk.READ, "Storages and their content", StorageAnswer)
async def list_storage(
    call: Call,
    node: Node | None = None,
    storage: Annotated[
        str | None,
        Field(pattern=validate.STORAGE_PATTERN, description="List this storage's volumes (needs node)"),
    ] = None,
    content: Annotated[
        Literal["images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import"] | None,
        Field(description="With storage: only this content type"),
    ] = None,
    vmid: Vmid | None = None,
    limit: Annotated[int, Field(ge=1, le=500, description="Page size")] = 50,
    offset: Annotated[int, Field(ge=0, description="Skip this many")] = 0,
) -> Reply:
    """Storages with usage (a node's or all); with storage and node: its volumes; content=backup: backups,
    newest first."""
    if content == "backup":
        reply = await list_backups(call, vmid, storage, node, limit)
    elif storage is None:
        reply = await _storages(call, node)
    elif node is None:
        raise validate.InvalidArgument(
            "node: name the node whose storage to list (storage content is per node)"
        )
    else:
        reply = await _content(call, node, storage, content, vmid, limit, offset)
    return Reply(StorageAnswer(**reply.data.model_dump(exclude_none=True)), reply.text)
