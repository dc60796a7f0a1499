"""The evaluation page: input | output | target thumbnails with metrics, sortable by each.

One self-contained HTML file beside the PNGs it shows; a few lines of plain JavaScript sort
the rows when a column header is clicked (no framework, works from file://).
"""

import html
import json
from typing import Any, Sequence

_SCRIPT = """
const rows = %(rows)s;
const better = %(better)s;
let order = {key: "index", up: true};
function fmt(v) { return v === null ? "inf" : v.toFixed(4); }
function render() {
  const body = document.getElementById("rows");
  body.innerHTML = "";
  for (const r of rows) {
    const tr = document.createElement("tr");
    let cells = `<td>${r.index}</td><td>${r.name}</td>`;
    for (const k of ["input", "output", "target"])
      cells += `<td><a href="${r[k]}"><img src="${r[k]}" loading="lazy"></a></td>`;
    for (const m of Object.keys(better)) cells += `<td>${fmt(r[m])}</td>`;
    tr.innerHTML = cells;
    body.appendChild(tr);
  }
}
function sortBy(key) {
  // First click on a metric puts the worst images on top (ascending when higher is better);
  // clicking again reverses.
  const up = order.key === key ? !order.up : (key in better ? better[key] : true);
  order = {key: key, up: up};
  const v = (r) => (r[key] === null ? Infinity : r[key]);
  rows.sort((a, b) => (v(a) < v(b) ? -1 : v(a) > v(b) ? 1 : 0) * (up ? 1 : -1));
  render();
}
render();
"""


def _fmt(value: float | None) -> str:
  return "inf" if value is None else f"{value:.4f}"


def render(title: str, means: dict[str, float | None], higher_is_better: dict[str, bool],
           rows: Sequence[dict[str, Any]], notes: Sequence[str] = ()) -> str:
  """The page for `rows` ({index, name, input, output, target, <metric>: value}).

  Image fields are paths relative to the page; metric values None mean +inf.
  """
  metrics = list(higher_is_better)
  arrows = {m: "&uarr; better" if higher_is_better[m] else "&darr; better" for m in metrics}
  summary = "".join(f"<li><b>{html.escape(m)}</b> {_fmt(means[m])} ({arrows[m]})</li>"
                    for m in metrics)
  headers = "".join(f'<th onclick="sortBy(\'{m}\')">{html.escape(m)}</th>' for m in metrics)
  safe_rows = [{k: html.escape(v) if isinstance(v, str) else v for k, v in r.items()}
               for r in rows]
  script = _SCRIPT % {"rows": json.dumps(safe_rows).replace("</", "<\\/"),
                      "better": json.dumps(higher_is_better)}
  note_items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
  return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 4px; text-align: center; }}
th {{ cursor: pointer; background: #eee; }}
img {{ width: 128px; image-rendering: pixelated; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<ul>{summary}</ul>
<ul>{note_items}</ul>
<p>Click a column header to sort (first click on a metric: worst images first).</p>
<table>
<thead><tr><th onclick="sortBy('index')">#</th><th onclick="sortBy('name')">name</th>
<th>input</th><th>output</th><th>target</th>{headers}</tr></thead>
<tbody id="rows"></tbody>
</table>
<script>{script}</script>
</body></html>
"""
