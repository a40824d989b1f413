"""Synthetic reference data for the fraud use case: customers, merchants and daily card transactions.

The generative process, its parameters and why the fraud signal is behavioural are documented in
``docs/reference-data.md``; keep that document in step with the constants below.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

SIZES = {"tiny": 3_000, "small": 30_000, "demo": 120_000, "large": 1_000_000}

_DAY_S = 86_400
_EPOCH = date(1970, 1, 1)

# ---------------------------------------------------------------------------------------------------------
# Reference tables
# ---------------------------------------------------------------------------------------------------------

EMIRATES = ("Abu Dhabi", "Dubai", "Sharjah", "Ajman", "Umm Al Quwain", "Ras Al Khaimah", "Fujairah")
# Rough share of the resident population (and so of a retail bank's book) per emirate.
_EMIRATE_WEIGHTS = np.array([0.27, 0.41, 0.18, 0.06, 0.01, 0.045, 0.025])
_EMIRATE_AREAS = {
    "Abu Dhabi": ("Khalidiya", "Al Reem", "Mussafah", "Al Ain", "Corniche"),
    "Dubai": ("Deira", "Al Barsha", "Marina", "Karama", "Jumeirah", "Mirdif", "Business Bay"),
    "Sharjah": ("Al Nahda", "Al Majaz", "Al Qasimia", "Muwaileh"),
    "Ajman": ("Al Nuaimiya", "Al Rashidiya", "Al Jurf"),
    "Umm Al Quwain": ("Al Salama", "Al Raas"),
    "Ras Al Khaimah": ("Al Nakheel", "Al Hamra", "Julphar"),
    "Fujairah": ("Dibba", "Al Faseel", "Sakamkam"),
}

# category: (ISO 18245 MCC, share of merchants, share of legit spend count, share online,
#            legit amount factor vs the customer's level, share of fraud episodes)
_CATEGORIES: dict[str, tuple[int, float, float, float, float, float]] = {
    "grocery": (5411, 0.14, 0.22, 0.08, 1.0, 0.03),
    "restaurant": (5812, 0.14, 0.13, 0.10, 0.9, 0.02),
    "cafe": (5814, 0.09, 0.12, 0.05, 0.4, 0.02),
    "fuel": (5541, 0.06, 0.08, 0.00, 1.1, 0.03),
    "transport": (4121, 0.04, 0.09, 0.30, 0.5, 0.02),
    "pharmacy": (5912, 0.06, 0.05, 0.10, 0.8, 0.02),
    "telecom": (4814, 0.03, 0.04, 0.60, 1.2, 0.04),
    "entertainment": (7832, 0.04, 0.04, 0.40, 1.0, 0.04),
    "fashion": (5651, 0.10, 0.06, 0.25, 1.6, 0.10),
    "online_marketplace": (5399, 0.05, 0.06, 1.00, 1.3, 0.18),
    "digital_goods": (5818, 0.03, 0.03, 1.00, 0.7, 0.12),
    "electronics": (5732, 0.07, 0.03, 0.35, 2.2, 0.16),
    "jewellery": (5944, 0.05, 0.015, 0.10, 2.5, 0.10),
    "travel": (4722, 0.05, 0.025, 0.60, 2.5, 0.12),
}
CATEGORIES = tuple(_CATEGORIES)
CHANNELS = ("pos", "contactless", "ecommerce")
TRANSACTION_COLUMNS = (
    "transaction_id",
    "event_timestamp",
    "customer_id",
    "card_id",
    "merchant_id",
    "amount_aed",
    "currency",
    "channel",
    "emirate",
    "merchant_category",
    "is_fraud",
)
MCC = {cat: spec[0] for cat, spec in _CATEGORIES.items()}
_CAT_MERCHANT_W = np.array([s[1] for s in _CATEGORIES.values()])
_CAT_LEGIT_W = np.array([s[2] for s in _CATEGORIES.values()])
_CAT_ONLINE_P = np.array([s[3] for s in _CATEGORIES.values()])
_CAT_AMOUNT_F = np.array([s[4] for s in _CATEGORIES.values()])
_CAT_FRAUD_W = np.array([s[5] for s in _CATEGORIES.values()])
_LARGE_CATS = ("electronics", "jewellery", "travel", "fashion", "online_marketplace")
_BURST_CATS = ("transport", "cafe", "restaurant", "grocery")

_MERCHANT_WORDS = {
    "grocery": ("Hypermarket", "Supermarket", "Fresh Market", "Grocery"),
    "restaurant": ("Grill", "Kitchen", "Restaurant", "Biryani House", "Shawarma"),
    "cafe": ("Cafe", "Coffee Roasters", "Karak House", "Bakery"),
    "fuel": ("Petrol Station", "Fuel Station", "Service Station"),
    "transport": ("Taxi", "Limousine", "Rides", "Transport"),
    "pharmacy": ("Pharmacy", "Medical Store", "Chemist"),
    "telecom": ("Mobile", "Telecom", "Connect"),
    "entertainment": ("Cinemas", "Fun City", "Play Zone"),
    "fashion": ("Fashion", "Boutique", "Tailoring", "Abaya House"),
    "online_marketplace": ("Souq Online", "Bazaar", "Marketplace", "Deals"),
    "digital_goods": ("Games", "Apps", "Stream", "Gift Cards"),
    "electronics": ("Electronics", "Digital", "Mobiles & Gadgets"),
    "jewellery": ("Jewellers", "Gold & Diamonds", "Gold Souk"),
    "travel": ("Travels", "Tours", "Holidays", "Air Tickets"),
}
_MERCHANT_PREFIXES = (
    "Al Madina",
    "Union",
    "Golden",
    "Al Noor",
    "Emirates",
    "Gulf",
    "Desert Rose",
    "Palm",
    "Oasis",
    "Al Waha",
    "Falcon",
    "Pearl",
    "Crescent",
    "Blue Wave",
    "Saffron",
    "Al Reef",
    "Dune",
    "Sidra",
    "Ghaf",
    "Al Safa",
    "Zayed",
    "Al Fahidi",
    "Creek",
    "Bluewater",
    "Sahara",
    "Marjan",
    "Nakheel",
    "Arabian",
    "Barakat",
    "Al Jazeera",
)

# (share of customers, first names, middle names, family names). Arabs carry the father's name as
# the middle name, South Indians often do too, Filipinos the mother's maiden name.
_EMIRATI_M = (
    "Mohammed",
    "Ahmed",
    "Khalid",
    "Saeed",
    "Rashid",
    "Hamdan",
    "Sultan",
    "Zayed",
    "Mansour",
    "Obaid",
    "Hamad",
    "Majid",
    "Faisal",
    "Abdulla",
    "Omar",
    "Ali",
    "Yousef",
    "Saif",
    "Juma",
    "Khalifa",
    "Theyab",
    "Humaid",
    "Ateeq",
    "Eissa",
    "Marwan",
    "Hazza",
    "Matar",
    "Salem",
)
_EMIRATI_F = (
    "Fatima",
    "Mariam",
    "Aisha",
    "Shamma",
    "Hessa",
    "Maitha",
    "Latifa",
    "Moza",
    "Noora",
    "Alya",
    "Sheikha",
    "Amna",
    "Reem",
    "Mahra",
    "Meera",
    "Salama",
    "Hind",
    "Afra",
    "Wadima",
    "Ghaya",
)
_ARAB_M = (
    "Omar",
    "Tarek",
    "Karim",
    "Rami",
    "Hany",
    "Walid",
    "Samir",
    "Ziad",
    "Bassam",
    "Nabil",
    "Fadi",
    "Mahmoud",
    "Hussein",
    "Mostafa",
    "Ibrahim",
    "Yasser",
    "Amr",
    "Khaled",
    "Sami",
    "Adel",
    "Jamal",
    "Nizar",
)
_ARAB_F = (
    "Nadia",
    "Rania",
    "Lina",
    "Dina",
    "Hala",
    "Yara",
    "Mona",
    "Salma",
    "Nour",
    "Rasha",
    "Dalia",
    "Ghada",
    "Layla",
    "Zeina",
    "Farah",
    "Heba",
    "Maya",
    "Tala",
)
_SOUTH_ASIAN_F = (
    "Rahul",
    "Priya",
    "Arjun",
    "Anjali",
    "Vikram",
    "Sneha",
    "Rohan",
    "Deepa",
    "Suresh",
    "Lakshmi",
    "Imran",
    "Ayesha",
    "Bilal",
    "Sana",
    "Kavya",
    "Nikhil",
    "Meera",
    "Abdul",
    "Zainab",
    "Anil",
    "Divya",
    "Hassan",
    "Ravi",
    "Pooja",
    "Sanjay",
    "Asif",
    "Farhan",
    "Shreya",
    "Manoj",
    "Nisha",
    "Tariq",
    "Usman",
)
_SOUTH_ASIAN_MID = (
    "Kumar",
    "Suresh",
    "Ramesh",
    "Mohan",
    "Krishnan",
    "Ahmed",
    "Iqbal",
    "Prakash",
    "Gopal",
    "Raj",
    "Anand",
    "Hussain",
    "Venkat",
    "Shankar",
    "Rafiq",
    "Joseph",
    "George",
    "Mathew",
)
_FILIPINO_F = (
    "Maria",
    "Jose",
    "Mark",
    "Joy",
    "Angelica",
    "John",
    "Kristine",
    "Rommel",
    "Jasmine",
    "Paolo",
    "Liza",
    "Carlo",
    "Mary Grace",
    "Jerome",
    "Rhea",
    "Arnel",
    "Cherry",
    "Ronaldo",
    "Grace",
    "Michelle",
)
_FILIPINO_L = (
    "Santos",
    "Reyes",
    "Cruz",
    "Bautista",
    "Garcia",
    "Mendoza",
    "Dela Cruz",
    "Villanueva",
    "Ramos",
    "Aquino",
    "Castillo",
    "Navarro",
    "Torres",
    "Flores",
    "Gonzales",
    "Lopez",
    "Manalo",
    "Pascual",
    "Soriano",
    "Tolentino",
)
_WESTERN_F = (
    "James",
    "Emma",
    "Oliver",
    "Sophie",
    "Thomas",
    "Charlotte",
    "Daniel",
    "Hannah",
    "Lucas",
    "Chloe",
    "Michael",
    "Laura",
    "William",
    "Olivia",
    "Henry",
    "Amelia",
    "Jack",
    "Isabella",
    "Ethan",
    "Grace",
)
# Emirati family names; the women's group draws from the first 14.
_EMIRATI_FAMILIES = (
    "Al Mansoori",
    "Al Nuaimi",
    "Al Marzooqi",
    "Al Shamsi",
    "Al Ketbi",
    "Al Mazrouei",
    "Al Hammadi",
    "Al Falasi",
    "Al Suwaidi",
    "Al Qubaisi",
    "Al Dhaheri",
    "Al Kaabi",
    "Al Zaabi",
    "Al Muhairi",
    "Al Blooshi",
    "Al Hosani",
    "Al Remeithi",
    "Al Ameri",
    "Al Mheiri",
    "Al Tunaiji",
    "Al Naqbi",
)
_NAME_GROUPS: tuple[tuple[float, tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (0.08, _EMIRATI_M, _EMIRATI_M, _EMIRATI_FAMILIES),
    (0.07, _EMIRATI_F, _EMIRATI_M, _EMIRATI_FAMILIES[:14]),
    (
        0.12,
        _ARAB_M,
        _ARAB_M,
        (
            "Haddad",
            "Khoury",
            "Nasser",
            "Saleh",
            "Hassan",
            "Farouk",
            "Abboud",
            "Aziz",
            "El Sayed",
            "Barakat",
            "Najjar",
            "Sabbagh",
            "Darwish",
            "Mahmoud",
            "Abdelrahman",
            "Shaheen",
            "Qasem",
            "Zaher",
        ),
    ),
    (
        0.09,
        _ARAB_F,
        _ARAB_M,
        (
            "Haddad",
            "Khoury",
            "Nasser",
            "Saleh",
            "Hassan",
            "Farouk",
            "Abboud",
            "Aziz",
            "El Sayed",
            "Barakat",
            "Najjar",
            "Sabbagh",
            "Darwish",
            "Shaheen",
        ),
    ),
    (
        0.40,
        _SOUTH_ASIAN_F,
        _SOUTH_ASIAN_MID,
        (
            "Sharma",
            "Nair",
            "Menon",
            "Patel",
            "Iyer",
            "Reddy",
            "Khan",
            "Qureshi",
            "Siddiqui",
            "Pillai",
            "Gupta",
            "Joshi",
            "Chaudhry",
            "Malik",
            "Fernandes",
            "Dsouza",
            "Varghese",
            "Thomas",
            "Rao",
            "Shaikh",
            "Kurian",
            "Mehta",
            "Desai",
            "Butt",
            "Rahman",
            "Chowdhury",
        ),
    ),
    (0.13, _FILIPINO_F, _FILIPINO_L, _FILIPINO_L),
    (
        0.11,
        _WESTERN_F,
        _WESTERN_F,
        (
            "Smith",
            "Johnson",
            "Brown",
            "Taylor",
            "Wilson",
            "Evans",
            "Walker",
            "Clarke",
            "Schmidt",
            "Dubois",
            "Rossi",
            "Murphy",
            "OBrien",
            "Hughes",
            "Kelly",
            "Martin",
            "Novak",
            "Petrov",
            "Jansen",
            "Larsen",
        ),
    ),
)

# Relative activity by hour of day (UTC+4 local evenings dominate; UTC hour = local - 4).
_LOCAL_HOUR_W = np.array(
    [
        0.8,
        0.4,
        0.2,
        0.1,
        0.1,
        0.2,
        0.6,
        1.2,
        1.8,
        2.0,
        2.2,
        2.4,
        2.6,
        2.6,
        2.4,
        2.4,
        2.6,
        3.0,
        3.4,
        3.8,
        3.8,
        3.4,
        2.6,
        1.6,
    ]
)
_HOUR_W = np.roll(_LOCAL_HOUR_W, -4) / _LOCAL_HOUR_W.sum()
# Fraudsters work around the clock: a much flatter cycle (weak static hint by design).
_FRAUD_HOUR_W = (np.roll(_LOCAL_HOUR_W, -4) + 2.0) / (_LOCAL_HOUR_W.sum() + 48.0)
# Monday..Sunday: UAE weekend is Saturday-Sunday, Friday evening busy too.
_WEEKDAY_W = np.array([0.92, 0.92, 0.95, 0.98, 1.08, 1.12, 1.03])

# ---------------------------------------------------------------------------------------------------------
# Generative parameters (documented in docs/reference-data.md)
# ---------------------------------------------------------------------------------------------------------

LEVEL_MEDIAN_AED = 120.0  # median of the customers' typical transaction amount
LEVEL_SIGMA = 0.9  # lognormal sigma of the typical amount across customers
ACTIVITY_SIGMA = 0.8  # lognormal sigma of transaction rates across customers
AMOUNT_NOISE_SIGMA = 0.45  # lognormal sigma of a legit amount around level * category factor

FRAUD_TX_SHARE = 0.02  # target share of transactions inside fraud episodes
SECOND_CARD_P = 0.35  # customers who also hold a second card
PRIMARY_CARD_P = 0.75  # share of a two-card customer's ordinary spend on the primary card
FRAUD_BURST_SIZE = (3, 7)  # transactions per fraud burst, inclusive
FRAUD_GAP_MEAN_S = 180.0  # mean gap between burst transactions (exponential)
FRAUD_MULTIPLIER = (2.5, 7.0)  # amount = customer level * U(a, b)
FRAUD_ONLINE_P = 0.4  # chance a fraud transaction goes to an online (ecommerce) merchant
FRAUD_HIGH_VALUE_P = 0.4  # fraud picks a category by the fraud weights this often, else like legit
FRAUD_CONTACTLESS_P = 0.5  # in-person fraud taps less than everyday spend (0.65), cloned cards swipe
FRAUD_STEALTH_SHARE = 0.05  # episodes that look like ordinary spending
FRAUD_VICTIM_TILT = 1.0  # victim weight ~ level ** -tilt: mass-market cards get compromised more
HISTORY_DAYS = 7  # an episode starts only after this many days in the window ...
HISTORY_MIN_TX = 3  # ... and after the victim's 3rd legit transaction

LEGIT_BURST_SHARE = 0.03  # share of transactions in legit bursts (taxi hops, food court)
LEGIT_BURST_SIZE = (3, 5)
LEGIT_BURST_GAP_MEAN_S = 240.0
LEGIT_LARGE_SHARE = 0.015  # share of single legit purchases far above the customer's level
LEGIT_LARGE_MULTIPLIER = (3.0, 6.0)
HOME_EMIRATE_P = 0.8  # in-person legit spending happens in the home emirate this often

# ---------------------------------------------------------------------------------------------------------
# Injected drift (see DriftScenario): monitoring tests need data whose drift starts on a known day
# ---------------------------------------------------------------------------------------------------------

DriftKind = Literal["amount_shift", "new_merchant_category", "broken_feed"]
DRIFT_KINDS: tuple[DriftKind, ...] = ("amount_shift", "new_merchant_category", "broken_feed")
AMOUNT_SHIFT_FACTOR = 2.0  # drifted amounts are multiplied by a lognormal factor with this median ...
AMOUNT_SHIFT_SIGMA = 0.25  # ... and this sigma
MAX_AMOUNT_AED = 999_999.99  # the landing suite rejects amounts above 1,000,000
NEW_CATEGORY = "ev_charging"
NEW_CATEGORY_MCC = 5552  # ISO 18245 "electric vehicle charging": no clean merchant carries it
NEW_CATEGORY_WORDS = ("EV Charging", "Charge Point", "E-Charge Hub")
NEW_CATEGORY_SHARE = 0.15  # share of transactions from the start day that go to the new category
NEW_CATEGORY_MERCHANTS = 0.05  # new merchants per clean merchant (at least 2) ...
NEW_CATEGORY_ONBOARDING_DAYS = 30  # ... created within this many days before the start day
NEW_CATEGORY_CONTACTLESS_P = 0.8  # chargers are in person: an ecommerce row moved there taps or swipes
BROKEN_FEED_COLUMN = "merchant_category"
BROKEN_FEED_NULL_SHARE = 0.4  # share of transactions from the start day with a blank BROKEN_FEED_COLUMN
_MAX_MERCHANT_ID = 99_999  # merchant ids are M + 5 digits


@dataclass(frozen=True)
class DriftScenario:
    """A change injected into the transactions from the UTC day ``start`` onward.

    Day files before ``start`` are byte-identical to the clean output of the same arguments, and the
    injection draws from its own random stream (seeded by ``[seed, 1]``), so the clean draws never move.

    Kinds:
        ``amount_shift``: each amount is multiplied by a lognormal factor (median
            ``AMOUNT_SHIFT_FACTOR``, sigma ``AMOUNT_SHIFT_SIGMA``): prices rose, or a card product moved
            upmarket. Against the days before, ``amount_aed`` and the 1 h and 24 h spend features reach a
            decile PSI of about 0.3, the 30-day averages over 0.2 (a +60% shift stayed under 0.2).
        ``new_merchant_category``: ``NEW_CATEGORY`` (MCC ``NEW_CATEGORY_MCC``, absent from the clean
            data) opens and takes ``NEW_CATEGORY_SHARE`` of the transactions, amounts unchanged. Its
            merchants are appended to ``merchants.csv``, created in the ``NEW_CATEGORY_ONBOARDING_DAYS``
            before ``start``, so ingest and the point-in-time merchant join find them.
        ``broken_feed``: the merchant enrichment feed breaks and ``BROKEN_FEED_NULL_SHARE`` of the
            rows carry a blank ``BROKEN_FEED_COLUMN``. Every transactions column that feeds a feature
            (amount, channel, the keys, the time) is guarded by a not-null expectation in
            ``transactions.landing``, and so are ``emirate`` and ``merchant_category``: no null in this
            file passes validation. Of the columns a real enrichment outage blanks, ``merchant_category``
            is the least harmful: no feature reads it (the category reaches the models as the merchants'
            ``mcc``) and no gate slice does, so validation is expected to stop these partitions naming
            that column, and a relaxed suite would still leave the features intact.

    Attributes:
        kind: One of ``DRIFT_KINDS``.
        start: First affected UTC day; must lie inside the generated window.

    Raises:
        ValueError: If ``kind`` is unknown or ``start`` is not a date.
    """

    kind: DriftKind
    start: date

    def __post_init__(self) -> None:
        if self.kind not in DRIFT_KINDS:
            raise ValueError(f"unknown drift kind '{self.kind}'; expected one of: {', '.join(DRIFT_KINDS)}")
        if not isinstance(self.start, date) or isinstance(self.start, datetime):
            raise ValueError(f"drift start must be a date (a UTC day), got {self.start!r}")


@dataclass(frozen=True)
class GeneratedData:
    """What :func:`generate` wrote.

    Attributes:
        source_dir: Directory holding ``customers.csv``, ``merchants.csv`` and ``transactions/``.
        start: First day of the transaction window (UTC).
        end: Day after the last day of the window (exclusive).
        n_customers: Rows in ``customers.csv``.
        n_merchants: Rows in ``merchants.csv``.
        n_transactions: Transaction rows over all day files.
        fraud_rate: Share of transactions labelled ``is_fraud = 1``.
        files: Every file written, customers and merchants first, then the day files in date order.
        drift: The scenario injected, or None for clean data.
    """

    source_dir: Path
    start: date
    end: date
    n_customers: int
    n_merchants: int
    n_transactions: int
    fraud_rate: float
    files: list[Path]
    drift: DriftScenario | None = None


# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------


def _epoch_s(day: date) -> int:
    return (day - _EPOCH).days * _DAY_S


def _iso(seconds: np.ndarray) -> np.ndarray:
    text = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s")
    return np.char.add(text.astype("U19"), "+00:00")


def _luhn_digit(digits: np.ndarray) -> np.ndarray:
    """Luhn check digit for each row of a (n, k) digit matrix, as on real Emirates ID numbers."""
    rev = digits[:, ::-1]
    doubled = rev[:, 0::2] * 2
    doubled = np.where(doubled > 9, doubled - 9, doubled)
    total = doubled.sum(axis=1) + rev[:, 1::2].sum(axis=1)
    return (10 - total % 10) % 10


def _pick_in_pool(
    pool_keys: np.ndarray, wanted: np.ndarray, u: np.ndarray, fallback: np.ndarray
) -> np.ndarray:
    """Uniform merchant with ``pool_keys == wanted`` per row; ``fallback`` where that pool is empty."""
    order = np.argsort(pool_keys, kind="stable")
    n_keys = int(max(pool_keys.max(initial=0), wanted.max(initial=0))) + 1
    counts = np.bincount(pool_keys, minlength=n_keys)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    size = counts[wanted]
    pos = starts[wanted] + np.minimum((u * size).astype(np.int64), np.maximum(size - 1, 0))
    return np.where(size > 0, order[np.minimum(pos, len(order) - 1)], fallback)


def _times(
    rng: np.random.Generator, n: int, day_lo: np.ndarray | int, n_days: int, start_s: int, hour_w: np.ndarray
) -> np.ndarray:
    """Seconds since epoch: a day in [day_lo, n_days) weighted by weekday, an hour by ``hour_w``."""
    first_weekday = datetime.fromtimestamp(start_s, UTC).weekday()
    day_w = _WEEKDAY_W[(first_weekday + np.arange(n_days)) % 7]
    cdf = np.cumsum(day_w)
    lo = np.asarray(day_lo, dtype=np.int64)
    lo_mass = np.where(lo > 0, cdf[np.maximum(lo - 1, 0)], 0.0)
    # Inverse-CDF sampling restricted to days >= day_lo keeps the weekday pattern for every row.
    target = lo_mass + rng.random(n) * (cdf[-1] - lo_mass)
    day = np.minimum(np.searchsorted(cdf, target, side="right"), n_days - 1)
    hour = rng.choice(24, size=n, p=hour_w)
    return start_s + day * _DAY_S + hour * 3600 + rng.integers(0, 3600, size=n)


def _episodes(
    rng: np.random.Generator, n_episodes: int, size_range: tuple[int, int], gap_mean_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Episode index and offset in seconds from the episode start, for every transaction of every episode."""
    sizes = rng.integers(size_range[0], size_range[1] + 1, size=n_episodes)
    episode = np.repeat(np.arange(n_episodes), sizes)
    # A 20 s floor keeps burst transactions on distinct seconds, so the time sort is unambiguous.
    gaps = 20 + rng.exponential(gap_mean_s, size=episode.size).round().astype(np.int64)
    first = np.cumsum(sizes) - sizes
    gaps[first] = 0
    cum = np.cumsum(gaps)
    return episode, cum - np.repeat(cum[first], sizes)


