// The trader page in headless Chromium against a running example server (run.sh starts it, with
// an hour of simulated past, and passes its address in TICKER_WS_ADDR). The steps run in order
// on one page of a 1366×768 laptop screen, as a trader would use it: watch the market (candles
// with their past, ladder with depth bars, depth chart), sign in, take a fill, place an order
// from a ladder click and cancel it from the orders panel, lose the connection and resume.
// Every wait is on a condition in the page; the timeouts only bound how long a failure takes.
// Screenshots of the steps go to TICKER_BROWSER_OUTPUT (default: output/ beside this file),
// kept by CI as artifacts.
"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { chromium } = require("playwright-core");

const ADDR = process.env.TICKER_WS_ADDR;
const TOKEN = process.env.TICKER_TOKEN || "alice-token";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
// The page the server embeds; TICKER_PAGE_URL loads another copy (with `?ws=ws://ADDR/ws`), for
// trying page changes against a server built before them.
const PAGE_URL = process.env.TICKER_PAGE_URL || `http://${ADDR}/`;
const WAIT_MS = 30000;
/**
 * How far behind the feed the page may be when the resume step drops its connection: the
 * server's history of 1,024 messages per channel reaches back furthest on the busiest one (depth,
 * hundreds a second), a few seconds; 3 s behind plus the reconnect leaves room to spare.
 */
const LIVE_MS = 3000;
const SCREEN = { width: 1366, height: 768 };
const OUTPUT = process.env.TICKER_BROWSER_OUTPUT || path.join(__dirname, "output");

/** Saves a screenshot of the page as it is now under OUTPUT. */
async function screenshot(name) {
  fs.mkdirSync(OUTPUT, { recursive: true });
  await page.screenshot({ path: path.join(OUTPUT, `${name}.png`) });
}

let context;
let page;
let profile;
const pageErrors = [];
// Set once the page has loaded and connected; the later steps are skipped without it, rather
// than each waiting out its timeout.
let connected = false;

/** `test` for a step that needs the connected page. */
function step(name, fn) {
  test(name, (t) => (connected ? fn(t) : t.skip("the page did not load and connect")));
}

/** Waits until `fn(arg)` is true in the page. */
function until(fn, arg, what) {
  return page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 50 }).catch(async (e) => {
    const state = await page.evaluate(() => window.tickerd && window.tickerd.state).catch(() => null);
    throw new Error(`timed out waiting for ${what}: ${e.message}\npage state: ${JSON.stringify(state)}`);
  });
}

const state = () => page.evaluate(() => JSON.parse(JSON.stringify(window.tickerd.state)));

