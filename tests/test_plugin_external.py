"""An external plugin package (JumpCloud, made by the scaffold command) installs, loads, lists and passes the
contract through its own entry point, in a throwaway install target (the shared venv is not touched)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hatidata_auth.cli import hatidata_cli

ROOT = Path(__file__).resolve().parent.parent

LIST_SCRIPT = """
import sys
from hatidata_auth import create_app
from hatidata_auth.idp import get_registry
app = create_app({"HATIDATA_ENV": "testing", "SQLALCHEMY_DATABASE_URI": "sqlite://",
                  "HATIDATA_ENABLED_PLUGINS": None})
registry = get_registry(app)
print(",".join(registry.names()))
print(registry.get("jumpcloud").connection_types["saml"], "idp_jumpcloud" in app.blueprints)
"""


@pytest.mark.slow
def test_external_plugin_package_is_loaded_and_passes_the_contract(tmp_path: Path) -> None:
    result = CliRunner().invoke(hatidata_cli, ["new-idp-plugin", "jumpcloud", "--display-name", "JumpCloud",
                                               "--connection-type", "JumpCloudSAML", "--dest", str(tmp_path)])
    assert result.exit_code == 0, result.output
    package = tmp_path / "hatidata-idp-jumpcloud"
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(package)], capture_output=True, text=True, timeout=180, check=False)
    assert install.returncode == 0, install.stderr
    assert list(target.glob("hatidata_idp_jumpcloud-*.dist-info"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)]),
           "HATIDATA_INSTANCE_PATH": str(tmp_path / "instance")}
    env.pop("HATIDATA_ENABLED_PLUGINS", None)
    listed = subprocess.run([sys.executable, "-c", LIST_SCRIPT], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120, check=False)
    assert listed.returncode == 0, listed.stderr
    names, detail = listed.stdout.strip().splitlines()[-2:]
    assert names.split(",") == ["azure", "google", "jumpcloud", "okta", "onelogin"]
    assert detail == "JumpCloudSAML True"
    # The package's own test reuses the contract suite, which pytest loads through the pytest11 entry point.
    contract = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", str(package / "tests")],
        capture_output=True, text=True, env=env, cwd=package, timeout=180, check=False)
    assert contract.returncode == 0, contract.stdout + contract.stderr
    assert "passed" in contract.stdout
    assert "jumpcloud" in contract.stdout or "passed" in contract.stdout


def test_scaffold_refuses_a_bad_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(hatidata_cli, ["new-idp-plugin", "Jump Cloud", "--display-name", "J",
                                               "--dest", str(tmp_path)])
    assert result.exit_code != 0
    assert "is not a plugin name" in result.output
