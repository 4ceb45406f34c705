// The timetravel page: the Ask form, the live view of a job over SSE, the
// caller's history and the monitoring charts. Every URL is relative to
// the document's base (set by the server to the page's root), so the page
// works under any path prefix.
import { fmtMS, stageChart, trendChart, timingBar, timingColors, stateStrip } from "./charts.js";

const $ = (sel) => document.querySelector(sel);
const settings = JSON.parse(document.querySelector('meta[name="tt-settings"]').content || "{}");
const KEY_STORE = "timetravel.apiKey";

// ---- api calls -------------------------------------------------------

// url resolves an api path ("api/models", or a link the api gave such as
// "/api/jobs/ID/events?token=…") against the page's root.
function url(path) {
  return new URL(path.replace(/^\/+/, ""), document.baseURI);
}

function apiKey() {
  try { return localStorage.getItem(KEY_STORE) || ""; } catch { return ""; }
}

// call fetches an api path with the key, and returns {ok, status, body}; a
// network failure is status 0. It never throws.
async function call(path, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  try {
    const r = await fetch(url(path), { ...opts, headers });
    let body = null;
    const text = await r.text();
    if (text) { try { body = JSON.parse(text); } catch { body = null; } }
    if (r.status === 401) showKeyNeeded();
    return { ok: r.ok, status: r.status, body };
  } catch (e) {
    return { ok: false, status: 0, body: null, error: String(e) };
  }
}

function errorMessage(res) {
  if (res.status === 0) return "The service could not be reached.";
  return res.body?.error?.message || `The service answered ${res.status}.`;
}

// ---- API key ---------------------------------------------------------

function showKeyState() {
  $("#key-state").textContent = apiKey() ? "(saved)" : "(none)";
}

function showKeyNeeded() {
  $("#key-panel").open = true;
  $("#key-state").textContent = "(needed: the service asks for an API key)";
}

function setupKey() {
  showKeyState();
  $("#api-key").value = apiKey();
  $("#key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    try { localStorage.setItem(KEY_STORE, $("#api-key").value.trim()); } catch { /* private mode */ }
    showKeyState();
    $("#key-panel").open = false;
    loadModels();
    loadHistory(true);
    sampleMonitoring();
  });
  $("#key-forget").addEventListener("click", () => {
    try { localStorage.removeItem(KEY_STORE); } catch { /* private mode */ }
    $("#api-key").value = "";
    showKeyState();
  });
}

// ---- Ask form --------------------------------------------------------

const todayUTC = () => new Date().toISOString().slice(0, 10);
// The api's defaults (timetravel.DefaultTimePoints).
const defaultTimePoints = [
  { date: "2023-01-01", label: "January 2023" },
  { date: "2023-03-01", label: "March 2023" },
  { date: "2024-05-01", label: "May 2024" },
  { date: "today", label: "" },
];

let tpCount = 0;
function addTimePoint(tp = { date: todayUTC(), label: "" }) {
  const n = ++tpCount;
  const li = document.createElement("li");
  const isToday = tp.date === "today";
  li.innerHTML = `
    <div><label for="tp-date-${n}">Date<span class="vh"> of time point ${n}</span></label><input type="date" id="tp-date-${n}" class="tp-date"></div>
    <div><label for="tp-label-${n}">Label<span class="vh"> of time point ${n}</span> (optional)</label><input type="text" id="tp-label-${n}" class="tp-label" maxlength="100"></div>
    <button type="button" class="secondary tp-remove">Remove</button>`;
  const date = li.querySelector(".tp-date");
  date.max = todayUTC();
  date.value = isToday ? todayUTC() : tp.date;
  // "today" stays the keyword while the date is left as it is: the api
  // then answers as of its own today (UTC), whatever this browser's zone.
  if (isToday) date.dataset.today = "1";
  date.addEventListener("input", () => { delete date.dataset.today; });
  li.querySelector(".tp-label").value = tp.label || "";
  li.querySelector(".tp-remove").setAttribute("aria-label", `Remove time point ${n}`);
  li.querySelector(".tp-remove").addEventListener("click", () => {
    const next = li.nextElementSibling || li.previousElementSibling;
    li.remove();
    (next?.querySelector("input") || $("#add-time-point")).focus();
  });
  $("#time-points").append(li);
  return li;
}

