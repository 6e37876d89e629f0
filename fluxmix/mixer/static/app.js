// The mixer's live page: draw the scenario from GET /view, then follow GET /events.
// Hand-written, no framework, no network beyond this mixer. Text from the mixer is only ever
// set with textContent (never parsed as HTML).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COL_W = 290, ROW_H = 110, NODE_W = 170, NODE_H = 84, PAD = 30;
const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.hash.slice(1)).get("token");

let layout = null;        // {nodes, edges, columns, rows}
let lastWires = null;     // previous counters of every wire, for rates
let lastAt = 0;
let scenarioInfo = null; // name, tag, hash of what runs (from /view)

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(n) {
  if (n === null || n === undefined) return "-";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return String(Math.round(n * 10) / 10);
}

function position(node) {
  return { x: PAD + node.column * COL_W, y: PAD + node.row * ROW_H };
}

function draw(view) {
  scenarioInfo = view.status.scenario;
  layout = view.layout;
  const svg = $("graph");
  svg.replaceChildren();
  $("empty").hidden = !!layout;
  if (!layout) { svg.removeAttribute("viewBox"); return; }
  // Scaled to the panel's width (viewBox), so a long pipeline stays in view.
  const width = PAD * 2 + (layout.columns - 1) * COL_W + NODE_W, height = PAD * 2 + (layout.rows - 1) * ROW_H + NODE_H;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.style.maxWidth = width * 1.5 + "px";
  const where = Object.fromEntries(layout.nodes.map((n) => [n.name, position(n)]));
  const pairs = {};
  for (const edge of layout.edges) {
    const a = where[edge.from], b = where[edge.to];
    const pair = edge.from + ">" + edge.to;
    const nth = (pairs[pair] = (pairs[pair] || 0) + 1) - 1;
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2 + nth * 10, x2 = b.x, y2 = b.y + NODE_H / 2 + nth * 10;
    const mid = (x1 + x2) / 2;
    const g = el("g", { class: "wire " + edge.transport, "data-wire": edge.key });
    g.append(el("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 6},${y2}` }));
    g.append(el("path", { d: `M${x2 - 8},${y2 - 4} L${x2},${y2} L${x2 - 8},${y2 + 4}` }));
    // Above a straight wire; by the target for a bent one (fan-out labels then sit row by row).
    const bent = Math.abs(y2 - y1) > 12;
    const lx = bent ? x2 - (COL_W - NODE_W) / 2 + 4 : mid;
    const ly = bent ? b.y + NODE_H / 2 - 18 - nth * 26 : (y1 + y2) / 2 - 18 + nth * 26;
    g.append(el("text", { x: lx, y: ly, "text-anchor": "middle" }, `${edge.from_port} → ${edge.to_port}`));
    g.append(el("text", { x: lx, y: ly + 11, "text-anchor": "middle", "data-field": "rate" }, ""));
    svg.append(g);
  }
  for (const node of layout.nodes) {
    const p = where[node.name];
    const g = el("g", { class: "gear", "data-gear": node.name, transform: `translate(${p.x},${p.y})` });
    g.append(el("rect", { width: NODE_W, height: NODE_H, rx: 8 }));
    g.append(el("text", { x: 10, y: 19, class: "name" }, node.name));
    g.append(el("text", { x: 10, y: 34, class: "type" }, node.type));
    g.append(el("text", { x: 10, y: 52, class: "state", "data-field": "state" }, ""));
    g.append(el("text", { x: 10, y: 70, class: "counts", "data-field": "counts" }, ""));
    svg.append(g);
  }
  lastWires = null;
  update(view.status);
}

function header(status) {
  const sc = scenarioInfo;
  $("scenario").textContent = sc ? `${sc.name}:${sc.tag || "-"}  sha256:${(sc.hash || "").slice(0, 12)}` : "no scenario";
  const ready = $("ready");
  ready.textContent = status.ready ? "ready" : "not ready: " + (status.reason || "");
  ready.className = "badge " + (status.ready ? "ok" : "bad");
  $("paused").hidden = !status.paused;
  const nats = status.nats !== undefined ? status.nats : ((status.brokers || {}).standard || {}).state;
  $("nats").hidden = !nats;
  if (nats) {
    $("nats").textContent = "NATS " + nats;
    $("nats").className = "badge " + (nats === "connected" ? "ok" : "bad");
  }
  if (status.uptime_seconds !== undefined) $("uptime").textContent = `up ${Math.round(status.uptime_seconds)}s`;
}

// The scenario's expect: lines, as /status reports them (state, value, reason).
function showExpectations(list) {
  const table = $("expectations");
  table.replaceChildren();
  for (const e of (list || []).slice(0, 100)) {
    const row = table.insertRow();
    row.className = "expect-" + e.state;
    row.dataset.expect = e.expect;
    row.insertCell().textContent = e.state;
    const cell = row.insertCell();
    cell.textContent = e.expect;
    cell.title = e.reason || "";
  }
  $("expectations-empty").hidden = table.rows.length > 0;
}

function update(status) {
  header(status);
  showExpectations(status.expectations);
  if (!layout) return;
  for (const [name, gear] of Object.entries(status.gears || {})) {
    const g = document.querySelector(`g.gear[data-gear="${CSS.escape(name)}"]`);
    if (!g) continue;
    g.setAttribute("class", "gear " + gear.state);
    g.querySelector('[data-field="state"]').textContent = gear.state + (gear.errors ? `  errors ${fmt(gear.errors)}` : "");
    const counts = gear.source ? `emitted ${fmt(gear.emitted)}`
      : gear.sink ? `in ${fmt(gear.handled)}` : `in ${fmt(gear.handled)}  out ${fmt(gear.emitted)}`;
    g.querySelector('[data-field="counts"]').textContent = counts;
  }
  const now = performance.now() / 1000;
  const wires = status.wires || {};
  for (const [key, wire] of Object.entries(wires)) {
    const g = document.querySelector(`g.wire[data-wire="${CSS.escape(key)}"]`);
    if (!g) continue;
    let rate = null;
    if (lastWires && lastWires[key] && now > lastAt) rate = Math.max(0, (wire.received - lastWires[key].received) / (now - lastAt));
    const depth = wire.in_queue !== undefined ? `q ${fmt(wire.in_queue)}` : (wire.pending !== undefined ? `lag ${fmt(wire.pending)}` : "");
    g.querySelector('[data-field="rate"]').textContent = `${rate === null ? "…" : fmt(rate) + "/s"}  ${depth}`;
    const full = typeof wire.capacity === "number" && wire.in_queue >= wire.capacity;
    g.setAttribute("class", `wire ${wire.transport}${full ? " full" : ""}`);
  }
  lastWires = wires;
  lastAt = now;
}

function logEvent(text) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  const list = $("events");
  list.prepend(li);
  while (list.children.length > 30) list.lastChild.remove();
}

async function loadJournal() {
  const res = await fetch("/journal?limit=8", { headers: { Accept: "application/json" } });
  if (!res.ok) return;
  const list = $("journal");
  list.replaceChildren();
  for (const e of (await res.json()).entries) {
    const li = document.createElement("li");
    const outcome = document.createElement("b");
    outcome.className = "outcome-" + e.outcome;
    outcome.textContent = e.outcome;
    const gap = e.gap_seconds === null || e.gap_seconds === undefined ? "" : `  gap ${e.gap_seconds.toFixed(3)}s`;
    li.append(outcome, ` ${e.trigger} ${new Date(e.ts).toLocaleTimeString()}${gap} — ${e.reason || ""}`);
    list.append(li);
  }
}

// Global state (GET /state): read-only here; change it with `fluxmix state set` or PUT /state/KEY.
async function loadGlobals() {
  const res = await fetch("/state", { headers: { Accept: "application/json" } });
  const values = res.ok ? (await res.json()).values : {};
  const table = $("globals");
  table.replaceChildren();
  for (const key of Object.keys(values).sort().slice(0, 200)) {
    const row = table.insertRow();
    row.dataset.key = key;
    row.insertCell().textContent = key;
    let shown = JSON.stringify(values[key]);
    if (shown.length > 80) shown = shown.slice(0, 79) + "…";
    row.insertCell().textContent = shown;
  }
  $("globals-empty").hidden = table.rows.length > 0;
}

let globalsTimer = null;
function loadGlobalsSoon() {  // at most one fetch per burst of events
  if (globalsTimer === null) globalsTimer = setTimeout(() => { globalsTimer = null; loadGlobals(); }, 200);
}

async function loadView() {
  const res = await fetch("/view", { headers: { Accept: "application/json" } });
  if (res.ok) draw(await res.json());
}

function connect() {
  const source = new EventSource("/events");
  source.addEventListener("open", () => { $("live").textContent = "live"; $("live").className = "badge ok"; });
  source.addEventListener("error", () => { $("live").textContent = "reconnecting"; $("live").className = "badge bad"; });
  source.addEventListener("hello", (ev) => {
    const view = JSON.parse(ev.data);
    $("reload").hidden = !(view.can_reload && token);
    draw(view);
    loadJournal();
    loadGlobals();
  });
  source.addEventListener("global-changed", (ev) => {
    const d = JSON.parse(ev.data);
    logEvent(`global ${d.op}${d.key ? " " + d.key : ""} by ${d.who}`);
    loadGlobalsSoon();
  });
  source.addEventListener("globals", loadGlobalsSoon);
  source.addEventListener("expectation", (ev) => {
    const e = JSON.parse(ev.data);
    logEvent(`expectation ${e.state}: ${e.expect}${e.reason ? " (" + e.reason + ")" : ""}`);
  });
  source.addEventListener("counters", (ev) => {
    const c = JSON.parse(ev.data);
    if (c.scenario !== (scenarioInfo ? scenarioInfo.hash : null)) { loadView(); return; }  // another scenario runs
    update(c);
  });
  source.addEventListener("activation-started", (ev) => logEvent(`activation started (${JSON.parse(ev.data).trigger})`));
  source.addEventListener("activation-finished", (ev) => {
    const e = JSON.parse(ev.data);
    logEvent(`activation ${e.outcome}: ${e.reason || ""}`);
    loadView();
    loadJournal();
    loadGlobals();
  });
  for (const kind of ["paused", "resumed"]) {
    source.addEventListener(kind, (ev) => { logEvent(JSON.parse(ev.data).reason); $("paused").hidden = kind !== "paused"; loadJournal(); });
  }
  source.addEventListener("gear-state", (ev) => { const d = JSON.parse(ev.data); logEvent(`gear ${d.gear}: ${d.was || "-"} → ${d.state}`); });
  source.addEventListener("backpressure", (ev) => { const d = JSON.parse(ev.data); logEvent(`backpressure ${d.state}: ${d.wire}`); });
  source.addEventListener("nats", (ev) => { const d = JSON.parse(ev.data); logEvent(`NATS ${d.state}${d.url ? " " + d.url : ""}`); });
}

$("reload").addEventListener("click", async () => {
  const button = $("reload");
  button.disabled = true;
  try {
    const res = await fetch("/reload", {
      method: "POST",
      headers: { Authorization: "Bearer " + token, "Content-Type": "application/json", Accept: "application/json" },
      body: "{}",
    });
    const body = await res.json();
    logEvent(res.ok ? `reload: ${body.outcome}` : `reload refused (${res.status}): ${body.error || body.reason || ""}`);
  } finally {
    button.disabled = false;
  }
});

connect();
