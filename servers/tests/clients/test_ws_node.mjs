// The WebSocket front as a Node `ws` client with permessage-deflate on sees it. Each test runs
// against the example server in every deflate mode run.sh started (TICKER_WS_SERVERS:
// `mode=host:port,...`), through a WireTap so that the frames on the wire show whether
// permessage-deflate was really used in both directions.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import WebSocket from 'ws';
import { DepthBook, decimalKey } from './depth_book.mjs';
import { WireTap } from './wiretap.mjs';

const INSTRUMENT = 'BTC-USD';
// Long enough for the simulator to move the book many times; every wait is on a message with
// this as its deadline, never a sleep.
const DEADLINE_MS = 60_000;

const servers = (process.env.TICKER_WS_SERVERS ?? '')
  .split(',')
  .filter(Boolean)
  .map((item) => {
    const [mode, addr] = item.split('=');
    const colon = addr.lastIndexOf(':');
    return { mode, host: addr.slice(0, colon), port: Number(addr.slice(colon + 1)) };
  });
if (servers.length === 0) throw new Error('TICKER_WS_SERVERS is not set (run servers/tests/clients/run.sh)');

/** One connection: JSON in and out, replies matched to requests by `id`. */
class Client {
  constructor(ws) {
    this.ws = ws;
    this.nextId = 1;
    this.queue = [];
    this.waiters = [];
    this.closed = null;
    ws.on('message', (data, isBinary) => {
      const message = isBinary ? { binary: true } : JSON.parse(data.toString('utf8'));
      const waiter = this.waiters.shift();
      if (waiter) waiter.resolve(message);
      else this.queue.push(message);
    });
    ws.on('error', (error) => {
      this.closed ??= error;
    });
    ws.on('close', (code, reason) => {
      this.closed = new Error(`connection closed: ${code} ${reason}`);
      for (const waiter of this.waiters.splice(0)) waiter.reject(this.closed);
    });
  }

  static async open(tap) {
    // threshold 0: compress every message, however small (ws's default leaves < 1 KiB plain).
    const ws = new WebSocket(`ws://127.0.0.1:${tap.port}/ws`, {
      perMessageDeflate: { threshold: 0 },
      maxPayload: 16 * 1024 * 1024,
    });
    const client = new Client(ws);
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    assert.match(ws.extensions, /^permessage-deflate/, `negotiated extensions: ${ws.extensions}`);
    const hello = await client.recv();
    assert.equal(hello.type, 'hello', JSON.stringify(hello));
    return client;
  }

  recv() {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.closed) return Promise.reject(this.closed);
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(new Error(`no message within ${DEADLINE_MS} ms`));
      }, DEADLINE_MS);
      waiter.resolve = (m) => (clearTimeout(timer), resolve(m));
      waiter.reject = (e) => (clearTimeout(timer), reject(e));
      this.waiters.push(waiter);
    });
  }

  send(message) {
    this.ws.send(JSON.stringify(message), { compress: true });
  }

  /** Sends a command and returns its one reply (or `error`); other messages are skipped. */
  async request(op, fields = {}) {
    const id = this.nextId++;
    this.send({ op, id, ...fields });
    for (;;) {
      const message = await this.recv();
      if (message.id === id) return message;
    }
  }

  async close() {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    await new Promise((resolve) => {
      this.ws.once('close', resolve);
      this.ws.close(1000);
    });
  }
}

/** On every connection, every text message either side sent started with an RSV1 frame. */
function assertCompressedBothWays(tap) {
  assert.ok(tap.connections.length > 0);
  tap.connections.forEach(({ toServer, toClient }, number) => {
    const negotiated = toClient.header('sec-websocket-extensions');
    assert.match(negotiated, /^permessage-deflate/, `connection ${number}: extensions ${negotiated}`);
    const sent = toServer.messageStarts();
    const received = toClient.messageStarts();
    assert.ok(sent.length > 0 && received.length > 0, `connection ${number}: no messages on the wire`);
    assert.equal(sent.filter((f) => !f.rsv1).length, 0, `connection ${number}: uncompressed client messages`);
    const plain = received.filter((f) => !f.rsv1).length;
    assert.equal(plain, 0, `connection ${number}: ${plain} of ${received.length} server messages uncompressed`);
  });
}

async function withTap(server, scenario) {
  const tap = await new WireTap(server.host, server.port).listen();
  try {
    await scenario(tap);
  } finally {
    await tap.close();
  }
  assertCompressedBothWays(tap);
}

/** `percent`% of `price`, rounded down to the `tick` grid and at least `floor`, written with
 * the tick's number of decimals; exact (scaled BigInts), as prices must be. */
function percentOf(price, percent, tick, floor) {
  const decimals = (tick.split('.')[1] ?? '').length;
  const tickUnits = decimalKey(tick);
  let value = ((decimalKey(price) * percent) / 100n / tickUnits) * tickUnits;
  if (value < decimalKey(floor)) value = decimalKey(floor);
  const units = (value / 10n ** BigInt(18 - decimals)).toString().padStart(decimals + 1, '0');
  return decimals ? `${units.slice(0, -decimals)}.${units.slice(-decimals)}` : units;
}