before(async () => {
  assert.ok(ADDR, "TICKER_WS_ADDR must name the server (host:port)");
  profile = fs.mkdtempSync(path.join(os.tmpdir(), "tickerd-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: SCREEN,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  page = context.pages()[0] || (await context.newPage());
  page.on("pageerror", (e) => pageErrors.push(String(e)));
});

after(async () => {
  await context?.close();
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
});

test("the page loads from the server and connects to /ws", async () => {
  const response = await page.goto(PAGE_URL);
  assert.equal(response.status(), 200);
  assert.equal(await page.title(), "tickerd");
  await until(() => window.tickerd && window.tickerd.state.status === "open", null, "the socket to open");
  await until(() => window.tickerd.state.server !== null, null, "the server's hello");
  await until(() => document.querySelectorAll("#instrument option").length > 0, null, "the instrument picker");
  const s = await state();
  assert.equal(s.url, `ws://${ADDR}/ws`);
  connected = true;
});

/** Asserts that the page fits the screen as it is now: no page scroll, the ticket, my orders and
 * my fills above the status bar, and the two lists tall enough for a few rows. */
async function assertFitsTheScreen() {
  const box = await page.evaluate(() => {
    const rect = (id) => document.getElementById(id).getBoundingClientRect().toJSON();
    return {
      ticket: rect("ticket"),
      place: rect("place"),
      orders: rect("orders"),
      fills: rect("fills"),
      footer: rect("status-bar"),
      scrollWidth: document.documentElement.scrollWidth,
      scrollHeight: document.documentElement.scrollHeight,
    };
  });
  assert.ok(box.scrollWidth <= SCREEN.width, `no horizontal scroll: ${box.scrollWidth}`);
  assert.ok(box.scrollHeight <= SCREEN.height, `no vertical scroll: ${box.scrollHeight}`);
  for (const name of ["ticket", "place", "orders", "fills"]) {
    assert.ok(box[name].bottom <= box.footer.top && box[name].height > 0, `${name} on screen: ${JSON.stringify(box[name])}`);
  }
  // My orders and fills show several rows without scrolling the page, not just their titles.
  for (const name of ["orders", "fills"]) {
    assert.ok(box[name].height >= 150, `${name} is tall enough for a few rows: ${JSON.stringify(box[name])}`);
  }
}

step("the browser negotiated permessage-deflate", async () => {
  const s = await state();
  assert.match(s.extensions, /permessage-deflate/, `Sec-WebSocket-Extensions was "${s.extensions}"`);
  await until(() => /permessage-deflate/.test(document.getElementById("compression").textContent), null, "the status bar to show compression");
});

step("the page's checksum gives the value of docs/feeds.md's worked example", async () => {
  const crc = await page.evaluate(() =>
    window.tickerd.checksum({
      bids: [["49999.9", "0.010"], ["49990.0", "2.500"]],
      asks: [["50000.5", "0.250"], ["50001.0", "1.000"]],
    }),
  );
  assert.equal(crc, 331038948);
});

step("the depth ladder changes over time", async () => {
  const ladder = () => page.evaluate(() => document.getElementById("depth").querySelector("table").innerText);
  await until(() => document.querySelectorAll("#ladder-bids tr").length > 0 && document.querySelectorAll("#ladder-asks tr").length > 0, null, "a depth snapshot");
  const first = await ladder();
  await until((before) => document.getElementById("depth").querySelector("table").innerText !== before, first, "the ladder to change");
});

step("the trades tape changes over time", async () => {
  await until(() => document.querySelectorAll("#tape tr").length > 0, null, "a first trade");
  const first = await page.evaluate(() => document.querySelector("#tape tr").dataset.tradeId);
  await until((id) => document.querySelector("#tape tr").dataset.tradeId !== id, first, "a further trade");
});

step("the ticker and the candle chart's data arrive", async () => {
  await until(() => document.getElementById("ticker-bid").textContent !== "–", null, "a ticker");
  await until(
    () => Object.keys(window.tickerd.state.lastSeq).some((k) => k.startsWith("candles.1m:")),
    null,
    "the 1m candles snapshot",
  );
});

step("the candle chart is full on open: the past hour, a volume pane and a time axis", async () => {
  await until(() => (window.tickerd.drawn.candles?.candles ?? 0) >= 30, null, "thirty or more candles drawn");
  const { candles, volumeBars, timeLabels, first } = await page.evaluate(() => window.tickerd.drawn.candles);
  assert.equal(volumeBars, candles, "a volume bar under every candle");
  assert.ok(timeLabels.length >= 2, `time labels: ${timeLabels}`);
  for (const label of timeLabels) assert.match(label, /^\d\d:\d\d$/);
  const minutesBack = (Date.now() - first / 1e6) / 60000;
  assert.ok(minutesBack >= 29, `the first candle drawn is ${minutesBack.toFixed(1)} min old: history, not a growing one`);
  await screenshot("01-on-open");
});

step("the ladder shows cumulative sizes with a depth bar per level", async () => {
  await until(() => document.querySelectorAll("#ladder-bids tr").length >= 5 && document.querySelectorAll("#ladder-asks tr").length >= 5, null, "five levels a side");
  const rows = await page.evaluate(() =>
    ["ladder-asks", "ladder-bids"].map((id) =>
      Array.from(document.getElementById(id).rows, (tr) => ({
        cells: Array.from(tr.cells, (td) => td.textContent),
        fill: tr.style.getPropertyValue("--fill"),
      })),
    ),
  );
  // Asks are drawn highest first: best first, their totals grow away from the spread too.
  const [asks, bids] = [rows[0].slice().reverse(), rows[1]];
  let widest = 0;
  for (const side of [asks, bids]) {
    let total = "0";
    let lastFill = 0;
    for (const { cells, fill } of side) {
      assert.equal(cells.length, 3, "price, size, total");
      total = addDecimals(total, cells[1]);
      assert.equal(units(cells[2], 12), units(total, 12), `cumulative size at ${cells[0]}`);
      const share = Number(fill.replace("%", ""));
      assert.ok(share > 0 && share <= 100 && share >= lastFill, `bar ${fill} after ${lastFill}%`);
      lastFill = share;
    }
    widest = Math.max(widest, lastFill);
  }
  assert.equal(widest, 100, "the deepest total shown fills its row");
});

step("the depth chart draws cumulative bids and asks", async () => {
  await until(() => (window.tickerd.drawn.depth?.bids ?? 0) > 0 && window.tickerd.drawn.depth.asks > 0, null, "both sides drawn");
});

step("the page fits a 1366×768 screen with the ticket above the fold", async () => {
  await assertFitsTheScreen();
});

step("every depth checksum verifies", async () => {
  await until(() => window.tickerd.state.checksumOk >= 50, null, "50 verified depth messages");
  const s = await state();
  assert.equal(s.checksumFailures, 0, `last error: ${s.lastError}`);
  assert.equal(s.resyncs, 0);
});

step("a token signs in and the orders channel starts", async () => {
  assert.equal(await page.isDisabled("#place"), true, "placing needs a token first");
  await page.fill("#token", TOKEN);
  await page.click("#auth");
  await until(() => window.tickerd.state.auth === "ok", null, "authenticated");
  await until(() => window.tickerd.state.lastSeq.orders !== undefined, null, "the open-orders snapshot");
  // The page draws what its state says every 100 ms: wait for the drawing, not just the state.
  await until(() => !document.getElementById("place").disabled, null, "the place button to enable");
});

let orderId;
let orderPrice;

step("a market order's fill appears in my fills", async () => {
  const spec = await page.evaluate(() => window.tickerd.spec());
  const before = await page.evaluate(() => window.tickerd.fills().length);
  await page.check("input[name=side][value=buy]");
  await page.selectOption("#order-type", "market");
  await page.fill("#order-size", spec.min_size);
  await page.click("#place");
  await until((n) => window.tickerd.fills().length > n && document.querySelectorAll("#my-fills tr").length > n, before, "a fill in my fills");
  const row = await page.evaluate(() => Array.from(document.querySelector("#my-fills tr").cells, (td) => td.textContent));
  const instrument = await page.inputValue("#instrument");
  assert.deepEqual([row[1], row[2], row[4], row[5]], [instrument, "buy", spec.min_size, "taker"]);
  assert.match(row[3], /^\d+(\.\d+)?$/, "the fill's price");
  await page.selectOption("#order-type", "limit");
});

step("clicking a ladder level puts its price in the ticket", async () => {
  // The book moves between any two steps of the test, so the row's price is read in the same
  // click event the page handles: a capturing listener on the ladder runs just before it.
  await page.evaluate(() => {
    window.clickedLadderPrice = undefined;
    document.getElementById("depth").addEventListener(
      "click",
      (e) => (window.clickedLadderPrice = e.target.closest("tr")?.querySelector(".price")?.textContent),
      { capture: true, once: true },
    );
  });
  await page.click("#ladder-bids tr:nth-child(3)");
  const clicked = await page.evaluate(() => window.clickedLadderPrice);
  assert.match(clicked ?? "", /^\d+(\.\d+)?$/, "the clicked row shows a price");
  assert.equal(await page.inputValue("#order-price"), clicked);
});

step("a limit order away from the market appears in my orders", async () => {
  const { bid, spec } = await page.evaluate(() => ({
    bid: window.tickerd.book().bids[0][0],
    spec: window.tickerd.spec(),
  }));
  assert.ok(spec, "the server's instrument list gives the tick and lot size");
  orderPrice = awayFromMarket(bid, spec);
  await page.check("input[name=side][value=buy]");
  await page.selectOption("#order-type", "limit");
  await page.fill("#order-price", orderPrice);
  await page.fill("#order-size", spec.min_size);
  // The ticket still shows the market order's result: wait for this order's own.
  const previous = await page.textContent("#order-result");
  await page.click("#place");
  await until(
    (previous) => {
      const text = document.getElementById("order-result").textContent;
      return text !== previous && /^place /.test(text);
    },
    previous,
    "the place result",
  );
  const result = await page.textContent("#order-result");
  const accepted = /^place accepted: order (\d+) resting$/.exec(result);
  assert.ok(accepted, `the order rests: ${result}`);
  orderId = accepted[1];
  await until((id) => document.querySelector(`#my-orders tr[data-order-id="${id}"]`), orderId, `order ${orderId} in my orders`);
  const row = await page.evaluate(
    (id) => Array.from(document.querySelector(`#my-orders tr[data-order-id="${id}"]`).cells, (td) => td.textContent),
    orderId,
  );
  assert.deepEqual(row.slice(1, 4), [await page.inputValue("#instrument"), "buy", orderPrice]);
  // A busy tape and a signed-in ticket must not push the lists off the screen either.
  await assertFitsTheScreen();
  await screenshot("02-signed-in-order-and-fill");
});

step("cancelling the order removes it from my orders", async () => {
  await page.click(`#my-orders tr[data-order-id="${orderId}"] button.cancel`);
  await until((id) => !document.querySelector(`#my-orders tr[data-order-id="${id}"]`), orderId, "the order to leave my orders");
  await until(() => /^cancel accepted/.test(document.getElementById("order-result").textContent) || /done: cancelled/.test(document.getElementById("order-result").textContent), null, "the cancel result");
});

step("a dropped connection reconnects and resumes every channel with no gap", async () => {
  // A resume is exact only from a point the server still holds (its history of the last 1,024
  // messages per channel). What the page has not handled yet when its socket drops is lost
  // with the socket, so a page running seconds behind the feed (a loaded machine) would
  // resume from too far back: wait until it keeps up, as a trader's screen must anyway.
  await until((ms) => window.tickerd.state.delayMs !== null && window.tickerd.state.delayMs < ms, LIVE_MS, `the page to be within ${LIVE_MS} ms of the feed`);
  const before = await state();
  await page.evaluate(() => window.tickerd.dropConnection());
  await until((n) => window.tickerd.state.reconnects > n && window.tickerd.state.status === "open", before.reconnects, "the reconnect");
  // Resumed: the first depth and trades messages after the reconnect continue from the last
  // seq received before it (prev_seq = from_seq), not from a fresh snapshot.
  const instrument = before.instrument;
  const keys = [`depth:${instrument}`, `trades:${instrument}`, "orders"];
  await until(
    ({ keys, n }) => {
      const fresh = window.tickerd.state.resumes.slice(n);
      return keys.slice(0, 2).every((k) => fresh.some((r) => r.key === k));
    },
    { keys, n: before.resumes.length },
    "depth and trades to resume",
  );
  await until((n) => window.tickerd.state.checksumOk > n + 20, before.checksumOk, "verified depth after the resume");
  const s = await state();
  for (const r of s.resumes.slice(before.resumes.length)) {
    if (!keys.includes(r.key)) continue;
    // Depth may also resume from a fresh snapshot, the server's answer when the resume point
    // has left its history: the book is whole again and its checksums verify (below). Trades
    // have no snapshot: theirs must continue exactly, or trades were lost.
    if (r.key === keys[0] && r.type === "snapshot") continue;
    assert.notEqual(r.type, "snapshot", `${r.key} resumed from a snapshot, not from its seq`);
    assert.equal(r.prev_seq, r.from_seq, `${r.key}: first message after resume has prev_seq ${r.prev_seq}, resumed from ${r.from_seq}`);
  }
  assert.ok(s.lastSeq[keys[0]] > before.lastSeq[keys[0]], "depth seq continues");
  assert.equal(s.gaps, 0, `gaps: ${s.lastError}`);
  assert.equal(s.checksumFailures, 0);
  assert.equal(s.extensions, before.extensions, "the new connection negotiates the same extensions");
  assert.equal(s.auth, "ok", "signed in again after the reconnect");
});

step("the status bar shows the connection, message rate and last seq", async () => {
  await until(() => Number(document.getElementById("msg-rate").textContent) > 0, null, "a message rate");
  // Drawn every 100 ms: right after a reconnect the bar may still show the state before it.
  await until(() => document.getElementById("conn-state").textContent === "open", null, "the bar to show the open connection");
  assert.match(await page.textContent("#last-seq"), /^\d+$/);
  assert.equal(await page.textContent("#gap-count"), "0");
  assert.equal(await page.textContent("#checksum-failures"), "0");
  assert.deepEqual(pageErrors, []);
});

step("switching the instrument moves every market-data channel to it", async () => {
  const other = await page.evaluate(() => Array.from(document.querySelectorAll("#instrument option"), (o) => o.value).find((v) => v !== window.tickerd.state.instrument));
  const before = (await state()).checksumOk;
  await page.selectOption("#instrument", other);
  await until(
    ({ other, before }) =>
      window.tickerd.state.instrument === other &&
      window.tickerd.state.lastSeq[`depth:${other}`] !== undefined &&
      window.tickerd.state.checksumOk > before + 5,
    { other, before },
    `depth of ${other}`,
  );
  const s = await state();
  const stale = Object.keys(s.lastSeq).filter((k) => k !== "orders" && !k.endsWith(`:${other}`));
  assert.deepEqual(stale, [], "no channel of the previous instrument is still tracked");
  assert.equal(s.checksumFailures, 0);
  assert.equal(s.gaps, 0);
});

// The server never sends a bad checksum or skips a message, so a second page gets its messages
// through a wrapper of WebSocket's onmessage (installed before the page's script runs) that can
// corrupt or drop one on request. It runs in the page: a route through Playwright could not keep
// up with the simulator.
function installTamper() {
  const tamper = (window.__tamper = { corruptDepth: false, dropDepth: false, dropTrade: false });
  const onmessage = Object.getOwnPropertyDescriptor(WebSocket.prototype, "onmessage");
  Object.defineProperty(WebSocket.prototype, "onmessage", {
    get() {
      return onmessage.get.call(this);
    },
    set(handler) {
      onmessage.set.call(this, (event) => {
        if (!(tamper.corruptDepth || tamper.dropDepth || tamper.dropTrade)) return handler(event);
        const msg = JSON.parse(event.data);
        const depthUpdate = msg.type === "update" && msg.channel === "depth";
        if (depthUpdate && tamper.corruptDepth) {
          tamper.corruptDepth = false;
          msg.checksum = (msg.checksum ^ 1) >>> 0;
          return handler({ data: JSON.stringify(msg) });
        }
        if (depthUpdate && tamper.dropDepth) return void (tamper.dropDepth = false);
        if (msg.type === "trade" && tamper.dropTrade) return void (tamper.dropTrade = false);
        return handler(event);
      });
    },
  });
}

step("a wrong checksum or a missed message makes the page resync from a fresh snapshot", async () => {
  const tampered = await context.newPage();
  tampered.on("pageerror", (e) => pageErrors.push(String(e)));
  await tampered.addInitScript(installTamper);
  const set = (flag) => tampered.evaluate((f) => (window.__tamper[f] = true), flag);
  const s = () => tampered.evaluate(() => JSON.parse(JSON.stringify(window.tickerd.state)));
  const wait = (fn, arg, what) => tampered.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 50 }).catch(async (e) => {
    throw new Error(`timed out waiting for ${what}: ${e.message}\npage state: ${JSON.stringify(await s())}`);
  });
  await tampered.goto(PAGE_URL);
  await wait(() => window.tickerd && window.tickerd.state.checksumOk >= 5, null, "verified depth on the tampered page");

  await set("corruptDepth");
  await wait(() => window.tickerd.state.checksumFailures === 1 && window.tickerd.state.resyncs === 1, null, "the checksum failure and its resync");
  let ok = (await s()).checksumOk;
  await wait((n) => window.tickerd.state.checksumOk > n + 5, ok, "verified depth after the fresh snapshot");

  await set("dropDepth");
  await wait(() => window.tickerd.state.gaps === 1 && window.tickerd.state.resyncs === 2, null, "the depth gap and its resync");
  ok = (await s()).checksumOk;
  await wait((n) => window.tickerd.state.checksumOk > n + 5, ok, "verified depth after the gap");

  await set("dropTrade");
  await wait(() => window.tickerd.state.gaps === 2, null, "the trades gap");
  const last = await s();
  assert.equal(last.checksumFailures, 1, "only the corrupted message failed");
  assert.equal(last.resyncs, 2, "a trades gap is counted, not resynced: trades have no snapshot");
  assert.ok(
    (await tampered.evaluate(() => document.querySelectorAll("#ladder-bids tr").length)) > 0,
    "the ladder is whole again",
  );
  await tampered.close();
  assert.deepEqual(pageErrors, []);
});

