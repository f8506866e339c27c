"""A sweep on one page: ``sweep.html`` beside ``summary.parquet``.

What ``sweep-summary`` prints (the kind's per-cell table and lines), its figures, every run's
two event curves as small multiples grouped by cell (the events marked), and a table of runs
linking to each run's ``report.html``. Hovering a run's panel shows its id, cell, seed and
events. Self-contained: figures are embedded as base64 PNGs, the curves are inline SVG, the
script is inline, and nothing is fetched, so the page works from ``file://`` and offline.
This module knows no kind: the sweep summary hands it the columns, events and unit.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grokscope.store import rundir

WIDTH, HEIGHT, PAD = 200, 96, 4  # one run's panel, px
MAX_POINTS = 160  # per curve: the page stays small for hundreds of runs


@dataclass(frozen=True)
class PageEvent:
    """An event a run's status records: its label, its status key, the curve it reads."""

    label: str
    status_key: str
    column: str


def _esc(value) -> str:
    return html.escape(str(value))


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_POINTS points, evenly spaced in the log of time (the scale drawn), the
    first and last kept."""
    if len(x) <= MAX_POINTS:
        return x, y
    pos = np.log10(x + 1.0)
    targets = np.linspace(pos[0], pos[-1], MAX_POINTS)
    idx = np.unique(np.searchsorted(pos, targets).clip(0, len(x) - 1))
    return x[idx], y[idx]


def _panel(run: str, metrics, events: list[PageEvent], status: dict, t_max: float) -> str:
    """One run's curves, time on a log scale shared by the sweep, the value on 0..1."""

    def sx(t: float) -> float:
        return PAD + (WIDTH - 2 * PAD) * math.log10(t + 1.0) / math.log10(t_max + 1.0)

    def sy(v: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * min(max(v, 0.0), 1.0)

    parts = [f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" class="frame"/>']
    time = metrics["epoch"].to_numpy(dtype=float) if metrics is not None else np.array([])
    for i, ev in enumerate(events):
        if metrics is None or ev.column not in metrics:
            continue
        values = metrics[ev.column].to_numpy(dtype=float)
        keep = np.isfinite(values)
        x, y = _thin(time[keep], values[keep])
        points = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in zip(x, y, strict=True))
        parts.append(f'<polyline class="c{i}" points="{points}"/>')
        at = status.get(ev.status_key)
        if at is not None:
            parts.append(f'<line class="e{i}" x1="{sx(at):.1f}" x2="{sx(at):.1f}" y1="0" '
                         f'y2="{HEIGHT}"/>')  # fmt: skip
    return (
        f'<svg width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">'
        f"<title>{_esc(run)}</title>{''.join(parts)}</svg>"
    )


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(path.stem)}">'
        f"<figcaption>{_esc(path.stem.replace('_', ' '))}</figcaption></figure>"
    )


