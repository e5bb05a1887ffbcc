"""Screenshots of every SSO wizard page at 1280 px and 390 px, for review (``make screenshots``).

Runs the browser walk of the four wizards and the recovery case (``tests/browser/test_sso_wizard_browser.py``,
Debian's Chromium through ``tests/support/browser.py``, the real emulator, a throwaway database) with
``HATIDATA_SCREENSHOTS`` set, so each page it checks with axe-core is also saved, at both widths, as
``<plugin>-<nn>-<page>-<width>.png`` under ``.cache/screenshots/`` (ignored by git; emptied first).

    python scripts/wizard_screenshots.py [--out DIR] [pytest args...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / ".cache" / "screenshots"
WALK = "tests/browser/test_sso_wizard_browser.py"


def main(argv: list[str] | None = None) -> int:
    """Run the walk with screenshots on; returns pytest's exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the PNGs (emptied first)")
    args, pytest_args = parser.parse_known_args(argv)
    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {**os.environ, "HATIDATA_SCREENSHOTS": str(out), "PYTHONPATH": str(ROOT)}
    code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                            WALK, *pytest_args], cwd=ROOT, env=env)
    shots = sorted(out.glob("*.png"))
    print(f"{len(shots)} screenshots in {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
