// The tenant page's timeline, kept up to date while the page is open: each event the server
// streams (Server-Sent Events, same origin) becomes a row at the top, and the state above
// follows it. Text only (textContent): nothing from the server is parsed as HTML.
(() => {
  "use strict";
  const table = document.getElementById("timeline");
  const live = document.getElementById("timeline-live");
  if (!table || !live || !window.EventSource) return;
  const body = table.tBodies[0];
  const source = new EventSource(table.dataset.stream + "?after=" + table.dataset.after);
  source.addEventListener("tenant-event", (message) => {
    const e = JSON.parse(message.data);
    if (body.querySelector('tr[data-seq="' + Number(e.seq) + '"]')) return;
    const empty = body.querySelector("tr.empty");
    if (empty) empty.remove();
    const row = document.createElement("tr");
    row.dataset.seq = e.seq;
    row.dataset.type = e.type;
    row.className = "fresh";
    const cells = [[e.seq, "num"], [e.when, ""], [e.type, ""], [e.state, ""],
                   [e.reason, ""], [e.node, "hide-narrow"], [e.by, "wrap"]];
    for (const [text, kind] of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      if (kind) cell.className = kind;
      row.append(cell);
    }
    body.prepend(row);
    const state = document.querySelector("#state .state");
    if (state && e.state && e.sign) {
      state.className = "state state-" + e.state;
      state.dataset.state = e.state;
      state.textContent = e.sign + " " + e.state;
      const reason = document.getElementById("reason");
      if (reason) reason.textContent = e.reason || "-";
    }
    live.textContent = "Live: last event " + e.when + " (state and reason above follow it; " +
      "reload for the other fields).";
  });
  // Every 45 s the server ends the stream so that the session is checked again: the reconnect
  // is quiet; refused (signed out, session ended), the stream stops for good.
  let rechecking = false;
  source.addEventListener("recheck", () => { rechecking = true; });
  source.onopen = () => {
    if (!rechecking) live.textContent = "Live: new events appear here as they happen.";
    rechecking = false;
  };
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      live.textContent = "Live updates stopped (signed out?): reload the page.";
    } else if (!rechecking) {
      live.textContent = "Live updates interrupted: reconnecting...";
    }
  };
})();
