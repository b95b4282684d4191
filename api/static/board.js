// The live board: figures from /v1/board/summary (what ClickHouse holds), re-read when the
// server-sent events of /v1/live say something changed. The figures are never added up here: the
// stream's ticks and the sink's rows have different lag, and adding one to the other would drift.
// The token comes from the URL fragment (#token=...; a fragment never reaches server logs) or the
// login form, and is kept in sessionStorage for this tab only. EventSource cannot send headers, so
// the stream gets it as ?access_token=.
"use strict";

const state = { token: null, counts: [0, 0, 0, 0, 0], trend: new Map(), units: new Map(), red: [], overdue: [],
                colours: { red: 0, yellow: 0, blue: 0 }, minSample: 1, charts: {}, source: null, resyncTimer: null, dirty: false,
                refreshing: false, again: false, lastRefresh: 0, trailingUntil: 0 };

const SCORES = [0, 3, 6, 8, 10];
const COLOUR_NAMES = { red: "红", yellow: "黄", blue: "蓝" };
const $ = (id) => document.getElementById(id);

function pct(x) { return x == null ? "--" : (x * 100).toFixed(2) + "%"; }
function figures(c) {
  const total = c.reduce((a, b) => a + b, 0);
  if (!total) return { total: 0, rate: null, bad: null, score: null };
  return { total, rate: (c[2] + c[3] + c[4]) / total, bad: (c[0] + c[1]) / total,
           score: c.reduce((a, n, i) => a + n * SCORES[i], 0) / total };
}
function countsOf(obj) { return [1, 2, 3, 4, 5].map((s) => obj.counts[String(s)] || 0); }
function hhmm(iso) { const d = new Date(iso); return d.toLocaleTimeString("zh-CN", { hour: "2-digit", minute: "2-digit", timeZone: "Asia/Shanghai" }); }
function minuteKey(iso) { return new Date(iso).toISOString().slice(0, 16); }

async function api(path) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + state.token } });
  if (r.status === 401) { sessionStorage.removeItem("haochaping-token"); showLogin("令牌无效或已过期，请重新输入。"); throw new Error("401"); }
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

function showLogin(message) {
  $("board").hidden = true; $("login").hidden = false; $("login-error").textContent = message || "";
}

async function resync() {
  const s = await api("/v1/board/summary");
  state.counts = countsOf(s.today);
  state.trend = new Map(s.trend.map((p) => [minuteKey(p.at), countsOf(p)]));
  state.units = new Map(s.ranking.map((r) => [r.key, { name: r.name || r.key, counts: countsOf(r) }]));
  state.minSample = s.min_sample; state.colours = s.colours;
  state.red = withFresh(s.red_tickets, state.red, 10); state.overdue = withFresh(s.overdue, state.overdue, 20);
  $("scope").textContent = s.scope ? "单位：" + s.scope : "全部单位";
  state.dirty = true;
}

// Tickets announced live stay on their list until the snapshot holds them (the sink writes a moment later).
function withFresh(snapshot, shown, limit) {
  const known = new Set(snapshot.map((t) => t.ticket_id));
  const fresh = shown.filter((t) => t.fresh && Date.now() - t.seenAt < 30000 && !known.has(t.ticket_id));
  return [...fresh, ...snapshot].slice(0, limit);
}

// Something changed: re-read at most once a second, and once more 2.5 s after the last change so that
// what the sink writes a moment after the stream announced it shows too.
function refreshSoon() {
  state.trailingUntil = Date.now() + 2500;
  if (state.refreshing) { state.again = true; return; }
  clearTimeout(state.resyncTimer);
  state.resyncTimer = setTimeout(refresh, Math.max(0, state.lastRefresh + 1000 - Date.now()));
}

async function refresh() {
  state.refreshing = true; state.lastRefresh = Date.now();
  try { await resync(); } catch (e) { console.error(e); }
  state.refreshing = false;
  const wait = state.again ? 1000 : state.trailingUntil - Date.now();
  state.again = false;
  if (wait > 0) { clearTimeout(state.resyncTimer); state.resyncTimer = setTimeout(refresh, Math.max(wait, 1000)); }
}

function render() {
  if (!state.dirty) return;
  state.dirty = false;
  const f = figures(state.counts);
  $("kpi-rate").textContent = pct(f.rate);
  $("kpi-bad").textContent = pct(f.bad);
  $("kpi-total").textContent = f.total.toLocaleString("zh-CN");
  $("kpi-score").textContent = f.score == null ? "--" : f.score.toFixed(2);
  for (const c of ["red", "yellow", "blue"]) $("count-" + c).textContent = state.colours[c] ?? 0;

  const minutes = [...state.trend.keys()].sort();
  state.charts.trend?.setOption({
    xAxis: { data: minutes.map((m) => hhmm(m + ":00Z")) },
    series: [{ showSymbol: minutes.length < 3, data: minutes.map((m) => { const r = figures(state.trend.get(m)).rate; return r == null ? null : +(r * 100).toFixed(2); }) }],
  });
  const ranked = [...state.units.values()].map((u) => ({ name: u.name, ...figures(u.counts) }))
    .filter((u) => u.total >= state.minSample).sort((a, b) => a.rate - b.rate).slice(-15);
  state.charts.ranking?.setOption({
    yAxis: { data: ranked.map((u) => u.name) },
    series: [{ data: ranked.map((u) => +(u.rate * 100).toFixed(2)) }],
  });
  renderTickets($("red-list"), state.red);
  renderTickets($("overdue-list"), state.overdue);
}

