/* Label audit page: keyboard triage (j/k move, 1 label is right, 2 flip, 3 drop),
   and a refused decision (400) shown in its row instead of swallowed. */
(function () {
  "use strict";
  // htmx leaves 4xx responses unswapped; a refused decision carries the row with
  // its error message, which the reviewer must see.
  document.body.addEventListener("htmx:beforeSwap", function (ev) {
    const target = ev.detail.target;
    if (ev.detail.xhr.status === 400 && target && target.matches("tr.audit-item")) {
      ev.detail.shouldSwap = true;
      ev.detail.isError = false;
    }
  });
  const typing = (ev) => {
    const t = ev.target;
    return t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));
  };
  const rows = () => Array.from(document.querySelectorAll("tr.audit-item"));
  let selected = null; // the source id of the selected row (rows are swapped on decide)

  function current() {
    return rows().find((r) => r.dataset.source === selected) || null;
  }
  function select(row) {
    rows().forEach((r) => r.classList.toggle("selected", r === row));
    if (row) {
      selected = row.dataset.source;
      row.scrollIntoView({ block: "nearest" });
    }
  }
  function move(step) {
    const all = rows();
    if (!all.length) return;
    const i = all.indexOf(current());
    select(i < 0 ? all[0] : all[Math.max(0, Math.min(all.length - 1, i + step))]);
  }
  const BUTTONS = { "1": "keep", "2": "flip", "3": "drop" };

  document.addEventListener("keydown", function (ev) {
    if (typing(ev) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "j") { move(1); ev.preventDefault(); return; }
    if (ev.key === "k") { move(-1); ev.preventDefault(); return; }
    const which = BUTTONS[ev.key];
    const row = current();
    if (!which || !row) return;
    const button = row.querySelector('[data-testid="' + which + '"]');
    if (!button) return;
    ev.preventDefault();
    button.click();
  });
  // After a decision the row is replaced: select its replacement, then move on.
  // (Listened on document: the old row is detached by then.)
  document.addEventListener("htmx:afterSwap", function (ev) {
    const form = ev.detail.elt;
    const old = form && form.closest ? form.closest("tr.audit-item") : null;
    if (!old) return;
    const row = document.querySelector('tr.audit-item[data-source="' + CSS.escape(old.dataset.source) + '"]');
    if (!row) return;
    select(row);
    if (ev.detail.xhr.status === 200) move(1);
  });
})();
