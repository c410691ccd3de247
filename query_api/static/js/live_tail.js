// The live tail (API.md "Live tail"): GET /v1/events/stream read with fetch() (EventSource cannot send the bearer
// header) and parsed by sse.js; each new event goes on top of the table, highlighted, once (an event_id already
// shown is skipped). After a drop it reconnects with Last-Event-ID (no gap, no repeat), with backoff and the
// server's Retry-After on 429 / 503; it stops on 401 / 403 / 422 and says why. Paused (the stream closed) while
// the tab is hidden, the user reads a page deeper than the first, or a load failed. A change of filters reopens
// it. Its state is page.live (state.js); its status is shown in #live-status.

import { ApiError, api, missingPermission } from "./api.js";
import { h, setChildren, toast } from "./dom.js";
import { render } from "./results.js";
import { createParser } from "./sse.js";
import { dropLive, on, page, queueLive, setLive, streamParams, takeLive } from "./state.js";

export const LIVE_MAX_ROWS = 500; // the first page and what Live added: older rows leave the table
const FLUSH_MS = 150; // events that arrive together are drawn together
const STALL_MS = 45_000; // nothing, not even a heartbeat (at least every 15 s), for this long: the connection is dead
const MAX_BACKOFF_MS = 30_000;
const SHORT_LIVED_MS = 5_000; // a stream that ends sooner counts as a failed attempt (backoff grows)

const statusEl = document.getElementById("live-status");
const rowsEl = document.getElementById("rows");

const HINT = {
  connecting: "Opening the live stream…",
  live: "New events appear at the top of the table as they are stored.",
  reconnecting: "The live stream dropped; reconnecting without losing events.",
};
const PAUSED = {
  hidden: "the tab is hidden",
  deeper: "older pages are shown: Refresh to return to the newest events",
  error: "the view could not be loaded",
};

function showStatus(status, why = "") {
  setLive({ status, why });
  statusEl.hidden = status === "off";
  statusEl.dataset.state = status;
  const text = status === "paused" ? PAUSED[why] : why;
  const detail = text ? h(status === "stopped" ? "span.live-why" : "span.sr-only", `: ${text}`) : null;
  setChildren(statusEl, status === "off" ? null : status, detail);
  statusEl.title = text || HINT[status] || "";
}

/** Why the stream should be closed now ("" when it may run). */
function pauseReason() {
  if (document.visibilityState === "hidden") return "hidden";
  if (page.pages > 1) return "deeper";
  if (page.error) return "error";
  return "";
}

const isCurrent = (ctrl) => page.live.ctrl === ctrl;

/** Close the stream (and cancel a pending reconnection). */
function close() {
  clearTimeout(page.live.retryTimer);
  if (page.live.ctrl) page.live.ctrl.abort();
  setLive({ ctrl: null, retryTimer: null });
}

/** Open the stream unless Live is off, stopped, already open or waiting to reconnect; close it while paused. */
function resume() {
  const live = page.live;
  if (!live.on || !page.started || live.status === "stopped") return;
  const why = pauseReason();
  if (why) {
    close();
    if (live.status !== "paused" || live.why !== why) showStatus("paused", why);
    return;
  }
  // back on the first page after a fresh load: the table is current, the stream starts from now
  if (live.status === "paused" && live.why !== "hidden") setLive({ lastId: "" });
  if (!live.ctrl && !live.retryTimer) connect();
}

async function connect() {
  const ctrl = new AbortController();
  const opened = Date.now();
  setLive({ ctrl });
  showStatus(page.live.failures ? "reconnecting" : "connecting");
  try {
    const headers = page.live.lastId ? { "Last-Event-ID": page.live.lastId } : {};
    const resp = await api.stream(streamParams(page.filters), { signal: ctrl.signal, headers });
    await read(resp, ctrl);
    if (!isCurrent(ctrl)) return;
    // the server ended the stream (e.g. this client fell behind): resume after the last event received
    const lived = Date.now() - opened >= SHORT_LIVED_MS;
    retryIn(lived ? 250 : backoff(page.live.failures + 1), lived ? 1 : page.live.failures + 1);
  } catch (err) {
    if (!isCurrent(ctrl)) return; // closed on purpose: Live off, paused, other filters
    failed(err, Date.now() - opened >= SHORT_LIVED_MS);
  }
}

