"""What the demo shows at the end: the summary table on the terminal, and a map of the makers
and fab labs as one self-contained HTML page (an inline SVG: no script, no fetch, opens
offline).

The outline of mainland France and Corsica is a rough polygon of a few dozen coastal and border
points, drawn by hand: enough to place the cities, not a geographic reference.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dgml.demo.orders import OrderRow, format_duration

if TYPE_CHECKING:
    from dgml.demo.labs import Lab
    from dgml.demo.scenario import Outcome

# (lon, lat), clockwise from Dunkirk.
MAINLAND = (
    (2.37, 51.04), (1.85, 50.95), (1.6, 50.72), (1.6, 50.2), (1.08, 49.93), (0.1, 49.49),
    (-0.4, 49.33), (-1.27, 49.67), (-1.95, 49.72), (-1.6, 48.83), (-2.0, 48.65),
    (-2.76, 48.53), (-3.5, 48.83), (-4.77, 48.4), (-4.73, 48.04), (-3.37, 47.73),
    (-3.12, 47.5), (-2.2, 47.27), (-1.78, 46.5), (-1.15, 46.15), (-1.03, 45.62),
    (-1.25, 44.65), (-1.56, 43.48), (-1.78, 43.36), (-1.4, 43.05), (-0.5, 42.8), (0.7, 42.7),
    (1.45, 42.6), (2.2, 42.42), (3.17, 42.43), (3.05, 42.9), (3.15, 43.15), (3.7, 43.4),
    (3.95, 43.53), (4.6, 43.35), (5.35, 43.3), (5.93, 43.1), (6.64, 43.27), (7.0, 43.55),
    (7.27, 43.7), (7.5, 43.78), (7.66, 44.18), (6.9, 44.4), (7.0, 45.0), (7.1, 45.5),
    (6.8, 45.9), (6.8, 46.4), (6.1, 46.55), (6.45, 46.95), (7.0, 47.45), (7.55, 47.58),
    (7.6, 48.0), (7.8, 48.6), (8.2, 48.97), (7.9, 49.05), (6.7, 49.2), (6.35, 49.45),
    (5.8, 49.55), (4.83, 50.14), (4.2, 49.96), (3.97, 50.3), (3.3, 50.5), (3.0, 50.75),
)  # fmt: skip
CORSICA = (
    (9.4, 43.0), (9.45, 42.7), (9.55, 42.1), (9.28, 41.6), (9.16, 41.39), (8.74, 41.92),
    (8.6, 42.3), (8.76, 42.57), (9.3, 42.68),
)  # fmt: skip
WEST, EAST, SOUTH, NORTH = -5.3, 9.8, 41.2, 51.3
SCALE = 62.0  # pixels per degree of latitude
COS = math.cos(math.radians((SOUTH + NORTH) / 2))


def _xy(lon: float, lat: float) -> tuple[float, float]:
    return round((lon - WEST) * COS * SCALE, 1), round((NORTH - lat) * SCALE, 1)


def _polygon(points: Iterable[tuple[float, float]]) -> str:
    coords = " ".join(f"{x},{y}" for x, y in (_xy(lon, lat) for lon, lat in points))
    return f'<polygon points="{coords}" class="land"/>'


def _dot(lon: float, lat: float, css: str, radius: float, title: str) -> str:
    x, y = _xy(lon, lat)
    return f'<circle cx="{x}" cy="{y}" r="{radius}" class="{css}"><title>{title}</title></circle>'


def svg_map(labs: list[Lab], agent_labs: Iterable[str], rows: list[OrderRow]) -> str:
    """The SVG: every lab (with an agent: green), each maker, a line to the lab making it."""
    width, height = _xy(EAST, SOUTH)
    online = set(agent_labs)
    parts = [_polygon(MAINLAND), _polygon(CORSICA)]
    for lab in sorted(labs, key=lambda lab: lab.id in online):
        css = "lab agent" if lab.id in online else "lab"
        parts.append(
            _dot(lab.lon, lab.lat, css, 4 if lab.id in online else 2.5, html.escape(lab.name))
        )
    for row in rows:
        if row.lab_lat is not None and row.lab_lon is not None:
            (x1, y1), (x2, y2) = _xy(row.lon, row.lat), _xy(row.lab_lon, row.lab_lat)
            parts.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" class="route"/>')
    for row in rows:
        made = row.state == "completed"
        what = f"order {row.order}, {row.design}: {row.state}"
        if row.reason and not made:
            what += f" ({row.reason})"
        x, y = _xy(row.lon, row.lat)
        parts.append(
            _dot(row.lon, row.lat, "maker" if made else "maker nowhere", 7, html.escape(what))
        )
        parts.append(f'<text x="{x + 10}" y="{y + 4}">{html.escape(row.city)}</text>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="makers and fab labs">'
        + "".join(parts)
        + "</svg>"
    )


STYLE = """
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
.land { fill: #f1efe8; stroke: #b8b3a6; stroke-width: 1; }
.lab { fill: #9a9a9a; } .lab.agent { fill: #2e8b57; stroke: #fff; stroke-width: 1; }
.maker { fill: none; stroke: #1f5fbf; stroke-width: 2.5; } .maker.nowhere { stroke: #c0392b; }
.route { stroke: #1f5fbf; stroke-width: 2; }
text { font-size: 12px; fill: #333; }
table { border-collapse: collapse; margin-top: 1em; }
td, th { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }
"""


def _html_rows(rows: list[OrderRow]) -> str:
    cells = []
    for r in rows:
        lab = r.fablab or (r.reason or "-")
        values = (
            r.order, r.design, r.city, lab, _km(r.distance_km), _km(r.km_avoided),
            format_duration(r.estimate_s), r.state,
        )  # fmt: skip
        cells.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in values) + "</tr>")
    head = ("order", "design", "maker in", "fab lab", "km", "km avoided", "slicer", "state")
    return (
        "<table><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr>"
        + "".join(cells)
        + "</table>"
    )


def write_map(path: Path, labs: list[Lab], agent_labs: Iterable[str], rows: list[OrderRow]) -> Path:
    agents = list(agent_labs)
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>dgml demo: makers and fab labs</title>"
        f"<style>{STYLE}</style></head><body>"
        "<h1>Design global, manufacture local</h1>"
        f"<p>{len(labs)} French fab labs (grey), {len(agents)} with a running agent (green); "
        "makers (blue rings; red when no lab can make the order) and a line to the lab "
        "making each order.</p>"
        + svg_map(labs, agents, rows)
        + _html_rows(rows)
        + "</body></html>\n"
    )
    path.write_text(page, encoding="utf-8")
    return path


def _km(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def print_summary(console: Console, outcome: Outcome) -> None:
    """The table of orders, the totals, why an order could not be placed, and the map."""
    table = Table(title="Orders", title_justify="left")
    for name in ("order", "design", "maker in", "fab lab", "km", "km avoided", "slicer", "state"):
        justify = "right" if name in ("order", "km", "km avoided", "slicer") else "left"
        table.add_column(name, justify=justify)
    for r in outcome.rows:
        colour = "green" if r.state == "completed" else "red" if r.state != r.expected else "yellow"
        table.add_row(
            str(r.order),
            escape(r.design),
            escape(r.city),
            escape(r.fablab or "-"),
            _km(r.distance_km),
            _km(r.km_avoided),
            format_duration(r.estimate_s),
            f"[{colour}]{r.state}[/]",
        )
    console.print(table)
    made = [r for r in outcome.rows if r.state == "completed"]
    avoided = sum(r.km_avoided or 0.0 for r in made)
    travelled = sum(r.distance_km or 0.0 for r in made)
    console.print(
        f"{len(made)} orders made locally, {travelled:,.1f} km from maker to lab in all; "
        f"[bold]{avoided:,.1f} km avoided[/] against shipping from a central factory in Paris.",
        highlight=False,
    )
    for r in outcome.rows:
        if r.state != "completed" and r.reason:
            console.print(f"Order {r.order} ({escape(r.city)}) is {r.state}: {escape(r.reason)}")
    if outcome.slicer_problem:
        console.print(f"[yellow]FDM jobs were not sliced:[/] {escape(outcome.slicer_problem)}")
    if outcome.map_path is not None:
        console.print(f"Map of makers and fab labs: {escape(str(outcome.map_path))}")
