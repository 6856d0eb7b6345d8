// Remote carets and selections drawn over the textarea.
//
// A textarea cannot style ranges of its text, so a mirror <div> with the same
// box, font and wrapping sits on top of it (pointer-events: none).  The mirror
// holds the same text in transparent ink; remote selections are tinted spans
// and remote carets are zero-width inline marks with a name label.  The mirror
// scrolls with the textarea.
//
// A label must hide no text: it goes above the caret when the space there is
// free of text (the first line, an empty or shorter line above), else below
// when that is free, else ("crowded") above but only while the caret moves.
// Every label fades after LABEL_MS without movement.

import { tint } from "./identity.js";

// A caret's name label shows while it moves and this long after.
const LABEL_MS = 3000;

const COPIED_STYLES = [
  "fontFamily",
  "fontSize",
  "fontWeight",
  "fontStyle",
  "letterSpacing",
  "lineHeight",
  "tabSize",
  "textIndent",
  "textTransform",
  "wordSpacing",
  "paddingTop",
  "paddingRight",
  "paddingBottom",
  "paddingLeft",
];

export class CursorOverlay {
  constructor(textarea) {
    this.textarea = textarea;
    this.overlay = document.createElement("div");
    this.overlay.className = "cursor-overlay";
    this.overlay.setAttribute("aria-hidden", "true");
    this.content = document.createElement("div");
    this.content.className = "cursor-content";
    this.overlay.append(this.content);
    textarea.after(this.overlay);
    this.text = "";
    this.cursors = [];
    this.moved = new Map(); // userId -> {anchor, head, at}: labels fade when a caret rests
    this.idleTimer = null;
    textarea.addEventListener("scroll", () => this._syncScroll());
    new ResizeObserver(() => this._layout()).observe(textarea);
    this._layout();
  }

  _layout() {
    const ta = this.textarea;
    const style = getComputedStyle(ta);
    for (const name of COPIED_STYLES) this.content.style[name] = style[name];
    // The textarea's content box without border and scrollbar.
    Object.assign(this.overlay.style, {
      left: `${ta.offsetLeft + ta.clientLeft}px`,
      top: `${ta.offsetTop + ta.clientTop}px`,
      width: `${ta.clientWidth}px`,
      height: `${ta.clientHeight}px`,
    });
    this._syncScroll();
  }

  _syncScroll() {
    this.content.style.transform = `translate(${-this.textarea.scrollLeft}px, ${-this.textarea.scrollTop}px)`;
  }

  /** cursors: [{userId, name, color, anchor, head}] with indexes into `text`. */
  render(text, cursors) {
    this.text = text;
    this.cursors = cursors;
    const len = text.length;
    const now = Date.now();
    let nextIdle = Infinity;
    const moved = new Map();
    for (const c of cursors) {
      const last = this.moved.get(c.userId);
      const at = last && last.head === c.head && last.anchor === c.anchor ? last.at : now;
      moved.set(c.userId, { head: c.head, anchor: c.anchor, at });
      if (now - at < LABEL_MS) nextIdle = Math.min(nextIdle, at + LABEL_MS);
    }
    this.moved = moved;
    clearTimeout(this.idleTimer);
    if (nextIdle !== Infinity) {
      this.idleTimer = setTimeout(() => this.render(this.text, this.cursors), nextIdle - now + 20);
    }
    const marks = cursors
      .filter((c) => Number.isInteger(c.head))
      .map((c) => {
        const head = Math.min(Math.max(c.head, 0), len);
        const anchor = Number.isInteger(c.anchor) ? Math.min(Math.max(c.anchor, 0), len) : head;
        return { ...c, head, from: Math.min(anchor, head), to: Math.max(anchor, head) };
      });
    const points = new Set([0, len]);
    for (const m of marks) {
      points.add(m.from);
      points.add(m.to);
      points.add(m.head);
    }
    const sorted = [...points].sort((a, b) => a - b);
    const fragment = document.createDocumentFragment();
    for (let i = 0; i < sorted.length; i++) {
      const at = sorted[i];
      for (const m of marks) {
        if (m.head === at) fragment.append(caret(m, now - this.moved.get(m.userId).at >= LABEL_MS));
      }
      const end = sorted[i + 1];
      if (end === undefined || end === at) continue;
      const piece = text.slice(at, end);
      const over = marks.filter((m) => m.from <= at && end <= m.to && m.from < m.to);
      if (over.length) {
        const span = document.createElement("span");
        span.className = "remote-selection";
        span.style.backgroundColor = tint(over[over.length - 1].color, 0.25);
        span.textContent = piece;
        fragment.append(span);
      } else {
        fragment.append(document.createTextNode(piece));
      }
    }
    // A trailing newline needs something after it to take up a line.
    fragment.append(document.createTextNode("\u200b"));
    this.content.replaceChildren(fragment);
    this._syncScroll();
    this._placeLabels();
  }

  /** Above, below, or crowded: see the top of this file. */
  _placeLabels() {
    const labels = this.content.querySelectorAll(".remote-caret-label");
    if (labels.length === 0) return;
    const text = [];
    const range = document.createRange();
    const walker = document.createTreeWalker(this.content, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (!/\S/.test(node.data) || node.parentElement.closest(".remote-caret-label")) continue;
      range.selectNodeContents(node);
      for (const rect of range.getClientRects()) if (rect.width > 0.5) text.push(rect);
    }
    const box = this.overlay.getBoundingClientRect();
    for (const label of labels) {
      label.classList.remove("crowded");
      let free = false;
      for (const place of ["above", "below"]) {
        label.dataset.place = place;
        const r = label.getBoundingClientRect();
        const visible = r.top >= box.top && r.bottom <= box.bottom && r.right <= box.right + 1;
        if (visible && !text.some((t) => overlaps(r, t))) {
          free = true;
          break;
        }
      }
      if (!free) {
        label.dataset.place = "above";
        label.classList.add("crowded");
      }
    }
  }
}

function overlaps(a, b) {
  // One pixel of tolerance: a label may touch the line it sits on.
  return a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1;
}

function caret(mark, idle) {
  const el = document.createElement("span");
  el.className = idle ? "remote-caret idle" : "remote-caret";
  el.dataset.userId = mark.userId;
  el.style.borderColor = mark.color;
  const label = document.createElement("span");
  label.className = "remote-caret-label";
  label.style.backgroundColor = mark.color;
  label.textContent = mark.name;
  el.append(label);
  return el;
}
