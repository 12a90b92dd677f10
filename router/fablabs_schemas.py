"""Request and response schemas of the fablab directory's HTTP interface.

Requests are checked here, field by field, so that a bad one is a 422 naming the field
(``machines[1].process``); unknown keys are refused rather than dropped. Processes and materials
are compared without regard to case, so they are casefolded on the way in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    model_validator,
)

from router import geo
from router.terms import LegalForm

SLUG_RE = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"


def fold(value: Any) -> Any:
    """Processes and materials are names without case: stripped and casefolded."""
    return value.strip().casefold() if isinstance(value, str) else value


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


Process = Annotated[Literal["fdm", "sla", "sls", "cnc", "laser"], BeforeValidator(fold)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[^\x00-\x1f\x7f]*$")]
Material = Annotated[Text, StringConstraints(min_length=1, max_length=64), AfterValidator(fold)]
Length = Annotated[float, Field(gt=0, lt=10_000, allow_inf_nan=False)]  # mm, under 10 m
Euros = Annotated[float, Field(ge=0, le=1_000_000, allow_inf_nan=False)]


def _positive(most: float) -> Any:
    return Field(default=None, gt=0, le=most, allow_inf_nan=False)


class Strict(BaseModel):
    """Unknown keys are refused: a misspelt field should not vanish silently."""

    model_config = ConfigDict(extra="forbid")


class Location(Strict):
    lat: float
    lon: float

    @model_validator(mode="after")
    def _on_earth(self) -> Location:
        try:
            self.lat, self.lon = geo.check_location(self.lat, self.lon, field="location")
        except geo.InvalidCoordinates as exc:
            raise ValueError(exc.detail.removeprefix("location: ")) from None
        return self


class Machine(Strict):
    process: Process
    materials: Annotated[list[Material], Field(min_length=1, max_length=50)]
    build_volume_mm: tuple[Length, Length, Length]
    count: Annotated[StrictInt, Field(ge=1, le=1000)] = 1
    model: Annotated[Text, StringConstraints(max_length=100)] | None = None
    nozzle_mm: float | None = _positive(10)
    kerf_mm: float | None = _positive(50)
    typical_job_hours: float | None = _positive(1000)

    @model_validator(mode="after")
    def _dedupe(self) -> Machine:
        self.materials = _unique(self.materials)
        return self


class Price(Strict):
    per_job_eur: Euros = 0.0
    per_cm3_eur: Euros = 0.0


class Contact(Strict):
    email: (
        Annotated[Text, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")] | None
    ) = None
    url: Annotated[Text, StringConstraints(max_length=500, pattern=r"^https?://\S+$")] | None = None
    phone: Annotated[Text, StringConstraints(max_length=40)] | None = None
    address: Annotated[Text, StringConstraints(max_length=300)] | None = None


Name = Annotated[Text, StringConstraints(min_length=1, max_length=200)]
Machines = Annotated[list[Machine], Field(min_length=1, max_length=100)]
Hours = Annotated[
    dict[
        Annotated[Text, StringConstraints(min_length=1, max_length=32)],
        Annotated[Text, StringConstraints(max_length=200)],
    ],
    Field(max_length=16),
]


class FablabCreate(Strict):
    id: Annotated[str, StringConstraints(pattern=SLUG_RE)] | None = None
    name: Name
    location: Location
    legal_form: LegalForm
    machines: Machines
    contact: Contact | None = None
    price: Price | None = None
    opening_hours: Hours | None = None


class FablabUpdate(Strict):
    """Fields to change; a field left out stays. ``null`` clears contact, price and hours."""

    name: Name | None = None
    location: Location | None = None
    legal_form: LegalForm | None = None
    machines: Machines | None = None
    contact: Contact | None = None
    price: Price | None = None
    opening_hours: Hours | None = None


class LocationOut(BaseModel):
    lat: float
    lon: float


class FablabPublic(BaseModel):
    id: str
    name: str
    location: LocationOut
    legal_form: str
    machines: list[dict[str, Any]]
    contact: dict[str, Any]
    price: dict[str, Any] | None
    opening_hours: dict[str, Any] | None
    operator: str | None
    online: bool
    last_seen_at: datetime | None
    enrolled_at: datetime | None
    created_at: datetime


class FablabListed(FablabPublic):
    distance_km: float | None = None


class FablabCreated(FablabPublic):
    enrolment_token: str = Field(description="shown once: give it to the fablab's agent")


class EnrolmentToken(BaseModel):
    fablab_id: str
    enrolment_token: str


class EnrolRequest(Strict):
    enrolment_token: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Enrolled(BaseModel):
    agent_token: str
    fablab_id: str


class DesignAt(BaseModel):
    owner: str
    name: str
    version: int


class BoardItem(BaseModel):
    kind: Literal["offer", "job"]
    id: int
    order_id: int
    line: int
    design: DesignAt
    process: str
    material: str
    quantity: int
    state: str
    distance_km: float
    expires_at: datetime | None
    created_at: datetime
    fablab: dict[str, str]


class Board(BaseModel):
    fablab_id: str
    radius_km: float
    items: list[BoardItem]
