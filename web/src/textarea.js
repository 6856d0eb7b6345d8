// A <textarea> bound to a Y.Text.
//
// Local edits: on every `input` event the new value is compared with the
// last one; the single changed range becomes Y.Text delete + insert.  The
// caret tells where the change is when the text around it repeats ("a" typed
// into "aa"): the inserted text ends at the caret.
// Remote edits: the textarea gets the new text and the local selection is
// moved through the change (Yjs delta), so the caret stays where the user was
// typing; the scroll position is kept.

import * as Y from "yjs";

/** Transaction origin of the edits made through the textarea. */
export const LOCAL = Symbol("cowrite-textarea");

// Long pastes go in as several transactions so that no single Yjs update comes
// near the server's 64 KiB operation limit (4 bytes per UTF-16 pair at worst).
const CHUNK = 8192;

/** The changed range between `before` and `after`, the caret being in `after`. */
export function changedRange(before, after, caret) {
  const maxSuffix = Math.min(before.length, after.length - Math.min(caret, after.length));
  let suffix = 0;
  while (
    suffix < maxSuffix &&
    before.charCodeAt(before.length - 1 - suffix) === after.charCodeAt(after.length - 1 - suffix)
  ) {
    suffix += 1;
  }
  const maxPrefix = Math.min(before.length, after.length) - suffix;
  let prefix = 0;
  while (prefix < maxPrefix && before.charCodeAt(prefix) === after.charCodeAt(prefix)) prefix += 1;
  // Never cut a surrogate pair in two.
  if (prefix > 0 && isHigh(after.charCodeAt(prefix - 1))) prefix -= 1;
  if (suffix > 0 && isLow(after.charCodeAt(after.length - suffix))) suffix -= 1;
  return {
    index: prefix,
    removed: before.length - suffix - prefix,
    inserted: after.slice(prefix, after.length - suffix),
  };
}

function isHigh(code) {
  return code >= 0xd800 && code <= 0xdbff;
}

function isLow(code) {
  return code >= 0xdc00 && code <= 0xdfff;
}

/** Where `pos` (an index in the old text) is after the change `delta`. */
export function mapIndex(pos, delta) {
  let old = 0; // position in the old text
  let shift = 0;
  for (const op of delta) {
    if (old > pos) break;
    if (op.retain !== undefined) {
      old += op.retain;
    } else if (op.insert !== undefined) {
      // Text inserted exactly at the caret goes after it: our caret stays put.
      if (old < pos) shift += op.insert.length;
    } else if (op.delete !== undefined) {
      if (pos > old) shift -= Math.min(op.delete, pos - old);
      old += op.delete;
    }
  }
  return Math.max(0, pos + shift);
}

export function bindTextarea(ytext, textarea, { onChange } = {}) {
  const doc = ytext.doc;
  let value = ytext.toString();
  textarea.value = value;

  textarea.addEventListener("input", () => {
    const next = textarea.value;
    if (next === value) return;
    const { index, removed, inserted } = changedRange(value, next, textarea.selectionEnd);
    value = next;
    if (removed > 0) doc.transact(() => ytext.delete(index, removed), LOCAL);
    for (let at = 0; at < inserted.length; ) {
      let end = Math.min(at + CHUNK, inserted.length);
      if (end < inserted.length && isHigh(inserted.charCodeAt(end - 1))) end -= 1;
      const piece = inserted.slice(at, end);
      doc.transact(() => ytext.insert(index + at, piece), LOCAL);
      at = end;
    }
    onChange?.();
  });

  ytext.observe((event, transaction) => {
    if (transaction.origin === LOCAL) return;
    const { selectionStart, selectionEnd, selectionDirection, scrollTop } = textarea;
    const delta = event.delta;
    value = ytext.toString();
    textarea.value = value;
    textarea.setSelectionRange(
      mapIndex(selectionStart, delta),
      mapIndex(selectionEnd, delta),
      selectionDirection,
    );
    textarea.scrollTop = scrollTop;
    onChange?.();
  });

  return {
    /** The local selection as Yjs relative positions (JSON), robust to concurrent edits. */
    selection() {
      const { selectionStart, selectionEnd, selectionDirection } = textarea;
      const [anchor, head] =
        selectionDirection === "backward" ? [selectionEnd, selectionStart] : [selectionStart, selectionEnd];
      return {
        anchor: Y.relativePositionToJSON(Y.createRelativePositionFromTypeIndex(ytext, anchor)),
        head: Y.relativePositionToJSON(Y.createRelativePositionFromTypeIndex(ytext, head)),
      };
    },
  };
}

/** An index in `ytext` from a relative position sent by another user, or null. */
export function resolvePosition(ytext, json) {
  if (!json) return null;
  try {
    const rel = Y.createRelativePositionFromJSON(json);
    const abs = Y.createAbsolutePositionFromRelativePosition(rel, ytext.doc);
    return abs && abs.type === ytext ? abs.index : null;
  } catch {
    return null;
  }
}
