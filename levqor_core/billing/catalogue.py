"""The Stripe catalogue: one product and one monthly USD price per tier of `levqor_core.tiers`,
found by the price's lookup key (`flask billing sync-products`)."""

import logging

import stripe

from levqor_core import tiers
from levqor_core.billing import stripe_client
from levqor_core.billing.problems import BillingNotConfigured

log = logging.getLogger(__name__)

CURRENCY = "usd"


def product_id(tier: tiers.Tier) -> str:
    """The Stripe product id of a tier (we choose it, so a rerun finds the product)."""
    return f"levqor_developer_{tier.name}"


def product_name(tier: tiers.Tier) -> str:
    """The product name customers see at Checkout and on invoices."""
    price = "Free" if tier.price_usd == 0 else f"${tier.price_usd}/mo"
    return f"Developer – {tier.label} ({price})"


def _product_fields(tier: tiers.Tier) -> dict:
    return {
        "name": product_name(tier),
        "description": (
            f"Levqor API: {tier.quota_label} calls, {tier.burst_per_second}/s burst, {tier.support} support."
        ),
        "metadata": {"levqor_tier": tier.name},
    }


def _price_matches(price: dict, tier: tiers.Tier, product: str) -> bool:
    recurring = price.get("recurring") or {}
    price_product = price["product"]["id"] if isinstance(price["product"], dict) else price["product"]
    return (
        price_product == product
        and price["unit_amount"] == tier.price_usd * 100
        and price["currency"] == CURRENCY
        and recurring.get("interval") == "month"
        and recurring.get("interval_count") == 1
    )


def sync_catalogue() -> list[str]:
    """Create or update the tier products and monthly prices; returns what changed (empty: nothing).

    Prices are found by their lookup keys. A price's amount cannot change in Stripe, so a new
    amount means a new price that takes the lookup key over (transfer_lookup_key); the old
    price is archived and keeps billing the subscriptions already on it."""
    sc = stripe_client.client()
    changes: list[str] = []
    wanted = list(tiers.TIERS.values())
    listed = sc.v1.prices.list(
        params={"lookup_keys": [t.stripe_lookup_key for t in wanted], "expand": ["data.product"], "limit": 100}
    )
    by_key = {p["lookup_key"]: p for p in (obj.to_dict() for obj in listed.data)}
    for tier in wanted:
        price = by_key.get(tier.stripe_lookup_key)
        product = price["product"] if price and isinstance(price["product"], dict) else None
        if product is None or product.get("deleted"):
            product = _retrieve_product(sc, product_id(tier))
        fields = _product_fields(tier)
        if product is None:
            product = sc.v1.products.create(params={"id": product_id(tier), **fields}).to_dict()
            changes.append(f"created product {product['id']} ({fields['name']})")
        else:
            stale = {k: v for k, v in fields.items() if k != "metadata" and product.get(k) != v}
            if any(product.get("metadata", {}).get(k) != v for k, v in fields["metadata"].items()):
                stale["metadata"] = fields["metadata"]
            if not product.get("active", True):
                stale["active"] = True
            if stale:
                product = sc.v1.products.update(product["id"], params=stale).to_dict()
                changes.append(f"updated product {product['id']} ({', '.join(sorted(stale))})")

        if price and _price_matches(price, tier, product["id"]):
            if not price["active"]:
                sc.v1.prices.update(price["id"], params={"active": True})
                changes.append(f"reactivated price {price['id']} ({tier.stripe_lookup_key})")
            continue
        created = sc.v1.prices.create(
            params={
                "product": product["id"],
                "currency": CURRENCY,
                "unit_amount": tier.price_usd * 100,
                "recurring": {"interval": "month", "interval_count": 1},
                "lookup_key": tier.stripe_lookup_key,
                "transfer_lookup_key": price is not None,
                "nickname": f"{tier.label} monthly",
                "metadata": {"levqor_tier": tier.name},
            }
        )
        changes.append(f"created price {created.id} ({tier.stripe_lookup_key}, ${tier.price_usd}/month)")
        if price and price["active"]:
            sc.v1.prices.update(price["id"], params={"active": False})
            changes.append(f"archived price {price['id']}")
    return changes


def _retrieve_product(sc: stripe.StripeClient, pid: str) -> dict | None:
    try:
        return sc.v1.products.retrieve(pid).to_dict()
    except stripe.InvalidRequestError as err:
        if err.code == "resource_missing":
            return None
        raise


def price_id(sc: stripe.StripeClient, tier: tiers.Tier) -> str:
    """The active monthly price of a tier, by its lookup key; BillingNotConfigured when there is none."""
    listed = sc.v1.prices.list(params={"lookup_keys": [tier.stripe_lookup_key], "active": True, "limit": 1})
    if not listed.data:
        log.error(
            "no active Stripe price with lookup key %s; run `flask billing sync-products`", tier.stripe_lookup_key
        )
        raise BillingNotConfigured(f"The {tier.label} plan is not for sale yet; please try again later.")
    return listed.data[0].id
