// calmline supervisor console. Hand-written, no build step, no dependencies:
// everything the page needs is embedded in the calmline binary.
"use strict";
(function () {
  const I18N = window.CALMLINE_I18N;
  const $ = (id) => document.getElementById(id);
  const PRESSURE = 70; // a score at or above it counts as "under pressure" on the wall
  let lang = pickLang();
  let session = null;
  let es = null; // EventSource of the wall
  const calls = new Map(); // call id → {info, hist: [[s, cp, as]], alert}
  let historyS = 300;
  let gateways = [];
  let renderQueued = false;
  const perf = { batches: 0, scriptMs: 0, renders: 0 }; // read by the benchmark

  function pickLang() {
    const saved = localStorage.getItem("calmline.lang");
    if (saved === "en" || saved === "ja") return saved;
    for (const l of navigator.languages || [navigator.language || "en"]) {
      if (l.toLowerCase().startsWith("ja")) return "ja";
      if (l.toLowerCase().startsWith("en")) return "en";
    }
    return "en";
  }
  function t(key, vars) {
    let s = (I18N[lang] && I18N[lang][key]) || I18N.en[key] || key;
    if (vars) for (const k in vars) s = s.replace("{" + k + "}", vars[k]);
    return s;
  }
  function setLang(l) {
    lang = l;
    localStorage.setItem("calmline.lang", l);
    document.documentElement.lang = l;
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    $("lang-top").value = l; $("lang-login").value = l;
    renderGateways();
    route();
  }
  const fmtTime = () => new Intl.DateTimeFormat(lang, { dateStyle: "short", timeStyle: "medium" });
  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? "" : fmtTime().format(d);
  }
  function dur(s) {
    s = Math.max(0, Math.floor(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), x = s % 60;
    return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(x).padStart(2, "0");
  }
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === "class") e.className = attrs[k];
      else if (k === "text") e.textContent = attrs[k];
      else if (k === "style") e.style.cssText = attrs[k]; // CSSOM: allowed by the CSP, unlike a style attribute
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), attrs[k]);
      else e.setAttribute(k, attrs[k]);
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  }
  const SHAPES = { firing: "▲", open: "▲", dead: "✖", failed: "✖", cleared: "▽", acknowledged: "●", pending: "○", delivering: "◔",
    in_flight: "◔", succeeded: "✔", resolved: "✔", skipped: "–", none: "·", ok: "✔", retrying: "↻" };
  function badge(state, label) {
    return el("span", { class: "badge " + state, "data-state": state }, el("span", { "aria-hidden": "true", text: SHAPES[state] || "•" }), label);
  }
  async function api(method, path, body) {
    const opt = { method, headers: {}, credentials: "same-origin" };
    if (body !== undefined) {
      opt.headers["Content-Type"] = "application/json";
      opt.body = JSON.stringify(body);
    }
    if (method !== "GET" && session) opt.headers["X-CSRF-Token"] = session.csrf;
    const r = await fetch(path, opt);
    let j = null;
    try { j = await r.json(); } catch (e) { j = null; }
    if (r.status === 401 && path !== "/api/login") { signedOut(); }
    if (!r.ok) { const err = new Error((j && j.error && j.error.message) || r.statusText); err.status = r.status; throw err; }
    return j;
  }

  // ---- sign-in ----
  function show(view) {
    for (const v of ["login", "wall", "escalations", "call", "care"]) $("view-" + v).hidden = v !== view;
    for (const v of ["wall", "escalations", "care"]) {
      const a = $("nav-" + v);
      if (v === view) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
  }
  function signedOut() {
    session = null;
    if (es) { es.close(); es = null; }
    calls.clear();
    $("top").hidden = true;
    show("login");
    $("key").focus();
  }
  function signedIn(s) {
    session = s;
    $("top").hidden = false;
    $("nav-escalations").hidden = !s.escalations;
    $("nav-care").hidden = !s.care;
    $("who").textContent = s.tenant_name + " · " + (s.agent_id ? t("role.agent") + " " + s.agent_id : s.role || "supervisor");
    document.body.classList.toggle("no-as", !s.agent_scores);
    for (const c of document.querySelectorAll(".as-col")) c.hidden = !s.agent_scores;
    connectWall();
    if (!location.hash || location.hash === "#/login") location.hash = "#/wall"; else route();
  }
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    try {
      const s = await api("POST", "/api/login", { key: $("key").value.trim() });
      $("key").value = "";
      signedIn(s);
    } catch (e) {
      $("login-error").textContent = e.status === 401 ? t("login.refused") : t("login.failed") + ": " + e.message;
    }
  });
  $("logout").addEventListener("click", async () => {
    try { await api("POST", "/api/logout"); } catch (e) { /* signed out either way */ }
    location.hash = "#/login";
    signedOut();
  });
  $("lang-top").addEventListener("change", (e) => setLang(e.target.value));
  $("lang-login").addEventListener("change", (e) => setLang(e.target.value));

  // ---- the wall ----
  function connectWall() {
    if (es) es.close();
    es = new EventSource("/api/live");
    es.onmessage = (m) => {
      const t0 = performance.now();
      const msg = JSON.parse(m.data);
      if (msg.t === "snap") {
        calls.clear();
        historyS = msg.history_s || historyS;
        for (const c of msg.calls) calls.set(c.id, { info: c, hist: c.h || [], alert: c.alert || "" });
        gateways = msg.gw || [];
      } else {
        for (const e of msg.ev || []) applyEvent(e);
        if (msg.gw) gateways = msg.gw;
      }
      perf.batches++;
      perf.scriptMs += performance.now() - t0;
      queueRender();
    };
    es.onerror = () => { if (!session) es.close(); };
  }
  function applyEvent(e) {
    switch (e.k) {
      case "start": calls.set(e.id, { info: e, hist: e.h || [], alert: e.alert || "" }); break;
      case "s": {
        const c = calls.get(e.id);
        if (!c) break;
        c.hist.push(e.p);
        if (c.hist.length > historyS) c.hist.splice(0, c.hist.length - historyS);
        break;
      }
      case "a": { const c = calls.get(e.id); if (c) c.alert = e.state; break; }
      case "end": calls.delete(e.id); break;
    }
  }
  function last(c, i) {
    for (let k = c.hist.length - 1; k >= 0 && k >= c.hist.length - 3; k--) if (c.hist[k][i] != null) return c.hist[k][i];
    return null;
  }
  // Rendering is batched to one frame at most every RENDER_MS: scores come
  // once a second per call, so the wall stays within a second of the feed
  // while hundreds of calls cost a few renders a second, not hundreds.
  const RENDER_MS = 500;
  let lastRender = 0;
  function queueRender() {
    if (renderQueued) return;
    renderQueued = true;
    const wait = Math.max(0, lastRender + RENDER_MS - performance.now());
    setTimeout(() => requestAnimationFrame(() => {
      renderQueued = false;
      lastRender = performance.now();
      const t0 = performance.now();
      renderGateways();
      if (!$("view-wall").hidden) renderWall();
      perf.scriptMs += performance.now() - t0;
      perf.renders++;
    }), wait);
  }
  function renderGateways() {
    const up = gateways.filter((g) => g.up).length;
    const g = $("gateways");
    g.textContent = t("gw.status", { up, n: gateways.length }) + (up < gateways.length ? " ▲ " + t("gw.down") : "");
  }
  const rows = new Map(); // call id → row elements
  function sparkPoints(hist, idx) {
    // The last few minutes: the window grows with the call from one minute
    // up to the history the console keeps.
    const w = 120, h = 28;
    const lastS = hist.length ? hist[hist.length - 1][0] : 0;
    const n = Math.min(Math.max(historyS, 1), Math.max(60, hist.length ? lastS - hist[0][0] : 0));
    let pts = "";
    for (const p of hist) {
      if (p[idx] == null) continue;
      const x = w - ((lastS - p[0]) / n) * w, y = h - (p[idx] / 100) * h;
      pts += x.toFixed(1) + "," + y.toFixed(1) + " ";
    }
    return pts;
  }
  function scoreParts(td) {
    const num = el("span", { class: "num" }), fill = el("i"), bar = el("span", { class: "bar" }, fill), sr = el("span", { class: "sr" });
    td.append(num, bar, sr);
    return { td, num, bar, fill, sr, v: undefined };
  }
  function makeRow(id) {
    const svgNS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("viewBox", "0 0 120 28"); svg.setAttribute("width", "120"); svg.setAttribute("height", "28");
    svg.setAttribute("role", "img");
    const line = document.createElementNS(svgNS, "line");
    line.setAttribute("x1", 0); line.setAttribute("x2", 120); line.setAttribute("y1", 28 - PRESSURE * 0.28); line.setAttribute("y2", 28 - PRESSURE * 0.28);
    line.setAttribute("stroke", "#9aa5b1"); line.setAttribute("stroke-dasharray", "2 2");
    const cp = document.createElementNS(svgNS, "polyline");
    cp.setAttribute("fill", "none"); cp.setAttribute("stroke", "#b3261e"); cp.setAttribute("stroke-width", "1.5");
    const as = document.createElementNS(svgNS, "polyline");
    as.setAttribute("fill", "none"); as.setAttribute("stroke", "#0b57d0"); as.setAttribute("stroke-width", "1.2"); as.setAttribute("stroke-dasharray", "3 2");
    svg.append(line, cp, as);
    const r = {
      tr: el("tr", { class: "call", tabindex: "0", "data-call-id": id }),
      alert: el("td"), agent: el("td"), call: el("td", { text: id }), dur: el("td", { class: "num" }), proto: el("td"),
      cp: el("td", { class: "cp" }), as: el("td", { class: "as-col" }), spark: el("td"), svg, cpLine: cp, asLine: as,
      last: {},
    };
    r.tr.append(r.alert, r.agent, r.call, r.dur, r.proto, r.cp, r.as, r.spark);
    r.spark.append(svg);
    r.cpParts = scoreParts(r.cp);
    r.asParts = scoreParts(r.as);
    const open = () => { location.hash = "#/call/" + encodeURIComponent(id); };
    r.tr.addEventListener("click", open);
    r.tr.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } });
    return r;
  }
  // set changes the DOM only when a value changed: with hundreds of rows
  // updated several times a second, untouched nodes cost nothing.
  function set(r, k, v, apply) { if (r.last[k] !== v) { r.last[k] = v; apply(v); } }
  function scoreCell(p, v, hot) {
    const x = v == null ? null : Math.round(v);
    if (p.v === x && p.hot === hot) return;
    p.v = x; p.hot = hot;
    p.td.dataset.v = x == null ? "" : x;
    p.num.textContent = x == null ? "—" : x;
    p.sr.textContent = x == null ? t("score.abstained") : "";
    p.bar.hidden = x == null;
    p.bar.className = "bar" + (hot ? " hot" : "");
    if (x != null) p.fill.style.width = x + "%";
  }
  function renderWall() {
    const fa = $("f-agent").value.trim().toLowerCase();
    const min = Number($("f-min").value) || 0;
    const sort = $("f-sort").value;
    const now = Date.now();
    const showAS = !!(session && session.agent_scores);
    const list = [];
    for (const [id, c] of calls) {
      const cp = last(c, 1), as = showAS ? last(c, 2) : null;
      const top = Math.max(cp == null ? 0 : cp, as == null ? 0 : as);
      if (fa && !String(c.info.agent).toLowerCase().includes(fa)) continue;
      if (min > 0 && top < min) continue;
      const started = Date.parse(c.info.started_at);
      list.push({ id, c, cp, as, top, hot: c.alert === "firing" || top >= PRESSURE, age: isNaN(started) ? 0 : (now - started) / 1000 });
    }
    list.sort((a, b) => {
      // Calls whose alert fires come first, then the others under pressure.
      const fa = a.c.alert === "firing", fb = b.c.alert === "firing";
      if (fa !== fb) return fa ? -1 : 1;
      if (a.hot !== b.hot) return a.hot ? -1 : 1;
      if (sort === "duration") return b.age - a.age || (a.id < b.id ? -1 : 1);
      if (sort === "agent") return String(a.c.info.agent).localeCompare(String(b.c.info.agent)) || (a.id < b.id ? -1 : 1);
      return b.top - a.top || (a.id < b.id ? -1 : 1);
    });
    // Only the rows in and near the viewport are in the document; spacer
    // rows stand for the others. With hundreds of calls the browser then
    // styles and lays out a few dozen rows per render, not hundreds.
    const body = $("wall-body");
    const topPad = $("wall-pad-top"), botPad = $("wall-pad-bottom");
    if (bodyTop == null) bodyTop = body.getBoundingClientRect().top + window.scrollY; // measured once, again after a resize
    const first = Math.max(0, Math.floor((window.scrollY - bodyTop) / rowH) - 10);
    const end = Math.min(list.length, first + Math.ceil(window.innerHeight / rowH) + 20);
    const seen = new Set();
    let prev = topPad, hot = 0;
    for (const x of list) if (x.hot) hot++;
    for (let i = first; i < end; i++) {
      const x = list[i];
      seen.add(x.id);
      let r = rows.get(x.id);
      if (!r) { r = makeRow(x.id); rows.set(x.id, r); r.as.hidden = !showAS; }
      const st = x.c.alert === "firing" ? "firing" : x.c.alert === "cleared" ? "cleared" : x.top >= PRESSURE ? "firing" : "none";
      const label = x.c.alert === "firing" ? t("alert.firing") : x.c.alert === "cleared" ? t("alert.cleared") : x.top >= PRESSURE ? t("alert.pressure") : t("alert.none");
      set(r, "alert", st + "|" + label, () => { r.alert.textContent = ""; r.alert.append(badge(st, label)); });
      set(r, "hot", x.hot, (h) => { r.tr.classList.toggle("pressure", h); r.tr.dataset.hot = h ? "1" : "0"; });
      set(r, "agent", x.c.info.agent, (v) => { r.agent.textContent = v; });
      set(r, "dur", dur(x.age), (v) => { r.dur.textContent = v; });
      set(r, "proto", x.c.info.protocol, (v) => { r.proto.textContent = v; });
      scoreCell(r.cpParts, x.cp, x.cp != null && x.cp >= PRESSURE);
      if (showAS) scoreCell(r.asParts, x.as, x.as != null && x.as >= PRESSURE);
      const h = x.c.hist, lastS = h.length ? h[h.length - 1][0] : -1;
      set(r, "spark", lastS + ":" + h.length, () => {
        r.cpLine.setAttribute("points", sparkPoints(h, 1));
        if (showAS) r.asLine.setAttribute("points", sparkPoints(h, 2));
        r.svg.setAttribute("aria-label", t("col.cp") + " " + (x.cp == null ? t("score.abstained") : Math.round(x.cp)));
      });
      // Move a row only when it is out of place.
      if (prev.nextSibling !== r.tr) body.insertBefore(r.tr, prev.nextSibling);
      prev = r.tr;
    }
    for (const [id, r] of rows) if (!seen.has(id)) { if (r.tr.parentNode) r.tr.remove(); if (!calls.has(id)) rows.delete(id); }
    if (prev.nextSibling !== botPad) body.insertBefore(botPad, prev.nextSibling);
    const tp = first * rowH + "px", bp = (list.length - end) * rowH + "px";
    if (topPad.style.height !== tp) topPad.style.height = tp;
    if (botPad.style.height !== bp) botPad.style.height = bp;
    if (!rowMeasured && end > first) {
      const hgt = rows.get(list[first].id).tr.offsetHeight; // once: rows have a fixed height
      if (hgt > 0) { rowMeasured = true; if (hgt !== rowH) { rowH = hgt; queueRender(); } }
    }
    $("wall-empty").hidden = list.length > 0;
    const count = t("wall.count", { n: list.length, p: hot });
    if ($("wall-count").textContent !== count) { $("wall-count").textContent = count; $("wall-count").dataset.n = list.length; }
  }
  let rowH = 37, rowMeasured = false, bodyTop = null;
  window.addEventListener("scroll", () => { if (!$("view-wall").hidden) queueRender(); }, { passive: true });
  window.addEventListener("resize", () => { bodyTop = null; rowMeasured = false; if (!$("view-wall").hidden) queueRender(); });
  for (const id of ["f-agent", "f-min", "f-sort"]) $(id).addEventListener("input", queueRender);
  setInterval(() => { if (session && !$("view-wall").hidden) queueRender(); }, 1000); // durations tick

  // ---- escalations ----
  // The queue refreshes itself every ESC_REFRESH_MS while it is shown. A
  // card is rebuilt only when its escalation changed, so a name being
  // typed or an open audit trail survives the refresh; a new open
  // escalation is announced to screen readers too.
  const ESC_REFRESH_MS = 3000;
  const escCards = new Map(); // id → {sig, node}
  let escTimer = null, escLang = "", escLoaded = false;
  async function renderEscalations() {
    clearTimeout(escTimer);
    const box = $("esc-list");
    let j;
    try { j = await api("GET", "/api/escalations"); $("esc-error").textContent = ""; }
    catch (e) { $("esc-error").textContent = e.message; j = null; }
    if (j) {
      if (escLang !== lang) { escCards.clear(); escLang = lang; }
      const fresh = [];
      const seen = new Set();
      for (const e of j.escalations) {
        seen.add(e.id);
        const sig = JSON.stringify(e);
        let c = escCards.get(e.id);
        if (!c && escLoaded && e.state === "open") fresh.push(e);
        if (!c || c.sig !== sig) {
          const node = escCard(e);
          if (c) c.node.replaceWith(node);
          c = { sig, node };
          escCards.set(e.id, c);
        }
      }
      for (const [id, c] of escCards) if (!seen.has(id)) { c.node.remove(); escCards.delete(id); }
      let prev = null;
      for (const e of j.escalations) {
        const n = escCards.get(e.id).node;
        if ((prev ? prev.nextSibling : box.firstChild) !== n) box.insertBefore(n, prev ? prev.nextSibling : box.firstChild);
        prev = n;
      }
      while (prev && prev.nextSibling) prev.nextSibling.remove();
      if (!j.escalations.length) box.replaceChildren(el("p", { class: "empty", text: t("esc.empty") }));
      if (fresh.length) $("esc-news").textContent = t("esc.new", { call: fresh.map((e) => e.call_id).join(", ") });
      escLoaded = true;
    }
    if (!$("view-escalations").hidden) escTimer = setTimeout(renderEscalations, ESC_REFRESH_MS);
  }
  function stepState(s) { return s.state === "delivering" && s.attempts > 1 ? "retrying" : s.state; }
  function escCard(e) {
    const card = el("article", { class: "esc", "data-escalation-id": e.id, "data-state": e.state });
    const callLink = el("a", { href: "#/call/" + encodeURIComponent(e.call_id), text: e.call_id });
    card.append(el("h2", {}, badge(e.state, t("esc." + e.state)),
      el("span", {}, t("esc.call") + " ", callLink),
      el("span", { text: t("esc.agent") + " " + e.agent_id }),
      el("span", { text: t("esc.opened") + " " + when(e.opened_at) })));
    const sc = e.score === "withheld" ? t("score.withheld") : t("call." + (e.score === "agent_stress" ? "as" : "cp")) + (e.value != null ? " " + Math.round(e.value) + " ≥ " + e.threshold : "");
    const notes = [t("esc.score") + ": " + sc];
    if (e.cleared) notes.push(t("esc.cleared"));
    if (e.call_ended) notes.push(t("esc.callEnded"));
    if (e.acknowledged_by) notes.push(t("esc.ackBy", { by: e.acknowledged_by }) + " " + when(e.acknowledged_at));
    if (e.resolved_by) notes.push(t("esc.resBy", { by: e.resolved_by }) + " " + when(e.resolved_at) + (e.resolution ? " — " + e.resolution : ""));
    card.append(el("p", { text: notes.join(" · ") }));
    const ladder = el("ol", { class: "ladder", "aria-label": "ladder" });
    for (const s of e.steps || []) {
      const st = stepState(s);
      ladder.append(el("li", { "data-step": s.action, "data-state": st }, (t("step." + s.action) || s.name) + " ", badge(st, t("state." + st)),
        s.last_error ? el("span", { class: "hint", text: " " + s.last_error }) : null));
    }
    card.append(ladder);
    const actions = el("div", { class: "actions" });
    if (session.act && e.state !== "resolved") {
      const by = el("input", { type: "text", "aria-label": t("esc.by"), placeholder: t("esc.by"), maxlength: "100", class: "by" });
      const res = el("input", { type: "text", "aria-label": t("esc.resolution"), placeholder: t("esc.resolution"), maxlength: "1000", class: "resolution" });
      const act = async (action, btn) => {
        btn.disabled = true;
        try {
          await api("POST", "/api/escalations/" + encodeURIComponent(e.id) + "/" + action, { by: by.value.trim(), resolution: res.value.trim() });
          renderEscalations();
        } catch (err) { $("esc-error").textContent = err.message; btn.disabled = false; }
      };
      if (e.state === "open") {
        const b = el("button", { type: "button", class: "primary ack", text: t("esc.acknowledge") });
        b.addEventListener("click", () => act("acknowledge", b));
        actions.append(by, b);
      } else actions.append(by);
      const r = el("button", { type: "button", class: "resolve", text: t("esc.resolve") });
      r.addEventListener("click", () => act("resolve", r));
      actions.append(res, r);
    } else if (!session.act) actions.append(el("span", { class: "hint", text: t("esc.readonly") }));
    card.append(actions);
    const det = el("details", {}, el("summary", { text: t("esc.details") }));
    det.addEventListener("toggle", async () => {
      if (!det.open || det.dataset.loaded) return;
      det.dataset.loaded = "1";
      try { det.append(escDetails(await api("GET", "/api/escalations/" + encodeURIComponent(e.id)))); }
      catch (err) { det.append(el("p", { class: "error", text: err.message })); }
    });
    card.append(det);
    return card;
  }
  function escDetails(j) {
    const box = el("div");
    if (!j.deliveries && !j.audit) return el("p", { class: "hint", text: t("esc.noDetails") });
    if (j.deliveries) {
    box.append(el("h3", { text: t("esc.deliveries") }));
    const tb = el("tbody");
    for (const d of j.deliveries || []) {
      const st = d.state === "pending" && d.attempts > 0 ? "retrying" : d.state;
      tb.append(el("tr", { "data-delivery-state": st }, el("td", { text: d.endpoint }), el("td", { text: d.event_type }),
        el("td", {}, badge(st, t("state." + st))), el("td", { class: "num", text: d.attempts }),
        el("td", { text: (d.last_status || "") + (d.last_error ? " " + d.last_error : "") }), el("td", { text: when(d.next_attempt_at) })));
    }
    box.append(el("table", {}, el("thead", {}, el("tr", {}, ...["d.endpoint", "d.event", "d.state", "d.attempts", "d.status", "d.next"].map((k) => el("th", { scope: "col", text: t(k) })))), tb));
    }
    if (j.audit) {
      box.append(el("h3", { text: t("esc.audit") }));
      const ol = el("ol", { class: "audit" });
      for (const a of j.audit) ol.append(el("li", { "data-kind": a.kind, text: when(a.at) + " · " + a.kind + (a.actor ? " · " + a.actor : "") }));
      box.append(ol);
    }
    return box;
  }

  // ---- call view ----
  let callTimer = null;
  async function renderCall(id) {
    $("call-id").textContent = id;
    let c;
    try { c = await api("GET", "/api/calls/" + encodeURIComponent(id)); }
    catch (e) {
      for (const k of ["call-meta", "call-plot", "call-legend", "call-summary"]) $(k).textContent = "";
      $("call-error").textContent = e.status === 404 ? t("call.notFound") : e.message;
      return;
    }
    $("call-error").textContent = "";
    for (const k of ["call-meta", "call-plot", "call-legend", "call-summary"]) $(k).textContent = "";
    const meta = $("call-meta");
    const row = (k, v) => meta.append(el("dt", { text: t(k) }), el("dd", { text: v }));
    row("call.agent", c.agent_id);
    row("call.started", when(c.started_at));
    if (c.ended_at) row("call.ended", when(c.ended_at));
    row("call.duration", dur(c.duration_s));
    row("call.protocol", c.protocol);
    if (c.live) row("call.endReason", t("call.live"));
    else row("call.endReason", c.end_reason + (c.incomplete ? " · " + t("call.incomplete") : ""));
    $("call-plot").append(plot(c));
    if (c.live) {
      // A live call's view follows the call: drawn again every second.
      clearTimeout(callTimer);
      callTimer = setTimeout(() => { if (location.hash === "#/call/" + encodeURIComponent(id)) renderCall(id); }, 1000);
    }
    const lg = $("call-legend");
    const sw = (color, dash, label) => el("span", {}, el("span", { class: "legend-swatch", style: "border-color:" + color + (dash ? ";border-top-style:dashed" : "") }), label);
    lg.append(sw("#b3261e", false, t("call.cp")));
    if (c.agent_scores) lg.append(sw("#0b57d0", true, t("call.as")));
    lg.append(el("span", { text: "▲ " + t("call.alert") }), el("span", { text: "▨ " + t("call.gap") }),
      el("span", { text: "┆ " + t("call.abstained") }), sw("#52606d", true, t("call.threshold")));
    const sum = $("call-summary");
    if (!c.live) {
      const tb = el("tbody");
      for (const ch of c.channels || []) tb.append(el("tr", {}, el("td", { text: t("role." + ch.role) }), el("td", { class: "num", text: dur(ch.talk_s) }), el("td", { class: "num", text: dur(ch.silence_s) })));
      sum.append(el("table", { class: "talk" }, el("thead", {}, el("tr", {}, el("th", { text: t("call.channel") }), el("th", { text: t("call.talk") }), el("th", { text: t("call.silence") }))), tb));
      const ov = c.overlap || {};
      const scores = el("dl", { class: "meta" });
      const add = (k, v) => scores.append(el("dt", { text: k }), el("dd", { text: v }));
      add(t("call.overlap"), dur(ov.overlap_s || 0));
      add(t("call.interruptions"), (ov.caller_interruptions || 0) + " / " + (ov.agent_interruptions || 0));
      for (const [k, s] of [["call.cp", c.caller_pressure], ["call.as", c.agent_stress]]) {
        if (!s || !s.scored) continue;
        add(t(k) + " · " + t("call.peak"), Math.round(s.peak) + " (" + dur(s.peak_second) + ")");
        add(t(k) + " · " + t("call.mean"), Math.round(s.mean));
        add(t(k) + " · " + t("call.above"), String(s.seconds_above_threshold));
      }
      sum.append(scores);
    }
    if (c.escalations && c.escalations.length) {
      sum.append(el("h2", { text: t("call.escalations") }));
      for (const e of c.escalations) sum.append(el("p", {}, badge(e.state, t("esc." + e.state)), " ", el("a", { href: "#/escalations", text: e.id })));
    }
  }
  function plot(c) {
    const NS = "http://www.w3.org/2000/svg";
    const tl = c.timeline || [];
    const first = tl.length ? tl[0][0] : 0;
    const lastS = Math.max(tl.length ? tl[tl.length - 1][0] : 1, first + 1, c.live ? 0 : Math.ceil(c.duration_s || 0));
    const talk = c.talk || null;
    const BAND = 12, bands = talk ? 4 : 0;
    const W = 1000, H = 260 + bands * (BAND + 4), L = 90, R = 10, T = 10, B = 30 + bands * (BAND + 4);
    const x = (s) => L + ((s - first) / Math.max(lastS - first, 1)) * (W - L - R);
    const y = (v) => T + (1 - v / 100) * (H - T - B);
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", t("call.plotLabel", { id: c.call_id }));
    svg.id = "timeline";
    const add = (tag, a, text) => { const e = document.createElementNS(NS, tag); for (const k in a) e.setAttribute(k, a[k]); if (text) e.textContent = text; svg.append(e); return e; };
    const defs = add("defs", {});
    const pat = document.createElementNS(NS, "pattern");
    pat.setAttribute("id", "hatch"); pat.setAttribute("width", "6"); pat.setAttribute("height", "6"); pat.setAttribute("patternUnits", "userSpaceOnUse"); pat.setAttribute("patternTransform", "rotate(45)");
    const pl = document.createElementNS(NS, "line"); pl.setAttribute("x1", 0); pl.setAttribute("y1", 0); pl.setAttribute("x2", 0); pl.setAttribute("y2", 6); pl.setAttribute("stroke", "#7b8794"); pl.setAttribute("stroke-width", 2);
    pat.append(pl); defs.append(pat);
    for (const v of [0, 25, 50, 75, 100]) {
      add("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e4e7eb" });
      add("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#4a535e" }, String(v));
    }
    const step = Math.max(1, Math.ceil((lastS - first) / 10 / 10) * 10);
    const axisY = H - B + 20;
    for (let s = first; s <= lastS; s += step) add("text", { x: x(s), y: axisY, "text-anchor": "middle", "font-size": 11, fill: "#4a535e" }, dur(s));
    if (talk) {
      // Talk, silence and overlap per second: a band each, darker where
      // more of the second had it (and named, not only shaded).
      const rows = [["call.talkCaller", "#8a2a1e", (k) => k[0]], ["call.talkAgent", "#0b57d0", (k) => k[1]],
        ["call.overlap", "#6b3fa0", (k) => k[2]], ["call.silence", "#52606d", (k) => Math.max(0, 1 - (k[0] + k[1] - k[2]))]];
      rows.forEach(([key, color, share], r) => {
        const y0 = axisY + 8 + r * (BAND + 4);
        add("text", { x: L - 6, y: y0 + BAND - 2, "text-anchor": "end", "font-size": 11, fill: "#1b1f24" }, t(key));
        const g = add("g", { class: "band", "data-band": key });
        tl.forEach((p, i) => {
          if (!talk[i]) return; // a second without talk shares (an older report, a lost second)
          const v = share(talk[i]);
          if (v <= 0.02) return;
          const r = document.createElementNS(NS, "rect");
          r.setAttribute("x", x(p[0])); r.setAttribute("y", y0); r.setAttribute("height", BAND);
          r.setAttribute("width", Math.max(1, x(p[0] + 1) - x(p[0]) - 0.5)); r.setAttribute("fill", color); r.setAttribute("fill-opacity", (0.15 + 0.85 * v).toFixed(2));
          g.append(r);
        });
      });
    }
    for (const g of c.gaps || []) {
      add("rect", { class: "gap", "data-kind": g.kind, x: x(g.from), y: T, width: Math.max(2, x(g.to) - x(g.from)), height: H - T - B, fill: "url(#hatch)", opacity: 0.6 }).append(
        Object.assign(document.createElementNS(NS, "title"), { textContent: (g.kind === "scoring" ? t("call.scoringGap") : t("call.gap")) + " (" + g.reason + ")" }));
    }
    const thr = (c.caller_pressure && c.caller_pressure.threshold) || PRESSURE;
    add("line", { x1: L, x2: W - R, y1: y(thr), y2: y(thr), stroke: "#52606d", "stroke-dasharray": "6 4", class: "threshold" });
    let abst = 0;
    for (const p of tl) if (p[1] == null) { abst++; add("line", { class: "abstained", x1: x(p[0]), x2: x(p[0]), y1: H - B - 8, y2: H - B, stroke: "#7b8794" }); }
    const series = (idx, color, dash, cls) => {
      let d = "", pen = false;
      for (const p of tl) {
        if (p[idx] == null) { pen = false; continue; }
        d += (pen ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[idx]).toFixed(1) + " ";
        pen = true;
      }
      if (d) add("path", { d, fill: "none", stroke: color, "stroke-width": 2, "stroke-dasharray": dash || "none", class: cls });
      // A scored second between abstained ones is a dot, not nothing.
      tl.forEach((p, i) => {
        if (p[idx] == null || (tl[i - 1] && tl[i - 1][idx] != null) || (tl[i + 1] && tl[i + 1][idx] != null)) return;
        add("circle", { cx: x(p[0]), cy: y(p[idx]), r: 3, fill: color, class: cls + "-dot" });
      });
    };
    series(1, "#b3261e", "", "series-cp");
    if (c.agent_scores) series(2, "#0b57d0", "6 3", "series-as");
    for (const a of c.alerts || []) {
      if (a.state !== "firing") continue;
      const ax = x(a.second);
      add("line", { x1: ax, x2: ax, y1: T, y2: H - B, stroke: "#b3261e", "stroke-width": 1 });
      add("path", { class: "alert-mark", d: `M${ax - 7} ${T + 14} L${ax + 7} ${T + 14} L${ax} ${T} Z`, fill: "#b3261e" });
      add("text", { x: ax + 9, y: T + 13, "font-size": 12, fill: "#b3261e", "font-weight": 700 }, t("call.alert"));
    }
    svg.dataset.points = tl.length;
    svg.dataset.abstained = abst;
    return svg;
  }

  // ---- care ----
  async function renderCare() {
    const box = $("care-list");
    $("care-error").textContent = "";
    let j;
    try { j = await api("GET", "/api/care"); } catch (e) { $("care-error").textContent = e.message; return; }
    box.textContent = "";
    if (!j.agents.length) { box.append(el("p", { class: "empty", text: t("care.empty") })); return; }
    const tb = el("tbody");
    const period = (s) => s ? t("care.calls", { n: s.calls }) + " · " + t("care.exposure", { m: (s.exposure_minutes || 0).toFixed(1) }) + " · " + t("care.high", { n: s.high_pressure_calls }) : "";
    for (const a of j.agents) {
      const trend = a.week ? a.week.exposure_trend : 0;
      const tr = trend > 0.05 ? ["firing", "▲ " + t("care.worse")] : trend < -0.05 ? ["ok", "▼ " + t("care.better")] : ["none", t("care.same")];
      const due = el("td");
      if (!j.due_known) due.append(el("span", { class: "hint", text: "—" }), el("span", { class: "sr", text: t("care.unknown") }));
      else if (a.due && a.due.length) for (const d of a.due) due.append(badge("firing", t("care." + d.recommendation) + " · " + when(d.at)), " ");
      else due.append(badge("ok", t("care.none")));
      const recent = el("td");
      for (const r of a.recent || []) recent.append(el("a", { href: "#/call/" + encodeURIComponent(r.call_id), text: r.call_id + " (" + Math.round(r.caller_pressure_peak) + (r.escalated ? ", " + t("care.escalated") : "") + ")" }), " ");
      tb.append(el("tr", { "data-agent": a.agent_id }, el("th", { scope: "row", text: a.agent_id }), el("td", { text: period(a.shift) }),
        el("td", { text: period(a.week) }), el("td", {}, el("span", { class: "badge " + tr[0], text: tr[1] })), due, recent));
    }
    box.append(el("table", {}, el("thead", {}, el("tr", {}, ...["care.agent", "care.shift", "care.week", "care.trend", "care.due", "care.recent"].map((k) => el("th", { scope: "col", text: t(k) })))), tb));
  }

  // ---- routing ----
  function route() {
    if (!session) { show("login"); return; }
    const h = location.hash || "#/wall";
    if (h.startsWith("#/call/")) { show("call"); renderCall(decodeURIComponent(h.slice(7))); }
    else if (h === "#/escalations" && session.escalations) { show("escalations"); renderEscalations(); }
    else if (h === "#/care" && session.care) { show("care"); renderCare(); }
    else { show("wall"); bodyTop = null; queueRender(); }
  }
  window.addEventListener("hashchange", route);
  window.calmlinePerf = perf; // read by make bench-console (console/browsertest/bench_test.go)

  setLang(lang);
  api("GET", "/api/session").then(signedIn, () => signedOut());
})();
