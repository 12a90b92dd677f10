"""A storage bin on the Gridfinity grid: 42 mm units, 7 mm height units, stacking lip.

The base of every grid unit follows the open Gridfinity profile (41.5 mm square at the top
with 3.75 mm corners, stepping in 0.8 mm at 45 degrees, 1.8 mm straight, 2.15 mm at 45
degrees: 4.75 mm high), so the bin drops into any Gridfinity baseplate, and its top carries
the stacking lip (0.7 / 1.8 / 1.9 mm) that takes the base of another bin. Magnet pockets
(6.5 x 2.4 mm) are optional; their ceilings are pointed so they print without support.
"""

import math
from types import SimpleNamespace

import cadquery as cq

grid_x = 2  # length in 42 mm grid units
grid_y = 1  # width in 42 mm grid units
height_units = 3  # height in 7 mm units, not counting the stacking lip
wall = 1.2  # wall thickness (mm)
dividers_x = 0  # walls across the length, splitting the bin into dividers_x + 1 compartments
dividers_y = 0  # walls across the width
divider_thickness = 1.2  # thickness of the dividers (mm)
magnets = False  # pockets for 6 x 2 mm disc magnets under each unit
stacking_lip = True  # the lip that lets another bin stack on top

# Dimensions of the Gridfinity specification (mm).
SPEC = SimpleNamespace(
    grid=42.0,  # the grid's pitch; 7 mm a height unit
    unit_top=41.5,  # a base unit's top: 0.5 mm less than the grid
    corner=3.75,  # radius of the outside corners and of a base unit's top
    lip_support=1.2,  # straight part under the stacking lip's inner edge
    magnet_d=6.5,
    magnet_depth=2.4,
    magnet_spacing=26.0,
)
# (height, inset) of a base unit. The spec's chamfers are 45 degrees (0.8 and 2.15 mm, with
# 1.8 mm straight between); drawn at exactly 45 degrees they sit on the limit of what prints
# without support, so here they lean 43 degrees from vertical over the same insets, with the
# straight part 0.21 mm shorter: the top, the bottom and the height stay as specified, and no
# point moves out by more than 0.15 mm, inside the 0.25 mm clearance to the baseplate.
STEEP_BASE = math.tan(math.radians(43))
BASE = [
    (0.0, 2.95),
    (0.8 / STEEP_BASE, 2.15),
    (4.75 - 2.15 / STEEP_BASE, 2.15),
    (4.75, 0.0),
]
LIP = [(0.0, 2.6), (0.7, 1.9), (2.5, 1.9), (3.9, 0.5)]  # (height above the rim, inset)
STEEP = math.tan(math.radians(50))  # rise per run of a surface 40 degrees from vertical

length = grid_x * SPEC.grid - 0.5
width = grid_y * SPEC.grid - 0.5
rim = height_units * 7.0  # top of the walls; the lip stands above it


def outline(size_x, size_y, inset, z, x=0.0, y=0.0):
    """A rounded rectangle `inset` inside a size_x by size_y one, at height z."""
    w, h = size_x / 2 - inset, size_y / 2 - inset
    corners = [
        cq.Vector(x + sx * w, y + sy * h, z) for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
    ]
    wire = cq.Wire.makePolygon(corners, close=True)
    radius = SPEC.corner - inset
    return wire.fillet2D(radius, wire.Vertices()) if radius > 0.01 else wire


def polygon(radius, centre, sides=16):
    """A regular polygon with its corners on a circle of `radius` about `centre`."""
    corners = [
        centre + cq.Vector(radius * math.cos(a), radius * math.sin(a), 0)
        for a in (2 * math.pi * k / sides for k in range(sides))
    ]
    return cq.Wire.makePolygon(corners, close=True)


def stack(size_x, size_y, levels, x=0.0, y=0.0):
    """One solid through (height, inset) levels, each pair joined by a ruled surface."""
    return cq.Solid.makeLoft([outline(size_x, size_y, i, z, x, y) for z, i in levels], True)


# the magnet pockets' pointed ceilings reach this high; the floor leaves 1.2 mm over them
magnet_apex = SPEC.magnet_depth + (SPEC.magnet_d / 2 - 0.3) * STEEP
floor_z = max(7.0, magnet_apex + 1.2) if magnets else 7.0
top = rim + (LIP[-1][0] if stacking_lip else 0.0)

bases, pockets = [], []
for i in range(grid_x):
    for j in range(grid_y):
        cx = (i - (grid_x - 1) / 2) * SPEC.grid
        cy = (j - (grid_y - 1) / 2) * SPEC.grid
        bases.append(stack(SPEC.unit_top, SPEC.unit_top, BASE, cx, cy))
        if magnets:
            for sx in (-1, 1):
                for sy in (-1, 1):
                    centre = cq.Vector(
                        cx + sx * SPEC.magnet_spacing / 2, cy + sy * SPEC.magnet_spacing / 2
                    )
                    # a 16-sided pocket whose ceiling is a pyramid cut flat 0.3 mm from its
                    # point, leaning 40 degrees from vertical
                    rise = (SPEC.magnet_d / 2 - 0.3) * STEEP
                    sections = [
                        polygon(SPEC.magnet_d / 2, centre + cq.Vector(0, 0, -1)),
                        polygon(SPEC.magnet_d / 2, centre + cq.Vector(0, 0, SPEC.magnet_depth)),
                        polygon(0.3, centre + cq.Vector(0, 0, SPEC.magnet_depth + rise)),
                    ]
                    pockets.append(cq.Solid.makeLoft(sections, True))
body = stack(length, width, [(BASE[-1][0], 0.0), (top, 0.0)]).fuse(*bases)

# the inside: straight walls, then (with the lip) a support leaning in at 40 degrees from
# vertical to the lip's inner edge, and the lip opening out to the top
if stacking_lip:
    support = (LIP[0][1] - wall) * STEEP
    levels = [
        (floor_z, wall),
        (rim - SPEC.lip_support - support, wall),
        (rim - SPEC.lip_support, LIP[0][1]),
    ]
    levels += [(rim + z, inset) for z, inset in LIP]
    levels += [(top + 1.0, LIP[-1][1])]
    divider_top = rim - SPEC.lip_support - support
else:
    levels = [(floor_z, wall), (top + 1.0, wall)]
    divider_top = rim
body = body.cut(stack(length, width, levels))

inner_x, inner_y = length - 2 * wall, width - 2 * wall
plates = []
for k in range(1, dividers_x + 1):
    x = -inner_x / 2 + k * inner_x / (dividers_x + 1) - divider_thickness / 2
    corner = cq.Vector(x, -inner_y / 2 - 0.5, floor_z)
    plates.append(cq.Solid.makeBox(divider_thickness, inner_y + 1, divider_top - floor_z, corner))
for k in range(1, dividers_y + 1):
    y = -inner_y / 2 + k * inner_y / (dividers_y + 1) - divider_thickness / 2
    corner = cq.Vector(-inner_x / 2 - 0.5, y, floor_z)
    plates.append(cq.Solid.makeBox(inner_x + 1, divider_thickness, divider_top - floor_z, corner))
if plates:
    body = body.fuse(*plates)
if pockets:
    body = body.cut(*pockets)
bin_ = cq.Workplane("XY").add(body.clean())

show_object(bin_, name="bin")  # noqa: F821
