// One list item per event: text, collapsible thinking, each action with its screenshot.
import { el, shotUrl } from "./api.js";

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
    default: li.append(`${ev.type} ${JSON.stringify(d)}`);
  }
  return li;
}