function timePoints() {
  return [...document.querySelectorAll("#time-points li")].map((li) => {
    const date = li.querySelector(".tp-date");
    const label = li.querySelector(".tp-label").value.trim();
    const d = date.dataset.today ? "today" : date.value;
    return label ? { date: d, label } : d;
  });
}

function kind() {
  return document.querySelector('input[name="kind"]:checked').value;
}

function showKind() {
  const ens = kind() === "ensemble";
  $("#tt-fields").hidden = ens;
  $("#ens-fields").hidden = !ens;
}

async function loadModels() {
  const res = await call("api/models");
  const sel = $("#model");
  sel.innerHTML = "";
  const models = res.ok ? res.body.models || [] : [];
  const def = res.ok ? res.body.default : "";
  const opt0 = new Option(def ? `Server default (${def})` : "Server default", "");
  sel.append(opt0);
  for (const m of models) sel.append(new Option(m, m));
  const box = $("#models");
  box.innerHTML = "";
  models.forEach((m, i) => {
    const id = `model-${i}`;
    const label = document.createElement("label");
    label.innerHTML = `<input type="checkbox" id="${id}" value=""> <span></span>`;
    label.querySelector("input").value = m;
    label.querySelector("input").checked = i < 3;
    label.querySelector("span").textContent = m;
    box.append(label);
  });
  $("#form-error").textContent = res.ok ? "" : `Could not read the models: ${errorMessage(res)}`;
}

function clearErrors() {
  for (const e of document.querySelectorAll(".field-error, #form-error")) e.textContent = "";
  for (const e of document.querySelectorAll("[aria-invalid]")) e.removeAttribute("aria-invalid");
}

