/* Dashboard charts (Chart.js from static/vendor), redrawn after each htmx swap. */
(function () {
  "use strict";
  const charts = {};
  const COLORS = { passed: "#93c5fd", blocked: "#dc2626", halted: "#f59e0b", p50: "#2563eb", p95: "#7c3aed", ft50: "#16a34a", ft95: "#0d9488" };

  function data(id) {
    const el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }
  function make(id, config) {
    const canvas = document.getElementById(id);
    if (!canvas || !window.Chart) return;
    if (charts[id]) charts[id].destroy();
    config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, config.options || {});
    charts[id] = new Chart(canvas, config);
    canvas.dataset.rendered = "true";
  }
  const line = (label, values, color, extra) => Object.assign({ label: label, data: values, borderColor: color, backgroundColor: color, pointRadius: 3, spanGaps: true, tension: 0.2 }, extra || {});

  function draw() {
    const s = data("dashboard-series");
    if (!s) return;
    make("chart-volume", {
      type: "bar",
      data: { labels: s.labels, datasets: [
        { label: "passed", data: s.passed, backgroundColor: COLORS.passed, stack: "t" },
        { label: "halted", data: s.halted, backgroundColor: COLORS.halted, stack: "t" },
        { label: "blocked", data: s.blocked, backgroundColor: COLORS.blocked, stack: "t" },
      ] },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, title: { display: true, text: "turns" } } } },
    });
    const pct = (xs) => xs.map((v) => (v === null ? null : +(100 * v).toFixed(2)));
    make("chart-rates", {
      type: "line",
      data: { labels: s.labels, datasets: [line("block rate %", pct(s.block_rate), COLORS.blocked), line("halt rate %", pct(s.halt_rate), COLORS.halted)] },
      options: { scales: { y: { beginAtZero: true, title: { display: true, text: "% of turns" } } } },
    });
    make("chart-latency", {
      type: "line",
      data: { labels: s.labels, datasets: [
        line("p50", s.p50, COLORS.p50), line("p95", s.p95, COLORS.p95),
        line("first token p50", s.ft50, COLORS.ft50, { borderDash: [4, 3] }), line("first token p95", s.ft95, COLORS.ft95, { borderDash: [4, 3] }),
      ] },
      options: { scales: { y: { beginAtZero: true, title: { display: true, text: "ms" } } } },
    });
    const cats = data("dashboard-categories") || [];
    make("chart-categories", {
      type: "bar",
      data: { labels: cats.map((c) => c.input_category || "(none)"), datasets: [{ label: "flagged turns", data: cats.map((c) => c.n), backgroundColor: COLORS.blocked }] },
      options: { indexAxis: "y", scales: { x: { beginAtZero: true } } },
    });
  }

  document.addEventListener("htmx:afterSwap", (ev) => { if (ev.target.id === "dashboard-body" || ev.detail.target?.id === "dashboard-body") draw(); });
  document.addEventListener("htmx:afterSettle", (ev) => { if (document.getElementById("dashboard-body") && !document.querySelector("#chart-volume[data-rendered]")) draw(); });
  if (document.readyState !== "loading") draw(); else document.addEventListener("DOMContentLoaded", draw);
})();
