// A client's copy of one instrument's depth, kept from `snapshot` and `update` messages and
// checked against each message's CRC-32 checksum exactly as docs/feeds.md specifies it.
// Prices and sizes stay the wire's decimal strings (the checksum is computed from them); they
// are ordered as exact scaled BigInts, never as floats.
import zlib from 'node:zlib';

const CHECKSUM_LEVELS = 10;
const SCALE = 18;

/** An exact, comparable key for a decimal string: its value times 10^18 as a BigInt. */
export function decimalKey(text) {
  if (!/^\d+(\.\d+)?$/.test(text)) throw new Error(`not a decimal string: ${JSON.stringify(text)}`);
  const [whole, fraction = ''] = text.split('.');
  if (fraction.length > SCALE) throw new Error(`more than ${SCALE} decimals: ${text}`);
  return BigInt(whole + fraction.padEnd(SCALE, '0'));
}

const digits = (decimal) => decimal.replace('.', '').replace(/^0+/, '');

export class DepthBook {
  constructor() {
    this.bids = new Map(); // decimalKey(price) -> [price, size] as on the wire
    this.asks = new Map();
    this.lastSeq = null;
  }

  apply(message) {
    if (message.type === 'snapshot') {
      this.bids.clear();
      this.asks.clear();
    } else if (message.type === 'update') {
      if (this.lastSeq === null) throw new Error(`depth update before any snapshot: ${JSON.stringify(message)}`);
      if (message.prev_seq !== this.lastSeq) {
        throw new Error(`depth update prev_seq ${message.prev_seq} != last seq ${this.lastSeq}`);
      }
    } else {
      throw new Error(`not a depth message: ${JSON.stringify(message)}`);
    }
    for (const [side, levels] of [[this.bids, message.bids], [this.asks, message.asks]]) {
      for (const [price, size] of levels) {
        if (typeof price !== 'string' || typeof size !== 'string') {
          throw new Error(`level not decimal strings: ${JSON.stringify([price, size])}`);
        }
        const key = decimalKey(price);
        if (decimalKey(size) === 0n) side.delete(key);
        else side.set(key, [price, size]);
      }
    }
    this.lastSeq = message.seq;
    const expected = this.checksum();
    if (expected !== message.checksum) {
      throw new Error(`depth checksum ${message.checksum} != ${expected} computed after seq ${message.seq}`);
    }
  }

  sorted(side, descending) {
    const keys = [...side.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    if (descending) keys.reverse();
    return keys.map((k) => side.get(k));
  }

  bestBid() {
    return this.sorted(this.bids, true)[0]?.[0] ?? null;
  }

  bestAsk() {
    return this.sorted(this.asks, false)[0]?.[0] ?? null;
  }

  checksum() {
    const levels = [
      ...this.sorted(this.asks, false).slice(0, CHECKSUM_LEVELS),
      ...this.sorted(this.bids, true).slice(0, CHECKSUM_LEVELS),
    ];
    const text = levels.map(([price, size]) => digits(price) + digits(size)).join('');
    return zlib.crc32(Buffer.from(text, 'ascii'));
  }
}
