"""PVE 9 as shipped: Python 3.13 (Debian 13) against a Proxmox root CA without keyUsage.

Python 3.13 (and urllib3 on 3.13) verify with ``VERIFY_X509_STRICT``, which refuses a CA without keyUsage:
the CA of nearly every existing host (pve-cluster added keyUsage only with the fix for bug 6701, and never
regenerates a CA). In the Debian 13 root the single-file tests use, with that interpreter and nothing
else: a plain verified handshake fails (the host situation, reproduced), and every path pmcp takes to the
API works, verified: the simulator's pvesh client, the installer's identity step and token check,
verify's identity checks, and the MCP server's Proxmox client.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port
from tests.e2e.test_dist import dist  # noqa: F401  (the fixture)
from tests.support import images

pytestmark = [pytest.mark.dist, pytest.mark.slow]

INSTALLER = r"""
import json, os, sys
os.environ.pop("SHIV_INTERPRETER", None)  # the pvesh subprocess is `pmcp sim pvesh`, not an interpreter
from pathlib import Path
from pmcp.host.pve import ProxmoxIdentity, verify_identity
from pmcp.host.run import Pvesh
from pmcp.paths import InstallPaths

url, ca = sys.argv[1], sys.argv[2]
paths = InstallPaths.at("/tmp/inst")
step = ProxmoxIdentity(Pvesh(["pmcp", "sim", "pvesh"]), "read-only", paths, api_url=url, verify=ca)
step.apply()
plan = step.check()  # the token exists now: check() proves it authenticates (token_authenticates)
checks = verify_identity(url, "pmcp@pve!mcp", paths.proxmox_token_secret, verify=ca)
print(json.dumps({"notes": plan.notes, "changes": plan.changes,
                  "checks": [[c.name, c.ok, c.detail] for c in checks]}))
"""

SCRIPT = r"""
set -e
python3 -c 'import sys; print("python", sys.version.split()[0])'
pmcp sim serve --port {sim_port} --nodes 1 --guests 3 --tls --tls-dir /tmp/tls >/tmp/sim.log 2>&1 &
export PMCP_SIM_URL=https://127.0.0.1:{sim_port} PMCP_SIM_CA_FILE=/tmp/tls/pve-root-ca.pem
i=0; until pmcp sim pvesh get /version --output-format json >/tmp/version.json 2>/tmp/pvesh.err; do
  i=$((i+1)); [ $i -lt 150 ] || {{ cat /tmp/sim.log /tmp/pvesh.err; exit 3; }}; sleep 0.2; done
echo "pvesh: $(cat /tmp/version.json)"
python3 - <<'EOF'
import socket, ssl
ctx = ssl.create_default_context(cafile="/tmp/tls/pve-root-ca.pem")
try:
    ctx.wrap_socket(socket.create_connection(("127.0.0.1", {sim_port})), server_hostname="127.0.0.1")
    print("plain handshake: ok")
except ssl.SSLCertVerificationError as exc:
    print("plain handshake:", exc.verify_message)
EOF
SHIV_INTERPRETER=1 pmcp /installer.py https://127.0.0.1:{sim_port} /tmp/tls/pve-root-ca.pem >/tmp/inst.json
echo "installer: $(cat /tmp/inst.json)"
printf 'default:%s\n' 0123456789abcdef0123456789abcdef > /tmp/client-tokens
PROXMOX_URL=https://127.0.0.1:{sim_port} PROXMOX_TOKEN_ID='pmcp@pve!mcp' \
PROXMOX_TOKEN_SECRET_FILE=/tmp/inst/secrets/proxmox-token PROXMOX_CA_FILE=/tmp/tls/pve-root-ca.pem \
PMCP_AUTH_TOKEN_FILE=/tmp/client-tokens \
  pmcp serve --host 127.0.0.1 --port {server_port} >/tmp/serve.log 2>&1 &
python3 - <<'EOF'
import json, time, urllib.request
for _ in range(300):
    try:
        with urllib.request.urlopen("http://127.0.0.1:{server_port}/health", timeout=10) as r:
            print("health:", r.read().decode())
            break
    except OSError:
        time.sleep(0.2)
else:
    print("health: no answer", open("/tmp/serve.log").read()[-2000:])
EOF
"""


def test_pve9_python313_trusts_a_proxmox_ca_without_key_usage(dist: Path, tmp_path: Path) -> None:  # noqa: F811
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("debootstrap"):
        pytest.skip("needs root, unshare and debootstrap: run scripts/ensure-test-env as root (CI does)")
    installer = tmp_path / "installer.py"
    installer.write_text(INSTALLER)
    script = SCRIPT.format(sim_port=free_port(), server_port=free_port())
    proc = images.run_in_rootfs(
        "trixie",
        ["sh", "-c", script],
        files={"/usr/local/bin/pmcp": dist, "/installer.py": installer},
        network=True,  # the host's loopback: the simulator and the server talk over 127.0.0.1
        timeout=300,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "python 3.13." in out
    # the host situation: Python 3.13's own default refuses this CA...
    assert "plain handshake: CA cert does not include key usage extension" in out, out
    # ...and every pmcp path verifies it
    assert json.loads(out.split("pvesh: ", 1)[1].splitlines()[0])["version"].startswith("9.")
    inst = json.loads(out.split("installer: ", 1)[1].splitlines()[0])
    assert any("still authenticates" in n for n in inst["notes"]), inst
    assert inst["checks"] and all(ok for _, ok, _ in inst["checks"]), inst["checks"]
    health = json.loads(out.split("health: ", 1)[1].splitlines()[0])
    assert health["proxmox"] == {"reachable": True, "tls_verified": True}, health
