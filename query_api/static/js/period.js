// The period of a view: the quick (rolling) ranges and the concrete window a filter state stands for.

export const RANGES = {
  "1h": { ms: 3600e3, label: "Last hour" },
  "24h": { ms: 24 * 3600e3, label: "Last 24 hours" },
  "7d": { ms: 7 * 24 * 3600e3, label: "Last 7 days" },
  "30d": { ms: 30 * 24 * 3600e3, label: "Last 30 days" },
};
export const DEFAULT_RANGE = "7d";

/** A Date from a URL value, or null when it is missing or not a date. */
export function parseDate(s) {
  if (!s) return null;
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** The concrete time window of a filter state at `now`: a rolling range ends now; a custom one keeps its bounds. */
export function resolveWindow(s, now = new Date()) {
  if (s.range) return { start: new Date(now.getTime() - RANGES[s.range].ms), end: now };
  const end = s.end || now;
  const start = s.start || new Date(end.getTime() - RANGES[DEFAULT_RANGE].ms);
  return { start, end };
}
