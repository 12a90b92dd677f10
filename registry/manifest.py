"""A version's manifest: the fields of OKH-LOSH (Open Know-How, Library of Open Source Hardware)
that apply to a single design version. Unknown fields are kept as given; known ones are checked.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from dgml.errors import Invalid

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
_LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class OuterDimensions(BaseModel):
    """Outer dimensions of the assembled part or product, in millimetres."""

    model_config = ConfigDict(extra="forbid")

    width: float = Field(gt=0)
    depth: float = Field(gt=0)
    height: float = Field(gt=0)
    unit: Literal["mm"] = "mm"

    @field_validator("width", "depth", "height")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class BomItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: ShortText
    quantity: float = Field(default=1, gt=0)
    unit: str | None = None
    material: str | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: ShortText | None = None
    version: ShortText | None = None
    license: ShortText | None = None
    licensor: ShortText | list[ShortText] | None = None
    function: Annotated[str, StringConstraints(max_length=5000)] | None = None
    documentation_language: ShortText | list[ShortText] | None = Field(
        default=None, alias="documentation-language"
    )
    tsdc: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{2,32}$")] | None = None
    material: ShortText | list[ShortText] | None = None
    printing_process: ShortText | None = Field(default=None, alias="printing-process")
    outer_dimensions: OuterDimensions | None = Field(default=None, alias="outer-dimensions")
    # Either the parts list itself or the path of a BOM file inside the design.
    bom: list[BomItem] | ShortText | None = None

    @field_validator("documentation_language")
    @classmethod
    def _language_tags(cls, value: str | list[str] | None) -> str | list[str] | None:
        for tag in [value] if isinstance(value, str) else value or []:
            if not _LANGUAGE_RE.match(tag):
                raise ValueError(f"{tag!r} is not a BCP 47 language tag such as 'en' or 'fr-FR'")
        return value


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict"}


def _is_union_tag(part: str) -> bool:
    """Pydantic names the union member it tried (``str``, ``list[BomItem]``) in ``loc``."""
    return (
        "[" in part
        or part in _TYPE_TAGS
        or part.startswith(("constrained-", "function-"))
        or part[:1].isupper()
    )


def _field_path(loc: tuple[int | str, ...]) -> str:
    """``('bom', 'list[BomItem]', 0, 'quantity')`` -> ``bom[0].quantity``: drop union tags."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _is_union_tag(part):
            continue
        else:
            path += f".{part}" if path else part
    return path


def parse_manifest(raw: str | dict[str, Any] | None) -> dict[str, Any]:
    """Check a manifest given as JSON text (or already parsed) and return it as a dict.

    Raises a 422 naming the field: ``manifest`` when it is not a JSON object, otherwise
    ``manifest.<field>`` for the first field that is wrong.
    """
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise Invalid(
                f"manifest is not valid JSON: {exc.msg} at position {exc.pos}", field="manifest"
            ) from None
    else:
        data = raw
    if not isinstance(data, dict):
        raise Invalid("manifest must be a JSON object", field="manifest")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _field_path(first["loc"])
        raise Invalid(
            f"manifest field {where!r}: {first['msg']}", field=f"manifest.{where}"
        ) from None
    return manifest.model_dump(mode="json", by_alias=True, exclude_none=True)
