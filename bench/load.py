"""Benchmark: load + normalize + dedupe + report (a dry run) on 1,000,000 messy rows.

Compares ``dialer``'s dry run with a naive baseline measured in the same run:
``pd.read_csv`` then ``df[col].apply(lambda s: format(parse(s, region)))``.

    python bench/load.py [--rows 1000000] [--keep]

Prints rows/s for both, the speed ratio, and the peak RSS of each (each runs in its own process).
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

AREA_CODES = ("201", "202", "212", "213", "305", "310", "312", "404", "415", "503", "512", "602",
              "617", "646", "702", "713", "718", "805", "818", "917", "929", "972")
FIRST = ("Ana", "Ben", "Chloé", "Dev", "Eve", "Farah", "Gus", "Hana", "Ivan", "José", "Kai", "Li")
LAST = ("Smith", "García", "Nguyen", "O'Brien", "Müller", "Khan", "Rossi", "Kim", "Silva")
FOREIGN = ("+44 20 7946 {a}{b}", "+91 98765 4{a}{b}", "+49 30 901820{a}", "+33 1 42 68 5{a} {b}",
           "+61 2 9374 4{a}{b}")


def messy_phone(rng: random.Random) -> str:
    """One phone cell as spreadsheets really hold them (US default region)."""
    area = rng.choice(AREA_CODES)
    exchange = f"{rng.randint(2, 9)}{rng.randint(0, 9)}{rng.randint(0, 9)}"
    line = f"{rng.randint(0, 9999):04d}"
    shape = rng.random()
    if shape < 0.33:
        return f"({area}) {exchange}-{line}"
    if shape < 0.53:
        return f"{area}-{exchange}-{line}"
    if shape < 0.61:
        return f"{area}.{exchange}.{line}"
    if shape < 0.71:
        return f"+1 {area} {exchange} {line}"
    if shape < 0.79:
        return f"1-{area}-{exchange}-{line}"
    if shape < 0.84:
        return f"{area}{exchange}{line}"
    if shape < 0.87:
        return rng.choice(FOREIGN).format(a=f"{rng.randint(0, 99):02d}", b=f"{rng.randint(0, 99):02d}")
    if shape < 0.89:
        return f"1{area}{exchange}{line}.0"
    if shape < 0.91:
        return f"{area}-{exchange}-{line} x{rng.randint(1, 999)}"
    if shape < 0.93:
        return f" {area} {exchange} {line}\u00a0"
    if shape < 0.95:
        return rng.choice(("", "n/a", "555-1234", "tbd", "0", "12345678901234567"))
    return f"tel:+1-{area}-{exchange}-{line}"


def write_contacts(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    recent: list[str] = []
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "First Name", "Last Name", "Email", "Phone", "Company", "Notes"])
        for i in range(rows):
            if recent and rng.random() < 0.03:
                phone = rng.choice(recent)
            else:
                phone = messy_phone(rng)
                if len(recent) < 1000:
                    recent.append(phone)
                else:
                    recent[rng.randrange(1000)] = phone
            first, last = rng.choice(FIRST), rng.choice(LAST)
            writer.writerow([i + 1, first, last, f"{first.lower()}.{i}@example.com", phone,
                             f"{last} & Sons, Inc.", "call after 5pm" if i % 7 == 0 else ""])


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_dialer(contacts: str, out: str, queue: multiprocessing.Queue) -> None:
    from dialer.cli import main

    start = time.perf_counter()
    code = main(["run", contacts, "--region", "US", "--out", out, "--dry-run", "--quiet"])
    queue.put({"seconds": time.perf_counter() - start, "rss_mb": _peak_rss_mb(), "exit": code})


def _run_baseline(contacts: str, out: str, queue: multiprocessing.Queue) -> None:
    import pandas as pd
    import phonenumbers

    def naive(cell: str) -> str:
        try:
            return phonenumbers.format_number(phonenumbers.parse(cell, "US"),
                                              phonenumbers.PhoneNumberFormat.E164)
        except phonenumbers.NumberParseException:
            return ""

    start = time.perf_counter()
    frame = pd.read_csv(contacts, dtype=str, keep_default_na=False)
    frame["phone_e164"] = frame["Phone"].apply(naive)
    queue.put({"seconds": time.perf_counter() - start, "rss_mb": _peak_rss_mb(), "exit": 0})


def _measure(target, contacts: Path, out: Path) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(str(contacts), str(out), queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="dialer-bench-"))
    contacts = folder / "contacts.csv"
    write_contacts(contacts, args.rows)
    print(f"{args.rows:,} rows, {contacts.stat().st_size / 1e6:.0f} MB in {contacts}", file=sys.stderr)
    baseline = _measure(_run_baseline, contacts, folder / "baseline.csv")
    dialer = _measure(_run_dialer, contacts, folder / "report.csv")
    ratio = baseline["seconds"] / dialer["seconds"]
    print(f"{'':28}{'seconds':>9}{'rows/s':>12}{'peak RSS MB':>13}")
    for name, result in (("naive apply(parse) baseline", baseline), ("dialer dry run (+report)", dialer)):
        print(f"{name:28}{result['seconds']:9.2f}{args.rows / result['seconds']:12,.0f}{result['rss_mb']:13.0f}")
    print(f"speed ratio dialer / baseline: {ratio:.2f}x")
    print(json.dumps({"rows": args.rows, "baseline": baseline, "dialer": dialer, "ratio": round(ratio, 2)}))
    if not args.keep:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