/** Read the stream until it ends; each chunk re-arms the stall watchdog. */
async function read(resp, ctrl) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  const parser = createParser({
    lastEventId: page.live.lastId,
    onEvent: (msg) => {
      if (!isCurrent(ctrl)) return;
      if (msg.type === "audit") take(msg.data);
      setLive({ lastId: msg.id });
    },
    onRetry: (ms) => setLive({ retryMs: Math.min(Math.max(ms, 500), MAX_BACKOFF_MS) }),
    onId: (id) => isCurrent(ctrl) && setLive({ lastId: id }), // the server ends a stream with where to resume
  });
  let stall = null;
  try {
    for (;;) {
      clearTimeout(stall);
      stall = setTimeout(() => ctrl.abort(), STALL_MS); // a drop (the connection stays current): reconnect
      const { value, done } = await reader.read();
      if (done || !isCurrent(ctrl)) return;
      if (page.live.status !== "live") showStatus("live"); // "retry" and ": live" come at once
      parser.feed(decoder.decode(value, { stream: true }));
    }
  } finally {
    clearTimeout(stall);
  }
}

function backoff(failures) {
  const ms = Math.min(page.live.retryMs * 2 ** Math.max(failures - 1, 0), MAX_BACKOFF_MS);
  return ms * (0.75 + Math.random() * 0.5);
}

function retryIn(ms, failures) {
  setLive({
    ctrl: null,
    failures,
    retryTimer: setTimeout(() => {
      setLive({ retryTimer: null });
      resume();
    }, ms),
  });
  showStatus("reconnecting");
}

function failed(err, lived) {
  const status = err instanceof ApiError ? err.status : 0;
  if (status === 401) return stop("the token was not accepted", false); // the sign-in prompt says the rest
  if (status === 403) return stop(`permission required (${missingPermission(err)})`);
  if (status === 400 || status === 422) {
    // a resume point the server no longer knows: start again from now
    if (page.live.lastId && /last.?event/i.test(`${err.field} ${err.message}`)) {
      setLive({ lastId: "" });
      return retryIn(0, page.live.failures);
    }
    return stop(err.message);
  }
  const failures = lived ? 1 : page.live.failures + 1;
  const after = err instanceof ApiError && typeof err.retryAfter === "number" ? err.retryAfter * 1000 : null;
  retryIn(after !== null ? Math.max(after, 250) : backoff(failures), failures);
}

/** The stream cannot go on: closed, with the reason next to the toggle (a change of filters tries again). */
function stop(why, announce = true) {
  close();
  showStatus("stopped", why);
  if (announce) toast(`Live stopped: ${why}`, "error");
}

function take(data) {
  let ev;
  try {
    ev = JSON.parse(data);
  } catch {
    return; // not an event: skipped
  }
  queueLive(ev);
  if (!page.live.flushTimer) setLive({ flushTimer: setTimeout(flush, FLUSH_MS) });
}

/** The waiting events on top of the table, after a running load (whose rows they go above). */
function flush() {
  setLive({ flushTimer: null });
  if (!page.live.on) return;
  if (page.loading) return setLive({ flushTimer: setTimeout(flush, FLUSH_MS) });
  const before = rowsEl.getBoundingClientRect();
  if (!takeLive(LIVE_MAX_ROWS)) return;
  render();
  // a reader scrolled down into the table keeps the rows they were reading in place
  if (before.top < 0) window.scrollBy(0, rowsEl.getBoundingClientRect().height - before.height);
}

function forget() {
  close();
  dropLive();
  clearTimeout(page.live.flushTimer);
  setLive({ flushTimer: null, lastId: "", failures: 0 });
}

/** Live on: the stream opens (now or once no longer paused). */
export function startLive() {
  if (!page.live.on) forget();
  setLive({ on: true });
  if (page.live.status === "stopped" || page.live.status === "off") showStatus("connecting");
  resume();
}

/** Live off (or signed out): the stream is aborted and nothing more is asked of it. */
export function stopLive() {
  forget();
  setLive({ on: false });
  showStatus("off");
}

/** Other filters: the stream of the old ones ends and one of the new ones opens (the table reloads meanwhile). */
function reopen() {
  if (!page.live.on) return;
  forget();
  showStatus("connecting");
  resume();
}

/** Pause / resume with the tab's visibility and the view's loads; reopen on a change of filters. */
export function initLiveTail() {
  document.addEventListener("visibilitychange", resume);
  on("view", resume);
  on("filters", reopen);
}
