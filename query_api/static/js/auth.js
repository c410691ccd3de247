// The bearer token: kept in sessionStorage (gone when the tab closes), decoded client-side for display only.
// The server verifies the signature and enforces every permission; nothing here grants access.

const KEY = "auditlog.token";

export function getToken() {
  try {
    return sessionStorage.getItem(KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  try {
    sessionStorage.setItem(KEY, token);
  } catch {
    /* private mode without storage: the token lives for this page only */
  }
}

export function clearToken() {
  try {
    sessionStorage.removeItem(KEY);
  } catch {
    /* ignore */
  }
}

/** Accepts "Bearer xxx" or "xxx"; trims whitespace and quotes a copy-paste may carry. */
export function normaliseToken(raw) {
  return String(raw || "")
    .trim()
    .replace(/^bearer\s+/i, "")
    .replace(/^["']|["']$/g, "")
    .trim();
}

/** The JWT payload as an object, or null when the token is not a readable JWT. */
export function decodeClaims(token) {
  const parts = String(token || "").split(".");
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** What the page shows and offers for these claims (display only). */
export function describeCaller(claims) {
  const c = claims || {};
  const perms = Array.isArray(c.permissions) ? c.permissions.map(String) : [];
  const role = c.role === "workspace_admin" ? "workspace_admin" : c.role === "org_owner" ? "org_owner" : String(c.role || "");
  return {
    sub: c.sub ? String(c.sub) : "",
    email: c.email ? String(c.email) : "",
    org: c.org_id ? String(c.org_id) : "",
    role,
    roleLabel: role === "workspace_admin" ? "Workspace Admin" : role === "org_owner" ? "Organization Owner" : role || "Unknown role",
    workspaces: Array.isArray(c.workspaces) ? c.workspaces.map(String) : [],
    canRead: perms.includes("audit:read"),
    canExport: perms.includes("audit:export"),
    canStream: role === "org_owner" && perms.includes("audit:stream"),
    expiresAt: typeof c.exp === "number" ? new Date(c.exp * 1000) : null,
  };
}

export function isExpired(caller, now = Date.now()) {
  return Boolean(caller.expiresAt && caller.expiresAt.getTime() <= now);
}
