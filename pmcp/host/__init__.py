"""What touches the Proxmox host: each change is a Step (pmcp.steps) with check/apply/undo.

Install order (uninstall undoes in reverse): ``Preflight`` (changes nothing; ``.facts`` after check()),
``ForwardSafety`` (VM bridges keep working under Docker; in dockeruser.py with every DOCKER-USER
rule), ``ProxmoxIdentity`` (role, user, token, ACLs),
``AgentContainment`` (the agent's OS account), then the stack, then ``FirewallRule``.
Verification: ``pve.verify_identity`` and ``agent_user.escalation_battery`` return ``checks.Check`` rows.
Host steps keep their undo records in ``files.host_state_dir(paths)`` (NOT in ``paths.backups_dir``, whose
rotation deletes anything that is not an update backup). Heavy imports (docker, requests) happen lazily.
Each module's docstring lists its stable interface.
"""
