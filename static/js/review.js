/* Review queue and item pages: keyboard triage (j/k move, Enter open, c claim,
   1-4 decide, x select), conflicts (409) shown instead of swallowed. */
(function () {
  "use strict";
  // htmx leaves 4xx responses unswapped by default; a 409 carries the conflict
  // panel the reviewer must see, so swap it like a success.
  if (window.htmx) {
    htmx.config.responseHandling = [
      { code: "204", swap: false },
      { code: "[23]..", swap: true },
      { code: "409", swap: true, error: false },
      { code: "[45]..", swap: false, error: true },
    ];
  }
  const csrf = () => {
    try { return JSON.parse(document.body.getAttribute("hx-headers"))["x-csrftoken"]; } catch (e) { return ""; }
  };
  const typing = (ev) => {
    const t = ev.target;
    return t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));
  };

  function flash(text, ok) {
    const box = document.getElementById("review-flash");
    if (!box) return;
    const p = document.createElement("p");
    p.className = "flash " + (ok ? "ok" : "err");
    p.textContent = text;
    p.dataset.testid = ok ? "flash-ok" : "flash-error";
    box.replaceChildren(p);
  }

  // ---------------------------------------------------------------- queue page
  const table = () => document.getElementById("review-table");
  const rows = () => Array.from(document.querySelectorAll("table.queue tbody tr[data-item]"));
  let selectedId = sessionStorage.getItem("review-selected");

  function select(row) {
    rows().forEach((r) => r.classList.toggle("selected", r === row));
    if (row) {
      selectedId = row.dataset.item;
      sessionStorage.setItem("review-selected", selectedId);
      row.scrollIntoView({ block: "nearest" });
    }
  }
  function current() {
    return rows().find((r) => r.dataset.item === selectedId) || null;
  }
  function move(step) {
    const all = rows();
    if (!all.length) return;
    const i = all.indexOf(current());
    const next = i < 0 ? all[0] : all[Math.max(0, Math.min(all.length - 1, i + step))];
    select(next);
  }
  function refreshTable() {
    const form = document.getElementById("review-filters");
    if (form && window.htmx) htmx.trigger(form, "submit");
  }
  async function post(url, values) {
    const body = new URLSearchParams(values);
    const response = await fetch(url, {
      method: "POST",
      headers: { "X-CSRFToken": csrf(), Accept: "application/json" },
      body: body,
      credentials: "same-origin",
    });
    let data = {};
    try { data = await response.json(); } catch (e) { data = { ok: false, message: await response.text() }; }
    return data;
  }
  async function claimRow(row) {
    const data = await post(row.dataset.claim, {});
    flash(data.message || "", data.ok);
    refreshTable();
  }
  async function decideRow(row, decision) {
    const data = await post(row.dataset.decide, { decision: decision, version: row.dataset.version, note: "" });
    flash(data.message || "", data.ok);
    if (data.ok) move(1);
    refreshTable();
  }

  // ----------------------------------------------------------------- item page
  const panel = () => document.getElementById("review-panel");
  function itemKey(ev) {
    if (ev.key === "j" || ev.key === "k") {
      const link = document.getElementById(ev.key === "j" ? "next-item" : "prev-item");
      if (link) window.location = link.href;
      return true;
    }
    if (ev.key === "c") {
      const form = document.getElementById("claim-form");
      if (form) form.requestSubmit();
      return true;
    }
    if (/^[1-4]$/.test(ev.key)) {
      const button = document.querySelector(`#decide-form button[data-key="${ev.key}"]`);
      if (button) button.click();  // a click carries name=decision (requestSubmit may not)
      return true;
    }
    if (ev.key === "Escape" || ev.key === "u") {
      document.getElementById("back-to-queue").click();
      return true;
    }
    return false;
  }

  function queueKey(ev) {
    const row = current();
    if (ev.key === "j") { move(1); return true; }
    if (ev.key === "k") { move(-1); return true; }
    if (!row) return false;
    if (ev.key === "Enter") { window.location = row.dataset.url; return true; }
    if (ev.key === "c") { claimRow(row); return true; }
    if (ev.key === "x") {
      const box = row.querySelector("input[type=checkbox]");
      if (box && !box.disabled) box.checked = !box.checked;
      return true;
    }
    if (/^[1-4]$/.test(ev.key)) {
      const keys = JSON.parse(document.getElementById("decision-keys")?.textContent || "{}");
      if (keys[ev.key]) decideRow(row, keys[ev.key]);
      return true;
    }
    return false;
  }

  document.addEventListener("keydown", (ev) => {
    if (typing(ev) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const handled = panel() && !table() ? itemKey(ev) : table() ? queueKey(ev) : false;
    if (handled) ev.preventDefault();
  });

  document.addEventListener("click", (ev) => {
    const row = ev.target.closest && ev.target.closest("table.queue tbody tr[data-item]");
    if (row && !ev.target.closest("a, input, button")) select(row);
    if (ev.target.id === "select-all") {
      document.querySelectorAll("table.queue tbody input[name=ids]:not(:disabled)").forEach((b) => { b.checked = ev.target.checked; });
    }
  });

  // Keep the selection across htmx table swaps.
  function restore() {
    if (!table()) return;
    const row = current() || rows()[0] || null;
    select(row);
  }
  document.addEventListener("htmx:afterSwap", restore);
  document.addEventListener("DOMContentLoaded", restore);
  if (document.readyState !== "loading") restore();
})();
