"""A box laser-cut from sheet material, its panels joined by finger joints.

Give the space inside and the sheet's thickness; every edge where two panels meet is cut into
an odd number of fingers of about `finger_width`, alternating between the two panels, and each
corner where three panels meet goes to one of them (bottom and top first, then front and back,
then the sides), so the panels interlock without gaps. Every outline is then grown by half the
laser's kerf, so that after cutting the fingers are a snug fit. The panels are shown assembled;
each one is a flat sheet of `thickness` that a laser cuts as it is.
"""

import cadquery as cq

inner_length = 100.0  # free length inside, along X (mm)
inner_width = 60.0  # free width inside, along Y (mm)
inner_height = 50.0  # free height inside (mm)
thickness = 3.0  # sheet thickness (mm): measure the sheet, plywood is rarely its nominal size
finger_width = 10.0  # approximate width of the fingers (mm)
kerf = 0.15  # width of the laser's cut (mm); half of it is added to every outline
top = "open"  # "open" box, "closed" with a jointed top panel, or "lid": a lift-off lid
lid_fit = 0.3  # gap around the lid's locating plate inside the walls (mm)

t = thickness
X = inner_length + 2 * t
Y = inner_width + 2 * t
Z = inner_height + (2 * t if top == "closed" else t)
SIZE = [X, Y, Z]

# name: (normal axis, which side (0 low, 1 high), priority at corners)
PANELS = {
    "bottom": (2, 0, 3),
    "front": (1, 0, 2),
    "back": (1, 1, 2),
    "left": (0, 0, 1),
    "right": (0, 1, 1),
}
if top == "closed":
    PANELS["top"] = (2, 1, 3)


def slab(name):
    """The panel's sheet before any joint is cut: (low corner, high corner)."""
    axis, side, _ = PANELS[name]
    low, high = [0.0, 0.0, 0.0], list(SIZE)
    if side == 0:
        high[axis] = t
    else:
        low[axis] = SIZE[axis] - t
    return low, high


def box(low, high):
    size = [h - a for a, h in zip(low, high, strict=True)]
    return cq.Solid.makeBox(*size, cq.Vector(*low))


def owner_at_end(a, b, axis, end):
    """Who owns the corner cube at one end of the edge between panels a and b (the panel
    closing that end wins if it ranks highest), or None when no panel closes that end."""
    closing = [n for n, (ax, side, _) in PANELS.items() if ax == axis and side == end]
    if not closing:
        return None
    return max([a, b, closing[0]], key=lambda n: PANELS[n][2])


def foreign_pieces(name):
    """The pieces of this panel's slab that belong to its neighbours."""
    low, high = slab(name)
    pieces = []
    for other in PANELS:
        if other == name or PANELS[other][0] == PANELS[name][0]:
            continue
        o_low, o_high = slab(other)
        band_low = [max(p, q) for p, q in zip(low, o_low, strict=True)]
        band_high = [min(p, q) for p, q in zip(high, o_high, strict=True)]
        axis = 3 - PANELS[name][0] - PANELS[other][0]  # the edge runs along this axis
        start, stop = 0.0, SIZE[axis]
        for end in (0, 1):
            corner = owner_at_end(name, other, axis, end)
            if corner is None:
                continue
            if end == 0:
                start = t
                span = (0.0, t)
            else:
                stop = SIZE[axis] - t
                span = (SIZE[axis] - t, SIZE[axis])
            if corner != name:
                pieces.append(piece(band_low, band_high, axis, span))
        # the fingers: an odd number, so the same panel has both ends
        count = max(3, round((stop - start) / finger_width))
        count += 1 - count % 2
        first = max((name, other), key=lambda n: PANELS[n][2])
        step = (stop - start) / count
        for k in range(count):
            owner = first if k % 2 == 0 else (other if first == name else name)
            if owner != name:
                pieces.append(
                    piece(band_low, band_high, axis, (start + k * step, start + (k + 1) * step))
                )
    return pieces


def piece(band_low, band_high, axis, span):
    low, high = list(band_low), list(band_high)
    low[axis], high[axis] = span
    return box(low, high)


def sheet(solid, axis, base):
    """Grow the outline of a flat solid by half the kerf (holes shrink by as much) and make it
    a sheet of thickness t from `base` along `axis`."""
    normal = cq.Vector(*[1.0 if i == axis else 0.0 for i in range(3)])
    face = next(f for f in solid.Faces() if abs(f.normalAt().dot(normal)) > 0.99)
    outer = face.outerWire()
    inner = face.innerWires()
    if kerf > 0:
        outer = outer.offset2D(kerf / 2, "intersection")[0]
        inner = [w.offset2D(-kerf / 2, "intersection")[0] for w in inner]
    flat = cq.Face.makeFromWires(outer, inner)
    shift = base - flat.Center().toTuple()[axis]
    flat = flat.translate(normal * shift)
    return cq.Workplane("XY").add(cq.Solid.extrudeLinear(flat, normal * t))


for name, (axis, _side, _rank) in PANELS.items():
    low, high = slab(name)
    panel = box(low, high)
    pieces = foreign_pieces(name)
    if pieces:
        panel = panel.cut(*pieces).clean()
    show_object(sheet(panel, axis, low[axis]), name=name)  # noqa: F821

if top == "lid":
    # a plate the size of the box, with a finger hole, and under it a plate that fits inside
    # the walls and keeps the lid in place (glue the two together)
    lid = box((0.0, 0.0, Z), (X, Y, Z + t)).cut(
        cq.Solid.makeCylinder(10.0, 3 * t, cq.Vector(X / 2, Y / 2, Z - t))
    )
    show_object(sheet(lid, 2, Z), name="lid")  # noqa: F821
    locator = box((t + lid_fit, t + lid_fit, Z - t), (X - t - lid_fit, Y - t - lid_fit, Z))
    show_object(sheet(locator, 2, Z - t), name="lid_locator")  # noqa: F821
