"""``scripts/run_dev.py`` (``make run``'s launcher) starts before the app's package is imported, so it repeats a few of
the app's values: each must stay equal to the app's own (a launcher signing webhooks with another secret than the
app's development default would make every delivery a 401)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from hatidata_auth import config
from hatidata_auth.idp import registry

ROOT = Path(__file__).resolve().parents[1]


def _launcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_dev_constants", ROOT / "scripts" / "run_dev.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines only: the launcher runs under ``if __name__ == "__main__"``
    return module


def test_the_launcher_repeats_the_apps_values_exactly() -> None:
    launcher = _launcher()
    assert launcher.EMULATOR_API_KEY == config.EMULATOR_API_KEY
    assert launcher.DEV_WEBHOOK_SECRET == config.DEVELOPMENT_WEBHOOK_SECRET
    assert launcher.PLUGIN_ENTRY_POINTS == registry.ENTRY_POINT_GROUP
    assert config.PROFILE_SETTINGS["development"]["WORKOS_WEBHOOK_SECRET"] == launcher.DEV_WEBHOOK_SECRET
