// The tear sheet's charts, built in the browser with BokehJS's plotting API from the page's
// JSON (the script element #sheet-data, its arrays in #sheet-arrays: reporting/sheet_charts.py).
// Every chart is a root of one Bokeh document (so ranges link across charts), placed in its
// <div data-root="NAME">. Once the document is idle, <body data-charts-rendered> holds the
// number of roots drawn.
(function () {
  "use strict";
  var plt = Bokeh.Plotting;
  var M = Bokeh.Models || Bokeh;
  var TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save";
  var UP = "#26a69a", DOWN = "#ef5350", PURPLE = "#8e44ad";
  var PALETTE = ["#1f77b4", "#ff7f0e", "#8e44ad", "#7f7f7f", "#2ca02c", "#d62728",
                 "#17becf", "#bcbd22", "#e377c2", "#8c564b"];
  var EXITS = {signal: ["circle", "#1f77b4"], stop_loss: ["x", "#d62728"],
               take_profit: ["star", "#2ca02c"], time_stop: ["square", "#7f7f7f"],
               liquidation: ["diamond_cross", "#000000"], blown: ["hex", "#8b0000"],
               open: ["circle_dot", "#bcbd22"]};
  var DTYPES = {f8: Float64Array, f4: Float32Array, i4: Int32Array};

  // The page's arrays: one deflated block of byte-shuffled arrays (sheet_charts.pack).
  async function inflate(b64) {
    var bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  // {"nd": dtype, "off": byte offset, "n": items} -> typed array (unshuffled); anything
  // else unchanged, recursively in plain objects and arrays
  function decode(v, block) {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      if (v.nd) {
        var T = DTYPES[v.nd], k = T.BYTES_PER_ELEMENT, n = v.n;
        var out = new Uint8Array(k * n);
        for (var j = 0; j < k; j++) {
          var src = v.off + j * n;
          for (var i = 0; i < n; i++) { out[i * k + j] = block[src + i]; }
        }
        return new T(out.buffer);
      }
      var obj = {};
      Object.keys(v).forEach(function (key) { obj[key] = decode(v[key], block); });
      return obj;
    }
    if (Array.isArray(v)) { return v.map(function (x) { return decode(x, block); }); }
    return v;
  }

  function source(data) { return new M.ColumnDataSource({data: data}); }
  function field(name) { return {field: name}; }

  function numeral(fmt) { return new M.NumeralTickFormatter({format: fmt}); }

  function base(c, ranges, opts) {
    var o = Object.assign({name: c.name, title: c.title, tools: TOOLS,
                           active_drag: "xpan", active_scroll: "xwheel_zoom",
                           sizing_mode: "stretch_width", height: c.height || 240},
                          opts || {});
    if (c.time) { o.x_axis_type = "datetime"; }
    if (c.log) { o.y_axis_type = "log"; }
    if (c.link && ranges[c.link]) { o.x_range = ranges[c.link]; }
    if (c.yrange) { o.y_range = new M.Range1d({start: c.yrange[0], end: c.yrange[1]}); }
    var p = plt.figure(o);
    if (c.link && !ranges[c.link]) { ranges[c.link] = p.x_range; }
    p.toolbar.logo = null;
    return p;
  }

  function legend(p, where) {
    if (p.legend) {
      p.legend.click_policy = "hide";
      p.legend.location = where || "top_left";
      p.legend.label_text_font_size = "8pt";
      p.legend.background_fill_alpha = 0.6;
    }
  }

  // The legend beside the plot, not over it (a price chart's markers fill its whole area)
  function legendOutside(p) {
    legend(p);
    var boxes = p.center.filter(function (r) { return r instanceof M.Legend; });
    if (!boxes.length) { return; }
    p.center = p.center.filter(function (r) { return boxes.indexOf(r) < 0; });
    boxes.forEach(function (box) {
      box.location = "top_left";
      box.background_fill_alpha = 1;
      p.add_layout(box, "right");
    });
  }

  function hover(p, renderers, tips, mode) {
    p.add_tools(new M.HoverTool({renderers: renderers, tooltips: tips, mode: mode || "mouse",
      formatters: {"@x": "datetime", "@entry": "datetime", "@exit": "datetime",
                   "@ts": "datetime", "@known": "datetime"}}));
  }

  function hline(p, y, color, dash) {
    p.add_layout(new M.Span({location: y, dimension: "width", line_color: color || "#8a8a8a",
                             line_dash: dash || "dashed", line_width: 1}));
  }

  var BUILD = {};

  BUILD.lines = function (c, ranges) {
    var p = base(c, ranges);
    var data = {x: c.x}, renderers = [], tips = [["time", c.time ? "@x{%F %H:%M}" : "@x"]];
    var fmt = "{" + (c.tipfmt || "0,0.00") + "}";
    c.series.forEach(function (s, i) {
      data["s" + i] = s.y;
      tips.push([s.label, "@s" + i + fmt]);
    });
    var src = source(data);
    c.series.forEach(function (s, i) {
      renderers.push(p.line({x: field("x"), y: field("s" + i), source: src, line_width: 1.5,
                             line_color: s.color || PALETTE[i % PALETTE.length],
                             legend_label: s.label}));
    });
    hover(p, renderers.slice(0, 1), tips, "vline");
    if (c.hline !== null && c.hline !== undefined) { hline(p, c.hline); }
    if (c.yfmt) { p.yaxis.formatter = numeral(c.yfmt); }
    if (c.ylabel) { p.yaxis.axis_label = c.ylabel; }
    (c.shade || []).forEach(function (span, i) {
      p.add_layout(new M.BoxAnnotation({left: span[0], right: span[1], fill_alpha: 0.08,
                                        fill_color: i % 2 ? "#8a8a8a" : "#1f77b4"}));
    });
    legend(p);
    return p;
  };

  BUILD.area = function (c, ranges) {
    var p = base(c, ranges);
    var src = source({x: c.x, y: c.y});
    p.varea({x: field("x"), y1: 0, y2: field("y"), source: src, fill_color: c.color,
             fill_alpha: 0.35});
    var r = p.line({x: field("x"), y: field("y"), source: src, line_color: c.color,
                    line_width: 1});
    hover(p, [r], [["time", "@x{%F %H:%M}"], [c.ylabel, "@y{" + c.tipfmt + "}"]], "vline");
    p.yaxis.formatter = numeral(c.yfmt);
    p.yaxis.axis_label = c.ylabel;
    return p;
  };

  // Candles of k bars each over the visible window: the smallest k that keeps it under
  // maxc candles, buckets [j*k, (j+1)*k) of the bar index (stable while panning).
  function rebucket(c, full, view, xr, yr) {
    var T = full.t, O = full.o, H = full.h, L = full.l, C = full.c, n = T.length;
    if (!n) { return; }
    function lb(v) {
      var lo = 0, hi = n;
      while (lo < hi) { var m = (lo + hi) >> 1; if (T[m] < v) { lo = m + 1; } else { hi = m; } }
      return lo;
    }
    var a = (xr.start - c.t0) / 60000, b = (xr.end - c.t0) / 60000;
    var i0 = Math.max(0, lb(a) - 1), i1 = Math.min(n, lb(b) + 1);
    var k = Math.max(1, Math.ceil((i1 - i0) / c.maxc));
    i0 = Math.floor(i0 / k) * k;
    var d = {x: [], w: [], open: [], high: [], low: [], close: [], top: [], bottom: [], k: [],
             color: []};
    for (var s = i0; s < i1; s += k) {
      var e = Math.min(s + k, n), hi = -Infinity, lo = Infinity;
      for (var j = s; j < e; j++) { if (H[j] > hi) { hi = H[j]; } if (L[j] < lo) { lo = L[j]; } }
      var first = c.t0 + T[s] * 60000, last = c.t0 + T[e - 1] * 60000 + c.step;
      var op = O[s], cl = C[e - 1];
      d.x.push((first + last) / 2); d.w.push((last - first) * 0.8);
      d.open.push(op); d.high.push(hi); d.low.push(lo); d.close.push(cl);
      d.top.push(Math.max(op, cl)); d.bottom.push(Math.min(op, cl)); d.k.push(e - s);
      d.color.push(cl >= op ? UP : DOWN);
    }
    view.data = d;
    // the price axis spans the bars in view (markers sit at bar prices: inside it)
    var lo = Math.min.apply(null, d.low), hi = Math.max.apply(null, d.high);
    if (yr && isFinite(lo) && isFinite(hi)) {
      var pad = Math.max((hi - lo) * 0.06, Math.abs(hi) * 1e-4);
      yr.setv({start: lo - pad, end: hi + pad});
    }
  }

  function pick(data, idx) {
    var out = {};
    Object.keys(data).forEach(function (k) {
      out[k] = idx.map(function (i) { return data[k][i]; });
    });
    return out;
  }

  function tradeMarkers(p, c) {
    var tr = c.trades, n = tr.entry.length;
    if (!n) { return; }
    var color = [];
    for (var i = 0; i < n; i++) { color.push(tr.pnl[i] >= 0 ? UP : DOWN); }
    var data = Object.assign({}, tr, {color: color});
    var all = source(data);
    all.name = "trades-" + c.symbol;
    p.segment({x0: field("entry"), y0: field("entry_price"), x1: field("exit"),
               y1: field("exit_price"), source: all, line_color: field("color"),
               line_alpha: 0.7, legend_label: "trade"});
    var shown = [];
    [["long", "triangle", UP], ["short", "inverted_triangle", DOWN]].forEach(function (s) {
      var idx = [];
      for (var i = 0; i < n; i++) { if (tr.side[i] === s[0]) { idx.push(i); } }
      if (!idx.length) { return; }
      var src = source(pick(data, idx));
      src.name = "entries-" + s[0] + "-" + c.symbol;
      shown.push(p.scatter({x: field("entry"), y: field("entry_price"), source: src,
                            marker: s[1], size: 10, fill_color: s[2], line_color: "black",
                            line_width: 0.5, legend_label: "entry " + s[0]}));
    });
    Object.keys(EXITS).forEach(function (reason) {
      var idx = [];
      for (var i = 0; i < n; i++) { if (tr.reason[i] === reason) { idx.push(i); } }
      if (!idx.length) { return; }
      var src = source(pick(data, idx));
      src.name = "exits-" + reason + "-" + c.symbol;
      shown.push(p.scatter({x: field("exit"), y: field("exit_price"), source: src,
                            marker: EXITS[reason][0], size: 9, line_color: EXITS[reason][1],
                            fill_color: EXITS[reason][1], line_width: 1.5,
                            legend_label: "exit: " + reason.replace("_", " ")}));
    });
    hover(p, shown, [["side", "@side"], ["qty", "@qty{0,0.[0000]}"],
                     ["entry", "@entry{%F %H:%M}"], ["entry price", "@entry_price{0,0.00[00]}"],
                     ["exit", "@exit{%F %H:%M}"], ["exit price", "@exit_price{0,0.00[00]}"],
                     ["exit reason", "@reason"], ["P&L", "@pnl{0,0.00}"],
                     ["return", "@ret{0.00%}"]]);
  }

  function eventMarkers(p, c) {
    var ev = c.events;
    if (!ev || !ev.ts.length) { return; }
    [[true, "event \u2192 entry"], [false, "event, no entry"]].forEach(function (kind) {
      var idx = [];
      for (var i = 0; i < ev.ts.length; i++) { if (Boolean(ev.triggered[i]) === kind[0]) { idx.push(i); } }
      if (!idx.length) { return; }
      var src = source(pick(ev, idx));
      src.name = "events-" + (kind[0] ? "entry" : "none") + "-" + c.symbol;
      var r = p.scatter({x: field("ts"), y: field("y"), source: src, marker: "diamond",
                         size: 11, line_color: PURPLE,
                         fill_color: kind[0] ? PURPLE : null, legend_label: kind[1]});
      hover(p, [r], [["known at", "@known{%F %H:%M}"], ["event", "@type"],
                     ["direction", "@direction"], ["bar high", "@y{0,0.00[00]}"]]);
    });
  }

  BUILD.price = function (c, ranges) {
    var n = c.full.t.length;
    var start = c.t0, end = n ? c.t0 + c.full.t[n - 1] * 60000 + c.step : c.t0 + c.step;
    if (!ranges[c.link]) {
      ranges[c.link] = new M.Range1d({start: start, end: end, bounds: [start, end]});
    }
    var yr = new M.Range1d({start: 0, end: 1});
    var p = base(c, ranges, {height: c.height || 380, y_range: yr});
    var view = source({x: [], w: [], open: [], high: [], low: [], close: [], top: [],
                       bottom: [], k: [], color: []});
    view.name = "candles-" + c.symbol;
    p.segment({x0: field("x"), y0: field("low"), x1: field("x"), y1: field("high"),
               source: view, line_color: field("color")});
    var body = p.vbar({x: field("x"), width: field("w"), top: field("top"),
                       bottom: field("bottom"), source: view, fill_color: field("color"),
                       line_color: field("color")});
    hover(p, [body], [["time", "@x{%F %H:%M}"], ["bars", "@k"],
                      ["open", "@open{0,0.00[00]}"], ["high", "@high{0,0.00[00]}"],
                      ["low", "@low{0,0.00[00]}"], ["close", "@close{0,0.00[00]}"]]);
    var xr = p.x_range;
    var update = function () { rebucket(c, c.full, view, xr, yr); };
    xr.properties.start.change.connect(update);
    xr.properties.end.change.connect(update);
    update();
    tradeMarkers(p, c);
    eventMarkers(p, c);
    p.yaxis.formatter = numeral("0,0.[00]");
    legendOutside(p);
    return p;
  };

  BUILD.hist = function (c, ranges) {
    var p = base(c, ranges);
    var n = c.top.length, colors = c.colors || [];
    for (var i = colors.length; i < n; i++) { colors.push("#1f77b4"); }
    var src = source({left: c.left, right: c.right, top: c.top, color: colors});
    var r = p.quad({left: field("left"), right: field("right"), top: field("top"), bottom: 0,
                    source: src, fill_color: field("color"), line_color: "white",
                    fill_alpha: 0.8});
    var f = "{" + c.xfmt + "}";
    hover(p, [r], [["from", "@left" + f], ["to", "@right" + f], ["count", "@top"]]);
    var lineColors = ["#d62728", "#9467bd", "#8c564b", "#e377c2"];
    (c.spans || []).forEach(function (s, i) {
      var col = lineColors[i % lineColors.length];
      p.add_layout(new M.Span({location: s.x, dimension: "height", line_color: col,
                               line_dash: "dashed", line_width: 2}));
      p.line({x: [s.x, s.x], y: [0, 0], line_color: col, line_dash: "dashed",
              legend_label: s.label});
    });
    p.xaxis.formatter = numeral(c.xfmt);
    p.xaxis.axis_label = c.xlabel;
    p.yaxis.axis_label = "count";
    legend(p, "top_right");
    return p;
  };

  BUILD.heatmap = function (c) {
    var rows = c.rows.slice().reverse();
    var p = plt.figure({name: c.name, title: c.title, tools: "save",
                        x_range: c.columns, y_range: rows, x_axis_location: "above",
                        sizing_mode: "stretch_width", height: Math.max(100, 34 * rows.length + 70)});
    p.toolbar.logo = null;
    var top = 1e-9;
    c.cells.ret.forEach(function (v) { if (isFinite(v)) { top = Math.max(top, Math.abs(v)); } });
    var mapper = new M.LinearColorMapper({palette: c.palette, low: -top, high: top,
                                          nan_color: "#eeeeee"});
    var src = source(c.cells);
    var r = p.rect({x: field("col"), y: field("row"), width: 0.96, height: 0.92, source: src,
                    fill_color: {field: "ret", transform: mapper}, line_color: null});
    p.text({x: field("col"), y: field("row"), text: field("label"), source: src,
            text_align: "center", text_baseline: "middle", text_font_size: "8pt"});
    hover(p, [r], [["", "@row @col"], ["return", "@ret{0.00%}"]]);
    p.xgrid.grid_line_color = null;
    p.ygrid.grid_line_color = null;
    return p;
  };

  BUILD.bars = function (c) {
    var p = plt.figure({name: c.name, title: c.title, tools: "save", x_range: c.labels,
                        sizing_mode: "stretch_width", height: c.height || 240});
    p.toolbar.logo = null;
    var src = source({x: c.labels, v: c.values, color: c.colors});
    var r = p.vbar({x: field("x"), top: field("v"), width: 0.7, source: src,
                    fill_color: field("color"), line_color: null});
    hover(p, [r], [["", "@x"], ["value", "@v{" + c.yfmt + "}"]]);
    p.yaxis.formatter = numeral(c.yfmt);
    hline(p, 0, "black", "solid");
    return p;
  };

  BUILD.grouped = function (c) {
    var names = c.series.map(function (s) { return s.label; });
    var factors = [], values = [], colors = [];
    c.groups.forEach(function (g, i) {
      c.series.forEach(function (s, j) {
        factors.push([g, s.label]);
        values.push(s.values[i] === null ? NaN : s.values[i]);
        colors.push(PALETTE[j % PALETTE.length]);
      });
    });
    var p = plt.figure({name: c.name, title: c.title, tools: "save",
                        x_range: new M.FactorRange({factors: factors}),
                        sizing_mode: "stretch_width", height: c.height || 260});
    p.toolbar.logo = null;
    var src = source({x: factors, v: values, color: colors});
    var r = p.vbar({x: field("x"), top: field("v"), width: 0.85, source: src,
                    fill_color: field("color"), line_color: null});
    hover(p, [r], [["", "@x"], ["Sharpe", "@v{0.00}"]]);
    hline(p, 0, "black", "solid");
    p.xaxis.major_label_orientation = 0.9;
    p.yaxis.axis_label = c.ylabel || "";
    void names;
    return p;
  };

  BUILD.band = function (c, ranges) {
    var p = base(c, ranges);
    var src = source({x: c.x, mean: c.mean, lo: c.lo, hi: c.hi});
    p.varea({x: field("x"), y1: field("lo"), y2: field("hi"), source: src,
             fill_color: "#1f77b4", fill_alpha: 0.2, legend_label: "band"});
    var r = p.line({x: field("x"), y: field("mean"), source: src, line_color: "#1f77b4",
                    line_width: 2, legend_label: "mean"});
    p.add_layout(new M.Span({location: 0, dimension: "height", line_color: "black",
                             line_dash: "dashed"}));
    hline(p, 0, "#8a8a8a", "solid");
    hover(p, [r], [["offset", "@x"], ["mean", "@mean{0.0}"], ["band", "@lo{0.0} to @hi{0.0}"]],
          "vline");
    p.xaxis.axis_label = c.xlabel;
    p.yaxis.axis_label = c.ylabel;
    legend(p);
    return p;
  };

  function toggles(doc) {
    document.querySelectorAll(".toggle button[data-show]").forEach(function (b) {
      b.addEventListener("click", function () {
        b.parentNode.querySelectorAll("button[data-show]").forEach(function (o) {
          var on = o === b;
          var wrap = document.querySelector('figure[data-chart="' + o.dataset.show + '"]');
          wrap.hidden = !on;
          doc.get_model_by_name(o.dataset.show).visible = on;
        });
      });
    });
  }

  async function main() {
    var block = await inflate(document.getElementById("sheet-arrays").textContent.trim());
    var spec = decode(JSON.parse(document.getElementById("sheet-data").textContent), block);
    // add_document_standalone places the i-th root of the document in targets[i]
    var doc = new Bokeh.Document(), ranges = {}, targets = [];
    spec.charts.forEach(function (c) {
      var p = BUILD[c.kind](c, ranges);
      if (c.hidden) { p.visible = false; }
      doc.add_root(p);
      targets.push(document.querySelector('div[data-root="' + c.name + '"]'));
    });
    await Bokeh.embed.add_document_standalone(doc, document.body, targets);
    toggles(doc);
    (function idle() {
      if (doc.is_idle) { document.body.dataset.chartsRendered = String(doc.roots().length); }
      else { setTimeout(idle, 50); }
    })();
  }

  main().catch(function (e) {
    document.body.dataset.chartsError = String(e);
    console.error(e);
  });
})();
