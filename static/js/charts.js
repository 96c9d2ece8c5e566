/* Charts for training runs and model evaluation reports (Chart.js from static/vendor). */
(function () {
  "use strict";
  const COLORS = { model: "#2563eb", harmful: "#dc2626", benign: "#16a34a", keyword: "#9ca3af", refusal: "#f59e0b", b: "#7c3aed" };
  const charts = {};

  function make(id, config) {
    const canvas = document.getElementById(id);
    if (!canvas || !window.Chart) return null;
    if (charts[id]) charts[id].destroy();
    config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, config.options || {});
    charts[id] = new Chart(canvas, config);
    canvas.dataset.rendered = "true";
    return charts[id];
  }

  function xy(xs, ys) { return (xs || []).map((x, i) => ({ x: x, y: ys[i] })); }
  const unitAxes = (xTitle, yTitle) => ({
    x: { type: "linear", min: 0, max: 1, title: { display: true, text: xTitle } },
    y: { min: 0, max: 1, title: { display: true, text: yTitle } },
  });

  function rocChart(id, block) {
    const datasets = [];
    const add = (label, report, color) => {
      if (report && report.roc) datasets.push({ label: label, data: xy(report.roc.fpr, report.roc.tpr), borderColor: color, backgroundColor: color, pointRadius: 0, showLine: true, stepped: false });
    };
    add("classifier (AUROC " + fmt(block.classifier.auroc) + ")", block.classifier, COLORS.model);
    Object.entries(block.baselines || {}).forEach(([name, report]) => add(name + " baseline (AUROC " + fmt(report.auroc) + ")", report, COLORS[name] || COLORS.keyword));
    datasets.push({ label: "chance", data: [{ x: 0, y: 0 }, { x: 1, y: 1 }], borderColor: "#d1d5db", borderDash: [4, 4], pointRadius: 0, showLine: true });
    return make(id, { type: "scatter", data: { datasets: datasets }, options: { scales: unitAxes("false-positive rate", "true-positive rate") } });
  }

  function prChart(id, block) {
    const pr = block.classifier.pr;
    if (!pr) return null;
    return make(id, { type: "scatter", data: { datasets: [{ label: "classifier (AP " + fmt(block.classifier.average_precision) + ")", data: xy(pr.recall, pr.precision), borderColor: COLORS.model, pointRadius: 0, showLine: true }] }, options: { scales: unitAxes("recall", "precision") } });
  }

  function histogramChart(id, histogram) {
    if (!histogram) return null;
    const labels = histogram.edges.slice(0, -1).map((e, i) => e.toFixed(2) + "–" + histogram.edges[i + 1].toFixed(2));
    return make(id, { type: "bar", data: { labels: labels, datasets: [
      { label: "harmful", data: histogram.harmful, backgroundColor: COLORS.harmful + "bb" },
      { label: "benign", data: histogram.benign, backgroundColor: COLORS.benign + "bb" },
    ] }, options: { scales: { x: { title: { display: true, text: "score" } }, y: { title: { display: true, text: "examples" } } } } });
  }

  function rateBars(id, entries, label, keyOf) {
    const names = Object.keys(entries || {});
    if (!names.length) return null;
    return make(id, { type: "bar", data: { labels: names, datasets: [{ label: label, data: names.map((n) => keyOf(entries[n])), backgroundColor: names.map((n) => (entries[n].kind === "permitted" ? COLORS.benign : COLORS.model) + "bb") }] },
      options: { indexAxis: "y", scales: { x: { min: 0, max: 1 } } } });
  }

  function haltingChart(id, halting) {
    if (!halting) return null;
    const labels = halting.edges.slice(0, -1).map((e, i) => Math.round(e * 100) + "–" + Math.round(halting.edges[i + 1] * 100) + "%");
    return make(id, { type: "bar", data: { labels: labels, datasets: [
      { label: "harmful responses halted", data: halting.harmful, backgroundColor: COLORS.harmful + "bb" },
      { label: "benign responses halted", data: halting.benign, backgroundColor: COLORS.benign + "bb" },
    ] }, options: { scales: { x: { title: { display: true, text: "position in the response" } }, y: { title: { display: true, text: "responses" } } } } });
  }

  function fmt(v) { return typeof v === "number" ? v.toFixed(3) : "–"; }

  function modelReport(splits) {
    Object.entries(splits || {}).forEach(([split, block]) => {
      const c = block.classifier || {};
      rocChart("roc-" + split, block);
      prChart("pr-" + split, block);
      histogramChart("hist-" + split, c.histogram);
      // Restricted categories show recall; permitted ones their false-positive rate.
      rateBars("category-" + split, c.per_category, "recall (restricted) / FPR (permitted)", (e) => (e.recall !== undefined ? e.recall : e.fpr));
      rateBars("transform-" + split, c.per_transform, "recall", (e) => e.recall);
      haltingChart("halting-" + split, c.halting);
    });
  }

  function historyChart(id, points) {
    points = points || [];
    const loss = points.filter((p) => typeof p.loss === "number").map((p) => ({ x: p.step, y: p.loss }));
    const auroc = points.filter((p) => typeof p.val_auroc === "number").map((p) => ({ x: p.step, y: p.val_auroc }));
    const existing = charts[id];
    if (existing) {
      existing.data.datasets[0].data = loss;
      existing.data.datasets[1].data = auroc;
      existing.update("none");
      return existing;
    }
    return make(id, { type: "scatter", data: { datasets: [
      { label: "training loss", data: loss, borderColor: COLORS.model, pointRadius: 0, showLine: true, yAxisID: "y" },
      { label: "validation AUROC", data: auroc, borderColor: COLORS.benign, backgroundColor: COLORS.benign, pointRadius: 3, showLine: true, yAxisID: "y1" },
    ] }, options: { scales: { x: { title: { display: true, text: "step" } }, y: { position: "left", title: { display: true, text: "loss" } }, y1: { position: "right", min: 0, max: 1, grid: { drawOnChartArea: false }, title: { display: true, text: "AUROC" } } } } });
  }

  function liveHistory(url, ids) {
    let timer = null;
    async function tick() {
      try {
        const response = await fetch(url, { headers: { Accept: "application/json" } });
        if (!response.ok) return;
        const data = await response.json();
        Object.entries(ids).forEach(([kind, id]) => historyChart(id, (data.history || {})[kind]));
        if (["done", "failed", "cancelled"].includes(data.status)) { clearInterval(timer); timer = null; }
      } catch (e) { /* the next tick retries */ }
    }
    tick();
    timer = setInterval(tick, 2000);
  }

  function compareRoc(id, curves, nameA, nameB) {
    const datasets = [];
    if (curves.a) datasets.push({ label: nameA, data: xy(curves.a.fpr, curves.a.tpr), borderColor: COLORS.model, pointRadius: 0, showLine: true });
    if (curves.b) datasets.push({ label: nameB, data: xy(curves.b.fpr, curves.b.tpr), borderColor: COLORS.b, pointRadius: 0, showLine: true });
    return make(id, { type: "scatter", data: { datasets: datasets }, options: { scales: unitAxes("false-positive rate", "true-positive rate") } });
  }

  window.GuardwebCharts = { modelReport: modelReport, histogram: histogramChart, liveHistory: liveHistory, compareRoc: compareRoc, charts: charts };
})();
