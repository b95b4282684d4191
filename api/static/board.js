// The live board: one snapshot from /v1/board/summary, then server-sent events from /v1/live.
// The token comes from the URL fragment (#token=...; a fragment never reaches server logs) or the
// login form, and is kept in sessionStorage for this tab only. EventSource cannot send headers, so
// the stream gets it as ?access_token=.
"use strict";

const state = { token: null, counts: [0, 0, 0, 0, 0], trend: new Map(), units: new Map(), red: [], overdue: [],
                colours: { red: 0, yellow: 0, blue: 0 }, minSample: 1, charts: {}, source: null, resyncTimer: null, dirty: false };

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
  state.minSample = s.min_sample; state.colours = s.colours; state.red = s.red_tickets; state.overdue = s.overdue;
  $("scope").textContent = s.scope ? "单位：" + s.scope : "全部单位";
  state.dirty = true;
}

function scheduleResync(ms) {
  clearTimeout(state.resyncTimer);
  state.resyncTimer = setTimeout(() => resync().catch(console.error), ms);
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

function onSatisfaction(data) {
  for (const row of data.rows) {
    for (let i = 0; i < 5; i++) state.counts[i] += row.counts[i];
    const key = minuteKey(row.minute);
    const m = state.trend.get(key) || [0, 0, 0, 0, 0];
    for (let i = 0; i < 5; i++) m[i] += row.counts[i];
    state.trend.set(key, m);
    const u = state.units.get(row.unit_code) || { name: row.unit_code, counts: [0, 0, 0, 0, 0] };
    for (let i = 0; i < 5; i++) u.counts[i] += row.counts[i];
    state.units.set(row.unit_code, u);
  }
  state.dirty = true;
}

function connect() {
  state.source?.close();
  const es = new EventSource("/v1/live?access_token=" + encodeURIComponent(state.token));
  state.source = es;
  es.addEventListener("ready", () => { $("status").textContent = "实时"; $("status").className = "status live"; });
  es.addEventListener("satisfaction", (e) => onSatisfaction(JSON.parse(e.data)));
  es.addEventListener("red_ticket", (e) => {
    const t = JSON.parse(e.data);
    if (!state.red.some((x) => x.ticket_id === t.ticket_id)) { t.fresh = true; state.red.unshift(t); state.red.length = Math.min(state.red.length, 10); }
    if (t.event === "opened") state.colours.red = (state.colours.red || 0) + 1;
    state.dirty = true;
  });
  es.addEventListener("overdue", (e) => {
    const t = JSON.parse(e.data);
    state.overdue = [Object.assign(t, { fresh: true }), ...state.overdue.filter((x) => x.ticket_id !== t.ticket_id)];
    state.dirty = true;
  });
  // Any other change of a ticket may move the colour counts: the ledger's state in ClickHouse decides.
  es.addEventListener("ticket", () => scheduleResync(3000));
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
