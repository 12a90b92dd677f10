"""The fabrication terms table: each row, and each refusal naming its rule."""

from __future__ import annotations

import pytest

from dgml.errors import Invalid
from registry.licences import LICENCES
from router.terms import TABLE, LegalForm, Purpose, allowed

FORMS = [form.value for form in LegalForm]
PURPOSES = [purpose.value for purpose in Purpose]


@pytest.mark.parametrize("licence", ["CC0-1.0", "CC-BY-4.0", "CERN-OHL-P-2.0", "MIT", "Unlicense"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("purpose", PURPOSES)
@pytest.mark.parametrize("modified", [False, True])
def test_permissive_licences_may_be_made_anywhere_for_anything(licence, form, purpose, modified):
    verdict = allowed(licence, purpose, form, modified)
    assert verdict.ok
    assert verdict.rule == "permissive"


@pytest.mark.parametrize(
    "licence",
    ["CC-BY-SA-4.0", "CERN-OHL-S-2.0", "CERN-OHL-W-2.0", "GPL-3.0-or-later", "TAPR-OHL-1.0"],
)
@pytest.mark.parametrize("form", FORMS)
def test_share_alike_licences_may_be_made_and_sold_anywhere(licence, form):
    verdict = allowed(licence, "commercial", form, True)
    assert verdict.ok
    assert verdict.rule == "share-alike"


@pytest.mark.parametrize("licence", ["CC-BY-NC-4.0", "CC-BY-NC-SA-4.0", "CC-BY-NC-3.0"])
@pytest.mark.parametrize("form", ["nonprofit", "individual"])
def test_non_commercial_personal_orders_at_nonprofit_or_individual_labs(licence, form):
    verdict = allowed(licence, "personal", form, False)
    assert verdict.ok
    assert verdict.rule == "non-commercial"


@pytest.mark.parametrize("licence", ["CC-BY-NC-4.0", "CC-BY-NC-SA-4.0"])
@pytest.mark.parametrize(
    ("purpose", "form"),
    [
        ("personal", "commercial"),
        ("personal", "cooperative"),
        ("commercial", "nonprofit"),
        ("commercial", "individual"),
        ("commercial", "commercial"),
        ("commercial", "cooperative"),
    ],
)
def test_non_commercial_is_refused_otherwise_naming_the_rule(licence, purpose, form):
    verdict = allowed(licence, purpose, form, False)
    assert not verdict.ok
    assert verdict.rule == "non-commercial"
    assert licence in verdict.detail
    assert "personal" in verdict.detail


@pytest.mark.parametrize("form", FORMS)
def test_peer_production_personal_use_anywhere(form):
    verdict = allowed("LicenseRef-PPL", "personal", form, True)
    assert verdict.ok
    assert verdict.rule == "peer-production"


@pytest.mark.parametrize("form", ["cooperative", "nonprofit"])
def test_peer_production_commercial_use_at_cooperatives_and_nonprofits(form):
    assert allowed("LicenseRef-PPL", "commercial", form, False).ok


@pytest.mark.parametrize("form", ["commercial", "individual"])
def test_peer_production_commercial_use_refused_elsewhere(form):
    verdict = allowed("LicenseRef-PPL", "commercial", form, False)
    assert not verdict.ok
    assert verdict.rule == "peer-production"
    assert "cooperative" in verdict.detail


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("purpose", PURPOSES)
def test_no_derivatives_made_unmodified_anywhere(form, purpose):
    verdict = allowed("CC-BY-ND-4.0", purpose, form, False)
    assert verdict.ok
    assert verdict.rule == "no-derivatives"


@pytest.mark.parametrize("licence", ["CC-BY-ND-4.0", "CC-BY-ND-3.0", "CC-BY-NC-ND-4.0"])
def test_no_derivatives_refuses_a_part_made_with_parameters(licence):
    verdict = allowed(licence, "personal", "nonprofit", True)
    assert not verdict.ok
    assert verdict.rule == "no-derivatives"
    assert "without parameters" in verdict.detail


def test_nc_nd_unmodified_still_non_commercial():
    assert allowed("CC-BY-NC-ND-4.0", "personal", "nonprofit", False).ok
    verdict = allowed("CC-BY-NC-ND-4.0", "commercial", "nonprofit", False)
    assert (verdict.ok, verdict.rule) == (False, "non-commercial")


def test_licence_ids_are_case_insensitive():
    assert allowed("cc-by-nc-4.0", "commercial", "commercial", False).rule == "non-commercial"


def test_unknown_licence_is_refused_by_its_own_rule():
    verdict = allowed("Not-A-Licence", "personal", "nonprofit", False)
    assert (verdict.ok, verdict.rule) == (False, "unknown-licence")


@pytest.mark.parametrize(
    ("purpose", "form", "field"),
    [("resale", "nonprofit", "purpose"), ("personal", "charity", "legal_form")],
)
def test_unknown_purpose_or_legal_form_is_an_input_error(purpose, form, field):
    with pytest.raises(Invalid) as caught:
        allowed("MIT", purpose, form, False)
    assert caught.value.to_dict()["field"] == field


def test_every_known_licence_has_a_row():
    for licence in LICENCES:
        assert allowed(licence, "personal", "nonprofit", False).rule != "unknown-licence"


def test_every_row_explains_itself():
    names = [row.rule for row in TABLE]
    assert len(names) == len(set(names))
    assert all(row.why and row.allows and row.licences for row in TABLE)
