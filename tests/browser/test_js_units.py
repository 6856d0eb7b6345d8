"""The page's pure JavaScript (``*.test.mjs`` here: the textarea binding, the
colours) under Node's test runner."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

TESTS = sorted(Path(__file__).parent.glob("*.test.mjs"))


@pytest.mark.parametrize("tests", TESTS, ids=[t.stem for t in TESTS])
def test_js_units(node: str, tests: Path) -> None:
    result = subprocess.run(
        [node, "--test", str(tests)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout
