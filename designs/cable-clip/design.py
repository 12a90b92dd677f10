"""A saddle clip that holds a cable or a tube against a wall, screwed or stuck on.

An arch over the cable with feet on the wall: one screw, two screws, or wide feet for
double-sided tape. The channel is a little smaller than the cable so the arch grips it. Its
roof comes to a point (a teardrop: the arc stops 40 degrees above horizontal and straight lines
meet over the cable), so the clip prints feet down without support, and the screw holes are
countersunk from the top.
"""

import math

import cadquery as cq

cable_diameter = 6.0  # diameter of the cable or tube (mm)
grip = 0.2  # how much smaller than the cable the channel is, so the arch grips it (mm)
width = 10.0  # width of the clip along the cable (mm)
wall = 2.0  # thickness of the arch (mm)
mount = "screw"  # "screw" (one foot and screw), "two-screw", or "adhesive" (tape under wide feet)
screw_diameter = 3.5  # nominal diameter of the countersunk screws (mm)
base = 2.5  # thickness of the feet (mm)

ROOF = math.radians(40)  # the roof leans this far from vertical
r = (cable_diameter - grip) / 2  # the channel
R = r + wall  # the arch


def arch(radius, bottom):
    """Straight sides from `bottom` up to the channel's centre (at height r), an arc to 40
    degrees above horizontal, and straight lines to a point over the centre."""
    c, s = math.cos(ROOF), math.sin(ROOF)
    return (
        cq.Workplane("XZ")
        .moveTo(-radius, bottom)
        .lineTo(radius, bottom)
        .lineTo(radius, r)
        .threePointArc(
            (radius * math.cos(ROOF / 2), r + radius * math.sin(ROOF / 2)),
            (radius * c, r + radius * s),
        )
        .lineTo(0, r + radius / s)
        .lineTo(-radius * c, r + radius * s)
        .threePointArc(
            (-radius * math.cos(ROOF / 2), r + radius * math.sin(ROOF / 2)), (-radius, r)
        )
        .close()
        .extrude(width / 2, both=True)
    )


clip = arch(R, 0.0).cut(arch(r, -1.0))

clearance_r = (screw_diameter + 0.4) / 2
head_r = screw_diameter + 0.3  # countersunk wood screw: the head is twice the shank
foot = 2 * head_r + 4.0 if mount != "adhesive" else max(8.0, R)
# a foot is wide enough for the screw head, even on a narrow clip
pad_width = width if mount == "adhesive" else max(width, 2 * head_r + 3.0)
sides = {"screw": (1,), "two-screw": (-1, 1), "adhesive": (-1, 1)}[mount]
for side in sides:
    pad = cq.Workplane("XY").box(foot + wall, pad_width, base, centered=(False, True, False))
    if side < 0:
        pad = pad.mirror("YZ")
    clip = clip.union(pad.translate((side * (R - wall), 0, 0)))
    if mount != "adhesive":
        x = side * (R + foot / 2)
        depth = min(head_r - clearance_r, base - 1.0)  # keep 1 mm under a large head
        hole = cq.Workplane("XY", origin=(x, 0, -1)).circle(clearance_r).extrude(base + 2)
        sink = cq.Solid.makeCone(
            head_r - depth, head_r + 1, depth + 1, cq.Vector(x, 0, base - depth)
        )
        clip = clip.cut(hole).cut(cq.Workplane("XY").add(sink))

show_object(clip, name="clip")  # noqa: F821
