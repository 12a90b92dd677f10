"""A butt hinge that prints in one piece, already assembled, and turns off the bed.

Two leaves lie flat on the bed, their knuckles alternating along the hinge axis. Instead of a
pin, each knuckle of the first leaf carries a cone on its ends that turns in a conical socket
of the second leaf's neighbouring knuckle, so the second leaf is held between cones of the
first. Every gap between the leaves is at least ``clearance`` wide, which is what keeps them
from fusing; the cones and sockets lean 40 degrees from vertical and the knuckles are cut flat
where they meet the bed, so nothing needs support. The screw holes are countersunk from the
top.
"""

import math

import cadquery as cq

leaf_length = 30.0  # how far each leaf reaches from the hinge axis (mm)
leaf_thickness = 3.0  # thickness of the leaves (mm)
knuckles = 5  # number of knuckles along the axis, shared between the two leaves
knuckle_length = 10.0  # length of each knuckle along the axis (mm)
knuckle_diameter = 8.0  # outside diameter of the knuckles (mm)
clearance = 0.4  # gap between the two leaves everywhere (mm): 0.3 to 0.5 for most printers
screw_holes = True  # two countersunk screw holes in each leaf
screw_diameter = 3.5  # nominal diameter of the countersunk screws (mm)

R = knuckle_diameter / 2
# The axis sits this high so that the bed cuts each knuckle where its surface faces 45 degrees
# down: what is left of the knuckle's underside prints without support.
AXIS_Z = R * math.cos(math.radians(45))
LENGTH = knuckles * knuckle_length
CONE_ANGLE = math.radians(50)  # half angle of the cones: their undersides lean 40 from vertical
CONE_R = 0.4 * R  # radius of a cone at its base
TIP_R = 0.3 * CONE_R  # the cone's tip is cut flat at this radius
TAN = math.tan(CONE_ANGLE)
CONE_LENGTH = (CONE_R - TIP_R) / TAN
# Moving a cone along its axis by d moves its surface by d * sin(CONE_ANGLE): the sockets are the
# cones moved this far, which leaves `clearance` between them.
SOCKET_SHIFT = clearance / math.sin(CONE_ANGLE)


def span(i):
    """Where knuckle i starts and ends along the axis (Y)."""
    start = i * knuckle_length + (clearance / 2 if i > 0 else 0.0)
    end = (i + 1) * knuckle_length - (clearance / 2 if i < knuckles - 1 else 0.0)
    return start, end


def cone(y, direction, radius, length):
    """A cone of base radius `radius` at y on the axis, pointing along +Y (1) or -Y (-1)."""
    tip = max(radius - length * TAN, 0.0)
    return cq.Solid.makeCone(
        radius, tip, length, cq.Vector(0, y, AXIS_Z), cq.Vector(0, direction, 0)
    )


def knuckle(i):
    start, end = span(i)
    body = cq.Workplane("XZ", origin=(0, start, AXIS_Z)).circle(R).extrude(start - end)
    # cut flat where it meets the bed
    return body.cut(cq.Workplane("XY").rect(4 * R, 2 * LENGTH).extrude(-R))


def leaf(side, owned):
    """The leaf reaching towards x * side, with knuckles `owned` (the others are the other
    leaf's: the plate keeps `clearance` away from them)."""
    t = leaf_thickness
    plate = cq.Workplane("XY").box(leaf_length, LENGTH, t, centered=False)
    if side < 0:
        plate = plate.mirror("YZ")
    for i in range(knuckles):
        if i not in owned:
            start, end = span(i)
            notch = cq.Workplane("XY").box(
                2 * (R + clearance),
                end - start + 2 * clearance,
                4 * R,
                centered=(True, False, True),
            )
            plate = plate.cut(notch.translate((0, start - clearance, 0)))
    for i in owned:
        plate = plate.union(knuckle(i))
    if screw_holes:
        clearance_r = (screw_diameter + 0.4) / 2
        head_r = screw_diameter + 0.3  # countersunk head twice the shank (ISO 7050)
        depth = min(head_r - clearance_r, t - 1.0)  # leave 1 mm under a head that is too big
        x = side * (R + clearance + leaf_length) / 2
        for y in (LENGTH / 4, 3 * LENGTH / 4):
            hole = cq.Workplane("XY", origin=(x, y, -1)).circle(clearance_r).extrude(t + 2)
            sink = cq.Solid.makeCone(
                head_r - depth, head_r + 1, depth + 1, cq.Vector(x, y, t - depth)
            )
            plate = plate.cut(hole).cut(cq.Workplane("XY").add(sink))
    return plate


first = list(range(0, knuckles, 2))
second = list(range(1, knuckles, 2))

leaf_a = leaf(-1, first)
for i in first:
    start, end = span(i)
    # each cone starts inside its knuckle and reaches into the neighbour's socket
    if i > 0:
        leaf_a = leaf_a.union(cone(start + 0.5, -1, CONE_R + 0.5 * TAN, CONE_LENGTH + 0.5))
    if i < knuckles - 1:
        leaf_a = leaf_a.union(cone(end - 0.5, 1, CONE_R + 0.5 * TAN, CONE_LENGTH + 0.5))

leaf_b = leaf(1, second)
for i in second:
    start, end = span(i)
    # a socket: the neighbour's cone moved back by SOCKET_SHIFT, reaching `clearance` past its
    # tip; it starts at the neighbour's face, across the gap
    radius = CONE_R + SOCKET_SHIFT * TAN
    depth = CONE_LENGTH + clearance
    if i > 0:
        leaf_b = leaf_b.cut(cq.Workplane("XY").add(cone(start - clearance, 1, radius, depth)))
    if i < knuckles - 1:
        leaf_b = leaf_b.cut(cq.Workplane("XY").add(cone(end + clearance, -1, radius, depth)))

show_object(leaf_a, name="leaf_a")  # noqa: F821
show_object(leaf_b, name="leaf_b")  # noqa: F821
