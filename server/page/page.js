// tally's live page. Plain JavaScript and SVG, no library, nothing from the network.
// State is a list of frames {t, pos, live, state: Map(key -> series)}: the last hour from
// /api/v1/history (t is event time), then one live frame per step from /api/v1/stream
// (t is this browser's wall clock). Every chart is a function of two neighbouring frames.
import { LineChart, escapeHtml, format } from "/page/chart.js";

const STEP_S = 30; // history step, and the spacing of live points
const SINCE = "1h";
const SSE_INTERVAL_S = 0.5;
const WINDOW_S = 3600; // what the charts span, up to the newest point
const $ = (id) => document.getElementById(id);

const page = {
  frames: [],
  current: new Map(), // key -> series, as now
  exemplars: new Map(), // key -> {le: exemplar}, from /api/v1/metrics
  offset: 0, // the bus position folded up to, as now
  status: null, // the last /api/v1/status
  prefix: "ralph_loop", // the loop prefix, read off the families
  filters: { project: "", agent: "", loop: "" },
  token: sessionStorage.getItem("tally-token") || "",
  charts: new Map(), // id -> chart
  pending: false,
  abort: new AbortController(),
};

// -- data ----------------------------------------------------------------------------------

const seriesKey = (name, labels) =>
  name + JSON.stringify(Object.keys(labels).sort().map((k) => [k, labels[k]]));

async function api(path, options = {}, retries = 0) {
  const headers = page.token ? { Authorization: `Bearer ${page.token}` } : {};
  const res = await fetch(path, { ...options, headers, signal: page.abort.signal });
  if (res.status === 503 && retries > 0) { // a long history is folded over several requests
    const wait = Number(res.headers.get("retry-after")) || 1;
    await new Promise((resolve) => setTimeout(resolve, wait * 1000));
    return api(path, options, retries - 1);
  }
  if (res.status === 401) {
    $("token-form").hidden = false;
    throw new Error("a bearer token is needed");
  }
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res;
}

// The figures as now; exemplars (an optional field of histogram series) are kept apart,
// since the stream's frames may not carry them: refreshed with the status.
async function loadCurrent(exemplarsOnly = false) {
  const doc = await (await api("/api/v1/metrics?format=json")).json();
  const state = new Map();
  page.exemplars = new Map();
  for (const fam of doc.families) {
    for (const s of fam.series) {
      const key = seriesKey(fam.name, s.labels);
      state.set(key, { name: fam.name, type: fam.type, ...s });
      if (s.exemplars) page.exemplars.set(key, s.exemplars);
    }
  }
  if (!exemplarsOnly) page.current = state;
}

async function loadHistory() {
  const doc = await (await api(`/api/v1/history?since=${SINCE}&step=${STEP_S}s`, {}, 30)).json();
  const frames = doc.timestamps.map((t, k) => ({
    t, pos: doc.positions[k], live: false, state: new Map(),
  }));
  for (const s of doc.series) {
    const key = seriesKey(s.name, s.labels);
    s.points.forEach((p, k) => {
      if (p !== null) frames[k].state.set(key, { name: s.name, type: s.type, labels: s.labels, ...p });
    });
  }
  page.frames = frames;
}

async function pollStatus() {
  try {
    page.status = await (await api("/api/v1/status")).json();
    const folded = page.status.folded_offset;
    if (page.exemplarsAt !== undefined && folded !== page.exemplarsAt) await loadCurrent(true);
    page.exemplarsAt = folded;
    page.offset = Math.max(page.offset, page.status.folded_offset);
    schedule();
  } catch (err) {
    if (!page.abort.signal.aborted) console.warn("status:", err.message);
  }
}

// Server-sent events read with fetch, so a bearer token can go with them.
async function follow() {
  while (!page.abort.signal.aborted) {
    try {
      const res = await api(`/api/v1/stream?interval=${SSE_INTERVAL_S}`);
      setConn("live", "live");
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          onBlock(buf.slice(0, end));
          buf = buf.slice(end + 2);
        }
      }
    } catch (err) {
      if (page.abort.signal.aborted) return;
      console.warn("stream:", err.message);
    }
    setConn("down", "reconnecting…");
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function onBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  if (!data.length || (event !== "snapshot" && event !== "update")) return;
  const doc = JSON.parse(data.join("\n"));
  if (event === "snapshot") {
    page.current = new Map();
    pollStatus(); // it counts this subscriber now
  }
  for (const s of doc.series) {
    const key = seriesKey(s.name, s.labels);
    if (s.removed) page.current.delete(key);
    else page.current.set(key, s);
  }
  page.offset = doc.offset;
  pushLive();
  schedule();
}

