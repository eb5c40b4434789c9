"""``pvesh`` and ``pveversion`` for the simulator, so the installer's host commands can be tested.

``pvesh get|create|set|delete PATH [--param value ...] [--output-format json]`` maps to
GET/POST/PUT/DELETE as root (``PMCP_SIM_ROOT_TOKEN``) against ``PMCP_SIM_URL``; prints the result's
``data`` and, on error, PVE's message on stderr with exit status 255 like the real ``pvesh``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

from pmcp.sim.client import DEFAULT_ROOT_TOKEN, ROOT_TOKEN_ENV, call

DEFAULT_URL = "http://127.0.0.1:8006"
METHODS = {"get": "GET", "ls": "GET", "create": "POST", "set": "PUT", "delete": "DELETE"}
FORMATS = ("json", "json-pretty", "text", "yaml")
EXIT_ERROR = 255


class UsageError(Exception):
    pass


def parse_args(argv: list[str]) -> tuple[str, str, dict[str, Any], str]:
    """``[verb, path, --k v ...]`` -> (method, path, params, output format); repeated keys become lists."""
    if len(argv) < 2 or argv[0] not in METHODS:
        raise UsageError("usage: pvesh get|create|set|delete <api_path> [OPTIONS] [--output-format json]")
    method, path = METHODS[argv[0]], "/" + argv[1].strip("/")
    params: dict[str, Any] = {}
    fmt = "text"
    i = 2
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            raise UsageError(f"unexpected argument '{arg}' (options look like --name value)")
        name = arg.lstrip("-")
        if "=" in name:
            name, value = name.split("=", 1)
            i += 1
        elif i + 1 < len(argv) and not (argv[i + 1].startswith("--") and len(argv[i + 1]) > 2):
            value = argv[i + 1]
            i += 2
        else:
            value = "1"
            i += 1
        if name == "output-format":
            if value not in FORMATS:
                raise UsageError(f"--output-format must be one of {', '.join(FORMATS)}")
            fmt = value
        elif name in ("noproxy", "quiet", "human-readable", "noborder", "noheader"):
            continue
        elif name in params:
            prev = params[name]
            params[name] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            params[name] = value
    return method, path, params, fmt


def render(data: Any, fmt: str) -> str | None:
    if data is None:
        return None
    if fmt == "json":
        return json.dumps(data, separators=(",", ":"))
    if isinstance(data, str | int | float) and fmt == "text":
        return str(data)
    return json.dumps(data, indent=4, sort_keys=True)


def perl_locale_warning() -> str | None:
    """What perl prints first when LANG/LC_* name a locale the host lacks (perl's locale.c), as every
    real pvesh does then: same condition as setlocale(LC_ALL, "") failing in this process."""
    import locale

    try:
        saved = locale.setlocale(locale.LC_ALL)
        locale.setlocale(locale.LC_ALL, "")
        locale.setlocale(locale.LC_ALL, saved)
        return None
    except locale.Error:
        pass
    shown = ["LANGUAGE", "LC_ALL", *sorted(k for k in os.environ if k.startswith("LC_") and k != "LC_ALL")]
    lines = [
        "perl: warning: Setting locale failed.",
        "perl: warning: Please check that your locale settings:",
    ]
    for k in [*shown, "LANG"]:
        v = os.environ.get(k)
        lines.append(f"\t{k} = " + (f'"{v}"' if v is not None else "(unset)") + ",")
    lines[-1] = lines[-1].rstrip(",")
    lines += [
        "    are supported and installed on your system.",
        'perl: warning: Falling back to a fallback locale ("C.UTF-8").',
    ]
    return "\n".join(lines)


def run_pvesh(argv: list[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    warning = perl_locale_warning()
    if warning:
        print(warning, file=err)

    try:
        method, path, params, fmt = parse_args(argv)
    except UsageError as e:
        print(e, file=err)
        return EXIT_ERROR
    url = os.environ.get("PMCP_SIM_URL", DEFAULT_URL).rstrip("/")
    token = os.environ.get(ROOT_TOKEN_ENV) or DEFAULT_ROOT_TOKEN
    insecure = os.environ.get("PMCP_SIM_TLS_INSECURE") == "1"
    try:
        status, body = call(
            url + "/api2/json", method, path, token, params, os.environ.get("PMCP_SIM_CA_FILE"), insecure
        )
    except OSError as e:
        print(
            f"cannot reach the Proxmox simulator at {url}: {e}\n"
            f"Start it with `pmcp sim serve` or point PMCP_SIM_URL at it.",
            file=err,
        )
        return EXIT_ERROR
    if status != 200:
        message = str(body.get("message") or body.get("reason") or f"HTTP {status}").rstrip("\n")
        errors = body.get("errors") or {}
        if errors:
            # pve-common Exception.pm stringify ("CODE msg", then "param: error" lines) and
            # RESTHandler.pm cli_handler, which appends the command's short usage to a parameter error
            print(f"{status} {message}", file=err)
            for k, v in errors.items():
                print(f"{k}: {str(v).rstrip()}", file=err)
            print(f"pvesh {argv[0]} <api_path> [OPTIONS] [FORMAT_OPTIONS]", file=err)
        else:
            print(message, file=err)
        return EXIT_ERROR
    text = render(body.get("data"), fmt)
    if text is not None:
        print(text, file=out)
    return 0


def _sim_version() -> str:
    """The version the simulator at PMCP_SIM_URL reports, so pveversion and the API agree."""
    from pmcp.sim.generate import PVE_VERSION

    url = os.environ.get("PMCP_SIM_URL", DEFAULT_URL).rstrip("/") + "/api2/json"
    token = os.environ.get(ROOT_TOKEN_ENV) or DEFAULT_ROOT_TOKEN
    insecure = os.environ.get("PMCP_SIM_TLS_INSECURE") == "1"
    ca_file = os.environ.get("PMCP_SIM_CA_FILE")
    try:
        status, body = call(url, "GET", "/version", token, None, ca_file, insecure, 2)
        return str(body["data"]["version"]) if status == 200 else PVE_VERSION
    except Exception:  # no simulator there (or not one): answer as the default host
        return PVE_VERSION


def pveversion_text(verbose: bool = False) -> str:
    """``pveversion``: PMCP_SIM_PVE_VERSION, else what the simulator reports, else 9.1.2."""
    from pmcp.sim.generate import KERNEL, KERNEL8, PVE_REPOID

    version = os.environ.get("PMCP_SIM_PVE_VERSION") or _sim_version()
    kernel = KERNEL if int(version.split(".")[0]) >= 9 else KERNEL8
    line = f"pve-manager/{version}/{PVE_REPOID} (running kernel: {kernel})"
    if not verbose:
        return line
    major = version.split(".")[0]
    return "\n".join(
        [
            f"proxmox-ve: {major}.{version.split('.')[1]}.0 (running kernel: {kernel})",
            f"pve-manager: {version} (running version: {version}/{PVE_REPOID})",
            f"proxmox-kernel-{kernel}: {kernel.rsplit('-', 1)[0]}",
            "ceph-fuse: 19.2.3-pve1",
            "corosync: 3.1.9-pve2",
            "libpve-access-control: 9.0.3",
            "libpve-common-perl: 9.0.11",
            "pve-cluster: 9.0.6",
            "pve-container: 6.0.13",
            "pve-firewall: 6.0.3",
            "pve-qemu-kvm: 10.0.2-4",
            "qemu-server: 9.0.22",
        ]
    )


if __name__ == "__main__":  # `python -m pmcp.sim.pvesh`: the demo's pvesh without the CLI's imports
    sys.exit(run_pvesh(sys.argv[1:]))