for (const server of servers) {
  test(`[${server.mode}] depth checksums and trade and ticker sequences hold over a compressed stream`, () =>
    withTap(server, async (tap) => {
      const client = await Client.open(tap);
      const channels = [
        { name: 'depth', instrument: INSTRUMENT },
        { name: 'trades', instrument: INSTRUMENT },
        { name: 'ticker', instrument: INSTRUMENT },
      ];
      client.send({ op: 'subscribe', id: 1, channels });
      assert.deepEqual(await client.recv(), { type: 'subscribed', id: 1, channels });

      const book = new DepthBook();
      let depthUpdates = 0;
      let trades = 0;
      let tickers = 0;
      let lastTradeSeq = null;
      let lastTickerSeq = null;
      while (depthUpdates < 50 || trades < 3 || tickers < 3) {
        const message = await client.recv();
        assert.equal(message.instrument, INSTRUMENT, JSON.stringify(message));
        if (message.channel === 'depth') {
          book.apply(message);
          if (message.type === 'update') depthUpdates++;
        } else if (message.channel === 'trades') {
          assert.equal(message.type, 'trade');
          assert.ok(decimalKey(message.size) > 0n && typeof message.price === 'string');
          if (lastTradeSeq !== null) assert.equal(message.prev_seq, lastTradeSeq, 'trade sequence gap');
          lastTradeSeq = message.seq;
          trades++;
        } else if (message.channel === 'ticker') {
          // Ticker may be conflated (prev_seq skips) but never goes backwards.
          assert.equal(message.type, 'ticker');
          if (lastTickerSeq !== null) {
            assert.ok(message.seq > lastTickerSeq && message.prev_seq >= lastTickerSeq, JSON.stringify(message));
          }
          lastTickerSeq = message.seq;
          tickers++;
        } else {
          assert.fail(`message of a channel not subscribed: ${JSON.stringify(message)}`);
        }
      }
      await client.close();
    }));

  test(`[${server.mode}] orders placed and cancelled over compressed commands`, () =>
    withTap(server, async (tap) => {
      const alice = await Client.open(tap);
      const bob = await Client.open(tap);
      try {
        const beforeAuth = await alice.request('place', { instrument: INSTRUMENT, side: 'buy', price: '1.00', size: '1' });
        assert.equal(beforeAuth.type, 'error');
        assert.equal(beforeAuth.code, 'not_authenticated');

        const badToken = await alice.request('auth', { token: 'nobody-token' });
        assert.deepEqual([badToken.type, badToken.code], ['error', 'auth_failed']);
        const authenticated = await alice.request('auth', { token: 'alice-token' });
        assert.deepEqual(authenticated, { type: 'authenticated', id: authenticated.id, account: 1 });
        assert.equal((await bob.request('auth', { token: 'bob-token' })).account, 2);

        const { instruments } = await alice.request('instruments');
        const spec = instruments.find((i) => i.symbol === INSTRUMENT);

        // A post-only buy 2% under the best bid rests and stays resting while the test runs
        // (a few ticks under would soon be filled by the simulator's moving market).
        const depth = [{ name: 'depth', instrument: INSTRUMENT }];
        assert.equal((await alice.request('subscribe', { channels: depth })).type, 'subscribed');
        const book = new DepthBook();
        while (book.lastSeq === null) {
          const message = await alice.recv();
          if (message.channel === 'depth') book.apply(message);
        }
        const anchor = book.bestBid() ?? book.bestAsk() ?? spec.reference_price;
        const price = percentOf(anchor, 98n, spec.tick_size, spec.band_low);
        await alice.request('unsubscribe', { channels: depth });

        const placed = await alice.request('place', {
          instrument: INSTRUMENT, side: 'buy', price, size: spec.min_size, post_only: true, client_order_id: 7002,
        });
        assert.equal(placed.type, 'result', JSON.stringify(placed));
        assert.equal(placed.accepted, true, JSON.stringify(placed));
        assert.equal(placed.order.status, 'resting');
        assert.equal(decimalKey(placed.order.price), decimalKey(price));
        assert.equal(placed.order.client_order_id, 7002);
        const orderId = placed.order.order_id;
        assert.match(orderId, /^\d+$/);

        const offGrid = await alice.request('place', { instrument: INSTRUMENT, side: 'buy', price: `${price}1`, size: spec.min_size });
        assert.deepEqual([offGrid.type, offGrid.code], ['error', 'invalid_request']);
        assert.deepEqual(offGrid.fields.map((f) => f.field), ['price']);

        const notBobs = await bob.request('cancel', { order_id: orderId });
        assert.deepEqual([notBobs.type, notBobs.code], ['error', 'permission_denied']);

        const cancelled = await alice.request('cancel', { order_id: orderId });
        assert.equal(cancelled.type, 'result');
        assert.equal(cancelled.accepted, true, JSON.stringify(cancelled));
        assert.equal(cancelled.order.status, 'done');
        assert.equal(cancelled.order.done_reason, 'cancelled');

        const again = await alice.request('cancel', { order_id: orderId });
        assert.deepEqual([again.type, again.accepted, again.reason], ['result', false, 'unknown_order']);
      } finally {
        await alice.close();
        await bob.close();
      }
    }));
}

test('the checksum of the worked example in docs/feeds.md', () => {
  const book = new DepthBook();
  book.apply({
    type: 'snapshot', seq: 1042, prev_seq: 0, checksum: 331038948,
    bids: [['49999.9', '0.010'], ['49990.0', '2.500']], asks: [['50000.5', '0.250'], ['50001.0', '1.000']],
  });
  book.apply({ type: 'update', seq: 1050, prev_seq: 1042, checksum: 207938290, bids: [['49999.9', '0.000']], asks: [] });
  assert.equal(book.bestBid(), '49990.0');
  assert.throws(() => book.apply({ type: 'update', seq: 1060, prev_seq: 1055, checksum: 0, bids: [], asks: [] }), /prev_seq/);
  assert.equal(percentOf('65000.07', 98n, '0.01', '58500.00'), '63700.06');
  assert.equal(percentOf('1.08000', 98n, '0.00001', '0.97200'), '1.05840');
  assert.equal(percentOf('59000.00', 98n, '0.01', '58500.00'), '58500.00');
});
