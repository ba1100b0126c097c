// Ferry cockpit: polls the receiver's /v1/status every second and /ui/history
// for the charts, and renders every section from the fields it finds, so that
// fields added later (loads, commands, on_disk_*, behind_records) show up
// without a change here. No dependencies, no build step.
"use strict";

const POLL_MS = 1000;
const WINDOW_MS = 3600 * 1000;
const FEED_ROWS = 200;

let token = "";
let hist = [];             // samples, oldest first
let historyErrors = [];
let lastSampleMs = 0;
let lastStatus = null;
const cards = new Map();   // source -> card elements

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}

// ---- token and requests ----

function initToken() {
  const m = /(?:^|[#&])token=([^&]*)/.exec(location.hash);
  if (m) {
    token = decodeURIComponent(m[1]);
    sessionStorage.setItem("ferry-token", token);
    window.history.replaceState(null, "", location.pathname + location.search);
  } else {
    token = sessionStorage.getItem("ferry-token") || "";
  }
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value;
    sessionStorage.setItem("ferry-token", token);
    $("login").hidden = true;
    poll();
  });
}

class Unauthorized extends Error {}

async function api(path, opts) {
  const headers = {};
  if (token) headers["Authorization"] = "Bearer " + token;
  const resp = await fetch(path, Object.assign({ headers, cache: "no-store" }, opts || {}));
  if (resp.status === 401) {
    $("login").hidden = false;
    throw new Unauthorized("the API wants a token");
  }
  return resp;
}

async function getJSON(path) {
  const resp = await api(path);
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(path + ": " + resp.status + " " + (body.error || resp.statusText));
  return body;
}

// ---- formatting ----

function fmtInt(n) {
  if (n === undefined || n === null || n === "") return "—";
  return Number(n).toLocaleString("en-US");
}

function fmtBytes(n) {
  if (n === undefined || n === null) return "—";
  if (n < 0) return "≥ 1 segment";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + u[i];
}

function fmtSeconds(s) {
  if (s === undefined || s === null) return "—";
  if (s < 1) return Math.round(s * 1000) + " ms";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

function fmtTime(t) {
  if (!t) return "—";
  const d = new Date(t);
  if (isNaN(d)) return String(t);
  return d.toLocaleTimeString("en-GB", { hour12: false }) + (Date.now() - d > 86400e3 ? " " + d.toISOString().slice(0, 10) : "");
}

function fmtValue(k, v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "object") return JSON.stringify(v);
  if (typeof v === "number") {
    if (/seconds/.test(k)) return fmtSeconds(v);
    if (/bytes/.test(k)) return fmtBytes(v);
    return fmtInt(v);
  }
  if (typeof v === "string" && /(_time|_at)$/.test(k)) return fmtTime(v);
  return String(v);
}

function pos(seg, off) {
  if (seg === undefined || seg === null || (seg === 0 && !off)) return "—";
  return seg + ":" + fmtInt(off);
}

// ---- generic rendering of status fields other features add ----

