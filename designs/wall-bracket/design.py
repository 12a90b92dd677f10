"""Parametric angle bracket for shelves and furniture, with countersunk wood-screw holes.

An L of two legs with a triangular gusset in the corner. It is drawn lying on its side, the
way it prints strongest: the layers run along both legs, so the load bends them in the plane
of the layers. The screw holes and countersinks are teardrop-shaped (a point towards the top
of the print) so they print without support.
"""

import math

import cadquery as cq

wall_leg = 50.0  # length of the leg screwed to the wall, outside (mm)
shelf_leg = 50.0  # length of the leg under the shelf, outside (mm)
width = 20.0  # width of the bracket (mm)
thickness = 5.0  # thickness of both legs (mm)
gusset = 15.0  # size of the triangular gusset in the corner; 0 for a rounded corner (mm)
screw_diameter = 4.0  # nominal diameter of the wood screws (mm)
countersink = True  # countersink the holes for flat-head screws (90 degrees)

# Wood screws with countersunk heads (ISO 7050-like, DIN 7997): the head is twice the shank.
clearance_r = (screw_diameter + 0.4) / 2
head_r = screw_diameter + 0.3
TEARDROP = math.radians(40)  # the roof of a horizontal hole leans this far from vertical

# The gusset leaves room on each leg for at least one screw head beyond it.
shortest = min(wall_leg, shelf_leg)
gusset_size = max(0.0, min(gusset, shortest - thickness - 2 * head_r - 5.0))
# Without a gusset the inside corner is rounded instead.
corner = gusset_size if gusset_size > 0 else thickness / 2


def teardrop(plane, r):
    """A circle of radius r with a pointed roof towards +Z, on ``plane`` (a Workplane)."""
    a = TEARDROP
    return (
        plane.moveTo(-r * math.cos(a), r * math.sin(a))
        .threePointArc((0, -r), (r * math.cos(a), r * math.sin(a)))
        .lineTo(0, r / math.sin(a))
        .close()
    )


def hole_positions(leg):
    """Centres of the screw holes along a leg, measured from the outer corner."""
    start = thickness + corner + head_r + 2.0
    end = leg - head_r - 3.0
    if end - start >= 2 * head_r + 6.0:
        return [start, end]
    return [(start + end) / 2]


# The profile in the XY plane: corner at the origin, the wall leg along Y, the shelf leg along X.
t, g = thickness, gusset_size
profile = cq.Workplane("XY").moveTo(0, 0).lineTo(shelf_leg, 0).lineTo(shelf_leg, t)
if g > 0:
    profile = profile.lineTo(t + g, t).lineTo(t, t + g)
else:
    # a rounded inside corner spreads the stress
    profile = profile.lineTo(t + corner, t).radiusArc((t, t + corner), corner)
bracket = profile.lineTo(t, wall_leg).lineTo(0, wall_leg).close().extrude(width)

z = width / 2
depth = head_r - clearance_r  # a 90 degree countersink
for y in hole_positions(wall_leg):  # holes through the wall leg, along X
    bracket = bracket.cut(
        teardrop(cq.Workplane("YZ", origin=(-1, y, z)), clearance_r).extrude(t + 2)
    )
    if countersink:
        sink = teardrop(cq.Workplane("YZ", origin=(t + 0.5, y, z)), head_r + 0.5)
        sink = teardrop(sink.workplane(offset=-(depth + 0.5)), clearance_r).loft(ruled=True)
        bracket = bracket.cut(sink)
for x in hole_positions(shelf_leg):  # holes through the shelf leg, along Y
    hole = teardrop(cq.Workplane("XZ", origin=(x, t + 1, z)), clearance_r).extrude(t + 2)
    bracket = bracket.cut(hole)
    if countersink:
        sink = teardrop(cq.Workplane("XZ", origin=(x, t + 0.5, z)), head_r + 0.5)
        sink = teardrop(sink.workplane(offset=depth + 0.5), clearance_r).loft(ruled=True)
        bracket = bracket.cut(sink)

show_object(bracket, name="bracket")  # noqa: F821
