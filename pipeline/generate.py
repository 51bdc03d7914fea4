"""``salesmart generate``: realistic synthetic transactions, with a share of invalid rows.

Deterministic for a seed, and the same seed (and invalid share) always starts the same way:
the first N rows of a longer file are the N rows of a shorter one, so a transaction id never
names two different rows (ingesting both files loads only the longer one's extra rows).
Streams to the file, so any row count fits in flat memory.
Valid rows follow a catalogue of Halal products with typical prices, small quantities
and dates spread over two years; invalid rows cover every rejection reason. Both follow the
configured loading rules (``ingestion.validation``): valid rows pass them and invalid rows
break them, whatever the prefix and thresholds; under the shipped rules the rows are those
this module always wrote.
"""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import TextIO

from common.config import MAX_PRICE_INTEGER_DIGITS, ValidationRules

HEADER = ("transaction_id", "product", "price", "quantity", "date")

CATALOGUE: tuple[tuple[str, float], ...] = (
    ("Halal Laptop", 999.99),
    ("Halal Mouse", 24.99),
    ("Halal Keyboard", 49.99),
    ("Halal Monitor", 199.99),
    ("Halal Headphones", 79.99),
    ("Halal Webcam", 59.99),
    ("Halal Tablet", 349.0),
    ("Halal Phone", 599.0),
    ("Halal Charger", 19.99),
    ("Halal Desk Lamp", 34.5),
    ("Halal Backpack", 45.0),
    ("Halal Printer", 149.99),
    ("Halal Router", 89.9),
    ("Halal Speaker", 69.99),
    ("Halal SSD 1TB", 109.99),
    ("Halal USB-C Hub", 29.99),
    ("Halal Chair", 249.0),
    ("Halal Desk", 399.0),
    ("Halal Dates Box", 12.5),
    ("Halal Olive Oil", 15.75),
    ("Halal Honey", 18.2),
    ("Halal Saffron", 22.0),
    ("Halal Coffee", 14.99),
    ("Halal Tea Set", 39.0),
)
NOT_HALAL = ("Monitor", "Wine Glass", "halal Mouse", "Pork Rinds", "HALAL Laptop")
START = date(2023, 1, 1)
DAYS = 730
DEFAULT_INVALID_SHARE = 0.02
# Products are drawn this many at a time (a weighted draw per row is slower); drawing fewer
# for the last block takes the same first values, so a row's product does not depend on the
# file's length.
PRODUCT_BLOCK = 100_000


@dataclass(frozen=True)
class _RowRules:
    """What valid rows are drawn within and invalid rows drawn outside, from the rules."""

    prefix: str
    min_price: float  # the lowest valid price, at most max_decimals decimals
    min_price_text: str  # the same, written exactly (a float may round it below the rule)
    # Catalogue prices are multiplied by this: 1 unless the minimum is above the cheapest
    # product's lowest draw (unscaled, the products below it were all priced at it).
    price_scale: float
    price_format: str
    extra_columns: tuple[str, ...]  # required columns beyond the five: filled in
    max_quantity: int
    not_prefixed: tuple[str, ...]
    too_precise: str
    below_minimum: tuple[str, ...]
    bad_quantities: tuple[str, ...]

    @classmethod
    def of(cls, rules: ValidationRules) -> _RowRules:
        decimals = rules.max_decimals
        step = Decimal(1).scaleb(-decimals)
        lowest = rules.lowest_price
        prefix = rules.product_prefix
        # Products that do not start with the prefix (the shipped list, for the shipped one).
        not_prefixed = tuple(name for name in NOT_HALAL if not name.startswith(prefix)) or (
            ("B" if prefix.startswith("A") else "A") + " Item",
        )
        below = tuple(
            text
            for text in ("9.99", "0", "5.5")
            if Decimal(text) < rules.min_price and -Decimal(text).as_tuple().exponent <= decimals  # type: ignore[operator]
        )
        if not below and rules.min_price > 0:  # the largest price under the minimum
            under = (rules.min_price - step).quantize(step, rounding=ROUND_FLOOR)
            below = (format(max(under, Decimal(0)), "f"),)
        quantities = rules.max_quantity
        return cls(
            prefix=prefix,
            min_price=float(lowest),
            min_price_text=format(lowest, "f"),
            price_scale=_price_scale(float(lowest)),
            price_format=f".{min(decimals, 2)}f",
            extra_columns=tuple(
                name for name in dict.fromkeys(rules.required_fields) if name not in HEADER
            ),
            max_quantity=quantities,
            not_prefixed=not_prefixed,
            too_precise="19." + "9" * (decimals + 1) if decimals else "19.9",
            # No price is below a minimum of 0: such rows get an unreadable one instead.
            below_minimum=below,
            bad_quantities=(
                ("0", "101", "1000") if quantities < 101 else ("0", str(quantities + 1))
            ),
        )


#: The widest draw around a product's list price (``_write_rows``).
PRICE_SPREAD = (0.9, 1.1)


def _price_scale(lowest: float) -> float:
    """What the catalogue's prices are multiplied by so its cheapest draw is still valid,
    and its dearest below 10^15 (a price's 15 integer digits)."""
    cheapest = min(price for _, price in CATALOGUE) * PRICE_SPREAD[0]
    dearest = max(price for _, price in CATALOGUE) * PRICE_SPREAD[1]
    return max(1.0, min(lowest / cheapest, (10.0**MAX_PRICE_INTEGER_DIGITS - 1) / dearest))