// One live point per STEP_S: the newest one moves with the stream until the next is due.
function pushLive() {
  const now = Date.now() / 1000;
  const last = page.frames[page.frames.length - 1];
  const frame = { t: now, pos: page.offset, live: true, state: new Map(page.current) };
  if (last && last.live && now - page.frames[page.frames.length - 2]?.t < STEP_S) {
    page.frames[page.frames.length - 1] = frame;
  } else {
    page.frames.push(frame);
  }
  const old = page.frames.findIndex((f) => f.t >= now - WINDOW_S - STEP_S);
  if (old > 0) page.frames.splice(0, old);
}

// -- reading a frame -----------------------------------------------------------------------

function keep(labels, scope) {
  const f = page.filters;
  if (f.agent && "agent" in labels && labels.agent !== f.agent) return false;
  if (f.agent && "agent_type" in labels && labels.agent_type !== f.agent) return false;
  if (scope !== undefined && labels.loop !== scope) return false;
  return true;
}

function pick(frame, name, scope) {
  const out = [];
  if (!frame) return out;
  for (const s of frame.state.values()) if (s.name === name && keep(s.labels, scope)) out.push(s);
  return out;
}

const num = (v) => (typeof v === "number" ? v : v === "+Inf" ? Infinity : v === "-Inf" ? -Infinity : NaN);
const total = (list) => (list.length ? list.reduce((a, s) => a + num(s.value), 0) : null);
const count = (list) => (list.length ? list.reduce((a, s) => a + s.count, 0) : null);

function mergedBuckets(list) {
  const merged = new Map();
  for (const s of list) {
    for (const [le, n] of Object.entries(s.buckets || {})) {
      const bound = num(le === "+Inf" || le === "inf" ? "+Inf" : Number(le));
      merged.set(bound, (merged.get(bound) || 0) + n);
    }
  }
  return [...merged].sort((a, b) => a[0] - b[0]);
}

// histogram_quantile over cumulative buckets: linear within the bucket the rank falls in.
function quantile(q, buckets) {
  if (!buckets.length) return null;
  const all = buckets[buckets.length - 1][1];
  if (all === 0) return null;
  const rank = q * all;
  let lower = 0;
  let below = 0;
  for (const [bound, cum] of buckets) {
    if (cum >= rank) {
      if (bound === Infinity) return lower; // above the highest bound: its lower edge
      if (cum === below) return bound;
      return lower + (bound - lower) * ((rank - below) / (cum - below));
    }
    lower = bound;
    below = cum;
  }
  return lower;
}

// Per-minute rate of a counter (or a histogram's count) between two frames, by group.
function rates(frame, prev, name, group, scope, field = "value") {
  const out = new Map();
  if (!prev) return out;
  const dt = frame.t - prev.t;
  if (!(dt > 0)) return out;
  const sums = (f) => {
    const m = new Map();
    for (const s of pick(f, name, scope)) {
      const g = group(s.labels);
      m.set(g, (m.get(g) || 0) + (field === "count" ? s.count : num(s.value)));
    }
    return m;
  };
  const now = sums(frame);
  const before = sums(prev);
  for (const [g, v] of now) {
    const delta = v - (before.get(g) || 0);
    out.set(g, delta >= 0 ? (delta / dt) * 60 : null);
  }
  return out;
}

const gauge = (frame, name, scope) => total(pick(frame, name, scope));
const ratio = (a, b) => (a === null || b === null || b === 0 ? null : a / b);

function successRatio(frame, scope) {
  const it = pick(frame, `${page.prefix}_iterations_total`, scope);
  const ok = total(it.filter((s) => s.labels.result === "success"));
  return ratio(ok ?? 0, total(it));
}

