// The Export menu: download exactly the current view as CSV or NDJSON (GET /v1/events/export). Offered only
// with the audit:export permission (session.js shows it); the server enforces it either way.

import { ApiError, api, missingPermission } from "./api.js";
import { $$, h, toast } from "./dom.js";
import { page } from "./state.js";

const el = (id) => document.getElementById(id);
const E = { wrap: el("export-wrap"), btn: el("export-btn"), menu: el("export-menu") };

function setMenu(open) {
  E.menu.hidden = !open;
  E.btn.setAttribute("aria-expanded", String(open));
  if (open) E.menu.querySelector("button").focus();
}

/** Download exactly the current view (same filters and the same resolved period as the table). */
async function exportView(format) {
  if (!page.params) return;
  E.btn.disabled = true;
  E.btn.classList.add("is-busy");
  try {
    const { blob, filename } = await api.export(page.params, format);
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: filename, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    toast(`Downloaded ${filename}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) {
      toast(`Export needs the ${missingPermission(err, "audit:export")} permission. Ask an organization owner.`, "error");
    } else if (!(err instanceof ApiError && err.status === 401)) {
      toast(`Export failed: ${err.message}`, "error");
    }
  } finally {
    E.btn.disabled = false;
    E.btn.classList.remove("is-busy");
  }
}

/** The menu opens on its button, moves with the arrow keys, closes on Escape or a click elsewhere. */
export function initExport() {
  E.btn.addEventListener("click", () => setMenu(E.menu.hidden));
  E.menu.addEventListener("keydown", (e) => {
    const items = $$("button", E.menu);
    const i = items.indexOf(document.activeElement);
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      items[(i + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length].focus();
    } else if (e.key === "Escape") {
      setMenu(false);
      E.btn.focus();
    }
  });
  document.addEventListener("click", (e) => {
    if (!E.wrap.contains(e.target)) setMenu(false);
  });
  for (const item of $$("button", E.menu)) {
    item.addEventListener("click", () => {
      setMenu(false);
      exportView(item.dataset.format);
    });
  }
}
