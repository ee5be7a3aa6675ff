// medrun report: sortable and filterable tables, plotly figures from JSON blocks, the compare scatter and the
// index's "compare selected" command. No network, no framework; plotly.min.js lies beside this file.
"use strict";

function cellValue(td) {
  const raw = td.hasAttribute("data-v") ? td.getAttribute("data-v") : td.textContent.trim();
  const num = parseFloat(raw);
  return (raw !== "" && raw !== "None" && !isNaN(num) && isFinite(raw)) ? num : raw.toLowerCase();
}

function sortBy(table, col, th) {
  const body = table.tBodies[0];
  const asc = th.getAttribute("aria-sort") !== "ascending";
  table.querySelectorAll("th").forEach(h => h.removeAttribute("aria-sort"));
  th.setAttribute("aria-sort", asc ? "ascending" : "descending");
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = cellValue(a.cells[col]), y = cellValue(b.cells[col]);
    const xs = typeof x === "string", ys = typeof y === "string";
    let c;
    if (xs !== ys) c = xs ? 1 : -1;           // numbers before text and blanks, either direction
    else c = xs ? x.localeCompare(y) : x - y;
    return asc || xs !== ys ? c : -c;
  });
  rows.forEach(r => body.appendChild(r));
}

document.querySelectorAll("table.sortable").forEach(table => {
  table.querySelectorAll("thead th").forEach((th, i) => {
    th.tabIndex = 0;
    th.title = "sort";
    th.addEventListener("click", () => sortBy(table, i, th));
    th.addEventListener("keydown", e => { if (e.key === "Enter") sortBy(table, i, th); });
  });
});

document.querySelectorAll("input[data-filter]").forEach(input => {
  const table = document.getElementById(input.getAttribute("data-filter"));
  input.addEventListener("input", () => {
    const q = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    Array.from(table.tBodies[0].rows).forEach(r => {
      const text = r.textContent.toLowerCase();
      r.hidden = !q.every(w => text.includes(w));
    });
  });
});

const plotConfig = {responsive: true, displaylogo: false};

document.querySelectorAll("div.plot[data-spec]").forEach(div => {
  const spec = JSON.parse(document.getElementById(div.getAttribute("data-spec")).textContent);
  Plotly.newPlot(div, spec.data, spec.layout, plotConfig);
});

const scatterDiv = document.querySelector("div.plot[data-scatter]");
if (scatterDiv) {
  const all = JSON.parse(document.getElementById(scatterDiv.getAttribute("data-scatter")).textContent);
  const select = document.getElementById("scatter-metric");
  const a = scatterDiv.getAttribute("data-a"), b = scatterDiv.getAttribute("data-b");
  const draw = () => {
    const m = all[select.value];
    const lo = Math.min(...m.a, ...m.b), hi = Math.max(...m.a, ...m.b);
    Plotly.react(scatterDiv, [
      {type: "scatter", mode: "markers", x: m.a, y: m.b, text: m.cases, name: "cases",
       hovertemplate: "%{text}<br>" + a + ": %{x}<br>" + b + ": %{y}<extra></extra>"},
      {type: "scatter", mode: "lines", x: [lo, hi], y: [lo, hi], name: "equal", line: {dash: "dot", color: "#888"}},
    ], {title: {text: select.value}, xaxis: {title: {text: a}}, yaxis: {title: {text: b}}, height: 420}, plotConfig);
  };
  select.addEventListener("change", draw);
  draw();
}

const pickButton = document.getElementById("compare-selected");
if (pickButton) {
  pickButton.addEventListener("click", () => {
    const ids = Array.from(document.querySelectorAll("input.pick:checked")).map(c => c.value);
    document.getElementById("compare-command").textContent = ids.length >= 2
      ? "medrun report --compare " + ids.join(" ") : "tick two or more runs";
  });
}
