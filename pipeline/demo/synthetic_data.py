"""A deterministic synthetic dataset in the normalized layout (interactions.tsv + items.jsonl).

The demo and the tests run on it without downloaded data. What it models:
  * 8 office-product categories, each with its own title/description words (every word is a whole token
    of the BERT uncased vocabulary), a price level and a few brands;
  * Zipf item popularity (weight 1/rank^zipf_exponent over a random ranking of items);
  * users with a favourite category and a favourite brand, so that item text carries signal;
  * a share of cold items that nobody interacts with (they are still in items.jsonl);
  * time = 0-based position in the user's sequence; implicit feedback (empty rating) unless `rated`.

Usage:
  python -m pipeline.demo.synthetic_data OUT_DIR [--users 300 --items 400 --seed 0]
"""

import argparse
import json
import os
from pathlib import Path

import numpy as np

from components.data_files import compose_text

# category -> (nouns, words for descriptions, typical price in dollars)
CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], float]] = {
    "Writing": (("pen", "pencil", "marker", "ink", "gel", "fountain", "pens"),
                ("writing", "drawing", "signing", "smooth", "tip", "school"), 6.0),
    "Paper": (("notebook", "paper", "journal", "sheets", "notes", "pad", "diary"),
              ("ruled", "lined", "spiral", "pages", "sticky", "reading"), 9.0),
    "Filing": (("folder", "file", "cabinet", "organizer", "archive", "label", "box"),
               ("filing", "storage", "pocket", "rings", "labels", "office"), 15.0),
    "Desk": (("staples", "tape", "scissors", "clip", "ruler", "punch", "holder"),
             ("clips", "glue", "magnet", "pins", "sturdy", "home"), 8.0),
    "Electronics": (("printer", "keyboard", "mouse", "scanner", "monitor", "speaker", "cable"),
                    ("wireless", "usb", "battery", "printing", "typing", "quiet"), 60.0),
    "Furniture": (("chair", "desk", "lamp", "shelf", "table", "cushion", "stand"),
                  ("seating", "drawer", "mat", "heavy", "studio", "comfort"), 120.0),
    "Art": (("paint", "brush", "canvas", "palette", "charcoal", "clay", "paints"),
            ("painting", "sketch", "artists", "brushes", "bright", "students"), 18.0),
    "Shipping": (("envelope", "stamp", "package", "parcel", "boxes", "bubble", "tape"),
                 ("shipping", "postage", "padded", "packing", "mail", "travel"), 12.0),
}
ADJECTIVES = ("premium", "durable", "compact", "classic", "light", "smooth", "soft", "sturdy", "black",
              "blue", "red", "green", "white", "large", "small", "portable", "slim", "bold", "fine", "deluxe")
BRANDS = ("apex", "summit", "vertex", "nova", "orbit", "harbor", "maple", "cedar", "falcon", "pioneer",
          "atlas", "zenith", "comet", "ridge", "beacon", "crest")
BRANDS_PER_CATEGORY = 4
# How much a user's favourite category and brand multiply an item's popularity weight.
CATEGORY_BOOST = 15.0  # ~70% of a user's interactions fall in the favourite category
BRAND_BOOST = 2.0


def _category_brands(rng: np.random.Generator) -> dict[str, list[str]]:
    return {c: sorted(rng.choice(BRANDS, size=BRANDS_PER_CATEGORY, replace=False)) for c in CATEGORIES}


def _make_item(rng: np.random.Generator, item_id: str, category: str, brands: list[str]) -> dict:
    nouns, words, price_level = CATEGORIES[category]
    brand = str(rng.choice(brands))
    adjective = rng.choice(ADJECTIVES)
    noun, other = rng.choice(nouns, size=2, replace=False)
    title = f"{brand.title()} {adjective.title()} {noun.title()}"
    use_a, use_b = rng.choice(words, size=2, replace=False)
    description = f"A {adjective} {noun} with {other} for {use_a} and {use_b}."
    price = round(float(price_level * rng.lognormal(0.0, 0.4)), 2)
    item = {"item_id": item_id, "title": title, "brand": brand.title(), "categories": ["Office", category],
            "description": description, "price": price}
    item["text"] = compose_text(title, item["brand"], tuple(item["categories"]), description)
    return item


