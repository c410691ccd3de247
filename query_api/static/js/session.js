// The session: the sign-in prompt (a pasted bearer token, kept by auth.js), sign-out, a token the API refuses,
// and what the page shows and offers for the caller's role (display only: the server enforces every permission).

import { setUnauthorizedHandler } from "./api.js";
import { clearToken, decodeClaims, normaliseToken, setToken } from "./auth.js";
import { h, setChildren } from "./dom.js";
import { stopAuto } from "./live.js";
import { stopLive } from "./live_tail.js";
import { render } from "./results.js";
import { abortLoad, clearSession, page } from "./state.js";

const el = (id) => document.getElementById(id);
const E = {
  main: el("main"),
  topbar: document.querySelector(".topbar"),
  signin: el("signin"),
  signinForm: el("signin-form"),
  signinReason: el("signin-reason"),
  tokenInput: el("token-input"),
  whoami: el("whoami"),
  wsSelect: el("f-workspace"),
  wsText: el("f-workspace-text"),
};

/** The sign-in prompt over an inert page, with the reason it is shown (if any). */
export function showSignIn(reason) {
  stopAuto();
  stopLive();
  abortLoad();
  E.signinReason.hidden = !reason;
  E.signinReason.textContent = reason || "";
  E.signin.hidden = false;
  E.whoami.hidden = true;
  E.main.inert = true;
  E.topbar.inert = true;
  E.tokenInput.value = "";
  E.tokenInput.focus();
}

function hideSignIn() {
  E.signin.hidden = true;
  E.main.inert = false;
  E.topbar.inert = false;
}

/** The caller's identity and role: header, scope note, Verify / Export buttons, the workspace filter. */
export function applyCaller() {
  const c = page.caller;
  E.whoami.hidden = false;
  el("who-email").textContent = c.email || c.sub || "Signed in";
  el("who-role").textContent = c.org ? `${c.roleLabel} · ${c.org}` : c.roleLabel;
  el("who-avatar").textContent = (c.email || c.sub || "?").slice(0, 1).toUpperCase();
  el("crumb-org").textContent = c.org ? `Organization: ${c.org}` : "Organization";
  document.title = c.org ? `Audit Logs · ${c.org}` : "Audit Logs";
  const note = el("scope-note");
  if (c.role === "workspace_admin") {
    const ws = c.workspaces.length ? c.workspaces.join(", ") : "none";
    note.textContent = `You are a Workspace Admin: only events of your workspaces (${ws}) are shown. Logs are read-only.`;
  } else {
    note.textContent = `All user and system actions across ${c.org ? `organization ${c.org}` : "your organization"}. Logs are read-only.`;
  }
  // The integrity check covers the whole organization: offered to org owners only (the server enforces it).
  el("verify").hidden = c.role !== "org_owner";
  el("integrity-note").hidden = true;
  // Log streams carry the whole organization's events: org owners with audit:stream (the server enforces it).
  el("streams-btn").hidden = !c.canStream;
  if (!c.canStream) el("streams").hidden = true;
  // Export is only offered with audit:export; the server enforces it either way.
  el("export-wrap").hidden = !c.canExport;
  // Workspace filter: a workspace admin picks among its own workspaces; an owner may type any id.
  const admin = c.role === "workspace_admin";
  E.wsSelect.hidden = !admin;
  E.wsText.hidden = admin;
  el("ws-field").querySelector("label").htmlFor = admin ? "f-workspace" : "f-workspace-text";
  if (admin) {
    setChildren(E.wsSelect, h("option", { value: "" }, "All my workspaces"), c.workspaces.map((w) => h("option", { value: w }, w)));
  }
}

/** Sign-in, sign-out and the API's 401; `onSignIn` starts the page with the stored token. */
export function initSession({ onSignIn }) {
  E.signinForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const token = normaliseToken(E.tokenInput.value);
    if (!token) return showSignIn("Paste a token to sign in.");
    if (!decodeClaims(token)) return showSignIn("That does not look like a JWT (three base64url parts separated by dots).");
    setToken(token);
    hideSignIn();
    onSignIn();
  });

  E.tokenInput.addEventListener("keydown", (e) => {
    // a pasted token is one line: Enter signs in (Shift+Enter still inserts a newline)
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      E.signinForm.requestSubmit();
    }
  });

  el("sign-out").addEventListener("click", () => {
    clearToken();
    clearSession();
    render();
    showSignIn("You are signed out.");
  });

  setUnauthorizedHandler((err) => {
    clearToken();
    showSignIn(`The API did not accept your token (${err.message}). Paste a valid token to continue.`);
  });
}
