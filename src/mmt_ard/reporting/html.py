"""One self-contained HTML page: inline CSS, every image a base64 data URI, no external URL.

Each run reads top down as headline per student, findings, figures, tables. The page never needs
to scroll sideways: text wraps (long model names included), numbers stay on one line, images shrink
to the column, the per-student tables sit side by side where they fit, and a table that is still too
wide scrolls inside its own box.

The page carries one tiny inline script (no library) that, once the page has loaded, writes into
``#render-check`` how many results tables were laid out, how many images decoded, and how many
elements reach past the window's width (naming the first few). A headless browser's DOM dump then
shows whether everything the results asked for rendered and fits; the expected counts sit on
``<body>`` as ``data-expected-tables`` and ``data-expected-images``.
"""

from __future__ import annotations

import base64
import json
import re
from html import escape
from typing import Any

from mmt_ard.reporting.model import Image, Run, Section, Table, cell_detail, format_cell, slug

STUDENT_TABLE_PREFIX = "table1-"  # Table 1 of one student (or the teachers): narrow, shown side by side

CSS = """
*, *::before, *::after { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       max-width: 1200px; margin: 0 auto; padding: 1.5rem; overflow-wrap: break-word; }
h1 { font-size: 1.7rem; margin-bottom: .2rem; }
h2 { border-bottom: 2px solid #d0d7de; padding-bottom: .2rem; margin-top: 2.5rem; }
h3 { font-size: 1.1rem; margin: 1.8rem 0 .6rem; }
h1, h2, h3, code, .generated, .meta, figcaption, td, th, li, p { overflow-wrap: anywhere; }
.generated, .meta { color: #57606a; font-size: .9rem; }
.meta span { display: inline-block; max-width: 100%; margin-right: 1.2rem; }
nav ul { padding-left: 1.2rem; }
.headline { background: #f6f8fa; border-left: 4px solid #d62728; padding: .6rem 1rem; margin: 1rem 0; }
.headline p { margin: .3rem 0; font-size: 1.05rem; }
.summary { color: #3d444d; }
.intro, .provenance { color: #3d444d; }
.provenance { font-size: .85rem; margin-top: 1.5rem; }
figure { margin: 1.5rem 0; max-width: 100%; }
figcaption { font-weight: 600; margin-bottom: .4rem; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: .9rem; max-width: 100%; }
th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; text-align: right; }
td.num { white-space: nowrap; }
th { background: #f6f8fa; }
td:first-child, th:first-child, td.text { text-align: left; }
tbody tr:nth-child(even) { background: #fafbfc; }
.table-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 520px), 1fr));
              column-gap: 2rem; }
.notes { color: #57606a; font-size: .85rem; margin-top: .4rem; }
.images { display: flex; flex-wrap: wrap; gap: 1.5rem; }
.images figure { margin: 0; min-width: 0; }
.images figure.wide { flex-basis: 100%; }
img { max-width: 100%; height: auto; }
.images img { border: 1px solid #d0d7de; }
.images figcaption { font-weight: normal; font-size: .9rem; color: #57606a; margin-top: .3rem; }
details pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; font-size: .8rem; max-width: 100%; }
"""

