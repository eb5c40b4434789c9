"""The simulated endpoints, one module per API area; importing this registers them all."""

from pmcp.sim.api import (  # noqa: F401
    access,
    cluster,
    firewall,
    guests,
    ha,
    infra,
    observe,
    provision,
    storage,
    tasks,
)
