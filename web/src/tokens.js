// Where the page gets its JWT.
//
// - A token in the page address (`/#token=...`: the fragment never reaches
//   the server or its logs) is used as it is: production servers have no
//   token endpoint, so mint one with `cowrite token --user ID --doc DOC=editor`.
// - Otherwise, in development mode, GET /dev/token?user=&name=&doc= mints one.
//   It carries no role: the roles stored on the server apply (the endpoint
//   makes the first person the owner of a new document and gives others the
//   owner's link role; its answer says which: `role`, `linkRole`).  It is
//   fetched again when it is about to expire or the server says it has.

export class NoTokenError extends Error {}

function expiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part));
    return typeof claims.exp === "number" ? claims.exp * 1000 : Infinity;
  } catch {
    return Infinity;
  }
}

export class TokenSource {
  constructor({ userId, name, documentId }) {
    this.userId = userId;
    this.name = name;
    this.documentId = documentId;
    const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
    this.fixed = fromHash || null;
    this.token = null;
    this.expiresAt = 0;
    this.info = null; // the dev endpoint's answer: {role, linkRole, ...}
  }

  async get() {
    if (this.fixed) return this.fixed;
    if (this.token && this.expiresAt - Date.now() > 60_000) return this.token;
    const query = new URLSearchParams({ user: this.userId, name: this.name, doc: this.documentId });
    const response = await fetch(`/dev/token?${query}`, { cache: "no-store" });
    if (response.status === 404) {
      throw new NoTokenError("This server is not in development mode: open the page with #token=<JWT>");
    }
    if (!response.ok) throw new Error(`token endpoint: HTTP ${response.status}`);
    const body = await response.json();
    if (typeof body.token !== "string") throw new Error("token endpoint: no token in the answer");
    this.token = body.token;
    this.info = body;
    this.expiresAt = expiry(body.token);
    return this.token;
  }

  invalidate() {
    this.token = null;
  }
}