function quantiles(frame, name, scope) {
  const b = mergedBuckets(pick(frame, name, scope));
  return new Map([["p50", quantile(0.5, b)], ["p90", quantile(0.9, b)], ["p99", quantile(0.99, b)]]);
}

// -- what is drawn ---------------------------------------------------------------------------

const RUN_DURATION = "conductor_run_duration_seconds";

function conductorCharts() {
  return [
    { id: "runs-active", host: "ch-runs", title: "Active and queued runs", match: ["project", "agent"],
      lines: (f) => new Map([["active", gauge(f, "conductor_active_runs_total")],
                             ["queued", gauge(f, "conductor_queued_runs_total")]]) },
    { id: "runs-finished", host: "ch-runs", title: "Finished runs per minute, by agent", match: ["project", "agent"],
      lines: (f, p) => rates(f, p, RUN_DURATION, (l) => `${l.agent || "?"} ${l.status}`, undefined, "count") },
    { id: "runs-duration", host: "ch-runs", title: "Run duration p50 / p90 / p99 (s)", match: ["project", "agent"],
      lines: (f) => quantiles(f, RUN_DURATION), exemplars: true },
    { id: "bus-appends", host: "ch-traffic", title: "Message-bus appends per minute", match: ["project"],
      lines: (f, p) => rates(f, p, "conductor_messagebus_appends_total", () => "appends") },
    { id: "api-requests", host: "ch-traffic", title: "API requests per minute, by status class",
      lines: (f, p) => rates(f, p, "conductor_api_requests_total", (l) => `${String(l.status)[0]}xx`) },
    { id: "self-counts", host: "ch-self", title: "Corrupt lines and series overflow",
      lines: (f) => new Map([["corrupt lines", gauge(f, "tally_corrupt_lines_total")],
                             ["series overflow", gauge(f, "tally_series_overflow_total")]]) },
    { id: "self-lag", host: "ch-self", title: "Fold lag (bytes) and SSE subscribers",
      lines: (f) => new Map([["fold lag", f.status ? f.status.lag_bytes : null],
                             ["SSE subscribers", f.status ? f.status.sse_subscribers : null]]) },
  ];
}

function loopCharts(loop) {
  const P = page.prefix;
  const id = (s) => `loop-${loop}-${s}`;
  const host = `ch-loop-${loop}`;
  return [
    { id: id("iterations"), host, title: "Iterations per minute", match: ["loop_id"], loop,
      lines: (f, p) => rates(f, p, `${P}_iterations_total`, (l) => l.result, loop) },
    { id: id("duration"), host, title: "Iteration duration p50 / p90 / p99 (s)", match: ["loop_id"], loop,
      lines: (f) => quantiles(f, `${P}_iteration_duration_seconds`, loop) },
    { id: id("ratios"), host, title: "Success, test pass, context usage, velocity", match: ["loop_id"], loop,
      lines: (f) => new Map([["success", successRatio(f, loop)],
                             ["test pass", gauge(f, `${P}_test_pass_ratio`, loop)],
                             ["context", gauge(f, `${P}_context_usage_ratio`, loop)],
                             ["velocity", gauge(f, `${P}_progress_velocity`, loop)]]) },
    { id: id("streaks"), host, title: "Streaks, sessions and reboots", match: ["loop_id"], loop,
      lines: (f) => new Map([["test failure streak", gauge(f, `${P}_test_failure_streak`, loop)],
                             ["no-progress streak", gauge(f, `${P}_no_progress_streak`, loop)],
                             ["active sessions", gauge(f, `${P}_active_sessions`, loop)],
                             ["context reboots", gauge(f, `${P}_context_reboots_total`, loop)]]) },
  ];
}

// A figure with data-metric is a plain sum of that family's filtered series (a test checks
// these against /api/v1/metrics); the others are derived.
function figure(label, value, fmt, metric, scope) {
  return { label, value, fmt, metric, scope };
}

