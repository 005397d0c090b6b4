// Stockade dashboard: reads /api/v1 with the user's token. Every value is placed with
// textContent (text nodes), never parsed as HTML, so nothing stored in the inventory can
// run as markup.
"use strict";

const API = "/api/v1";
const KEY = "stockade.token";
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "onclick") node.addEventListener("click", v);
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child == null ? "" : String(child)));
  }
  return node;
}

async function api(path) {
  const response = await fetch(API + path, {
    headers: { Authorization: "Bearer " + sessionStorage.getItem(KEY) },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = body.error ? body.error.message : response.statusText;
    throw new Error(`${path}: ${response.status} ${message}`);
  }
  return body;
}

function time(value) {
  return value ? value.replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
}

function table(rows, columns, onRow) {
  if (!rows.length) return el("p", { class: "status" }, "(none)");
  const head = el("tr", {}, ...columns.map(([label]) => el("th", {}, label)));
  const body = rows.map((row) => {
    const tr = el("tr", onRow ? { class: "click", onclick: () => onRow(row) } : {});
    for (const [, render, cls] of columns) {
      const value = render(row);
      tr.append(el("td", cls ? { class: cls } : {}, value));
    }
    return tr;
  });
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

const state = (row) => el("span", { class: "state " + row.lifecycle_state }, row.lifecycle_state);
const risk = (row) => el("span", { class: "risk-" + row.risk_tier }, row.risk_tier);

function show(id, node) {
  $(id).replaceChildren(node);
}

async function showModel(model) {
  const [versions, history] = await Promise.all([
    api(`/models/${encodeURIComponent(model.name)}/versions`),
    api(`/models/${encodeURIComponent(model.name)}/history`),
  ]);
  $("model-detail").hidden = false;
  $("model-detail-title").textContent = `model:${model.name}`;
  show("model-versions", table(versions, [
    ["version", (v) => v.version],
    ["state", state],
    ["digest", (v) => v.digest, "mono"],
    ["size", (v) => v.size.toLocaleString()],
    ["format", (v) => v.format],
    ["tags", (v) => Object.entries(v.tags).map(([k, x]) => `${k}=${x}`).join(", ")],
    ["registered", (v) => time(v.created_at)],
  ]));
  show("model-history", table(history, [
    ["at", (h) => time(h.at)],
    ["from", (h) => h.from_state],
    ["to", (h) => h.to_state],
    ["actor", (h) => h.actor],
    ["reason", (h) => h.reason],
  ]));
}

async function load() {
  const status = $("status");
  status.className = "status";
  status.textContent = "Loading…";
  try {
    const [who, systems, models, datasets, endpoints, audit, verify, events] = await Promise.all([
      api("/whoami"),
      api("/systems?limit=1000"),
      api("/models?limit=1000"),
      api("/datasets?limit=1000"),
      api("/endpoints?limit=1000"),
      api("/audit?limit=25&newest=true"),
      api("/audit/verify"),
      api("/events?limit=25"),
    ]);
    status.textContent = `Connected as ${who.name} (${who.role}).`;
    $("overview").hidden = false;
    for (const control of $("login").querySelectorAll("input, button[type=submit]")) control.hidden = true;
    $("logout").hidden = false;

    const inProduction = models.filter((m) => m.lifecycle_state === "production").length;
    const cards = [
      [systems.length, "AI systems"],
      [models.length, `models (${inProduction} in production)`],
      [datasets.length, "datasets"],
      [endpoints.length, "endpoints"],
      [verify.size, "audit entries"],
    ];
    show("cards", el("div", { class: "cards" }, ...cards.map(([n, l]) =>
      el("div", { class: "card" }, el("div", { class: "n" }, n), el("div", { class: "l" }, l)))));

    show("systems", table(systems, [
      ["name", (r) => r.name], ["risk", risk], ["state", state], ["owner", (r) => r.owner],
      ["description", (r) => r.description],
    ]));
    show("models", table(models, [
      ["name", (r) => r.name], ["system", (r) => r.system], ["latest", (r) => r.latest_version],
      ["risk", risk], ["state", state], ["framework", (r) => r.framework], ["owner", (r) => r.owner],
    ], showModel));
    show("datasets", table(datasets, [
      ["name", (r) => r.name], ["system", (r) => r.system], ["latest", (r) => r.latest_version],
      ["licence", (r) => r.license], ["risk", risk], ["state", state],
    ]));
    show("endpoints", table(endpoints, [
      ["name", (r) => r.name], ["model", (r) => r.model], ["url", (r) => r.url, "mono"], ["state", state],
    ]));

    const badge = $("audit-state");
    badge.textContent = verify.ok ? `verified, ${verify.size} entries` : `TAMPERING DETECTED (${verify.problems.length})`;
    badge.className = "badge " + (verify.ok ? "good" : "bad");
    show("audit", table(audit.entries, [
      ["#", (e) => e.index], ["time", (e) => time(e.timestamp)], ["actor", (e) => e.actor],
      ["action", (e) => e.action], ["subject", (e) => e.subject],
      ["leaf hash", (e) => e.leaf_hash.slice(0, 16) + "…", "mono"],
    ]));
    show("events", table(events.events, [
      ["#", (e) => e.id], ["time", (e) => time(e.at)], ["severity", (e) => e.severity],
      ["kind", (e) => e.kind], ["source", (e) => e.source], ["subject", (e) => e.subject],
    ]));
  } catch (error) {
    status.className = "status error";
    status.textContent = error.message;
  }
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  if (value) {
    sessionStorage.setItem(KEY, value);
    $("token").value = "";
    load();
  }
});
$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  location.reload();
});
// `stockade up` prints a link with the token in the fragment (never sent to the server):
// take it, then drop it from the address bar and history.
const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromLink) {
  sessionStorage.setItem(KEY, fromLink);
  history.replaceState(null, "", location.pathname);
}
if (sessionStorage.getItem(KEY)) load();