// showFieldError puts the api's 4xx next to the field it names
// ("question", "time_points[1]", "model", "models[0]"...).
function showFieldError(detail) {
  const field = detail.field || "";
  const base = field.replace(/\[.*$/, "");
  const box = document.getElementById(`err-${base}`);
  let msg = detail.message || "Invalid value.";
  if (detail.allowed?.length) msg += ` Allowed: ${detail.allowed.join(", ")}.`;
  if (!box) { $("#form-error").textContent = msg; return; }
  box.textContent = msg;
  let input = null;
  const m = field.match(/\[(\d+)\]/);
  if (base === "question") input = $("#question");
  else if (base === "model") input = $("#model");
  else if (base === "time_points" && m) input = document.querySelectorAll("#time-points .tp-date")[Number(m[1])];
  else if (base === "models" && m) input = [...document.querySelectorAll("#models input:checked")][Number(m[1])];
  if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
}

async function submit(ev) {
  ev.preventDefault();
  clearErrors();
  const question = $("#question").value;
  if (!question.trim()) {
    showFieldError({ field: "question", message: "Enter a question." });
    return;
  }
  let path, body;
  if (kind() === "ensemble") {
    path = "api/ensemble";
    body = { question, models: [...document.querySelectorAll("#models input:checked")].map((i) => i.value) };
  } else {
    path = "api/time-travel";
    body = { question, time_points: timePoints() };
    if ($("#model").value) body.model = $("#model").value;
  }
  const btn = $("#submit");
  btn.disabled = true;
  const res = await call(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  btn.disabled = false;
  if (!res.ok) {
    if (res.body?.error) showFieldError(res.body.error);
    else $("#form-error").textContent = errorMessage(res);
    return;
  }
  history.pushState({ job: res.body.job_id }, "", url(`jobs/${res.body.job_id}`));
  openJob(res.body.job_id, res.body.links.events);
}

// ---- live view -------------------------------------------------------

const EVENT_NAMES = [
  "job.accepted", "job.completed", "aggregate.started",
  "snapshot.started", "snapshot.delta", "snapshot.completed", "snapshot.failed",
  "answer.started", "answer.delta", "answer.completed", "answer.failed",
  "key_changes.completed", "key_changes.failed",
  "narrative.delta", "narrative.completed", "narrative.failed",
  "synthesis.delta", "synthesis.completed", "synthesis.failed",
  "analysis.completed", "analysis.failed",
];

// idBefore compares two Redis stream ids ("ms-seq").
function idBefore(a, b) {
  const [am, as] = a.split("-").map(Number);
  const [bm, bs] = b.split("-").map(Number);
  return am < bm || (am === bm && as < bs);
}

// current is the job on screen; window.ttPage exposes it to tests and to
// the curious.
let current = null;

function setStatus(s) {
  const el = $("#job-status");
  el.textContent = s;
  el.dataset.status = s;
  // The expected wait is the queued job's; it means nothing once it runs.
  if (s !== "queued") $("#job-wait").textContent = "";
}

function setConn(text) {
  $("#conn").textContent = text;
}

function member(index) {
  let col = current.members.get(index);
  if (col) return col;
  const art = document.createElement("article");
  art.className = "member";
  art.dataset.index = index;
  art.dataset.status = "queued";
  art.innerHTML = `<h3></h3><p class="member-status">queued</p><div class="text member-text"></div>`;
  col = { el: art, text: art.querySelector(".member-text"), status: art.querySelector(".member-status"), title: art.querySelector("h3") };
  current.members.set(index, col);
  // Columns stay in index order whatever order their events arrive in.
  const after = [...$("#members").children].find((c) => Number(c.dataset.index) > index);
  $("#members").insertBefore(art, after || null);
  return col;
}

function memberStatus(col, status, text) {
  col.el.dataset.status = status;
  col.status.textContent = text || status;
}

function showPart(name, on = true) {
  $(`#${name}-box`).hidden = !on;
}

// handle applies one event. Texts are rebuilt so that a replay or a retry
// never duplicates words: a member's text restarts at its <noun>.started,
// the aggregation's at aggregate.started, and a *.completed carries the
// whole text, which replaces what was streamed.
function handle(name, d) {
  const [noun, verb] = name.split(".");
  switch (name) {
    case "job.accepted": {
      current.kind = d.kind;
      $("#job-question").textContent = d.question || "";
      setStatus(d.cached ? "completed" : "queued");
      // The server's estimate of the wait for provider capacity, when
      // there is one worth saying.
      const wait = d.expected_wait_ms;
      $("#job-wait").textContent = !d.cached && wait >= 1000 ? `(expected wait for the models: about ${Math.round(wait / 1000)} s)` : "";
      const pts = d.time_points || (d.models || []).map((m, i) => ({ index: i, label: m }));
      pts.forEach((p, i) => {
        const col = member(p.index ?? i);
        col.title.textContent = p.label || p.date || `#${i + 1}`;
      });
      showPart("narrative", d.kind !== "ensemble");
      showPart("key-changes", d.kind !== "ensemble");
      showPart("synthesis", d.kind === "ensemble");
      showPart("analysis", d.kind === "ensemble");
      return;
    }
    case "aggregate.started":
      setStatus("aggregating");
      for (const id of ["narrative", "synthesis"]) $(`#${id}`).textContent = "";
      return;
    case "job.completed":
      setStatus(d.status);
      if (d.error) $("#job-error").textContent = d.error;
      finish();
      return;
  }
  if (noun === "snapshot" || noun === "answer") {
    const col = member(d.index);
    if (d.label && !col.title.textContent) col.title.textContent = d.label;
    if ($("#job-status").dataset.status === "queued") setStatus("running");
    switch (verb) {
      case "started":
        col.text.textContent = "";
        if (d.cached) memberStatus(col, "running", "cached");
        else memberStatus(col, "running", d.attempt > 1 ? `running, attempt ${d.attempt}` : "running");
        return;
      case "delta":
        col.text.append(d.text); // a text node: no copy of what is there
        return;
      case "completed":
        checkStreamed(`${noun} ${d.index}`, col.text.textContent, d.text);
        col.text.textContent = d.text;
        memberStatus(col, "completed", `completed${d.cached ? " (cached)" : ""}${d.model ? ` · ${d.model}` : ""}${d.duration_ms ? ` · ${fmtMS(d.duration_ms)}` : ""}`);
        return;
      case "failed":
        memberStatus(col, "failed", `failed: ${d.error || "unknown error"}`);
        return;
    }
  }
  switch (name) {
    case "key_changes.completed": renderKeyChanges(d.key_changes || []); return;
    case "key_changes.failed": $("#key-changes").textContent = `Failed: ${d.error}`; return;
    case "narrative.delta": case "synthesis.delta": $(`#${noun}`).append(d.text); return;
    case "narrative.completed": case "synthesis.completed":
      checkStreamed(noun, $(`#${noun}`).textContent, d.text);
      $(`#${noun}`).textContent = d.text;
      return;
    case "narrative.failed": case "synthesis.failed": $(`#${noun}`).textContent = `Failed: ${d.error}`; return;
    case "analysis.completed": renderAnalysis(d.analysis); return;
    case "analysis.failed": $("#analysis").textContent = `Failed: ${d.error}`; return;
  }
}

// checkStreamed records a streamed text that differs from the whole text
// its *.completed carries (words lost or repeated across a reconnect or a
// retry); the whole text is shown either way. Tests read the record.
function checkStreamed(what, streamed, whole) {
  if (streamed !== "" && streamed !== whole) current.mismatches.push({ what, streamed, whole });
}

function renderKeyChanges(kcs) {
  const box = $("#key-changes");
  box.innerHTML = "";
  if (kcs.length === 0) box.textContent = "No key changes.";
  for (const kc of kcs) {
    const div = document.createElement("div");
    div.className = "kc-pair";
    const h = document.createElement("h4");
    h.textContent = `${kc.from_label || kc.from} → ${kc.to_label || kc.to}`;
    const ul = document.createElement("ul");
    for (const c of kc.changes || []) {
      const li = document.createElement("li");
      li.textContent = c;
      ul.append(li);
    }
    div.append(h, ul);
    box.append(div);
  }
}

function list(title, items) {
  const wrap = document.createElement("div");
  const h = document.createElement("h4");
  h.textContent = title;
  const ul = document.createElement("ul");
  for (const it of items) {
    const li = document.createElement("li");
    li.textContent = it;
    ul.append(li);
  }
  if (items.length === 0) ul.innerHTML = "<li>None.</li>";
  wrap.append(h, ul);
  return wrap;
}

function renderAnalysis(a) {
  const box = $("#analysis");
  box.innerHTML = "";
  box.className = "analysis";
  if (!a) return;
  box.append(
    list("Consensus", a.consensus || []),
    list("Disagreements", (a.disagreements || []).map((d) => `${d.topic}: ${(d.positions || []).map((p) => `${p.model}: ${p.position}`).join("; ")}`)),
    list("Unique claims", (a.unique_claims || []).map((u) => `${u.model}: ${u.claim}`)),
  );
}

// openJob shows a job and follows its events from the start.
function openJob(id, eventsLink) {
  if (current?.es) current.es.close();
  clearTimeout(current?.retry);
  current = { id, eventsLink, lastId: "", members: new Map(), mismatches: [], done: false, es: null, reconnects: 0, failures: 0, backoff: 500 };
  window.ttPage = current;
  $("#job").hidden = false;
  showView("ask");
  $("#members").innerHTML = "";
  for (const box of ["narrative", "synthesis", "analysis", "key-changes", "timings", "job-error", "job-question"]) $(`#${box}`).textContent = "";
  for (const p of ["narrative", "synthesis", "analysis", "key-changes", "timings"]) showPart(p, false);
  setStatus("connecting");
  setConn("");
  $("#job-title").textContent = `Job ${id}`;
  const link = $("#job-link");
  link.href = url(`jobs/${id}`).href;
  link.textContent = `Link to this job`;
  $("#cancel").hidden = false;
  $("#cancel").disabled = false;
  if (eventsLink) connect();
  else refreshLink();
  $("#job").scrollIntoView({ block: "start" });
}

function connect() {
  const job = current;
  const u = url(job.eventsLink);
  if (job.lastId) u.searchParams.set("last_event_id", job.lastId);
  const es = new EventSource(u);
  job.es = es;
  es.addEventListener("open", () => {
    if (job !== current) return;
    job.backoff = 500;
    job.failures = 0;
    setConn("");
  });
  for (const name of EVENT_NAMES) {
    es.addEventListener(name, (ev) => {
      if (job !== current || job.done) return;
      // A resumed stream starts after lastId; this guards a replay anyway.
      if (job.lastId && ev.lastEventId && !idBefore(job.lastId, ev.lastEventId)) return;
      if (ev.lastEventId) job.lastId = ev.lastEventId;
      let d = {};
      try { d = JSON.parse(ev.data); } catch { return; }
      handle(name, d);
    });
  }
  es.addEventListener("error", () => {
    if (job !== current || job.done) { es.close(); return; }
    setConn("reconnecting…");
    // CONNECTING: the browser resumes by itself, sending Last-Event-ID.
    // CLOSED: the answer was not a stream (the api was down behind a
    // proxy, or the link's token is no longer valid): read the job
    // again for a fresh link, then resume after the last event seen.
    if (es.readyState === EventSource.CLOSED) {
      es.close();
      job.reconnects++;
      job.retry = setTimeout(refreshLink, job.backoff);
      job.backoff = Math.min(job.backoff * 2, 5000);
    }
  });
}

// MAX_FAILURES bounds the attempts in a row to read the job again (about
// three minutes at the longest backoff) before the page gives up and says
// so.
const MAX_FAILURES = 40;

async function refreshLink() {
  const job = current;
  if (!job || job.done) return;
  const res = await call(`api/jobs/${encodeURIComponent(job.id)}`);
  if (job !== current || job.done) return;
  if (res.ok && res.body?.links?.events) {
    job.eventsLink = res.body.links.events;
    connect();
    return;
  }
  if (res.status === 404) {
    setStatus("not found");
    setConn("");
    $("#job-error").textContent = errorMessage(res);
    $("#cancel").hidden = true;
    return;
  }
  job.reconnects++;
  if (++job.failures > MAX_FAILURES) {
    setConn("");
    $("#job-error").textContent = `Lost the connection to the service (${errorMessage(res)}). Reload the page to try again.`;
    return;
  }
  setConn("reconnecting…");
  job.retry = setTimeout(refreshLink, job.backoff);
  job.backoff = Math.min(job.backoff * 2, 5000);
}

async function finish() {
  const job = current;
  job.done = true;
  job.es?.close();
  setConn("");
  $("#cancel").hidden = true;
  const res = await call(`api/jobs/${encodeURIComponent(job.id)}`);
  if (job !== current || !res.ok) return;
  renderTimings(res.body);
  loadHistory(true);
  sampleMonitoring();
}

// renderTimings draws the job's stages from its timings: queue wait, the
// members, the fan-in, then the aggregation (what is left of the total).
function renderTimings(view) {
  const t = view.timings || {};
  const noun = view.kind === "ensemble" ? "answers" : "snapshots";
  const parts = view.kind === "ensemble" ? ["synthesis", "analysis"] : ["key_changes", "narrative"];
  const q = t.queue_wait_ms || 0, m = t[`${noun}_ms`] || 0, f = t.fan_in_ms || 0;
  const total = t.total_ms || 0;
  const agg = Math.max(0, total - q - m - f);
  const stages = [
    { name: "queue wait", ms: q }, { name: noun, ms: m }, { name: "fan-in", ms: f }, { name: "aggregation", ms: agg },
  ];
  const box = $("#timings");
  box.innerHTML = "";
  box.append(timingBar(stages, total));
  const ul = document.createElement("ul");
  ul.className = "legend";
  stages.forEach((s, i) => {
    const li = document.createElement("li");
    const sw = document.createElement("i");
    sw.style.background = timingColors[i];
    li.append(sw, `${s.name} ${fmtMS(s.ms)}`);
    ul.append(li);
  });
  const li = document.createElement("li");
  li.textContent = `total ${fmtMS(total)}; ` + parts.map((p) => `${p.replace("_", " ")} ${fmtMS(t[`${p}_ms`])}`).join(", ");
  ul.append(li);
  box.append(ul);
  showPart("timings");
}

async function cancelJob() {
  const job = current;
  if (!job) return;
  const btn = $("#cancel");
  btn.disabled = true;
  const res = await call(`api/jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" });
  if (!res.ok && res.status !== 409) {
    $("#job-error").textContent = `Cancel failed: ${errorMessage(res)}`;
    btn.disabled = false;
  }
  // The stream brings job.completed canceled.
}

// ---- history ---------------------------------------------------------

let historyCursor = "";
async function loadHistory(reset) {
  if (reset) historyCursor = "";
  const q = new URLSearchParams({ limit: "20" });
  if (historyCursor) q.set("cursor", historyCursor);
  const res = await call(`api/jobs?${q}`);
  const note = $("#history-note");
  const table = $("#history-table");
  if (res.status === 404 || res.status === 405) {
    note.textContent = "This server does not list jobs yet.";
    table.hidden = true;
    return;
  }
  if (!res.ok) {
    note.textContent = `Could not read the history: ${errorMessage(res)}`;
    return;
  }
  const tbody = table.querySelector("tbody");
  if (reset) tbody.innerHTML = "";
  const jobs = res.body.jobs || [];
  for (const j of jobs) {
    const tr = document.createElement("tr");
    const cells = [j.question || "", j.kind || "", j.status || "", fmtMS(j.total_ms), j.cached ? "yes" : "no", j.created_at ? new Date(j.created_at).toLocaleString() : ""];
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      if (i === 0) {
        td.className = "q";
        const a = document.createElement("a");
        a.href = url(`jobs/${j.job_id}`).href;
        a.textContent = c || j.job_id;
        a.addEventListener("click", (ev) => {
          ev.preventDefault();
          history.pushState({ job: j.job_id }, "", a.href);
          openJob(j.job_id, "");
        });
        td.append(a);
      } else td.textContent = c;
      tr.append(td);
    });
    tbody.append(tr);
  }
  table.hidden = tbody.children.length === 0;
  note.textContent = tbody.children.length === 0 ? "No jobs yet." : "";
  historyCursor = res.body.next_cursor || "";
  $("#history-more").hidden = !historyCursor;
}

// ---- monitoring ------------------------------------------------------

const SAMPLE_MS = 5000, SPAN_MS = 10 * 60 * 1000;
const trend = new Map(); // stage → [{t, v}]
const TREND_STAGES = [["total", "#062f59"], ["snapshot", "#1d6b34"], ["answer", "#6a3d9a"], ["queue_wait", "#8a5300"]];

function thresholdsOf(stage) {
  const out = [];
  if (stage === "total") {
    if (settings.total_p95_warning_ms) out.push({ value: settings.total_p95_warning_ms, level: "warning", label: "total p95 warning" });
    if (settings.total_p95_critical_ms) out.push({ value: settings.total_p95_critical_ms, level: "critical", label: "total p95 critical" });
  }
  if (stage === "snapshot" && settings.snapshot_p95_warning_ms) {
    out.push({ value: settings.snapshot_p95_warning_ms, level: "warning", label: "snapshot p95 warning" });
  }
  return out;
}

async function sampleMonitoring() {
  const [stats, alerts, system] = await Promise.all([
    call("api/monitoring/stats?window=15m"), call("api/monitoring/alerts"), call("api/monitoring/system")]);
  renderSystem(system, Date.now());
  const ul = $("#alerts");
  ul.innerHTML = "";
  if (alerts.ok) {
    const list = alerts.body.alerts || [];
    if (list.length === 0) ul.innerHTML = `<li class="muted">None (window ${alerts.body.window}).</li>`;
    for (const a of list) {
      const li = document.createElement("li");
      li.className = a.severity;
      li.textContent = `${a.severity}: ${a.message}`;
      ul.append(li);
    }
  } else {
    ul.innerHTML = "<li></li>";
    ul.firstChild.textContent = `Could not read the alerts: ${errorMessage(alerts)}`;
  }
  if (!stats.ok) return;
  const now = Date.now();
  const stages = stats.body.stages || {};
  $("#mon-window").textContent = `${plural(stats.body.jobs, "job")} in the last ${stats.body.window}.`;
  const box = $("#stage-charts");
  box.innerHTML = "";
  const order = ["total", "queue_wait", "snapshot", "snapshots", "answer", "answers", "fan_in", "key_changes", "narrative", "synthesis", "analysis"];
  const names = Object.keys(stages).sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99));
  if (names.length === 0) box.innerHTML = `<p class="muted">No finished jobs in the window yet.</p>`;
  for (const name of names) {
    const fig = document.createElement("figure");
    fig.className = "chart";
    const cap = document.createElement("figcaption");
    cap.innerHTML = "<h4></h4>";
    cap.firstChild.textContent = `${name.replace("_", " ")} (${plural(stages[name].count, "sample")})`;
    fig.append(cap, stageChart(name, stages[name], thresholdsOf(name)));
    box.append(fig);
  }
  for (const [stage] of TREND_STAGES) {
    if (!stages[stage]) continue;
    const pts = trend.get(stage) || [];
    pts.push({ t: now, v: stages[stage].p95_ms });
    while (pts.length && pts[0].t < now - SPAN_MS) pts.shift();
    trend.set(stage, pts);
  }
  const series = TREND_STAGES.filter(([s]) => trend.has(s)).map(([s, color]) => ({ name: s, color, points: trend.get(s) }));
  const tbox = $("#trend-chart");
  tbox.innerHTML = "";
  const fig = document.createElement("figure");
  fig.className = "chart";
  fig.append(trendChart(series, thresholdsOf("total").concat(thresholdsOf("snapshot")), now, SPAN_MS));
  const legend = document.createElement("ul");
  legend.className = "legend";
  for (const s of series) {
    const li = document.createElement("li");
    const sw = document.createElement("i");
    sw.style.background = s.color;
    li.append(sw, `${s.name} p95`);
    legend.append(li);
  }
  fig.append(legend);
  tbox.append(fig);
  window.ttMonitoring = { samples: series.reduce((a, s) => a + s.points.length, 0), stages: names.length };
}

const queueTrend = new Map(); // queue → [{t, v}]
const breakerTrend = new Map(); // "provider/model" → [{t, state}]
const QUEUE_COLORS = ["#0b5cad", "#1d6b34", "#8a5300", "#6a3d9a", "#a11d1d"];

const fmtCount = (v) => String(Math.round(v));
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

// renderSystem shows the queues and breakers of GET api/monitoring/system
// (when the server has it) and keeps their last minutes.
function renderSystem(res, now) {
  if (!res.ok) {
    const missing = res.status === 404 || res.status === 405;
    $("#mon-note").hidden = !missing;
    if (!missing) $("#breakers").textContent = `Could not read the queues and breakers: ${errorMessage(res)}`;
    return;
  }
  $("#mon-note").hidden = true;
  const b = res.body;
  if (b.thresholds) {
    // The server's own thresholds win over those the page was served with.
    for (const k of ["total_p95_warning_ms", "total_p95_critical_ms", "snapshot_p95_warning_ms"]) {
      if (b.thresholds[k]) settings[k] = b.thresholds[k];
    }
  }
  if (b.admin_url) $("#admin-link").href = url(b.admin_url).href;
  const queues = b.queues || [];
  for (const q of queues) {
    const pts = queueTrend.get(q.queue) || [];
    pts.push({ t: now, v: q.pending + q.active });
    while (pts.length && pts[0].t < now - SPAN_MS) pts.shift();
    queueTrend.set(q.queue, pts);
  }
  const series = [...queueTrend].map(([name, points], i) => ({ name, points, color: QUEUE_COLORS[i % QUEUE_COLORS.length] }));
  const qbox = $("#queue-chart");
  qbox.innerHTML = "";
  const fig = document.createElement("figure");
  fig.className = "chart";
  fig.append(trendChart(series, [], now, SPAN_MS, fmtCount), legendOf(series.map((x) => [x.color, x.name])));
  qbox.append(fig);
  const table = document.createElement("table");
  table.innerHTML = `<thead><tr><th scope="col">Queue</th><th scope="col">Pending</th><th scope="col">Running</th><th scope="col">Scheduled</th><th scope="col">Retry</th><th scope="col">Archived</th><th scope="col">Oldest pending</th></tr></thead><tbody></tbody>`;
  for (const q of queues) {
    const tr = document.createElement("tr");
    for (const c of [q.queue + (q.paused ? " (paused)" : ""), q.pending, q.active, q.scheduled, q.retry, q.archived, q.pending ? fmtMS(q.latency_ms) : "-"]) {
      const td = document.createElement("td");
      td.textContent = String(c);
      tr.append(td);
    }
    table.tBodies[0].append(tr);
  }
  $("#queue-table").replaceChildren(table);

  const breakers = b.breakers || [];
  for (const br of breakers) {
    const name = `${br.provider}/${br.model}`;
    const pts = breakerTrend.get(name) || [];
    pts.push({ t: now, state: br.state });
    while (pts.length && pts[0].t < now - SPAN_MS) pts.shift();
    breakerTrend.set(name, pts);
  }
  const bbox = $("#breakers");
  bbox.innerHTML = "";
  if (breakers.length === 0) { bbox.innerHTML = `<p class="muted">No breakers.</p>`; return; }
  const ul = document.createElement("ul");
  ul.className = "legend";
  for (const br of breakers) {
    const li = document.createElement("li");
    li.className = `breaker-${br.state}`;
    li.textContent = `${br.provider}/${br.model}: ${br.state}${br.open_until ? ` until ${new Date(br.open_until).toLocaleTimeString()}` : ""}`;
    ul.append(li);
  }
  const sfig = document.createElement("figure");
  sfig.className = "chart";
  sfig.append(stateStrip([...breakerTrend].map(([name, states]) => ({ name, states })), now, SPAN_MS),
    legendOf([["#1d6b34", "closed"], ["#c77700", "half-open"], ["#a11d1d", "open"]]));
  bbox.append(ul, sfig);
  window.ttSystem = { queues: queues.length, breakers: breakers.length, samples: series.reduce((a, x) => a + x.points.length, 0) };
}

function legendOf(items) {
  const ul = document.createElement("ul");
  ul.className = "legend";
  for (const [color, name] of items) {
    const li = document.createElement("li");
    const sw = document.createElement("i");
    sw.style.background = color;
    li.append(sw, name);
    ul.append(li);
  }
  return ul;
}

// ---- start -----------------------------------------------------------

// jobFromPath returns the job id of a page at jobs/{id}, relative to the
// page's root.
function jobFromPath() {
  const rel = location.pathname.slice(new URL(document.baseURI).pathname.length);
  const m = rel.match(/^jobs\/([^/]+)$/);
  return m ? decodeURIComponent(m[1]) : "";
}

const VIEWS = ["ask", "history", "monitoring"];

// showView shows one view (the Ask form with its job, the history, or
// monitoring) and marks its link in the navigation.
function showView(name) {
  if (!VIEWS.includes(name)) name = "ask";
  for (const el of document.querySelectorAll("main > section[data-view]")) el.classList.toggle("off-view", el.dataset.view !== name);
  for (const a of document.querySelectorAll("nav a[data-view]")) {
    if (a.dataset.view === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (name === "history") loadHistory(true);
}

function viewOfHash() {
  return location.hash.slice(1);
}

function setupNav() {
  // In-page links are resolved against <base>, which on jobs/{id} is
  // another document: switch views in this one instead.
  for (const a of document.querySelectorAll('a[href^="#"]')) {
    a.addEventListener("click", (ev) => {
      ev.preventDefault();
      const name = a.dataset.view;
      if (name) {
        history.replaceState(history.state, "", `${location.pathname}${location.search}#${name}`);
        showView(name);
      }
      // Move the focus to the view's heading, so that keyboard users
      // continue from there.
      const visible = [...document.querySelectorAll("main > section:not(.off-view):not([hidden])")];
      const heading = visible[0]?.querySelector("h2") || $("#main");
      heading.tabIndex = -1;
      heading.focus();
    });
  }
  window.addEventListener("hashchange", () => showView(viewOfHash()));
  showView(viewOfHash());
}

function start() {
  setupKey();
  setupNav();
  defaultTimePoints.forEach((tp) => addTimePoint(tp));
  $("#add-time-point").addEventListener("click", () => addTimePoint().querySelector("input").focus());
  for (const r of document.querySelectorAll('input[name="kind"]')) r.addEventListener("change", showKind);
  showKind();
  $("#ask-form").addEventListener("submit", submit);
  $("#cancel").addEventListener("click", cancelJob);
  $("#history-more").addEventListener("click", () => loadHistory(false));
  loadModels().then(() => { window.ttReady = true; });
  loadHistory(true);
  sampleMonitoring();
  // A tab nobody looks at does not poll.
  setInterval(() => { if (!document.hidden) sampleMonitoring(); }, SAMPLE_MS);
  const id = jobFromPath();
  if (id) openJob(id, "");
  window.addEventListener("popstate", () => {
    const j = jobFromPath();
    if (j && j !== current?.id) openJob(j, "");
    else showView(viewOfHash());
  });
}

start();
