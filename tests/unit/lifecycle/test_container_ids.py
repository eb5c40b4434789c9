"""The containers' uid/gid belongs to no host account, and secrets/ is root's, group-readable only.

A host account that shared the containers' uid (10001 was fixed) could read the Proxmox token. The host's
account database is replaced in a private mount namespace (`unshare -m` + a bind mount over /etc/passwd),
never the test machine's own /etc.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="owners and mount namespaces need root")


def with_account(tmp_path: Path, line: str, code: str) -> dict:
    """Run ``code`` (it prints one JSON line) where /etc/passwd also holds ``line``."""
    assert shutil.which("unshare"), "util-linux unshare is needed"
    passwd = tmp_path / "passwd"
    passwd.write_text(Path("/etc/passwd").read_text() + line + "\n")
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(code))
    out = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind {passwd} /etc/passwd && exec {sys.executable} {script}"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_fresh_install_takes_an_id_no_account_uses(tmp_path: Path) -> None:
    got = with_account(
        tmp_path,
        "alice:x:10001:10001::/home/alice:/bin/sh",
        """
        import json
        from pmcp.lifecycle.install import InstallOptions, stack_config
        from pmcp.stack import render
        fresh = stack_config(InstallOptions(prefix="/nonexistent"))
        kept = stack_config(InstallOptions(prefix="/nonexistent"), existing={"uid": 10001, "gid": 10001})
        print(json.dumps({"fresh": [fresh.uid, fresh.gid], "kept": [kept.uid, kept.gid],
                          "users": render.host_accounts_using(fresh.uid, fresh.gid),
                          "clash": render.host_accounts_using(10001, 10001)}))
        """,
    )
    assert got["fresh"] == [10002, 10002] and got["users"] == []
    assert got["kept"] == [10001, 10001]  # an install keeps its id (its data dirs are owned by it)...
    assert "user alice (uid 10001)" in got["clash"]  # ...and verify names the account that shares it


def test_verify_fails_when_an_account_shares_the_id_and_checks_secrets(tmp_path: Path) -> None:
    prefix = tmp_path / "inst"
    code = f"""
        import json, os
        from pmcp.lifecycle.verify import Target, check_container_ids
        from pmcp.paths import InstallPaths
        from pmcp.stack import render
        from pmcp.stack.steps import SecretsStep, StackContext
        paths = InstallPaths.at({str(prefix)!r})
        cfg = render.StackConfig(uid=10001, gid=10001)
        SecretsStep(StackContext(paths, cfg, "p")).apply()
        t = Target(paths, cfg, "p", "x", None, {{}})
        first = check_container_ids(t)
        os.chmod(paths.client_tokens, 0o644)
        second = check_container_ids(t)
        print(json.dumps([[first.result, first.detail], [second.result, second.detail]]))
    """
    clash, _ = with_account(tmp_path, "alice:x:10001:100::/home/alice:/bin/sh", code)
    assert clash[0] == "fail" and "alice" in clash[1]
    fine, loose = with_account(tmp_path, "bob:x:20001:20001::/home/bob:/bin/sh", code)
    assert fine[0] == "pass", fine
    assert loose[0] == "fail" and "client-tokens mode 644" in loose[1]
    st = (prefix / "secrets" / "client-tokens").stat()
    assert (st.st_uid, st.st_gid) == (0, 10001)
