"""The licence table and the rules that bind forks to their origin's terms."""

from __future__ import annotations

import pytest

from dgml.errors import Invalid
from registry.licences import (
    LICENCES,
    LicenceIncompatible,
    check_fork_licence,
    fork_licence_rule,
    get_licence,
)

PERMISSIVE = ["CC0-1.0", "CC-BY-4.0", "CERN-OHL-P-2.0", "MIT", "Apache-2.0"]


def rule(origin: str, target: str) -> str | None:
    return fork_licence_rule(get_licence(origin), get_licence(target))


def refusal(origin: str, target: str) -> LicenceIncompatible:
    with pytest.raises(LicenceIncompatible) as caught:
        check_fork_licence(get_licence(origin), get_licence(target))
    return caught.value


def allowed(origin: str, target: str) -> bool:
    return rule(origin, target) is None


# --- looking licences up ------------------------------------------------------------------------


@pytest.mark.parametrize("unknown", ["Not-A-Licence", "CC-BY-5.0", "", "GPL", "CC BY 4.0"])
def test_unknown_licence_is_invalid_and_names_the_license_field(unknown):
    with pytest.raises(Invalid) as caught:
        get_licence(unknown)
    error = caught.value
    assert error.status_code == 422
    assert error.to_dict()["field"] == "license"
    assert error.to_dict()["error"] == "invalid"
    assert repr(unknown) in error.detail
    assert "SPDX" in error.detail


def test_unknown_licence_names_the_field_it_was_given_under():
    with pytest.raises(Invalid) as caught:
        get_licence("Nope-1.0", field="manifest.license")
    assert caught.value.to_dict()["field"] == "manifest.license"


def test_non_text_licence_is_invalid_not_a_crash():
    with pytest.raises(Invalid):
        get_licence(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("cc-by-sa-4.0", "CC-BY-SA-4.0"),
        ("  MIT  ", "MIT"),
        ("cern-ohl-s-2.0", "CERN-OHL-S-2.0"),
        ("licenseref-ppl", "LicenseRef-PPL"),
    ],
)
def test_licence_lookup_ignores_case_and_surrounding_space(given, canonical):
    assert get_licence(given).id == canonical


def test_every_licence_is_found_by_its_own_id():
    for licence_id, licence in LICENCES.items():
        assert get_licence(licence_id) is licence


@pytest.mark.parametrize(
    ("licence_id", "commercial_use"),
    [
        ("CC-BY-4.0", "yes"),
        ("CC-BY-SA-4.0", "yes"),
        ("CERN-OHL-S-2.0", "yes"),
        ("CC-BY-NC-4.0", "no"),
        ("CC-BY-NC-SA-4.0", "no"),
        ("CC-BY-NC-ND-4.0", "no"),
        ("CC-BY-ND-4.0", "yes"),
        ("LicenseRef-PPL", "cooperatives"),
    ],
)
def test_commercial_use_as_the_router_reads_it(licence_id, commercial_use):
    assert get_licence(licence_id).commercial_use == commercial_use


# --- share-alike --------------------------------------------------------------------------------


@pytest.mark.parametrize("licence_id", ["CC-BY-SA-4.0", "CERN-OHL-S-2.0", "LicenseRef-PPL"])
def test_share_alike_fork_may_keep_its_licence(licence_id):
    assert allowed(licence_id, licence_id)


@pytest.mark.parametrize(
    ("origin", "target"),
    [
        ("CC-BY-SA-4.0", "MIT"),
        ("CC-BY-SA-4.0", "CC-BY-4.0"),
        ("CC-BY-SA-4.0", "CC0-1.0"),
        ("CC-BY-SA-4.0", "CC-BY-NC-SA-4.0"),
        ("CC-BY-SA-4.0", "CERN-OHL-S-2.0"),
        ("CERN-OHL-S-2.0", "CERN-OHL-W-2.0"),
        ("CERN-OHL-S-2.0", "CERN-OHL-P-2.0"),
        ("CERN-OHL-S-2.0", "CC-BY-SA-4.0"),
        ("LicenseRef-PPL", "CC-BY-NC-SA-4.0"),
        ("LicenseRef-PPL", "CC-BY-SA-4.0"),
        ("LicenseRef-PPL", "MIT"),
    ],
)
def test_share_alike_fork_may_not_change_licence(origin, target):
    error = refusal(origin, target)
    assert "share-alike" in error.to_dict()["rule"]
    assert error.detail.startswith(error.to_dict()["rule"] + ":")
    assert origin in error.detail


def test_cc_by_sa_fork_may_move_to_a_later_version():
    assert allowed("CC-BY-SA-3.0", "CC-BY-SA-4.0")


