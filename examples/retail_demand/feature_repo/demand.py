"""Feature definitions of the `demand` use case: a store's recent sales of a product, the product, the
store, and what is known the morning of the day (price, promotion, weekday).

The sales history of a store and product is published at the end of each day (23:59:59 UTC), so the
forecast of a day, made at its midnight, sees every day before it and nothing of its own. Profiles never
expire; the history expires after 60 days, so a pair that stopped selling is forecast without it.
"""

from datetime import timedelta
from typing import Any

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64
from feast.value_type import ValueType

from pipelines.feature_tables import feature_table
from pipelines.lake import zone_dir

USE_CASE = "demand"
# Stable codes: a category the model never saw gets 0, not the next free number.
CATEGORY_CODES = {"grocery": 1, "beverages": 2, "household": 3, "personal_care": 4, "snacks": 5}
END_OF_DAY = pd.Timedelta(days=1) - pd.Timedelta(seconds=1)
TAGS = {"use_case": USE_CASE, "owner": "data-engineering", "pii": "none"}


def _source(view: str) -> FileSource:
    return FileSource(
        name=f"{USE_CASE}_{view}",
        path=str(zone_dir("features", USE_CASE, view) / "data.parquet"),
        timestamp_field="event_timestamp",
    )


store = Entity(name="store", join_keys=["store_id"], value_type=ValueType.STRING)
product = Entity(name="product", join_keys=["sku"], value_type=ValueType.STRING)

store_product_sales = FeatureView(
    name="store_product_sales",
    entities=[store, product],
    ttl=timedelta(days=60),
    schema=[
        Field(name="units_lag_1d", dtype=Float64, description="Units sold the day before."),
        Field(name="units_avg_7d", dtype=Float64),
        Field(name="units_avg_28d", dtype=Float64),
        Field(name="promo_days_7d", dtype=Int64, description="Days on promotion of the last seven."),
    ],
    source=_source("store_product_sales"),
    online=True,
    tags=TAGS,
)

product_profile = FeatureView(
    name="product_profile",
    entities=[product],
    ttl=timedelta(0),
    schema=[
        Field(name="category_code", dtype=Int64, description="CATEGORY_CODES; 0 for an unknown category."),
        Field(name="base_price_aed", dtype=Float64),
    ],
    source=_source("product_profile"),
    online=True,
    tags=TAGS,
)

store_profile = FeatureView(
    name="store_profile",
    entities=[store],
    ttl=timedelta(0),
    schema=[Field(name="size_sqm", dtype=Float64)],
    source=_source("store_profile"),
    online=True,
    tags=TAGS,
)

demand_request = RequestSource(
    name="demand_request",
    schema=[
        Field(name="price_aed", dtype=Float64),
        Field(name="on_promotion", dtype=Int64),
        Field(name="request_unix", dtype=Float64),
    ],
)


@on_demand_feature_view(
    sources=[product_profile, demand_request],
    schema=[
        Field(name="price_ratio", dtype=Float64),
        Field(name="promoted", dtype=Int64),
        Field(name="day_of_week", dtype=Int64),
    ],
    mode="python",
)
def demand_context(inputs: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The day's price against the product's base price, its promotion flag, and its weekday (0 Monday)."""
    nan = float("nan")
    return {
        "price_ratio": [
            nan if price is None or not base else float(price) / float(base)
            for price, base in zip(inputs["price_aed"], inputs["base_price_aed"], strict=True)
        ],
        "promoted": [int(bool(flag)) for flag in inputs["on_promotion"]],
        "day_of_week": [
            -1 if at is None else pd.Timestamp(float(at), unit="s").weekday() for at in inputs["request_unix"]
        ],
    }


demand_v1 = FeatureService(
    name="demand_v1",
    features=[store_product_sales, product_profile, store_profile, demand_context],
    description="Features of the demand model, version 1.",
    tags={"use_case": USE_CASE},
)


@feature_table(view="store_product_sales", inputs=["sales"])
def store_product_sales_table(sales: pd.DataFrame) -> pd.DataFrame:
    """Each store and product's history at the end of each day; an opening row (no history) at the
    end of the day before its first sale, so a forecast of any day finds a row."""
    days = sales.sort_values(["store_id", "sku", "sale_date"], kind="stable")
    pairs = days.groupby(["store_id", "sku"], sort=False)
    history = pd.DataFrame(
        {
            "store_id": days["store_id"].to_numpy(),
            "sku": days["sku"].to_numpy(),
            "event_timestamp": (pd.to_datetime(days["sale_date"], utc=True) + END_OF_DAY).to_numpy(),
            "units_lag_1d": days["units_sold"].astype("float64").to_numpy(),
            "units_avg_7d": pairs["units_sold"].transform(lambda s: s.rolling(7, 1).mean()).to_numpy(),
            "units_avg_28d": pairs["units_sold"].transform(lambda s: s.rolling(28, 1).mean()).to_numpy(),
            "promo_days_7d": pairs["on_promotion"].transform(lambda s: s.rolling(7, 1).sum()).astype("int64"),
        }
    )
    first = history.groupby(["store_id", "sku"], as_index=False)["event_timestamp"].min()
    opening = first.assign(event_timestamp=first["event_timestamp"] - pd.Timedelta(days=1))
    return pd.concat([opening, history], ignore_index=True).astype(
        {"units_lag_1d": "float64", "units_avg_7d": "float64", "units_avg_28d": "float64",
         "promo_days_7d": "Int64"}
    )  # fmt: skip


@feature_table(view="product_profile", inputs=["products"])
def product_profile_table(products: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sku": products["sku"],
            "event_timestamp": pd.to_datetime(products["created_timestamp"], utc=True),
            "category_code": products["category"].map(CATEGORY_CODES).fillna(0).astype("int64"),
            "base_price_aed": products["base_price_aed"].astype("float64"),
        }
    )


@feature_table(view="store_profile", inputs=["stores"])
def store_profile_table(stores: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "store_id": stores["store_id"],
            "event_timestamp": pd.to_datetime(stores["opened_timestamp"], utc=True),
            "size_sqm": stores["size_sqm"].astype("float64"),
        }
    )
