"""A meshing pair of involute spur gears (ISO 53 basic rack), placed at their centre distance.

Each tooth is the shape a standard rack cutter (addendum 1 module, dedendum 1.25 modules, the
chosen pressure angle) leaves when it rolls along the gear: the involute above the base circle,
and below it whatever the cutter's tip sweeps, so small gears get the undercut they need to
turn without jamming. Both gears print flat, face down, with no overhang.
"""

import math
from types import SimpleNamespace

import cadquery as cq

gear_module = 2.0  # module: pitch diameter / number of teeth (mm)
teeth_a = 15  # teeth of the first gear (the pinion)
teeth_b = 30  # teeth of the second gear
pressure_angle = 20.0  # degrees: 20 is the ISO standard, 25 gives stronger teeth
face_width = 8.0  # thickness of the gears (mm)
bore_a = 5.0  # bore of the first gear (mm)
bore_b = 8.0  # bore of the second gear (mm)
backlash = 0.15  # play between meshing teeth, measured along the pitch circle (mm)

ALPHA = math.radians(pressure_angle)
DETAIL = SimpleNamespace(
    flank_points=16,  # points along each flank, root to tip
    arc_points=4,  # segments of the tip land and of the root between two teeth
    roll_steps=600,  # positions of the rack cutter while it carves the root
    min_rim=1.6,  # material left between the bore and the roots (mm)
)


def involute(angle):
    return math.tan(angle) - angle


def space_half_angle(teeth, r):
    """Half the angle of the tooth space at radius r, as the rolling rack cutter carves it."""
    m = gear_module
    rp = m * teeth / 2
    rb = rp * math.cos(ALPHA)
    # the cutter's tooth at the pitch line is the gear's space: half a pitch plus the backlash
    half_width = (math.pi * m / 2 + backlash / 2) / 2
    depth = 1.25 * m
    best = 0.0
    if r >= rb:  # the involute, exactly
        tooth = (math.pi * m / 2 - backlash / 2) / (2 * rp) + involute(ALPHA)
        best = math.pi / teeth - (tooth - involute(math.acos(rb / r)))
    # The cutter's flanks stay tangent to the base circle and leave the involute; below it
    # only the cutter's tip carves (its corner traces the undercut). One half of the tip: the
    # other is the mirror image.
    (u0, v0), (u1, v1) = (0.0, -depth), (half_width - depth * math.tan(ALPHA), -depth)
    reach = 4 * m / rp
    for step in range(DETAIL.roll_steps + 1):
        roll = -reach + 2 * reach * step / DETAIL.roll_steps
        c, s = math.cos(roll), math.sin(roll)
        # the cutter's tip, in the gear's frame, after the gear has turned by `roll`
        x0, y0 = u0 - rp * roll, rp + v0
        x1, y1 = u1 - rp * roll, rp + v1
        p0 = (c * x0 + s * y0, -s * x0 + c * y0)
        p1 = (c * x1 + s * y1, -s * x1 + c * y1)
        for point in circle_crossings(p0, p1, r):
            best = max(best, abs(math.atan2(point[0], point[1])))
    return best


def circle_crossings(p0, p1, r):
    """Points where segment p0-p1 crosses the circle of radius r about the origin."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    a = dx * dx + dy * dy
    b = 2 * (p0[0] * dx + p0[1] * dy)
    c = p0[0] ** 2 + p0[1] ** 2 - r * r
    disc = b * b - 4 * a * c
    if a == 0 or disc < 0:
        return []
    root = math.sqrt(disc)
    return [
        (p0[0] + t * dx, p0[1] + t * dy)
        for t in ((-b - root) / (2 * a), (-b + root) / (2 * a))
        if 0 <= t <= 1
    ]


def gear(teeth, bore):
    m = gear_module
    rp = m * teeth / 2
    root = rp - 1.25 * m
    tip = rp + m
    pitch = 2 * math.pi / teeth
    # half angle of the tooth from root to tip; the tip is cut back where the tooth would end
    # in a point (a land of a quarter module at least)
    flank = []
    for i in range(DETAIL.flank_points + 1):
        r = root + 0.02 * m + (tip - root - 0.02 * m) * i / DETAIL.flank_points
        half = math.pi / teeth - space_half_angle(teeth, r)
        if r * half < 0.125 * m:
            break
        flank.append((r, min(half, 0.45 * pitch)))
    # One closed polygon: the flanks through their points, tip and root as short arcs of
    # DETAIL.arc_points segments.
    r_root, a_root = flank[0]
    r_tip, a_tip = flank[-1]
    points = []
    for k in range(teeth):
        centre = k * pitch
        points += [(r, centre - a) for r, a in flank]
        points += [
            (r_tip, centre - a_tip + 2 * a_tip * i / DETAIL.arc_points)
            for i in range(1, DETAIL.arc_points)
        ]
        points += [(r, centre + a) for r, a in flank[::-1]]
        gap = pitch - 2 * a_root
        points += [
            (r_root, centre + a_root + gap * i / DETAIL.arc_points)
            for i in range(1, DETAIL.arc_points)
        ]
    corners = [cq.Vector(r * math.cos(a), r * math.sin(a), 0) for r, a in points]
    edges = cq.Wire.makePolygon(corners, close=True)
    bore = min(bore, 2 * (root - DETAIL.min_rim))
    hole = cq.Wire.makeCircle(bore / 2, cq.Vector(0, 0, 0), cq.Vector(0, 0, -1))
    face = cq.Face.makeFromWires(edges, [hole])
    return cq.Workplane("XY").add(cq.Solid.extrudeLinear(face, cq.Vector(0, 0, face_width)))


centre_distance = gear_module * (teeth_a + teeth_b) / 2
# gear a has a tooth on the line of centres, gear b a space there
gear_a = gear(teeth_a, bore_a)
gear_b = (
    gear(teeth_b, bore_b)
    .rotate((0, 0, 0), (0, 0, 1), 180 + 180 / teeth_b)
    .translate((centre_distance, 0, 0))
)

show_object(gear_a, name="gear_a")  # noqa: F821
show_object(gear_b, name="gear_b")  # noqa: F821
