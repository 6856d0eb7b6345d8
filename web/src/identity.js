// Who this tab is: user id, display name, colour.
//
// The id and a generated name are kept in sessionStorage: a reload stays the
// same user, a second tab is a second user (what a demo wants).

const ADJECTIVES = ["Amber", "Brave", "Calm", "Deft", "Eager", "Fuzzy", "Gentle", "Happy", "Keen", "Lucky", "Merry", "Nimble", "Quiet", "Rapid", "Sunny", "Witty"];
const ANIMALS = ["Otter", "Heron", "Lynx", "Panda", "Robin", "Koala", "Marten", "Gecko", "Badger", "Falcon", "Ibex", "Newt", "Puffin", "Quokka", "Seal", "Wren"];

function pick(list) {
  return list[Math.floor(Math.random() * list.length)];
}

function stored(key, make) {
  try {
    let value = sessionStorage.getItem(key);
    if (!value) {
      value = make();
      sessionStorage.setItem(key, value);
    }
    return value;
  } catch {
    return make(); // storage disabled
  }
}

const ID_PATTERN = /^[A-Za-z0-9._@:-]{1,64}$/;

export function identityFromUrl(params) {
  const given = params.get("user");
  const userId =
    given && ID_PATTERN.test(given)
      ? given
      : stored("cowrite.userId", () => `u-${Math.random().toString(36).slice(2, 10)}`);
  const name = (params.get("name") || "").trim().slice(0, 64) || stored("cowrite.name", () => `${pick(ADJECTIVES)} ${pick(ANIMALS)}`);
  return { userId, name, color: colorFor(userId) };
}

// Colours: HUES evenly spaced hues (45 degrees apart at 8), neighbours also
// told apart by lightness, in two rings (the second between the first's hues,
// darker).  Each user has the hue their id hashes to; among the people present
// (taken in user-id order) someone whose hue is taken gets the next free one
// of the first ring.  So up to 8 people always have 8 different hues, every
// page that sees the same people gives them the same colours, and a newcomer
// changes someone else's colour only by taking their exact hue.
const HUES = 8;
const RINGS = [
  { offset: 0, s: 72, l: [40, 32] },
  { offset: 360 / HUES / 2, s: 55, l: [28, 28] },
];

function hash(text) {
  // FNV-1a, 32 bits.
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

export function slotColor(slot) {
  const ring = RINGS[Math.floor(slot / HUES) % RINGS.length];
  const step = slot % HUES;
  const hue = Math.round((step * 360) / HUES + ring.offset) % 360;
  return `hsl(${hue} ${ring.s}% ${ring.l[step % 2]}%)`;
}

/** userIds -> Map(userId -> colour): 8 different hues for up to 8 people. */
export function assignColors(userIds) {
  const slots = HUES * RINGS.length;
  const taken = new Set();
  const colors = new Map();
  for (const id of [...new Set(userIds)].sort()) {
    const preferred = hash(id) % HUES;
    let slot = -1;
    for (let i = 0; i < slots && slot < 0; i++) {
      // The first ring all the way round, then the second.
      const candidate = Math.floor(i / HUES) * HUES + ((preferred + i) % HUES);
      if (!taken.has(candidate)) slot = candidate;
    }
    if (slot < 0) slot = hash(id) % slots; // more people than colours: share
    taken.add(slot);
    colors.set(id, slotColor(slot));
  }
  return colors;
}

/** The colour of one user on their own (before anyone else is known). */
export function colorFor(userId) {
  return slotColor(hash(userId) % HUES);
}

export function tint(color, alpha) {
  // "hsl(h s l)" -> "hsl(h s l / alpha)"
  return color.replace(/\)$/, ` / ${alpha})`);
}