// renderAny renders an array of objects as a table (preferred columns first),
// an object as a key/value table (arrays inside as nested tables), and
// nothing (null, empty) as "none".
function renderAny(v, preferred) {
  if (v === undefined || v === null || (Array.isArray(v) && v.length === 0) ||
      (typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 0)) {
    return null;
  }
  if (Array.isArray(v)) {
    if (typeof v[0] !== "object") return el("p", { text: v.join(", ") });
    const cols = [];
    for (const c of preferred || []) if (v.some((r) => r && c in r)) cols.push(c);
    for (const r of v) for (const c of Object.keys(r || {})) if (!cols.includes(c)) cols.push(c);
    const head = el("tr", {}, ...cols.map((c) => el("th", { text: c })));
    const rows = v.map((r) => el("tr", { class: r && r.state ? "state-" + r.state : null },
      ...cols.map((c) => el("td", { class: typeof (r || {})[c] === "number" ? "num" : null, text: fmtValue(c, (r || {})[c]) }))));
    return el("div", { class: "scroll" }, el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
  }
  if (typeof v === "object") {
    const keys = [];
    for (const c of preferred || []) if (c in v) keys.push(c);
    for (const c of Object.keys(v)) if (!keys.includes(c)) keys.push(c);
    const rows = keys.map((k) => {
      const x = v[k];
      const cell = (x && typeof x === "object") ? el("td", {}, renderAny(x) || el("span", { class: "none", text: "none" }))
        : el("td", { class: typeof x === "number" ? "num" : null, text: fmtValue(k, x) });
      return el("tr", {}, el("th", { text: k }), cell);
    });
    return el("table", {}, el("tbody", {}, ...rows));
  }
  return el("p", { text: String(v) });
}

function renderSection(id, value, preferred) {
  const box = $(id);
  const content = renderAny(value, preferred);
  box.replaceChildren(content || "none");
  box.className = content ? "" : "none";
  box.dataset.present = content ? "true" : "false";
}

// ---- gate ----

function renderGate(st) {
  const g = $("gate");
  g.dataset.state = st.ready ? "ready" : "not-ready";
  $("gate-verdict").textContent = st.ready ? "READY — the service can take traffic" : "NOT READY";
  $("gate-reason").textContent = st.ready ? "" : (st.not_ready_reason || "");
  const checks = [];
  const check = (ok, text) => checks.push(el("li", { class: ok ? "pass" : "fail", text: (ok ? "✓ " : "✗ ") + text }));
  check(st.consuming !== false, st.consuming === false ? "not consuming: " + (st.error || "stopped") : "consuming stream " + (st.stream || ""));
  check(!!st.caught_up, st.caught_up ? "caught up with the stream" : "catching up: " + fmtInt(st.messages_pending) + " messages pending");
  for (const s of st.sources || []) {
    if (s.state === "stopped") check(false, s.source + " stopped");
    else if (s.state === "waiting") check(false, s.source + ": nothing applied yet");
    else check(true, s.source + " lags " + fmtSeconds(s.lag_seconds));
  }
  if (Array.isArray(st.loads)) {
    // Loads named by --wait-load (wait) hold the gate until done; others
    // are shown, not waited for.
    for (const l of st.loads) {
      if (!l || !l.state) continue;
      const what = "initial load " + (l.load ? l.load + " of " : "of ") + (l.table || "");
      if (l.state === "done") check(true, what + " done");
      else if (l.wait !== false && l.wait !== undefined) check(false, what + " " + l.state + (l.error ? ": " + l.error : ""));
      else check(true, what + " " + l.state + " (not waited for)");
    }
  }
  $("gate-checks").replaceChildren(...checks);
}

// ---- initial loads ----

// renderLoads shows each table's load: state, a progress bar of rows so far
// of the estimate, rows/s, ETA, what the merge rule dropped, the error.
function renderLoads(loads) {
  const box = $("loads");
  if (!Array.isArray(loads) || loads.length === 0) {
    box.replaceChildren("none");
    box.className = "none";
    box.dataset.present = "false";
    return;
  }
  const head = el("tr", {}, ...["table", "load", "state", "rows", "rows/s", "ETA", "dropped", "ingested"].map((c) => el("th", { text: c })));
  const rows = [];
  for (const l of loads) {
    const pct = l.rows_estimate > 0 ? Math.min(100, (100 * l.rows) / l.rows_estimate) : (l.state === "done" ? 100 : 0);
    const bar = el("progress", { class: "load-progress", max: "100", value: pct.toFixed(1), title: pct.toFixed(1) + "%" });
    rows.push(el("tr", { class: "load state-" + l.state, "data-table": l.table, "data-state": l.state },
      el("td", { class: "nowrap", text: l.table + (l.wait ? " (gate)" : "") }),
      el("td", { class: "nowrap", text: l.load || "—" }),
      el("td", {}, el("span", { class: "badge", "data-state": l.state === "done" ? "ok" : l.state === "failed" ? "stopped" : "waiting", text: l.state })),
      el("td", { class: "num" }, el("div", { text: fmtInt(l.rows) + (l.rows_estimate > 0 ? " of ~" + fmtInt(l.rows_estimate) : "") }), bar),
      el("td", { class: "num", text: fmtInt(Math.round(l.rows_per_second || 0)) }),
      el("td", { class: "num", text: l.state === "loading" && l.eta_seconds > 0 ? fmtSeconds(l.eta_seconds) : "—" }),
      el("td", { class: "num", text: fmtInt(l.rows_dropped || 0) }),
      el("td", { class: "num", text: fmtInt(l.rows_ingested || 0) })));
    if (l.error) rows.push(el("tr", { class: "load-error" }, el("td", { colspan: "8", class: "msg", text: l.error })));
  }
  box.className = "";
  box.dataset.present = "true";
  box.replaceChildren(el("div", { class: "scroll" }, el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows))),
    el("p", { class: "muted", text: "(gate): the readiness gate waits for this table's load (--wait-load)" }));
}

