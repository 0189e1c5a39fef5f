// packwise console: live updates over server-sent events, and the dead-letter replay. No framework.
"use strict";
(function () {
  const dot = document.getElementById("live");
  // the store version this page was rendered at: an event announcing another one means newer figures, even
  // the first event (a change between the render and the event stream's start must not be missed)
  let seen = document.body.dataset.version || null;
  let refreshing = false;
  let replaying = false;
  // the outcome of the last replay, kept across refreshes (a refresh rebuilds the page's content)
  let replayMessage = "";

  // A page with a selection or a replay in progress keeps still: the operator's choice is not thrown away.
  const busy = () => replaying || document.querySelector("input.pick:checked") ||
    document.activeElement?.tagName === "SELECT";

  async function refresh() {
    if (refreshing || busy()) return;
    refreshing = true;
    try {
      const response = await fetch(location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (response.ok) {
        const html = new DOMParser().parseFromString(await response.text(), "text/html");
        const next = html.getElementById("main");
        // the operator may have started a selection or a replay while this page was fetched
        if (next && !busy()) {
          document.getElementById("main").replaceChildren(...next.childNodes);
          wire();
          const result = document.getElementById("replay-result");
          if (result && replayMessage) result.textContent = replayMessage;
          document.body.dataset.version = html.body.dataset.version || String(seen);
        }
      }
    } finally {
      refreshing = false;
    }
    // an event that arrived while this refresh was in flight announced newer figures than it fetched
    if (Number(seen) > Number(document.body.dataset.version) && !busy()) {
      setTimeout(refresh, 200);
    }
  }

  function listen() {
    const source = new EventSource("/events");
    source.addEventListener("open", () => dot.classList.add("on"));
    source.addEventListener("error", () => dot.classList.remove("on"));
    source.addEventListener("version", (event) => {
      if (event.data !== (document.body.dataset.version || seen)) {
        seen = event.data;
        refresh();
      }
    });
  }

  function wire() {
    // filters apply as soon as one is chosen (an inline handler would be refused by the page's CSP)
    document.querySelectorAll("form.filters select").forEach((select) =>
      select.addEventListener("change", () => select.form.submit()));
    const button = document.getElementById("replay");
    if (!button) return;
    const picks = () => Array.from(document.querySelectorAll("input.pick:checked")).map((box) => box.value);
    document.querySelectorAll("input.pick").forEach((box) =>
      box.addEventListener("change", () => { button.disabled = picks().length === 0; }));
    button.addEventListener("click", async () => {
      const chosen = picks();
      if (!chosen.length) return;
      button.disabled = true;
      replaying = true;
      try {
        const response = await fetch("/dead-letters/replay", {
          method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-Packwise-Console": "1" },
          body: JSON.stringify({ dead_letters: chosen }),
        });
        const body = await response.json().catch(() => ({ error: `replay failed: HTTP ${response.status}` }));
        replayMessage = body.message || body.error;
      } catch (error) {
        replayMessage = `replay failed: ${error}`;
      } finally {
        replaying = false;
      }
      document.getElementById("replay-result").textContent = replayMessage;
      document.querySelectorAll("input.pick:checked").forEach((box) => { box.checked = false; box.disabled = true; });
      if (Number(seen) > Number(document.body.dataset.version)) refresh();
    });
  }

  wire();
  if (window.EventSource) listen();
})();
