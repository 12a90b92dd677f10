"""Which of the lab's machines can make an offer, and the journal's record of a hub job.

An offer names a process, a material, files and the part's extents (``extents_mm``, the box
of the hub's geometry reports; null while the hub has none). A machine can make it when the
config gives it that process and material, the tools its process needs were found at start-up
(:func:`workers.tools.usable_machines`), and the part fits its build volume with the axes
matched by size (the slicer checks the exact fit later); a job taken up from the hub's list is
checked the same way. The first test that leaves no machine is the reason sent with the
decline, in one sentence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from dgml.errors import Invalid
from workers.config import AgentConfig, Machine
from workers.journal import FileRef, JobSpec
from workers.tools import ToolReport, usable_machines


def fits(volume: list[float], extents: list[float]) -> bool:
    """Whether a part of these extents fits the build volume, axes matched by size."""
    return all(e <= v for e, v in zip(sorted(extents), sorted(volume), strict=True))


def part_extents(value: Any) -> list[float] | None:
    """The part's box from an offer: three positive finite numbers, else None (unknown)."""
    if not isinstance(value, list | tuple) or len(value) != 3:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return None
    numbers = [float(v) for v in value]
    return numbers if all(0 < v < float("inf") for v in numbers) else None


def machines_for(
    config: AgentConfig,
    tools: ToolReport,
    process: str,
    material: str,
    extents: Any = None,
) -> tuple[list[Machine], str | None]:
    """The usable machines that can make this, or why none can (``extents`` as an offer gives
    them; anything but three positive numbers is taken as unknown)."""
    same = [m for m in config.machines if m.process == process]
    if not same:
        have = ", ".join(sorted({m.process for m in config.machines}))
        return [], f"no machine here does {process} (this lab does {have})"
    usable, left_out = usable_machines(config, tools)
    ready = [m for m in usable if m.process == process]
    if not ready:
        return [], f"{process} is not offered here: {left_out[same[0].name]}"
    takers = [m for m in ready if m.takes(material)]
    if not takers:
        takes = ", ".join(sorted({x for m in ready for x in m.materials}))
        return [], f"no {process} machine here takes {material} (they take {takes})"
    box = part_extents(extents)
    if box is not None:
        takers = [m for m in takers if fits(m.build_volume_mm, box)]
        if not takers:
            size = " x ".join(f"{e:g}" for e in box)
            return [], f"the part ({size} mm) fits no {process} machine here"
    return takers, None


def spec_for(job: dict[str, Any], machine: Machine, resolve: Callable[[str], str]) -> JobSpec:
    """The journal's record of a hub job (or offer) on ``machine``; ``resolve`` turns each
    file URL into one on the hub, or refuses it (``Invalid``)."""
    try:
        files = [
            FileRef(name=f["path"], url=resolve(f["url"]), sha256=f["sha256"], size=f["size"])
            for f in job.get("files") or []
        ]
        return JobSpec(
            job_id=str(job["id"]),
            offer_id=str(job.get("offer_id") or "") or None,
            machine=machine.name,
            process=job["process"],
            material=job["material"],
            files=files,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        if where == "files":
            raise Invalid("it names no files to make", field="files") from None
        raise Invalid(f"its {where} is not usable: {first['msg']}", field=where) from None
    except (KeyError, TypeError) as exc:
        raise Invalid(f"the hub's answer lacks {exc}", field="files") from None


def offer_machines(
    config: AgentConfig, tools: ToolReport, offer: dict[str, Any], resolve: Callable[[str], str]
) -> tuple[list[Machine], str | None]:
    """The machines that can make an offer, or the reason to decline it (its files too)."""
    machines, reason = machines_for(
        config,
        tools,
        str(offer.get("process")),
        str(offer.get("material")),
        offer.get("extents_mm"),
    )
    if reason is None:
        try:
            spec_for(offer, machines[0], resolve)
        except Invalid as exc:
            return [], f"the offer cannot be made here: {exc.detail}"
    return machines, reason
