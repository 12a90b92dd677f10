"""Shelf support pin for 32 mm system cabinet holes (5 mm by default).

A wedge-shaped support: its back face rests against the cabinet side, the pin goes into the
hole, and the shelf lies on the flat top, held by a small lip at the front. The part is drawn
in its printing orientation: standing on the front end of the ledge with the pin pointing up,
so nothing overhangs and no support material is needed.
"""

import math

import cadquery as cq

pin_diameter = 5.0  # diameter of the hole in the cabinet side (mm)
fit = 0.1  # how much thinner than the hole the pin is printed (mm)
pin_length = 8.0  # how deep the pin goes into the hole (mm)
ledge_length = 15.0  # how far the shelf rests on the support, from the cabinet side (mm)
ledge_thickness = 3.0  # thickness of the ledge at its front end (mm)
width = 10.0  # width of the support along the cabinet side (mm)
lip_height = 1.5  # lip at the front of the ledge that stops the shelf sliding; 0 for none (mm)
steel_core = False  # a hole along the pin for a steel pin or nail as reinforcement
core_diameter = 2.0  # diameter of that hole (mm)

# Drawn in use first: x out of the cabinet side, y along it, z up, the ledge's top at z = 0.
pin_d = pin_diameter - fit
axis_depth = pin_diameter / 2 + 1.5  # the hole's centre below the shelf's underside
back_height = axis_depth + pin_diameter / 2 + 2.0
body_width = max(width, pin_diameter + 2.0)
lip_width = min(2.0, ledge_length / 4)
# The underside rises towards the front at 40 degrees at most, so that printed standing it
# leans at most 40 degrees from vertical (FDM prints up to 45 without support).
slope_run = (back_height - ledge_thickness) / math.tan(math.radians(40))
slope_start = max(0.0, ledge_length - slope_run)

outline = [(0.0, 0.0)]
if lip_height > 0:
    outline += [
        (ledge_length - lip_width, 0.0),
        (ledge_length - lip_width, lip_height),
        (ledge_length, lip_height),
    ]
else:
    outline += [(ledge_length, 0.0)]
outline += [
    (ledge_length, -ledge_thickness),
    (slope_start, -back_height),
    (0.0, -back_height),
]
body = cq.Workplane("XZ").polyline(outline).close().extrude(body_width / 2, both=True)

chamfer = min(0.5, pin_d / 8)
pin = (
    cq.Workplane("YZ", origin=(0, 0, -axis_depth))
    .circle(pin_d / 2)
    .extrude(-pin_length)
    .faces("<X")
    .edges()
    .chamfer(chamfer)
)
support = body.union(pin)
if steel_core:
    # Into the body as far as the pin is long, but no further than where the underside,
    # rising towards the front, still leaves 1 mm of material under the hole.
    cover = axis_depth + core_diameter / 2 + 1.0
    rise = (back_height - ledge_thickness) / (ledge_length - slope_start)
    covered = slope_start + (back_height - cover) / rise
    depth = min(pin_length, ledge_length - 2.0, covered)
    core = (
        cq.Workplane("YZ", origin=(-pin_length, 0, -axis_depth))
        .circle(core_diameter / 2)
        .extrude(pin_length + depth)
    )
    support = support.cut(core)

# Printing orientation: the front of the ledge on the bed, the pin pointing up.
support = support.rotate((0, 0, 0), (0, 1, 0), 90).translate((0, 0, ledge_length))

show_object(support, name="shelf_pin")  # noqa: F821