function renderTickets(ul, items) {
  ul.replaceChildren(...items.slice(0, 10).map((t) => {
    const li = document.createElement("li");
    li.dataset.ticketId = t.ticket_id;
    if (t.fresh) li.className = "fresh";
    const dot = document.createElement("span"); dot.className = "dot " + t.colour; dot.title = COLOUR_NAMES[t.colour] || t.colour;
    const body = document.createElement("div");
    const unit = document.createElement("div"); unit.className = "unit"; unit.textContent = t.unit_name || t.unit_code;
    const text = document.createElement("div"); text.className = "text"; text.textContent = t.text || t.ticket_id;
    body.append(unit, text);
    const time = document.createElement("span"); time.className = "time"; time.textContent = hhmm(t.opened_at);
    li.append(dot, body, time);
    return li;
  }));
  for (const t of items) delete t.fresh;
}

function connect() {
  state.source?.close();
  const es = new EventSource("/v1/live?access_token=" + encodeURIComponent(state.token));
  state.source = es;
  es.addEventListener("ready", () => { $("status").textContent = "实时"; $("status").className = "status live"; });
  es.addEventListener("satisfaction", refreshSoon);
  es.addEventListener("red_ticket", (e) => {
    const t = JSON.parse(e.data);
    if (!state.red.some((x) => x.ticket_id === t.ticket_id)) { Object.assign(t, { fresh: true, seenAt: Date.now() }); state.red.unshift(t); state.red.length = Math.min(state.red.length, 10); }
    state.dirty = true; refreshSoon();
  });
  es.addEventListener("overdue", (e) => {
    const t = JSON.parse(e.data);
    state.overdue = [Object.assign(t, { fresh: true, seenAt: Date.now() }), ...state.overdue.filter((x) => x.ticket_id !== t.ticket_id)];
    state.dirty = true; refreshSoon();
  });
  // Any other change of a ticket may move the colour counts: the ledger's state in ClickHouse decides.
  es.addEventListener("ticket", refreshSoon);
  es.onerror = () => { $("status").textContent = "重连中…"; $("status").className = "status down"; };
}

function initCharts() {
  if (!window.echarts) return;
  const axis = { axisLine: { lineStyle: { color: "#8aa4c2" } }, splitLine: { lineStyle: { color: "#1e3a5f" } } };
  state.charts.trend = echarts.init($("trend"), null, { renderer: "canvas" });
  state.charts.trend.setOption({
    animation: false, grid: { left: 50, right: 20, top: 20, bottom: 30 }, tooltip: { trigger: "axis" },
    xAxis: { type: "category", data: [], ...axis }, yAxis: { type: "value", min: (v) => Math.max(0, Math.floor(v.min - 2)), max: 100, ...axis },
    series: [{ type: "line", data: [], showSymbol: false, smooth: false, lineStyle: { color: "#30c48d", width: 3 }, areaStyle: { color: "rgba(48,196,141,0.15)" } }],
  });
  state.charts.ranking = echarts.init($("ranking"), null, { renderer: "canvas" });
  state.charts.ranking.setOption({
    animation: false, grid: { left: 160, right: 50, top: 10, bottom: 20 }, tooltip: {},
    xAxis: { type: "value", max: 100, ...axis }, yAxis: { type: "category", data: [], axisLabel: { color: "#e6eef8", width: 150, overflow: "truncate" } },
    series: [{ type: "bar", data: [], itemStyle: { color: "#3b82f6" }, label: { show: true, position: "right", color: "#e6eef8", formatter: "{c}%" } }],
  });
  addEventListener("resize", () => { state.charts.trend.resize(); state.charts.ranking.resize(); });
}

async function start(token) {
  state.token = token;
  try { await resync(); } catch (e) { if (e.message !== "401") { $("status").textContent = "数据暂不可用"; $("status").className = "status down"; } return; }
  sessionStorage.setItem("haochaping-token", token);
  $("login").hidden = true; $("board").hidden = false;
  initCharts();
  state.dirty = true; render();
  connect();
  setInterval(render, 1000);  // one redraw a second at most: light on a modest PC
  setInterval(() => resync().catch(console.error), 60000);
}

addEventListener("DOMContentLoaded", () => {
  setInterval(() => { $("clock").textContent = new Date().toLocaleString("zh-CN", { timeZone: "Asia/Shanghai", hour12: false }); }, 1000);
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) history.replaceState(null, "", location.pathname);  // keep the token out of the visible URL
  const token = fromHash || sessionStorage.getItem("haochaping-token");
  $("login").addEventListener("submit", (e) => { e.preventDefault(); start($("token-input").value.trim()); });
  if (token) start(token); else showLogin();
});
