// The tickerd trader page: one WebSocket to the server's /ws carries market data (ticker, depth,
// trades, 1m candles) for the chosen instrument and, once signed in with a token, the account's
// orders and order entry. The protocol is docs/websocket.md; the market-data payloads, sequence
// rules and depth checksum are docs/feeds.md.
//
// Money never becomes a JavaScript float on its way to the server: prices and sizes stay the
// decimal strings they were on the wire or in the form, and are ordered, compared and summed
// exactly (order-preserving string keys, BigInt). Floats appear only where pixels are computed
// (the charts and the ladder's depth bars).
//
// Sections, in order: configuration, decimals, CRC-32, state and test hook, connection,
// sequencing and resume, depth, ticker, trades, candles, instruments, orders, fills and order
// entry, compression estimate, rendering (tables, candle chart, depth chart), start.
"use strict";

(() => {
  // ---------------------------------------------------------------- configuration

  const params = new URLSearchParams(location.search);
  /** `?ws=ws://host:port/ws` points the page at another server; default: same origin. */
  const WS_URL =
    params.get("ws") ||
    `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  /** Used when the server offers no instrument list: the server's configured defaults. */
  const DEFAULT_INSTRUMENTS = ["BTC-USD", "ETH-USD", "SOL-USD", "EUR-USD"];
  const CANDLE_INTERVAL = "1m";
  const BACKOFF_BASE_MS = 250;
  const BACKOFF_MAX_MS = 15000;
  const LADDER_LEVELS = 12;
  /** Tables redraw at most this often, the chart less often: the feed can bring thousands of
      messages a second, and a screen that changes faster than this is not read anyway. */
  const RENDER_INTERVAL_MS = 100;
  const CHART_INTERVAL_MS = 500;
  const TAPE_ROWS = 40;
  const FILL_ROWS = 50;
  const CHECKSUM_LEVELS = 10;
  /** The server closes connections that send nothing for 120 s; pongs to its pings do not count. */
  const KEEPALIVE_MS = 30000;
  /** Close code of `dropConnection()`: browsers may only send 1000 or 3000–4999. */
  const TEST_DROP_CODE = 4000;
  /** One message per this interval is deflated locally to estimate the compression ratio:
      a sample costs a compression stream and its promises, too much for every tenth message
      at a thousand a second. */
  const COMPRESSION_SAMPLE_MS = 250;

  // ---------------------------------------------------------------- decimals

  const DECIMAL_RE = /^\d+(\.\d+)?$/;

  /** `a` and `b` as BigInts on a common scale (both non-negative decimal strings). */
  function scaled(a, b) {
    const [ai, af = ""] = a.split(".");
    const [bi, bf = ""] = b.split(".");
    const width = Math.max(af.length, bf.length);
    return [BigInt(ai + af.padEnd(width, "0")), BigInt(bi + bf.padEnd(width, "0"))];
  }

  /** The exact sum of two non-negative decimal strings. */
  function addDecimal(a, b) {
    const [x, y] = scaled(a, b);
    const scale = Math.max((a.split(".")[1] || "").length, (b.split(".")[1] || "").length);
    return formatScaled(x + y, scale);
  }

  /** Compares two decimal strings exactly: negative, zero or positive. */
  function compareDecimal(a, b) {
    const [x, y] = scaled(a, b);
    return x < y ? -1 : x > y ? 1 : 0;
  }

  /**
   * A key whose string order is the decimal's numeric order (non-negative decimals with up to
   * 24 integer and 18 fraction digits): comparing keys is a plain string comparison, which keeps
   * the depth book cheap at thousands of updates a second.
   */
  function decimalKey(s) {
    const dot = s.indexOf(".");
    const int = dot < 0 ? s : s.slice(0, dot);
    const frac = dot < 0 ? "" : s.slice(dot + 1);
    return int.padStart(24, "0") + frac.padEnd(18, "0");
  }

  function isZeroDecimal(s) {
    return /^0*(\.0*)?$/.test(s);
  }

  // ---------------------------------------------------------------- CRC-32

  // IEEE 802.3 CRC-32 (zlib's crc32), the depth checksum of docs/feeds.md.
  const CRC_TABLE = (() => {
    const table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
    return table;
  })();

  const CRC_INIT = 0xffffffff;

  /** Feeds `ascii` into a running CRC (start from CRC_INIT, finish with crc32Final). */
  function crc32Update(crc, ascii) {
    for (let i = 0; i < ascii.length; i++) {
      crc = CRC_TABLE[(crc ^ ascii.charCodeAt(i)) & 0xff] ^ (crc >>> 8);
    }
    return crc;
  }

  function crc32Final(crc) {
    return (crc ^ 0xffffffff) >>> 0;
  }

  /** A price or size as the checksum string wants it: no decimal point, no leading zeros. */
  function checksumDigits(decimal) {
    return decimal.replace(".", "").replace(/^0+/, "");
  }

  // ---------------------------------------------------------------- state and test hook

  const state = {
    status: "connecting", // connecting | open | reconnecting | closed
    url: WS_URL,
    extensions: "",
    messages: 0,
    handlerMs: 0, // time spent handling messages (parse, books, checksums), not rendering
    // Age of the last message with a timestamp when the page handled it: how far behind the
    // feed the page is (a page that cannot keep up shows stale prices, and can only resume
    // within the server's history after a drop). Same-machine clocks make it exact in tests.
    delayMs: null,
    gaps: 0, // messages missed on depth, trades or orders (prev_seq skipped, or a gap notice)
    conflations: 0, // ticker or candle values the server skipped for us (allowed, not a gap)
    checksumOk: 0,
    checksumFailures: 0,
    resyncs: 0,
    reconnects: 0,
    resumed: 0,
    resumeSnapshots: 0,
    errors: 0,
    lastError: null,
    lastSeq: {}, // channel key → seq of the last message received
    resumes: [], // per resumed channel: from_seq sent and the first message that followed
    lastClose: null,
    auth: "signed out", // signed out | pending | ok | failed
    account: null,
    server: null, // the server's hello: name, protocol version, limits
    instrument: null,
    compression: { sampledRaw: 0, sampledDeflated: 0 },
  };

  let ws = null;
  let attempt = 0; // reconnect attempts since the last successful open
  let reconnectTimer = null;
  let nextRequestId = 1;
  const pending = new Map(); // request id → { op, onReply }
  let instruments = DEFAULT_INSTRUMENTS.slice();
  let token = null;

  // A small hook for the browser test (servers/tests/browser) and for curious traders.
  window.tickerd = {
    state,
    /**
     * Drops the connection as a network failure would, to exercise resume: the socket is
     * abandoned at once (closed with a non-1000 code, without waiting for the server's answer)
     * and the page reconnects.
     */
    dropConnection() {
      if (!ws) return;
      const socket = ws;
      socket.close(TEST_DROP_CODE, "test: drop connection");
      onClosed(socket, TEST_DROP_CODE, "dropped by dropConnection()");
    },
    book: () => ({ bids: depth.sorted("bids"), asks: depth.sorted("asks") }),
    orders: () => Array.from(orders.values()),
    fills: () => fills.slice(),
    /** What the charts last drew (for assertions on the drawing, not just the data). */
    drawn: { candles: null, depth: null },
    /** The chosen instrument's spec from the server's `instruments` reply. */
    spec: () => specs.get(state.instrument) || null,
    /** The depth checksum of the given levels ([price, size] strings, best first). */
    checksum: ({ bids, asks }) => levelsChecksum(bids, asks),
  };

  // ---------------------------------------------------------------- connection

  function connect() {
    clearTimeout(reconnectTimer);
    setStatus(attempt === 0 && state.reconnects === 0 ? "connecting" : "reconnecting");
    const socket = new WebSocket(WS_URL);
    ws = socket;
    socket.onopen = () => {
      if (ws !== socket) return;
      attempt = 0;
      state.extensions = socket.extensions;
      setStatus("open");
      send({ op: "instruments" });
      if (token) sendAuth();
      resubscribeAll();
    };
    socket.onmessage = (event) => {
      if (ws !== socket) return;
      const start = performance.now();
      onMessage(event.data, start);
      state.handlerMs += performance.now() - start;
    };
    socket.onclose = (event) => onClosed(socket, event.code, event.reason);
  }

  /** The socket is gone: reconnect unless it was closed normally (1000). */
  function onClosed(socket, code, reason) {
    if (ws !== socket) return; // an abandoned socket's late close event
    ws = null;
    state.lastClose = { code, reason };
    for (const [, p] of pending) p.onReply?.({ type: "error", code: "disconnected", message: "connection closed" });
    pending.clear();
    if (code === 1000) {
      setStatus("closed");
      return;
    }
    scheduleReconnect();
  }

  /** Exponential backoff with full jitter: a random delay up to base·2^attempt, capped. */
  function scheduleReconnect() {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    attempt += 1;
    state.reconnects += 1;
    setStatus("reconnecting");
    reconnectTimer = setTimeout(connect, delay);
  }

  // Keeps the connection from being closed as idle while the trader only watches.
  setInterval(() => send({ op: "ping" }), KEEPALIVE_MS);

  function send(message, onReply) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    const id = nextRequestId++;
    pending.set(id, { op: message.op, onReply });
    ws.send(JSON.stringify({ ...message, id }));
    return id;
  }

  function onMessage(text, now) {
    state.messages += 1;
    rate.count += 1;
    sampleCompression(text, now);
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (e) {
      recordError(`unparsable message: ${text.slice(0, 80)}`);
      return;
    }
    // ts is nanoseconds since the epoch (beyond a double's exact range; fine for milliseconds).
    if (typeof msg.ts === "number") state.delayMs = Date.now() - msg.ts / 1e6;
    const reply = msg.id !== undefined && pending.get(msg.id);
    if (reply) {
      pending.delete(msg.id);
      reply.onReply?.(msg);
    }
    // Market data of channels no longer subscribed (in flight when the instrument changed), or
    // of a subscription being restarted, is of no use.
    if (msg.seq !== undefined) {
      const ch = channels.get(keyOf(msg));
      if (!ch || ch.restarting) return;
    }
    switch (msg.type) {
      case "snapshot":
      case "update":
        if (msg.channel === "depth") onDepth(msg);
        else if (msg.channel === "candles") onCandles(msg);
        else if (msg.channel === "orders") onOrders(msg);
        else track(msg);
        break;
      case "ticker":
        onTicker(msg);
        break;
      case "trade":
        onTrade(msg);
        break;
      case "candle":
        onCandles(msg);
        break;
      case "order":
        onOrders(msg);
        break;
      case "gap":
        onGapNotice(msg);
        break;
      case "instruments":
        onInstruments(msg);
        break;
      case "hello":
        state.server = msg;
        break;
      case "error":
        if (!reply) recordError(`${msg.code}: ${msg.message}`);
        break;
      default:
        break; // subscribed, unsubscribed, pong, authenticated, result: handled through `pending`
    }
  }

  function recordError(text) {
    state.errors += 1;
    state.lastError = text;
    console.warn("tickerd:", text);
  }

  function setStatus(status) {
    state.status = status;
    dirty.status = true;
  }

  // ---------------------------------------------------------------- sequencing and resume

  // Every market-data and order message carries seq and prev_seq. A message whose prev_seq is
  // not the last seq received on its channel means something was missed. On reconnect each
  // channel resumes with from_seq = its last seq, and the server replays what was missed.

  function channelKey(name, instrument) {
    return instrument ? `${name}:${instrument}` : name;
  }

  function keyOf(msg) {
    if (msg.channel === "orders" || msg.type === "order") return "orders";
    const name = msg.channel === "candles" ? `candles.${msg.interval}` : msg.channel;
    return channelKey(name, msg.instrument);
  }

  const channels = new Map(); // key → { spec, resuming: bool }

  /**
   * Records a message's seq. Returns false when the message shows a gap on a channel whose
   * state cannot survive one (the caller resubscribes for a fresh snapshot).
   */
  function track(msg) {
    const key = keyOf(msg);
    const last = state.lastSeq[key];
    const ch = channels.get(key);
    if (ch && ch.resuming) {
      ch.resuming = false;
      if (msg.type === "snapshot") state.resumeSnapshots += 1;
      else if (msg.prev_seq === last) state.resumed += 1;
      state.resumes.push({ key, from_seq: last, type: msg.type, seq: msg.seq, prev_seq: msg.prev_seq });
      if (state.resumes.length > 100) state.resumes.shift();
    }
    state.lastSeq[key] = msg.seq;
    dirty.status = true;
    if (msg.type === "snapshot" || last === undefined) return true;
    if (msg.prev_seq !== last) {
      // Ticker and candle messages are complete values: a skip is the server conflating them.
      if (msg.channel === "ticker" || msg.channel === "candles") {
        state.conflations += 1;
        return true;
      }
      state.gaps += 1;
      recordError(`gap on ${key}: prev_seq ${msg.prev_seq}, last seq ${last}`);
      return false;
    }
    return true;
  }

  /** Trades resumed from further back than the server's history: some are lost for good. */
  function onGapNotice(msg) {
    const key = keyOf(msg);
    if (!channels.has(key)) return;
    state.gaps += 1;
    recordError(`${key}: trades after seq ${msg.from_seq} up to ${msg.resumed_after} were lost`);
    state.lastSeq[key] = msg.resumed_after;
    const ch = channels.get(key);
    ch.resuming = false;
  }

  function subscribe(list) {
    for (const spec of list) {
      const key = spec.name === "candles"
        ? channelKey(`candles.${spec.interval}`, spec.instrument)
        : channelKey(spec.name, spec.instrument);
      channels.set(key, { spec, resuming: false });
    }
    return sendSubscribe(list.map((spec) => ({ ...spec })));
  }

  function sendSubscribe(wireSpecs, onReply) {
    if (wireSpecs.length === 0) return false;
    return send({ op: "subscribe", channels: wireSpecs }, (reply) => {
      if (reply.type === "error") recordError(`subscribe: ${reply.code}: ${reply.message}`);
      onReply?.(reply);
    });
  }

  function unsubscribe(keys) {
    const list = [];
    for (const key of keys) {
      const ch = channels.get(key);
      if (!ch) continue;
      channels.delete(key);
      delete state.lastSeq[key];
      list.push({ name: ch.spec.name, instrument: ch.spec.instrument, interval: ch.spec.interval });
    }
    if (list.length) send({ op: "unsubscribe", channels: list.map(dropUndefined) });
  }

  /** After (re)connecting: every channel again, each from its last seq if it had one. */
  function resubscribeAll() {
    const market = [];
    for (const [key, ch] of channels) {
      if (ch.spec.name === "orders") continue; // after auth
      const spec = { ...ch.spec };
      if (state.lastSeq[key] !== undefined) {
        spec.from_seq = state.lastSeq[key];
        ch.resuming = true;
      }
      market.push(spec);
    }
    sendSubscribe(market);
  }

  /**
   * A channel whose state is broken (gap, bad checksum): subscribing again without from_seq
   * restarts it from a fresh snapshot. Messages of the old subscription still in flight, up to
   * the new `subscribed`, are dropped.
   */
  function resync(key) {
    const ch = channels.get(key);
    if (!ch) return;
    state.resyncs += 1;
    delete state.lastSeq[key];
    const spec = dropUndefined({ name: ch.spec.name, instrument: ch.spec.instrument, interval: ch.spec.interval });
    ch.restarting = true;
    const sent = sendSubscribe([spec], () => {
      ch.restarting = false;
    });
    if (!sent) ch.restarting = false; // not connected: the reconnect subscribes afresh
  }

  function dropUndefined(o) {
    return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
  }

  // ---------------------------------------------------------------- depth

  // The book holds the server's best N levels per side; a snapshot replaces it, an update sets
  // or (size "0") removes levels. After every message the top 10 per side must hash to the
  // message's checksum; a mismatch means our book is wrong, and only a fresh snapshot fixes it.

  /**
   * One side of the book: levels kept sorted best first, found by binary search. Each level
   * keeps its price and size as the checksum wants them, computed once when they change, so
   * that checking a message costs a CRC over the top levels and nothing more.
   */
  class BookSide {
    constructor(descending) {
      this.descending = descending;
      // { key, price, size, priceDigits, sizeDigits }, price and size exactly as on the wire
      this.levels = [];
    }

    /** Index of `key`, or of where it would go (as the bitwise complement), best first. */
    find(key) {
      let lo = 0;
      let hi = this.levels.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        const k = this.levels[mid].key;
        if (k === key) return mid;
        if (this.descending ? k > key : k < key) lo = mid + 1;
        else hi = mid;
      }
      return ~lo;
    }

    set(price, size) {
      const key = decimalKey(price);
      const at = this.find(key);
      if (isZeroDecimal(size)) {
        if (at >= 0) this.levels.splice(at, 1);
      } else if (at >= 0) {
        const level = this.levels[at];
        level.size = size;
        level.sizeDigits = checksumDigits(size);
      } else {
        const level = { key, price, size, priceDigits: checksumDigits(price), sizeDigits: checksumDigits(size) };
        this.levels.splice(~at, 0, level);
      }
    }

    /** Feeds the best `n` levels into a running CRC as the checksum orders them. */
    crcTop(crc, n) {
      const end = Math.min(n, this.levels.length);
      for (let i = 0; i < end; i++) {
        const level = this.levels[i];
        crc = crc32Update(crc32Update(crc, level.priceDigits), level.sizeDigits);
      }
      return crc;
    }

    /** The best `n` levels as [price, size] pairs. */
    top(n) {
      return this.levels.slice(0, n).map((l) => [l.price, l.size]);
    }
  }

  const depth = {
    bids: new BookSide(true),
    asks: new BookSide(false),
    sorted(side) {
      return this[side].top(Infinity);
    },
    reset() {
      this.bids = new BookSide(true);
      this.asks = new BookSide(false);
    },
  };

  /**
   * CRC-32 of the best 10 asks (lowest first) then the best 10 bids (highest first), of levels
   * given as [price, size] strings (the test hook's form; the page checks its own book with
   * depthChecksum).
   */
  function levelsChecksum(bids, asks) {
    let crc = CRC_INIT;
    for (const side of [asks, bids]) {
      for (const [p, q] of side.slice(0, CHECKSUM_LEVELS)) {
        crc = crc32Update(crc32Update(crc, checksumDigits(p)), checksumDigits(q));
      }
    }
    return crc32Final(crc);
  }

  /** The checksum of the page's book, from the digits its levels keep. */
  function depthChecksum() {
    return crc32Final(depth.bids.crcTop(depth.asks.crcTop(CRC_INIT, CHECKSUM_LEVELS), CHECKSUM_LEVELS));
  }

  function onDepth(msg) {
    if (msg.instrument !== state.instrument) return;
    const key = keyOf(msg);
    if (msg.type === "update" && state.lastSeq[key] === undefined) return; // no snapshot yet
    if (!track(msg)) {
      depth.reset();
      resync(key);
      return;
    }
    if (msg.type === "snapshot") depth.reset();
    for (const side of ["bids", "asks"]) {
      for (const [price, size] of msg[side]) depth[side].set(price, size);
    }
    if (depthChecksum() === msg.checksum >>> 0) {
      state.checksumOk += 1;
    } else {
      state.checksumFailures += 1;
      recordError(`depth checksum mismatch at seq ${msg.seq}`);
      depth.reset();
      resync(key);
    }
    dirty.depth = true;
    dirty.depthChart = true;
  }

  // ---------------------------------------------------------------- ticker

  let ticker = null;

  function onTicker(msg) {
    track(msg);
    if (msg.instrument !== state.instrument) return;
    ticker = msg;
    dirty.ticker = true;
  }

  // ---------------------------------------------------------------- trades

  const tape = []; // newest first

  function onTrade(msg) {
    // A missed trade is counted (track) but cannot be fetched again: trades have no snapshot.
    track(msg);
    if (msg.instrument !== state.instrument) return;
    tape.unshift(msg);
    if (tape.length > TAPE_ROWS) tape.length = TAPE_ROWS;
    dirty.tape = true;
  }

  // ---------------------------------------------------------------- candles

  const candles = new Map(); // start (ns) → candle

  function onCandles(msg) {
    track(msg);
    if (msg.instrument !== state.instrument || msg.interval !== CANDLE_INTERVAL) return;
    if (msg.type === "snapshot") {
      candles.clear();
      for (const c of msg.candles) candles.set(c.start, c);
    } else {
      candles.set(msg.start, msg);
    }
    dirty.chart = true;
  }

  // ---------------------------------------------------------------- instruments

  const specs = new Map(); // symbol → the server's instrument spec (tick size, lot size, band)

  function onInstruments(msg) {
    const list = msg.instruments || [];
    if (list.length === 0) return;
    specs.clear();
    for (const spec of list) specs.set(spec.symbol, spec);
    instruments = list.map((spec) => spec.symbol);
    renderInstrumentPicker();
    renderTicketHints();
    if (!instruments.includes(state.instrument)) selectInstrument(instruments[0]);
  }

  function marketChannels(instrument) {
    return [
      { name: "ticker", instrument },
      { name: "depth", instrument },
      { name: "trades", instrument },
      { name: "candles", instrument, interval: CANDLE_INTERVAL },
    ];
  }

  function selectInstrument(instrument) {
    if (instrument === state.instrument) return;
    if (state.instrument) {
      unsubscribe(Array.from(channels.keys()).filter((k) => k.endsWith(`:${state.instrument}`)));
    }
    state.instrument = instrument;
    depth.reset();
    ticker = null;
    tape.length = 0;
    candles.clear();
    Object.assign(dirty, { depth: true, depthChart: true, ticker: true, tape: true, chart: true });
    subscribe(marketChannels(instrument));
    renderTicketHints();
  }

  // ---------------------------------------------------------------- orders and order entry

  const orders = new Map(); // order_id (string) → order as last reported

  function sendAuth() {
    state.auth = "pending";
    dirty.auth = true;
    send({ op: "auth", token }, (reply) => {
      if (reply.code === "disconnected") {
        // The reconnect signs in again.
      } else if (reply.type !== "authenticated") {
        state.auth = "failed";
        recordError(`auth: ${reply.code}: ${reply.message}`);
      } else {
        state.auth = "ok";
        state.account = reply.account;
        const from = state.lastSeq.orders;
        const spec = { name: "orders" };
        if (from !== undefined) spec.from_seq = from;
        const ch = channels.get("orders") || { spec: { name: "orders" } };
        ch.resuming = from !== undefined;
        channels.set("orders", ch);
        sendSubscribe([spec]);
      }
      dirty.auth = true;
    });
  }

  function onOrders(msg) {
    if (!track(msg)) {
      resync("orders");
      return;
    }
    if (msg.type === "snapshot") {
      orders.clear();
      for (const o of msg.orders) orders.set(o.order_id, { ...o, status: o.status || "resting" });
    } else {
      const o = orders.get(msg.order_id);
      switch (msg.event) {
        case "accepted":
          orders.set(msg.order_id, { ...msg, remaining: msg.size, status: "new" });
          break;
        case "rested":
        case "amended":
          if (o) Object.assign(o, pick(msg, ["price", "remaining", "visible"]), { status: "resting" });
          break;
        case "fill":
          // `price` here is the trade's, not the order's limit.
          if (o) Object.assign(o, { remaining: msg.remaining, status: "partially filled" });
          addFill(msg, o);
          break;
        case "stop_armed":
        case "stop_triggered":
          if (o) o.status = msg.event === "stop_armed" ? "armed" : "triggered";
          break;
        case "done":
          orders.delete(msg.order_id);
          showOrderResult(`order ${msg.order_id} done: ${msg.reason}`);
          break;
        case "rejected":
          showOrderResult(`${msg.command} rejected: ${msg.reason}`);
          break;
        default:
          break;
      }
    }
    dirty.orders = true;
  }

  // ---------------------------------------------------------------- fills

  const fills = []; // the account's fills since sign-in (and any a resume replays), newest first
  const fillIds = new Set(); // "trade_id:order_id": a resume may repeat what a snapshot had

  /** A fill from the orders channel; the side comes from the order it belongs to. */
  function addFill(msg, order) {
    const id = `${msg.trade_id}:${msg.order_id}`;
    if (fillIds.has(id)) return;
    fillIds.add(id);
    fills.unshift({
      ts: msg.ts,
      order_id: msg.order_id,
      trade_id: msg.trade_id,
      instrument: msg.instrument,
      side: order ? order.side : "",
      price: msg.price,
      size: msg.size,
      liquidity: msg.liquidity,
    });
    if (fills.length > FILL_ROWS) {
      const oldest = fills.pop();
      fillIds.delete(`${oldest.trade_id}:${oldest.order_id}`);
    }
    dirty.fills = true;
  }

  function pick(o, keys) {
    return Object.fromEntries(keys.filter((k) => o[k] !== undefined).map((k) => [k, o[k]]));
  }

  function placeOrder(form) {
    const side = form.querySelector("input[name=side]:checked").value;
    const type = $("order-type").value;
    const price = $("order-price").value.trim();
    const size = $("order-size").value.trim();
    if (!DECIMAL_RE.test(size) || isZeroDecimal(size)) return showOrderResult("size: a positive decimal, e.g. 0.010");
    // Decimal strings go to the server as typed; it checks them against the tick and lot grid.
    const order = { op: "place", instrument: state.instrument, side, order_type: type, size };
    if (type === "limit") {
      if (!DECIMAL_RE.test(price) || isZeroDecimal(price)) return showOrderResult("price: a positive decimal, e.g. 65000.00");
      order.price = price;
      order.time_in_force = "gtc";
    }
    const ok = send(order, (reply) => showOrderResult(describeReply("place", reply)));
    if (!ok) showOrderResult("not connected");
  }

  function cancelOrder(orderId) {
    const ok = send({ op: "cancel", order_id: orderId }, (reply) => showOrderResult(describeReply("cancel", reply)));
    if (!ok) showOrderResult("not connected");
  }

  function describeReply(op, reply) {
    if (reply.type === "error") {
      const fields = (reply.fields || []).map((f) => `${f.field}: ${f.description}`).join("; ");
      return `${op} failed: ${reply.code}${fields ? ` (${fields})` : `: ${reply.message}`}`;
    }
    if (reply.accepted === false) return `${op} rejected: ${reply.reason}`;
    const o = reply.order;
    if (!o) return `${op} accepted`;
    return `${op} accepted: order ${o.order_id} ${o.status}${o.done_reason ? ` (${o.done_reason})` : ""}`;
  }

  function showOrderResult(text) {
    $("order-result").textContent = text;
  }

  // ---------------------------------------------------------------- compression estimate

  // Browsers do not show a WebSocket's wire bytes, so the ratio is estimated: one message per
  // COMPRESSION_SAMPLE_MS is deflated here on its own (raw DEFLATE, fresh context, default
  // level), which is what the server's shared mode does (no context takeover). In per-connection
  // mode the server's sliding window does better than this estimate.

  let lastCompressionSample = 0;

  function sampleCompression(text, now) {
    if (now - lastCompressionSample < COMPRESSION_SAMPLE_MS) return;
    if (!state.extensions.includes("permessage-deflate") || typeof CompressionStream !== "function") return;
    lastCompressionSample = now;
    const raw = new TextEncoder().encode(text);
    const stream = new Blob([raw]).stream().pipeThrough(new CompressionStream("deflate-raw"));
    new Response(stream).arrayBuffer().then((deflated) => {
      state.compression.sampledRaw += raw.length;
      state.compression.sampledDeflated += deflated.byteLength;
      dirty.status = true;
    });
  }

  // ---------------------------------------------------------------- rendering

  const $ = (id) => document.getElementById(id);
  const dirty = { depth: true, ticker: true, tape: true, chart: true, orders: true, fills: true, status: true, auth: true };
  const rate = { count: 0, perSecond: 0 };

  setInterval(() => {
    rate.perSecond = rate.count;
    rate.count = 0;
    dirty.status = true;
  }, 1000);

  let lastRender = 0;
  let lastChart = 0;

  function render(now) {
    requestAnimationFrame(render);
    if (now - lastRender < RENDER_INTERVAL_MS) return;
    lastRender = now;
    if (dirty.depth) renderDepth();
    if (dirty.ticker) renderTicker();
    if (dirty.tape) renderTape();
    if (dirty.orders) renderOrders();
    if (dirty.fills) renderFills();
    if (dirty.status) renderStatus();
    if (dirty.auth) renderAuth();
    if ((dirty.chart || dirty.depthChart) && now - lastChart >= CHART_INTERVAL_MS) {
      lastChart = now;
      if (dirty.chart) renderChart();
      if (dirty.depthChart) renderDepthChart();
    }
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function row(cells, attrs = {}) {
    const tr = document.createElement("tr");
    for (const c of cells) tr.appendChild(c);
    for (const [k, v] of Object.entries(attrs)) tr.setAttribute(k, v);
    return tr;
  }

  /**
   * Shows `items` in `tbody`, one row of `columns` cells each, reusing the rows already there:
   * `fill(item, tr)` writes a row through setCell, which touches only what changed. A redraw
   * where one ladder level moved then changes a text node or two instead of rebuilding the
   * table.
   */
  function fillRows(tbody, items, columns, fill) {
    while (tbody.rows.length > items.length) tbody.deleteRow(-1);
    while (tbody.rows.length < items.length) {
      const tr = tbody.insertRow();
      for (let i = 0; i < columns; i++) tr.insertCell();
    }
    for (let i = 0; i < items.length; i++) fill(items[i], tbody.rows[i]);
  }

  function setCell(td, text, className = "") {
    if (td.textContent !== text) td.textContent = text;
    if (td.className !== className) td.className = className;
  }

  /** Ladder rows: [price, size, cumulative size from the best price, bar share 0–100]. */
  function withTotals(levels) {
    let total = "0";
    return levels.map(([price, size]) => {
      total = addDecimal(total, size);
      return [price, size, total];
    });
  }

  function fillLevel(deepest) {
    return ([price, size, total], tr) => {
      setCell(tr.cells[0], price, "price");
      setCell(tr.cells[1], size, "size");
      setCell(tr.cells[2], total, "total");
      // Display only: the bar's width is a float share of the deepest total shown.
      const fill = `${Math.min(100, (100 * Number(total)) / deepest).toFixed(1)}%`;
      if (tr.style.getPropertyValue("--fill") !== fill) tr.style.setProperty("--fill", fill);
    };
  }

  function renderDepth() {
    dirty.depth = false;
    const asks = withTotals(depth.asks.top(LADDER_LEVELS));
    const bids = withTotals(depth.bids.top(LADDER_LEVELS));
    const last = (side) => (side.length ? Number(side[side.length - 1][2]) : 0);
    const deepest = Math.max(last(asks), last(bids)) || 1;
    fillRows($("ladder-asks"), asks.reverse(), 3, fillLevel(deepest));
    fillRows($("ladder-bids"), bids, 3, fillLevel(deepest));
    let spread = "–";
    if (bids.length && asks.length) {
      const [bid, ask] = scaled(bids[0][0], asks[asks.length - 1][0]);
      const scale = (bids[0][0].split(".")[1] || "").length;
      spread = `spread ${formatScaled(ask - bid, scale)}`;
    }
    $("spread").textContent = spread;
  }

  /** A BigInt with `scale` implied decimals as a decimal string. */
  function formatScaled(value, scale) {
    const negative = value < 0n;
    const digits = (negative ? -value : value).toString().padStart(scale + 1, "0");
    const text = scale ? `${digits.slice(0, -scale)}.${digits.slice(-scale)}` : digits;
    return negative ? `-${text}` : text;
  }

  function renderTicker() {
    dirty.ticker = false;
    const t = ticker || {};
    const show = (id, v) => ($(id).textContent = v ?? "–");
    show("ticker-bid", t.bid && `${t.bid} × ${t.bid_size}`);
    show("ticker-ask", t.ask && `${t.ask} × ${t.ask_size}`);
    show("ticker-last", t.last);
    show("ticker-change", t.change_24h);
    show("ticker-high", t.high_24h);
    show("ticker-low", t.low_24h);
    show("ticker-volume", t.volume_24h);
    show("ticker-status", t.status);
    $("ticker-change").className = t.change_24h && t.change_24h.startsWith("-") ? "down" : "up";
  }

  function renderTape() {
    dirty.tape = false;
    fillRows($("tape"), tape, 3, (t, tr) => {
      // Rows keep their place and take the trade now shown there.
      const id = String(t.trade_id);
      if (tr.dataset.tradeId === id) return;
      tr.dataset.tradeId = id;
      setCell(tr.cells[0], timeOf(t.ts));
      setCell(tr.cells[1], t.price, t.side);
      setCell(tr.cells[2], t.size);
    });
  }

  /** HH:MM:SS local time of a nanosecond timestamp (toLocaleTimeString is too slow per trade). */
  function timeOf(ns) {
    const d = new Date(Math.floor(ns / 1e6));
    const two = (n) => String(n).padStart(2, "0");
    return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  }

  /** The canvas sized to its box in device pixels, and a context drawing in CSS pixels. */
  function prepareCanvas(canvas) {
    const ctx = canvas.getContext("2d");
    const width = canvas.clientWidth || canvas.width;
    const height = canvas.clientHeight || canvas.height;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px monospace";
    return { ctx, width, height, textColor: getComputedStyle(canvas).color };
  }

  /** HH:MM local time of a nanosecond timestamp. */
  function minuteOf(ns) {
    const d = new Date(Math.floor(ns / 1e6));
    return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  }

  /**
   * Candles over a volume pane, a price axis on the right and a time axis below: as many of
   * the newest candles as fit, one slot each.
   */
  function renderChart() {
    dirty.chart = false;
    const { ctx, width, height, textColor } = prepareCanvas($("chart"));
    const axis = 70; // room for price labels on the right
    const timeAxis = 16; // room for time labels below
    const slot = 8;
    const series = Array.from(candles.values())
      .sort((a, b) => a.start - b.start)
      .slice(-Math.max(1, Math.floor((width - axis) / slot)));
    ctx.fillStyle = textColor;
    if (series.length === 0) {
      window.tickerd.drawn.candles = { candles: 0, volumeBars: 0, timeLabels: [] };
      ctx.fillText("waiting for trades…", 10, 20);
      return;
    }
    const plot = height - timeAxis;
    const priceBottom = plot * 0.78; // price pane above, volume pane below
    const volumeTop = priceBottom + 6;
    // Display only: prices and volumes become floats here to be mapped to pixels.
    const lo = Math.min(...series.map((c) => Number(c.low)));
    const hi = Math.max(...series.map((c) => Number(c.high)));
    const pad = (hi - lo) * 0.05 || Math.abs(hi) * 0.001 || 1;
    const top = hi + pad;
    const bottom = lo - pad;
    const y = (p) => ((top - Number(p)) / (top - bottom)) * (priceBottom - 10) + 6;
    const busiest = series.reduce((m, c) => (compareDecimal(c.volume, m.volume) > 0 ? c : m), series[0]);
    const maxVolume = Number(busiest.volume) || 1;
    let volumeBars = 0;
    series.forEach((c, i) => {
      const x = i * slot + slot / 2;
      const up = compareDecimal(c.close, c.open) >= 0;
      const color = up ? "#2e9d5b" : "#d0473d";
      ctx.strokeStyle = ctx.fillStyle = color;
      ctx.beginPath();
      ctx.moveTo(x, y(c.high));
      ctx.lineTo(x, y(c.low));
      ctx.stroke();
      const yo = y(c.open);
      const yc = y(c.close);
      ctx.fillRect(x - 3, Math.min(yo, yc), 6, Math.max(1, Math.abs(yc - yo)));
      const barHeight = ((plot - volumeTop) * Number(c.volume)) / maxVolume;
      if (barHeight > 0) {
        ctx.globalAlpha = 0.45;
        ctx.fillRect(x - 3, plot - barHeight, 6, barHeight);
        ctx.globalAlpha = 1;
        volumeBars += 1;
      }
    });
    ctx.fillStyle = ctx.strokeStyle = textColor;
    ctx.globalAlpha = 0.3;
    ctx.beginPath();
    ctx.moveTo(0, priceBottom + 2);
    ctx.lineTo(width - axis, priceBottom + 2);
    ctx.moveTo(0, plot + 0.5);
    ctx.lineTo(width - axis, plot + 0.5);
    ctx.stroke();
    ctx.globalAlpha = 1;
    // Time labels on whole minutes, about every 80 px.
    const every = Math.max(1, Math.ceil(80 / slot));
    const timeLabels = [];
    series.forEach((c, i) => {
      const minute = Math.floor(c.start / 60e9);
      if (minute % every !== 0) return;
      const label = minuteOf(c.start);
      const x = i * slot + slot / 2;
      if (x - 14 < 0 || x + 16 > width - axis) return;
      ctx.fillRect(x, plot, 1, 3);
      ctx.fillText(label, x - 14, height - 3);
      timeLabels.push(label);
    });
    const last = series[series.length - 1];
    ctx.fillText(series.reduce((m, c) => (compareDecimal(c.high, m) > 0 ? c.high : m), series[0].high), width - axis + 4, 14);
    ctx.fillText(last.close, width - axis + 4, Math.min(priceBottom - 14, Math.max(28, y(last.close) + 4)));
    ctx.fillText(series.reduce((m, c) => (compareDecimal(c.low, m) < 0 ? c.low : m), series[0].low), width - axis + 4, priceBottom);
    ctx.fillText(busiest.volume, width - axis + 4, volumeTop + 8);
    ctx.fillText("volume", width - axis + 4, plot - 2);
    window.tickerd.drawn.candles = { candles: series.length, volumeBars, timeLabels, first: series[0].start, last: last.start };
  }

  /**
   * Cumulative bids (left of the mid, growing leftwards) and asks (right, growing rightwards)
   * over every level the page holds, as filled steps.
   */
  function renderDepthChart() {
    dirty.depthChart = false;
    const { ctx, width, height, textColor } = prepareCanvas($("depth-chart"));
    const bids = depth.bids.levels;
    const asks = depth.asks.levels;
    ctx.fillStyle = textColor;
    if (!bids.length || !asks.length) {
      window.tickerd.drawn.depth = { bids: 0, asks: 0 };
      ctx.fillText("waiting for depth…", 10, 20);
      return;
    }
    const timeAxis = 16;
    const plot = height - timeAxis;
    // Display only: prices and sizes as floats for pixels.
    const cumulative = (levels) => {
      let total = 0;
      return levels.map((l) => [Number(l.price), (total += Number(l.size))]);
    };
    const b = cumulative(bids);
    const a = cumulative(asks);
    const mid = (b[0][0] + a[0][0]) / 2;
    // Symmetric around the mid, wide enough for the nearer side's deepest level.
    const half = Math.min(mid - b[b.length - 1][0], a[a.length - 1][0] - mid) || Math.abs(mid) * 0.001 || 1;
    const maxTotal = Math.max(b[b.length - 1][1], a[a.length - 1][1]) || 1;
    const x = (p) => ((p - (mid - half)) / (2 * half)) * width;
    const y = (v) => plot - (v / maxTotal) * (plot - 14);
    const side = (points, color, edge) => {
      ctx.beginPath();
      ctx.moveTo(x(points[0][0]), plot);
      let level = plot;
      let drawn = 0;
      for (const [p, v] of points) {
        const px = Math.min(width, Math.max(0, x(p)));
        ctx.lineTo(px, level);
        level = y(v);
        ctx.lineTo(px, level);
        drawn += 1;
        if (px <= 0 || px >= width) break;
      }
      ctx.lineTo(edge, level);
      ctx.lineTo(edge, plot);
      ctx.closePath();
      ctx.globalAlpha = 0.25;
      ctx.fillStyle = color;
      ctx.fill();
      ctx.globalAlpha = 1;
      ctx.strokeStyle = color;
      ctx.stroke();
      return drawn;
    };
    const bidPoints = side(b, "#2e9d5b", 0);
    const askPoints = side(a, "#d0473d", width);
    ctx.fillStyle = textColor;
    ctx.fillText(bids[0].price, 2, height - 3);
    const askLabel = asks[0].price;
    ctx.fillText(askLabel, width - 7 * askLabel.length - 2, height - 3);
    window.tickerd.drawn.depth = { bids: bidPoints, asks: askPoints };
  }

  function renderOrders() {
    dirty.orders = false;
    const rows = Array.from(orders.values()).map((o) => {
      const button = document.createElement("button");
      button.textContent = "Cancel";
      button.className = "cancel";
      button.addEventListener("click", () => cancelOrder(o.order_id));
      const action = document.createElement("td");
      action.appendChild(button);
      return row(
        [cell(o.order_id), cell(o.instrument), cell(o.side, o.side), cell(o.price ?? "market"), cell(o.size), cell(o.remaining ?? o.size), cell(o.status), action],
        { "data-order-id": o.order_id },
      );
    });
    $("my-orders").replaceChildren(...rows);
  }

  function renderFills() {
    dirty.fills = false;
    fillRows($("my-fills"), fills, 6, (f, tr) => {
      const id = `${f.trade_id}:${f.order_id}`;
      if (tr.dataset.fill === id) return;
      tr.dataset.fill = id;
      tr.dataset.orderId = f.order_id;
      setCell(tr.cells[0], timeOf(f.ts));
      setCell(tr.cells[1], f.instrument);
      setCell(tr.cells[2], f.side, f.side);
      setCell(tr.cells[3], f.price);
      setCell(tr.cells[4], f.size);
      setCell(tr.cells[5], f.liquidity);
    });
  }

  function renderStatus() {
    dirty.status = false;
    $("conn-state").textContent = state.status;
    $("conn-state").className = state.status;
    $("msg-rate").textContent = String(rate.perSecond);
    $("feed-delay").textContent = state.delayMs === null ? "–" : `${Math.max(0, Math.round(state.delayMs))} ms`;
    const deflate = state.extensions.includes("permessage-deflate");
    const { sampledRaw, sampledDeflated } = state.compression;
    $("compression").textContent = !deflate
      ? state.status === "open" ? "off" : "–"
      : sampledRaw
        ? `permessage-deflate, ≈${(sampledDeflated / sampledRaw).toFixed(2)} of raw (estimated)`
        : "permessage-deflate";
    const seqs = Object.values(state.lastSeq);
    $("last-seq").textContent = seqs.length ? String(Math.max(...seqs)) : "–";
    $("gap-count").textContent = String(state.gaps);
    $("checksum-failures").textContent = String(state.checksumFailures);
    $("reconnect-count").textContent = String(state.reconnects);
  }

  function renderAuth() {
    dirty.auth = false;
    $("auth-status").textContent = state.auth === "ok" ? "signed in" : state.auth;
    $("place").disabled = state.auth !== "ok";
  }

  /** Tick and lot size of the chosen instrument as the ticket's placeholders. */
  function renderTicketHints() {
    const spec = specs.get(state.instrument);
    $("order-price").placeholder = spec ? `tick ${spec.tick_size}` : "";
    $("order-size").placeholder = spec ? `lot ${spec.lot_size}` : "";
  }

  function renderInstrumentPicker() {
    const select = $("instrument");
    select.replaceChildren(
      ...instruments.map((symbol) => {
        const option = document.createElement("option");
        option.value = option.textContent = symbol;
        return option;
      }),
    );
    if (state.instrument) select.value = state.instrument;
  }

  // ---------------------------------------------------------------- start

  $("instrument").addEventListener("change", (e) => selectInstrument(e.target.value));
  $("order-type").addEventListener("change", (e) => ($("order-price").disabled = e.target.value === "market"));
  $("auth-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value;
    if (ws && ws.readyState === WebSocket.OPEN) sendAuth();
  });
  $("order-form").addEventListener("submit", (e) => {
    e.preventDefault();
    placeOrder(e.target);
  });
  // Clicking a ladder price fills the ticket's price.
  $("depth").addEventListener("click", (e) => {
    const price = e.target.closest("tr")?.querySelector(".price")?.textContent;
    if (price) $("order-price").value = price;
  });
  window.addEventListener("pagehide", () => ws && ws.close(1000, "page closed"));

  renderInstrumentPicker();
  selectInstrument(params.get("instrument") || instruments[0]);
  connect();
  requestAnimationFrame(render);
})();
