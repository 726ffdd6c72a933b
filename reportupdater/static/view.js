// The page script of `reportupdater view` (reportupdater/view.py inlines it).
// Reads the folder's data from the JSON script element with id "data"
// and builds the page. Every text that comes from the folder goes in with
// textContent (or setAttribute on data-/title attributes): never innerHTML.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("data").textContent);
  const page = document.getElementById("page");
  const tip = document.getElementById("tip");
  const KEYS = ["computed", "missing", "failing", "waiting", "rerun", "unreadable"];
  // Worst first: a pixel holding several intervals shows the worst of them.
  const SEVERITY = [5, 2, 1, 4, 3, 0];
  const MAX_CELLS = 1000;   // intervals per strip shown one cell each; beyond, cells share a pixel
  const TOP_DEFAULT = 10;
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                   "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31",
                   "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1"];
  const pending = [];       // charts not drawn yet: [element, draw]

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function add(parent, tag, className, text) {
    const node = el(tag, className, text);
    parent.appendChild(node);
    return node;
  }

  function undelta(flat) {
    const out = [];
    if (!flat.length) return out;
    out.push(flat[0]);
    for (let i = 1; i < flat.length; i += 2) {
      const delta = flat[i], count = flat[i + 1];
      for (let k = 0; k < count; k++) out.push(out[out.length - 1] + delta);
    }
    return out;
  }

  function labelText(number, hourly) {
    return hourly ? new Date(number * 3600000).toISOString().slice(0, 19)
                  : new Date(number * 86400000).toISOString().slice(0, 10);
  }

  function utcText(seconds) {
    const text = new Date(seconds * 1000).toISOString();
    return text.slice(11, 19) === "00:00:00" ? text.slice(0, 10) : text.slice(0, 16) + "Z";
  }

  function shortNumber(value) {  // axis ticks: 1.5M, 250k, 0.25 (the legend shows the value itself)
    if (value == null) return "";
    const size = Math.abs(value);
    const units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
    for (let i = 0; i < units.length; i++) {
      if (size >= units[i][0]) return +(value / units[i][0]).toPrecision(3) + units[i][1];
    }
    return String(+value.toPrecision(3));
  }

  function plural(count, word) {
    return count + " " + word + (count === 1 ? "" : "s");
  }

  // ---------------------------------------------------------------- header

  document.title = "reportupdater view: " + data.query_folder;
  add(page, "h1", null, "reportupdater view: " + data.query_folder);
  add(page, "p", "meta", "Output folder " + data.output_folder + " as of " + data.generated +
      " (UTC). " + (data.ok ? "Everything due is computed." : "Something is missing or failing."));
  if (data.config_errors.length) {
    const box = add(page, "section", "errors");
    add(box, "h2", null, "Config errors");
    const list = add(box, "ul");
    data.config_errors.forEach(function (text) { add(list, "li", null, text); });
  }
  const legend = add(page, "p", "legend");
  data.states.forEach(function (name, state) {
    add(legend, "span", "swatch s" + state);
    add(legend, "span", "legend-name", name);
  });
  if (data.lazy) {
    const button = add(page, "button", "draw-all", "Draw every chart now");
    button.type = "button";
    button.addEventListener("click", drawAll);
    add(page, "p", "meta", "A large folder: each report's charts are drawn when it scrolls into view.");
  }

  const table = add(page, "table", "summary");
  const head = add(add(table, "thead"), "tr");
  ["report", "granularity", "first", "last", "due", "missing", "failing", "waiting",
   "next run computes", "left for later", "next due"].forEach(function (name) { add(head, "th", null, name); });
  const body = add(table, "tbody");

  // ---------------------------------------------------------------- reports

  data.reports.forEach(function (report, index) {
    const s = report.summary;
    const row = add(body, "tr", s.ok ? "ok" : "not-ok");
    const link = el("a", null, report.key);
    link.setAttribute("href", "#report-" + index);
    add(row, "td").appendChild(link);
    [s.granularity, s.first || "-", s.last || "-", s.due, s.missing, s.failing, s.waiting,
     s.next_run.compute, s.next_run.later, s.next_due || "-"].forEach(function (value) {
      add(row, "td", null, value);
    });

    const section = add(page, "section", "report");
    section.id = "report-" + index;
    section.setAttribute("data-report", report.key);
    add(section, "h2", null, report.key);
    add(section, "p", "meta", report.granularity + "; " + (s.ok ? "ok" : "not ok") +
        (report.verdict !== "due" ? "; " + report.verdict : ""));
    if (report.notes.length) {
      const notes = add(section, "ul", "notes");
      report.notes.forEach(function (text) { add(notes, "li", null, text); });
    }
    coverage(section, report);
    nextRun(section, report);
    series(section, report);
  });

  // ---------------------------------------------------------------- coverage

  function coverage(section, report) {
    add(section, "h3", null, "Coverage");
    const labels = undelta(report.labels);
    const n = labels.length;
    const totals = [0, 0, 0, 0, 0, 0];
    const box = add(section, "div", "coverage");
    if (!report.files.length || !n) {
      add(box, "p", "meta", "Nothing is due yet: no interval to show.");
    }
    const bucket = Math.max(1, Math.ceil(n / MAX_CELLS));
    report.files.forEach(function (file) {
      const runs = file.runs;
      const line = add(box, "div", "strip-row");
      add(line, "div", "strip-name", file.name || report.key);
      const strip = add(line, "div", "strip");
      strip.setAttribute("data-file", file.name || report.key);
      // Cell states per bucket (one bucket per pixel-wide cell at most).
      const cells = Math.ceil(n / bucket);
      const worst = new Int8Array(cells).fill(-1);
      const starts = [];
      let at = 0;
      for (let i = 0; i < runs.length; i += 3) {
        const state = runs[i], count = runs[i + 2];
        starts.push(at);
        totals[state] += count;
        for (let c = Math.floor(at / bucket); c <= Math.floor((at + count - 1) / bucket); c++) {
          if (worst[c] < 0 || SEVERITY.indexOf(state) < SEVERITY.indexOf(worst[c])) worst[c] = state;
        }
        at += count;
      }
      let c = 0;
      while (c < cells) {
        let end = c + 1;
        while (end < cells && worst[end] === worst[c]) end++;
        const first = c * bucket, last = Math.min(n, end * bucket);
        const seg = add(strip, "span", "seg s" + worst[c]);
        seg.style.left = (first / n * 100) + "%";
        seg.style.width = ((last - first) / n * 100) + "%";
        seg.setAttribute("data-state", KEYS[worst[c]]);
        seg.setAttribute("data-count", String(last - first));
        c = end;
      }
      strip.addEventListener("mousemove", function (event) {
        const rect = strip.getBoundingClientRect();
        const i = Math.max(0, Math.min(n - 1, Math.floor((event.clientX - rect.left) / rect.width * n)));
        let lo = 0, hi = starts.length - 1;
        while (lo < hi) {  // the run holding interval i
          const mid = (lo + hi + 1) >> 1;
          if (starts[mid] <= i) lo = mid; else hi = mid - 1;
        }
        const state = runs[lo * 3], reason = report.reasons[runs[lo * 3 + 1]];
        let text = (file.name || report.key) + "\n" + labelText(labels[i], report.hourly) + ": " +
            data.states[state] + (reason !== data.states[state] ? ": " + reason : "");
        if (bucket > 1) {
          const b = Math.floor(i / bucket);
          text += "\n(this cell: " + labelText(labels[b * bucket], report.hourly) + ".." +
              labelText(labels[Math.min(n, (b + 1) * bucket) - 1], report.hourly) +
              ", shown as its worst: " + data.states[worst[b]] + ")";
        }
        showTip(text, event);
      });
      strip.addEventListener("mouseleave", hideTip);
    });
    const counts = add(section, "p", "counts");
    KEYS.forEach(function (key, state) {
      section.setAttribute("data-" + key, String(totals[state]));
      if (totals[state] || state < 2) {
        add(counts, "span", "swatch s" + state);
        add(counts, "span", "count", data.states[state] + " " + totals[state]);
      }
    });
    if (n) {
      add(counts, "span", "range", "  " + labelText(labels[0], report.hourly) + " .. " +
          labelText(labels[n - 1], report.hourly) + " (" + plural(n, "interval") + " per file" +
          (bucket > 1 ? ", " + bucket + " per cell" : "") + ")");
    }
  }

  function showTip(text, event) {
    tip.textContent = text;
    tip.hidden = false;
    const x = Math.min(event.clientX + 12, window.innerWidth - tip.offsetWidth - 4);
    tip.style.left = Math.max(0, x) + "px";
    tip.style.top = (event.clientY + 16) + "px";
  }

  function hideTip() { tip.hidden = true; }

  // ---------------------------------------------------------------- next run

  function nextRun(section, report) {
    add(section, "h3", null, "What the next run does");
    const box = add(section, "div", "next-run");
    const s = report.summary;
    if (report.verdict !== "due") {
      add(box, "p", null, "Nothing runs now: " + report.verdict + ".");
    } else if (!report.next_run.length) {
      add(box, "p", null, "Nothing to compute.");
    } else {
      add(box, "p", null, "Computes " + plural(s.next_run.compute, "interval") +
          (s.next_run.later ? ", leaves " + s.next_run.later + " for later runs" : "") + ":");
      const list = add(box, "ul", "todo");
      report.next_run.forEach(function (file) {
        const parts = [];
        if (file.todo_count) parts.push(plural(file.todo_count, "interval") + ": " + file.todo);
        if (file.later_count) parts.push("later: " + file.later);
        if (file.backing_off_count) parts.push("waiting to retry: " + file.backing_off);
        const item = add(list, "li");
        add(item, "span", "file", file.name);
        add(item, "span", null, " " + parts.join("; "));
      });
    }
    report.file_errors.forEach(function (problem) {
      add(box, "p", "error", problem.name + ": " + problem.error);
    });
    if (report.failures.length) {
      add(box, "p", null, "Last failures (newest first):");
      const failures = add(box, "table", "failures");
      const h = add(add(failures, "thead"), "tr");
      ["file", "interval", "attempts", "last failed", "retry after", "error"].forEach(function (name) {
        add(h, "th", null, name);
      });
      const b = add(failures, "tbody");
      report.failures.forEach(function (f) {
        const r = add(b, "tr");
        [f.where || report.key, f.interval, f.attempts, f.last_failed, f.retry_after].forEach(
          function (value) { add(r, "td", null, value); });
        add(r, "td", "error", f.error);
      });
      if (report.failures_more) add(box, "p", "meta", "and " + report.failures_more + " more");
    }
  }

  // ---------------------------------------------------------------- series

  function series(section, report) {
    add(section, "h3", null, "Series");
    const info = report.series;
    const box = add(section, "div", "series");
    info.notes.forEach(function (text) { add(box, "p", "note", text); });
    if (!info.charts.length) {
      add(box, "p", "meta", "No numeric column to chart.");
      return;
    }
    if (info.dimensions.length) {
      add(box, "p", "meta", "One line per " + info.dimensions.join(", ") +
          " value (and explode value), as the Graphite paths would be.");
    }
    const x = undelta(info.x);
    info.charts.forEach(function (chart) {
      const wrap = add(box, "div", "chart");
      wrap.setAttribute("data-column", chart.column);
      const bar = add(wrap, "div", "chart-bar");
      let shown = Math.min(TOP_DEFAULT, chart.order.length);
      if (chart.order.length > TOP_DEFAULT) {
        add(bar, "span", null, "lines: ");
        const select = add(bar, "select");
        [5, 10, 20, 50].filter(function (k) { return k < chart.order.length; })
          .concat([chart.order.length]).forEach(function (k) {
            const option = add(select, "option", null,
                               k === chart.order.length ? "all " + k : "top " + k);
            option.value = String(k);
            option.selected = k === shown;
          });
        select.addEventListener("change", function () {
          shown = Number(select.value);
          draw();
        });
        add(bar, "span", "meta", " (ranked by the sum of their values)");
      } else {
        shown = chart.order.length;
      }
      const target = add(wrap, "div", "plot");
      let plot = null;
      function draw() {
        if (plot) plot.destroy();
        const lines = chart.order.slice(0, shown);
        const opts = {
          title: chart.column,
          width: chartWidth(target),
          height: 240,
          tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
          scales: { x: { time: true } },
          axes: [{}, { size: 56, values: function (u, splits) { return splits.map(shortNumber); } }],
          series: [{ label: "date (UTC)", value: function (u, v) { return v == null ? "--" : utcText(v); } }]
            .concat(lines.map(function (line, k) {
              // Width 1: a fractional width makes software rendering (headless,
              // no GPU) draw each chart about five times slower.
              return { label: info.names[line], stroke: PALETTE[k % PALETTE.length], width: 1 };
            })),
        };
        plot = new uPlot(opts, [x].concat(lines.map(function (line) { return chart.values[line]; })), target);
        wrap.setAttribute("data-lines", String(lines.length));
      }
      pending.push([wrap, function () { if (!plot) draw(); }]);
    });
  }

  // Measured once: reading a size lays the page out, and a big page takes long to lay out.
  let width = 0;
  function chartWidth(target) {
    if (!width) width = Math.max(320, target.clientWidth || page.clientWidth || 800);
    return width;
  }

  function drawAll() {
    while (pending.length) pending.shift()[1]();
  }

  if (!data.lazy || location.hash === "#all" || typeof IntersectionObserver === "undefined") {
    drawAll();
  } else {
    const byElement = new Map(pending);
    const observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (!entry.isIntersecting || !byElement.has(entry.target)) return;
        const draw = byElement.get(entry.target);
        byElement.delete(entry.target);
        observer.unobserve(entry.target);
        const i = pending.findIndex(function (item) { return item[0] === entry.target; });
        if (i >= 0) pending.splice(i, 1);
        draw();
      });
    }, { rootMargin: "400px" });
    pending.forEach(function (item) { observer.observe(item[0]); });
  }
  // uPlot draws in a microtask it queued when each chart was made: this one runs after them.
  queueMicrotask(function () {
    document.documentElement.setAttribute("data-render-ms", String(Math.round(performance.now())));
    document.documentElement.setAttribute("data-ready", "1");
  });
})();