// ---- sources ----

const KNOWN = new Set(["source", "state", "error"]);

function card(name) {
  let c = cards.get(name);
  if (c) return c;
  const mk = (cls) => el("div", { class: cls });
  c = {
    root: el("article", { class: "source", "data-source": name }),
    badge: el("span", { class: "badge" }),
    disk: mk("stage"), shipped: mk("stage"), applied: mk("stage"),
    recs: el("div", { class: "lag-records" }), bytes: el("div", { class: "lag-bytes" }), secs: el("div", { class: "lag-seconds" }),
    error: el("div", { class: "error", hidden: "" }),
    canvas: el("canvas", { class: "chart", "aria-label": "lag and throughput over the last hour" }),
    details: el("div"),
  };
  c.root.append(
    el("h3", {}, el("span", { class: "name", text: name }), c.badge),
    el("div", { class: "stages" }, c.disk, c.shipped, c.applied),
    el("div", { class: "lag" }, c.recs, c.bytes, c.secs),
    c.error,
    c.canvas,
    el("div", { class: "legend" }, el("span", { class: "l-lag", text: "lag (s)" }), el("span", { class: "l-rate", text: "applied changes/s" }), el("span", { class: "chart-range" })),
    el("details", {}, el("summary", { text: "all fields" }), c.details));
  cards.set(name, c);
  return c;
}

function stage(box, title, main, sub) {
  box.replaceChildren(el("b", { text: title }), el("span", { class: "pos", text: main }), sub ? el("div", { class: "muted", text: sub }) : "");
}

function lagCell(box, value, label) {
  box.replaceChildren(value, el("span", { text: label }));
}

function renderSources(st) {
  const box = $("sources");
  const list = st.sources || [];
  if (list.length === 0) {
    box.replaceChildren(el("p", { class: "muted", text: "no sources yet" }));
    cards.clear();
    return;
  }
  const seen = new Set();
  const nodes = [];
  for (const s of list) {
    seen.add(s.source);
    const c = card(s.source);
    c.root.dataset.state = s.state;
    c.badge.dataset.state = s.state;
    c.badge.textContent = s.state;
    if (s.on_disk_segment !== undefined) stage(c.disk, "on disk", pos(s.on_disk_segment, s.on_disk_offset), s.on_disk_time ? "written " + fmtTime(s.on_disk_time) : "");
    else stage(c.disk, "on disk", "—", "on the legacy host: ferry status --dir");
    // Shipped: the further of the stream's polled tail and the furthest
    // message this receiver has seen (the tail is polled every few seconds).
    let shipSeg = s.shipped_segment || 0, shipOff = s.shipped_offset || 0;
    if ((s.tail_segment || 0) > shipSeg || (s.tail_segment === shipSeg && (s.tail_offset || 0) > shipOff)) {
      shipSeg = s.tail_segment; shipOff = s.tail_offset;
    }
    stage(c.shipped, "shipped", pos(shipSeg, shipOff), s.tail_stream_seq ? "stream seq " + fmtInt(s.tail_stream_seq) : "");
    stage(c.applied, "applied", pos(s.applied_segment, s.applied_offset), s.last_commit_time ? "commit " + fmtTime(s.last_commit_time) : "");
    lagCell(c.recs, s.behind_records !== undefined ? fmtInt(s.behind_records) : "—", "records behind");
    lagCell(c.bytes, fmtBytes(s.behind_bytes), "bytes behind");
    lagCell(c.secs, fmtSeconds(s.lag_seconds), "seconds behind");
    if (s.error) {
      const where = s.error_file ? s.error_file + " at offset " + fmtInt(s.error_offset) + ": " : "";
      c.error.textContent = where + s.error;
      c.error.hidden = false;
    } else {
      c.error.hidden = true;
      c.error.textContent = "";
    }
    const fields = {};
    for (const [k, v] of Object.entries(s)) if (!KNOWN.has(k)) fields[k] = v;
    c.details.replaceChildren(renderAny(fields) || "");
    nodes.push(c.root);
  }
  for (const k of [...cards.keys()]) if (!seen.has(k)) cards.delete(k);
  // Keep the nodes (and the open <details>) in place when nothing moved.
  const cur = [...box.children];
  if (cur.length !== nodes.length || cur.some((n, i) => n !== nodes[i])) box.replaceChildren(...nodes);
  for (const s of list) drawChart(cards.get(s.source).canvas, s.source, cards.get(s.source).root);
}

