// Refresh and auto-refresh: load the view again (a rolling period up to now), highlighting the new events.
// Auto-refresh (every 10 s, remembered in localStorage) pauses while the tab is hidden, a load is running,
// the user pages deeper than the first page or reads a failed load.

import { toast } from "./dom.js";
import { load, PAGE_SIZE } from "./results.js";
import { page, setTimer } from "./state.js";

const AUTO_REFRESH_MS = 10_000;
const AUTO_KEY = "auditlog.autorefresh";

const auto = document.getElementById("auto-refresh");

export function stopAuto() {
  clearInterval(page.timer);
  setTimer(null);
}

/** Start or stop the timer as the Auto-refresh toggle says. */
export function applyAuto() {
  stopAuto();
  if (auto.checked) {
    setTimer(
      setInterval(() => {
        // keep the user's place: no auto-refresh while paging deeper or reading a failed load
        if (document.visibilityState === "visible" && !page.loading && page.rows.length <= PAGE_SIZE && !page.error) load({ markNew: true });
      }, AUTO_REFRESH_MS),
    );
  }
}

/** The toggle as last left (off by default), and the listeners of Refresh and the toggle. */
export function initLive() {
  try {
    auto.checked = localStorage.getItem(AUTO_KEY) === "1";
  } catch {
    auto.checked = false;
  }
  document.getElementById("refresh").addEventListener("click", () => load({ markNew: true }));
  auto.addEventListener("change", () => {
    try {
      localStorage.setItem(AUTO_KEY, auto.checked ? "1" : "0");
    } catch {
      /* ignore */
    }
    applyAuto();
    toast(auto.checked ? "Auto-refresh every 10 seconds is on" : "Auto-refresh is off");
  });
}
