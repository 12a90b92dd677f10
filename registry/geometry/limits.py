"""Limits every reader enforces, and the errors they share."""

from __future__ import annotations

from dataclasses import dataclass

from registry.geometry.mesh import Unreadable


@dataclass(frozen=True)
class ReadLimits:
    """What a reader refuses before spending time or memory on it."""

    max_triangles: int = 50_000_000
    # Binary STL: bytes past the last triangle that some exporters leave (less than one record).
    stl_max_padding: int = 49
    zip_max_entries: int = 10_000
    zip_max_uncompressed: int = 1 << 30  # 1 GiB for all entries together
    # Declared uncompressed size over archive size; mesh XML deflates about 5 to 10 times.
    zip_max_ratio: float = 200.0
    # 3MF: objects placed by build items and components together (a plate of parts is tens).
    max_placements: int = 100_000


LIMITS = ReadLimits()


def check_triangle_count(count: int, limits: ReadLimits, what: str) -> None:
    if count > limits.max_triangles:
        raise Unreadable(
            f"{what} declares {count:,} triangles, more than the {limits.max_triangles:,} "
            "a model may have"
        )


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