def _fit_in_window(times: np.ndarray, episode: np.ndarray, end_s: int) -> np.ndarray:
    """Shift whole episodes back so their last transaction still falls inside the window."""
    if not episode.size:
        return times
    last = np.zeros(episode.max() + 1, dtype=np.int64)
    np.maximum.at(last, episode, times)
    shift = np.maximum(last - (end_s - 1), 0)
    return times - shift[episode]


# ---------------------------------------------------------------------------------------------------------
# Customers and merchants
# ---------------------------------------------------------------------------------------------------------


def _customers(rng: np.random.Generator, n: int, start: date) -> pd.DataFrame:
    ids = np.sort(rng.choice(9_000_000, size=n, replace=False) + 1_000_000)
    group_p = np.array([g[0] for g in _NAME_GROUPS])
    group = rng.choice(len(_NAME_GROUPS), size=n, p=group_p / group_p.sum())
    firsts = np.empty(n, dtype=object)
    middles = np.empty(n, dtype=object)
    lasts = np.empty(n, dtype=object)
    for g, (_, first_names, middle_names, last_names) in enumerate(_NAME_GROUPS):
        rows = np.flatnonzero(group == g)
        firsts[rows] = np.array(first_names, dtype=object)[rng.integers(0, len(first_names), rows.size)]
        middles[rows] = np.array(middle_names, dtype=object)[rng.integers(0, len(middle_names), rows.size)]
        lasts[rows] = np.array(last_names, dtype=object)[rng.integers(0, len(last_names), rows.size)]
    full = pd.Series(firsts + " " + middles + " " + lasts)
    # Every PII value must identify exactly one customer (downstream tests grep for leaks), so
    # colliding names get a second given name; the ordinal suffix is a last resort for huge books.
    all_given = np.array(sorted({n for g in _NAME_GROUPS for n in g[1]}), dtype=object)
    for _ in range(8):
        dup = full.duplicated(keep="first").to_numpy()
        if not dup.any():
            break
        extra = all_given[rng.integers(0, len(all_given), dup.sum())]
        full[dup] = firsts[dup] + " " + extra + " " + middles[dup] + " " + lasts[dup]
    dup = full.duplicated(keep="first").to_numpy()
    if dup.any():
        full[dup] = full[dup] + " " + pd.Series(np.arange(dup.sum()) + 2, index=full[dup].index).astype(str)

    window_start = _epoch_s(start)
    # Ages are counted at the window start so every customer was an adult before signing up.
    age_years = 18.2 + 61.8 * rng.beta(2.2, 3.5, size=n)
    dob_s = window_start - (age_years * 365.25 * _DAY_S).astype(np.int64)
    dob = dob_s.astype("datetime64[s]").astype("datetime64[D]")
    birth_year = dob.astype("datetime64[Y]").astype(np.int64) + 1970
    serial = rng.choice(10_000_000, size=n, replace=False)
    eid_digits = np.column_stack(
        [
            np.full(n, 7),
            np.full(n, 8),
            np.full(n, 4),
            *[(birth_year // 10**k) % 10 for k in (3, 2, 1, 0)],
            *[(serial // 10**k) % 10 for k in range(6, -1, -1)],
        ]
    )
    check = _luhn_digit(eid_digits)
    emirates_id = [
        f"784-{y}-{s:07d}-{c}"
        for y, s, c in zip(birth_year.tolist(), serial.tolist(), check.tolist(), strict=True)
    ]
    # UAE mobile numbers: +971 5X XXX XXXX with X in the operators' prefixes.
    phone_idx = rng.choice(6 * 10_000_000, size=n, replace=False)
    operator = np.array([0, 2, 4, 5, 6, 8])[phone_idx // 10_000_000]
    subscriber = (phone_idx % 10_000_000).tolist()
    phone = [f"+9715{o}{r:07d}" for o, r in zip(operator.tolist(), subscriber, strict=True)]
    email_tag = rng.choice(max(100_000, 10 * n), size=n, replace=False) + 100
    email = [
        f"{f.lower().replace(' ', '')}.{last.lower().replace(' ', '')}.{t}@mail.example.ae"
        for f, last, t in zip(firsts, lasts, email_tag.tolist(), strict=True)
    ]

    home = rng.choice(len(EMIRATES), size=n, p=_EMIRATE_WEIGHTS / _EMIRATE_WEIGHTS.sum())
    level = LEVEL_MEDIAN_AED * np.exp(LEVEL_SIGMA * rng.standard_normal(n))
    activity = np.exp(ACTIVITY_SIGMA * rng.standard_normal(n))
    # Limits track spend only loosely (salary certificates, not card behaviour, drive them).
    limit = np.clip(np.round(level * 60 * np.exp(0.6 * rng.standard_normal(n)) / 500) * 500, 2_000, 200_000)
    adult_s = dob_s + (18 * 365.25 * _DAY_S)
    earliest = np.maximum(adult_s, window_start - 10 * 365 * _DAY_S).astype(np.int64)
    signup = earliest + (rng.random(n) * (window_start - _DAY_S - earliest)).astype(np.int64)
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:07d}" for i in ids.tolist()],
            "full_name": full.to_numpy(),
            "emirates_id": emirates_id,
            "phone": phone,
            "email": email,
            "date_of_birth": dob.astype(str),
            "home_emirate": np.array(EMIRATES, dtype=object)[home],
            "credit_limit_aed": limit.astype(float),
            "signup_timestamp": _iso(signup),
            # Internal columns, dropped before writing.
            "_home": home,
            "_level": level,
            "_activity": activity,
        }
    )


def _merchants(rng: np.random.Generator, n: int, start: date) -> pd.DataFrame:
    n_cat = len(CATEGORIES)
    # One merchant per category first so every category can be drawn even in tiny sets.
    cat = np.concatenate(
        [
            np.arange(min(n, n_cat)),
            rng.choice(n_cat, size=max(n - n_cat, 0), p=_CAT_MERCHANT_W / _CAT_MERCHANT_W.sum()),
        ]
    )
    online = (rng.random(n) < _CAT_ONLINE_P[cat]).astype(np.int64)
    online[cat == CATEGORIES.index("online_marketplace")] = 1
    # Online merchants are registered mostly in Dubai's free zones.
    emirate = np.where(
        online == 1,
        rng.choice(len(EMIRATES), size=n, p=[0.2, 0.7, 0.05, 0.02, 0.0, 0.03, 0.0]),
        rng.choice(len(EMIRATES), size=n, p=_EMIRATE_WEIGHTS / _EMIRATE_WEIGHTS.sum()),
    )
    names = []
    prefix = rng.integers(0, len(_MERCHANT_PREFIXES), size=n)
    word_u = rng.random(n)
    area_u = rng.random(n)
    for i in range(n):
        words = _MERCHANT_WORDS[CATEGORIES[cat[i]]]
        name = f"{_MERCHANT_PREFIXES[prefix[i]]} {words[int(word_u[i] * len(words))]}"
        if online[i]:
            name += " Online"
        else:
            areas = _EMIRATE_AREAS[EMIRATES[emirate[i]]]
            name += f" {areas[int(area_u[i] * len(areas))]}"
        names.append(name)
    window_start = _epoch_s(start)
    created = window_start - _DAY_S - (rng.random(n) * 15 * 365 * _DAY_S).astype(np.int64)
    return pd.DataFrame(
        {
            "merchant_id": [f"M{10001 + i:05d}" for i in range(n)],
            "merchant_name": names,
            "merchant_category": np.array(CATEGORIES, dtype=object)[cat],
            "mcc": np.array([MCC[c] for c in CATEGORIES])[cat],
            "emirate": np.array(EMIRATES, dtype=object)[emirate],
            "is_online": online,
            "created_timestamp": _iso(created),
            "_cat": cat,
            "_emirate": emirate,
            "_popularity": np.exp(0.7 * rng.standard_normal(n)),
        }
    )


# ---------------------------------------------------------------------------------------------------------
# Transactions
# ---------------------------------------------------------------------------------------------------------


def _legit_merchants(
    rng: np.random.Generator, merchants: pd.DataFrame, home: np.ndarray, cat_w: np.ndarray
) -> np.ndarray:
    cat = merchants["_cat"].to_numpy()
    pop = merchants["_popularity"].to_numpy()
    cat_total = np.bincount(cat, weights=pop, minlength=len(CATEGORIES))
    w = cat_w[cat] * pop / cat_total[cat]
    first = rng.choice(len(merchants), size=home.size, p=w / w.sum())
    # Most in-person spending is local: re-draw within the customer's emirate, same category.
    n_em = len(EMIRATES)
    key = cat * n_em + merchants["_emirate"].to_numpy()
    offline = merchants["is_online"].to_numpy() == 0
    pool_key = np.where(offline, key, len(CATEGORIES) * n_em)
    local = _pick_in_pool(pool_key, cat[first] * n_em + home, rng.random(home.size), first)
    stay_home = offline[first] & (rng.random(home.size) < HOME_EMIRATE_P)
    return np.where(stay_home, local, first)


def _part(
    cust: np.ndarray, time: np.ndarray, merch: np.ndarray, amount: np.ndarray, *, fraud: int, kind: int
) -> dict[str, np.ndarray]:
    labels = {"fraud": fraud, "kind": kind}
    return {
        "cust": cust,
        "time": time,
        "merch": merch,
        "amount": amount,
        **{k: np.full(cust.size, v, dtype=np.int64) for k, v in labels.items()},
    }


def _transactions(
    rng: np.random.Generator, n: int, customers: pd.DataFrame, merchants: pd.DataFrame, start: date, days: int
) -> dict[str, np.ndarray]:
    start_s = _epoch_s(start)
    end_s = start_s + days * _DAY_S
    level = customers["_level"].to_numpy()
    activity = customers["_activity"].to_numpy()
    home = customers["_home"].to_numpy()
    n_cust = len(customers)
    m_cat = merchants["_cat"].to_numpy()
    m_online = merchants["is_online"].to_numpy()

    fraud_mean = (FRAUD_BURST_SIZE[0] + FRAUD_BURST_SIZE[1]) / 2
    n_fraud_ep = round(n * FRAUD_TX_SHARE / fraud_mean)
    n_burst_ep = round(n * LEGIT_BURST_SHARE / ((LEGIT_BURST_SIZE[0] + LEGIT_BURST_SIZE[1]) / 2))
    n_large = round(n * LEGIT_LARGE_SHARE)

    f_ep, f_off = _episodes(rng, n_fraud_ep, FRAUD_BURST_SIZE, FRAUD_GAP_MEAN_S)
    b_ep, b_off = _episodes(rng, n_burst_ep, LEGIT_BURST_SIZE, LEGIT_BURST_GAP_MEAN_S)
    # Shrink the confounders when n is too small to hold them all (the normal spend gets at least half).
    while f_ep.size + b_ep.size + n_large > n // 2 and (n_fraud_ep or n_burst_ep or n_large):
        n_fraud_ep, n_burst_ep, n_large = n_fraud_ep // 2, n_burst_ep // 2, n_large // 2
        f_ep, f_off = f_ep[f_ep < n_fraud_ep], f_off[f_ep < n_fraud_ep]
        b_ep, b_off = b_ep[b_ep < n_burst_ep], b_off[b_ep < n_burst_ep]
    n_normal = n - f_ep.size - b_ep.size - n_large

    act_p = activity / activity.sum()

    # Ordinary spending.
    cust_n = rng.choice(n_cust, size=n_normal, p=act_p)
    time_n = _times(rng, n_normal, 0, days, start_s, _HOUR_W)

    # Victims need a trailing history: the episode starts the day after both HISTORY_DAYS and the
    # victim's HISTORY_MIN_TX-th ordinary transaction.
    order = np.lexsort((time_n, cust_n))
    counts = np.bincount(cust_n, minlength=n_cust)
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has_history = counts >= HISTORY_MIN_TX
    nth_time = np.full(n_cust, end_s, dtype=np.int64)
    nth_time[has_history] = time_n[order[firsts[has_history] + HISTORY_MIN_TX - 1]]
    first_day = np.maximum(min(HISTORY_DAYS, days // 2), (nth_time - start_s) // _DAY_S + 1)
    eligible = np.flatnonzero(first_day < days)
    if eligible.size == 0 and n_fraud_ep:
        # No customer has enough history (very short windows): the budget goes to ordinary spending.
        extra = f_ep.size
        n_fraud_ep, f_ep, f_off = 0, f_ep[:0], f_off[:0]
        cust_n = np.concatenate([cust_n, rng.choice(n_cust, size=extra, p=act_p)])
        time_n = np.concatenate([time_n, _times(rng, extra, 0, days, start_s, _HOUR_W)])
        n_normal += extra

    parts: list[dict[str, np.ndarray]] = []
    amount_n = level[cust_n] * np.exp(AMOUNT_NOISE_SIGMA * rng.standard_normal(n_normal))
    merch_n = _legit_merchants(rng, merchants, home[cust_n], _CAT_LEGIT_W)
    amount_n *= _CAT_AMOUNT_F[m_cat[merch_n]]
    parts.append(_part(cust_n, time_n, merch_n, amount_n, fraud=0, kind=0))

    # Legit bursts: quick successions of small, ordinary purchases.
    if n_burst_ep:
        b_cust = rng.choice(n_cust, size=n_burst_ep, p=act_p)
        b_start = _times(rng, n_burst_ep, 0, days, start_s, _HOUR_W)
        cust_b = b_cust[b_ep]
        time_b = _fit_in_window(b_start[b_ep] + b_off, b_ep, end_s)
        burst_w = np.where(np.isin(np.array(CATEGORIES), _BURST_CATS), _CAT_LEGIT_W, 0.0)
        merch_b = _legit_merchants(rng, merchants, home[cust_b], burst_w)
        amount_b = (
            level[cust_b]
            * _CAT_AMOUNT_F[m_cat[merch_b]]
            * np.exp(AMOUNT_NOISE_SIGMA * rng.standard_normal(cust_b.size))
        )
        parts.append(_part(cust_b, time_b, merch_b, amount_b, fraud=0, kind=1))

    # Legit single large purchases: a new phone, gold for a wedding, a holiday.
    if n_large:
        cust_l = rng.choice(n_cust, size=n_large, p=act_p)
        time_l = _times(rng, n_large, 0, days, start_s, _HOUR_W)
        large_w = np.where(np.isin(np.array(CATEGORIES), _LARGE_CATS), _CAT_LEGIT_W, 0.0)
        merch_l = _legit_merchants(rng, merchants, home[cust_l], large_w)
        amount_l = level[cust_l] * rng.uniform(*LEGIT_LARGE_MULTIPLIER, size=n_large)
        parts.append(_part(cust_l, time_l, merch_l, amount_l, fraud=0, kind=2))

    # Fraud episodes on compromised cards.
    if n_fraud_ep:
        victim_w = level[eligible] ** -FRAUD_VICTIM_TILT
        victim = eligible[rng.choice(eligible.size, size=n_fraud_ep, p=victim_w / victim_w.sum())]
        ep_start = _times(rng, n_fraud_ep, first_day[victim], days, start_s, _FRAUD_HOUR_W)
        stealth = rng.random(n_fraud_ep) < FRAUD_STEALTH_SHARE
        cust_f = victim[f_ep]
        stealth_tx = stealth[f_ep]
        # Stealth episodes spread their transactions over hours instead of minutes.
        offsets = np.where(stealth_tx, f_off * 40, f_off)
        time_f = _fit_in_window(ep_start[f_ep] + offsets, f_ep, end_s)
        size = cust_f.size
        legit_w = _CAT_LEGIT_W / _CAT_LEGIT_W.sum()
        cat_w = FRAUD_HIGH_VALUE_P * _CAT_FRAUD_W / _CAT_FRAUD_W.sum() + (1 - FRAUD_HIGH_VALUE_P) * legit_w
        f_cat = np.where(
            stealth_tx,
            rng.choice(len(CATEGORIES), size=size, p=legit_w),
            rng.choice(len(CATEGORIES), size=size, p=cat_w),
        )
        want_online = (rng.random(size) < FRAUD_ONLINE_P).astype(np.int64)
        any_in_cat = _pick_in_pool(m_cat, f_cat, rng.random(size), np.zeros(size, dtype=np.int64))
        merch_f = _pick_in_pool(m_cat * 2 + m_online, f_cat * 2 + want_online, rng.random(size), any_in_cat)
        merch_f = np.where(stealth_tx, _legit_merchants(rng, merchants, home[cust_f], _CAT_LEGIT_W), merch_f)
        noise = np.exp(AMOUNT_NOISE_SIGMA * rng.standard_normal(size))
        amount_f = level[cust_f] * np.where(
            stealth_tx, _CAT_AMOUNT_F[m_cat[merch_f]] * noise, rng.uniform(*FRAUD_MULTIPLIER, size=size)
        )
        parts.append(_part(cust_f, time_f, merch_f, amount_f, fraud=1, kind=3))

    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    cust, time, merch, fraud, kind = cols["cust"], cols["time"], cols["merch"], cols["fraud"], cols["kind"]
    amount = np.maximum(np.round(cols["amount"], 2), 1.0)
    online = m_online[merch] == 1
    u = rng.random(cust.size)
    # Skimmed or cloned cards are used by insertion/swipe; everyday spend is mostly tap-to-pay.
    contactless_p = np.where(fraud == 1, FRAUD_CONTACTLESS_P, np.where(kind == 1, 0.9, 0.65))
    channel_idx = np.where(
        online,
        CHANNELS.index("ecommerce"),
        np.where(u < contactless_p, CHANNELS.index("contactless"), CHANNELS.index("pos")),
    )
    emirate_idx = np.where(online, home[cust], merchants["_emirate"].to_numpy()[merch])

    order = np.lexsort((np.arange(cust.size), time))
    first_id = rng.integers(1_000_000_000, 8_000_000_000)
    # Cards come last, from their own stream, so every column drawn before them stays as it was.
    victims = victim if n_fraud_ep else None
    card = _cards(np.random.default_rng(rng.integers(2**63)), cust, kind, n_cust, victims, f_ep)
    # Ids follow event time, as a switch numbers them, so they carry nothing about the label.
    return {
        "transaction_id": first_id + np.arange(cust.size),
        "time": time[order],
        "customer": cust[order],
        "card": card[order],
        "merchant": merch[order],
        "amount": amount[order],
        "channel": channel_idx[order],
        "emirate": emirate_idx[order],
        "category": m_cat[merch[order]],
        "is_fraud": fraud[order],
    }


def _cards(
    rng: np.random.Generator,
    cust: np.ndarray,
    kind: np.ndarray,
    n_cust: int,
    victim: np.ndarray | None,
    f_ep: np.ndarray,
) -> np.ndarray:
    """A global card index per transaction: every customer holds a primary card, some a second one;
    ordinary spend mostly uses the primary, and each fraud episode uses the one card it compromised."""
    n_cards = 1 + (rng.random(n_cust) < SECOND_CARD_P)
    first_card = np.concatenate([[0], np.cumsum(n_cards)[:-1]])
    which = (rng.random(cust.size) >= PRIMARY_CARD_P).astype(np.int64) % n_cards[cust]
    if victim is not None:
        compromised = rng.integers(0, n_cards[victim])
        which[kind == 3] = compromised[f_ep]
    return first_card[cust] + which


# Category index -> written value: the clean categories, then the drift's new one; -1 (broken feed) is blank.
_CATEGORY_NAMES = np.array((*CATEGORIES, NEW_CATEGORY, ""))


def _new_merchant_count(n_merchants: int) -> int:
    return max(2, round(NEW_CATEGORY_MERCHANTS * n_merchants))


def _inject_drift(
    drift: DriftScenario, seed: int, tx: dict[str, np.ndarray], merchants: pd.DataFrame
) -> pd.DataFrame:
    """Apply ``drift`` in place to the transactions from its start day; return the merchants, with any
    new ones appended. Rows are sorted by time and times never change, so earlier days stay as they were."""
    rng = np.random.default_rng([seed, 1])
    drifted = slice(int(np.searchsorted(tx["time"], _epoch_s(drift.start))), tx["time"].size)
    size = tx["time"][drifted].size
    if drift.kind == "amount_shift":
        factor = AMOUNT_SHIFT_FACTOR * np.exp(AMOUNT_SHIFT_SIGMA * rng.standard_normal(size))
        tx["amount"][drifted] = np.clip(np.round(tx["amount"][drifted] * factor, 2), 1.0, MAX_AMOUNT_AED)
    elif drift.kind == "broken_feed":
        blank = drifted.start + np.flatnonzero(rng.random(size) < BROKEN_FEED_NULL_SHARE)
        tx["category"][blank] = -1
    else:
        new = _new_category_merchants(rng, len(merchants), drift.start)
        moved = drifted.start + np.flatnonzero(rng.random(size) < NEW_CATEGORY_SHARE)
        pop = new["_popularity"].to_numpy()
        pick = rng.choice(len(new), size=moved.size, p=pop / pop.sum())
        taps = rng.random(moved.size) < NEW_CATEGORY_CONTACTLESS_P
        tx["merchant"][moved] = len(merchants) + pick
        tx["category"][moved] = len(CATEGORIES)
        tx["emirate"][moved] = new["_emirate"].to_numpy()[pick]
        online = tx["channel"][moved] == CHANNELS.index("ecommerce")
        in_person = np.where(taps, CHANNELS.index("contactless"), CHANNELS.index("pos"))
        tx["channel"][moved] = np.where(online, in_person, tx["channel"][moved])
        merchants = pd.concat([merchants, new], ignore_index=True)
    return merchants


def _new_category_merchants(rng: np.random.Generator, n_existing: int, start: date) -> pd.DataFrame:
    """In-person ``NEW_CATEGORY`` merchants, numbered after the existing ones and onboarded shortly
    before ``start``; the same columns as :func:`_merchants`."""
    n = _new_merchant_count(n_existing)
    emirate = rng.choice(len(EMIRATES), size=n, p=_EMIRATE_WEIGHTS / _EMIRATE_WEIGHTS.sum())
    prefix = rng.integers(0, len(_MERCHANT_PREFIXES), size=n)
    word = rng.integers(0, len(NEW_CATEGORY_WORDS), size=n)
    area_u = rng.random(n)
    names = []
    for i in range(n):
        areas = _EMIRATE_AREAS[EMIRATES[emirate[i]]]
        area = areas[int(area_u[i] * len(areas))]
        names.append(f"{_MERCHANT_PREFIXES[prefix[i]]} {NEW_CATEGORY_WORDS[word[i]]} {area}")
    onboarding_s = (rng.random(n) * (NEW_CATEGORY_ONBOARDING_DAYS - 1) * _DAY_S).astype(np.int64)
    created = _epoch_s(start) - _DAY_S - onboarding_s
    return pd.DataFrame(
        {
            "merchant_id": [f"M{10001 + n_existing + i:05d}" for i in range(n)],
            "merchant_name": names,
            "merchant_category": NEW_CATEGORY,
            "mcc": np.full(n, NEW_CATEGORY_MCC, dtype=np.int64),
            "emirate": np.array(EMIRATES, dtype=object)[emirate],
            "is_online": np.zeros(n, dtype=np.int64),
            "created_timestamp": _iso(created),
            "_cat": np.full(n, len(CATEGORIES), dtype=np.int64),
            "_emirate": emirate,
            "_popularity": np.exp(0.7 * rng.standard_normal(n)),
        }
    )


def _write_transactions(
    path: Path, tx: dict[str, np.ndarray], rows: slice, customer_ids: np.ndarray, merchant_ids: np.ndarray
) -> None:
    """Write one day file; columns are formatted with numpy string ufuncs because pandas' per-value
    float formatter dominated the run time at 1M rows."""
    header = ",".join(TRANSACTION_COLUMNS)
    cents = np.round(tx["amount"][rows] * 100).astype(np.int64)
    if not cents.size:
        path.write_text(f"{header}\n", encoding="utf-8", newline="")
        return
    amount = np.strings.add(
        np.strings.add((cents // 100).astype("U"), "."), np.strings.zfill((cents % 100).astype("U2"), 2)
    )
    fields = [
        np.strings.add("T", tx["transaction_id"][rows].astype("U10")),
        _iso(tx["time"][rows]),
        customer_ids[tx["customer"][rows]],
        np.strings.add("K", (tx["card"][rows] + 100_000_001).astype("U9")),
        merchant_ids[tx["merchant"][rows]],
        amount,
        np.full(cents.size, "AED"),
        np.array(CHANNELS)[tx["channel"][rows]],
        np.array(EMIRATES)[tx["emirate"][rows]],
        _CATEGORY_NAMES[tx["category"][rows]],
        tx["is_fraud"][rows].astype("U1"),
    ]
    line = fields[0]
    for field in fields[1:]:
        line = np.strings.add(np.strings.add(line, ","), field)
    body = "".join(f"{row}\n" for row in line.tolist())
    path.write_text(f"{header}\n{body}", encoding="utf-8", newline="")


# ---------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------


def generate(
    out_dir: Path,
    n_transactions: int,
    *,
    days: int = 60,
    end: date = date(2026, 11, 1),
    seed: int = 7,
    drift: DriftScenario | None = None,
) -> GeneratedData:
    """Write a deterministic synthetic card-fraud source drop into ``out_dir``.

    Writes ``customers.csv``, ``merchants.csv`` and ``transactions/YYYY-MM-DD.csv`` (one file per UTC
    day in ``[end - days, end)``, each sorted by ``event_timestamp``). The same arguments always give
    byte-identical files. Existing day files inside the window are overwritten; nothing else is removed.

    Args:
        out_dir: Source directory to write into; created if missing.
        n_transactions: Exact number of transactions over the whole window (see ``SIZES``).
        days: Length of the window in days.
        end: Exclusive end of the window (UTC midnight).
        seed: Seed of numpy's ``default_rng``; everything random derives from it.
        drift: A scenario to inject from its start day onward (see :class:`DriftScenario`); None writes
            clean data. Earlier day files are byte-identical to the clean ones.

    Returns:
        A :class:`GeneratedData` describing what was written.

    Raises:
        ValueError: If ``n_transactions`` or ``days`` is not positive, the drift starts outside the
            window, or a new merchant category would need more merchant ids than remain.
    """
    if n_transactions < 1:
        raise ValueError(f"n_transactions must be positive, got {n_transactions}")
    if days < 1:
        raise ValueError(f"days must be positive, got {days}")
    out_dir = Path(out_dir)
    start = end - timedelta(days=days)
    n_customers = max(40, n_transactions // 60)
    n_merchants = min(max(30, n_transactions // 400), 89_999)
    if drift is not None:
        _check_drift(drift, start, end, n_merchants)
    rng = np.random.default_rng(seed)

    customers = _customers(rng, n_customers, start)
    merchants = _merchants(rng, n_merchants, start)
    tx = _transactions(rng, n_transactions, customers, merchants, start, days)
    if drift is not None:
        merchants = _inject_drift(drift, seed, tx, merchants)

    out_dir.mkdir(parents=True, exist_ok=True)
    tx_dir = out_dir / "transactions"
    tx_dir.mkdir(exist_ok=True)
    csv_opts = {"index": False, "lineterminator": "\n", "float_format": "%.2f"}
    files = [out_dir / "customers.csv", out_dir / "merchants.csv"]
    customers.drop(columns=[c for c in customers if c.startswith("_")]).to_csv(files[0], **csv_opts)
    merchants.drop(columns=[c for c in merchants if c.startswith("_")]).to_csv(files[1], **csv_opts)

    customer_ids = customers["customer_id"].to_numpy(dtype="U8")
    merchant_ids = merchants["merchant_id"].to_numpy(dtype="U6")
    bounds = np.searchsorted(tx["time"], _epoch_s(start) + _DAY_S * np.arange(days + 1))
    for d in range(days):
        path = tx_dir / f"{start + timedelta(days=d):%Y-%m-%d}.csv"
        _write_transactions(path, tx, slice(bounds[d], bounds[d + 1]), customer_ids, merchant_ids)
        files.append(path)

    return GeneratedData(
        source_dir=out_dir,
        start=start,
        end=end,
        n_customers=n_customers,
        n_merchants=len(merchants),
        n_transactions=int(tx["time"].size),
        fraud_rate=float(tx["is_fraud"].mean()),
        files=files,
        drift=drift,
    )


def _check_drift(drift: DriftScenario, start: date, end: date, n_merchants: int) -> None:
    if not start <= drift.start < end:
        last = end - timedelta(days=1)
        raise ValueError(
            f"drift start {drift.start} is outside the generated window {start}..{last} "
            "(the first affected day must be one of the window's days)"
        )
    free_ids = _MAX_MERCHANT_ID - (10_000 + n_merchants)
    if drift.kind == "new_merchant_category" and _new_merchant_count(n_merchants) > free_ids:
        raise ValueError(
            f"new_merchant_category needs {_new_merchant_count(n_merchants)} new merchant ids but only "
            f"{free_ids} remain up to M{_MAX_MERCHANT_ID}; generate fewer transactions"
        )


def corrupt_partition(path: Path, seed: int = 0) -> None:
    """Rewrite one transactions day file in place with the corruption real landing zones see.

    About 3% of rows each get a non-numeric ``amount_aed`` (``"12,5O"`` or ``"n/a"``), a blank
    ``customer_id`` and a negative ``amount_aed``; the three sets never overlap and each holds at
    least one row. The header and the row order are kept.

    Args:
        path: A ``transactions/YYYY-MM-DD.csv`` file written by :func:`generate`.
        seed: Seed choosing which rows are corrupted.

    Raises:
        ValueError: If the file has fewer than three data rows.
    """
    path = Path(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if len(frame) < 3:
        raise ValueError(f"{path} has {len(frame)} rows; corrupting needs at least 3")
    rng = np.random.default_rng(seed)
    k = max(1, round(0.03 * len(frame)))
    rows = rng.permutation(len(frame))
    k = min(k, len(frame) // 3)
    text_rows, null_rows, neg_rows = rows[:k], rows[k : 2 * k], rows[2 * k : 3 * k]
    amount = frame["amount_aed"].to_numpy(dtype=object)
    amount[text_rows] = np.where(rng.random(k) < 0.5, "12,5O", "n/a")
    amount[neg_rows] = [f"-{float(a):.2f}" for a in amount[neg_rows]]
    frame["amount_aed"] = amount
    customer = frame["customer_id"].to_numpy(dtype=object)
    customer[null_rows] = ""
    frame["customer_id"] = customer
    # Quote only where needed so "12,5O" stays one field and everything else is byte-for-byte as written.
    frame.to_csv(path, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
