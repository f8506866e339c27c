"""The frame of a run's self-contained HTML report: title, headline table, the sections a kind
gives, notes, every figure with its caption, the config.

Figures are embedded as base64 PNGs so the file can be mailed or attached as it is. This module
knows no kind of study: what the headline says and which figures come first is the kind's
(:mod:`grokscope.kinds`), put together by :func:`grokscope.orchestrate.report.write_report`.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from grokscope.store import rundir


def _img(path: Path, captions: dict[str, str]) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    name = path.stem
    caption = captions.get(name, name.replace("_", " "))
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(name)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def text(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) if value else "none"
    return str(value)


def _row(key: str, value) -> str:
    return f"<tr><th>{html.escape(key)}</th><td>{html.escape(text(value))}</td></tr>"


def html_table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(text(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.5em}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1em 0} th,td{padding:.3em .8em;border-bottom:1px solid #ddd;
text-align:left} th{font-weight:600;color:#444}
figure{margin:1.5em 0} img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em} pre{background:#f6f6f6;padding:1em;overflow:auto}
"""


def write_report(
    run: Path,
    subtitle: str,
    rows: dict[str, str],
    sections: list[tuple[str, str]],
    notes: list[str],
    captions: dict[str, str],
) -> Path:
    """Write ``run/report.html``: the headline ``rows``, the kind's ``sections`` (title, HTML),
    the ``notes``, every PNG of ``run/figures`` (those named in ``captions`` first, in its order)
    and the config."""
    run = Path(run)
    pngs = sorted((run / "figures").glob("*.png"))
    order = list(captions)
    pngs.sort(key=lambda p: (order.index(p.stem) if p.stem in order else len(order), p.stem))
    extra = []
    for title, table in sections:
        extra += [f"<h2>{html.escape(title)}</h2>", table]
    if notes:
        items = "".join(f"<li>{html.escape(str(n))}</li>" for n in notes)
        extra += [f"<h2>Notes</h2><ul>{items}</ul>"]
    body = [
        f"<h1>{html.escape(run.name)}</h1>",
        f'<p class="sub">{html.escape(subtitle)}</p>',
        "<table>" + "".join(_row(k, v) for k, v in rows.items()) + "</table>",
        *extra,
        *[_img(p, captions) for p in pngs],
        "<details><summary>config.json</summary><pre>"
        + html.escape(json.dumps(rundir.read_json(run / "config.json"), indent=2))
        + "</pre></details>",
    ]
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(run.name)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
    out = run / "report.html"
    rundir.atomic_write(out, page.encode())
    return out
