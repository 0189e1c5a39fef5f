"""A dataset as `packwise dataset build` writes it, from a simulated history of the synthetic world, without Kafka:
the landed Parquet files (written the lander's way), its manifest, then the labelled table and card built by
models/dataset.py. Each product arrives on a day of the history (its catalog record and tunnel capture), then
ships in package types a randomized legacy policy draws; damages follow the hidden truth and are reported (or not)
as the world says.

    .venv/bin/python -m tests.models.simulated_history --out runs/history --products 8000 --seed 1
    .venv/bin/python -m tests.models.simulated_history --out runs/history-100 --products 8000 --seed 1 --as-of-day 100
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq

from models.dataset import TableConfig, table_from_landed
from models.world import EPOCH, World, WorldConfig
from streams.landing import LANDED, LANDED_DIR, Buffer, Manifest, arrow_schema
from streams.serde import Serde
from streams.warmup import HistoryConfig, history_events

HISTORY_DAYS = 120
ARRIVALS_DAYS = 60  # products arrive over the first days of the history
WINDOW_DAYS = 30


def simulated_events(world: World, shipments_per_product: float, seed: int) -> dict[str, list[dict]]:
    """The input topics' events of a history (streams/warmup.py history_events): per product a catalog record and a
    capture on its arrival day, shipments after it in package types drawn uniformly, and the damage reports the
    world's customers send, however late."""
    config = HistoryConfig(seed=seed, days=HISTORY_DAYS, arrivals_days=ARRIVALS_DAYS,
                           shipments_per_product=shipments_per_product)
    events = history_events(world, config, end=EPOCH + timedelta(days=HISTORY_DAYS))
    return {base: events.get(base, []) for base in LANDED}


def write_dataset(folder: Path, events: dict[str, list[dict]], window_days: float = WINDOW_DAYS,
                  as_of_day: float = HISTORY_DAYS + WINDOW_DAYS) -> dict:
    """Land `events` in `folder` as the lander would (one partition, offsets in list order), then build the table
    and the card with labels as of `as_of_day` of the history (by default, every shipment mature); returns the
    card."""
    serde = Serde()
    folder.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(topic_prefix="simulated.")
    for base, records in events.items():
        buffer = Buffer(arrow_schema(serde, LANDED[base]))
        for offset, record in enumerate(records):
            buffer.add(record, 0, offset, int(EPOCH.timestamp() * 1000) + offset, 0)
        relative = Path(LANDED_DIR) / base / "part-simulated-0.parquet"
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(buffer.table(), folder / relative)
        manifest.offsets[base] = {"0": len(records)}
        manifest.files[base] = [relative.as_posix()]
        manifest.landed[base] = len(records)
    manifest.save(folder)
    as_of = EPOCH + timedelta(days=as_of_day)
    return table_from_landed(folder, TableConfig(window=timedelta(days=window_days), as_of=as_of))


def simulated_dataset(folder: Path, products: int, seed: int = 0, shipments_per_product: float = 12.0,
                      as_of_day: float = HISTORY_DAYS + WINDOW_DAYS) -> dict:
    world = World.generate(WorldConfig(seed=seed, n_products=products))
    return write_dataset(folder, simulated_events(world, shipments_per_product, seed), as_of_day=as_of_day)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--products", type=int, default=3000)
    parser.add_argument("--shipments-per-product", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--as-of-day", type=float, default=HISTORY_DAYS + WINDOW_DAYS,
                        help=f"labels as of this day of the {HISTORY_DAYS}-day history (the {WINDOW_DAYS} days before "
                             "it are held back as immature)")
    args = parser.parse_args()
    card = simulated_dataset(args.out, args.products, args.seed, args.shipments_per_product, args.as_of_day)
    print(f"{card['rows']:,} shipments, {card['positives']:,} damaged -> {args.out}")


if __name__ == "__main__":
    main()
