"""A project box for a circuit board: a tray with screw posts in its corners and a lid.

Give the space the board and its wiring need inside; the walls, floor and lid are added
around it. The lid has a lip that locates it inside the walls and is screwed into the four
corner posts, either with thread-forming screws straight into the plastic or into heat-set
brass inserts. An optional teardrop-shaped hole in one end wall lets a cable in. Both parts
are drawn as they print: the box open side up, the lid outer face down beside it.
"""

import math

import cadquery as cq

inner_length = 80.0  # free space inside, along X (mm)
inner_width = 50.0  # free space inside, along Y (mm)
inner_height = 25.0  # free space inside, from the floor to the underside of the lid (mm)
wall = 2.0  # wall thickness (mm)
floor = 2.0  # floor thickness (mm)
lid_thickness = 2.0  # lid thickness (mm)
corner_radius = 4.0  # outside radius of the vertical corners (mm)
screw = "M3"  # metric screw size for the lid
fixing = "self-tapping"  # "self-tapping" into the posts, or "insert" for heat-set inserts
cable_hole = True  # a hole for a cable in one end wall
cable_diameter = 6.0  # diameter of that hole (mm)
fit = 0.2  # gap between the lid's lip and the walls (mm)

# screw: (clearance hole ISO 273 medium, pilot hole for thread-forming screws in plastic,
# hole for a short heat-set insert)
SCREWS = {"M2.5": (2.9, 2.1, 3.6), "M3": (3.4, 2.5, 4.0), "M4": (4.5, 3.3, 5.6)}
clearance_d, pilot_d, insert_d = SCREWS[screw]
post_hole = insert_d if fixing == "insert" else pilot_d
post_r = post_hole / 2 + 1.6
inner_r = min(max(corner_radius - wall, 0.0), post_r)
outer_length = inner_length + 2 * wall
outer_width = inner_width + 2 * wall
height = floor + inner_height


def rounded(length, width, radius, depth):
    body = cq.Workplane("XY").rect(length, width).extrude(depth)
    return body.edges("|Z").fillet(radius) if radius > 0.01 else body


# the posts stand in the inner corners, merged into both walls
inset = 0.8 * post_r
posts = [
    (sx * (inner_length / 2 - inset), sy * (inner_width / 2 - inset))
    for sx in (-1, 1)
    for sy in (-1, 1)
]

box = rounded(outer_length, outer_width, inner_r + wall, height)
box = box.cut(rounded(inner_length, inner_width, inner_r, inner_height).translate((0, 0, floor)))
for x, y in posts:
    post = cq.Workplane("XY", origin=(x, y, floor)).circle(post_r).extrude(inner_height)
    hole = cq.Workplane("XY", origin=(x, y, floor)).circle(post_hole / 2).extrude(inner_height)
    box = box.union(post).cut(hole)

if cable_hole:
    # in the middle of the -X end wall, clear of the posts and of the rim; its roof comes to a
    # point (40 degrees from vertical) so it prints without support
    roof = 1 / math.sin(math.radians(40))
    r = min(
        cable_diameter / 2,
        (inner_height / 2 - 1.0) / roof,
        inner_width / 2 - inset - post_r - 1.0,
    )
    a = math.radians(40)
    hole = (
        cq.Workplane("YZ", origin=(-outer_length / 2 - 1, 0, floor + inner_height / 2))
        .moveTo(-r * math.cos(a), r * math.sin(a))
        .threePointArc((0, -r), (r * math.cos(a), r * math.sin(a)))
        .lineTo(0, r * roof)
        .close()
        .extrude(wall + 2)
    )
    box = box.cut(hole)

# The lid, outer face down: a plate, and a lip that fits inside the walls around the posts.
lid = rounded(outer_length, outer_width, inner_r + wall, lid_thickness)
lip_height = min(3.0, inner_height / 2)
lip_outer = rounded(
    inner_length - 2 * fit, inner_width - 2 * fit, max(inner_r - fit, 0.0), lip_height
)
lip_inner = rounded(
    inner_length - 2 * fit - 2 * wall, inner_width - 2 * fit - 2 * wall, 0.0, lip_height
)
lip = lip_outer.cut(lip_inner).translate((0, 0, lid_thickness))
free = post_r + fit  # the lip stops square, this far short of each post's centre
for x, y in posts:
    corner = cq.Workplane("XY").box(
        2 * free + 2 * inner_r + 2 * wall, 2 * free + 2 * inner_r + 2 * wall, 2 * lip_height + 2
    )
    cx = x + math.copysign(inner_r + wall, x)
    cy = y + math.copysign(inner_r + wall, y)
    lip = lip.cut(corner.translate((cx, cy, lid_thickness)))
lid = lid.union(lip)
for x, y in posts:
    # drawn face down; turned over onto the box, its holes still meet the posts (they are
    # symmetric)
    lid = lid.cut(cq.Workplane("XY", origin=(x, y, -1)).circle(clearance_d / 2).extrude(20))
lid = lid.translate((0, outer_width + 10, 0))

show_object(box, name="box")  # noqa: F821
show_object(lid, name="lid")  # noqa: F821