# Counts what actually rendered (tables with a laid-out box, images decoded to a non-zero width) and
# what does not fit: any element reaching past the window's width, and the page's own scroll width.
CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var all = function (sel) { return Array.prototype.slice.call(document.querySelectorAll(sel)); };
  var tables = all("table.results");
  var images = all("img");
  var shown = tables.filter(function (t) { return t.rows.length > 0 && t.getBoundingClientRect().height > 0; });
  var decoded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var root = document.documentElement, width = root.clientWidth;
  var wide = all("body *").filter(function (e) {
    var r = e.getBoundingClientRect();
    return r.width > 0 && (r.right > width + 0.5 || r.left < -0.5);
  });
  var out = document.getElementById("render-check");
  out.setAttribute("data-tables", String(shown.length));
  out.setAttribute("data-images", String(decoded.length));
  out.setAttribute("data-broken-images", String(images.length - decoded.length));
  out.setAttribute("data-viewport-width", String(width));
  out.setAttribute("data-scroll-width", String(root.scrollWidth));
  out.setAttribute("data-overflowing", String(wide.length));
  out.setAttribute("data-overflowing-what", wide.slice(0, 5).map(function (e) {
    return e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ? "." + e.className : "") +
      " (" + Math.round(e.getBoundingClientRect().right) + " px)";
  }).join(", "));
  out.textContent = shown.length + " tables and " + decoded.length + " of " + images.length + " images rendered; " +
    wide.length + " elements wider than the " + width + " px window";
});
"""


def render_html(title: str, sections: list[Section], sources: list[str] | None = None) -> str:
    """The whole page: heading, contents, one ``<section>`` per run, the render check."""
    n_tables = sum(len(s.run.tables) for s in sections)
    n_images = sum(len(s.images) for s in sections)
    generated = (
        "Generated by mmt-ard report"
        + (" from " + ", ".join(f"<code>{escape(s)}</code>" for s in sources) if sources else "")
        + "."
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="mmt-ard report">',
        f"<title>{escape(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        f'<body data-expected-tables="{n_tables}" data-expected-images="{n_images}">',
        f'<header><h1>{escape(title)}</h1><p class="generated">{generated}</p></header>',
        _contents(sections) if len(sections) > 1 else "",
        *[render_section(s) for s in sections],
        '<p id="render-check" class="generated" hidden></p>',
        f"<script>{CHECK_SCRIPT}</script>",
        "</body>",
        "</html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _contents(sections: list[Section]) -> str:
    items = "".join(f'<li><a href="#{s.anchor}">{escape(s.run.title)}</a></li>' for s in sections)
    return f"<nav><strong>Contents</strong><ul>{items}</ul></nav>"


def render_section(section: Section) -> str:
    """One run: heading, facts, the headline per student, findings, intro, figures, tables, provenance,
    environment."""
    run = section.run
    parts = [f'<section id="{section.anchor}">', f"<h2>{escape(run.title)}</h2>", _meta(run)]
    if run.headlines:
        parts.append(
            '<div class="headline">'
            + "".join(f"<p><strong>{escape(h.student)}</strong>: {escape(h.text)}</p>" for h in run.headlines)
            + "</div>"
        )
    if run.summary:
        parts.append('<ul class="summary">' + "".join(f"<li>{escape(s)}</li>" for s in run.summary) + "</ul>")
    if run.intro:
        parts.append(_paragraphs("intro", run.intro))
    if section.images:
        parts.append("<h3>Figures</h3>")
        parts.append('<div class="images">' + "".join(map(render_image, section.images)) + "</div>")
    if run.tables:
        parts.append("<h3>Tables</h3>")
        parts += _tables(run.tables, section.anchor)
    if run.provenance:
        parts.append(_paragraphs("provenance", run.provenance))
    if run.environment:
        parts.append(_environment(run.environment))
    parts.append("</section>")
    return "\n".join(p for p in parts if p)


def _paragraphs(css: str, paragraphs: list[str]) -> str:
    """Paragraphs written in Markdown's inline marks (`code`, **strong**, *emphasis*) as HTML."""
    return f'<div class="{css}">' + "".join(f"<p>{inline_html(p)}</p>" for p in paragraphs) + "</div>"


def inline_html(text: str) -> str:
    """``text`` escaped, with `code` spans, **strong** and *emphasis* as their HTML elements."""
    parts = []
    for i, piece in enumerate(text.split("`")):
        if i % 2:  # inside backticks (an unpaired last one stays as written)
            parts.append(f"<code>{escape(piece)}</code>" if i < text.count("`") else escape("`" + piece))
            continue
        piece = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escape(piece))
        parts.append(re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", piece))
    return "".join(parts)


def _tables(tables: list[Table], anchor: str) -> list[str]:
    """Each table; consecutive per-student tables (``table1-...``) side by side in a grid that wraps."""
    parts: list[str] = []
    grid: list[str] = []
    for table in tables:
        html = render_table(table, f"{anchor}-{slug(table.id)}")
        if table.id.startswith(STUDENT_TABLE_PREFIX):
            grid.append(html)
            continue
        if grid:
            parts.append('<div class="table-grid">' + "".join(grid) + "</div>")
            grid = []
        parts.append(html)
    if grid:
        parts.append('<div class="table-grid">' + "".join(grid) + "</div>")
    return parts


def _meta(run: Run) -> str:
    facts = {"folder": str(run.folder), **run.meta}
    return (
        '<p class="meta">'
        + "".join(f"<span><strong>{escape(k)}</strong>: {escape(v)}</span>" for k, v in facts.items())
        + "</p>"
    )


def render_table(table: Table, anchor: str) -> str:
    """A ``<table class="results">`` under its title, with the notes below; ``n`` shows on hover."""
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for cell in row:
            detail = cell_detail(cell)
            attr = f' title="{escape(detail)}"' if detail else ""
            kind = "text" if isinstance(cell, str) and not _numeric(cell) else "num"
            cells.append(f'<td class="{kind}"{attr}>{escape(format_cell(cell))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    notes = "".join(f"<p>{escape(n)}</p>" for n in table.notes)
    notes = f'<div class="notes">{notes}</div>' if notes else ""
    return (
        f'<figure id="{anchor}"><figcaption>{escape(table.title)}</figcaption><div class="scroll">'
        f'<table class="results"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
        f"</div>{notes}</figure>"
    )


def _numeric(text: str) -> bool:
    """A number written as text (``23.15*``, ``2/255``, ``+1.20 ± 0.40 †``): kept on one line."""
    return len(text) <= 24 and any(c.isdigit() for c in text) and not any(c.isalpha() for c in text)


def render_image(image: Image) -> str:
    """An ``<img class="figure">`` whose source is the image itself as a base64 data URI; a wide image
    gets a row of its own."""
    data = base64.b64encode(image.data).decode("ascii")
    css = ' class="wide"' if image.wide else ""
    return (
        f'<figure{css}><img class="figure" src="data:{image.mime};base64,{data}" alt="{escape(image.title)}">'
        f"<figcaption>{escape(image.title)}</figcaption></figure>"
    )


def _environment(env: dict[str, Any]) -> str:
    text = json.dumps(env, indent=2, sort_keys=True, default=str)
    return f"<details><summary>Environment</summary><pre>{escape(text)}</pre></details>"
