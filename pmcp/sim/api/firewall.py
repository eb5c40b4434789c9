"""Cluster and node firewall options and rules.

As in PVE: a new rule goes to the top (position 0) and is DISABLED unless ``enable=1`` is passed;
node rules do nothing while the cluster firewall is off (the simulator only stores them).
"""

from __future__ import annotations

from typing import Any

from pmcp.sim.api.common import Ctx, node_of, split_list
from pmcp.sim.errors import ApiError
from pmcp.sim.routes import route

_RULE_META = {"node", "pos", "digest", "delete", "moveto"}


def _fw(ctx: Ctx, p: dict) -> dict[str, Any]:
    if "node" in p:
        node_of(ctx, p["node"])
        return ctx.world["firewall"]["nodes"].setdefault(p["node"], {"options": {"enable": 1}, "rules": []})
    return ctx.world["firewall"]["cluster"]


def _listing(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "pos": i} for i, r in enumerate(rules)]


def _rule(fw: dict[str, Any], pos: int) -> dict[str, Any]:
    if pos >= len(fw["rules"]):
        raise ApiError(400, "Parameter verification failed.", {"pos": "no rule at position " + str(pos)})
    return fw["rules"][pos]


def _options_get(ctx: Ctx, p: dict) -> dict:
    return dict(_fw(ctx, p)["options"])


def _options_set(ctx: Ctx, p: dict) -> None:
    opts = _fw(ctx, p)["options"]
    for key in split_list(p.get("delete")):
        opts.pop(key, None)
    opts.update({k: v for k, v in p.items() if k not in ("node", "delete", "digest")})
    ctx.state.changed()


def _rules_get(ctx: Ctx, p: dict) -> list:
    return _listing(_fw(ctx, p)["rules"])


def _rules_create(ctx: Ctx, p: dict) -> None:
    fw = _fw(ctx, p)
    rule = {k: v for k, v in p.items() if k not in _RULE_META}
    rule.setdefault("enable", 0)
    pos = min(p.get("pos", 0), len(fw["rules"]))
    fw["rules"].insert(pos, rule)
    ctx.state.changed()


def _rule_get(ctx: Ctx, p: dict) -> dict:
    return {**_rule(_fw(ctx, p), p.get("pos", 0)), "pos": p.get("pos", 0)}


def _rule_set(ctx: Ctx, p: dict) -> None:
    fw = _fw(ctx, p)
    pos = p.get("pos", 0)
    rule = _rule(fw, pos)
    if "moveto" in p:
        fw["rules"].pop(pos)
        fw["rules"].insert(min(p["moveto"], len(fw["rules"])), rule)
    for key in split_list(p.get("delete")):
        rule.pop(key, None)
    rule.update({k: v for k, v in p.items() if k not in _RULE_META})
    ctx.state.changed()


def _rule_delete(ctx: Ctx, p: dict) -> None:
    fw = _fw(ctx, p)
    _rule(fw, p.get("pos", 0))
    fw["rules"].pop(p.get("pos", 0))
    ctx.state.changed()


for _base in ("/cluster/firewall", "/nodes/{node}/firewall"):
    route("GET", f"{_base}/options")(_options_get)
    route("PUT", f"{_base}/options")(_options_set)
    route("GET", f"{_base}/rules")(_rules_get)
    route("POST", f"{_base}/rules")(_rules_create)
    route("GET", f"{_base}/rules/{{pos}}")(_rule_get)
    route("PUT", f"{_base}/rules/{{pos}}")(_rule_set)
    route("DELETE", f"{_base}/rules/{{pos}}")(_rule_delete)