// ---- charts ----

function series(source) {
  const lag = [], rate = [];
  let prev = null;
  for (const smp of hist) {
    const t = Date.parse(smp.time);
    const p = (smp.sources || []).find((x) => x.source === source);
    if (!p) { prev = null; continue; }
    lag.push([t, p.lag_seconds]);
    if (prev) {
      const dt = (t - prev.t) / 1000;
      if (dt > 0) rate.push([t, Math.max(0, (p.changes - prev.changes) / dt)]);
    }
    prev = { t, changes: p.changes };
  }
  return { lag, rate };
}

function drawChart(canvas, source, root) {
  const { lag, rate } = series(source);
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 300, h = canvas.clientHeight || 120;
  if (canvas.width !== Math.round(w * dpr)) canvas.width = Math.round(w * dpr);
  if (canvas.height !== Math.round(h * dpr)) canvas.height = Math.round(h * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  // The last hour, or since the first sample when the receiver is younger.
  const now = Date.now();
  const first = lag.length ? lag[0][0] : now - WINDOW_MS;
  const span = Math.min(WINDOW_MS, Math.max(now - first, 60 * 1000));
  const t0 = now - span;
  const pad = { l: 4, r: 4, t: 14, b: 14 };
  const x = (t) => pad.l + (Math.max(t, t0) - t0) / span * (w - pad.l - pad.r);
  g.strokeStyle = "#d9dee5";
  g.lineWidth = 1;
  g.beginPath();
  g.moveTo(pad.l, h - pad.b + 0.5);
  g.lineTo(w - pad.r, h - pad.b + 0.5);
  g.stroke();
  g.fillStyle = "#667085";
  g.font = "10px system-ui, sans-serif";
  g.textAlign = "left";
  g.fillText("−" + fmtSeconds(span / 1000), pad.l, h - 2);
  g.textAlign = "right";
  g.fillText("now", w - pad.r, h - 2);
  const line = (pts, color, align) => {
    const top = Math.max(...pts.map((p) => p[1]), 0);
    const scale = top > 0 ? top * 1.1 : 1;
    const y = (v) => h - pad.b - v / scale * (h - pad.t - pad.b);
    g.strokeStyle = color;
    g.lineWidth = 1.6;
    g.beginPath();
    pts.forEach((p, i) => (i ? g.lineTo(x(p[0]), y(p[1])) : g.moveTo(x(p[0]), y(p[1]))));
    g.stroke();
    g.fillStyle = color;
    if (pts.length < 30) { // few samples (a young receiver): mark each one
      for (const p of pts) { g.beginPath(); g.arc(x(p[0]), y(p[1]), 2.2, 0, 2 * Math.PI); g.fill(); }
    }
    g.textAlign = align;
    return top;
  };
  const lagTop = line(lag, getComputedStyle(document.documentElement).getPropertyValue("--lag").trim() || "#d9480f", "left");
  g.fillText("max " + fmtSeconds(lagTop), pad.l, 10);
  const rateTop = line(rate, getComputedStyle(document.documentElement).getPropertyValue("--rate").trim() || "#1f6feb", "right");
  g.fillText("max " + fmtInt(Math.round(rateTop)) + "/s", w - pad.r, 10);
  root.dataset.samples = String(lag.length);
  const r = root.querySelector(".chart-range");
  if (r) r.textContent = lag.length + " samples";
}

// ---- errors ----

function renderErrors() {
  const box = $("errors");
  // The status is fresher than the history (recorded once a second): an
  // error it reports that the history does not list yet goes on top.
  const list = historyErrors.slice();
  const cur = lastStatus ? (lastStatus.sources || []).filter((s) => s.error) : [];
  if (lastStatus && lastStatus.error) cur.push({ source: "", error: lastStatus.error });
  for (const s of cur.reverse()) {
    if (!list.some((e) => (e.source || "") === (s.source || "") && e.error === s.error)) {
      list.unshift({ source: s.source, error: s.error, file: s.error_file, offset: s.error_file ? s.error_offset : null,
        last_seen: new Date().toISOString(), active: true });
    }
  }
  if (list.length === 0) {
    box.replaceChildren("none");
    box.className = "none";
    return;
  }
  const head = el("tr", {}, ...["last seen", "source", "file", "offset", "error"].map((c) => el("th", { text: c })));
  const rows = list.map((e) => el("tr", { class: e.active ? "active" : null },
    el("td", { class: "nowrap", text: fmtTime(e.last_seen) + (e.active ? " (now)" : "") }),
    el("td", { class: "nowrap", text: e.source || "receiver" }),
    el("td", { class: "file nowrap", text: e.file || "—" }),
    el("td", { class: "num offset nowrap", text: e.offset === undefined || e.offset === null ? "—" : fmtInt(e.offset) }),
    el("td", { class: "msg", text: e.error })));
  box.className = "";
  box.replaceChildren(el("div", { class: "scroll" }, el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows))));
}

