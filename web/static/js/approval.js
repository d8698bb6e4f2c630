// The approval card: the proposed action drawn on the screenshot it was planned on.
import { api, el, shotUrl } from "./api.js";

export function draw(canvas, img, input) {
  const w = img.naturalWidth, h = img.naturalHeight;
  canvas.width = w; canvas.height = h;
  const g = canvas.getContext("2d");
  g.lineWidth = Math.max(2, w / 300);
  g.strokeStyle = "#e53935"; g.fillStyle = "#e53935";
  g.font = `${Math.max(14, w / 50)}px sans-serif`;
  const at = input.coordinate, from = input.start_coordinate;
  const marker = ([x, y]) => {
    g.beginPath(); g.arc(x, y, Math.max(8, w / 80), 0, 2 * Math.PI); g.stroke();
    g.beginPath(); g.moveTo(x - 14, y); g.lineTo(x + 14, y); g.moveTo(x, y - 14); g.lineTo(x, y + 14); g.stroke();
  };
  if (Array.isArray(from) && Array.isArray(at)) {            // drag path
    marker(from); g.beginPath(); g.moveTo(...from); g.lineTo(...at); g.stroke(); marker(at);
  } else if (Array.isArray(at)) marker(at);                  // click / move / scroll target
  const label = input.action === "type" ? `type: ${input.text}` :
    input.action === "key" || input.action === "hold_key" ? `keys: ${input.text}` :
    input.command ? `$ ${input.command}` : input.action || "";
  if (label) {
    const y = Array.isArray(at) ? Math.min(h - 10, at[1] + 40) : 30;
    const x = Array.isArray(at) ? Math.max(10, Math.min(w - g.measureText(label).width - 10, at[0] - 40)) : 10;
    g.fillStyle = "#000a"; g.fillRect(x - 4, y - 20, g.measureText(label).width + 8, 28);
    g.fillStyle = "#fff"; g.fillText(label, x, y);
  }
}

export function renderApproval(root, sid, approval, onDone) {
  root.replaceChildren();
  if (!approval || approval.status !== "pending") return;
  const note = el("input", { placeholder: "note (sent to the agent)", class: "note-input" });
  const always = el("input", { type: "checkbox", id: "always-allow" });
  const edit = el("textarea", { rows: 4, hidden: "" });
  edit.value = JSON.stringify(approval.input, null, 2);
  const error = el("p", { class: "error" });
  const decide = async (decision, extra = {}) => {
    try {
      await api("POST", `/api/sessions/${sid}/approvals/${approval.id}`,
        { decision, note: note.value || null, ...extra });
      root.replaceChildren(); onDone();
    } catch (e) { error.textContent = e.message; }
  };
  const shot = el("div", { class: "shot" });
  if (approval.image) {
    const img = el("img", { src: shotUrl(sid, approval.image), alt: "screen the action was planned on" });
    const canvas = el("canvas");
    img.addEventListener("load", () => draw(canvas, img, approval.input));
    shot.append(img, canvas);
  }
  // A vendor's safety check (OpenAI pending_safety_checks, Gemini require_confirmation): the vendor's own
  // words, and no "always allow": each flagged action needs its own decision.
  const checks = approval.safety_checks || [];
  const safety = checks.length ? el("div", { class: "safety" },
    el("strong", {}, "The model's vendor flagged this action"),
    el("ul", {}, ...checks.map((c) => el("li", { "data-code": c.code }, el("code", {}, c.code), " ", c.message))))
    : null;
  root.append(el("div", { class: "card", "data-approval": approval.id },
    el("strong", {}, `Approve ${approval.tool}?`), el("div", {}, approval.reason), safety,
    el("pre", {}, JSON.stringify(approval.input)), shot,
    el("div", { class: "buttons" },
      el("button", { class: "approve", onclick: () => decide("approve",
        checks.length ? {} : { always_allow: always.checked }) }, "Approve"),
      checks.length ? null : el("label", {}, always, " always allow this"),
      el("button", { class: "reject", onclick: () => decide("reject") }, "Reject"),
      el("button", { class: "edit", onclick: () => {
        if (edit.hidden) { edit.hidden = false; return; }
        try { decide("edit", { input: JSON.parse(edit.value) }); } catch (e) { error.textContent = "not JSON: " + e.message; }
      } }, "Edit…")),
    note, edit, error));
}

// The model asked the user something (status "paused", reason "question"): its words, answered by a message.
export function renderQuestion(root, question, input) {
  root.replaceChildren();
  input.placeholder = question === null ? "Send the agent a message" : "Your answer to the agent";
  if (question === null) return;
  root.append(el("div", { class: "card question" }, el("strong", {}, "The agent asks you"),
    el("p", {}, question || "(see the timeline)"), el("small", {}, "Answer with a message below; it resumes then.")));
}
