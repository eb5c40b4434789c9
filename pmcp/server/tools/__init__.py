"""The tools, one module per domain. Importing this package declares them all in ``registry.TOOLS``."""

from pmcp.server.tools import (
    access,
    backups,
    cluster,
    configure,
    create,
    guests,
    infra,
    observe,
    provision,
    snapshots,
    storage,
    tasks,
    undo,
)

__all__ = [
    "access",
    "backups",
    "cluster",
    "configure",
    "create",
    "guests",
    "infra",
    "observe",
    "provision",
    "snapshots",
    "storage",
    "tasks",
    "undo",
]