def _popularity(rng: np.random.Generator, num_items: int, num_cold: int, exponent: float) -> np.ndarray:
    """Zipf weights over a random ranking; the `num_cold` items drawn last get weight 0."""
    order = rng.permutation(num_items)
    weights = np.zeros(num_items)
    warm = order[: num_items - num_cold]
    weights[warm] = 1.0 / np.arange(1, len(warm) + 1) ** exponent
    return weights


def _user_rows(
    rng: np.random.Generator, user_id: str, items: list[dict], popularity: np.ndarray,
    mean_interactions: float, rated: bool,
) -> list[str]:
    categories = np.array([item["categories"][1] for item in items])
    brands = np.array([item["brand"] for item in items])
    favourite = rng.choice(categories[popularity > 0])
    brand = rng.choice(brands[categories == favourite])
    weights = popularity * np.where(categories == favourite, 1 + CATEGORY_BOOST, 1.0)
    weights *= np.where(brands == brand, 1 + BRAND_BOOST, 1.0)
    size = min(int((popularity > 0).sum()), 5 + rng.poisson(max(mean_interactions - 5, 0)))
    chosen = rng.choice(len(items), size=size, replace=False, p=weights / weights.sum())
    rows = []
    for time, index in enumerate(chosen):
        rating = ""
        if rated:  # liking follows the same preferences as choosing
            score = 3 + (categories[index] == favourite) + (brands[index] == brand) + rng.normal(0, 1)
            rating = f"{float(np.clip(np.round(score), 1, 5)):.1f}"
        rows.append(f"{user_id}\t{items[index]['item_id']}\t{rating}\t{time}")
    return rows


def generate(
    out_dir: str | os.PathLike,
    num_users: int = 300,
    num_items: int = 400,
    seed: int = 0,
    cold_item_share: float = 0.1,
    mean_interactions: float = 20.0,
    zipf_exponent: float = 1.0,
    rated: bool = False,
) -> dict[str, int]:
    """Writes out_dir/interactions.tsv and out_dir/items.jsonl; returns counts of what was written.

    Same arguments -> byte-identical files. `rated` adds 1-5 ratings (higher for preferred items).
    """
    if num_users < 1 or num_items < 2 or not 0.0 <= cold_item_share < 1.0 or mean_interactions < 1:
        raise ValueError(
            "need num_users >= 1, num_items >= 2, 0 <= cold_item_share < 1 and mean_interactions >= 1"
        )
    rng = np.random.default_rng(seed)
    width = len(str(max(num_users, num_items) - 1))
    brands = _category_brands(rng)
    names = list(CATEGORIES)
    items = [_make_item(rng, f"i{i:0{width}d}", names[i % len(names)], brands[names[i % len(names)]])
             for i in range(num_items)]
    num_cold = min(int(round(cold_item_share * num_items)), num_items - 1)
    popularity = _popularity(rng, num_items, num_cold, zipf_exponent)
    rows = []
    for u in range(num_users):
        rows += _user_rows(rng, f"u{u:0{width}d}", items, popularity, mean_interactions, rated)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "interactions.tsv").write_text("user_id\titem_id\trating\ttime\n" + "\n".join(rows) + "\n")
    with open(out / "items.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(item, sort_keys=True) + "\n" for item in items)
    return {"users": num_users, "items": num_items, "cold_items": num_cold, "interactions": len(rows),
            "categories": len(CATEGORIES)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cold-item-share", type=float, default=0.1)
    parser.add_argument("--rated", action="store_true", help="write 1-5 ratings instead of implicit feedback")
    args = parser.parse_args(argv)
    counts = generate(args.out_dir, args.users, args.items, args.seed, args.cold_item_share, rated=args.rated)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