function conductorFigures(f) {
  const d = quantiles(f, RUN_DURATION);
  const fin = pick(f, RUN_DURATION);
  return {
    "fig-runs": [
      figure("active runs", gauge(f, "conductor_active_runs_total"), "int", "conductor_active_runs_total"),
      figure("queued runs", gauge(f, "conductor_queued_runs_total"), "int", "conductor_queued_runs_total"),
      figure("completed", gauge(f, "conductor_completed_runs_total"), "int", "conductor_completed_runs_total"),
      figure("failed", gauge(f, "conductor_failed_runs_total"), "int", "conductor_failed_runs_total"),
      figure("finished runs", count(fin), "int"),
      figure("duration p50", d.get("p50"), "s"),
      figure("p90", d.get("p90"), "s"),
      figure("p99", d.get("p99"), "s"),
    ],
    "fig-traffic": [
      figure("bus appends", gauge(f, "conductor_messagebus_appends_total"), "int", "conductor_messagebus_appends_total"),
      figure("agent fallbacks", gauge(f, "conductor_agent_fallbacks_total"), "int", "conductor_agent_fallbacks_total"),
    ],
    "fig-self": [
      figure("fold lag (bytes)", page.status ? page.status.lag_bytes : null, "int"),
      figure("corrupt lines", gauge(f, "tally_corrupt_lines_total"), "int", "tally_corrupt_lines_total"),
      figure("series overflow", gauge(f, "tally_series_overflow_total"), "int", "tally_series_overflow_total"),
      figure("SSE subscribers", page.status ? page.status.sse_subscribers : null, "int"),
      figure("checkpoint age", page.status?.last_checkpoint ? page.status.last_checkpoint.age_s : null, "s"),
    ],
  };
}

function loopFigures(f, loop) {
  const P = page.prefix;
  const d = quantiles(f, `${P}_iteration_duration_seconds`, loop);
  return [
    figure("iterations", gauge(f, `${P}_iterations_total`, loop), "int", `${P}_iterations_total`, loop),
    figure("success ratio", successRatio(f, loop), "pct"),
    figure("duration p50", d.get("p50"), "s"),
    figure("context usage", gauge(f, `${P}_context_usage_ratio`, loop), "pct", `${P}_context_usage_ratio`, loop),
    figure("reboots", gauge(f, `${P}_context_reboots_total`, loop), "int", `${P}_context_reboots_total`, loop),
    figure("test pass", gauge(f, `${P}_test_pass_ratio`, loop), "pct", `${P}_test_pass_ratio`, loop),
    figure("failure streak", gauge(f, `${P}_test_failure_streak`, loop), "int", `${P}_test_failure_streak`, loop),
    figure("no-progress streak", gauge(f, `${P}_no_progress_streak`, loop), "int", `${P}_no_progress_streak`, loop),
    figure("velocity", gauge(f, `${P}_progress_velocity`, loop), "num", `${P}_progress_velocity`, loop),
    figure("active sessions", gauge(f, `${P}_active_sessions`, loop), "int", `${P}_active_sessions`, loop),
  ];
}

function drawFigures(hostId, figures) {
  const host = $(hostId);
  host.replaceChildren(...figures.map((fig) => {
    const box = document.createElement("div");
    box.className = "fig";
    const label = document.createElement("span");
    label.textContent = fig.label;
    const out = document.createElement("output");
    out.textContent = format(fig.value, fig.fmt);
    out.setAttribute("aria-label", `${fig.label}: ${out.textContent}`);
    if (fig.value !== null) out.dataset.value = String(fig.value);
    if (fig.metric) out.dataset.metric = fig.metric;
    if (fig.scope !== undefined) out.dataset.loop = fig.scope;
    box.append(label, out);
    return box;
  }));
}

// -- charts ------------------------------------------------------------------------------------

function drawChart(def) {
  let chart = page.charts.get(def.id);
  if (!chart) {
    chart = new LineChart($(def.host), def, $("tip"), (k) => drill(chart, k));
    if (def.exemplars) {
      chart.exemplars = document.createElement("ul");
      chart.exemplars.className = "exemplars";
      chart.box.append(chart.exemplars);
    }
    page.charts.set(def.id, chart);
  }
  chart.def = def;
  const frames = page.frames;
  const names = new Set();
  const rows = frames.map((f, k) => {
    const m = def.lines(f, frames[k - 1]);
    for (const [name, v] of m) if (v !== null && Number.isFinite(v)) names.add(name);
    return m;
  });
  chart.draw(frames, rows, [...names].sort());
  if (def.exemplars) drawExemplars(chart.exemplars);
}

