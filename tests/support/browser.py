"""Headless Chromium for the browser tests, and axe-core to check every page they visit.

* :func:`chromium` -- Debian's ``/usr/bin/chromium`` through Playwright (a missing browser fails, never skips).
* :func:`axe_source` -- the pinned ``axe-core`` (npm registry), fetched once with ``npm pack`` into
  ``<repo>/.cache/axe`` and checked against its SRI hash before use.
* :func:`axe_violations` -- run axe on the page as it is now; a list of ``"rule-id: help (n nodes: selectors)"``.
* :func:`assert_accessible` -- fail naming every violation, with the page's URL.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

AXE_PACKAGE = "axe-core"
AXE_VERSION = "4.14.1"
#: ``npm view axe-core@4.14.1 dist.integrity``
AXE_INTEGRITY = "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
AXE_MEMBER = "package/axe.min.js"
AXE_CACHE = ROOT / ".cache" / "axe" / f"axe-core-{AXE_VERSION}.min.js"
#: What the pages promise: WCAG 2.x A and AA, and axe's best practices.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless Chromium (Playwright ``Browser``); closed on exit."""
    import playwright.sync_api as playwright_api

    # `make test` installs Debian's chromium first; a missing browser is a failure, never a skip.
    assert CHROMIUM.exists(), "Debian chromium is not installed: apt-get install chromium"
    with playwright_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def _verify(data: bytes) -> None:
    algo, _, expected = AXE_INTEGRITY.partition("-")
    actual = base64.b64encode(hashlib.new(algo, data).digest()).decode("ascii")
    if actual != expected:
        raise RuntimeError(f"{AXE_PACKAGE}@{AXE_VERSION} does not match its pinned integrity; refusing to use it")


def axe_source() -> str:
    """The text of ``axe.min.js`` of the pinned axe-core, fetched with ``npm pack`` on first use."""
    if AXE_CACHE.is_file():
        return AXE_CACHE.read_text(encoding="utf-8")
    npm = shutil.which("npm")
    assert npm, "the accessibility tests need npm to fetch axe-core (apt-get install npm)"
    AXE_CACHE.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".npm-pack-", dir=AXE_CACHE.parent) as tmp:
        subprocess.run([npm, "pack", f"{AXE_PACKAGE}@{AXE_VERSION}", "--pack-destination", tmp,
                        "--ignore-scripts", "--silent"], cwd=tmp, check=True, capture_output=True, timeout=120)
        (tarball,) = Path(tmp).glob("*.tgz")
        data = tarball.read_bytes()
        _verify(data)
        with tarfile.open(tarball, mode="r:gz") as tar:
            member = tar.extractfile(tar.getmember(AXE_MEMBER))
            assert member is not None
            source = member.read().decode("utf-8")
        staged = Path(tmp) / "axe.min.js"
        staged.write_text(source, encoding="utf-8")
        staged.replace(AXE_CACHE)  # atomic: parallel test processes never read half a file
    return source


def axe_violations(page: Any) -> list[str]:
    """Run axe-core on *page* (a Playwright ``Page``) as it is now; one line per violated rule."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        # Evaluated through the DevTools protocol, not as a <script> tag: the app's CSP forbids inline scripts and
        # must stay on while it is checked.
        page.evaluate(axe_source())
    result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS)
    return [f"{v['id']}: {v['help']} ({len(v['nodes'])} nodes: "
            f"{', '.join(str(n['target']) for n in v['nodes'][:3])})" for v in result["violations"]]


def assert_accessible(page: Any) -> None:
    """Fail naming every axe-core violation on *page*, with its URL."""
    violations = axe_violations(page)
    assert not violations, f"axe-core on {page.url}:\n" + "\n".join(violations)


def click_and_wait(page: Any, selector: Any) -> None:
    """Click ``selector`` (a CSS/text selector or a Playwright ``Locator``: a form's submit button or a link) and
    return once the page it leads to has loaded.

    Playwright's ``click`` may return before the response has replaced the page, so a read right after it
    (``locator(...).all()``, ``count()``, ``page.url``, an element both pages have) can still see the old page: a
    wizard step's checkboxes read that way were never ticked and the step answered 422. Every click of the browser
    tests that loads another page goes through here; one that stays on the page (the browser's own validation, a
    script) does not, and waits for what it expects instead.
    """
    with page.expect_navigation(wait_until="load"):
        if isinstance(selector, str):
            page.click(selector)
        else:
            selector.click()
