// The usage dashboard page. Plain JavaScript, no build step. Every URL is
// relative to the page, so the dashboard works under any mount path; every
// value from the database is written as text (textContent), never as HTML.
(function () {
  "use strict";

  var RANGES = { "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };
  var PALETTE = ["#2f6fdf", "#e8793a", "#2fa77a", "#c9459a", "#8a63d2", "#d4a82b", "#3fb3c7", "#d9534f", "#7a8594"];
  var NONE = "(none)";

  // State lives in the URL's fragment, so a reload or a shared link keeps it.
  var state = { range: "24h", from: "", to: "", model: "", key: "", backend: "", status: "", by: "model" };
  var charts = {};
  var seq = 0;

  function $(id) { return document.getElementById(id); }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  // Number formatting for people.
  function fmtInt(n) {
    if (n === null || n === undefined) return "–";
    return Math.round(n).toLocaleString("en-US");
  }
  function fmtCompact(n) {
    if (n === null || n === undefined) return "–";
    var a = Math.abs(n);
    var units = [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "k"]];
    for (var i = 0; i < units.length; i++) {
      if (a >= units[i][0]) {
        var v = n / units[i][0];
        return (v >= 100 ? v.toFixed(0) : v.toFixed(1).replace(/\.0$/, "")) + units[i][1];
      }
    }
    return String(Math.round(n));
  }
  function fmtUSD(x) {
    if (x === null || x === undefined) return "–";
    if (x === 0) return "$0";
    if (x < 0.01) return "$" + x.toPrecision(2);
    if (x >= 1e6) return "$" + fmtCompact(x);
    return "$" + x.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 1 : 0) + " s";
    if (ms < 3600000) return (ms / 60000).toFixed(1) + " min";
    return (ms / 3600000).toFixed(1) + " h";
  }
  function fmtPct(x) {
    if (x === null || x === undefined) return "–";
    if (x === 0) return "0%";
    if (x < 0.001) return "<0.1%";
    return (x * 100).toFixed(x < 0.1 ? 1 : 0) + "%";
  }
  function fmtTime(t) {
    var d = t instanceof Date ? t : new Date(t);
    if (isNaN(d.getTime())) return String(t);
    return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }
  function nameOf(s) { return s === "" ? NONE : s; }

  // ---- state and URL ----

  function readHash() {
    var q = new URLSearchParams(location.hash.replace(/^#/, ""));
    Object.keys(state).forEach(function (k) {
      if (q.has(k)) state[k] = q.get(k);
    });
    if (!RANGES[state.range] && state.range !== "custom") state.range = "24h";
    if (state.range === "custom" && (!state.from || !state.to)) state.range = "24h";
  }

  function writeHash() {
    var q = new URLSearchParams();
    Object.keys(state).forEach(function (k) {
      if (state[k] && !(k === "by" && state[k] === "model")) q.set(k, state[k]);
    });
    if (state.range !== "custom") { q.delete("from"); q.delete("to"); }
    var h = q.toString();
    history.replaceState(null, "", h ? "#" + h : location.pathname + location.search);
  }

  // query returns the API parameters of the current state.
  function query(extra) {
    var q = new URLSearchParams();
    var to, from;
    if (state.range === "custom") {
      from = new Date(state.from);
      to = new Date(state.to);
    } else {
      to = new Date();
      from = new Date(to.getTime() - RANGES[state.range] * 1000);
    }
    q.set("from", from.toISOString());
    q.set("to", to.toISOString());
    ["model", "key", "backend", "status"].forEach(function (k) {
      if (state[k]) q.set(k, state[k]);
    });
    Object.keys(extra || {}).forEach(function (k) { q.set(k, extra[k]); });
    return q.toString();
  }

  function fetchJSON(path) {
    return fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" }).then(function (res) {
      return res.json().then(function (body) {
        if (!res.ok) {
          var msg = body && body.error && body.error.message ? body.error.message : "HTTP " + res.status;
          throw new Error(msg);
        }
        return body;
      }, function () { throw new Error("HTTP " + res.status); });
    });
  }

  // ---- rendering ----

  function renderTotals(s) {
    $("t-requests").textContent = fmtInt(s.requests);
    $("t-range").textContent = fmtTime(s.query.from) + " – " + fmtTime(s.query.to);
    $("t-errors").textContent = fmtInt(s.errors);
    $("t-error-rate").textContent = fmtPct(s.error_rate) + " of requests";
    $("t-tokens").textContent = fmtCompact(s.prompt_tokens + s.completion_tokens);
    $("t-tokens-split").textContent = fmtCompact(s.prompt_tokens) + " prompt · " + fmtCompact(s.completion_tokens) + " completion";
    $("t-cost").textContent = fmtUSD(s.cost_usd);
    $("t-costed").textContent = s.requests === s.costed_requests ? "all calls priced" :
      fmtInt(s.costed_requests) + " of " + fmtInt(s.requests) + " calls priced";
    $("t-latency").textContent = fmtMs(s.latency_p50_ms) + " p50";
    $("t-latency-p95").textContent = fmtMs(s.latency_p95_ms) + " p95";
    $("t-ttft").textContent = fmtMs(s.ttft_p50_ms) + " p50";
    $("t-ttft-p95").textContent = fmtMs(s.ttft_p95_ms) + " p95";
    $("files").textContent = s.files.length ? "Files: " + s.files.join(", ") : "No database file yet";
  }

  function cell(tr, text, cls) {
    var td = el("td", text, cls);
    tr.appendChild(td);
    return td;
  }

  function headRow(table, cols) {
    var thead = el("thead");
    var tr = el("tr");
    cols.forEach(function (c) { tr.appendChild(el("th", c[0], c[1])); });
    thead.appendChild(tr);
    table.appendChild(thead);
  }

  function renderTop(dim, top) {
    var table = $("top-" + dim);
    table.replaceChildren();
    headRow(table, [[dim === "key" ? "Key" : dim === "model" ? "Model" : "Backend"], ["Requests", "num"], ["Errors", "num"],
      ["Tokens", "num"], ["Cost", "num"], ["p50", "num"], ["p95", "num"]]);
    var tbody = el("tbody");
    var rows = top.rows.slice();
    if (top.other) rows.push(top.other);
    if (!rows.length) {
      var tr = el("tr");
      var td = cell(tr, "No calls", "empty");
      td.colSpan = 7;
      tbody.appendChild(tr);
    }
    rows.forEach(function (r, i) {
      var tr = el("tr");
      var nameCell = el("td", null, "name");
      if (r === top.other) {
        nameCell.textContent = r.name;
        nameCell.classList.add("muted");
      } else {
        var b = el("button", nameOf(r.name), "link");
        b.type = "button";
        b.title = "Filter by this " + dim;
        b.dataset.value = r.name === "" ? NONE : r.name;
        b.addEventListener("click", function () { setFilter(dim, b.dataset.value); });
        nameCell.appendChild(b);
      }
      tr.appendChild(nameCell);
      cell(tr, fmtInt(r.requests), "num requests");
      cell(tr, fmtInt(r.errors) + (r.errors ? " (" + fmtPct(r.error_rate) + ")" : ""), "num");
      cell(tr, fmtCompact(r.prompt_tokens + r.completion_tokens), "num");
      cell(tr, r.costed_requests ? fmtUSD(r.cost_usd) : "–", "num");
      cell(tr, fmtMs(r.latency_p50_ms), "num");
      cell(tr, fmtMs(r.latency_p95_ms), "num");
      tbody.appendChild(tr);
    });
    table.appendChild(tbody);
  }

  function fillSelect(dim, top) {
    var sel = $("f-" + dim);
    var keep = state[dim];
    var names = top.rows.map(function (r) { return r.name === "" ? NONE : r.name; });
    if (keep && names.indexOf(keep) < 0) names.unshift(keep);
    sel.replaceChildren(el("option", "All"));
    sel.firstChild.value = "";
    names.forEach(function (n) {
      var o = el("option", n);
      o.value = n;
      sel.appendChild(o);
    });
    sel.value = keep;
  }

  function renderFailures(f) {
    var table = $("failures");
    table.replaceChildren();
    headRow(table, [["Time"], ["Status", "num"], ["Error"], ["Tried"], ["Model"], ["Key"], ["Backend"], ["Latency", "num"]]);
    var tbody = el("tbody");
    if (!f.rows.length) {
      var tr0 = el("tr");
      var td = cell(tr0, "No failed calls in this range", "empty");
      td.colSpan = 8;
      tbody.appendChild(tr0);
    }
    f.rows.forEach(function (r) {
      var tr = el("tr", null, "clickable");
      var tc = el("td");
      var b = el("button", fmtTime(r.time), "link");
      b.type = "button";
      b.title = "Show this call";
      b.addEventListener("click", function () { showCall(r.id, r.db); });
      tc.appendChild(b);
      tr.appendChild(tc);
      cell(tr, r.status, "num status s" + String(r.status).charAt(0));
      cell(tr, r.error, "err");
      cell(tr, r.tried);
      cell(tr, nameOf(r.model));
      cell(tr, nameOf(r.key));
      cell(tr, nameOf(r.backend));
      cell(tr, fmtMs(r.latency_ms), "num");
      tbody.appendChild(tr);
    });
    table.appendChild(tbody);
  }

  // ---- charts ----

  function plotWidth(div) {
    return Math.max(260, Math.floor(div.getBoundingClientRect().width));
  }

  function plotHeight() {
    return window.innerWidth < 640 ? 180 : 220;
  }

  // stacked turns groups into cumulative series (largest first, so each
  // fill is painted over the one above it), keeping the raw values for the
  // legend.
  function stacked(times, groups, field) {
    var n = times.length;
    var cum = [];
    var acc = new Array(n).fill(0);
    groups.forEach(function (g) {
      acc = acc.map(function (v, i) { return v + g[field][i]; });
      cum.push(acc.slice());
    });
    var data = [times];
    var series = [{}];
    for (var gi = groups.length - 1; gi >= 0; gi--) {
      data.push(cum[gi]);
      (function (raw, color, name) {
        series.push({
          label: nameOf(name),
          stroke: color,
          fill: color + "cc",
          width: 1,
          points: { show: false },
          paths: uPlot.paths.stepped({ align: 1 }),
          value: function (u, v, si, i) { return i === null || i === undefined ? "–" : fmtCompact(raw[i]); },
        });
      })(groups[gi][field], PALETTE[gi % PALETTE.length], groups[gi].name);
    }
    return { data: data, series: series };
  }

  function draw(id, opts, data) {
    var div = $(id);
    if (charts[id]) {
      charts[id].destroy();
      delete charts[id];
    }
    div.replaceChildren();
    opts.width = plotWidth(div);
    opts.height = plotHeight();
    charts[id] = new uPlot(opts, data, div);
  }

  function axisValues(fmt) {
    return function (u, splits) { return splits.map(function (v) { return v === null ? "" : fmt(v); }); };
  }

  function renderCharts(s) {
    var by = s.by;
    document.querySelectorAll(".by-label").forEach(function (e) { e.textContent = "by " + by; });
    var groups = s.groups.length ? s.groups : [{ name: "all", requests: s.requests, tokens: s.tokens }];
    ["requests", "tokens"].forEach(function (field) {
      var st = stacked(s.times, groups, field);
      draw("c-" + field, {
        series: st.series,
        axes: [{}, { values: axisValues(fmtCompact), size: 50 }],
        scales: { y: { range: function (u, min, max) { return [0, Math.max(1, max)]; } } },
        legend: { live: true },
        cursor: { points: { show: false } },
      }, st.data);
    });
    var lat = [s.times, s.latency_p50_ms, s.latency_p95_ms, s.ttft_p50_ms, s.ttft_p95_ms];
    var msVal = function (u, v) { return v === null || v === undefined ? "–" : fmtMs(v); };
    draw("c-latency", {
      series: [{},
        { label: "latency p50", stroke: PALETTE[0], width: 2, value: msVal },
        { label: "latency p95", stroke: PALETTE[0], dash: [6, 4], width: 1.5, value: msVal },
        { label: "TTFT p50", stroke: PALETTE[1], width: 2, value: msVal },
        { label: "TTFT p95", stroke: PALETTE[1], dash: [6, 4], width: 1.5, value: msVal }],
      axes: [{}, { values: axisValues(fmtMs), size: 60 }],
      scales: { y: { range: function (u, min, max) { return [0, Math.max(10, max || 0)]; } } },
    }, lat);
  }

  // ---- call detail ----

  function pretty(text) {
    if (text === null || text === undefined) return null;
    var max = 200000;
    var shown = text.length > max ? text.slice(0, max) : text;
    try { return JSON.stringify(JSON.parse(shown), null, 2); } catch (e) { /* not JSON: as stored */ }
    return text.length > max ? shown + "\n… (" + fmtInt(text.length) + " characters in all)" : shown;
  }

  function showCall(id, db) {
    var body = $("detail-body");
    body.replaceChildren(el("p", "Loading…", "muted"));
    $("detail-title").textContent = "Call " + id;
    var dlg = $("detail");
    if (!dlg.open) dlg.showModal();
    fetchJSON("api/call/" + encodeURIComponent(id) + "?db=" + encodeURIComponent(db)).then(function (c) {
      body.replaceChildren();
      var dl = el("dl", null, "fields");
      [["Time", fmtTime(c.time)], ["Status", c.status], ["Error", c.error], ["Tried", c.tried], ["Model", c.model],
        ["Key", c.key], ["Backend", c.backend], ["Endpoint", c.endpoint], ["Stream", c.stream ? "yes" : "no"],
        ["Latency", fmtMs(c.latency_ms)], ["Time to first token", fmtMs(c.ttft_ms)],
        ["Prompt tokens", fmtInt(c.prompt_tokens)], ["Completion tokens", fmtInt(c.completion_tokens)],
        ["Cost", c.cost_usd === null || c.cost_usd === undefined ? "–" : fmtUSD(c.cost_usd)],
        ["Client IP", c.ip], ["Request ID", c.request_id], ["File", c.file]].forEach(function (kv) {
        if (kv[1] === null || kv[1] === undefined || kv[1] === "") return;
        dl.appendChild(el("dt", kv[0]));
        dl.appendChild(el("dd", kv[1]));
      });
      body.appendChild(dl);
      body.appendChild(el("h3", "Request headers (as stored, secrets masked)"));
      var ht = el("table", null, "headers");
      var hdrs = c.headers && typeof c.headers === "object" ? c.headers : {};
      Object.keys(hdrs).sort().forEach(function (k) {
        var tr = el("tr");
        tr.appendChild(el("th", k));
        tr.appendChild(el("td", hdrs[k]));
        ht.appendChild(tr);
      });
      if (!Object.keys(hdrs).length) body.appendChild(el("p", "Not stored.", "muted")); else body.appendChild(ht);
      [["Request body", c.request], ["Response body", c.response]].forEach(function (b) {
        body.appendChild(el("h3", b[0]));
        var txt = pretty(b[1]);
        body.appendChild(txt === null ? el("p", "Not stored.", "muted") : el("pre", txt, "body"));
      });
    }, function (err) {
      body.replaceChildren(el("p", err.message, "error"));
    });
  }

  // ---- loading ----

  function load() {
    var my = ++seq;
    document.body.dataset.requested = String(my);
    writeHash();
    syncControls();
    $("status").textContent = "Loading…";
    var q = query({ by: state.by, limit: "20" });
    Promise.all([fetchJSON("api/overview?" + q), fetchJSON("api/failures?" + query({ limit: "25" }))]).then(function (res) {
      if (my !== seq) return; // a newer load started
      var o = res[0];
      $("error").hidden = true;
      renderTotals(o.summary);
      renderCharts(o.series);
      ["model", "key", "backend"].forEach(function (d) {
        renderTop(d, o.top[d]);
        fillSelect(d, o.top[d]);
      });
      renderFailures(res[1]);
      $("status").textContent = "Updated " + new Date().toLocaleTimeString();
      document.body.dataset.loaded = String(my);
    }, function (err) {
      if (my !== seq) return;
      $("status").textContent = "";
      $("error").textContent = err.message;
      $("error").hidden = false;
      document.body.dataset.loaded = String(my);
    });
  }

  function syncControls() {
    document.querySelectorAll("#ranges button").forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.dataset.range === state.range));
    });
    $("custom").hidden = state.range !== "custom";
    ["status"].forEach(function (k) { $("f-" + k).value = state[k]; });
    $("by").value = state.by;
  }

  function setFilter(dim, value) {
    state[dim] = value;
    load();
  }

  function toLocalInput(d) {
    var pad = function (n) { return String(n).padStart(2, "0"); };
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function init() {
    readHash();
    document.querySelectorAll("#ranges button").forEach(function (b) {
      b.addEventListener("click", function () {
        if (b.dataset.range === "custom") {
          var to = state.to ? new Date(state.to) : new Date();
          var from = state.from ? new Date(state.from) : new Date(to.getTime() - 86400000);
          $("from").value = toLocalInput(from);
          $("to").value = toLocalInput(to);
          state.range = "custom";
          syncControls();
          return;
        }
        state.range = b.dataset.range;
        load();
      });
    });
    $("custom").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var from = new Date($("from").value), to = new Date($("to").value);
      if (isNaN(from.getTime()) || isNaN(to.getTime())) return;
      state.range = "custom";
      state.from = from.toISOString();
      state.to = to.toISOString();
      load();
    });
    document.querySelectorAll("select[data-filter]").forEach(function (s) {
      s.addEventListener("change", function () { setFilter(s.dataset.filter, s.value); });
    });
    $("by").addEventListener("change", function () { state.by = $("by").value; load(); });
    $("clear").addEventListener("click", function () {
      state.model = state.key = state.backend = state.status = "";
      load();
    });
    $("refresh").addEventListener("click", load);
    $("detail-close").addEventListener("click", function () { $("detail").close(); });
    var resizeTimer = null;
    window.addEventListener("resize", function () {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(function () {
        Object.keys(charts).forEach(function (id) {
          charts[id].setSize({ width: plotWidth($(id)), height: plotHeight() });
        });
      }, 150);
    });
    load();
  }

  init();
})();