// Exemplars (when /api/v1/metrics carries them): each opens the events at its offset.
function drawExemplars(list) {
  const items = [];
  for (const s of page.current.values()) {
    const exemplars = s.exemplars || page.exemplars.get(seriesKey(s.name, s.labels));
    if (s.name !== RUN_DURATION || !keep(s.labels) || !exemplars) continue;
    for (const ex of Object.values(exemplars)) {
      const offset = Number(ex.labels && ex.labels.offset);
      if (!Number.isFinite(offset)) continue;
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = `${ex.labels.run_id || "run"} ${format(ex.value, "s")}`;
      b.addEventListener("click", () => openDrill(`Exemplar ${b.textContent}`, { from: offset, limit: 1 }, []));
      const li = document.createElement("li");
      li.append(b);
      items.push(li);
    }
  }
  list.replaceChildren(...items.slice(-12));
}

// -- drill-down ------------------------------------------------------------------------------

function drill(chart, k) {
  const frames = chart.frames;
  const range = { to: frames[k].pos, limit: 50 };
  if (k > 0) range.from = frames[k - 1].pos;
  const when = new Date(frames[k].t * 1000).toLocaleTimeString();
  openDrill(`${chart.def.title} — ${when}`, range, matches(chart.def));
}

// match= of a chart's drill-down: the event fields its filters stand for.
function matches(def) {
  const out = [];
  for (const field of def.match || []) {
    const value = field === "loop_id" ? def.loop : page.filters[field];
    if (value) out.push(`${field}:${value}`);
  }
  return out;
}

async function openDrill(title, range, match) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(range)) q.set(k, String(v));
  for (const m of match) q.append("match", m);
  page.returnFocus = document.activeElement;
  const panel = $("drill");
  $("drill-title").textContent = title;
  $("drill-range").textContent = `positions ${range.from ?? "start"} … ${range.to ?? "end"}` +
    (q.getAll("match").length ? ` · ${q.getAll("match").join(", ")}` : "");
  const list = $("drill-list");
  list.replaceChildren();
  list.dataset.query = q.toString();
  list.removeAttribute("data-loaded");
  panel.hidden = false;
  $("drill-title").focus();
  let doc;
  try {
    doc = await (await api(`/api/v1/log?${q}`)).json();
  } catch (err) {
    list.innerHTML = `<li>${escapeHtml(err.message)}</li>`;
    return;
  }
  const projects = new Set([...$("projects").options].map((o) => o.value));
  list.replaceChildren(...doc.events.map(({ position, event }) => {
    const li = document.createElement("li");
    li.dataset.position = String(position);
    const { type, ts, ...rest } = event;
    if (event.project && !projects.has(event.project)) {
      projects.add(event.project);
      $("projects").append(new Option(event.project));
    }
    li.innerHTML = `<span class="pos">#${position}</span><b>${escapeHtml(type)}</b> ` +
      `<span class="pos">${new Date(ts * 1000).toLocaleTimeString()}</span> <code>${escapeHtml(JSON.stringify(rest))}</code>`;
    return li;
  }));
  list.dataset.loaded = "true";
  if (!doc.events.length) list.innerHTML = "<li>No events in this range.</li>";
  else if (doc.events.length >= range.limit) list.insertAdjacentHTML("beforeend", `<li>… the first ${range.limit} shown</li>`);
}

function closeDrill() {
  if ($("drill").hidden) return;
  $("drill").hidden = true;
  if (page.returnFocus && page.returnFocus.isConnected) page.returnFocus.focus();
}

// -- the page ------------------------------------------------------------------------------------

function setConn(cls, text) {
  const conn = $("conn");
  conn.className = cls;
  conn.textContent = text;
}

function schedule() {
  if (page.pending) return;
  page.pending = true;
  requestAnimationFrame(() => { page.pending = false; render(); });
}

function options(select, values) {
  const have = [...select.options].map((o) => o.value);
  for (const v of values) if (!have.includes(v)) select.append(new Option(v, v));
}

