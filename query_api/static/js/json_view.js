// Pretty-printed, syntax-highlighted JSON as DOM lines; `detail.before` / `detail.after` lines are highlighted.

import { h } from "./dom.js";

function scalar(v) {
  if (v === null) return h("span.j-null", "null");
  if (typeof v === "string") return h("span.j-str", JSON.stringify(v));
  if (typeof v === "number") return h("span.j-num", String(v));
  if (typeof v === "boolean") return h("span.j-bool", String(v));
  return h("span", JSON.stringify(v));
}

/** Lines of `value` rendered like JSON.stringify(value, null, 2). */
function lines(value, key, depth, comma, cls, parentKey, out) {
  const keyNode = key === undefined ? null : [h("span.j-key", JSON.stringify(key)), h("span.j-punc", ": ")];
  let mine = cls;
  if (parentKey === "detail" && (key === "before" || key === "after")) mine = `hl-${key}`;
  const line = (nodes, c = mine) =>
    out.push(h("div.jl", { class: c || undefined, style: { "--d": depth } }, nodes));
  const isArr = Array.isArray(value);
  if (value !== null && typeof value === "object" && (isArr ? value.length : Object.keys(value).length)) {
    const [open, close] = isArr ? ["[", "]"] : ["{", "}"];
    const tag = mine && mine !== cls ? h("span.j-tag", { "data-tag": key, "aria-hidden": "true" }) : null;
    line([keyNode, h("span.j-punc", open), tag]);
    const entries = isArr ? value.map((v, i) => [undefined, v, i]) : Object.entries(value).map(([k, v], i) => [k, v, i]);
    const n = entries.length;
    for (const [k, v, i] of entries) lines(v, k, depth + 1, i < n - 1, mine, isArr ? parentKey : key, out);
    line([h("span.j-punc", close + (comma ? "," : ""))]);
  } else {
    const empty = value !== null && typeof value === "object" ? h("span.j-punc", isArr ? "[]" : "{}") : scalar(value);
    const tag = mine && mine !== cls ? h("span.j-tag", { "data-tag": key, "aria-hidden": "true" }) : null;
    line([keyNode, empty, comma ? h("span.j-punc", ",") : null, tag]);
  }
  return out;
}

/** A <pre> block with the highlighted JSON of `value`. */
export function jsonView(value) {
  return h("pre.json", { tabindex: "0", "aria-label": "Event JSON" }, h("code", lines(value, undefined, 0, false, "", null, [])));
}

/** [{key, before, after}] of the top-level keys that differ between detail.before and detail.after. */
export function changes(detail) {
  if (!detail || typeof detail !== "object" || !("before" in detail || "after" in detail)) return [];
  const b = detail.before && typeof detail.before === "object" && !Array.isArray(detail.before) ? detail.before : null;
  const a = detail.after && typeof detail.after === "object" && !Array.isArray(detail.after) ? detail.after : null;
  if (!a && !b) return [];
  const keys = [...new Set([...Object.keys(b || {}), ...Object.keys(a || {})])];
  return keys
    .filter((k) => JSON.stringify(b ? b[k] : undefined) !== JSON.stringify(a ? a[k] : undefined))
    .map((k) => ({ key: k, before: b ? b[k] : undefined, after: a ? a[k] : undefined }));
}

export const short = (v) => (v === undefined ? "—" : typeof v === "string" ? v : JSON.stringify(v));
