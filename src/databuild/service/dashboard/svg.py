"""The graph as an SVG picture, drawn on the server from ``GET /api/v1/graph``'s view.

Upstream graphs form the left column; jobs are placed in columns by the observed
job -> job edges (a job sits right of every job it was seen to need). Each box lists the
output patterns; arrows are the observed edges (dashed: from an upstream). Every text is
XML-escaped. Pure: a view in, a string out.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from databuild.service import schemas

BOX_W = 260
LINE_H = 16
PAD = 10
GAP_X = 80
GAP_Y = 24


def _depths(view: schemas.GraphView) -> dict[str, int]:
    needs: dict[str, set[str]] = {j.name: set() for j in view.jobs}
    for edge in view.observed_edges:
        if edge.owner_kind == "job" and edge.job in needs and edge.owner in needs:
            needs[edge.job].add(edge.owner)
    depth: dict[str, int] = {}

    def of(name: str, path: frozenset[str]) -> int:
        if name in depth:
            return depth[name]
        inner = path | {name}
        found = 1 + max((of(n, inner) for n in needs[name] if n not in inner), default=0)
        depth[name] = found
        return found

    for name in needs:
        of(name, frozenset())
    return depth


def graph_svg(view: schemas.GraphView) -> str:
    depth = _depths(view)
    columns: dict[int, list[tuple[str, str, list[str]]]] = {}
    if view.upstreams:
        columns[0] = [("upstream", u.name, u.partitions) for u in view.upstreams]
    for job in view.jobs:
        columns.setdefault(depth[job.name], []).append(("job", job.name, job.outputs))
    boxes: dict[tuple[str, str], tuple[int, int, int]] = {}  # (kind, name) -> x, y, height
    parts: list[str] = []
    width = height = 0
    for column_index, column in enumerate(sorted(columns)):
        x = PAD + column_index * (BOX_W + GAP_X)
        y = PAD
        for kind, name, lines in columns[column]:
            box_h = PAD * 2 + LINE_H * (1 + len(lines))
            boxes[(kind, name)] = (x, y, box_h)
            css = "node upstream" if kind == "upstream" else "node job"
            fill = "#eaf5ea" if kind == "upstream" else "#eaf0fa"
            parts.append(
                f'<g class="{css}"><rect x="{x}" y="{y}" width="{BOX_W}" height="{box_h}" '
                f'rx="6" fill="{fill}" stroke="#345"/><text x="{x + PAD}" y="{y + PAD + 12}" class="name" font-weight="bold">'
                f"{escape(('upstream ' if kind == 'upstream' else '') + name)}</text>"
            )
            for index, line in enumerate(lines):
                parts.append(
                    f'<text x="{x + PAD}" y="{y + PAD + 12 + LINE_H * (index + 1)}" '
                    f'class="pattern">{escape(line)}</text>'
                )
            parts.append("</g>")
            y += box_h + GAP_Y
            width = max(width, x + BOX_W + PAD)
            height = max(height, y)
    arrows: list[str] = []
    for edge in view.observed_edges:
        source = ("job" if edge.owner_kind == "job" else "upstream", edge.owner)
        target = ("job", edge.job)
        if source not in boxes or target not in boxes:
            continue
        sx, sy, sh = boxes[source]
        tx, ty, th = boxes[target]
        css = "edge" if source[0] == "job" else "edge from-upstream"
        title = f"{edge.job} needs {edge.pattern} ({edge.count}x)"
        arrows.append(
            f'<path class="{css}" d="M{sx + BOX_W},{sy + sh // 2} L{tx},{ty + th // 2}" '
            f'stroke="#345" fill="none" marker-end="url(#arrow)"><title>{escape(title)}</title></path>'
        )
    label = quoteattr(f"the jobs of graph {view.name}")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" role="img" aria-label={label} '
        f'font-family="sans-serif" font-size="13" width="{max(width, 200)}" height="{max(height, 60)}" '
        f'viewBox="0 0 {max(width, 200)} {max(height, 60)}">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker>'
        "</defs>" + "".join(parts) + "".join(arrows) + "</svg>"
    )
