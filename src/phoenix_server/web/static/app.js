// Phoenix dashboard: plain ES module, no build step. Live data comes from the server-sent
// events of /api/stream; pages are hash routes. Every value from the server is escaped.

const main = document.getElementById("main");
const live = document.getElementById("live");
const who = document.getElementById("who");
let stream = null;
let latest = null;
let recoveryTimer = null;

const esc = (value) =>
  String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const badge = (status) => `<span class="badge s-${esc(status)}">${esc(status)}</span>`;
const seconds = (s) => (s == null ? "–" : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(s < 10 ? 2 : 1)} s`);
const pct = (v) => (v == null ? "–" : `${v.toFixed(v >= 99.95 ? 0 : 2)}%`);
const number = (v) =>
  Math.abs(v) >= 1000 && Math.abs(v) < 1e15 ? Math.round(v).toLocaleString() : String(Number(v.toPrecision(3)));
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

async function api(path, options = {}) {
  const response = await fetch(path, {
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    ...options,
  });
  const body = response.status === 204 ? {} : await response.json().catch(() => ({}));
  if (response.status === 401) {
    showSignIn(body.error?.message);
    throw new Error("not signed in");
  }
  if (!response.ok) {
    const details = (body.error?.details || []).map((d) => `${d.path}: ${d.message}`).join("; ");
    throw new Error(`${body.error?.message || response.statusText}${details ? ` (${details})` : ""}`);
  }
  return body;
}

function showSignIn(reason) {
  if (stream) stream.close();
  live.textContent = "signed out";
  main.innerHTML = `
    <section class="signin" aria-labelledby="signin-title">
      <h2 id="signin-title">Sign in</h2>
      <p>${esc(reason || "This Phoenix needs an API token.")} The token is exchanged for a session
      cookie; it is not stored in the browser.</p>
      <form id="signin">
        <label>API token <input id="token" type="password" autocomplete="off" required></label>
        <p><button type="submit">Sign in</button></p>
        <p id="signin-error" class="error" hidden role="alert"></p>
      </form>
    </section>`;
  document.getElementById("signin").addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = await fetch("/api/session", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: document.getElementById("token").value }),
    });
    if (response.ok) {
      start();
    } else {
      const error = document.getElementById("signin-error");
      error.hidden = false;
      error.textContent = (await response.json()).error?.message || "refused";
    }
  });
  document.getElementById("token").focus();
}

// --- anomaly scores ----------------------------------------------------------------------

// One series' peak anomaly score per 30 s over 15 min (0 to 1; the dashed line is 0.5, a
// one-in-a-thousand sample), labelled with the latest sample that was news and its usual range.
function sparkline(metric, points, surprise) {
  const width = 60, height = 16, last = Math.max(points.length - 1, 1);
  const path = points
    .map((p, i) => `${i ? "L" : "M"}${((i * width) / last).toFixed(1)},${(1 + (height - 2) * (1 - p)).toFixed(1)}`)
    .join("");
  let label = `${metric}: anomaly score over the last 15 minutes, peak ${Math.max(...points).toFixed(2)}`;
  if (surprise) {
    label += `; latest news ${number(surprise.value)} scored ${surprise.score.toFixed(2)} at ${when(surprise.at)}`;
    label += surprise.usual ? `, usually ${number(surprise.usual[0])} to ${number(surprise.usual[1])}` : "";
  }
  return `<span class="spark"><svg role="img" aria-label="${esc(label)}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}"><title>${esc(label)}</title><line x1="0" x2="${width}" y1="${height / 2}" y2="${height / 2}"/><path d="${path}"/></svg> ${esc(metric)}</span>`;
}

// Series with news in the last 15 minutes get a sparkline; the rest are counted as quiet.
function anomalyCell(service) {
  const history = service.anomalyHistory || {};
  const news = Object.keys(history).sort();
  const quiet = Object.keys(service.anomalyScores || {}).filter((name) => !(name in history)).sort();
  const parts = news.map((name) => sparkline(name, history[name], (service.surprises || {})[name]));
  if (quiet.length) parts.push(`<span class="muted" title="${esc(quiet.join(", "))}">${quiet.length} quiet</span>`);
  return parts.join(" ") || "–";
}

// --- live feed ---------------------------------------------------------------------------

function connect() {
  if (stream) stream.close();
  stream = new EventSource("/api/stream");
  stream.addEventListener("snapshot", (event) => {
    latest = JSON.parse(event.data);
    live.textContent = `live · ${new Date().toLocaleTimeString()}`;
    if (route().page === "overview") renderOverview();
  });
  stream.onerror = () => {
    live.textContent = "reconnecting…";
    api("/api/session").catch(() => {}); // a 401 shows the sign-in form
  };
}

// --- pages -------------------------------------------------------------------------------

function renderOverview() {
  if (!latest) {
    main.innerHTML = "<p>Waiting for the first snapshot…</p>";
    return;
  }
  const { phoenix, services, active } = latest;
  const warnings = phoenix.warnings.length
    ? `<div class="warnings" role="alert"><strong>Warnings</strong><ul>${phoenix.warnings.map((w) => `<li>${esc(w)}</li>`).join("")}</ul></div>`
    : "";
  const rows = services
    .map(
      (s) => `<tr data-service="${esc(s.name)}">
        <th scope="row">${esc(s.name)}</th>
        <td class="status">${badge(s.status)}</td>
        <td>${pct(s.uptime)}</td>
        <td>${s.metrics.errorRate == null ? "–" : pct(100 * s.metrics.errorRate)}</td>
        <td>${s.metrics.latency == null ? "–" : `${s.metrics.latency.toFixed(1)} ms`}</td>
        <td>${s.metrics.throughput == null ? "–" : `${s.metrics.throughput.toFixed(1)}/s`}</td>
        <td class="anomalies">${anomalyCell(s)}</td>
        <td>${esc(s.reason)}${s.activeRecoveryId ? ` · <a href="#/recovery/${esc(s.activeRecoveryId)}">recovering</a>` : ""}</td>
      </tr>`,
    )
    .join("");
  const recoveries = active.length
    ? active.map(recoveryCard).join("")
    : `<p class="muted">No recovery is running.</p>`;
  main.innerHTML = `
    ${warnings}
    <h2 id="services-title">Services <span class="muted">(${services.length})</span></h2>
    <table aria-labelledby="services-title" id="services">
      <thead><tr><th scope="col">Service</th><th scope="col">Status</th><th scope="col">Uptime (24 h)</th>
      <th scope="col">Errors</th><th scope="col">Latency p50</th><th scope="col">Throughput</th><th scope="col">Anomaly (15 min)</th><th scope="col">Why</th></tr></thead>
      <tbody>${rows}</tbody>
    </table>
    <h2 id="active-title">Recovering now <span class="muted">(${active.length})</span></h2>
    <section aria-labelledby="active-title" id="active">${recoveries}</section>`;
}

function recoveryCard(r) {
  const done = r.steps.filter((s) => !["pending", "running"].includes(s.status)).length;
  return `<article class="recovery" data-recovery="${esc(r.id)}">
    <h3><a href="#/recovery/${esc(r.id)}">${esc(r.service)}: ${esc(r.strategy)}</a> ${badge(r.status)}</h3>
    <progress max="${r.steps.length || 1}" value="${done}" aria-label="steps done">${done}/${r.steps.length}</progress>
    <ol class="steps">${r.steps.map((s) => `<li>${badge(s.status)} ${esc(s.name)} <span class="muted">${seconds(s.duration)}</span></li>`).join("")}</ol>
  </article>`;
}

async function renderRecovery(id) {
  clearTimeout(recoveryTimer);
  let recovery;
  try {
    recovery = (await api(`/api/recovery/status/${encodeURIComponent(id)}`)).recovery;
  } catch (error) {
    main.innerHTML = `<p class="error" role="alert">${esc(error.message)}</p>`;
    return;
  }
  let incident = null;
  if (recovery.incidentId) {
    incident = (await api(`/api/incidents/${encodeURIComponent(recovery.incidentId)}`).catch(() => null))?.incident;
  }
  const d = recovery.decision;
  main.innerHTML = `
    <h2>Recovery ${esc(recovery.id)} ${badge(recovery.status)} ${recovery.outcome ? badge(recovery.outcome) : ""}</h2>
    <p><strong>${esc(recovery.service)}</strong> · ${esc(recovery.strategy)} · attempt ${esc(recovery.attempt)} ·
      trigger ${esc(recovery.trigger)} · started ${when(recovery.startTime)} · took ${seconds(recovery.duration)}</p>
    <h3>Timeline</h3>
    <table id="timeline"><thead><tr><th scope="col">#</th><th scope="col">Step</th><th scope="col">Status</th>
      <th scope="col">Started</th><th scope="col">Took</th><th scope="col">Detail</th></tr></thead>
      <tbody>${recovery.steps
        .map(
          (s, i) => `<tr><td>${i + 1}</td><th scope="row">${esc(s.name)}</th><td>${badge(s.status)}</td>
          <td>${when(s.startTime)}</td><td>${seconds(s.duration)}</td><td>${esc(s.detail)}</td></tr>`,
        )
        .join("")}</tbody></table>
    <h3>Decision</h3>
    <p>${badge(d.source)} ${esc(d.reason)}</p>
    ${d.candidates.length ? `<table><thead><tr><th scope="col">Candidate</th><th scope="col">Score</th><th scope="col">Estimate</th><th scope="col">Evidence</th></tr></thead>
      <tbody>${d.candidates.map((c) => `<tr><th scope="row">${esc(c.strategy)}</th><td>${esc(c.score)}</td><td>${c.estimate ?? "–"}</td><td>${c.observations ?? "–"}</td></tr>`).join("")}</tbody></table>` : ""}
    <h3>Measured</h3>
    <p>Downtime ${seconds(recovery.metrics.downtime)} · requests lost ${esc(recovery.metrics.requestsLost ?? "–")} ·
      data integrity ${esc(recovery.metrics.dataIntegrity)}</p>
    ${incident ? `<h3>Incident <a href="#/history?service=${encodeURIComponent(incident.service)}">${esc(incident.id)}</a></h3>
      <p>${badge(incident.status)} ${esc(incident.failureType)}: ${esc(incident.summary)}</p>
      <ul>${incident.evidence.map((e) => `<li>${esc(e)}</li>`).join("")}</ul>` : ""}`;
  if (["pending", "in_progress"].includes(recovery.status)) {
    recoveryTimer = setTimeout(() => route().page === "recovery" && renderRecovery(id), 500);
  }
}

async function renderHistory(params) {
  const query = new URLSearchParams();
  for (const key of ["service", "status", "strategy"]) if (params.get(key)) query.set(key, params.get(key));
  query.set("limit", "1000");
  let history, summary, services;
  try {
    [history, summary, services] = await Promise.all([
      api(`/api/recovery/history?${query}`),
      api("/api/metrics/summary"),
      api("/api/services"),
    ]);
  } catch (error) {
    main.innerHTML = `<p class="error" role="alert">${esc(error.message)}</p>`;
    return;
  }
  const option = (name, value, label) =>
    `<option value="${esc(value)}" ${params.get(name) === value ? "selected" : ""}>${esc(label ?? (value || "any"))}</option>`;
  const select = (name, values) =>
    `<label>${name}<select name="${name}">${option(name, "", "any")}${values.map((v) => option(name, v)).join("")}</select></label>`;
  const items = history.recoveries;
  main.innerHTML = `
    <h2>History</h2>
    <form class="filters" id="filters" aria-label="Filter the history">
      ${select("service", services.services.map((s) => s.name))}
      ${select("status", ["pending", "in_progress", "completed", "failed", "interrupted", "cancelled"])}
      ${select("strategy", ["restart", "rollback", "scale", "failover", "circuit_break"])}
      <button type="submit">Filter</button>
    </form>
    <div class="charts">
      <figure>${barChart(perHour(items), "Recoveries per hour (last 24 h)")}</figure>
      <figure>${barChart(ttrBuckets(items), "Time to recovery (successful)")}</figure>
      <figure>${barChart(summary.strategies.map((s) => [s.strategy, 100 * (s.successRate ?? 0)]), "Success rate per strategy (%)", 100)}</figure>
      <figure>${barChart(summary.services.map((s) => [s.service, s.uptime ?? 0]), "Uptime per service (%, 24 h)", 100)}</figure>
    </div>
    <h2 id="history-title">Recoveries <span class="muted">(${history.total})</span></h2>
    <table aria-labelledby="history-title" id="history"><thead><tr><th scope="col">When</th><th scope="col">Service</th>
      <th scope="col">Strategy</th><th scope="col">Status</th><th scope="col">Took</th><th scope="col">Trigger</th></tr></thead>
      <tbody>${items
        .slice(0, 200)
        .map(
          (r) => `<tr><td><a href="#/recovery/${esc(r.id)}">${when(r.timestamp)}</a></td><td>${esc(r.service)}</td>
          <td>${esc(r.strategy)}</td><td>${badge(r.status)}</td><td>${seconds(r.duration)}</td><td>${esc(r.trigger)}</td></tr>`,
        )
        .join("")}</tbody></table>`;
  document.getElementById("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = new URLSearchParams();
    for (const [key, value] of new FormData(event.target)) if (value) chosen.set(key, value);
    location.hash = `#/history?${chosen}`;
  });
}