def _event_text(status: dict, events: list[PageEvent]) -> str:
    def at(ev: PageEvent) -> str:
        value = status.get(ev.status_key)
        return "not reached" if value is None else str(value)

    return ", ".join(f"{ev.label} {at(ev)}" for ev in events)


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.6em} .sub{color:#666}
table{border-collapse:collapse;margin:1em 0} th,td{padding:.3em .8em;border-bottom:1px solid #ddd;
text-align:left} th{font-weight:600;color:#444}
figure{margin:1.5em 0} img{max-width:100%;border:1px solid #eee} figcaption{color:#555}
.cell{margin:1em 0} .cell h3{font-size:1em;margin:.2em 0;color:#444}
.runs{display:flex;flex-wrap:wrap;gap:6px} .run{display:inline-block;text-decoration:none}
.frame{fill:#fafafa;stroke:#ddd} polyline{fill:none;stroke-width:1.5}
.c0{stroke:#1f77b4} .c1{stroke:#d62728} .e0,.e1{stroke-dasharray:3 3;stroke-width:1}
.e0{stroke:#1f77b4} .e1{stroke:#d62728} .run:hover .frame,.hl .frame{stroke:#222;stroke-width:2}
tr.hl{background:#fff3c4} .wide{overflow-x:auto}
#tip{position:fixed;display:none;background:#222;color:#fff;padding:.4em .6em;border-radius:4px;
font-size:.85em;pointer-events:none;white-space:pre;z-index:9}
.key span{display:inline-block;width:1.5em;height:.3em;margin:0 .3em .2em 1em;vertical-align:middle}
"""

SCRIPT = """
(function () {
  var tip = document.getElementById('tip');
  function rows(id) { return document.querySelectorAll('tr[data-run="' + id + '"]'); }
  function show(el, x, y) {
    tip.textContent = el.dataset.tip; tip.style.display = 'block';
    tip.style.left = (x + 14) + 'px'; tip.style.top = (y + 14) + 'px';
    rows(el.dataset.run).forEach(function (r) { r.classList.add('hl'); });
  }
  function hide(el) {
    tip.style.display = 'none';
    rows(el.dataset.run).forEach(function (r) { r.classList.remove('hl'); });
  }
  var panels = document.querySelectorAll('.run');
  panels.forEach(function (el) {
    el.addEventListener('mouseover', function (e) { show(el, e.clientX, e.clientY); });
    el.addEventListener('mousemove', function (e) { show(el, e.clientX, e.clientY); });
    el.addEventListener('mouseout', function () { hide(el); });
  });
  document.body.dataset.panels = String(panels.length);
  if (location.hash === '#selftest' && panels.length) {  // a headless browser's check
    panels[0].dispatchEvent(new MouseEvent('mouseover', {clientX: 5, clientY: 5}));
    document.body.dataset.tip = tip.textContent;
    document.body.dataset.highlighted = String(document.querySelectorAll('tr.hl').length);
  }
})();
"""


def write_sweep_page(
    root: Path,
    manifest: dict,
    headers: list[str],
    rows: list[list[str]],
    lines: list[str],
    figures: list[Path],
    events: list[PageEvent],
    unit: str,
) -> Path:
    """Write ``root/sweep.html`` (atomically) and return its path. ``headers`` / ``rows`` /
    ``lines`` / ``figures``: the kind's per-cell summary; ``events``: the two events whose
    curves each run's panel draws; ``unit``: the time axis (epoch or step)."""
    root = Path(root)
    cells = {c["cell"]: c.get("values", {}) for c in manifest.get("cells", [])}
    runs = []
    for entry in manifest.get("runs", []):
        path = root / "runs" / entry["run"]
        started = (path / "config.json").is_file()
        status = rundir.read_status(path) if (path / "status.json").is_file() else {}
        metrics = rundir.read_metrics(path) if (path / "metrics.parquet").is_file() else None
        runs.append((entry, path, started, status, metrics))
    t_max = max([float(m["epoch"].max()) for *_, m in runs if m is not None and len(m)] + [1.0])

    by_cell: dict[str, list[str]] = {}
    table = []
    for entry, path, started, status, metrics in runs:
        name, cell = entry["run"], entry["cell"]
        values = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in cells.get(cell, {}).items())
        state = status.get("state", "not started" if not started else "unknown")
        tip = f"{name}\ncell {cell}: {values}\nseed {entry['seed']} · {state}\n"
        tip += _event_text(status, events)
        has_report = (path / "report.html").is_file()
        href = f"runs/{name}/report.html"
        panel = _panel(name, metrics, events, status, t_max)
        attrs = f'class="run" data-run="{_esc(name)}" data-tip="{_esc(tip)}"'
        by_cell.setdefault(cell, []).append(
            f'<a {attrs} href="{_esc(href)}">{panel}</a>' if has_report
            else f"<span {attrs}>{panel}</span>"
        )  # fmt: skip
        last = metrics.iloc[-1] if metrics is not None and len(metrics) else None
        finals = [
            "-" if last is None or ev.column not in last else f"{float(last[ev.column]):.3f}"
            for ev in events
        ]
        link = f'<a href="{_esc(href)}">report</a>' if has_report else "-"
        table.append(
            f'<tr data-run="{_esc(name)}"><td>{_esc(name)}</td><td>{_esc(values)}</td>'
            f"<td>{entry['seed']}</td><td>{_esc(state)}</td>"
            + "".join(
                f"<td>{'-' if status.get(ev.status_key) is None else status[ev.status_key]}</td>"
                for ev in events
            )
            + "".join(f"<td>{f}</td>" for f in finals)
            + f"<td>{link}</td></tr>"
        )

    spec = manifest.get("spec", {})
    key = "".join(
        f'<span class="c{i}" style="background:{("#1f77b4", "#d62728")[i]}"></span>'
        f"{_esc(ev.column)} (dashed: {_esc(ev.label)})"
        for i, ev in enumerate(events)
    )
    summary = (
        '<div class="wide"><table><tr>' + "".join(f"<th>{_esc(h)}</th>" for h in headers)
        + "</tr>"
        + "".join("<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in r) + "</tr>" for r in rows)
        + "</table></div>"
    )  # fmt: skip
    cell_blocks = "".join(
        f'<div class="cell"><h3>{_esc(cell)}: '
        f"{_esc(', '.join(f'{k}={v}' for k, v in cells.get(cell, {}).items()) or 'one cell')}"
        f'</h3><div class="runs">{"".join(panels)}</div></div>'
        for cell, panels in by_cell.items()
    )
    run_head = ["run", "cell", "seed", "state", *[ev.label for ev in events]]
    run_head += [f"final {ev.column}" for ev in events] + ["report"]
    body = [
        f"<h1>{_esc(manifest.get('name', root.name))}</h1>",
        f'<p class="sub">{_esc(spec.get("description", ""))} · {len(runs)} runs · '
        f"preset {_esc(spec.get('preset', '-'))}</p>",
        "<h2>Per cell</h2>",
        summary,
        "".join(f"<p>{_esc(line)}</p>" for line in lines if not line.startswith("wrote ")),
        f"<h2>Every run</h2><p class='key'>{unit} (log scale) against value, 0 to 1:{key}. "
        "Hover a run for its id and events; a framed panel links to its report.</p>",
        cell_blocks,
        '<h2>Runs</h2><div class="wide"><table><tr>'
        + "".join(f"<th>{_esc(h)}</th>" for h in run_head)
        + "</tr>",
        "".join(table) + "</table></div>",
        *[_figure(p) for p in figures if Path(p).is_file()],
        "<details><summary>sweep.json</summary><pre>"
        + _esc(json.dumps(spec, indent=2))
        + "</pre></details>",
        '<div id="tip"></div>',
    ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{_esc(manifest.get('name', root.name))}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}<script>{SCRIPT}</script></body></html>"
    )
    out = root / "sweep.html"
    rundir.atomic_write(out, page.encode())
    return out
