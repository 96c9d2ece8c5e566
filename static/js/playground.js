// Playground: chat over /ws/playground/ with live per-token harmfulness scores.
// Tokens are coloured by score, a live chart plots score vs token with the
// threshold, and a dropped socket reconnects and restores the conversation.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const status = $("pg-status");
  let socket = null;
  let retry = 0;
  let streaming = false;
  let conversationId = Number(JSON.parse($("pg-initial-conversation").textContent || '""')) || null;
  if (!conversationId) conversationId = Number(sessionStorage.getItem("pg-conversation")) || null;
  const live = {};  // per variant: {bubble, scores, threshold, tokensSeen, halted}

  function setStatus(text, kind) {
    status.textContent = text;
    status.className = "pg-status" + (kind ? " " + kind : "");
  }

  function colour(score) {
    if (score === null || score === undefined) return "transparent";
    const s = Math.max(0, Math.min(1, score));
    // white → amber → red as the score rises; alpha keeps low scores readable.
    const hue = 45 - 45 * s;
    return `hsla(${hue}, 95%, 55%, ${0.08 + 0.72 * s})`;
  }

  function rememberConversation(id) {
    conversationId = id;
    sessionStorage.setItem("pg-conversation", String(id));
    $("pg-conversation").textContent = id ? `conversation #${id}` : "";
    const url = new URL(window.location);
    if (id) url.searchParams.set("c", id); else url.searchParams.delete("c");
    history.replaceState(null, "", url);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/ws/playground/`);
    socket.onopen = () => {
      retry = 0;
      setStatus("Connected", "ok");
      if (conversationId) socket.send(JSON.stringify({ type: "resume", conversation_id: conversationId }));
    };
    socket.onmessage = (event) => handle(JSON.parse(event.data));
    socket.onclose = () => {
      setStreaming(false);
      const delay = Math.min(10000, 500 * 2 ** retry++);
      setStatus(`Connection lost; reconnecting in ${Math.round(delay / 1000)} s… (your conversation is saved)`, "error");
      setTimeout(connect, delay);
    };
  }

  function transcript(variant) { return $("pg-transcript-" + variant); }

  function addBubble(variant, role, text) {
    const div = document.createElement("div");
    div.className = "pg-msg " + role;
    if (text) div.textContent = text;
    transcript(variant).appendChild(div);
    transcript(variant).scrollTop = transcript(variant).scrollHeight;
    return div;
  }

  function addToken(state, text, score, halted) {
    const span = document.createElement("span");
    span.className = "tok";
    span.textContent = text;
    span.style.background = colour(score);
    if (score !== null && score !== undefined) span.title = `score ${score.toFixed(3)}`;
    state.body.appendChild(span);
    state.scores.push(score);
    if (halted) {
      state.halted = state.scores.length - 1;
      const marker = document.createElement("span");
      marker.className = "halt-marker";
      marker.textContent = "halted here";
      marker.setAttribute("data-testid", "halt-marker");
      state.body.appendChild(marker);
    }
  }

  function startReply(variant) {
    const bubble = addBubble(variant, "assistant", "");
    const body = document.createElement("span");
    body.className = "body";
    bubble.appendChild(body);
    live[variant] = { bubble, body, scores: [], threshold: null, halted: null };
    return live[variant];
  }

  function drawChart(variant) {
    const svg = $("pg-chart-" + variant);
    const state = live[variant];
    if (!svg || !state) return;
    const W = 600, H = 160, pad = 6;
    const n = Math.max(state.scores.length, 2);
    const x = (i) => pad + (i * (W - 2 * pad)) / (n - 1);
    const y = (v) => H - pad - v * (H - 2 * pad);
    let points = "";
    state.scores.forEach((s, i) => { if (s !== null && s !== undefined) points += `${x(i)},${y(s)} `; });
    let html = `<polyline fill="none" stroke="#2f5bea" stroke-width="2" points="${points}" data-testid="score-line"/>`;
    if (state.threshold !== null && state.threshold !== undefined && isFinite(state.threshold)) {
      html += `<line x1="0" x2="${W}" y1="${y(state.threshold)}" y2="${y(state.threshold)}" stroke="#c62828" stroke-dasharray="6 4" data-testid="threshold-line"/>`;
    }
    if (state.halted !== null) {
      html += `<line x1="${x(state.halted)}" x2="${x(state.halted)}" y1="0" y2="${H}" stroke="#c62828" stroke-width="2"/>`;
    }
    svg.innerHTML = html;
  }

  function handle(msg) {
    switch (msg.type) {
      case "start":
        rememberConversation(msg.conversation_id);
        addBubble("guarded", "user", msg.user);
        startReply("guarded");
        if (msg.side_by_side) { addBubble("unguarded", "user", msg.user); startReply("unguarded"); }
        setStreaming(true);
        setStatus("Streaming…");
        break;
      case "input": {
        const el = $("pg-input-" + msg.variant);
        const inp = msg.input;
        if (el && inp) el.textContent = `input score ${inp.score.toFixed(3)} (threshold ${inp.threshold.toFixed(3)}, ${inp.category})`;
        if (inp && inp.blocked) {
          const note = document.createElement("span");
          note.className = "blocked-note";
          note.setAttribute("data-testid", "blocked-note");
          note.textContent = `Blocked by the input classifier (score ${inp.score.toFixed(2)}, category ${inp.category}). `;
          live[msg.variant].body.appendChild(note);
        }
        break;
      }
      case "tokens": {
        const state = live[msg.variant] || startReply(msg.variant);
        msg.tokens.forEach(([text, score, halted]) => addToken(state, text, score, halted));
        drawChart(msg.variant);
        transcript(msg.variant).scrollTop = transcript(msg.variant).scrollHeight;
        break;
      }
      case "end": {
        const state = live[msg.variant];
        if (!state) break;
        state.threshold = msg.result.output_threshold;
        drawChart(msg.variant);
        const r = msg.result;
        if (r.finish_reason === "halted" || r.finish_reason === "blocked") {
          const refusal = document.createElement("span");
          refusal.className = "refusal";
          refusal.textContent = r.reply.split("\n\n").pop();
          state.bubble.appendChild(refusal);
        }
        const meta = document.createElement("span");
        meta.className = "meta";
        const parts = [`finished: ${r.finish_reason}`];
        if (r.max_output_score !== null) parts.push(`max score ${r.max_output_score.toFixed(3)}`);
        if (r.output_threshold !== null) parts.push(`threshold ${r.output_threshold.toFixed(3)}`);
        if (r.cascaded) {
          parts.push(r.escalated_at === null || r.escalated_at === undefined
            ? "cascade: the probe stayed confident"
            : `cascade: heavy classifier joined at token ${r.escalated_at + 1}`);
        }
        if (r.would_block) parts.push("shadow: enforce would have stopped this");
        if (msg.first_token_ms !== null) parts.push(`first token ${Math.round(msg.first_token_ms)} ms`);
        if (r.flag_reason) parts.push(`flagged for review: ${r.flag_reason.replace("_", " ")}`);
        meta.textContent = parts.join(" · ");
        state.bubble.appendChild(meta);
        delete live[msg.variant];
        if (!Object.keys(live).length) { setStreaming(false); setStatus("Ready", "ok"); }
        break;
      }
      case "history":
        rememberConversation(msg.conversation_id);
        ["guarded", "unguarded"].forEach((v) => { transcript(v).innerHTML = ""; });
        msg.turns.forEach((turn) => {
          addBubble(turn.variant, "user", turn.user);
          const state = startReply(turn.variant);
          turn.tokens.forEach(([text, score], i) => addToken(state, text, score, turn.halted_at === i && turn.finish_reason === "halted"));
          if (turn.finish_reason === "halted" || turn.finish_reason === "blocked") {
            const refusal = document.createElement("span");
            refusal.className = "refusal";
            refusal.textContent = turn.reply.split("\n\n").pop();
            state.bubble.appendChild(refusal);
          }
          state.threshold = turn.output_threshold;
          drawChart(turn.variant);
          delete live[turn.variant];
          if (turn.variant === "unguarded") setSide(true);
        });
        setStatus(`Restored conversation #${msg.conversation_id}`, "ok");
        break;
      case "error":
        setStatus(msg.message, "error");
        if (!Object.keys(live).length) setStreaming(false);
        break;
    }
  }

  // The constitution's mode, when this user may pick it (else the select keeps enforce).
  function setMode(mode) {
    const select = $("pg-mode");
    if (mode && [...select.options].some((o) => o.value === mode)) select.value = mode;
  }

  function setStreaming(on) {
    streaming = on;
    $("pg-send").disabled = on;
    $("pg-stop").disabled = !on;
  }

  function setSide(on) {
    $("pg-side").checked = on;
    document.querySelector('[data-variant="unguarded"]').hidden = !on;
    $("pg-columns").classList.toggle("side", on);
  }

  function send() {
    const message = $("pg-message").value.trim();
    if (!message || streaming) return;
    if (!socket || socket.readyState !== WebSocket.OPEN) { setStatus("Not connected yet; try again in a moment", "error"); return; }
    socket.send(JSON.stringify({
      type: "chat",
      message,
      constitution: $("pg-constitution").value,
      models: $("pg-models").value,
      upstream: $("pg-upstream").value || null,
      mode: $("pg-mode").value,
      side_by_side: $("pg-side").checked,
      max_new_tokens: Number($("pg-max").value) || 64,
      conversation_id: conversationId,
    }));
    $("pg-message").value = "";
    // Feedback until the "start" event: the first message of a session may wait
    // a few seconds while the worker process loads the models.
    setStreaming(true);
    setStatus("Waiting for the guard… (the first message loads the models)");
  }

  $("pg-form").addEventListener("submit", (e) => { e.preventDefault(); send(); });
  $("pg-message").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); }
  });
  $("pg-stop").addEventListener("click", () => socket && socket.send(JSON.stringify({ type: "stop" })));
  $("pg-new").addEventListener("click", () => {
    rememberConversation(null);
    sessionStorage.removeItem("pg-conversation");
    ["guarded", "unguarded"].forEach((v) => { transcript(v).innerHTML = ""; });
    $("pg-chart-guarded").innerHTML = "";
    setStatus("New conversation", "ok");
  });
  $("pg-side").addEventListener("change", (e) => setSide(e.target.checked));
  // Upstream models belong to a constitution: offer only the picked one's.
  function showUpstreams(slug) {
    const select = $("pg-upstream");
    [...select.options].forEach((o) => {
      o.hidden = Boolean(o.dataset.constitution) && o.dataset.constitution !== slug;
    });
    if (select.selectedOptions[0] && select.selectedOptions[0].hidden) select.value = "";
  }
  $("pg-constitution").addEventListener("change", (e) => {
    const option = e.target.selectedOptions[0];
    if (option) setMode(option.dataset.mode);
    showUpstreams(e.target.value);
  });
  const first = $("pg-constitution").selectedOptions[0];
  if (first) setMode(first.dataset.mode);
  showUpstreams($("pg-constitution").value);
  connect();
})();