function perHour(items) {
  const now = Date.now();
  const counts = new Array(24).fill(0);
  for (const r of items) {
    const age = Math.floor((now - new Date(r.timestamp).getTime()) / 3_600_000);
    if (age >= 0 && age < 24) counts[23 - age] += 1;
  }
  return counts.map((count, i) => [i === 23 ? "now" : `-${23 - i}h`, count]);
}

function ttrBuckets(items) {
  const edges = [0.1, 0.5, 1, 5, 30, 120, Infinity];
  const labels = ["<0.1s", "<0.5s", "<1s", "<5s", "<30s", "<2m", "≥2m"];
  const counts = edges.map(() => 0);
  for (const r of items) {
    if (r.status !== "completed" || r.duration == null) continue;
    counts[edges.findIndex((e) => r.duration < e)] += 1;
  }
  return labels.map((label, i) => [label, counts[i]]);
}

function barChart(pairs, title, max) {
  const width = 320, height = 140, pad = 22;
  const top = max ?? Math.max(1, ...pairs.map(([, v]) => v));
  const step = (width - pad) / Math.max(1, pairs.length);
  const bars = pairs
    .map(([label, value], i) => {
      const h = ((height - 2 * pad) * value) / top;
      const x = pad + i * step;
      const showLabel = pairs.length <= 12 || i % 4 === 3;
      return `<g><title>${esc(label)}: ${esc(Math.round(value * 100) / 100)}</title>
        <rect x="${x + 1}" y="${height - pad - h}" width="${Math.max(1, step - 2)}" height="${h}" fill="#0b4f9c"></rect>
        ${showLabel ? `<text x="${x + step / 2}" y="${height - 6}" text-anchor="middle">${esc(label)}</text>` : ""}</g>`;
    })
    .join("");
  const description = pairs.map(([l, v]) => `${l}: ${Math.round(v * 100) / 100}`).join(", ");
  return `<figcaption>${esc(title)}</figcaption>
    <svg viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(`${title}. ${description || "no data"}`)}">
      <line x1="${pad}" y1="${height - pad}" x2="${width}" y2="${height - pad}" stroke="#4a4a4a"></line>
      <text x="2" y="${pad}">${esc(Math.round(top))}</text>${bars}</svg>`;
}