def test_cc_by_sa_fork_may_not_move_to_an_earlier_version():
    error = refusal("CC-BY-SA-4.0", "CC-BY-SA-3.0")
    assert error.to_dict()["rule"] == "share-alike"
    assert "or a later version of it" in error.detail


def test_ppl_refusal_names_both_share_alike_and_non_commercial():
    error = refusal("LicenseRef-PPL", "CC-BY-4.0")
    assert error.to_dict()["rule"] == "share-alike and non-commercial"


# --- non-commercial -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target", ["CC-BY-NC-4.0", "CC-BY-NC-SA-4.0"], ids=["keeps-nc", "becomes-nc-sa"]
)
def test_non_commercial_fork_keeps_non_commercial_terms(target):
    assert allowed("CC-BY-NC-4.0", target)


def test_non_commercial_fork_may_move_to_a_later_version():
    assert allowed("CC-BY-NC-3.0", "CC-BY-NC-4.0")
    assert allowed("CC-BY-NC-3.0", "CC-BY-NC-SA-4.0")


@pytest.mark.parametrize(
    "target",
    ["CC-BY-4.0", "CC0-1.0", "MIT", "CC-BY-SA-4.0", "CC-BY-NC-3.0", "CC-BY-NC-SA-3.0"],
)
def test_non_commercial_fork_may_not_drop_its_terms_or_go_back_a_version(target):
    error = refusal("CC-BY-NC-4.0", target)
    assert error.to_dict()["rule"] == "non-commercial"
    assert error.to_dict()["origin"] == "CC-BY-NC-4.0"
    assert error.to_dict()["requested"] == target


def test_non_commercial_share_alike_fork_keeps_nc_sa():
    assert allowed("CC-BY-NC-SA-4.0", "CC-BY-NC-SA-4.0")
    assert allowed("CC-BY-NC-SA-3.0", "CC-BY-NC-SA-4.0")
    assert not allowed("CC-BY-NC-SA-4.0", "CC-BY-NC-4.0")
    assert not allowed("CC-BY-NC-SA-4.0", "CC-BY-SA-4.0")


# --- no-derivatives -----------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["CC-BY-ND-4.0", "CC-BY-NC-ND-4.0", "CC-BY-ND-3.0"])
@pytest.mark.parametrize("target", ["same", "CC-BY-4.0", "CC0-1.0", "CC-BY-NC-4.0"])
def test_no_derivatives_design_cannot_be_forked_even_keeping_its_licence(origin, target):
    error = refusal(origin, origin if target == "same" else target)
    assert error.to_dict()["rule"] == "no-derivatives"
    assert origin in error.detail


# --- weak copyleft ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["CERN-OHL-W-2.0", "CERN-OHL-S-2.0"])
def test_weakly_reciprocal_fork_may_keep_w_or_become_s(target):
    assert allowed("CERN-OHL-W-2.0", target)


@pytest.mark.parametrize("target", ["CERN-OHL-P-2.0", "MIT", "CC-BY-SA-4.0"])
def test_weakly_reciprocal_fork_may_not_become_permissive_or_another_licence(target):
    error = refusal("CERN-OHL-W-2.0", target)
    assert error.to_dict()["rule"] == "weak-copyleft"
    assert "CERN-OHL-S-2.0" in error.detail


# --- permissive ---------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", PERMISSIVE)
@pytest.mark.parametrize("target", sorted(LICENCES))
def test_permissive_design_may_be_forked_under_any_licence(origin, target):
    assert allowed(origin, target)
    check_fork_licence(get_licence(origin), get_licence(target))


# --- the refusal itself -------------------------------------------------------------------------


def test_refusal_is_a_422_naming_field_rule_and_both_licences():
    error = refusal("CC-BY-SA-4.0", "MIT")
    assert isinstance(error, Invalid)
    assert error.status_code == 422
    assert error.to_dict() == {
        "error": "licence_incompatible",
        "detail": error.detail,
        "field": "license",
        "origin": "CC-BY-SA-4.0",
        "requested": "MIT",
        "rule": "share-alike",
    }
    assert error.detail == (
        "share-alike: forks of CC-BY-SA-4.0 must keep CC-BY-SA-4.0 or a later version of it"
    )


def test_every_refusal_starts_with_the_name_of_its_rule():
    names = {"no-derivatives", "share-alike", "weak-copyleft", "non-commercial"}
    seen = set()
    for origin in LICENCES:
        for target in LICENCES:
            reason = rule(origin, target)
            if reason is not None:
                name = reason.split(":", 1)[0]
                assert name in names | {"share-alike and non-commercial"}, reason
                seen.add(name)
    assert names <= seen