def _invalid_row(
    rng: random.Random, rules: _RowRules, valid: list[str], seen_ids: list[str]
) -> list[str]:
    kind = rng.randrange(10)
    row = list(valid)
    if kind == 0:
        row[1] = ""  # missing product
    elif kind == 1:
        row[1] = rng.choice(rules.not_prefixed)
    elif kind == 2 or (kind == 4 and not rules.below_minimum):
        row[2] = rng.choice(("abc", "-5.00", "1e3", "NaN", "", "12,50"))
    elif kind == 3:
        row[2] = rules.too_precise  # too many decimals
    elif kind == 4:
        row[2] = rng.choice(rules.below_minimum)  # below min_price
    elif kind == 5:
        row[3] = rng.choice(rules.bad_quantities)
    elif kind == 6:
        row[3] = rng.choice(("two", "1.5", "-1", ""))
    elif kind == 7:
        row[4] = rng.choice(("2023-02-30", "2023/10/01", "01-10-2023", "2023-13-01", ""))
    elif kind == 8 and seen_ids:
        row[0] = rng.choice(seen_ids)  # duplicate of an earlier id
    else:
        row[0] = ""  # missing transaction id
    return row


def generate(
    out: Path | TextIO,
    rows: int,
    *,
    seed: int = 0,
    invalid_share: float = DEFAULT_INVALID_SHARE,
    id_prefix: str = "G",
    on_progress: Callable[[int], None] | None = None,
    rules: ValidationRules | None = None,
) -> int:
    """Write ``rows`` transactions to ``out``, a file or a text stream (standard output),
    valid or not by ``rules`` (the shipped ones by default); returns the number written.
    A stream whose reader went away (``reader_gone``, see
    ``pipeline.progress.OutputUntilReaderGone``) ends the writing early."""
    if rows < 0:
        raise ValueError("rows must be >= 0")
    if not 0 <= invalid_share <= 1:
        raise ValueError("invalid_share must be between 0 and 1")

    row_rules = _RowRules.of(rules or ValidationRules())

    def write(handle: TextIO) -> int:
        return _write_rows(handle, rows, seed, invalid_share, id_prefix, on_progress, row_rules)

    if not isinstance(out, Path):
        return write(out)
    out.parent.mkdir(parents=True, exist_ok=True)  # --out data/big/x.csv: as asked
    # Written beside ``out`` and renamed into place once complete: an interrupted run leaves
    # no half file that ``up`` (which generates its file once) or a loader would take for
    # whole. The leading dot keeps it out of landing folders. Not for what is not a plain
    # file (a pipe, a device): renaming would replace it.
    plain = not out.is_symlink() and (out.is_file() or not out.exists())
    target = out.with_name(f".{out.name}.{os.getpid()}.partial") if plain else out
    try:
        with target.open("w", encoding="utf-8", newline="") as handle:
            written = write(handle)
        if plain:
            target.replace(out)
    except OSError as exc:
        # Name the file asked for, not ours; also on a write (a full disk: no file name).
        if exc.filename is None or (plain and exc.filename == str(target)):
            raise OSError(exc.errno, exc.strerror, str(out)) from None
        raise
    finally:
        if plain:
            target.unlink(missing_ok=True)
    return written


def _write_rows(
    handle: TextIO,
    rows: int,
    seed: int,
    invalid_share: float,
    id_prefix: str,
    on_progress: Callable[[int], None] | None,
    rules: _RowRules,
) -> int:
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not security  # nosec B311
    # A stream of its own, so the rows' other draws do not depend on the file's length.
    product_rng = random.Random(f"products-{seed}")  # noqa: S311 - synthetic data  # nosec B311
    days = [(START + timedelta(days=d)).isoformat() for d in range(DAYS)]
    # A few products sell far more often than others, as in a real shop.
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(CATALOGUE))]
    products: list[int] = []
    recent_ids: list[str] = []
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow((*HEADER, *rules.extra_columns))
    for n in range(rows):
        if n % PRODUCT_BLOCK == 0:
            block = min(PRODUCT_BLOCK, rows - n)
            products = product_rng.choices(range(len(CATALOGUE)), weights, k=block)
        if n % 1000 == 0 and getattr(handle, "reader_gone", False):
            return n  # ``generate --out - | head``: nobody reads the rest
        name, list_price = CATALOGUE[products[n % PRODUCT_BLOCK]]
        price = round(list_price * rules.price_scale * rng.uniform(*PRICE_SPREAD), 2)
        price_text = (
            rules.min_price_text if price < rules.min_price else format(price, rules.price_format)
        )
        txid = f"{id_prefix}{seed}-{n:07d}"  # wider past 10M rows: still unique
        valid = [
            txid,
            rules.prefix + name.removeprefix("Halal"),
            price_text,
            str(min(rng.choice((1, 1, 1, 2, 2, 3, 5, 10)), rules.max_quantity)),
            rng.choice(days),
        ]
        valid.extend(f"{column}-{n % 10}" for column in rules.extra_columns)
        if rng.random() < invalid_share:
            writer.writerow(_invalid_row(rng, rules, valid, recent_ids))
        else:
            writer.writerow(valid)
            if len(recent_ids) < 1000:
                recent_ids.append(txid)
        if on_progress is not None and n % 100_000 == 0:
            on_progress(n)
    return rows
