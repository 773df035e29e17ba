// NxMesh admin: draws the charts of the metrics pages with uPlot
// (vendor/uplot-*.iife.min.js, loaded before this file).
//
// Every element with a data-chart attribute is a chart. The attribute is
// JSON written by the server:
//   {"unit": "count|rate|bytes|ms|percent|number",
//    "x": [unix seconds...],
//    "series": [{"label": "...", "values": [number|null...]}...]}
// The live panel replaces itself through htmx every few seconds; the charts
// of new content are drawn on htmx:load, and those whose element left the
// page are destroyed.
(function () {
  "use strict";

  var colors = ["#2f6fde", "#2e7d32", "#f9a825", "#c62828", "#6a1b9a", "#00838f"];
  var charts = [];

  function fmt(unit, v) {
    if (v == null || isNaN(v)) {
      return "–";
    }
    switch (unit) {
      case "bytes": {
        var units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        var i = 0;
        var a = Math.abs(v);
        while (a >= 1024 && i < units.length - 1) {
          a /= 1024;
          v /= 1024;
          i++;
        }
        return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
      }
      case "ms":
        return v.toFixed(v < 10 ? 1 : 0) + " ms";
      case "percent":
        return v.toFixed(1) + " %";
      case "rate":
        return v < 10 ? v.toFixed(2) : v.toFixed(0);
      case "count":
        return Math.abs(v) >= 1000 ? (v / 1000).toFixed(1) + "k" : v.toFixed(0);
      default:
        return v.toFixed(2);
    }
  }

  function width(el) {
    return Math.max(el.clientWidth || 0, 240);
  }

  function draw(el) {
    if (el.dataset.drawn === "true") {
      return;
    }
    var spec;
    try {
      spec = JSON.parse(el.getAttribute("data-chart"));
    } catch (e) {
      console.warn("metrics chart: bad data", e);
      return;
    }
    var unit = spec.unit || "number";
    var series = [{}];
    var data = [spec.x || []];
    (spec.series || []).forEach(function (s, i) {
      var line = {
        label: s.label,
        stroke: colors[i % colors.length],
        width: 1.5,
        spanGaps: false,
        value: function (u, v) { return fmt(unit, v); }
      };
      if (unit === "ms") {
        // Percentiles exist only for intervals with traffic: mark each point.
        line.points = { show: true, size: 5 };
      }
      series.push(line);
      data.push(s.values || []);
    });
    var yAxis = { size: 70, values: function (u, vals) { return vals.map(function (v) { return fmt(unit, v); }); } };
    if (unit === "count") {
      // Whole numbers only.
      yAxis.incrs = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 1e7, 1e8, 1e9];
    }
    var opts = {
      width: width(el),
      height: 220,
      series: series,
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [Math.min(0, min || 0), Math.max((max || 0) * 1.1, 1)]; } } },
      axes: [{}, yAxis],
      legend: { live: true }
    };
    var plot = new uPlot(opts, data, el);
    el.dataset.drawn = "true";
    charts.push({ el: el, plot: plot });
  }

  function sweep() {
    charts = charts.filter(function (c) {
      if (!c.el.isConnected) {
        c.plot.destroy();
        return false;
      }
      return true;
    });
  }

  function drawAll(root) {
    if (typeof uPlot === "undefined") {
      console.error("metrics charts: uPlot is not loaded");
      return;
    }
    sweep();
    var els = (root || document).querySelectorAll("[data-chart]");
    for (var i = 0; i < els.length; i++) {
      draw(els[i]);
    }
  }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      charts.forEach(function (c) {
        c.plot.setSize({ width: width(c.el), height: 220 });
      });
    }, 150);
  });

  document.addEventListener("htmx:load", function (e) {
    drawAll(e.target);
  });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  } else {
    drawAll(document);
  }
})();
