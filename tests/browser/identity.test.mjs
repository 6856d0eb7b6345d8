// Unit tests of the page's colours (node --test; run by test_js_units.py).

import assert from "node:assert/strict";
import { test } from "node:test";
import { assignColors, colorFor } from "../../web/src/identity.js";

const hue = (color) => Number(/^hsl\((\d+)/.exec(color)[1]);

function hueDistance(a, b) {
  const d = Math.abs(a - b) % 360;
  return Math.min(d, 360 - d);
}

test("up to 8 people get 8 different hues, at least 45 degrees apart", () => {
  for (let trial = 0; trial < 200; trial++) {
    const n = 2 + (trial % 7);
    const ids = Array.from({ length: n }, (_, i) => `u-${trial}-${i}-${Math.random().toString(36).slice(2, 8)}`);
    const colors = assignColors(ids);
    const hues = [...colors.values()].map(hue);
    assert.equal(new Set(hues).size, n, JSON.stringify([...colors]));
    for (let i = 0; i < hues.length; i++) {
      for (let j = i + 1; j < hues.length; j++) assert.ok(hueDistance(hues[i], hues[j]) >= 45);
    }
  }
});

test("a newcomer changes nobody's colour unless it takes their exact hue", () => {
  const ids = ["ada", "grace", "linus", "alan", "barbara", "edsger"];
  for (const newcomer of ["ken", "margaret", "u-1", "u-2", "u-3", "zed"]) {
    const before = assignColors(ids);
    const after = assignColors([...ids, newcomer]);
    const moved = ids.filter((id) => before.get(id) !== after.get(id));
    // At most the people from the newcomer's hue on, in user-id order, move.
    if (moved.length) assert.ok(newcomer < moved[0], `${newcomer} moved ${moved}`);
  }
});

test("exactly 8 people use the whole first ring", () => {
  const ids = ["ada", "grace", "linus", "alan", "barbara", "edsger", "ken", "margaret"];
  const colors = assignColors(ids);
  assert.equal(new Set([...colors.values()]).size, 8);
  assert.deepEqual([...new Set([...colors.values()].map(hue))].sort((a, b) => a - b), [0, 45, 90, 135, 180, 225, 270, 315]);
});

test("every page gives the same people the same colours, whatever the order", () => {
  const a = assignColors(["ada", "grace", "linus"]);
  const b = assignColors(["linus", "ada", "grace", "ada"]);
  assert.deepEqual([...a].sort(), [...b].sort());
  // Alone, a user has the colour of the slot their id prefers.
  assert.equal(assignColors(["ada"]).get("ada"), colorFor("ada"));
});

test("more than 16 people still get a colour each", () => {
  const ids = Array.from({ length: 20 }, (_, i) => `user-${i}`);
  const colors = assignColors(ids);
  assert.equal(colors.size, 20);
  assert.equal(new Set([...colors.values()]).size, 16);
});
