// CityEdge dashboard: the whole state from /api/stream (server-sent events), then what changed, at most once a
// second. Commands are JSON POSTs with the session's CSRF token; the server checks everything again.
"use strict";

const model = { gateway: {}, devices: new Map(), detail: null, alarms: [], lighting: {}, events: [], session: { user: null } };
let selected = null; // the device whose points are shown (the stream then carries them)
let source = null;
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function shown(value, unit) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return (Number.isInteger(value) ? value : value.toFixed(2)) + (unit ? " " + unit : "");
  return String(value) + (unit ? " " + unit : "");
}

function duration(seconds) {
  const s = Math.floor(seconds || 0), d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
}

function say(text, bad = false) {
  const r = $("result");
  r.textContent = text;
  r.className = bad ? "error" : "";
}

// -- talking to the gateway ---------------------------------------------------------------------------

async function post(url, body) {
  const headers = { "Content-Type": "application/json" };
  if (model.session.csrf) headers["X-CSRF-Token"] = model.session.csrf;
  const response = await fetch(url, { method: "POST", headers, body: JSON.stringify(body || {}), credentials: "same-origin" });
  let data = {};
  try { data = await response.json(); } catch (e) { data = { status: "error", error: { message: response.statusText } }; }
  if (!response.ok || data.status === "error") {
    const error = data.error || {};
    throw new Error(`${error.code || response.status}: ${error.message || "refused"}`);
  }
  return data;
}

async function command(label, url, body) {
  try {
    const answer = await post(url, body);
    say(`${label}: done`);
    return answer;
  } catch (e) {
    say(`${label}: ${e.message}`, true);
    return null;
  }
}

function connect() {
  if (source) source.close();
  source = new EventSource(selected ? `/api/stream?device=${encodeURIComponent(selected)}` : "/api/stream");
  source.addEventListener("state", (e) => { model.devices.clear(); merge(JSON.parse(e.data), true); renderAll(); });
  source.addEventListener("update", (e) => { merge(JSON.parse(e.data), false); renderAll(); });
  source.onopen = () => { $("live").textContent = "live"; $("live").className = "badge ok"; };
  source.onerror = () => { $("live").textContent = "reconnecting…"; $("live").className = "badge bad"; };
}

function merge(data, whole) {
  if (data.gateway) Object.assign(model.gateway, data.gateway);
  for (const device of data.devices || []) model.devices.set(device.id, device);
  if (whole || data.detail) model.detail = data.detail || null;
  if (model.detail) model.devices.set(model.detail.id, { ...model.devices.get(model.detail.id), ...model.detail });
  if (data.alarms) model.alarms = data.alarms;
  if (data.lighting) model.lighting = data.lighting;
  if (whole) model.events = data.events || [];
  else if (data.events) model.events = [...data.events.slice().reverse(), ...model.events].slice(0, 50);
}

// -- rendering ---------------------------------------------------------------------------------------------

function renderAll() {
  renderHeader();
  renderAlarms();
  renderDevices();
  renderPoints();
  renderLighting();
  renderLinks();
  renderEvents();
}

function renderHeader() {
  const g = model.gateway;
  $("gateway-id").textContent = g.id ? `CityEdge ${g.id}` : "CityEdge";
  const mqtt = g.mqtt || {};
  $("broker").textContent = mqtt.connected ? `broker ${mqtt.broker}` : "broker disconnected";
  $("broker").className = "badge " + (mqtt.connected ? "ok" : "bad");
  $("uptime").textContent = `up ${duration(g.uptime_s)}`;
  const outbox = g.outbox || {};
  $("outbox").textContent = `outbox ${outbox.depth ?? 0}` + (outbox.oldest_age_s ? ` (oldest ${duration(outbox.oldest_age_s)})` : "");
  const user = model.session.user;
  $("who").textContent = user ? `logged in: ${user}` : "read-only";
  $("login-open").hidden = !!user;
  $("logout").hidden = !user;
}

