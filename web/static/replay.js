// Replay of one session (live or finished): step list and scrubber, the screen each action was chosen on
// with the action drawn (the approval card's overlay), the model's text and thinking, timings, tokens, cost,
// approvals and takeovers. Data: GET /api/sessions/{id}/trajectory/steps (the bundle's meta + steps).
import { api, el, shotUrl } from "./js/api.js";
import { draw } from "./js/approval.js";

const $ = (id) => document.getElementById(id);
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const sid = new URLSearchParams(location.search).get("session") || "";
let steps = [], meta = null, index = 0;

const fileRef = (path) => (path ? path.split("/").pop() : null);
const money = (x) => `$${(x || 0).toFixed(4)}`;

function label(step) {
  const a = step.action || {};
  if (a.type === "answer") return `answer: ${a.text}`;
  const input = step.input || {};
  const what = input.action || input.command || input.path || "";
  return `${step.tool} ${typeof what === "string" ? what : JSON.stringify(what)}`.slice(0, 120);
}

function renderList() {
  $("r-steps").replaceChildren(...steps.map((s, i) => {
    const li = el("li", { "data-step": s.step_num, onclick: () => show(i) }, `${s.step_num}. ${label(s)}`);
    if (s.approval?.asked) li.classList.add("asked");
    if (s.result?.is_error) li.classList.add("err");
    return li;
  }));
  const marks = (meta.timeline || []).filter((t) => t.type === "approval_requested"
    || (t.type === "approval_decided" && t.by === "user")
    || (t.type === "status" && (t.status === "taken_over" || t.reason === "handback")));
  $("r-marks").replaceChildren(...marks.map((t) => {
    const takeover = t.type === "status";
    const text = takeover ? (t.status === "taken_over" ? "taken over" : "handed back")
      : t.type === "approval_requested" ? `asked: ${t.tool || ""}` : `${t.by} ${t.decision}`;
    // the step under way then: the last one that started before it (timestamps are fixed-width ISO UTC)
    const at = steps.findLastIndex((s) => s.action_timestamp && s.action_timestamp <= t.ts);
    return el("li", { class: takeover ? "takeover" : "approval", title: t.ts,
                      onclick: () => show(Math.max(0, at)) }, text);
  }));
  $("r-scrubber").max = String(Math.max(1, steps.length));
}

function show(i) {
  if (!steps.length) return;
  index = Math.max(0, Math.min(steps.length - 1, i));
  const s = steps[index];
  $("r-scrubber").value = String(index + 1);
  $("r-pos").textContent = `step ${s.step_num} of ${steps.length}`;
  for (const li of $("r-steps").children) li.classList.toggle("current", li.dataset.step === String(s.step_num));
  $("r-steps").children[index]?.scrollIntoView({ block: "nearest" });
  const ref = fileRef(s.observation_file) || fileRef(s.screenshot_file);
  const img = $("r-shot"), canvas = $("r-overlay");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  if (ref) {
    img.onload = () => draw(canvas, img, s.observation_file ? (s.input || {}) : {});
    img.src = shotUrl(sid, ref);
    $("r-shot-note").textContent = s.observation_file ? "the screen this action was chosen on" : "the screen after the action";
  } else {
    img.removeAttribute("src");
    $("r-shot-note").textContent = "no screenshot yet at this step";
  }
  const rows = [
    ["when", s.action_timestamp], ["took", s.duration_s != null ? `${s.duration_s} s` : "—"],
    ["settle", s.settle_ms != null ? `${s.settle_ms} ms` : "—"],
    ["tokens", s.tokens ? `${s.tokens.input_tokens} in · ${s.tokens.output_tokens} out · ${s.tokens.cache_read_tokens} cached` : "(same model call as before)"],
    ["cost", money(s.cost_usd)],
    ["approval", s.approval ? `${s.approval.by || ""} ${s.approval.decision || "pending"}${s.approval.note ? ": " + s.approval.note : ""}` : "—"],
  ];
  const result = s.result ? (s.result.is_error ? `✗ ${s.result.error}` : s.result.output || "✓") : "";
  $("r-step").replaceChildren(
    el("strong", {}, `${s.step_num}. ${label(s)}`),
    s.response?.text ? el("pre", { class: "text" }, s.response.text) : "",
    s.response?.thinking ? el("details", {}, el("summary", {}, "thinking"), el("pre", {}, s.response.thinking)) : "",
    el("pre", { class: "action" }, JSON.stringify(s.action)),
    result ? el("pre", { class: "result" }, result.slice(0, 2000)) : "",
    el("dl", {}, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "—")])),
  );
}

async function load() {
  if (!sid) { $("r-error").textContent = "no session given (?session=ID)"; return; }
  $("r-download").href = `/api/sessions/${sid}/trajectory`;
  let data;
  try { data = await api("GET", `/api/sessions/${sid}/trajectory/steps`); }
  catch (e) {
    $("r-error").textContent = e.status === 401 ? "Log in first (on the sessions page)." : e.message;
    return;
  }
  const first = meta === null, follow = index >= steps.length - 1;  // at the newest step: follow a live run
  meta = data.meta; steps = data.steps;
  $("r-status").textContent = meta.status; $("r-status").className = `pill ${meta.status}`;
  $("r-task").textContent = meta.task;
  const t = meta.totals;
  $("r-totals").textContent = `${t.model_calls} model calls · ${t.actions} actions · ${t.input_tokens.toLocaleString()} in · `
    + `${t.output_tokens.toLocaleString()} out · ${money(t.cost_usd)}${t.wall_s != null ? ` · ${t.wall_s} s` : ""}`;
  renderList();
  show(first ? (FINAL.has(meta.status) ? 0 : steps.length - 1) : follow ? steps.length - 1 : index);
  if (!FINAL.has(meta.status)) setTimeout(load, 2000);
}

$("r-scrubber").addEventListener("input", (e) => show(Number(e.target.value) - 1));
$("r-prev").addEventListener("click", () => show(index - 1));
$("r-next").addEventListener("click", () => show(index + 1));
document.addEventListener("keydown", (e) => {
  if (e.key === "ArrowLeft") show(index - 1);
  if (e.key === "ArrowRight") show(index + 1);
});
load();