function render() {
  const latest = page.frames.length ? page.frames[page.frames.length - 1] : null;
  if (latest && latest.live) latest.status = page.status;
  const now = { t: Date.now() / 1000, state: page.current };
  for (const s of page.current.values()) {
    if (s.name.endsWith("_iterations_total") && "loop" in s.labels && "result" in s.labels) {
      page.prefix = s.name.slice(0, -"_iterations_total".length);
    }
  }
  const agents = new Set(), loops = new Set();
  for (const s of page.current.values()) {
    if (s.labels.agent) agents.add(s.labels.agent);
    if (s.labels.agent_type) agents.add(s.labels.agent_type);
    if (s.labels.loop && s.name.startsWith(page.prefix)) loops.add(s.labels.loop);
  }
  options($("f-agent"), [...agents].sort());
  options($("f-loop"), [...loops].sort());
  for (const [host, figs] of Object.entries(conductorFigures(now))) drawFigures(host, figs);
  for (const def of conductorCharts()) drawChart(def);
  $("no-loops").hidden = loops.size > 0;
  for (const loop of [...loops].sort()) {
    let card = $(`loop-${loop}`);
    if (!card) {
      card = document.createElement("article");
      card.className = "loop";
      card.id = `loop-${loop}`;
      card.setAttribute("aria-label", `loop ${loop}`);
      card.innerHTML = `<h3 class="loop-name"></h3><div class="figures" id="fig-loop-${loop}"></div>` +
        `<div class="charts" id="ch-loop-${loop}"></div>`;
      card.querySelector("h3").textContent = `loop ${loop}`;
      $("loops").append(card);
    }
    card.hidden = Boolean(page.filters.loop) && page.filters.loop !== loop;
    if (card.hidden) continue;
    drawFigures(`fig-loop-${loop}`, loopFigures(now, loop));
    for (const def of loopCharts(loop)) drawChart(def);
  }
}

function setTheme(theme) {
  const root = document.documentElement;
  if (theme === "auto") delete root.dataset.theme;
  else root.dataset.theme = theme;
  localStorage.setItem("tally-theme", theme);
  $("theme").textContent = `◐ ${theme}`;
  $("theme").setAttribute("aria-label", `Colour theme: ${theme}`);
}

function cycleTheme() {
  const order = ["auto", "light", "dark"];
  const now = localStorage.getItem("tally-theme") || "auto";
  setTheme(order[(order.indexOf(now) + 1) % order.length]);
}

function wire() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    page.token = hash.get("token");
    sessionStorage.setItem("tally-token", page.token);
    history.replaceState(null, "", location.pathname + location.search);
  }
  setTheme(localStorage.getItem("tally-theme") || "auto");
  $("theme").addEventListener("click", cycleTheme);
  $("drill-close").addEventListener("click", closeDrill);
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  $("f-project").addEventListener("input", (e) => { page.filters.project = e.target.value.trim(); });
  $("f-agent").addEventListener("change", (e) => { page.filters.agent = e.target.value; schedule(); });
  $("f-loop").addEventListener("change", (e) => { page.filters.loop = e.target.value; schedule(); });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("tally-token", $("token").value);
    location.reload();
  });
  document.addEventListener("keydown", (e) => {
    const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName);
    if (e.key === "Escape") { closeDrill(); $("tip").hidden = true; }
    else if (e.key === "/" && !typing) { e.preventDefault(); $("f-project").focus(); }
    else if (e.key === "t" && !typing && !e.ctrlKey && !e.metaKey) cycleTheme();
  });
  window.addEventListener("pagehide", () => page.abort.abort());
}

async function start() {
  wire();
  try {
    await Promise.all([loadCurrent(), loadHistory()]);
  } catch (err) {
    setConn("down", err.message);
    if (!$("token-form").hidden) return; // 401: the form reloads the page with a token
  }
  await pollStatus();
  pushLive();
  render();
  setInterval(pollStatus, 5000);
  setInterval(() => { pushLive(); schedule(); }, STEP_S * 1000); // time moves on when the log is quiet
  follow();
}

document.addEventListener("DOMContentLoaded", start);
