// A TCP relay between a test client and the server that records every WebSocket frame header.
// ws hides whether a message went out compressed; the relay sees the bytes on the wire, so a
// test can check that permessage-deflate was really used both ways (RSV1 set on the first
// frame of every compressed message), whatever the library does inside.
import net from 'node:net';

const OPCODE_TEXT = 0x1;
const OPCODE_BINARY = 0x2;

/** One direction of a connection: the HTTP head, then the frames that followed it. */
export class Direction {
  constructor() {
    this.head = '';
    this.frames = [];
    this.buffer = Buffer.alloc(0);
    this.inHead = true;
  }

  feed(data) {
    this.buffer = Buffer.concat([this.buffer, data]);
    if (this.inHead) {
      const end = this.buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      this.head = this.buffer.subarray(0, end + 4).toString('latin1');
      this.buffer = this.buffer.subarray(end + 4);
      this.inHead = false;
    }
    for (let frame = this.takeFrame(); frame; frame = this.takeFrame()) this.frames.push(frame);
  }

  takeFrame() {
    const buf = this.buffer;
    if (buf.length < 2) return null;
    let length = buf[1] & 0x7f;
    let offset = 2;
    if (length === 126) {
      if (buf.length < 4) return null;
      length = buf.readUInt16BE(2);
      offset = 4;
    } else if (length === 127) {
      if (buf.length < 10) return null;
      length = Number(buf.readBigUInt64BE(2));
      offset = 10;
    }
    if (buf[1] & 0x80) offset += 4; // masking key
    if (buf.length < offset + length) return null;
    const frame = {
      fin: Boolean(buf[0] & 0x80),
      rsv1: Boolean(buf[0] & 0x40),
      opcode: buf[0] & 0x0f,
      payloadLength: length,
    };
    this.buffer = buf.subarray(offset + length);
    return frame;
  }

  /** The first frame of every text or binary message (where RSV1 says "compressed"). */
  messageStarts() {
    return this.frames.filter((f) => f.opcode === OPCODE_TEXT || f.opcode === OPCODE_BINARY);
  }

  header(name) {
    for (const line of this.head.split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon > 0 && line.slice(0, colon).trim().toLowerCase() === name) {
        return line.slice(colon + 1).trim();
      }
    }
    return '';
  }
}

/** Relays a loopback port to the server; `connections` holds what each connection carried. */
export class WireTap {
  constructor(host, port) {
    this.upstream = { host, port };
    this.connections = [];
    this.sockets = new Set();
    this.server = net.createServer((client) => this.relay(client));
  }

  async listen() {
    await new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = this.server.address().port;
    return this;
  }

  relay(client) {
    const tapped = { toServer: new Direction(), toClient: new Direction() };
    this.connections.push(tapped);
    const server = net.connect(this.upstream);
    for (const socket of [client, server]) {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => {});
    }
    client.on('data', (data) => {
      tapped.toServer.feed(data);
      server.write(data);
    });
    server.on('data', (data) => {
      tapped.toClient.feed(data);
      client.write(data);
    });
    client.on('end', () => server.end());
    server.on('end', () => client.end());
  }

  async close() {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}
