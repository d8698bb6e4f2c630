// deskpilot browser UI: plain ES modules, no build step. noVNC is vendored under /static/vendor/novnc.
import RFB from "/static/vendor/novnc/core/rfb.js";
import { api, el } from "./api.js";
import { renderApproval, renderQuestion } from "./approval.js";
import { eventItem } from "./timeline.js";

const $ = (id) => document.getElementById(id);
let FINAL = new Set(), ACTIVE = new Set();  // session states, from the server's /api/config
let current = null;        // the open session's id
let session = null;        // its latest state
let socket = null, lastSeq = 0, frameUrl = null, rfb = null, retry = null;
let asking = false, lastWords = "";  // the model asked a question (status reason "question"); its last words

async function boot() {
  try {
    const me = await api("GET", "/api/me");
    $("who").textContent = me.owner;
    applyConfig(await api("GET", "/api/config"));
    $("login").hidden = true; $("app").hidden = false;
    await refreshList();
    setInterval(refreshList, 4000);
    const fromHash = location.hash.slice(1);
    if (fromHash) open(fromHash);
  } catch (e) {
    $("app").hidden = true; $("login").hidden = false;
  }
}

// States, presets and defaults come from the server, so the form offers what the service would do anyway.
function applyConfig(cfg) {
  FINAL = new Set(cfg.final_states); ACTIVE = new Set(cfg.active_states);
  $("preset").replaceChildren(...cfg.presets.map((p) => el("option", { value: p }, p)));
  $("preset").value = cfg.defaults.preset;
  $("max-steps").max = cfg.max_steps_limit;
  $("max-steps").value = cfg.defaults.max_steps;
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try { await api("POST", "/api/login", { token: $("login-token").value.trim() }); $("login-token").value = ""; boot(); }
  catch (e) { $("login-error").textContent = e.message; }
});
$("logout").addEventListener("click", async () => { await api("POST", "/api/logout"); location.reload(); });

$("new-task").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("task-error").textContent = "";
  try {
    const s = await api("POST", "/api/sessions", { task: $("task").value,
      policy: { preset: $("preset").value }, max_steps: Number($("max-steps").value) || null,
      model: $("model").value.trim() || null, base_url: $("base-url").value.trim() || null });
    $("task").value = "";
    await refreshList(); open(s.id);
  } catch (e) { $("task-error").textContent = e.message; }
});

async function refreshList() {
  const page = await api("GET", "/api/sessions?limit=100");
  $("sessions").replaceChildren(...page.items.map((s) => el("li",
    { class: s.id === current ? "active" : "", "data-id": s.id, onclick: () => open(s.id) },
    s.task.slice(0, 80), el("small", {}, `${s.status} · ${new Date(s.created_at).toLocaleString()}`))));
}

function open(sid) {
  closeStream(); stopVnc();
  current = sid; lastSeq = 0; location.hash = sid; asking = false; lastWords = "";
  $("timeline").replaceChildren(); $("approval").replaceChildren();
  $("session").hidden = false; $("screen").removeAttribute("src");
  connect();
  refreshList();
}

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const sid = current;
  socket = new WebSocket(`${proto}://${location.host}/api/sessions/${sid}/stream?after=${lastSeq}`);
  socket.binaryType = "blob";
  socket.onmessage = (m) => {
    if (sid !== current) return;
    if (typeof m.data !== "string") return showFrame(m.data);
    const msg = JSON.parse(m.data);
    if (msg.kind === "hello") return showSession(msg.session);
    if (msg.kind === "event") return onEvent(msg);
  };
  socket.onclose = () => {  // reconnect from the last seq seen: nothing is missed
    if (sid === current && !(session && FINAL.has(session.status) && lastSeq >= session.last_seq)) {
      retry = setTimeout(connect, 1000);
    }
  };
}

function closeStream() {
  clearTimeout(retry);
  if (socket) { socket.onclose = null; socket.close(); socket = null; }
}

