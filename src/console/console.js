// The tapline console's one script, compiled into the binary: it keeps the "Running now"
// table of the overview current without a reload, from the JSON API. Pages are complete
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
  function row(run) {
    var records = run.records;
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
    tr.appendChild(cell(new Date(run.started_at_ms).toISOString().replace("T", " ").slice(0, 19)));
    tr.appendChild(cell(String(Math.round(seconds)) + " s", "num"));
    tr.appendChild(cell(String(records.read), "num"));
    tr.appendChild(cell(String(settled), "num"));
    tr.appendChild(cell(String(Math.round(settled / seconds)) + "/s", "num"));
    return tr;
  }
  function refresh() {
    fetch("/api/runs?status=running&limit=20", { headers: { accept: "application/json" } })
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
