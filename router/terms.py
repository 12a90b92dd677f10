"""Licence terms for fabrication: which fablab may make which design for which purpose.

A design's licence (see :mod:`registry.licences`) says who may use it and how. Making a part is a
use, so the router checks each order against each candidate fablab with ONE table,
:data:`TABLE`. A row applies to a set of licences and says which orders it permits; every row
that applies to the design's licence must permit the order, and the first row that does not is
the rule reported in the refusal (``licence:<rule>`` in a placement decision).

==============  =========================  =================================================
rule            licences                   fabrication allowed
==============  =========================  =================================================
no-derivatives  CC-BY-ND-*, CC-BY-NC-ND-*  only the design as published: no parameters given
non-commercial  CC-BY-NC-*, CC-BY-NC-SA-*  only ``personal`` orders, and only at a
                CC-BY-NC-ND-*              ``nonprofit`` or ``individual`` fablab
peer-           LicenseRef-PPL             ``personal`` orders anywhere; ``commercial`` ones
production                                 only at a ``cooperative`` or ``nonprofit`` fablab
share-alike     CC-BY-SA-*, CERN-OHL-S/W,  anywhere, for any purpose
                CERN-OHL-1.2, GPL, TAPR
permissive      CC0, CC-BY-*, CERN-OHL-P,  anywhere, for any purpose
                MIT, Apache, BSD, Unlicense
==============  =========================  =================================================

Words used by the table:

- purpose (of the order, told by the maker): ``personal`` (for the maker's own use, not for
  sale) or ``commercial`` (for sale, or used in a business).
- legal form (of the fablab, from the directory): ``individual`` (a person's workshop),
  ``nonprofit`` (an association, foundation or public body: a university or town fablab is not
  run for profit), ``cooperative`` (worker- or member-owned), ``commercial`` (any other business).
- modified: the maker gave parameters, so the part made is an adaptation of the design.

Sources: the legal code of the Creative Commons 4.0 licences (section 1: "NonCommercial means not
primarily intended for or directed towards commercial advantage or monetary compensation";
section 2.a.1: NoDerivatives licenses the material only to be reproduced, not to be adapted),
and the Peer Production License (Dmytri Kleiner, based on CC BY-NC-SA 3.0), which lets
"worker-owned business or worker-owned collective" and non-profit uses be commercial, provided
the surplus goes to the workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from dgml.errors import Invalid
from registry.licences import LICENCES, Licence, Terms


class Purpose(StrEnum):
    PERSONAL = "personal"
    COMMERCIAL = "commercial"


class LegalForm(StrEnum):
    INDIVIDUAL = "individual"
    NONPROFIT = "nonprofit"
    COOPERATIVE = "cooperative"
    COMMERCIAL = "commercial"


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    # The row that decided: on a refusal the rule that refused, on a permit the row that applied.
    rule: str
    # One sentence a person can read, for the decision's explanation.
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Row:
    rule: str
    licences: str
    applies: Callable[[Licence], bool]
    # (purpose, legal form of the fablab, modified) -> permitted
    permits: Callable[[Purpose, LegalForm, bool], bool]
    # What is allowed, worded for a refusal's sentence.
    allows: str
    why: str


_NC_FORMS = frozenset({LegalForm.NONPROFIT, LegalForm.INDIVIDUAL})
_PPL_COMMERCIAL_FORMS = frozenset({LegalForm.COOPERATIVE, LegalForm.NONPROFIT})

TABLE: tuple[Row, ...] = (
    Row(
        rule="no-derivatives",
        licences="CC-BY-ND-*, CC-BY-NC-ND-*",
        applies=lambda lic: lic.terms is Terms.NO_DERIVATIVES,
        permits=lambda purpose, form, modified: not modified,
        allows="only the design as published, without parameters",
        why=(
            "ND licences let the material be reproduced but not adapted; a part made with the "
            "maker's parameters is an adaptation, the part as published is a reproduction."
        ),
    ),
    Row(
        rule="non-commercial",
        licences="CC-BY-NC-*, CC-BY-NC-SA-*, CC-BY-NC-ND-*",
        applies=lambda lic: lic.commercial_use == "no",
        permits=lambda purpose, form, modified: purpose is Purpose.PERSONAL and form in _NC_FORMS,
        allows="only personal orders at a nonprofit or individual fablab",
        why=(
            "NC forbids use directed towards commercial advantage or monetary compensation: a "
            "part for sale is that, and so is a job done by a business for its income; a "
            "personal part made at cost by a nonprofit lab or a person is not."
        ),
    ),
    Row(
        rule="peer-production",
        licences="LicenseRef-PPL",
        applies=lambda lic: lic.commercial_use == "cooperatives",
        permits=lambda purpose, form, modified: (
            purpose is Purpose.PERSONAL or form in _PPL_COMMERCIAL_FORMS
        ),
        allows=(
            "personal orders anywhere, commercial ones only at a cooperative or nonprofit fablab"
        ),
        why=(
            "The PPL keeps commercial use for worker-owned organisations and non-profits whose "
            "surplus goes to the workers; any other business may not make it for sale."
        ),
    ),
    Row(
        rule="share-alike",
        licences="CC-BY-SA-*, CERN-OHL-S-2.0, CERN-OHL-W-2.0, CERN-OHL-1.2, GPL-*, TAPR-OHL",
        applies=lambda lic: lic.terms in (Terms.SHARE_ALIKE, Terms.WEAK_COPYLEFT),
        permits=lambda purpose, form, modified: True,
        allows="any order anywhere",
        why=(
            "Reciprocal licences bind what is shared (adaptations keep the licence), not who "
            "makes a part or why: making and selling parts is allowed."
        ),
    ),
    Row(
        rule="permissive",
        licences="CC0-1.0, CC-BY-*, CERN-OHL-P-2.0, MIT, Apache-2.0, BSD-*, Unlicense",
        applies=lambda lic: lic.terms is Terms.PERMISSIVE,
        permits=lambda purpose, form, modified: True,
        allows="any order anywhere",
        why="Attribution at most: any use, by anyone.",
    ),
)

_BY_FOLDED_ID = {key.casefold(): lic for key, lic in LICENCES.items()}


def _enum(kind: type[StrEnum], value: str | StrEnum, field: str) -> StrEnum:
    try:
        return kind(value)
    except ValueError:
        names = ", ".join(member.value for member in kind)
        raise Invalid(f"unknown {field} {value!r}: use one of {names}", field=field) from None


def allowed(
    licence: str, purpose: str | Purpose, legal_form: str | LegalForm, modified: bool
) -> Verdict:
    """May a fablab of ``legal_form`` make a design under ``licence`` for this order?

    ``licence`` is the design's SPDX id (case-insensitive); an unknown id is refused with the
    rule ``unknown-licence``. An unknown purpose or legal form is an input error
    (:class:`dgml.errors.Invalid`).
    """
    return _allowed(
        licence.casefold() if isinstance(licence, str) else "",
        _enum(Purpose, purpose, "purpose"),
        _enum(LegalForm, legal_form, "legal_form"),
        bool(modified),
    )


@lru_cache(maxsize=1024)
def _allowed(licence: str, purpose: Purpose, form: LegalForm, modified: bool) -> Verdict:
    lic = _BY_FOLDED_ID.get(licence)
    if lic is None:
        return Verdict(False, "unknown-licence", f"the licence {licence!r} is not one dgml knows")
    applied = None
    for row in TABLE:
        if not row.applies(lic):
            continue
        if not row.permits(purpose, form, modified):
            return Verdict(False, row.rule, f"{lic.id} allows {row.allows}")
        applied = applied or row
    assert applied is not None, f"no terms row applies to {lic.id}"
    return Verdict(True, applied.rule, f"{lic.id} allows {applied.allows}")
