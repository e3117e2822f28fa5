"""How requests name models: name, name@alias, name/version."""

from __future__ import annotations

import pytest

from schemas.errors import BadRequest
from workers.ml.reference import ModelRef, parse, serving


def test_the_three_forms_parse() -> None:
    """A bare name, an alias and a version number."""
    assert parse("churn") == ModelRef("churn")
    assert parse("churn@staging") == ModelRef("churn", alias="staging")
    assert parse("churn/3") == ModelRef("churn", version=3)


def test_a_bare_name_serves_its_production_alias() -> None:
    """predict on `churn` uses `churn@production`."""
    assert serving(parse("churn")) == ModelRef("churn", alias="production")
    assert serving(parse("churn/2")) == ModelRef("churn", version=2)


@pytest.mark.parametrize("bad", ["", "-x", "a@", "a@UPPER", "a/0", "a/x", "a/99999999999", "a b"])
def test_malformed_references_are_refused_naming_the_field(bad: str) -> None:
    """Every malformed model_id is a 400 on model_id."""
    with pytest.raises(BadRequest) as err:
        parse(bad)
    assert err.value.details["field"] == "model_id"