async function renderPlaybooks() {
  let list, services;
  try {
    [list, services] = await Promise.all([api("/api/playbooks?limit=1000"), api("/api/services")]);
  } catch (error) {
    main.innerHTML = `<p class="error" role="alert">${esc(error.message)}</p>`;
    return;
  }
  const names = services.services.map((s) => s.name);
  main.innerHTML = `
    <h2 id="playbooks-title">Playbooks <span class="muted">(${list.total})</span></h2>
    <table aria-labelledby="playbooks-title" id="playbooks"><thead><tr><th scope="col">Name</th><th scope="col">Service</th>
      <th scope="col">Status</th><th scope="col">Version</th><th scope="col">Triggers</th><th scope="col">Dry run</th></tr></thead>
      <tbody>${list.playbooks
        .map(
          (p) => `<tr><th scope="row"><a href="#/playbooks/${esc(p.id)}">${esc(p.name)}</a></th><td>${esc(p.service ?? "any")}</td>
          <td>${badge(p.status)}</td><td>${esc(p.version)}</td><td>${esc(p.triggers.map((t) => t.type).join(", "))}</td>
          <td><form class="dry-run" data-id="${esc(p.id)}"><label class="visually-hidden">Service
            <select name="service">${(p.service ? [p.service] : names).map((n) => `<option>${esc(n)}</option>`).join("")}</select></label>
            <button type="submit" class="secondary">Dry run</button></form></td></tr>`,
        )
        .join("")}</tbody></table>
    <section aria-live="polite" id="dry-run-result"></section>
    <h2 id="validate-title">Validate a playbook</h2>
    <form id="validate" aria-labelledby="validate-title">
      <label>Playbook (JSON)<textarea name="body" spellcheck="false">{
  "name": "Connection pool reset",
  "triggers": [{"type": "error_rate", "threshold": 0.1, "duration": 60}],
  "steps": [{"action": "restart_service", "timeout": 60}]
}</textarea></label>
      <p><button type="submit">Validate</button></p>
    </form>
    <section aria-live="polite" id="validate-result"></section>`;
  for (const form of document.querySelectorAll("form.dry-run")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const out = document.getElementById("dry-run-result");
      try {
        const result = await api(`/api/playbooks/${encodeURIComponent(form.dataset.id)}/dry-run`, {
          method: "POST",
          body: JSON.stringify({ service: new FormData(form).get("service") }),
        });
        out.innerHTML = `<h3>Dry run on ${esc(result.service)}</h3><ol class="steps">${result.steps
          .map((s) => `<li><strong>${esc(s.would)}</strong> ${esc(s.name)} <span class="muted">${esc(s.why)}</span></li>`)
          .join("")}</ol>`;
      } catch (error) {
        out.innerHTML = `<p class="error" role="alert">${esc(error.message)}</p>`;
      }
    });
  }
  document.getElementById("validate").addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = document.getElementById("validate-result");
    try {
      const body = JSON.parse(new FormData(event.target).get("body"));
      await api("/api/playbooks/validate", { method: "POST", body: JSON.stringify(body) });
      out.innerHTML = `<p class="warnings">Valid.</p>`;
    } catch (error) {
      out.innerHTML = `<p class="error" role="alert">${esc(error.message)}</p>`;
    }
  });
}

