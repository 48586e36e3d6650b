// The tapline console's one script, compiled into the binary: it keeps the "Running now"
// table of the overview current without a reload, from /api/running (the daemon's live
// progress where it runs the run, else the history's last checkpoint). Pages are complete
// without it. Text goes in with textContent only, never as markup.
(function () {
  "use strict";
  var section = document.getElementById("running");
  if (!section) {
    return;
  }
  var body = section.querySelector("tbody");
  function cell(text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) {
      td.className = className;
    }
    return td;
  }
  function timeLeft(live) {
    if (!live) {
      return "-";
    }
    return live.eta_seconds === null ? "estimating" : String(live.eta_seconds) + " s";
  }
  function inputRead(live) {
    if (!live || !live.bytes_total) {
      return "-";
    }
    return String(Math.round(live.bytes_read * 100 / live.bytes_total)) + "%";
  }
  function row(run) {
    var live = run.live;
    var records = live ? live.records : run.records;
    var settled = records.accepted + records.skipped + records.rejected + records.failed +
      (records.unchanged || 0);
    var seconds = Math.max((Date.now() - run.started_at_ms) / 1000, 0.001);
    var tr = document.createElement("tr");
    var link = document.createElement("a");
    link.href = "/runs/" + encodeURIComponent(run.run_id);
    link.textContent = run.run_id;
    var first = document.createElement("td");
    first.appendChild(link);
    tr.appendChild(first);
    tr.appendChild(cell(run.pipeline));
    tr.appendChild(cell(run.trigger));
    tr.appendChild(cell(new Date(run.started_at_ms).toISOString().replace("T", " ").slice(0, 19)));
    tr.appendChild(cell(String(Math.round(seconds)) + " s", "num"));
    tr.appendChild(cell(String(records.read), "num"));
    tr.appendChild(cell(String(settled), "num"));
    tr.appendChild(cell(String(Math.round(settled / seconds)) + "/s", "num"));
    tr.appendChild(cell(inputRead(live), "num"));
    tr.appendChild(cell(timeLeft(live), "num"));
    return tr;
  }
  function refresh() {
    fetch("/api/running", { headers: { accept: "application/json" } })
      .then(function (answer) { return answer.ok ? answer.json() : null; })
      .then(function (runs) {
        if (!runs) {
          return;
        }
        while (body.firstChild) {
          body.removeChild(body.firstChild);
        }
        runs.forEach(function (run) { body.appendChild(row(run)); });
        section.hidden = runs.length === 0;
        section.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () {});
  }
  setInterval(refresh, 2000);
})();