function renderAlarms() {
  const list = $("alarms");
  list.replaceChildren();
  const active = model.alarms.filter((a) => a.active).length;
  $("alarm-count").textContent = `${active} active, ${model.alarms.length} listed`;
  for (const a of model.alarms) {
    const item = el("li", { "data-alarm": a.id },
      el("span", { class: `badge ${a.severity}` }, a.severity),
      el("span", { class: "alarm-message" }, a.message),
      el("span", { class: "muted" }, a.active ? "active" : "cleared"),
      a.acked_by ? el("span", { class: "muted acked" }, `acknowledged by ${a.acked_by}`) : null);
    if (!a.acked_by) {
      item.append(el("button", { type: "button", class: "ack", onclick: () => command(`acknowledge ${a.id}`, `/api/alarms/${encodeURIComponent(a.id)}/ack`, {}) }, "Acknowledge"));
    }
    list.append(item);
  }
  if (!model.alarms.length) list.append(el("li", { class: "muted" }, "no alarms"));
}

const ORDER = { offline: 0, degraded: 1, starting: 2, online: 3 };

function renderDevices() {
  const list = $("devices");
  list.replaceChildren();
  const devices = [...model.devices.values()].sort((a, b) => (ORDER[a.state] - ORDER[b.state]) || a.id.localeCompare(b.id));
  const counts = {};
  for (const d of devices) counts[d.state] = (counts[d.state] || 0) + 1;
  $("device-counts").textContent = Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(", ");
  for (const d of devices) {
    list.append(el("li", { "data-device": d.id, "data-state": d.state },
      el("span", { class: `badge ${d.state}` }, d.state),
      el("button", { type: "button", class: "device-link", onclick: () => { selected = d.id; model.detail = null; connect(); } }, d.id),
      el("span", { class: "muted" }, d.profile),
      d.reason && d.state !== "online" ? el("span", { class: "reason" }, d.reason) : null,
      d.rssi !== undefined ? el("span", { class: "muted signal" }, `${d.rssi} dBm`) : null,
      d.battery !== undefined ? el("span", { class: "muted battery" }, `battery ${shown(d.battery, "V")}`) : null));
  }
}

function renderPoints(rebuild = false) {
  const card = $("device-card");
  const device = model.detail && model.detail.id === selected ? model.detail : null;
  if (!device) { card.hidden = true; return; }
  card.hidden = false;
  const body = $("points").tBodies[0];
  if (rebuild || body.dataset.device !== device.id) {
    body.dataset.device = device.id;
    body.replaceChildren(...device.points.map((p) => pointRow(device, p)));
    card.scrollIntoView({ block: "nearest" });
  }
  $("device-title").textContent = `${device.id} — ${device.state}` + (device.reason && device.state !== "online" ? ` (${device.reason})` : "");
  $("device-where").textContent = Object.entries(device.where || {}).map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
  for (const p of device.points) {
    const cell = body.querySelector(`tr[data-point="${CSS.escape(p.name)}"] td.value`);
    if (cell) {
      cell.textContent = p.error ? p.error : shown(p.value, p.unit);
      cell.classList.toggle("error", !!p.error);
    }
  }
}

function pointRow(device, p) {
  const row = el("tr", { "data-point": p.name }, el("td", {}, p.name), el("td", { class: "value" }, shown(p.value, p.unit)));
  const controls = el("td", {});
  row.append(controls);
  if (!p.writable) return row;
  const input = p.enum
    ? el("select", { "aria-label": `${p.name} value` }, ...p.enum.map((v) => el("option", { value: v }, v)))
    : el("input", { type: p.unit === undefined ? "text" : "number", step: "any", min: p.min ?? undefined, max: p.max ?? undefined, "aria-label": `${p.name} value` });
  const value = () => (p.enum || input.type !== "number" ? parseMaybe(input.value) : Number(input.value));
  const url = (what) => `/api/devices/${encodeURIComponent(device.id)}/${what}`;
  if (!p.sbo) {
    controls.append(input, el("button", { type: "button", class: "set", onclick: () => command(`set ${p.name}`, url("set"), { values: { [p.name]: value() } }) }, "Set"));
    return row;
  }
  // select-before-operate: two steps, both visible
  const step1 = el("span", { class: "step" }, "1 select"), step2 = el("span", { class: "step" }, "2 operate");
  const operate = el("button", { type: "button", class: "operate danger", disabled: true }, "Operate");
  let token = null, chosen = null, timer = null;
  const reset = (text) => { token = null; operate.disabled = true; step1.className = "step"; step1.textContent = text || "1 select"; clearInterval(timer); };
  const select = el("button", { type: "button", class: "select primary", onclick: async () => {
    chosen = value();
    const answer = await command(`select ${p.name}=${chosen}`, url("select"), { [p.name]: chosen });
    if (!answer) return reset();
    token = answer.token;
    let left = Math.round(answer.expires_ms / 1000);
    step1.className = "step done";
    step1.textContent = `1 selected ${chosen} (${left}s)`;
    operate.disabled = false;
    timer = setInterval(() => { left -= 1; if (left <= 0) reset("1 selection expired"); else step1.textContent = `1 selected ${chosen} (${left}s)`; }, 1000);
  } }, "Select");
  operate.addEventListener("click", async () => {
    const answer = await command(`operate ${p.name}=${chosen}`, url("operate"), { values: { [p.name]: chosen }, token });
    clearInterval(timer);
    operate.disabled = true;
    step2.className = answer ? "step done" : "step";
    step2.textContent = answer ? `2 operated ${chosen}` : "2 refused";
    token = null;
  });
  controls.append(el("div", { class: "steps" }, input, select, step1, operate, step2));
  return row;
}

