/* A page showing a running job reloads once when the job ends (pushed over the
   websocket or polled), so the finished job's results appear. The live container
   carries data-reload-when-done and data-initial-status. */
(function () {
  "use strict";
  const live = document.querySelector("[data-reload-when-done]");
  if (!live || ["queued", "running"].indexOf(live.dataset.initialStatus) < 0) return;
  let reloading = false;
  function check() {
    const el = live.querySelector(".job-progress");
    const status = el && el.dataset.status;
    if (!reloading && status && ["done", "failed", "cancelled"].includes(status)) {
      reloading = true;
      setTimeout(function () { window.location.reload(); }, 600);
    }
  }
  ["htmx:oobAfterSwap", "htmx:afterSwap", "htmx:wsAfterMessage"].forEach(function (name) {
    document.body.addEventListener(name, check);
  });
})();