async function renderPlaybook(id) {
  try {
    const { playbook } = await api(`/api/playbooks/${encodeURIComponent(id)}`);
    main.innerHTML = `<h2>Playbook ${esc(playbook.name)} ${badge(playbook.status)}</h2>
      <p><a href="#/playbooks">All playbooks</a></p><pre>${esc(JSON.stringify(playbook, null, 2))}</pre>`;
  } catch (error) {
    main.innerHTML = `<p class="error" role="alert">${esc(error.message)}</p>`;
  }
}

// --- routing -----------------------------------------------------------------------------

function route() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  const params = new URLSearchParams(query || "");
  if (parts[0] === "recovery" && parts[1]) return { page: "recovery", id: parts[1], params };
  if (parts[0] === "history") return { page: "history", params };
  if (parts[0] === "playbooks" && parts[1]) return { page: "playbook", id: parts[1], params };
  if (parts[0] === "playbooks") return { page: "playbooks", params };
  return { page: "overview", params };
}

function show() {
  const current = route();
  clearTimeout(recoveryTimer);
  for (const link of document.querySelectorAll("nav a")) {
    const active = link.dataset.nav === current.page || (current.page === "playbook" && link.dataset.nav === "playbooks");
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (current.page === "overview") renderOverview();
  else if (current.page === "recovery") renderRecovery(current.id);
  else if (current.page === "history") renderHistory(current.params);
  else if (current.page === "playbooks") renderPlaybooks();
  else if (current.page === "playbook") renderPlaybook(current.id);
  main.focus({ preventScroll: true });
}

async function start() {
  try {
    const me = await api("/api/session");
    who.textContent = me.authRequired ? `${me.name} (${me.role})` : "";
    if (me.authRequired) {
      who.insertAdjacentHTML("beforeend", ' · <button type="button" class="secondary" id="signout">Sign out</button>');
      document.getElementById("signout").addEventListener("click", async () => {
        await fetch("/api/session", { method: "DELETE", credentials: "same-origin" });
        who.textContent = "";
        showSignIn("Signed out.");
      });
    }
  } catch {
    return; // the sign-in form is showing
  }
  connect();
  show();
}

window.addEventListener("hashchange", show);
start();
