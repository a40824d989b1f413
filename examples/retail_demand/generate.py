"""Source files of the `demand` example use case: daily unit sales of an SMB retailer, store x product.

``python -m examples.retail_demand.generate --out DIR`` writes ``stores.csv``, ``products.csv`` and one
``sales/<YYYY-MM-DD>.csv`` per day. Units sold are Poisson around a rate that a forecaster can learn
from history and from what is known the morning of the day: the product's own level, the store's
size, the weekday, a promotion and its price cut. Seeded: the same arguments write the same bytes.
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

EMIRATES = ("Dubai", "Abu Dhabi", "Sharjah", "Ajman")
CATEGORIES = ("grocery", "beverages", "household", "personal_care", "snacks")
WEEKDAY_FACTOR = (0.9, 0.85, 0.9, 1.0, 1.3, 1.45, 1.1)  # Monday .. Sunday: the UAE weekend peaks
PROMOTION_SHARE = 0.12  # store x product x days on promotion
PROMOTION_LIFT = 1.7
PRICE_ELASTICITY = -1.4


def generate(
    out: Path,
    stores: int = 6,
    products: int = 30,
    days: int = 90,
    end: date = date(2026, 11, 1),
    seed: int = 11,
) -> int:
    """Write the source files under ``out``; returns the number of sales rows."""
    rng = np.random.default_rng(seed)
    start = end - timedelta(days=days)
    opened = datetime.combine(start - timedelta(days=400), datetime.min.time(), UTC)
    store_frame = pd.DataFrame(
        {
            "store_id": [f"S{i + 1:03d}" for i in range(stores)],
            "emirate": rng.choice(EMIRATES, stores),
            "size_sqm": rng.integers(120, 900, stores),
            "opened_timestamp": opened.isoformat(),
        }
    )
    base_price = np.round(rng.lognormal(2.5, 0.6, products), 2)
    product_frame = pd.DataFrame(
        {
            "sku": [f"P{i + 1:05d}" for i in range(products)],
            "category": rng.choice(CATEGORIES, products),
            "base_price_aed": base_price,
            "created_timestamp": opened.isoformat(),
        }
    )
    level = rng.lognormal(1.3, 0.7, products)  # a product's typical daily units in an average store
    size_factor = (store_frame["size_sqm"].to_numpy() / 400.0) ** 0.6
    out.mkdir(parents=True, exist_ok=True)
    store_frame.to_csv(out / "stores.csv", index=False)
    product_frame.to_csv(out / "products.csv", index=False)
    (out / "sales").mkdir(exist_ok=True)
    rows = 0
    for offset in range(days):
        day = start + timedelta(days=offset)
        promotion = rng.random((stores, products)) < PROMOTION_SHARE
        discount = np.where(promotion, rng.uniform(0.7, 0.9, (stores, products)), rng.uniform(0.97, 1.03))
        price = np.round(base_price[None, :] * discount, 2)
        rate = (
            level[None, :] * size_factor[:, None] * WEEKDAY_FACTOR[day.weekday()]
            * np.where(promotion, PROMOTION_LIFT, 1.0) * discount ** PRICE_ELASTICITY
        )  # fmt: skip
        units = rng.poisson(rate)
        store_ids = np.repeat(store_frame["store_id"].to_numpy(), products)
        skus = np.tile(product_frame["sku"].to_numpy(), stores)
        frame = pd.DataFrame(
            {
                "row_id": [f"{store}-{sku}-{day:%Y%m%d}" for store, sku in zip(store_ids, skus, strict=True)],
                "sale_date": datetime.combine(day, datetime.min.time(), UTC).isoformat(),
                "store_id": store_ids,
                "sku": skus,
                "price_aed": price.reshape(-1),
                "on_promotion": promotion.reshape(-1).astype(int),
                "units_sold": units.reshape(-1),
            }
        )
        frame.to_csv(out / "sales" / f"{day:%Y-%m-%d}.csv", index=False)
        rows += len(frame)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stores", type=int, default=6)
    parser.add_argument("--products", type=int, default=30)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--end", type=date.fromisoformat, default=date(2026, 11, 1))
    arguments = parser.parse_args()
    rows = generate(arguments.out, arguments.stores, arguments.products, arguments.days, arguments.end)
    print(f"{rows:,} sales rows in {arguments.out}")


if __name__ == "__main__":
    main()
