// pue-agent console. Hand-written, no build step, no third-party code, nothing fetched
// from outside this agent. The page holds no secret: the token typed at sign-in is sent
// once to /api/v1/console/login and exchanged for an HttpOnly session cookie.
"use strict";

const I18N = {
  en: {
    title: "Site energy console", skip: "Skip to content", language: "Language", logout: "Sign out",
    tab_ops: "Operations", tab_audit: "Audit", tab_verify: "Verify a bundle",
    login_title: "Sign in", token_label: "API token (ops or auditor)", login_button: "Sign in",
    login_hint: "The token is sent once and exchanged for a session cookie that scripts cannot read; this page stores no token.",
    login_bad: "Unknown token.", login_failed: "Sign-in failed",
    ops_title: "Operations", live_wait: "connecting…", live_on: "live, updated {t}", live_off: "live updates interrupted; retrying",
    rt_title: "Real-time PUE (power ratio)", rt_note: "E_DC power ÷ E_IT power at one moment; not an energy PUE.",
    e_dc_power: "Facility power (E_DC)", e_it_power: "IT power (E_IT)", meters_reporting: "Meters reporting", as_of: "As of",
    pue_title: "Energy PUE", pue_caption: "Energy PUE by period with category and data coverage",
    col_window: "Window", col_period: "Period", col_pue: "PUE", col_category: "Category", col_coverage: "Coverage", col_status: "Status",
    w_today: "Today", w_month: "This month (interim)", w_ttm: "TTM (annual)",
    roles_title: "Power by role", col_role: "Role", col_power: "Power",
    green_title: "Renewable energy", col_metric: "Metric", col_month: "This month", col_ttm: "TTM",
    ref_metered: "REF, metered", ref_documentary: "REF, documentary (certificates, contracts)", ref: "REF, total",
    hourly_green: "Hourly-matched green share",
    chart_title: "Last 24 hours: energy PUE and facility power", legend_pue: "Hourly energy PUE (left axis)",
    legend_power: "Mean facility power, kW (right axis)", chart_empty: "No hourly figures stored for the last 24 hours.",
    chart_desc: "Hourly energy PUE and mean facility power over the last 24 hours.",
    silent_title: "Silent or failing meters", col_meter: "Meter", col_device: "Device", col_state: "State", col_since: "Since",
    col_failures: "Failed polls", state_never: "never reported", state_silent: "silent",
    none_silent: "Every meter is reporting.",
    lag_title: "Journal and sinks", col_consumer: "Consumer", col_lag: "Behind", col_alarm: "Alarm",
    batches: "batches", lag_alarm: "lagging", lag_ok: "ok", no_alarms: "No alarms.", no_consumers: "No consumers.",
    audit_title: "Certified monthly reports", key_title: "Site signing key",
    key_fp: "SHA-256 fingerprint of the Ed25519 public key", key_none: "no signing key on this agent",
    no_reports: "No report bundles yet.", signed_at: "written", dl_zip: "Bundle (.zip, {size})", dl_pdf: "PDF ({lang})",
    findings: "Findings", col_policy: "Policy / rule", col_clause: "Clause", col_result: "Result", col_benefit: "Benefit",
    no_findings: "No findings in this bundle.", not_applicable_n: "{n} rules not applicable to this site",
    r_eligible: "eligible", r_not_eligible: "not eligible", r_insufficient_data: "insufficient data", r_not_applicable: "not applicable",
    verify_title: "Verify a report bundle", verify_note: "The server runs the checks of pue-agent verify on the uploaded .zip with this site's public key.",
    bundle_label: "Report bundle (.zip)", verify_button: "Verify", verifying: "Verifying…",
    uploaded_sha: "SHA-256 of the upload", checks_caption: "Checks and their results",
    col_check: "Check", col_outcome: "Result", col_detail: "Detail",
    valid: "Bundle VALID: every check passed", invalid: "Bundle INVALID: check “{check}” failed",
    o_ok: "ok", o_failed: "FAILED", o_skipped: "skipped", o_warning: "warning",
    times_in: "Times in {tz}", error: "Error: {e}", lang_zh: "Chinese", lang_en: "English",
    insufficient_data: "insufficient data", ok: "ok",
  },
  zh: {
    title: "站点能耗控制台", skip: "跳到正文", language: "语言", logout: "退出登录",
    tab_ops: "运行", tab_audit: "审计", tab_verify: "校验报告包",
    login_title: "登录", token_label: "API 令牌（运维或审计）", login_button: "登录",
    login_hint: "令牌只发送一次，换成脚本无法读取的会话 Cookie；本页面不保存令牌。",
    login_bad: "令牌无效。", login_failed: "登录失败",
    ops_title: "运行", live_wait: "连接中…", live_on: "实时，更新于 {t}", live_off: "实时更新中断，正在重试",
    rt_title: "实时 PUE（功率比）", rt_note: "某一时刻 E_DC 功率 ÷ E_IT 功率，不是能耗 PUE。",
    e_dc_power: "总功率（E_DC）", e_it_power: "IT 功率（E_IT）", meters_reporting: "上报中的电表", as_of: "时间",
    pue_title: "能耗 PUE", pue_caption: "各时段能耗 PUE、类别与数据覆盖率",
    col_window: "时段", col_period: "期间", col_pue: "PUE", col_category: "类别", col_coverage: "覆盖率", col_status: "状态",
    w_today: "今日", w_month: "本月（临时值）", w_ttm: "近十二个月（年度）",
    roles_title: "按角色的功率", col_role: "角色", col_power: "功率",
    green_title: "可再生能源", col_metric: "指标", col_month: "本月", col_ttm: "近十二个月",
    ref_metered: "REF（计量）", ref_documentary: "REF（凭证：绿证、合同）", ref: "REF（合计）",
    hourly_green: "逐时匹配绿电比例",
    chart_title: "最近 24 小时：能耗 PUE 与总功率", legend_pue: "逐时能耗 PUE（左轴）",
    legend_power: "平均总功率 kW（右轴）", chart_empty: "最近 24 小时没有已存储的逐时数据。",
    chart_desc: "最近 24 小时的逐时能耗 PUE 与平均总功率。",
    silent_title: "静默或故障的电表", col_meter: "电表", col_device: "设备", col_state: "状态", col_since: "起始时间",
    col_failures: "失败轮询", state_never: "从未上报", state_silent: "静默",
    none_silent: "所有电表都在上报。",
    lag_title: "日志与输出", col_consumer: "消费者", col_lag: "落后", col_alarm: "告警",
    batches: "批", lag_alarm: "滞后", lag_ok: "正常", no_alarms: "无告警。", no_consumers: "无消费者。",
    audit_title: "已签名的月度报告", key_title: "站点签名密钥",
    key_fp: "Ed25519 公钥的 SHA-256 指纹", key_none: "本代理没有签名密钥",
    no_reports: "还没有报告包。", signed_at: "生成于", dl_zip: "报告包（.zip，{size}）", dl_pdf: "PDF（{lang}）",
    findings: "合规结论", col_policy: "政策 / 条款编号", col_clause: "条款", col_result: "结论", col_benefit: "收益",
    no_findings: "该报告包没有合规结论。", not_applicable_n: "{n} 条规则不适用于本站点",
    r_eligible: "符合", r_not_eligible: "不符合", r_insufficient_data: "数据不足", r_not_applicable: "不适用",
    verify_title: "校验报告包", verify_note: "服务器用本站点的公钥对上传的 .zip 执行 pue-agent verify 的全部检查。",
    bundle_label: "报告包（.zip）", verify_button: "校验", verifying: "校验中…",
    uploaded_sha: "上传文件的 SHA-256", checks_caption: "各项检查及结果",
    col_check: "检查", col_outcome: "结果", col_detail: "详情",
    valid: "报告包有效：全部检查通过", invalid: "报告包无效：检查“{check}”未通过",
    o_ok: "通过", o_failed: "失败", o_skipped: "跳过", o_warning: "警告",
    times_in: "时间按 {tz} 显示", error: "错误：{e}", lang_zh: "中文", lang_en: "英文",
    insufficient_data: "数据不足", ok: "正常",
  },
};

