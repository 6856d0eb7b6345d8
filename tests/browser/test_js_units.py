"""The page's pure JavaScript (``textarea.test.mjs``) under Node's test runner."""

from __future__ import annotations

import subprocess
from pathlib import Path

TESTS = Path(__file__).with_name("textarea.test.mjs")


def test_textarea_binding_units(node: str) -> None:
    result = subprocess.run(
        [node, "--test", str(TESTS)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout
