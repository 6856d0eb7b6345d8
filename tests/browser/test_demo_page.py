"""The demo page in a real browser: two people type into one document at the
same time, one of them goes offline and keeps typing, and everybody converges.

``demo_driver.mjs`` plays the scenario in Debian's Chromium (playwright-core)
against ``cowrite serve --dev`` and reports what the pages showed; the checks
are here.  Screenshots go to ``test-output/browser/<test>/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from browser_support import WEB, Served

DRIVER = Path(__file__).with_name("demo_driver.mjs")
DRIVER_TIMEOUT = 75.0


def is_subsequence(part: str, whole: str) -> bool:
    """``part``'s characters appear in ``whole`` in the same order."""
    rest = iter(whole)
    return all(char in rest for char in part)


def run_driver(
    node: str, chromium: str, served: Served, output_dir: Path, *, driver: Path = DRIVER
) -> dict[str, Any]:
    # Playwright's fresh --user-data-dir goes under TMPDIR; Chromium's singleton
    # socket lives there too, and a Unix socket path must stay under 108 bytes,
    # so not in pytest's long tmp_path.
    with tempfile.TemporaryDirectory(prefix="cwb-") as scratch:
        return _run_driver(node, chromium, served, output_dir, scratch, driver)


def _run_driver(
    node: str, chromium: str, served: Served, output_dir: Path, scratch: str, driver: Path
) -> dict[str, Any]:
    env = {
        **os.environ,
        "COWRITE_BASE_URL": served.base,
        "COWRITE_OUT_DIR": str(output_dir),
        "COWRITE_WEB_DIR": str(WEB),
        "CHROMIUM": chromium,
        "TMPDIR": scratch,
    }
    try:
        result = subprocess.run(
            [node, str(driver)],
            env=env,
            capture_output=True,
            text=True,
            timeout=DRIVER_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"the browser scenario took over {DRIVER_TIMEOUT} s\n{exc.stderr!s}\n"
            f"server log:\n{served.log_tail()}"
        ) from None
    assert result.returncode == 0, (
        f"browser scenario failed (screenshots in {output_dir}):\n{result.stderr}\n"
        f"server log:\n{served.log_tail()}"
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_two_people_type_go_offline_and_converge(
    node: str,
    chromium: str,
    web_build: Path,
    serve: Callable[..., Served],
    output_dir: Path,
) -> None:
    served = serve(dev=True)
    report = run_driver(node, chromium, served, output_dir)
    steps = {step["name"]: step for step in report["steps"]}
    typed = report["typed"]
    final = report["final"]

    # Both typed at the same place at the same time.
    together = steps["typed together"]
    assert together["adaStart"] == together["graceStart"] == 0
    assert Counter(together["text"]) == Counter(typed["ada"] + typed["grace"])

    # Offline: Grace's page said so, kept her edits, and Ada did not get them.
    apart = steps["apart"]
    assert apart["graceStatus"]["state"] == "offline"
    assert apart["graceStatus"]["pending"] > 0
    assert "Offline" in apart["graceStatus"]["label"]
    assert "pending edit" in apart["graceStatus"]["label"]
    assert typed["graceOffline"].strip() in apart["graceText"]
    assert typed["graceOffline"].strip() not in report["adaWhileApart"]
    assert typed["adaMeanwhile"].strip() in report["adaWhileApart"]

    # Converged: one text everywhere (the late joiner's comes from the log
    # alone), holding every character typed, each person's in typing order.
    assert final["ada"] == final["grace"] == final["linus"]
    text = final["ada"]
    assert Counter(text) == Counter("".join(typed.values()))
    for part in typed.values():
        assert is_subsequence(part, text), part
    for who in ("ada", "grace", "linus"):
        assert report["status"][who]["state"] == "connected", who
        assert report["status"][who]["pending"] == 0, who

    # Presence: Grace saw Ada's selection of her last line.
    assert report["selected"] == typed["adaMeanwhile"].strip()

    assert report["pageErrors"] == []
    assert report["consoleErrors"] == []
    assert len(report["screenshots"]) >= 8
    for path in report["screenshots"]:
        assert Path(path).stat().st_size > 10_000, path
