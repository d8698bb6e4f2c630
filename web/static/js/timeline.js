// One list item per event: text, collapsible thinking, each action with its screenshot.
import { api, el, shotUrl } from "./api.js";

// A refused connection, with one click to allow its host for the rest of the session (not for a deny entry:
// block wins, so allowing would change nothing).
function egressCard(sid, d) {
  const what = d.url || `${d.method} ${d.host}:${d.port}`;
  const card = el("div", { class: "egress-card" }, el("strong", {}, `network blocked: ${d.host}`), ` ${what}`,
    d.reason === "deny" ? " (on the deny list)" : "");
  if (d.reason === "deny") return card;
  const note = el("span", { class: "egress-note" });
  const button = el("button", { type: "button", class: "egress-allow" }, `Allow ${d.host} for this session`);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const res = await api("POST", `/api/sessions/${sid}/network/allow`, { domain: d.host });
      note.textContent = ` allowed ${res.host}`;
    } catch (e) { note.textContent = ` ${e.message}`; button.disabled = false; }
  });
  card.append(" ", button, note);
  return card;
}

export function eventItem(sid, ev) {
  const d = ev.data || {};
  const li = el("li", { class: ev.type, "data-seq": ev.seq });
  switch (ev.type) {
    case "assistant_text": li.append(d.text); break;
    case "thinking":
      li.append(el("details", {}, el("summary", {}, "thinking"), d.redacted ? "(redacted)" : d.text)); break;
    case "tool_call": li.append(el("code", {}, `${d.tool} ${JSON.stringify(d.input)}`)); break;
    case "tool_result":
      if (d.is_error) li.classList.add("err");
      li.append(el("span", {}, d.is_error ? `✗ ${d.error}` : (d.output ? d.output.slice(0, 500) : "✓")));
      if (ev.image) {
        const img = el("img", { src: shotUrl(sid, ev.image), alt: "screenshot", loading: "lazy" });
        img.addEventListener("click", () => window.open(img.src, "_blank"));
        li.append(img);
      }
      break;
    case "approval_requested": li.append(`approval requested: ${d.reason}`); break;
    case "approval_decided": li.append(`${d.by} ${d.decision}${d.note ? ": " + d.note : ""}`); break;
    case "status": li.append(`status → ${d.status}${d.reason ? " (" + d.reason + ")" : ""}`); break;
    case "user_message": li.append(`you: ${d.text}`); break;
    case "usage": return null;  // shown in the meter
    case "retrying": li.append(`retrying (${d.reason}), attempt ${d.attempt}`); break;
    case "error": li.append(`error: ${d.message}`); break;
    case "watchdog":
      li.classList.add("err");
      li.append(`paused by the watchdog (${d.reason}): ${d.message} — resume, send a hint, or cancel`); break;
    case "audit": {
      const what = d.detail && d.detail.decision ? ` ${d.detail.decision}${d.detail.always_allow ? " (always)" : ""}` : "";
      li.append(`${d.actor} from ${d.address}: ${d.action}${what} at ${d.at}`); break;
    }
    case "egress_blocked": li.append(egressCard(sid, d)); break;
    case "egress_allowed": li.append(`${d.by} allowed ${d.host} for this session`); break;
    default: li.append(`${ev.type} ${JSON.stringify(d)}`);
  }
  return li;
}
