// Unit tests of the textarea binding's pure parts (node --test; run by
// test_js_units.py): the diff of two textarea values and the mapping of a
// caret through a remote change.  Yjs is imported from web/node_modules.

import assert from "node:assert/strict";
import { test } from "node:test";
// Resolved from web/ (there is no node_modules here); the same file textarea.js gets.
import * as Y from "../../web/node_modules/yjs/dist/yjs.mjs";
import { changedRange, mapIndex } from "../../web/src/textarea.js";

function apply(before, { index, removed, inserted }) {
  return before.slice(0, index) + inserted + before.slice(index + removed);
}

test("typing into repeated text is placed at the caret", () => {
  // "a" typed between the two a's of "aa": the caret ends at 2.
  assert.deepEqual(changedRange("aa", "aaa", 2), { index: 1, removed: 0, inserted: "a" });
  // ...and at the end: the caret ends at 3.
  assert.deepEqual(changedRange("aa", "aaa", 3), { index: 2, removed: 0, inserted: "a" });
  assert.deepEqual(changedRange("aa", "aaa", 1), { index: 0, removed: 0, inserted: "a" });
});

test("backspace, delete, replace a selection, paste", () => {
  assert.deepEqual(changedRange("abc", "ac", 1), { index: 1, removed: 1, inserted: "" });
  assert.deepEqual(changedRange("aaa", "aa", 1), { index: 1, removed: 1, inserted: "" });
  assert.deepEqual(changedRange("hello world", "hello there", 11), { index: 6, removed: 5, inserted: "there" });
  assert.deepEqual(changedRange("", "pasted\ntext", 11), { index: 0, removed: 0, inserted: "pasted\ntext" });
});

test("a surrogate pair is never cut in two", () => {
  const before = "x\u{1F600}y"; // 😀
  const after = "x\u{1F601}y"; // 😁: same high surrogate
  const change = changedRange(before, after, 3);
  assert.equal(change.index, 1);
  assert.equal(change.removed, 2);
  assert.equal(change.inserted, "\u{1F601}");
  const low = changedRange("\u{1F600}", "\u{1F400}", 2); // same low surrogate
  assert.equal(low.removed, 2);
  assert.equal(low.inserted, "\u{1F400}");
});

test("every diff reproduces the new value", () => {
  const samples = ["", "a", "aa", "abc", "abcabc", "hello world", "x\u{1F600}y"];
  for (const before of samples) {
    for (const after of samples) {
      for (let caret = 0; caret <= after.length; caret++) {
        assert.equal(apply(before, changedRange(before, after, caret)), after, `${before} -> ${after} @${caret}`);
      }
    }
  }
});

function deltaOf(initial, change) {
  const a = new Y.Doc();
  const b = new Y.Doc();
  a.getText("t").insert(0, initial);
  Y.applyUpdate(b, Y.encodeStateAsUpdate(a));
  let delta = null;
  b.getText("t").observe((event) => {
    delta = event.delta;
  });
  change(a.getText("t"));
  Y.applyUpdate(b, Y.encodeStateAsUpdate(a, Y.encodeStateVector(b)));
  return delta;
}

test("a caret moves with remote edits before it and stays for edits after it", () => {
  const insertBefore = deltaOf("hello world", (t) => t.insert(0, ">> "));
  assert.equal(mapIndex(6, insertBefore), 9);
  const insertAfter = deltaOf("hello world", (t) => t.insert(8, "XX"));
  assert.equal(mapIndex(6, insertAfter), 6);
  // Text inserted exactly at the caret goes after it.
  const insertAt = deltaOf("hello world", (t) => t.insert(6, "big "));
  assert.equal(mapIndex(6, insertAt), 6);
  const deleteBefore = deltaOf("hello world", (t) => t.delete(0, 6));
  assert.equal(mapIndex(8, deleteBefore), 2);
  // The caret was inside the deleted range: it goes to where the range was.
  const deleteAround = deltaOf("hello world", (t) => t.delete(4, 4));
  assert.equal(mapIndex(6, deleteAround), 4);
});
