"""Licences of designs and the rules that keep them honest along the fork tree.

Every design carries one licence: an SPDX identifier, or ``LicenseRef-PPL`` for the Peer
Production License. A fork may change the licence only as far as the origin's terms allow. The
rules, checked by :func:`check_fork_licence`:

===================  ==========================================================================
rule                 what it says
===================  ==========================================================================
no-derivatives       CC-BY-ND-*, CC-BY-NC-ND-*: adaptations may not be shared, so no public fork.
share-alike          CC-BY-SA-*, CERN-OHL-S-*, GPL-*, TAPR-OHL, PPL: a fork keeps the same licence
                     (a later version of the same licence is allowed where the licence says so).
weak-copyleft        CERN-OHL-W-2.0: a fork keeps CERN-OHL-W-2.0 or becomes CERN-OHL-S-2.0.
non-commercial       CC-BY-NC-*: a fork keeps a non-commercial licence (CC-BY-NC-* of the same or a
                     later version; NC-SA terms only NC-SA).
permissive           CC0-1.0, CC-BY-*, CERN-OHL-P-2.0, MIT, Apache-2.0, BSD-*, Unlicense: a fork may
                     take any licence.
===================  ==========================================================================

The same table decides whether a fork's version may flow back into its origin through a change
request: the origin's licence must be one the fork's licence allows for a derivative.

Sources: the legal code of each licence (creativecommons.org/licenses, ohwr.org/cern_ohl,
the Peer Production License by Dmytri Kleiner) and the SPDX licence list for the identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dgml.errors import Invalid


class Terms(StrEnum):
    PERMISSIVE = "permissive"
    SHARE_ALIKE = "share-alike"
    WEAK_COPYLEFT = "weak-copyleft"
    NON_COMMERCIAL = "non-commercial"
    NON_COMMERCIAL_SHARE_ALIKE = "non-commercial-share-alike"
    NO_DERIVATIVES = "no-derivatives"


@dataclass(frozen=True, slots=True)
class Licence:
    id: str
    name: str
    terms: Terms
    # Licences of one family with a version order; "a later version" rules compare within a family.
    family: str
    version: float = 0.0
    # Whether the licence lets adaptations use a later version of itself.
    later_versions_allowed: bool = False

    @property
    def commercial_use(self) -> str:
        """Commercial use as the router reads it: ``yes``, ``no`` or ``cooperatives`` (PPL)."""
        if self.id == "LicenseRef-PPL":
            return "cooperatives"
        if self.terms in (Terms.NON_COMMERCIAL, Terms.NON_COMMERCIAL_SHARE_ALIKE):
            return "no"
        if self.family == "CC-BY-NC-ND":
            return "no"
        return "yes"


def _cc(kind: str, terms: Terms, versions: tuple[str, ...] = ("4.0", "3.0")) -> list[Licence]:
    names = {
        "CC-BY": "Attribution",
        "CC-BY-SA": "Attribution-ShareAlike",
        "CC-BY-NC": "Attribution-NonCommercial",
        "CC-BY-NC-SA": "Attribution-NonCommercial-ShareAlike",
        "CC-BY-ND": "Attribution-NoDerivatives",
        "CC-BY-NC-ND": "Attribution-NonCommercial-NoDerivatives",
    }
    return [
        Licence(
            id=f"{kind}-{v}",
            name=f"Creative Commons {names[kind]} {v}",
            terms=terms,
            family=kind,
            version=float(v),
            # CC BY-SA 3.0 and later name "a later version of this licence" as compatible.
            later_versions_allowed=terms is not Terms.PERMISSIVE,
        )
        for v in versions
    ]


_ALL: list[Licence] = [
    Licence("CC0-1.0", "Creative Commons Zero 1.0", Terms.PERMISSIVE, "CC0", 1.0),
    *_cc("CC-BY", Terms.PERMISSIVE),
    *_cc("CC-BY-SA", Terms.SHARE_ALIKE),
    *_cc("CC-BY-NC", Terms.NON_COMMERCIAL),
    *_cc("CC-BY-NC-SA", Terms.NON_COMMERCIAL_SHARE_ALIKE),
    *_cc("CC-BY-ND", Terms.NO_DERIVATIVES),
    *_cc("CC-BY-NC-ND", Terms.NO_DERIVATIVES),
    Licence(
        "CERN-OHL-P-2.0",
        "CERN Open Hardware Licence v2 Permissive",
        Terms.PERMISSIVE,
        "CERN-OHL-P",
        2.0,
    ),
    Licence(
        "CERN-OHL-W-2.0",
        "CERN Open Hardware Licence v2 Weakly Reciprocal",
        Terms.WEAK_COPYLEFT,
        "CERN-OHL-W",
        2.0,
        later_versions_allowed=True,
    ),
    Licence(
        "CERN-OHL-S-2.0",
        "CERN Open Hardware Licence v2 Strongly Reciprocal",
        Terms.SHARE_ALIKE,
        "CERN-OHL-S",
        2.0,
        later_versions_allowed=True,
    ),
    Licence(
        "CERN-OHL-1.2",
        "CERN Open Hardware Licence v1.2",
        Terms.SHARE_ALIKE,
        "CERN-OHL-1",
        1.2,
        later_versions_allowed=True,
    ),
    Licence("TAPR-OHL-1.0", "TAPR Open Hardware License v1.0", Terms.SHARE_ALIKE, "TAPR-OHL", 1.0),
    Licence(
        "GPL-3.0-or-later",
        "GNU General Public License v3.0 or later",
        Terms.SHARE_ALIKE,
        "GPL",
        3.0,
        later_versions_allowed=True,
    ),
    Licence(
        "GPL-3.0-only", "GNU General Public License v3.0 only", Terms.SHARE_ALIKE, "GPL-only", 3.0
    ),
    Licence("MIT", "MIT License", Terms.PERMISSIVE, "MIT"),
    Licence("Apache-2.0", "Apache License 2.0", Terms.PERMISSIVE, "Apache", 2.0),
    Licence("BSD-2-Clause", "BSD 2-Clause License", Terms.PERMISSIVE, "BSD-2-Clause"),
    Licence("BSD-3-Clause", "BSD 3-Clause License", Terms.PERMISSIVE, "BSD-3-Clause"),
    Licence("Unlicense", "The Unlicense", Terms.PERMISSIVE, "Unlicense"),
    Licence(
        "LicenseRef-PPL", "Peer Production License", Terms.NON_COMMERCIAL_SHARE_ALIKE, "PPL", 1.0
    ),
]

LICENCES: dict[str, Licence] = {lic.id: lic for lic in _ALL}
_BY_FOLDED_ID = {lic.id.casefold(): lic for lic in _ALL}


def get_licence(licence_id: str, *, field: str = "license") -> Licence:
    """The licence with this SPDX id (case-insensitive), or a 422 naming the field."""
    lic = _BY_FOLDED_ID.get(licence_id.strip().casefold()) if isinstance(licence_id, str) else None
    if lic is None:
        raise Invalid(
            f"unknown licence {licence_id!r}: use an SPDX id such as CERN-OHL-S-2.0, CC-BY-SA-4.0, "
            "MIT, or LicenseRef-PPL for the Peer Production License",
            field=field,
        )
    return lic


def _same_or_later(origin: Licence, target: Licence, families: set[str]) -> bool:
    # Within the allowed families the version rule still holds: CC-BY-NC-4.0 may become
    # CC-BY-NC-SA-4.0, not CC-BY-NC-SA-3.0.
    if target.family not in families:
        return False
    if target.version == origin.version:
        return True
    return origin.later_versions_allowed and target.version > origin.version


def fork_licence_rule(origin: Licence, target: Licence) -> str | None:
    """Why a derivative of ``origin`` may not be published under ``target``; None if it may."""
    match origin.terms:
        case Terms.NO_DERIVATIVES:
            return (
                f"no-derivatives: {origin.id} does not allow adaptations to be shared, "
                "so it cannot be forked publicly"
            )
        case Terms.PERMISSIVE:
            return None
        case Terms.SHARE_ALIKE:
            if _same_or_later(origin, target, {origin.family}):
                return None
            return f"share-alike: forks of {origin.id} must keep {origin.id}" + (
                " or a later version of it" if origin.later_versions_allowed else ""
            )
        case Terms.WEAK_COPYLEFT:
            if target.id in {"CERN-OHL-W-2.0", "CERN-OHL-S-2.0"}:
                return None
            return f"weak-copyleft: forks of {origin.id} must keep it or become CERN-OHL-S-2.0"
        case Terms.NON_COMMERCIAL:
            if _same_or_later(origin, target, {"CC-BY-NC", "CC-BY-NC-SA"}):
                return None
            return (
                f"non-commercial: forks of {origin.id} must keep its non-commercial terms "
                "(CC-BY-NC or CC-BY-NC-SA of the same or a later version)"
            )
        case Terms.NON_COMMERCIAL_SHARE_ALIKE:
            if _same_or_later(origin, target, {origin.family}):
                return None
            return f"share-alike and non-commercial: forks of {origin.id} must keep {origin.id}" + (
                " or a later version of it" if origin.later_versions_allowed else ""
            )
    raise AssertionError(origin.terms)  # pragma: no cover - every Terms member is matched


class LicenceIncompatible(Invalid):
    code = "licence_incompatible"

    def __init__(self, origin: Licence, requested: Licence, rule: str) -> None:
        super().__init__(
            rule,
            field="license",
            origin=origin.id,
            requested=requested.id,
            rule=rule.split(":", 1)[0],
        )


def check_fork_licence(origin: Licence, target: Licence) -> None:
    """Raise :class:`LicenceIncompatible` (a 422 naming the rule) unless the fork is allowed."""
    rule = fork_licence_rule(origin, target)
    if rule is not None:
        raise LicenceIncompatible(origin, target, rule)
