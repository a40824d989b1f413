"""Reference profile: numeric features as decile bins, the spec's categorical ones as category shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import lake
from pipelines.reference_profile import ProfileError, categorical_profile, write_reference_profile


def test_categorical_profile_holds_each_code_share_and_the_null_rate() -> None:
    # Given merchant category codes with one missing value in ten
    values = np.array([5411, 5411, 5411, 5411, 5812, 5812, 5812, 7995.5, 4829, np.nan])

    # When they are profiled as categories
    profile = categorical_profile(values)

    # Then each code's share of the present rows is kept under the code as written, whole codes without ".0"
    assert profile == {
        "kind": "categorical",
        "rows": 10,
        "null_rate": pytest.approx(0.1),
        "categories": {
            "4829": pytest.approx(1 / 9),
            "5411": pytest.approx(4 / 9),
            "5812": pytest.approx(3 / 9),
            "7995.5": pytest.approx(1 / 9),
        },
    }


def test_a_quantity_named_categorical_is_refused_with_the_fix() -> None:
    # Given an amount with twenty thousand distinct values
    amounts = np.random.default_rng(3).lognormal(3.0, 1.0, 20_000)

    # When it is profiled as a category
    # Then the error names the feature and the spec field to change
    with pytest.raises(
        ProfileError, match=r"'amount_aed' has 20000 distinct values.*monitoring\.categorical"
    ):
        categorical_profile(amounts, "amount_aed")


def test_written_profile_marks_each_feature_with_its_kind(tmp_path: Path) -> None:
    # Given training rows of a numeric feature and two codes, one of which the model does not use
    rng = np.random.default_rng(4)
    train = pd.DataFrame(
        {"amount": rng.lognormal(3.0, 1.0, 1_000), "mcc": rng.choice([5411, 5812], 1_000), "unused": 1.0}
    )

    # When the profile is written with the spec's categorical list
    path = write_reference_profile(
        tmp_path, train, ["amount", "mcc"], rng.random(1_000), categorical=["mcc", "is_ecommerce"]
    )

    # Then the code is profiled as categories, the amount and the score as deciles, as read back from disk
    profile = lake.read_json(path)
    assert path == tmp_path / "reference_profile.json"
    assert set(profile["features"]) == {"amount", "mcc"}
    assert profile["features"]["mcc"]["kind"] == "categorical"
    assert set(profile["features"]["mcc"]["categories"]) == {"5411", "5812"}
    assert (
        profile["features"]["amount"]["kind"] == "numeric"
        and len(profile["features"]["amount"]["edges"]) == 9
    )
    assert profile["prediction"]["kind"] == "numeric" and sum(
        profile["prediction"]["shares"]
    ) == pytest.approx(1)
