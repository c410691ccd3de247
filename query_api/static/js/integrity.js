// "Verify integrity" (org owners): every stored event of the organization checked against the content hash
// recorded when it was stored (GET /v1/integrity); the result is shown under the page title.

import { ApiError, api } from "./api.js";
import { toast } from "./dom.js";
import { formatCount, formatTs } from "./format.js";
import { page } from "./state.js";

const FINDING_LABELS = { altered: "altered", deleted: "deleted", unrecorded: "stored without a recorded hash", conflicting: "sent again with other content (kept aside: the first version stays the record; GET /v1/conflicts lists them)" };

const btn = document.getElementById("verify");
const note = document.getElementById("integrity-note");

async function verifyIntegrity() {
  btn.disabled = true;
  btn.classList.add("is-busy");
  note.hidden = false;
  note.className = "integrity-note";
  note.textContent = "Verifying every stored event against its recorded content hash…";
  try {
    const r = await api.integrity();
    const when = formatTs(r.checked_at, page.tz);
    if (r.clean) {
      note.classList.add("is-clean");
      note.textContent = `Integrity verified ${when}: all ${formatCount(r.counts.verified || 0)} events match the content hash recorded when they were stored.`;
    } else {
      note.classList.add("is-tampered");
      const parts = Object.entries(r.findings).map(([k, ids]) => `${formatCount(r.counts[k] || ids.length)} ${FINDING_LABELS[k] || k} (${ids.slice(0, 5).join(", ")}${ids.length > 5 ? ", …" : ""})`);
      note.textContent = `Tampering detected ${when}: ${parts.join("; ")}. ${formatCount(r.counts.verified || 0)} events verified.`;
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      note.hidden = true;  // the session ended: the sign-in view says so
    } else {
      note.classList.add("is-failed");  // stays under the title (a toast goes away): the check did not run
      note.textContent = `The integrity check could not run: ${err.message}. Nothing was found or cleared; try again.`;
      toast(`Integrity check failed: ${err.message}`, "error");
    }
  } finally {
    btn.disabled = false;
    btn.classList.remove("is-busy");
  }
}

export function initIntegrity() {
  btn.addEventListener("click", verifyIntegrity);
}
