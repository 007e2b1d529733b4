/* genprof HTML report: draws the charts from the JSON blob in #genprof-data with plotly.js.
   Every string from the run is escaped with esc() before plotly sees it (plotly reads a few
   HTML tags in labels). Status for tests and debugging is written to #genprof-status. */
(function () {
  "use strict";
  var status = document.getElementById("genprof-status");
  var drawn = 0;
  var PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6",
    "#9d755d", "#bab0ac", "#eeca3b", "#2f5fb3", "#88d27a"];
  var GIB = 1073741824;

  function esc(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;");
  }
  function fmtS(s) {
    if (s === null || s === undefined) { return "n/a"; }
    var a = Math.abs(s);
    if (a < 1e-3) { return (s * 1e6).toFixed(1) + " us"; }
    if (a < 1) { return (s * 1e3).toFixed(2) + " ms"; }
    if (a < 120) { return s.toFixed(3) + " s"; }
    return (s / 60).toFixed(2) + " min";
  }
  function fmtB(b) {
    if (b === null || b === undefined) { return "n/a"; }
    return (b / GIB).toFixed(2) + " GiB";
  }
  function colorOf(i) { return PALETTE[i % PALETTE.length]; }

  var data;
  try {
    data = JSON.parse(document.getElementById("genprof-data").textContent);
  } catch (err) {
    window.__genprofErrors.push("report data could not be read: " + err);
    finish();
    return;
  }

  function draw(id, traces, layout) {
    var el = document.getElementById(id);
    if (!el) { return; }
    try {
      var cfg = {responsive: true, displaylogo: false, scrollZoom: false};
      Plotly.newPlot(el, traces, layout, cfg);
      drawn += 1;
    } catch (err) {
      el.textContent = "This chart could not be drawn: " + err;
      el.className += " chart-error";
      window.__genprofErrors.push("chart " + id + ": " + err);
    }
  }

  /* ------------------------------------------------------------ timeline */
  var PANEL_ORDER = ["memory", "process_memory", "host_memory", "utilization", "power", "temperature", "clock", "other"];

  function timeline() {
    var g = data.gantt;
    var lanes = g.lanes;
    var panels = [];
    var byPanel = {};
    data.series.forEach(function (s) {
      if (!byPanel[s.panel]) { byPanel[s.panel] = {id: s.panel, title: s.axis_title, note: s.panel_note, series: []}; }
      byPanel[s.panel].series.push(s);
    });
    PANEL_ORDER.forEach(function (p) { if (byPanel[p]) { panels.push(byPanel[p]); } });

    var ganttPx = lanes.length ? Math.max(120, 46 * lanes.length + 20) : 0;
    var panelPx = 150;
    var gapPx = 28;
    var heights = [];
    if (ganttPx) { heights.push(ganttPx); }
    panels.forEach(function () { heights.push(panelPx); });
    if (!heights.length) {
      document.getElementById("chart-timeline").textContent = "No spans and no samples were recorded.";
      return;
    }
    var margin = {t: 84, b: 46};
    var plotPx = heights.reduce(function (a, b) { return a + b; }, 0) + gapPx * (heights.length - 1);
    var total = plotPx + margin.t + margin.b;
    var layout = {
      height: total, margin: {l: 150, r: 20, t: margin.t, b: margin.b},
      hovermode: "closest", barmode: "overlay", showlegend: true,
      legend: {orientation: "h", y: 1, yanchor: "bottom", x: 0, font: {size: 11}},
      xaxis: {title: {text: "time since run start (s)"}, showspikes: true, spikemode: "across",
              spikethickness: 1, spikedash: "dot", spikecolor: "#999", zeroline: false},
      shapes: [], annotations: []
    };
    var traces = [];
    var top = 1.0;
    var axisNames = [];
    function nextDomain(px) {
      var h = px / plotPx;
      var d = [Math.max(0, top - h), top];
      top = top - h - gapPx / plotPx;
      return d;
    }
    var axisIdx = 0;
    function axisKey() {
      axisIdx += 1;
      return axisIdx === 1 ? ["y", "yaxis"] : ["y" + axisIdx, "yaxis" + axisIdx];
    }

    if (ganttPx) {
      var ak = axisKey();
      axisNames.push(ak[1]);
      layout[ak[1]] = {domain: nextDomain(ganttPx), tickvals: lanes.map(function (_, i) { return i; }),
        ticktext: lanes.map(esc), autorange: "reversed", zeroline: false, showgrid: false,
        range: [lanes.length - 0.5, -0.5], fixedrange: true};
      var c = g.spans;
      var host = {x: [], base: [], y: [], text: [], color: []};
      var gpu = {x: [], base: [], y: [], text: [], color: []};
      for (var i = 0; i < c.id.length; i++) {
        var nm = g.names[c.name[i]];
        var label = "<b>" + esc(nm) + "</b>" + (c.index[i] !== null ? " #" + c.index[i] : "") +
          "<br>start " + fmtS(c.start[i]) + "<br>host " + fmtS(c.dur[i]) + "<br>GPU " + fmtS(c.gpu[i]) +
          (c.peak[i] !== null ? "<br>peak allocated " + fmtB(c.peak[i]) : "") +
          (c.energy[i] !== null ? "<br>energy " + c.energy[i].toFixed(1) + " J" : "");
        var col = colorOf(c.name[i]);
        host.x.push(c.dur[i]); host.base.push(c.start[i]); host.y.push(c.lane[i] - 0.19);
        host.text.push(label); host.color.push(col);
        if (c.gpu[i] !== null) {
          gpu.x.push(c.gpu[i]); gpu.base.push(c.start[i]); gpu.y.push(c.lane[i] + 0.19);
          gpu.text.push(label); gpu.color.push(col);
        }
      }
      traces.push({type: "bar", orientation: "h", name: "host time", x: host.x, base: host.base, y: host.y,
        width: 0.34, text: host.text, textposition: "none", hovertemplate: "%{text}<extra>host</extra>",
        marker: {color: host.color, line: {width: 0.5, color: "#ffffff"}}, yaxis: ak[0], legendgroup: "spans"});
      if (gpu.x.length) {
        traces.push({type: "bar", orientation: "h", name: "GPU time (from host start)", x: gpu.x, base: gpu.base,
          y: gpu.y, width: 0.34, text: gpu.text, textposition: "none", hovertemplate: "%{text}<extra>GPU</extra>",
          marker: {color: gpu.color, opacity: 0.55, pattern: {shape: "/", size: 5, solidity: 0.3}},
          yaxis: ak[0], legendgroup: "spans"});
      }
    }

    panels.forEach(function (p) {
      var ak = axisKey();
      axisNames.push(ak[1]);
      var isMem = p.id === "memory" || p.id === "process_memory" || p.id === "host_memory";
      var dom = nextDomain(panelPx);
      layout[ak[1]] = {domain: dom, title: {text: esc(p.title), font: {size: 11}},
        zeroline: false, rangemode: (p.id === "utilization" || isMem) ? "tozero" : "normal"};
      if (p.note) {
        layout.annotations.push({xref: "paper", yref: "paper", x: 0, y: dom[1], xanchor: "left", yanchor: "bottom",
          showarrow: false, text: esc(p.note), font: {size: 10, color: "#666"}});
      }
      p.series.forEach(function (s, k) {
        var ys = isMem ? s.v.map(function (v) { return v === null ? null : v / GIB; }) : s.v;
        var unit = isMem ? " GiB" : "";
        traces.push({type: "scatter", mode: "lines",
          name: esc(s.device + " " + s.name), x: s.t, y: ys, yaxis: ak[0],
          line: {width: 1.3, shape: s.kind === "state" ? "hv" : "linear", color: PALETTE[(k + 3 * PANEL_ORDER.indexOf(p.id)) % PALETTE.length]},
          hovertemplate: esc(s.device + " " + s.name) + ": %{y:.4~g}" + unit + " at %{x:.2f} s" +
            "<extra>" + esc(s.source || "") + (s.shown_points < s.points ? " (min/max of " + s.points + " samples)" : "") + "</extra>"});
      });
    });
    var last = axisNames[axisNames.length - 1];
    layout.xaxis.anchor = last === "yaxis" ? "y" : "y" + last.slice(5);

    // shade outermost phases across every row
    var seen = {};
    var nameIdx = {};
    g.names.forEach(function (n, i) { nameIdx[n] = i; });
    g.shade.forEach(function (ph) {
      var ci = 0;
      for (var j = 0; j < g.names.length; j++) {
        var parts = g.names[j].split("/");
        if (parts[parts.length - 1] === ph.name) { ci = j; break; }
      }
      var shape = {type: "rect", xref: "x", yref: "paper", x0: ph.start, x1: ph.end, y0: 0, y1: 1,
        fillcolor: colorOf(ci), opacity: 0.09, line: {width: 0}, layer: "below"};
      if (!seen[ph.name]) {
        seen[ph.name] = true;
        shape.showlegend = true;
        shape.name = "phase: " + esc(ph.name);
        shape.legendgroup = "phase " + esc(ph.name);
      } else {
        shape.legendgroup = "phase " + esc(ph.name);
      }
      layout.shapes.push(shape);
    });
    draw("chart-timeline", traces, layout);
  }

  /* ------------------------------------------------------------ steps / blocks */
  /* A run of several pipelines: one chart per pipeline (each on its own scale; a Wan step and an
     SD step differ tenfold), steps numbered in run order within the pipeline. */
  function perPipeline(id, cols, what) {
    var el = document.getElementById(id);
    if (!el || !cols.n.length) { return; }
    var order = [];
    var idx = {};
    for (var i = 0; i < cols.n.length; i++) {
      var key = cols.pipeline ? String(cols.pipeline[i]) : "null";
      if (!(key in idx)) { idx[key] = []; order.push(key); }
      idx[key].push(i);
    }
    if (order.length < 2) { perStep(id, cols, what, null); return; }
    order.forEach(function (key, k) {
      var sub = {};
      Object.keys(cols).forEach(function (c) { sub[c] = idx[key].map(function (i) { return cols[c][i]; }); });
      sub.n = sub.n.map(function (_, j) { return j + 1; });
      var name = key === "null" ? "(no pipeline attribute)" : key;
      var head = document.createElement("h3");
      head.textContent = name;
      var div = document.createElement("div");
      div.id = id + "-" + k;
      div.className = "chart";
      el.appendChild(head);
      el.appendChild(div);
      perStep(div.id, sub, what, name);
    });
  }

  function perStep(id, cols, what, pipeline) {
    if (!document.getElementById(id) || !cols.n.length) { return; }
    var warm = {x: [], y: [], t: []};
    var steady = {x: [], y: [], t: []};
    var gpu = {x: [], y: []};
    for (var i = 0; i < cols.n.length; i++) {
      var where = (cols.block && cols.block[i] !== null && cols.block[i] !== undefined)
        ? " (block " + cols.block[i] + ", step " + cols.index[i] + ")"
        : (cols.index[i] !== null ? " (index " + cols.index[i] + ")" : "");
      var pipe = (cols.pipeline && cols.pipeline[i]) ? " [" + esc(cols.pipeline[i]) + "]" : "";
      var txt = what + " " + cols.n[i] + where + " of call " + (cols.group[i] + 1) + pipe + "<br>host " + fmtS(cols.host[i]) + "<br>GPU " + fmtS(cols.gpu[i]);
      var dst = cols.warmup[i] ? warm : steady;
      dst.x.push(cols.n[i]); dst.y.push(cols.host[i] === null ? null : cols.host[i] * 1e3); dst.t.push(txt);
      if (cols.gpu[i] !== null) { gpu.x.push(cols.n[i]); gpu.y.push(cols.gpu[i] * 1e3); }
    }
    var traces = [
      {type: "bar", name: what + " host time", x: steady.x, y: steady.y, width: 0.8, text: steady.t, textposition: "none",
       hovertemplate: "%{text}<extra></extra>", marker: {color: "#4c78a8"}},
      {type: "bar", name: "warm-up " + what + " host time", x: warm.x, y: warm.y, width: 0.8, text: warm.t, textposition: "none",
       hovertemplate: "%{text}<extra>warm-up</extra>", marker: {color: "#f58518"}}
    ];
    if (gpu.x.length) {
      traces.push({type: "scatter", mode: "markers", name: what + " GPU time", x: gpu.x, y: gpu.y,
        marker: {size: 4, color: "#222"}, hovertemplate: "GPU %{y:.2f} ms<extra></extra>"});
    }
    draw(id, traces, {height: 300, margin: {l: 60, r: 20, t: 10, b: 44}, barmode: "overlay", bargap: 0.1,
      hovermode: "closest", legend: {orientation: "h", y: 1.08},
      xaxis: {title: {text: what + (pipeline ? " of " + esc(pipeline) : "") + " (run order)"},
              range: [0.4, cols.n.length + 0.6]},
      yaxis: {title: {text: "ms"}, rangemode: "tozero"}});
  }

  function finish() {
    if (!status) { return; }
    status.setAttribute("data-charts", String(drawn));
    status.setAttribute("data-errors", String(window.__genprofErrors.length));
    status.setAttribute("data-error-text", window.__genprofErrors.join(" | ").slice(0, 2000));
    status.setAttribute("data-state", "done");
  }

  try {
    if (typeof Plotly === "undefined") { throw new Error("plotly.js did not load"); }
    timeline();
    perPipeline("chart-steps", data.steps, "step");
    perPipeline("chart-blocks", data.blocks, "block");
  } catch (err) {
    window.__genprofErrors.push(String(err));
  }
  finish();
})();