function parseMaybe(text) {
  if (text === "true") return true;
  if (text === "false") return false;
  const n = Number(text);
  return text !== "" && !Number.isNaN(n) ? n : text;
}

function renderLighting() {
  const targets = Object.entries(model.lighting || {});
  $("lighting-card").hidden = targets.length === 0;
  const list = $("lighting");
  list.replaceChildren(...targets.map(([name, t]) => el("li", { "data-target": name },
    el("strong", {}, name), el("span", { class: "level" }, shown(t.level, "%")),
    el("span", { class: `badge reason-${t.reason || "none"}` }, t.reason || "–"),
    el("span", { class: "muted" }, t.detail || ""),
    t.actual !== undefined ? el("span", { class: "muted" }, `read back ${shown(t.actual, "%")}`) : null)));
  const select = $("override-target");
  if (select.options.length !== targets.length) select.replaceChildren(...targets.map(([name]) => el("option", { value: name }, name)));
}

function renderLinks() {
  const links = Object.entries(model.gateway.links || {});
  $("links").replaceChildren(...links.map(([name, l]) => el("li", { "data-link": name },
    el("span", { class: `badge ${l.state === "up" ? "ok" : "bad"}` }, l.state), el("strong", {}, name),
    el("span", { class: "muted" }, `${Math.round((l.utilization || 0) * 100)} % busy, ${l.requests} requests, ${l.reconnects} reconnects`),
    l.reason ? el("span", { class: "reason" }, l.reason) : null)));
}

function renderEvents() {
  $("events").replaceChildren(...model.events.slice(0, 50).map((e) => el("li", { "data-kind": e.kind },
    el("span", { class: "muted" }, new Date(e.ts).toLocaleTimeString()), el("strong", {}, e.kind),
    el("span", {}, [e.device, e.alarm, e.reason, e.status].filter(Boolean).join(" · ")))));
}

// -- logging in, overrides --------------------------------------------------------------------------------

async function loadSession() {
  const response = await fetch("/api/session", { credentials: "same-origin" });
  model.session = await response.json();
  renderHeader();
}

function wire() {
  const dialog = $("login-dialog");
  $("login-open").addEventListener("click", () => { $("login-error").textContent = ""; dialog.showModal(); $("login-user").focus(); });
  $("login-cancel").addEventListener("click", () => dialog.close());
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const answer = await post("/api/login", { user: $("login-user").value, password: $("login-password").value });
      model.session = { user: answer.user, csrf: answer.csrf };
      $("login-password").value = "";
      dialog.close();
      say(`logged in as ${answer.user}`);
      renderHeader();
    } catch (err) {
      $("login-error").textContent = err.message;
    }
  });
  $("logout").addEventListener("click", async () => { await command("log out", "/api/logout", {}); model.session = { user: null }; renderHeader(); });
  $("override-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const target = $("override-target").value;
    command(`override ${target}`, `/api/lighting/${encodeURIComponent(target)}/override`,
      { level: Number($("override-level").value), duration: Number($("override-minutes").value) * 60 });
  });
  $("override-clear").addEventListener("click", () => {
    const target = $("override-target").value;
    command(`${target} back to its program`, `/api/lighting/${encodeURIComponent(target)}/override`, { clear: true });
  });
}

document.addEventListener("DOMContentLoaded", () => { wire(); loadSession(); connect(); });
