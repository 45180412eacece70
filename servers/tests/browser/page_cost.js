// What the trader page costs per message in headless Chromium, measured two ways against a
// running server (TICKER_WS_ADDR, or TICKER_PAGE_URL for another copy of the page):
//
// Live, over TICKER_COST_SECONDS (default 20) after the page has settled:
// - handler: the page's own count of time spent in its WebSocket message handler (parse,
//   books, checksums; window.tickerd.state.handlerMs) divided by the messages it handled;
// - main thread: Chromium's own TaskDuration (everything the renderer's main thread did: the
//   handler, rendering, layout, paint, timers, garbage collection), from the DevTools
//   protocol's Performance.getMetrics, divided by the same message count.
// Both are wall-clock figures: on a busy machine they include time the page was descheduled.
//
// Replayed: the first TICKER_REPLAY_MESSAGES (default 20,000) messages a page receives are
// recorded, then fed to fresh pages through a stand-in WebSocket as fast as the handler takes
// them (no network, no rendering in between); handler time per message is the least of
// TICKER_REPLAY_ROUNDS (default 5) rounds, which leaves out most of what else the machine does.
//
//   TICKER_WS_ADDR=127.0.0.1:8080 node servers/tests/browser/page_cost.js
//
// The server must run the simulator; start it as run.sh does (its ws_server example).
"use strict";

const { chromium } = require("playwright-core");

const ADDR = process.env.TICKER_WS_ADDR;
const PAGE_URL = process.env.TICKER_PAGE_URL || `http://${ADDR}/`;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SECONDS = Number(process.env.TICKER_COST_SECONDS || 20);
const SETTLE_MS = 5000;
const REPLAY_MESSAGES = Number(process.env.TICKER_REPLAY_MESSAGES || 20000);
const REPLAY_ROUNDS = Number(process.env.TICKER_REPLAY_ROUNDS || 5);

/** Init script: keeps every text message the page's socket receives in window.__recorded. */
function installRecorder(limit) {
  const recorded = (window.__recorded = []);
  const onmessage = Object.getOwnPropertyDescriptor(WebSocket.prototype, "onmessage");
  Object.defineProperty(WebSocket.prototype, "onmessage", {
    get() {
      return onmessage.get.call(this);
    },
    set(handler) {
      onmessage.set.call(this, (event) => {
        if (recorded.length < limit) recorded.push(event.data);
        return handler(event);
      });
    },
  });
}

/**
 * Init script: a WebSocket that opens at once, ignores what the page sends, and on
 * window.__replay() hands the recorded messages to the page's handler back to back, returning
 * the milliseconds that took.
 */
function installReplay(messages) {
  class ReplaySocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.extensions = "permessage-deflate";
      window.__socket = this;
      setTimeout(() => {
        this.readyState = 1;
        this.onopen?.({});
      }, 0);
    }
    send() {}
    close() {}
  }
  ReplaySocket.OPEN = 1;
  window.WebSocket = ReplaySocket;
  window.__replay = () => {
    const socket = window.__socket;
    const start = performance.now();
    for (const data of messages) socket.onmessage({ data });
    return performance.now() - start;
  };
}

async function replay(browser) {
  const recording = await browser.newPage();
  await recording.addInitScript(installRecorder, REPLAY_MESSAGES);
  await recording.goto(PAGE_URL);
  await recording.waitForFunction((n) => window.__recorded.length >= n, REPLAY_MESSAGES, { timeout: 120000, polling: 200 });
  const messages = await recording.evaluate(() => window.__recorded);
  await recording.close();
  const perMessage = [];
  for (let round = 0; round < REPLAY_ROUNDS; round++) {
    const page = await browser.newPage();
    await page.addInitScript(installReplay, messages);
    await page.goto(PAGE_URL);
    await page.waitForFunction(() => window.__socket && window.__socket.readyState === 1);
    const ms = await page.evaluate(() => window.__replay());
    const s = await page.evaluate(() => ({ ...window.tickerd.state }));
    if (s.checksumFailures || s.gaps) throw new Error(`replay went wrong: ${JSON.stringify(s)}`);
    perMessage.push((ms * 1000) / messages.length);
    await page.close();
  }
  const sorted = perMessage.slice().sort((a, b) => a - b);
  console.log(
    `replayed ${messages.length} messages ${REPLAY_ROUNDS} times: handler ${sorted[0].toFixed(1)} µs/message ` +
      `(least; median ${sorted[Math.floor(sorted.length / 2)].toFixed(1)})`,
  );
}

async function main() {
  if (!ADDR && !process.env.TICKER_PAGE_URL) throw new Error("set TICKER_WS_ADDR (host:port)");
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage();
    await page.goto(PAGE_URL);
    await page.waitForFunction(() => window.tickerd && window.tickerd.state.checksumOk > 0, null, { timeout: 30000 });
    await page.waitForTimeout(SETTLE_MS);
    const cdp = await page.context().newCDPSession(page);
    await cdp.send("Performance.enable");
    const sample = async () => {
      const { metrics } = await cdp.send("Performance.getMetrics");
      const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
      const s = await page.evaluate(() => ({ ...window.tickerd.state }));
      return { taskMs: m.TaskDuration * 1000, scriptMs: m.ScriptDuration * 1000, messages: s.messages, handlerMs: s.handlerMs, gaps: s.gaps, checksumFailures: s.checksumFailures };
    };
    const a = await sample();
    await page.waitForTimeout(SECONDS * 1000);
    const b = await sample();
    const n = b.messages - a.messages;
    const us = (ms) => ((ms * 1000) / n).toFixed(1);
    console.log(
      `${n} messages in ${SECONDS} s (${(n / SECONDS).toFixed(0)}/s): handler ${us(b.handlerMs - a.handlerMs)} µs/message, ` +
        `main thread ${us(b.taskMs - a.taskMs)} µs/message (script ${us(b.scriptMs - a.scriptMs)}), ` +
        `main thread busy ${(((b.taskMs - a.taskMs) / (SECONDS * 1000)) * 100).toFixed(1)}%; gaps ${b.gaps}, checksum failures ${b.checksumFailures}`,
    );
    await page.close();
    await replay(browser);
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
