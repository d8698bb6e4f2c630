// Pages keep their outcome in localStorage under a key the task's checker reads.
export function save(key, value) { localStorage.setItem(key, typeof value === "string" ? value : JSON.stringify(value)); }
export function say(text, cls = "") { const s = document.getElementById("status"); s.textContent = text; s.className = "status " + cls; }
export function onEnter(input, fn) { input.addEventListener("keydown", e => { if (e.key === "Enter") fn(); }); }