const ROLE_NAMES = {
  en: { grid_import: "Grid import", onsite_renewable: "On-site renewable", it: "IT", cooling: "Cooling", ups_loss: "UPS loss", lighting: "Lighting", other: "Other", monitor: "Monitor" },
  zh: { grid_import: "电网输入", onsite_renewable: "现场可再生能源", it: "IT 设备", cooling: "制冷", ups_loss: "UPS 损耗", lighting: "照明", other: "其他", monitor: "监测" },
};

const state = { lang: "en", role: null, session: null, overview: null, live: null, audit: null, verify: null, source: null, liveAt: null, view: null, timer: null };

function t(key, args) {
  let text = (I18N[state.lang] || I18N.en)[key] ?? I18N.en[key] ?? key;
  for (const [k, v] of Object.entries(args || {})) text = text.replace(`{${k}}`, v);
  return text;
}

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

// -- formatting: numbers always with units, dates in the site's time zone --------------------

function fixed(value, digits) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  return new Intl.NumberFormat(state.lang === "zh" ? "zh-CN" : "en-GB", { minimumFractionDigits: digits, maximumFractionDigits: digits, useGrouping: true }).format(value);
}
function ratio(value) { return fixed(value, 4); }
function pct(value, digits = 1) { return value === null || value === undefined ? "—" : `${fixed(value * 100, digits)} %`; }
function kw(watts) { return watts === null || watts === undefined ? "—" : `${fixed(watts / 1000, 2)} kW`; }
function bytes(n) { return n >= 1048576 ? `${fixed(n / 1048576, 1)} MiB` : `${fixed(n / 1024, 0)} KiB`; }
function cny(value) { return value === null || value === undefined ? "—" : `${fixed(value, 0)} CNY`; }
function zone() { return state.session?.timezone || "UTC"; }
// ISO-like "2026-12-07 01:57:02" in the site's zone: unambiguous in both languages.
function when(iso) {
  if (!iso) return "—";
  const parts = {};
  const format = new Intl.DateTimeFormat("en-GB", { timeZone: zone(), year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  for (const part of format.formatToParts(new Date(iso))) parts[part.type] = part.value;
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second}`;
}
function hourLabel(iso) {
  return new Intl.DateTimeFormat("en-GB", { timeZone: zone(), hour: "2-digit", minute: "2-digit", hour12: false }).format(new Date(iso));
}
function roleName(role) { return (ROLE_NAMES[state.lang] || ROLE_NAMES.en)[role] || role; }

// -- HTTP ------------------------------------------------------------------------------------

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) { showLogin(); throw new Error("401"); }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function setStatus(message) { $("status").textContent = message || ""; }

// -- language --------------------------------------------------------------------------------

function pickLanguage() {
  const saved = localStorage.getItem("pue-console-lang");
  if (saved === "zh" || saved === "en") return saved;
  const wanted = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
  for (const tag of wanted) {
    const base = tag.toLowerCase().slice(0, 2);
    if (base === "zh" || base === "en") return base;
  }
  return "en";
}

function applyLanguage(lang) {
  state.lang = lang;
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  $("lang").value = lang;
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  document.title = `${t("title")} · pue-agent`;
  renderAll();
}

// -- views -----------------------------------------------------------------------------------

function allowedViews() { return state.role === "ops" ? ["ops", "audit", "verify"] : state.role === "auditor" ? ["audit", "verify"] : []; }

function showLogin() {
  state.role = null; state.session = null;
  stopLive();
  for (const id of ["view-ops", "view-audit", "view-verify"]) $(id).hidden = true;
  $("tabs").hidden = true; $("logout").hidden = true;
  $("site-name").textContent = ""; $("version").textContent = ""; $("tz").textContent = "";
  $("view-login").hidden = false;
}

function showView(view) {
  const views = allowedViews();
  if (!views.includes(view)) view = views[0];
  state.view = view;
  $("view-login").hidden = true;
  for (const name of ["ops", "audit", "verify"]) {
    $(`view-${name}`).hidden = name !== view;
    const tab = $(`tab-${name}`);
    tab.hidden = !views.includes(name);
    if (name === view) tab.setAttribute("aria-current", "page"); else tab.removeAttribute("aria-current");
  }
  if (location.hash !== `#${view}`) history.replaceState(null, "", `#${view}`);
  if (view === "ops") { loadOverview(); startLive(); } else { stopLive(); }
  if (view === "audit") loadAudit();
}

async function boot() {
  try {
    state.session = await api("/api/v1/console/session");
  } catch (error) {
    if (error.message !== "401") setStatus(t("error", { e: error.message }));
    return;
  }
  state.role = state.session.role;
  $("tabs").hidden = false; $("logout").hidden = false;
  renderSession();
  showView(location.hash.slice(1) || (state.role === "ops" ? "ops" : "audit"));
}

function renderSession() {
  const s = state.session;
  if (!s) return;
  const name = state.lang === "zh" && s.site_name_zh ? s.site_name_zh : s.site_name || s.site || "";
  $("site-name").textContent = s.site ? `${name} (${s.site})` : "";
  $("version").textContent = `pue-agent ${s.version}`;
  $("tz").textContent = `· ${t("times_in", { tz: zone() })}`;
}

// -- ops view --------------------------------------------------------------------------------

async function loadOverview() {
  try {
    state.overview = await api("/api/v1/console/overview");
    setStatus("");
  } catch (error) {
    if (error.message !== "401") setStatus(t("error", { e: error.message }));
  }
  renderOverview();
  clearTimeout(state.timer);
  // Stored KPIs change when the aggregator refreshes them (minutes); the live figures stream.
  if (state.view === "ops") state.timer = setTimeout(loadOverview, 60000);
}

function startLive() {
  if (state.source) return;
  const source = new EventSource("/api/v1/console/events");
  state.source = source;
  source.addEventListener("live", (event) => {
    state.live = JSON.parse(event.data);
    state.liveAt = state.live.sent_at;
    renderLive();
  });
  source.onerror = () => {
    const live = $("live");
    live.className = "live off"; live.textContent = t("live_off");
    // EventSource retries by itself; a lost session shows the login page instead.
    fetch("/api/v1/console/session", { credentials: "same-origin" }).then((r) => { if (r.status === 401) showLogin(); }).catch(() => {});
  };
}

function stopLive() {
  if (state.source) { state.source.close(); state.source = null; }
  clearTimeout(state.timer);
}

function fillBody(table, rows, emptyText, columns) {
  const body = $(table).tBodies[0];
  body.replaceChildren();
  if (!rows.length) {
    body.append(el("tr", {}, el("td", { colspan: String(columns) }, emptyText)));
    return;
  }
  for (const row of rows) body.append(row);
}

function renderOverview() {
  const ov = state.overview;
  if (!ov) return;
  const rows = [];
  for (const [key, label] of [["today", "w_today"], ["month", "w_month"], ["ttm", "w_ttm"]]) {
    const cell = ov[key]?.pue;
    const status = cell ? (cell.status === "ok" ? t("ok") : t(cell.status) || cell.status) : "—";
    rows.push(el("tr", { id: `pue-row-${key}` },
      el("th", { scope: "row" }, t(label)),
      el("td", { class: "nowrap" }, cell?.period ?? "—"),
      el("td", { class: "num", id: `pue-${key}` }, ratio(cell?.value)),
      el("td", { class: "num", id: `pue-${key}-category` }, cell?.category ?? "—"),
      el("td", { class: "num", id: `pue-${key}-coverage` }, pct(cell?.coverage)),
      el("td", { class: "nowrap narrow-hide" }, status)));
  }
  fillBody("pue-table", rows, "—", 6);
  const green = [];
  for (const metric of ["ref_metered", "ref_documentary", "ref", "hourly_matched_green_share"]) {
    const label = metric === "hourly_matched_green_share" ? t("hourly_green") : t(metric);
    green.push(el("tr", {},
      el("th", { scope: "row" }, label),
      el("td", { class: "num", id: `${metric}-month` }, pct(ov.month?.[metric]?.value, 2)),
      el("td", { class: "num", id: `${metric}-ttm` }, pct(ov.ttm?.[metric]?.value, 2))));
  }
  fillBody("green-table", green, "—", 3);
  renderChart(ov.hourly || []);
}

function renderLive() {
  const live = state.live;
  if (!live) return;
  const rt = live.realtime;
  $("pue-realtime").textContent = ratio(rt?.pue_realtime);
  $("e-dc-power").textContent = kw(rt?.e_dc_power_w);
  $("e-it-power").textContent = kw(rt?.e_it_power_w);
  $("meters-reporting").textContent = rt ? `${rt.meters_reporting} / ${rt.meters_total}` : "—";
  $("rt-as-of").textContent = when(rt?.as_of);
  const indicator = $("live");
  indicator.className = "live on";
  indicator.textContent = t("live_on", { t: when(state.liveAt) });
  fillBody("roles-table", Object.entries(rt?.power_by_role_w || {}).map(([role, watts]) =>
    el("tr", {}, el("th", { scope: "row" }, roleName(role)), el("td", { class: "num", id: `power-${role}` }, kw(watts)))), "—", 2);
  fillBody("silent-table", (live.silent_meters || []).map((m) =>
    el("tr", { class: "bad-row" },
      el("th", { scope: "row" }, m.meter), el("td", { class: "narrow-hide" }, m.device),
      el("td", { class: "bad nowrap" }, t(`state_${m.state}`)), el("td", { class: "nowrap" }, when(m.since)),
      el("td", { class: "num" }, fixed(m.failures, 0)))), t("none_silent"), 5);
  fillBody("lag-table", (live.lag || []).map((c) =>
    el("tr", {}, el("th", { scope: "row" }, c.consumer),
      el("td", { class: "num" }, `${fixed(c.batches, 0)} ${t("batches")}`),
      el("td", { class: c.alarm ? "bad" : "ok" }, c.alarm ? t("lag_alarm") : t("lag_ok")))), t("no_consumers"), 3);
  const alarms = $("alarms");
  alarms.replaceChildren();
  if (!(live.alarms || []).length) alarms.append(el("li", { class: "none" }, t("no_alarms")));
  for (const a of live.alarms || []) alarms.append(el("li", {}, `${a.alarm}: ${a.component} — ${a.reason}`));
}

function renderChart(points) {
  const box = $("chart");
  box.replaceChildren();
  const usable = points.filter((p) => p.pue !== null || p.e_dc_power_kw !== null);
  if (!usable.length) { box.append(el("p", { class: "note" }, t("chart_empty"))); return; }
  const NS = "http://www.w3.org/2000/svg";
  // Drawn at the box's own width, so text keeps its size on a phone and on a wide screen.
  const W = Math.max(300, Math.round(box.clientWidth || 720)), H = W < 560 ? 200 : 260;
  const L = 48, R = 62, T = 12, B = 28;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-labelledby", "chart-title chart-desc");
  const add = (parent, tag, attrs, text) => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    parent.append(node);
    return node;
  };
  add(svg, "title", { id: "chart-title" }, t("chart_title"));
  add(svg, "desc", { id: "chart-desc" }, t("chart_desc"));
  const end = Date.now(), start = end - 24 * 3600 * 1000;
  const x = (iso) => L + ((new Date(iso).getTime() + 1800000 - start) / (end - start)) * (W - L - R);
  const range = (values, pad) => {
    const v = values.filter((n) => n !== null && Number.isFinite(n));
    if (!v.length) return [0, 1];
    let lo = Math.min(...v), hi = Math.max(...v);
    if (hi - lo < pad) { lo -= pad / 2; hi += pad / 2; }
    return [lo, hi];
  };
  const [p0, p1] = range(usable.map((p) => p.pue), 0.1);
  const [w0, w1] = range(usable.map((p) => p.e_dc_power_kw), 1);
  const yP = (v) => T + (1 - (v - p0) / (p1 - p0)) * (H - T - B);
  const yW = (v) => T + (1 - (v - w0) / (w1 - w0)) * (H - T - B);
  add(svg, "line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B });
  add(svg, "line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B });
  add(svg, "line", { class: "axis", x1: W - R, y1: T, x2: W - R, y2: H - B });
  for (let i = 0; i <= 4; i++) {
    const f = i / 4;
    add(svg, "text", { x: L - 6, y: yP(p0 + f * (p1 - p0)) + 4, "text-anchor": "end" }, fixed(p0 + f * (p1 - p0), 3));
    add(svg, "text", { x: W - R + 6, y: yW(w0 + f * (w1 - w0)) + 4 }, `${fixed(w0 + f * (w1 - w0), 1)} kW`);
  }
  for (let h = 0; h <= 24; h += W < 560 ? 12 : 6) {
    const at = start + h * 3600000;
    const px = L + (h / 24) * (W - L - R);
    add(svg, "text", { x: px, y: H - 8, "text-anchor": "middle" }, hourLabel(new Date(at).toISOString()));
  }
  const line = (key, y, cls) => {
    const pts = usable.filter((p) => p[key] !== null).map((p) => `${x(p.start).toFixed(1)},${y(p[key]).toFixed(1)}`);
    if (pts.length) add(svg, "polyline", { class: cls, points: pts.join(" ") });
  };
  line("pue", yP, "l-pue");
  line("e_dc_power_kw", yW, "l-power");
  box.append(svg);
}

// -- auditor view ----------------------------------------------------------------------------

async function loadAudit() {
  try {
    state.audit = await api("/api/v1/console/audit");
    setStatus("");
  } catch (error) {
    if (error.message !== "401") setStatus(t("error", { e: error.message }));
  }
  renderAudit();
}

function renderAudit() {
  const audit = state.audit;
  if (!audit) return;
  $("key-fingerprint").textContent = audit.key_fingerprint || t("key_none");
  const box = $("months");
  box.replaceChildren();
  if (!audit.months.length) { box.append(el("p", { class: "card full" }, t("no_reports"))); return; }
  for (const m of audit.months) {
    const card = el("article", { class: "card full month", id: `month-${m.month}`, "aria-labelledby": `month-h-${m.month}` });
    card.append(el("h3", { id: `month-h-${m.month}` }, el("span", {}, m.month),
      el("span", { class: "note" }, m.signed_at ? `${t("signed_at")} ${when(m.signed_at)}` : m.error || "")));
    const links = el("ul", { class: "downloads" });
    if (m.size_bytes !== undefined) {
      links.append(el("li", {}, el("a", { href: `/api/v1/reports/${m.month}`, download: "", id: `zip-${m.month}` }, t("dl_zip", { size: bytes(m.size_bytes) }))));
    }
    for (const lang of m.pdf_langs || []) {
      links.append(el("li", {}, el("a", { href: `/api/v1/reports/${m.month}/pdf?lang=${lang}`, download: "", id: `pdf-${m.month}-${lang}`, hreflang: lang }, t("dl_pdf", { lang: t(`lang_${lang}`) }))));
    }
    card.append(links);
    card.append(el("h4", {}, t("findings")));
    // Findings that say something first (eligible, not eligible, insufficient data); the
    // rules that do not apply to this site are folded away below them.
    const order = { eligible: 0, not_eligible: 1, insufficient_data: 2, not_applicable: 3 };
    const findings = [...(m.findings || [])].sort((a, b) => (order[a.result] ?? 9) - (order[b.result] ?? 9));
    const relevant = findings.filter((f) => f.result !== "not_applicable");
    const idle = findings.filter((f) => f.result === "not_applicable");
    if (!findings.length) card.append(el("p", { class: "note" }, t("no_findings")));
    if (relevant.length) card.append(findingsTable(m.month, relevant));
    if (idle.length) {
      const fold = el("details", {}, el("summary", {}, t("not_applicable_n", { n: idle.length })));
      fold.append(findingsTable(m.month, idle));
      card.append(fold);
    }
    box.append(card);
  }
}

function findingsTable(month, findings) {
  const table = el("table", { class: "findings" },
    el("caption", { class: "sr" }, `${t("findings")} ${month}`),
    el("thead", {}, el("tr", {},
      el("th", { scope: "col" }, t("col_policy")), el("th", { scope: "col" }, t("col_clause")),
      el("th", { scope: "col" }, t("col_result")), el("th", { scope: "col", class: "num" }, t("col_benefit")))));
  const body = el("tbody");
  for (const f of findings) {
    body.append(el("tr", { "data-rule": f.rule_id, "data-result": f.result },
      el("td", {}, `${f.document || f.policy_id}`, el("br"), el("small", {}, f.rule_id)),
      el("td", { class: "clause" }, f.clause || "—"),
      el("td", { class: `nowrap ${f.result === "eligible" ? "ok" : f.result === "not_eligible" ? "bad" : ""}` }, t(`r_${f.result}`)),
      el("td", { class: "num" }, cny(f.benefit_cny))));
  }
  table.append(body);
  return el("div", { class: "scroll" }, table);
}

// -- verification ----------------------------------------------------------------------------

async function submitVerify(event) {
  event.preventDefault();
  const file = $("bundle").files[0];
  if (!file) return;
  $("verify-submit").disabled = true;
  setStatus(t("verifying"));
  try {
    state.verify = await api("/api/v1/console/verify", { method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: file });
    setStatus("");
  } catch (error) {
    if (error.message !== "401") setStatus(t("error", { e: error.message }));
  } finally {
    $("verify-submit").disabled = false;
  }
  renderVerify();
}

function renderVerify() {
  const v = state.verify;
  if (!v) return;
  $("verify-result").hidden = false;
  const verdict = $("verdict");
  verdict.textContent = v.ok ? t("valid") : t("invalid", { check: v.failed_check });
  verdict.className = v.ok ? "ok" : "failed";
  $("verify-sha").textContent = v.sha256 || "";
  fillBody("checks-table", v.checks.map((c) =>
    el("tr", { "data-check": c.name, "data-outcome": c.outcome },
      el("th", { scope: "row" }, c.name), el("td", { class: `nowrap ${c.outcome}` }, t(`o_${c.outcome}`)), el("td", { class: "detail" }, c.detail))), "—", 3);
}

function renderAll() {
  renderSession(); renderOverview(); renderLive(); renderAudit(); renderVerify();
}

// -- wiring ----------------------------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  const token = $("token").value.trim();
  let response;
  try {
    response = await fetch("/api/v1/console/login", { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }) });
  } catch (error) {
    $("login-error").textContent = `${t("login_failed")}: ${error.message}`;
    return;
  }
  // The field is cleared either way: the token lives on only as the server's session.
  $("token").value = "";
  if (!response.ok) { $("login-error").textContent = response.status === 401 ? t("login_bad") : `${t("login_failed")} (HTTP ${response.status})`; return; }
  await boot();
}

async function logout() {
  await fetch("/api/v1/console/logout", { method: "POST", credentials: "same-origin" }).catch(() => {});
  state.overview = state.live = state.audit = state.verify = null;
  $("verify-result").hidden = true;
  showLogin();
}

document.addEventListener("DOMContentLoaded", () => {
  $("lang").addEventListener("change", (e) => { localStorage.setItem("pue-console-lang", e.target.value); applyLanguage(e.target.value); });
  $("login-form").addEventListener("submit", login);
  $("verify-form").addEventListener("submit", submitVerify);
  $("logout").addEventListener("click", logout);
  for (const tab of document.querySelectorAll("nav button")) tab.addEventListener("click", () => showView(tab.dataset.view));
  let resizing = null;
  window.addEventListener("resize", () => { clearTimeout(resizing); resizing = setTimeout(() => renderChart(state.overview?.hourly || []), 150); });
  window.addEventListener("hashchange", () => { if (state.role) showView(location.hash.slice(1)); });
  applyLanguage(pickLanguage());
  boot();
});
