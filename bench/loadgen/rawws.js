"use strict";
// Minimal WebSocket client (RFC 6455) on a plain TCP socket, written for the
// load generator's hot path: no stream machinery and no per-message copies.
// Text/binary frames from the server are handed to onMessage as Buffer views.
// It assumes a trusted local peer; it is not a general-purpose client.
const net = require("net");
const crypto = require("crypto");

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const ZERO_MASK = Buffer.alloc(4); // a valid (if predictable) masking key: XOR is a no-op

class RawWs {
  // opts: { host, port, path, localAddress, timeoutMs, onOpen(), onMessage(buf), onClose(reason) }
  constructor(opts) {
    this.opts = opts;
    this.open = false;
    this.closed = false;
    this.pending = null; // unparsed bytes
    this.frags = null; // fragments of a message in progress
    this.key = crypto.randomBytes(16).toString("base64");
    const sock = net.connect({ host: opts.host, port: opts.port, localAddress: opts.localAddress });
    this.sock = sock;
    sock.setNoDelay(true);
    sock.on("connect", () => {
      sock.write(
        `GET ${opts.path} HTTP/1.1\r\nHost: ${opts.host}:${opts.port}\r\nUpgrade: websocket\r\n` +
          `Connection: Upgrade\r\nSec-WebSocket-Key: ${this.key}\r\nSec-WebSocket-Version: 13\r\n\r\n`
      );
    });
    sock.on("data", (chunk) => (this.open ? this.onFrames(chunk) : this.onHandshake(chunk)));
    sock.on("error", (e) => this.fail("error: " + (e.code || e.message)));
    sock.on("close", () => this.fail("socket closed"));
  }

  get bufferedAmount() {
    return this.sock.writableLength;
  }

  fail(reason) {
    if (this.closed) return;
    this.closed = true;
    this.open = false;
    this.sock.destroy();
    this.opts.onClose(reason);
  }

  terminate() {
    this.fail("terminated");
  }

  onHandshake(chunk) {
    const buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    const end = buf.indexOf("\r\n\r\n");
    if (end < 0) {
      if (buf.length > 16384) this.fail("handshake response too large");
      else this.pending = buf;
      return;
    }
    this.pending = null;
    const head = buf.toString("latin1", 0, end);
    if (!/^HTTP\/1\.1 101/.test(head)) {
      this.fail("handshake: " + head.split("\r\n")[0]);
      return;
    }
    const m = /\r\nsec-websocket-accept:\s*(\S+)/i.exec(head);
    const want = crypto.createHash("sha1").update(this.key + GUID).digest("base64");
    if (!m || m[1] !== want) {
      this.fail("handshake: bad Sec-WebSocket-Accept");
      return;
    }
    this.open = true;
    this.opts.onOpen();
    if (buf.length > end + 4 && !this.closed) this.onFrames(buf.subarray(end + 4));
  }

  onFrames(chunk) {
    let buf = chunk;
    if (this.pending) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = null;
    }
    let pos = 0;
    const n = buf.length;
    while (pos + 2 <= n) {
      const b0 = buf[pos];
      const b1 = buf[pos + 1];
      let len = b1 & 0x7f;
      let off = pos + 2;
      if (len === 126) {
        if (off + 2 > n) break;
        len = buf.readUInt16BE(off);
        off += 2;
      } else if (len === 127) {
        if (off + 8 > n) break;
        len = buf.readUInt32BE(off) * 4294967296 + buf.readUInt32BE(off + 4);
        off += 8;
      }
      if (b1 & 0x80) off += 4; // servers must not mask; skip a key if one came anyway
      if (off + len > n) break;
      const payload = buf.subarray(off, off + len);
      pos = off + len;
      const op = b0 & 0x0f;
      const fin = b0 & 0x80;
      if (op === 1 || op === 2) {
        if (fin) this.opts.onMessage(payload);
        else this.frags = [Buffer.from(payload)];
      } else if (op === 0) {
        if (!this.frags) { this.fail("protocol: stray continuation"); return; }
        this.frags.push(Buffer.from(payload));
        if (fin) {
          const whole = Buffer.concat(this.frags);
          this.frags = null;
          this.opts.onMessage(whole);
        }
      } else if (op === 8) {
        this.writeFrame(0x88, payload.subarray(0, 2));
        this.fail("close frame " + (len >= 2 ? payload.readUInt16BE(0) : ""));
        return;
      } else if (op === 9) {
        this.writeFrame(0x8a, payload);
      } else if (op !== 10) {
        this.fail("protocol: opcode " + op);
        return;
      }
      if (this.closed) return;
    }
    if (pos < n) this.pending = Buffer.from(buf.subarray(pos));
  }

  writeFrame(b0, payload) {
    const len = payload.length;
    const hdr = len < 126 ? 6 : len < 65536 ? 8 : 14;
    const out = Buffer.allocUnsafe(hdr + len);
    out[0] = b0;
    if (len < 126) {
      out[1] = 0x80 | len;
    } else if (len < 65536) {
      out[1] = 0x80 | 126;
      out.writeUInt16BE(len, 2);
    } else {
      out[1] = 0x80 | 127;
      out.writeUInt32BE(Math.floor(len / 4294967296), 2);
      out.writeUInt32BE(len >>> 0, 6);
    }
    ZERO_MASK.copy(out, hdr - 4);
    payload.copy(out, hdr);
    this.sock.write(out);
  }

  // Text frame from a string (masked with the zero key, so no XOR pass).
  send(str) {
    if (this.closed) return;
    const len = Buffer.byteLength(str);
    const hdr = len < 126 ? 6 : len < 65536 ? 8 : 14;
    const out = Buffer.allocUnsafe(hdr + len);
    out[0] = 0x81;
    if (len < 126) {
      out[1] = 0x80 | len;
    } else if (len < 65536) {
      out[1] = 0x80 | 126;
      out.writeUInt16BE(len, 2);
    } else {
      out[1] = 0x80 | 127;
      out.writeUInt32BE(Math.floor(len / 4294967296), 2);
      out.writeUInt32BE(len >>> 0, 6);
    }
    out.writeUInt32BE(0, hdr - 4);
    out.write(str, hdr, "utf8");
    this.sock.write(out);
  }
}

module.exports = { RawWs };