// ---- polling ----

async function pollHistory() {
  const h = await getJSON("history" + (lastSampleMs ? "?since=" + lastSampleMs : ""));
  for (const s of h.samples || []) {
    const t = Date.parse(s.time);
    if (t > lastSampleMs) { hist.push(s); lastSampleMs = t; }
  }
  const cut = Date.now() - WINDOW_MS;
  while (hist.length && Date.parse(hist[0].time) < cut) hist.shift();
  historyErrors = h.errors || [];
}

let pollTimer = null;

async function poll() {
  clearTimeout(pollTimer);
  const conn = $("conn");
  try {
    const st = await getJSON("../v1/status");
    await pollHistory();
    lastStatus = st;
    $("stream").textContent = "stream " + (st.stream || "?") + " · change ids " + fmtInt(st.first_change_id) + "–" + fmtInt(st.last_change_id);
    renderGate(st);
    renderSources(st);
    renderLoads(st.loads);
    renderSection("commands", st.commands, ["pending", "applied", "rejected", "oldest_pending_seconds", "latency_p50_seconds", "latency_p99_seconds", "recent"]);
    renderErrors();
    conn.dataset.state = "live";
    conn.textContent = "live · " + fmtTime(new Date());
  } catch (err) {
    conn.dataset.state = "error";
    conn.textContent = "offline: " + err.message;
    if (err instanceof Unauthorized) return; // wait for the token form
  }
  pollTimer = setTimeout(poll, POLL_MS);
}

// ---- row browser ----

let rowsNext = null;