/** A non-negative decimal string as a BigInt with `scale` implied decimals. */
function units(s, scale) {
  const [int, frac = ""] = s.split(".");
  return BigInt(int + frac.padEnd(scale, "0").slice(0, scale));
}

/** The exact sum of two non-negative decimal strings (to 12 decimals). */
function addDecimals(a, b) {
  const sum = (units(a, 12) + units(b, 12)).toString().padStart(13, "0");
  return `${sum.slice(0, -12)}.${sum.slice(-12)}`;
}

/**
 * A buy price `percentOfBid`% of the best bid (kept a tick inside the instrument's price band),
 * on the tick grid: exact decimal arithmetic on BigInts, as the page itself does.
 */
function awayFromMarket(bid, spec, percentOfBid = 95n) {
  const scale = Math.max(decimals(bid), decimals(spec.tick_size));
  const units = (s) => BigInt(s.replace(".", "") + "0".repeat(scale - decimals(s)));
  const tick = units(spec.tick_size);
  let price = (units(bid) * percentOfBid) / 100n;
  if (spec.band_low) {
    const low = units(spec.band_low);
    if (price <= low) price = low + tick;
  }
  price -= price % tick;
  const digits = price.toString().padStart(scale + 1, "0");
  return scale ? `${digits.slice(0, -scale)}.${digits.slice(-scale)}` : digits;
}

function decimals(s) {
  return (s.split(".")[1] || "").length;
}
