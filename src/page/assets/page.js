// ragwatch's page: reads the JSON API of the same origin every 10 s and draws tables and SVG.
// Text goes in with textContent only; nothing is loaded from anywhere else.
"use strict";
(function () {
  var REFRESH_MS = 10000;
  var SVG = "http://www.w3.org/2000/svg";
  var STAGE_COLOURS = {
    llm: "#7c3aed", embedding: "#0891b2", retrieval: "#ea580c", rerank: "#ca8a04",
    tool: "#16a34a", agent: "#db2777", chain: "#64748b", guardrail: "#dc2626",
    evaluator: "#2563eb", app: "#94a3b8", other: "#94a3b8"
  };
  var PALETTE = ["#3056d3", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0b7285", "#e67700", "#495057", "#a61e4d", "#5c940d"];
  var CATEGORY_NAMES = {
    slowest: "slowest", costliest: "costliest", failed: "failed",
    anomalous: "anomalous", with_findings: "with findings"
  };

  var state = { category: "slowest", selected: null, overview: null, traces: null, timer: null };

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (k === "text") { e.textContent = attrs[k]; }
        else if (k === "cls") { e.className = attrs[k]; }
        else { e.setAttribute(k, attrs[k]); }
      });
    }
    (children || []).forEach(function (c) {
      e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return e;
  }

  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

  function token() {
    try { return window.sessionStorage.getItem("ragwatch-token") || ""; } catch (e) { return ""; }
  }

  function api(path) {
    var headers = { "Accept": "application/json" };
    var t = token();
    if (t) { headers["Authorization"] = "Bearer " + t; }
    return fetch(path, { headers: headers, cache: "no-store", credentials: "omit" }).then(function (r) {
      if (r.status === 401) { var e = new Error("unauthorized"); e.unauthorized = true; throw e; }
      if (!r.ok) { throw new Error(path + ": HTTP " + r.status); }
      return r.json();
    }).then(function (j) { return j.data; });
  }

  // Formatting.
  function usd(x) {
    if (x === null || x === undefined || !isFinite(x)) { return "–"; }
    if (x === 0) { return "$0"; }
    if (Math.abs(x) >= 100) { return "$" + x.toFixed(0); }
    if (Math.abs(x) >= 1) { return "$" + x.toFixed(2); }
    return "$" + x.toPrecision(3);
  }
  function ms(x) {
    if (x === null || x === undefined || !isFinite(x)) { return "–"; }
    if (x >= 1000) { return (x / 1000).toFixed(2) + " s"; }
    return x.toFixed(0) + " ms";
  }
  function pct(x) {
    if (x === null || x === undefined || !isFinite(x)) { return "–"; }
    return (x * 100).toFixed(x > 0 && x < 0.1 ? 1 : 0) + "%";
  }
  function num(x, d) {
    if (x === null || x === undefined || !isFinite(x)) { return "–"; }
    return Number(x).toFixed(d === undefined ? 0 : d);
  }
  function count(x) {
    if (x === null || x === undefined || !isFinite(x)) { return "–"; }
    if (x >= 1e6) { return (x / 1e6).toFixed(1) + "M"; }
    if (x >= 1e4) { return (x / 1e3).toFixed(1) + "k"; }
    return String(Math.round(x));
  }
  function ago(iso) {
    if (!iso) { return "–"; }
    var t = Date.parse(iso);
    if (!isFinite(t)) { return iso; }
    var s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 90) { return s + " s ago"; }
    if (s < 5400) { return Math.round(s / 60) + " min ago"; }
    return Math.round(s / 3600) + " h ago";
  }

  function row(cells) {
    var tr = el("tr");
    cells.forEach(function (c) {
      if (c instanceof Node) { tr.appendChild(c); }
      else { tr.appendChild(el("td", { text: c === null || c === undefined ? "–" : String(c) })); }
    });
    return tr;
  }
  function numCell(text, cls) { return el("td", { cls: "num" + (cls ? " " + cls : ""), text: text }); }
  function emptyRow(tbody, cols, text) {
    tbody.appendChild(el("tr", null, [el("td", { cls: "empty", colspan: String(cols), text: text })]));
  }

  // Sections.
  function drawServices(o) {
    var tb = $("services").tBodies[0];
    clear(tb);
    if (!o.services.length) { emptyRow(tb, 7, "No traces yet: send OTLP to the receivers (4317 gRPC, 4318 HTTP)."); return; }
    o.services.forEach(function (s) {
      var errCls = s.error_rate > 0.05 ? "bad" : (s.error_rate > 0 ? "warn" : "");
      tb.appendChild(row([
        el("td", { text: s.service }),
        numCell(num(s.requests_per_minute, 1)),
        numCell(pct(s.error_rate), errCls),
        numCell(ms(s.p50_ms)),
        numCell(ms(s.p95_ms)),
        numCell(usd(s.cost_per_hour_usd)),
        numCell(num(s.mean_quality, 2))
      ]));
    });
  }

  function drawModels(o) {
    var tb = $("models").tBodies[0];
    clear(tb);
    if (!o.models.length) { emptyRow(tb, 5, "No model calls in the last hour."); return; }
    o.models.forEach(function (m) {
      tb.appendChild(row([
        el("td", { text: m.model }),
        numCell(count(m.calls)),
        numCell(count(m.tokens_input)),
        numCell(count(m.tokens_output)),
        numCell(usd(m.cost_usd))
      ]));
    });
  }

  function drawAlerts(data) {
    var tb = $("alerts").tBodies[0];
    clear(tb);
    var alerts = (data && data.alerts) || [];
    if (!alerts.length) { emptyRow(tb, 4, "No alerts."); return; }
    var order = { firing: 0, pending: 1, resolved: 2 };
    alerts.sort(function (a, b) { return (order[a.state] || 9) - (order[b.state] || 9); });
    alerts.forEach(function (a) {
      var l = a.labels || {};
      var an = a.annotations || {};
      var what = [];
      ["service", "slo", "budget", "stage", "model"].forEach(function (k) { if (l[k]) { what.push(k + " " + l[k]); } });
      var td = el("td", null, [el("div", { text: what.join(", ") })]);
      if (an.summary) { td.appendChild(el("div", { cls: "dim", text: an.summary })); }
      tb.appendChild(row([
        el("td", null, [el("span", { cls: "badge " + a.state, text: a.state })]),
        el("td", { text: (l.alertname || "") + (l.severity ? " (" + l.severity + ")" : "") }),
        td,
        el("td", { text: ago(a.startsAt || a.activeAt) })
      ]));
    });
  }

  function drawSlos(d) {
    var tb = $("slos").tBodies[0];
    clear(tb);
    if (!d.slos.length) { emptyRow(tb, 6, "No SLO has seen traffic (slo processor)."); }
    d.slos.forEach(function (s) {
      var wins = Object.keys(s.windows || {}).sort(function (a, b) { return parseDur(a) - parseDur(b); });
      var sli = wins.map(function (w) { return w + " " + pct(s.windows[w].sli); }).join(", ");
      var burn = wins.map(function (w) { return w + " " + num(s.windows[w].burn_rate, 1) + "×"; }).join(", ");
      var left = s.error_budget_remaining;
      tb.appendChild(row([
        el("td", { text: s.slo }),
        el("td", { text: s.service + (s.scope ? " / " + s.scope : "") }),
        numCell(s.objective === null ? "–" : pct(s.objective)),
        el("td", { text: sli || "–" }),
        el("td", { text: burn || "–" }),
        numCell(pct(left), left !== null && left < 0 ? "bad" : (left !== null && left < 0.25 ? "warn" : ""))
      ]));
    });
    var bb = $("budgets").tBodies[0];
    clear(bb);
    if (!d.budgets.length) { emptyRow(bb, 4, "No budgets configured."); }
    d.budgets.forEach(function (b) {
      var over = b.spend_usd !== null && b.spend_usd >= b.limit_usd;
      var proj = b.projected_spend_usd !== null && b.projected_spend_usd >= b.limit_usd;
      bb.appendChild(row([
        el("td", { text: b.budget }),
        numCell(usd(b.spend_usd), over ? "bad" : ""),
        numCell(usd(b.projected_spend_usd), proj ? "warn" : ""),
        numCell(usd(b.limit_usd))
      ]));
    });
  }

  function parseDur(s) {
    var m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(s || "");
    if (!m) { return 0; }
    return Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[m[2]];
  }

  function drawLint(d) {
    var box = $("lint");
    clear(box);
    if (!d.services.length) { box.appendChild(el("p", { cls: "empty", text: "Nothing missing found so far." })); return; }
    d.services.forEach(function (s) {
      var ul = el("ul");
      s.issues.forEach(function (i) { ul.appendChild(el("li", { text: i.issue.replace(/_/g, " ") + ": " + count(i.count) })); });
      box.appendChild(el("div", { cls: "lint-service" }, [el("strong", { text: s.service }), ul]));
    });
  }

  function drawPipeline(d) {
    var tiles = $("totals");
    clear(tiles);
    var t = d.totals || {};
    [["accepted", "accepted"], ["sent", "sent"], ["refused", "refused"], ["dropped", "dropped"]].forEach(function (k) {
      var v = t[k[0]] || 0;
      var cls = (k[0] === "refused" || k[0] === "dropped") && v > 0 ? "bad" : "";
      tiles.appendChild(el("div", { cls: "tile" }, [el("b", { cls: cls, text: count(v) }), el("span", { text: k[1] })]));
    });
    var tb = $("queues").tBodies[0];
    clear(tb);
    (d.pipelines || []).forEach(function (p) {
      tb.appendChild(row([el("td", { text: "pipeline " + p.pipeline }), numCell(pct(p.queue_fill), p.queue_fill > 0.8 ? "bad" : ""),
        numCell(count(p.counts.queue_items || 0)), numCell(count(p.counts.queue_capacity || 0))]));
    });
    (d.exporters || []).forEach(function (e) {
      tb.appendChild(row([el("td", { text: "exporter " + e.exporter }), numCell(pct(e.queue_fill), e.queue_fill > 0.8 ? "bad" : ""),
        numCell(count(e.counts.queue_size || 0)), numCell(count(e.counts.queue_capacity || 0))]));
    });
  }

  // Notable traces.
  function drawTabs() {
    var nav = $("tabs");
    clear(nav);
    var cats = (state.traces && state.traces.categories) || {};
    Object.keys(CATEGORY_NAMES).forEach(function (c) {
      var n = (cats[c] || []).length;
      var b = el("button", { type: "button", "aria-pressed": String(c === state.category), text: CATEGORY_NAMES[c] + " (" + n + ")" });
      b.addEventListener("click", function () { state.category = c; drawTabs(); drawTraces(); });
      nav.appendChild(b);
    });
  }

  function bottleneckText(b) {
    if (!b) { return "–"; }
    var name = b.span_name && b.span_name !== b.stage ? " (" + b.span_name + ")" : "";
    return b.stage + name + " " + pct(b.share);
  }

  function drawTraces() {
    var tb = $("traces").tBodies[0];
    clear(tb);
    var list = ((state.traces && state.traces.categories) || {})[state.category] || [];
    if (!list.length) { emptyRow(tb, 7, "None in this category."); return; }
    list.forEach(function (t) {
      var tr = row([
        el("td", { cls: "mono trace-id", text: t.trace_id }),
        el("td", { text: t.service }),
        numCell(ms(t.duration_ms), t.error ? "bad" : ""),
        numCell(usd(t.cost_usd)),
        el("td", { text: bottleneckText(t.bottleneck) }),
        numCell(num(t.quality, 2)),
        el("td", { text: (t.error ? "failed; " : "") + (t.anomalous ? "anomalous; " : "") + (t.findings.map(function (f) { return f.name; }).join(", ") || (t.error || t.anomalous ? "" : "–")) })
      ]);
      tr.className = "clickable" + (t.trace_id === state.selected ? " selected" : "");
      tr.setAttribute("tabindex", "0");
      tr.addEventListener("click", function () { openTrace(t.trace_id); });
      tr.addEventListener("keydown", function (e) { if (e.key === "Enter") { openTrace(t.trace_id); } });
      tb.appendChild(tr);
    });
  }

  function openTrace(id) {
    state.selected = id;
    drawTraces();
    api("/api/v1/traces/" + encodeURIComponent(id)).then(drawWaterfall, function (e) {
      var box = $("waterfall");
      clear(box);
      box.hidden = false;
      box.appendChild(el("p", { cls: "empty", text: e.unauthorized ? "A token is needed." : "This trace is no longer kept." }));
    });
  }

  function drawWaterfall(t) {
    var box = $("waterfall");
    clear(box);
    box.hidden = false;
    var head = el("div", { cls: "head" }, [
      el("strong", { cls: "mono", text: t.trace_id }),
      el("span", { text: t.service + " · " + t.name }),
      el("span", { text: ms(t.duration_ms) + " · " + usd(t.cost_usd) }),
      el("span", { text: "bottleneck " + bottleneckText(t.bottleneck) })
    ]);
    if (t.jaeger_url) { head.appendChild(el("a", { href: t.jaeger_url, target: "_blank", rel: "noopener noreferrer", text: "open in Jaeger" })); }
    var close = el("button", { type: "button", text: "close" });
    close.addEventListener("click", function () { box.hidden = true; state.selected = null; drawTraces(); });
    head.appendChild(close);
    box.appendChild(head);
    if (t.findings && t.findings.length) {
      var ul = el("ul", { cls: "findings" });
      t.findings.forEach(function (f) { ul.appendChild(el("li", { text: f.name + " (" + f.severity + ")" + (f.description ? ": " + f.description : "") })); });
      box.appendChild(ul);
    }
    // Depth of each span from its parent chain.
    var byId = {};
    t.spans.forEach(function (s) { byId[s.span_id] = s; });
    function depth(s) {
      var d = 0, p = byId[s.parent_span_id], guard = 0;
      while (p && guard++ < 64) { d++; p = byId[p.parent_span_id]; }
      return d;
    }
    var total = 0;
    t.spans.forEach(function (s) { total = Math.max(total, s.start_ms + s.duration_ms); });
    total = total || 1;
    var W = 1000, LABEL = 330, ROW = 22, H = ROW * t.spans.length + 24;
    var g = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "waterfall of trace " + t.trace_id });
    var scale = (W - LABEL - 70) / total;
    [0, 0.25, 0.5, 0.75, 1].forEach(function (f) {
      var x = LABEL + f * total * scale;
      g.appendChild(svg("line", { x1: x, x2: x, y1: 0, y2: H - 18, stroke: "#e3e6ec" }));
      g.appendChild(svg("text", { x: x, y: H - 4, "text-anchor": f === 1 ? "end" : (f === 0 ? "start" : "middle"), "class": "dim" }, ms(f * total)));
    });
    var attrsBox = el("div");
    t.spans.forEach(function (s, i) {
      var y = i * ROW;
      var r = svg("g", { "class": "row" });
      r.appendChild(svg("rect", { "class": "hit", x: 0, y: y, width: W, height: ROW, fill: "transparent" }));
      var label = (s.bottleneck ? "▲ " : "") + s.name;
      r.appendChild(svg("text", { x: 4 + depth(s) * 12, y: y + 15 }, label.length > 44 ? label.slice(0, 43) + "…" : label));
      var colour = STAGE_COLOURS[s.stage] || STAGE_COLOURS.other;
      var x = LABEL + s.start_ms * scale;
      var w = Math.max(2, s.duration_ms * scale);
      var bar = svg("rect", { x: x, y: y + 4, width: w, height: ROW - 8, rx: 2, fill: colour, opacity: s.critical_path ? 1 : 0.45 });
      if (s.bottleneck) { bar.setAttribute("stroke", "#c62828"); bar.setAttribute("stroke-width", "2.5"); }
      if (s.error) { bar.setAttribute("stroke", "#000"); bar.setAttribute("stroke-dasharray", "3 2"); }
      r.appendChild(bar);
      var note = ms(s.duration_ms) + (s.stage ? " " + s.stage : "") + (s.bottleneck ? " bottleneck" : "") + (s.anomaly ? " anomalous" : "");
      // The note right of the bar; without room there, inside a wide bar or left of a narrow one.
      var room = x + w + 4 <= W - 150;
      var inside = !room && w >= 150;
      r.appendChild(svg("text", {
        x: room ? x + w + 4 : (inside ? x + w - 4 : x - 4), y: y + 15,
        "class": inside ? "inbar" : "dim", "text-anchor": room ? "start" : "end"
      }, note));
      r.appendChild(svg("title", {}, s.name + " — " + note));
      r.addEventListener("click", function () { drawAttributes(attrsBox, s); });
      g.appendChild(r);
    });
    box.appendChild(g);
    var keys = el("div", { cls: "keys" });
    ["llm", "embedding", "retrieval", "rerank", "tool", "agent", "chain", "other"].forEach(function (k) {
      keys.appendChild(el("span", null, [swatch(STAGE_COLOURS[k]), k]));
    });
    keys.appendChild(el("span", { text: "solid: on the critical path · ▲ red outline: the bottleneck · dashed: failed · click a span for its attributes" }));
    box.appendChild(keys);
    if (t.spans_omitted || t.attributes_omitted) {
      box.appendChild(el("p", { cls: "empty", text: t.spans_omitted + " spans and " + t.attributes_omitted + " attributes left out (bounded memory)." }));
    }
    box.appendChild(attrsBox);
    var first = t.spans.filter(function (s) { return s.bottleneck; })[0] || t.spans[0];
    if (first) { drawAttributes(attrsBox, first); }
  }

  function drawAttributes(box, s) {
    clear(box);
    box.appendChild(el("h3", { text: s.name + " (" + s.service + ")" }));
    var tb = el("tbody");
    [["span_id", s.span_id], ["duration", ms(s.duration_ms)], ["stage", s.stage || "–"],
      ["critical path", s.critical_path ? "yes" : "no"], ["bottleneck", s.bottleneck ? "yes" : "no"]].forEach(function (kv) {
      tb.appendChild(row([kv[0], kv[1]]));
    });
    s.attributes.forEach(function (kv) { tb.appendChild(row([kv[0], kv[1]])); });
    box.appendChild(el("div", { cls: "scroll" }, [el("table", { cls: "attrs" }, [tb])]));
  }

  function swatch(colour) {
    var s = svg("svg", { "class": "swatch", width: 10, height: 10, viewBox: "0 0 10 10", "aria-hidden": "true" });
    s.appendChild(svg("rect", { width: 10, height: 10, rx: 2, fill: colour }));
    return s;
  }

  // Charts.
  function chart(title, lines, data, fmt, colourOf) {
    var W = 600, H = 170, L = 58, R = 8, T = 10, B = 22;
    var max = 0;
    lines.forEach(function (l) { l.values.forEach(function (v) { if (v !== null && v > max) { max = v; } }); });
    var box = el("div", { cls: "chart" }, [el("h3", { text: title })]);
    var g = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": title });
    var n = data.slots || 1;
    // From the first slot with data (at least the last 5 minutes), so a fresh ragwatch's charts
    // are not squeezed against "now".
    var first = n - 1;
    lines.forEach(function (l) { l.values.forEach(function (v, i) { if (v !== null && i < first) { first = i; } }); });
    var start = Math.max(0, Math.min(first, n - 30));
    var span = Math.max(1, n - 1 - start);
    var x = function (i) { return L + (W - L - R) * ((i - start) / span); };
    var top = max > 0 ? max * 1.1 : 1;
    var y = function (v) { return T + (H - T - B) * (1 - v / top); };
    [0, 0.5, 1].forEach(function (f) {
      var v = top * f;
      g.appendChild(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e6ec" }));
      g.appendChild(svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#5b6475" }, fmt(v)));
    });
    var minutes = function (slots) { var m = slots * (data.resolution_s || 10) / 60; return m >= 10 ? Math.round(m) : m.toFixed(1).replace(/\.0$/, ""); };
    [[0, "−" + minutes(span) + " min"], [0.5, "−" + minutes(span / 2) + " min"], [1, "now"]].forEach(function (p) {
      g.appendChild(svg("text", { x: x(start + p[0] * span), y: H - 6, "text-anchor": p[0] === 0 ? "start" : (p[0] === 1 ? "end" : "middle"), "font-size": 11, fill: "#5b6475" }, p[1]));
    });
    var legend = el("ul", { cls: "legend" });
    lines.forEach(function (l, k) {
      var colour = colourOf(l.key, k);
      var d = "", prev = false;
      l.values.forEach(function (v, i) {
        if (v === null || i < start) { prev = false; return; }
        d += (prev ? "L" : "M") + x(i).toFixed(1) + " " + y(v).toFixed(1);
        prev = true;
        g.appendChild(svg("circle", { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 2, fill: colour }));
      });
      if (d) { g.appendChild(svg("path", { d: d, fill: "none", stroke: colour, "stroke-width": 1.5 })); }
      legend.appendChild(el("li", null, [swatch(colour), l.key]));
    });
    if (!lines.length) {
      g.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", "font-size": 12, fill: "#5b6475" }, "no data yet"));
    }
    box.appendChild(g);
    box.appendChild(legend);
    return box;
  }

  function drawCharts(d) {
    var box = $("charts");
    clear(box);
    var byIndex = function (key, k) { return PALETTE[k % PALETTE.length]; };
    var byStage = function (key, k) { return STAGE_COLOURS[key] || PALETTE[k % PALETTE.length]; };
    box.appendChild(chart("Cost by model (USD per 10 s)", d.cost_usd_by_model, d, usd, byIndex));
    box.appendChild(chart("p95 latency by stage", d.p95_ms_by_stage, d, ms, byStage));
    box.appendChild(chart("Error rate by service", d.error_rate_by_service, d, pct, byIndex));
    box.appendChild(chart("Quality by service", d.quality_by_service, d, function (v) { return num(v, 2); }, byIndex));
    box.appendChild(chart("Tokens by model (per 10 s)", d.tokens_by_model, d, count, byIndex));
    box.appendChild(chart("Requests by service (per 10 s)", d.requests_by_service, d, count, byIndex));
  }

  // The refresh loop.
  function refresh() {
    clearTimeout(state.timer);
    var status = $("status");
    Promise.all([
      api("/api/v1/overview"), api("/api/v1/traces"), api("/api/v1/alerts"), api("/api/v1/series"),
      api("/api/v1/slos"), api("/api/v1/instrumentation"), api("/api/v1/pipeline")
    ]).then(function (r) {
      $("auth").hidden = true;
      state.overview = r[0];
      state.traces = r[1];
      drawServices(r[0]);
      drawModels(r[0]);
      drawTabs();
      drawTraces();
      drawAlerts(r[2]);
      drawCharts(r[3]);
      drawSlos(r[4]);
      drawLint(r[5]);
      drawPipeline(r[6]);
      $("version").textContent = "ragwatch " + r[0].version + (r[0].show_content ? " · showing content" : " · prompts and completions hidden");
      status.className = "status";
      status.textContent = r[0].traces_seen + " traces analysed · updated " + new Date().toLocaleTimeString();
      state.timer = setTimeout(refresh, REFRESH_MS);
    }, function (e) {
      if (e.unauthorized) {
        $("auth").hidden = false;
        status.className = "status error";
        status.textContent = "a token is needed";
        return;
      }
      status.className = "status error";
      status.textContent = "cannot reach ragwatch (" + e.message + "); retrying";
      state.timer = setTimeout(refresh, REFRESH_MS);
    });
  }

  $("auth").addEventListener("submit", function (e) {
    e.preventDefault();
    try { window.sessionStorage.setItem("ragwatch-token", $("token").value); } catch (err) { /* private mode */ }
    refresh();
  });
  refresh();
})();