async function browse(append) {
  const table = $("browse-table").value.trim();
  const prefix = $("browse-prefix").value;
  const box = $("rows");
  let url = "../v1/tables/" + encodeURIComponent(table) + "/rows?limit=50" + (prefix ? "&prefix=" + encodeURIComponent(prefix) : "");
  if (append && rowsNext) url = ".." + rowsNext;
  try {
    const page = await getJSON(url);
    const rows = (page.rows || []).map((r) => el("tr", {},
      el("td", { class: "key nowrap", text: r.key !== undefined ? r.key : "base64:" + r.key_base64 }),
      el("td", { class: "nowrap", text: r.op }),
      el("td", {}, el("pre", { text: typeof r.value === "string" ? r.value : JSON.stringify(r.value) })),
      el("td", { class: "nowrap", text: r.version ? r.version.source + " " + r.version.segment + ":" + r.version.offset : "" }),
      el("td", { class: "nowrap", text: fmtTime(r.commit_time) })));
    let tbody = box.querySelector("tbody");
    if (!append || !tbody) {
      tbody = el("tbody");
      const head = el("tr", {}, ...["key", "op", "value", "source position", "committed"].map((c) => el("th", { text: c })));
      box.replaceChildren(el("div", { class: "scroll" }, el("table", { id: "rows-table" }, el("thead", {}, head), tbody)));
    }
    tbody.append(...rows);
    if (!append && rows.length === 0) box.replaceChildren(el("p", { class: "none", text: "no rows in " + table + (prefix ? " with prefix " + prefix : "") }));
    rowsNext = page.more ? page.next_url : null;
    $("rows-more").hidden = !page.more;
  } catch (err) {
    box.replaceChildren(el("p", { class: "error", text: err.message }));
    $("rows-more").hidden = true;
  }
}

// ---- live change feed (SSE read through fetch, so that the token can be sent) ----

let feedAbort = null;
let feedLast = null;

async function startFeed() {
  feedAbort = new AbortController();
  $("feed-toggle").textContent = "Stop";
  const state = $("feed-state");
  if (feedLast === null) {
    const last = lastStatus ? lastStatus.last_change_id : 0;
    const first = lastStatus ? lastStatus.first_change_id : 0;
    feedLast = Math.max(last - 20, first > 0 ? first - 1 : 0, 0);
  }
  while (feedAbort && !feedAbort.signal.aborted) {
    try {
      const resp = await api("../v1/changes/stream?after=" + feedLast, { signal: feedAbort.signal });
      if (!resp.ok) {
        const body = await resp.json().catch(() => ({}));
        if (resp.status === 410 && lastStatus) { feedLast = Math.max(lastStatus.first_change_id - 1, 0); continue; }
        throw new Error(resp.status + " " + (body.error || ""));
      }
      state.textContent = "live";
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let ev = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) ev = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (ev === "change" && data) feedRow(JSON.parse(data));
        }
      }
    } catch (err) {
      if (feedAbort && feedAbort.signal.aborted) break;
      state.textContent = "reconnecting: " + err.message;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

function feedRow(c) {
  feedLast = c.id;
  const body = $("feed").tBodies[0];
  body.prepend(el("tr", {},
    el("td", { class: "num", text: String(c.id) }),
    el("td", { text: c.table }),
    el("td", { text: c.op }),
    el("td", { text: c.key !== undefined ? c.key : "base64:" + c.key_base64 }),
    el("td", { text: c.version ? c.version.source + " " + c.version.segment + ":" + c.version.offset : "" }),
    el("td", { text: fmtTime(c.commit_time) })));
  while (body.rows.length > FEED_ROWS) body.deleteRow(body.rows.length - 1);
}

function stopFeed() {
  if (feedAbort) feedAbort.abort();
  feedAbort = null;
  $("feed-toggle").textContent = "Start";
  $("feed-state").textContent = "stopped";
}

document.addEventListener("DOMContentLoaded", () => {
  initToken();
  $("browse").addEventListener("submit", (ev) => { ev.preventDefault(); browse(false); });
  $("rows-more").addEventListener("click", () => browse(true));
  $("feed-toggle").addEventListener("click", () => (feedAbort ? stopFeed() : startFeed()));
  window.addEventListener("resize", () => { if (lastStatus) renderSources(lastStatus); });
  poll();
});
