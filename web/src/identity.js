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

/** A stable colour per user id (FNV-1a hash to a hue). */
export function colorFor(userId) {
  let hash = 0x811c9dc5;
  for (let i = 0; i < userId.length; i++) {
    hash ^= userId.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  const hue = hash % 360;
  return `hsl(${hue} 70% 42%)`;
}

export function tint(color, alpha) {
  // "hsl(h s l)" -> "hsl(h s l / alpha)"
  return color.replace(/\)$/, ` / ${alpha})`);
}
