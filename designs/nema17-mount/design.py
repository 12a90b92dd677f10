"""A milled plate that holds a NEMA 17 stepper motor beside an aluminium extrusion.

The motor (NEMA ICS 16 size 17: 42.3 mm square, M3 screws on a 31 mm square, 22 mm pilot
boss) hangs under the plate, its screws counterbored from the top. A flange beside it bolts
to the face of a 20, 30 or 40 mm extrusion through two slots, so the motor slides away from
the extrusion to tension a belt. Everything is cut from the top in one setup on a 3-axis
mill: through holes, slots and counterbores, and every inside corner of the outline keeps the
radius of the cutter.
"""

from types import SimpleNamespace

import cadquery as cq

thickness = 5.0  # plate thickness (mm)
margin = 4.0  # plate around the motor's 42.3 mm square (mm)
flange = 20.0  # width of the flange bolted to the extrusion: its size, 20 for 2020 (mm)
bolt = "M5"  # bolts into the extrusion's T-slot nuts: M5 for 2020, M6 for 3030 and 4040
bolt_spacing = 30.0  # distance between the two bolts, along the extrusion (mm)
slot_travel = 10.0  # how far the motor can slide to tension a belt (mm)
counterbore = True  # counterbore the motor screws so their heads sit below the top
cutter_diameter = 4.0  # end mill for the outline: inside corners keep its radius (mm)
corner_radius = 3.0  # radius of the outside corners (mm)

NEMA17 = SimpleNamespace(
    flange=42.3,  # the motor's square
    hole_square=31.0,  # its M3 screws sit on this square
    pilot=22.5,  # clearance for its 22 mm pilot boss
    screw_clearance=3.4,  # M3, ISO 273 medium
    head=6.5,  # counterbore for an ISO 4762 M3 socket head...
    head_depth=3.5,  # ... and its depth
)
BOLTS = {"M4": 4.5, "M5": 5.5, "M6": 6.6}  # clearance, ISO 273 medium

slot_width = BOLTS[bolt]
inner_radius = cutter_diameter / 2 + 0.2  # a little over the cutter's radius: no chatter
motor_length = NEMA17.flange + 2 * margin  # along X
motor_width = motor_length  # along Y
flange_width = bolt_spacing + slot_width + 8.0
if abs(flange_width - motor_width) < 4 * inner_radius:  # no step worth a corner
    flange_width = motor_width = max(flange_width, motor_width)
travel = max(0.0, min(slot_travel, flange - slot_width - 4.0))

# The outline: the motor's square at x >= 0, the flange at x < 0, both centred on y = 0.
motor_part = cq.Workplane("XY").box(
    motor_length, motor_width, thickness, centered=(False, True, False)
)
flange_part = cq.Workplane("XY").box(flange, flange_width, thickness, centered=(False, True, False))
plate = motor_part.union(flange_part.translate((-flange, 0, 0)))
if flange_width != motor_width:
    # the two inside corners where the widths step
    plate = plate.edges("|Z").edges(cq.selectors.BoxSelector((-0.01, -1e3, -1), (0.01, 1e3, 1e3)))
    plate = plate.fillet(inner_radius)
plate = (
    plate.edges("|Z")
    .edges(cq.selectors.BoxSelector((-flange - 0.01, -1e3, -1), (-flange + 0.01, 1e3, 1e3)))
    .fillet(corner_radius)
)
plate = (
    plate.edges("|Z")
    .edges(
        cq.selectors.BoxSelector((motor_length - 0.01, -1e3, -1), (motor_length + 0.01, 1e3, 1e3))
    )
    .fillet(corner_radius)
)

centre_x = motor_length / 2  # the motor's axis, on y = 0
plate = plate.cut(
    cq.Workplane("XY", origin=(centre_x, 0, -1)).circle(NEMA17.pilot / 2).extrude(thickness + 2)
)
screws = [
    (centre_x + sx * NEMA17.hole_square / 2, sy * NEMA17.hole_square / 2)
    for sx in (-1, 1)
    for sy in (-1, 1)
]
depth = min(NEMA17.head_depth, thickness - 1.5)
for x, y in screws:
    plate = plate.cut(
        cq.Workplane("XY", origin=(x, y, -1))
        .circle(NEMA17.screw_clearance / 2)
        .extrude(thickness + 2)
    )
    if counterbore:
        plate = plate.cut(
            cq.Workplane("XY", origin=(x, y, thickness - depth))
            .circle(NEMA17.head / 2)
            .extrude(depth + 1)
        )
for sy in (-1, 1):
    y = sy * bolt_spacing / 2
    if travel > 0:
        slot = cq.Workplane("XY", origin=(-flange / 2, y, -1)).slot2D(
            travel + slot_width, slot_width
        )
    else:
        slot = cq.Workplane("XY", origin=(-flange / 2, y, -1)).circle(slot_width / 2)
    plate = plate.cut(slot.extrude(thickness + 2))

show_object(plate, name="plate")  # noqa: F821
