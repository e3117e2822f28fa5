"""Test data for the ML component: small tables with a known relation between features and
label, so a trained model's predictions can be checked, not only its existence."""

from __future__ import annotations

import random
from typing import Any


def churn_rows(n: int, *, seed: int = 0, flip: bool = False) -> list[dict[str, Any]]:
    """Customers: `churned` is "yes" when usage is low or the plan is "basic" and tenure short;
    `flip` inverts the label (a second, contradicting version of a model)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        usage = round(rng.uniform(0, 100), 2)
        tenure = rng.randint(1, 60)
        plan = rng.choice(["basic", "plus", "pro"])
        active = rng.random() < 0.7
        churned = usage < 30 or (plan == "basic" and tenure < 12)
        if flip:
            churned = not churned
        rows.append(
            {
                "usage": usage,
                "tenure": tenure,
                "plan": plan,
                "active": active,
                "churned": "yes" if churned else "no",
            }
        )
    return rows


def price_rows(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """Houses: price = 3 * size + 50 per room + 100 in the "city" area, plus a little noise."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        size = round(rng.uniform(30, 200), 1)
        rooms = rng.randint(1, 6)
        area = rng.choice(["city", "suburb"])
        noise = rng.gauss(0, 5)
        price = 3 * size + 50 * rooms + (100 if area == "city" else 0) + noise
        rows.append({"size": size, "rooms": rooms, "area": area, "price": round(price, 2)})
    return rows


def churn_csv(n: int, *, seed: int = 0) -> bytes:
    rows = churn_rows(n, seed=seed)
    lines = ["usage,tenure,plan,active,churned"]
    lines += [
        f"{r['usage']},{r['tenure']},{r['plan']},{str(r['active']).lower()},{r['churned']}"
        for r in rows
    ]
    return ("\n".join(lines) + "\n").encode()
