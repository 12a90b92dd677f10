"""Directory records from fablabs.io listings, with plausible machines: for tests, the demo and
the placement benchmark.

A fablabs.io listing gives a lab's name, position and capabilities (``three_d_printing``,
``laser``, ``cnc_milling``, ``vinyl_cutting``, ``precision_milling``, ``circuit_production``),
not its machines, legal form, queue or prices. :func:`record_from_listing` fills those in with
typical values (common machine sizes; French fablabs are mostly associations), chosen from a
hash of the lab's id so that the same listing always gives the same record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from router.records import Fablab

# (process, materials, build volumes in mm to choose from): common machines of each kind.
MACHINES: dict[str, tuple[str, tuple[str, ...], tuple[tuple[float, float, float], ...]]] = {
    "three_d_printing": (
        "fdm",
        ("pla", "petg", "abs", "tpu"),
        ((180, 180, 180), (220, 220, 250), (250, 210, 210), (256, 256, 256), (300, 300, 400)),
    ),
    "laser": (
        "laser",
        ("plywood-3mm", "mdf-3mm", "acrylic-3mm", "cardboard"),
        ((600, 400, 10), (1000, 600, 10), (1300, 900, 10)),
    ),
    "cnc_milling": (
        "cnc",
        ("plywood", "mdf", "hardwood", "hdpe"),
        ((600, 400, 80), (1220, 1220, 100), (2500, 1250, 150)),
    ),
    "vinyl_cutting": ("vinyl", ("vinyl", "flex"), ((600, 2000, 1),)),
    "precision_milling": ("milling", ("wax", "pom", "fr1"), ((203, 152, 60),)),
    "circuit_production": ("pcb", ("fr1", "fr4"), ((200, 150, 2),)),
}
# Legal forms by share: associations and public labs, companies, cooperatives, individuals.
LEGAL_FORMS = (("nonprofit", 70), ("commercial", 15), ("cooperative", 10), ("individual", 5))


def _draw(seed: str, salt: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}/{salt}".encode(), digest_size=8).digest())


def _legal_form(fablab_id: str) -> str:
    pick = _draw(fablab_id, "legal") % 100
    for legal_form, share in LEGAL_FORMS:
        if pick < share:
            return legal_form
        pick -= share
    return LEGAL_FORMS[-1][0]


def plausible(fablab_id: str, capabilities: list[str], *, priced: bool = True) -> dict[str, Any]:
    """Machines, legal form and price model for a lab with these capabilities (deterministic)."""
    machines = []
    for capability in capabilities:
        if capability not in MACHINES:
            continue
        process, materials, volumes = MACHINES[capability]
        draw = _draw(fablab_id, capability)
        machines.append(
            {
                "process": process,
                "materials": list(materials[: 2 + draw % (len(materials) - 1)]),
                "build_volume_mm": list(volumes[draw % len(volumes)]),
                "count": 1 + (draw >> 8) % (3 if process == "fdm" else 2),
                "queue": (draw >> 16) % 5,
            }
        )
    record: dict[str, Any] = {"legal_form": _legal_form(fablab_id), "machines": machines}
    draw = _draw(fablab_id, "price")
    if priced and draw % 2:
        record["price"] = {
            "per_job_eur": float(2 + (draw >> 4) % 9),
            "per_cm3_eur": round(0.05 + ((draw >> 12) % 6) * 0.05, 2),
        }
    return record


def fablab_id(listing: Mapping[str, Any]) -> str:
    """The fablabs.io slug (the last part of the lab's URL), or its name."""
    url = str(listing.get("url") or "").rstrip("/")
    return url.rsplit("/", 1)[-1] if url else str(listing["name"])


def record_from_listing(listing: Mapping[str, Any], *, priced: bool = True) -> Fablab:
    lab_id = fablab_id(listing)
    return Fablab.from_dict(
        {
            "id": lab_id,
            "name": listing["name"],
            "lat": listing["latitude"],
            "lon": listing["longitude"],
            **plausible(lab_id, list(listing.get("capabilities", ())), priced=priced),
        }
    )
