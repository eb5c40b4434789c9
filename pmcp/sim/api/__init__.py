"""The simulated endpoints, one module per API area; importing this registers them all."""

from pmcp.sim.api import access, cluster, firewall, guests, ha, observe, provision, storage, tasks  # noqa: F401
