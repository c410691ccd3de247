// The detail panel of a results row: expand / collapse (click, Enter, Space; arrow keys move between rows),
// the full event (from the list, or GET /v1/events/{id} when the list left its detail out), copy as JSON.

import { api } from "./api.js";
import { $$, h, toast } from "./dom.js";
import { dropDetail, page, setDetail, setFilters, toggleExpanded } from "./state.js";
import { detailRow } from "./table.js";

const rowsBody = document.getElementById("rows");

const detailOpts = {
  get tz() {
    return page.tz;
  },
  onFilter: (key, value) => setFilters({ [key]: value }),
  onCopy: copyText,
};

/** The detail <tr> of an expanded event, as loaded so far. */
export const detailFor = (ev) => detailRow(ev, page.details.get(ev.event_id) || null, detailOpts);

async function copyText(text, button) {
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch {
    const ta = h("textarea", { style: { position: "fixed", opacity: "0" } });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    ta.remove();
  }
  if (button) {
    const label = button.lastChild;
    button.classList.toggle("is-done", ok);
    label.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => {
      button.classList.remove("is-done");
      label.textContent = "Copy JSON";
    }, 1500);
  }
  toast(ok ? "Event JSON copied to the clipboard" : "Could not copy: select the JSON and copy it by hand", ok ? "info" : "error");
}

function replaceDetail(id) {
  const tr = rowsBody.querySelector(`tr.event-row[data-id="${CSS.escape(id)}"]`);
  if (!tr) return;
  const next = tr.nextElementSibling;
  if (next && next.classList.contains("detail-row")) next.remove();
  if (!page.expanded.has(id)) return;
  const ev = page.rows.find((r) => r.event_id === id);
  tr.after(detailRow(ev, page.details.get(id) || null, detailOpts));
}

async function toggleRow(tr) {
  const id = tr.dataset.id;
  const open = toggleExpanded(id);
  tr.setAttribute("aria-expanded", String(open));
  replaceDetail(id);
  const ev = page.rows.find((r) => r.event_id === id);
  if (open && ev && "detail" in ev && !ev.detail_omitted && !page.details.has(id)) {
    // the list already carries the full event (detail included): no second request; a row whose large detail
    // the list left out (detail_omitted) is fetched whole from GET /v1/events/{id} below, "Loading…" meanwhile
    setDetail(id, ev);
    replaceDetail(id);
    return;
  }
  if (open && !(page.details.get(id) && !(page.details.get(id) instanceof Error))) {
    if (dropDetail(id)) replaceDetail(id); // a retry after an error shows "Loading…" again
    try {
      setDetail(id, await api.event(id));
    } catch (err) {
      setDetail(id, err instanceof Error ? err : new Error(String(err)));
    }
    replaceDetail(id);
  }
}

/** Rows open and close with the mouse and the keyboard. */
export function initDetail() {
  rowsBody.addEventListener("click", (e) => {
    const tr = e.target.closest("tr.event-row");
    if (!tr || e.target.closest("a,button")) return;
    if (String(window.getSelection() || "").length) return; // selecting text is not a click
    toggleRow(tr);
  });
  rowsBody.addEventListener("keydown", (e) => {
    const tr = e.target.closest("tr.event-row");
    if (!tr || e.target !== tr) return;
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      toggleRow(tr);
    } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      const rows = $$("tr.event-row", rowsBody);
      const i = rows.indexOf(tr) + (e.key === "ArrowDown" ? 1 : -1);
      if (rows[i]) rows[i].focus();
    }
  });
}