function showFrame(blob) {
  const url = URL.createObjectURL(blob);
  $("screen").src = url;
  if (frameUrl) URL.revokeObjectURL(frameUrl);
  frameUrl = url;
}

function onEvent(ev) {
  if (ev.seq <= lastSeq) return;
  lastSeq = ev.seq;
  if (ev.type === "assistant_text") lastWords = ev.data.text;
  if (ev.type === "status") asking = ev.data.status === "paused" && ev.data.reason === "question";
  const item = eventItem(current, ev);
  if (item) { $("timeline").append(item); item.scrollIntoView({ block: "nearest" }); }
  if (["status", "approval_requested", "approval_decided", "usage"].includes(ev.type)) reloadSession();
}

async function reloadSession() {
  if (!current) return;
  showSession(await api("GET", `/api/sessions/${current}`));
}

function showSession(s) {
  session = s;
  $("s-status").textContent = s.status; $("s-status").className = `pill ${s.status}`;
  $("s-task").textContent = s.task;
  $("s-replay").href = `/static/replay.html?session=${encodeURIComponent(s.id)}`;
  const u = s.usage;
  $("s-meter").textContent = `${u.input_tokens.toLocaleString()} in · ${u.output_tokens.toLocaleString()} out · $${u.cost_usd.toFixed(4)}`;
  $("s-result").hidden = !(s.result || s.error);
  $("s-result").textContent = s.error ? `${s.status}: ${s.error}` : s.result || "";
  const live = ACTIVE.has(s.status);
  $("b-pause").disabled = !live || s.status === "paused" || s.control === "user";
  $("b-resume").disabled = !(s.status === "paused" || s.status === "interrupted");
  $("b-takeover").disabled = !live || s.control === "user";
  $("b-handback").disabled = s.control !== "user";
  $("b-cancel").disabled = FINAL.has(s.status);
  renderApproval($("approval"), s.id, s.pending_approval, reloadSession);
  renderQuestion($("question"), asking && s.status === "paused" ? lastWords : null, $("message"));
  if (s.control === "user" && !rfb) startVnc(); else if (s.control !== "user" && rfb) stopVnc();
  $("screen-note").textContent = s.control === "user" ? "You have control: mouse and keyboard go to the desktop."
    : "View only: the agent has control.";
}

function startVnc() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  $("vnc").hidden = false; $("screen").hidden = true;
  rfb = new RFB($("vnc"), `${proto}://${location.host}/api/sessions/${current}/vnc`,
    { shared: true, wsProtocols: ["binary"] });
  rfb.scaleViewport = true;
  rfb.viewOnly = false;  // the server decides for real: input only while you hold control
  rfb.focusOnClick = true;
  rfb.addEventListener("connect", () => { $("vnc").dataset.connected = "1"; rfb.focus(); });
  rfb.addEventListener("disconnect", () => { delete $("vnc").dataset.connected; });
}

function stopVnc() {
  if (rfb) { try { rfb.disconnect(); } catch (e) { /* already closed */ } rfb = null; }
  $("vnc").hidden = true; $("vnc").replaceChildren(); $("screen").hidden = false;
}

const act = (path, body) => async () => {
  try { await api("POST", `/api/sessions/${current}/${path}`, body ? body() : undefined); await reloadSession(); }
  catch (e) { $("screen-note").textContent = e.message; }
};
$("b-pause").addEventListener("click", act("pause"));
$("b-resume").addEventListener("click", act("resume"));
$("b-cancel").addEventListener("click", act("cancel"));
$("b-takeover").addEventListener("click", act("takeover"));
$("b-handback").addEventListener("click", act("handback", () => {
  const note = $("handback-note").value.trim(); $("handback-note").value = ""; return { note: note || null };
}));
$("message-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try { await api("POST", `/api/sessions/${current}/messages`, { text: $("message").value }); $("message").value = ""; }
  catch (e) { $("screen-note").textContent = e.message; }
});

boot();
