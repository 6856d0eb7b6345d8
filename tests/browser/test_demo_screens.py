"""The demo page looked at, in Chromium at 1280x800 and 390x844: two users, a
remote caret, offline with pending edits, access denied (and a viewer).

``screens_driver.mjs`` plays the scenes against ``cowrite serve --dev`` and
measures what each page showed; the checks are here.  The screenshots are
written to ``test-output/browser/<test>/`` (gitignored) to be looked at.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from browser_support import Served
from test_demo_page import run_driver

DRIVER = Path(__file__).with_name("screens_driver.mjs")


def rgb(color: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"\d+", color)[:3])


def test_demo_screens(
    node: str,
    chromium: str,
    web_build: Path,
    serve: Callable[..., Served],
    output_dir: Path,
) -> None:
    served = serve(dev=True)
    report = run_driver(node, chromium, served, output_dir, driver=DRIVER)
    assert report["pageErrors"] == []
    assert report["consoleErrors"] == [], report["httpErrors"]
    assert len(report["screenshots"]) == 2 * 7
    for path in report["screenshots"]:
        assert Path(path).stat().st_size > 5_000, path

    for name, view in report["viewports"].items():
        width, _height = view["size"]
        two = view["twoUsers"]
        ada, grace = two["ada"], two["grace"]

        # 1. The share link names the document and nothing else.
        share = ada["share"]
        assert share["href"] == share["text"]
        assert re.fullmatch(
            rf"{re.escape(served.base)}/\?doc=screens-{name}-[0-9a-z]+", share["href"]
        )
        assert "token" not in share["href"] and "user" not in share["href"]
        # Clicked, it opened someone else: a second person, not Ada again.
        popup = view["popup"]["look"]
        assert next(p["userId"] for p in popup["roster"]) != "ada"
        assert "ada" in [p["userId"] for p in popup["roster"]]
        assert popup["role"] == {"role": "editor", "text": "You: editor"}
        assert ada["role"] == {"role": "owner", "text": "You: owner"}
        assert grace["role"] == {"role": "editor", "text": "You: editor"}
        assert ada["linkAccess"] and not grace["linkAccess"]
        # Two people, two clearly different colours.
        colors = {p["userId"]: rgb(p["color"]) for p in ada["roster"]}
        assert set(colors) == {"ada", "grace"}
        assert sum(abs(a - b) for a, b in zip(colors["ada"], colors["grace"], strict=True)) > 120

        # Layout: side by side on a wide screen, stacked on a narrow one.
        editor, sidebar = ada["editor"], ada["sidebar"]
        assert ada["scrollWidth"] <= width  # nothing sticks out sideways
        if width >= 1000:
            assert sidebar["left"] >= editor["right"]
            assert editor["width"] > 2 * sidebar["width"]
        else:
            assert sidebar["top"] >= editor["bottom"]
            assert editor["width"] >= width - 40
            assert editor["height"] >= 300

        # 2. The remote caret's label hides no text.
        middle, first = view["caret"]["middle"], view["caret"]["first"]
        assert middle["text"] == "Grace" and first["text"] == "Grace"
        assert first["line"] == 0 and first["place"] == "above" and first["covered"] == 0
        # Under the first line's text, above the short last line: below.
        assert middle["line"] >= 1 and middle["place"] == "below" and middle["covered"] == 0
        assert not middle["crowded"]

        # 3. Offline with pending edits.
        offline = view["offline"]
        assert offline["status"]["state"] == "offline" and offline["status"]["pending"] > 0
        assert (
            "Offline" in offline["status"]["label"] and "pending edit" in offline["status"]["label"]
        )
        assert "(written offline)" in offline["look"]["value"]

        # 4. Access denied: says so everywhere, lists nobody, loads nothing.
        denied = view["denied"]["look"]
        assert denied["role"] == {"role": "none", "text": "No access"}
        assert denied["message"] is not None and "no access" in denied["message"].lower()
        assert "cowrite grant" in denied["message"]
        assert denied["placeholder"] == "You have no access to this document."
        assert "Loading" not in denied["placeholder"]
        assert denied["value"] == "" and denied["readOnly"]
        assert denied["roster"] == [] and denied["rosterEmpty"]

        # 5. A viewer reads and cannot type.
        viewer = view["viewer"]["look"]
        assert viewer["role"] == {"role": "viewer", "text": "You: viewer"}
        assert viewer["readOnly"]
        assert viewer["message"] is not None and "viewer" in viewer["message"]
        assert name in ("desktop", "phone")
