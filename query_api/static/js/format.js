// Formatting of timestamps, user agents and numbers. Pure functions (no DOM).

const TZ_KEY = "auditlog.tz";

/** "utc" or "local", remembered in localStorage (default utc). */
export function getTzMode() {
  try {
    return localStorage.getItem(TZ_KEY) === "local" ? "local" : "utc";
  } catch {
    return "utc";
  }
}

export function setTzMode(mode) {
  try {
    localStorage.setItem(TZ_KEY, mode === "local" ? "local" : "utc");
  } catch {
    /* storage unavailable: the switch still works for this page */
  }
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

function parts(date, mode) {
  return mode === "local"
    ? [date.getFullYear(), date.getMonth() + 1, date.getDate(), date.getHours(), date.getMinutes(), date.getSeconds()]
    : [date.getUTCFullYear(), date.getUTCMonth() + 1, date.getUTCDate(), date.getUTCHours(), date.getUTCMinutes(), date.getUTCSeconds()];
}

/** RFC 3339 string or Date -> "YYYY-MM-DD HH:mm:ss" in UTC or local time. */
export function formatTs(value, mode = getTzMode()) {
  const d = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(d.getTime())) return String(value ?? "");
  const [y, mo, da, hh, mi, ss] = parts(d, mode);
  return `${y}-${pad(mo)}-${pad(da)} ${pad(hh)}:${pad(mi)}:${pad(ss)}`;
}

/** "UTC" or "UTC+01:00"-style label of the local offset. */
export function tzLabel(mode = getTzMode(), at = new Date()) {
  if (mode !== "local") return "UTC";
  const off = -at.getTimezoneOffset();
  if (off === 0) return "Local, UTC";
  const sign = off > 0 ? "+" : "-";
  const a = Math.abs(off);
  return `Local, UTC${sign}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
}

/** Date -> value for <input type="datetime-local"> (minute precision) in the chosen mode. */
export function toInputValue(date, mode = getTzMode()) {
  if (!date) return "";
  const [y, mo, da, hh, mi] = parts(date, mode);
  return `${y}-${pad(mo)}-${pad(da)}T${pad(hh)}:${pad(mi)}`;
}

/** Value of <input type="datetime-local"> -> Date, reading it as UTC or local per mode; null if empty/bad. */
export function fromInputValue(value, mode = getTzMode()) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?/.exec(value || "");
  if (!m) return null;
  const [y, mo, d, hh, mi, ss] = m.slice(1).map((x) => Number(x || 0));
  const date = mode === "local" ? new Date(y, mo - 1, d, hh, mi, ss) : new Date(Date.UTC(y, mo - 1, d, hh, mi, ss));
  return Number.isNaN(date.getTime()) ? null : date;
}

/** Date -> RFC 3339 UTC with milliseconds, the API's format. */
export const toRfc3339 = (date) => date.toISOString();

const BROWSERS = [
  [/Edg(?:e|A|iOS)?\/([\d]+)/, "Edge"],
  [/OPR\/([\d]+)/, "Opera"],
  [/Firefox\/([\d]+)/, "Firefox"],
  [/(?:Chrome|CriOS)\/([\d]+)/, "Chrome"],
  [/Version\/([\d]+).*Safari\//, "Safari"],
];
const SYSTEMS = [
  [/Windows/, "Windows"],
  [/iPhone|iPad|iOS/, "iOS"],
  [/Mac OS X|Macintosh/, "macOS"],
  [/Android/, "Android"],
  [/CrOS/, "ChromeOS"],
  [/Linux|X11/, "Linux"],
];

/** A short, human label for a user agent: "Chrome 126 · macOS", "python-requests 2.31", "terraform 1.9" … */
export function shortUserAgent(ua) {
  if (!ua) return "";
  if (/^Mozilla\//.test(ua)) {
    const b = BROWSERS.find(([re]) => re.test(ua));
    const os = SYSTEMS.find(([re]) => re.test(ua));
    const name = b ? `${b[1]} ${b[0].exec(ua)[1]}` : "Browser";
    return os ? `${name} · ${os[1]}` : name;
  }
  const first = ua.split(/\s+/)[0];
  const m = /^([^/]+)\/([\w.]+)/.exec(first);
  const label = m ? `${m[1]} ${m[2]}` : first;
  return label.length > 32 ? `${label.slice(0, 31)}…` : label;
}

const nf = new Intl.NumberFormat("en-US");
export const formatCount = (n) => nf.format(n);
