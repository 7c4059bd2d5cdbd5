"""The pricing room: price models, billing periods, invoices (SPEC §5).

Pure functions: no file paths, no Prefect, no clock (`as_of` is a parameter).
"""

from transforms.pricing.credits import (
    Grant,
    burn_down_order,
    grant_from_credit,
    reward_earned,
    reward_grant,
)
from transforms.pricing.graduated import price_graduated
from transforms.pricing.invoice import (
    ADJUSTMENT_PENDING,
    ITEM_NOT_IN_PLAN,
    NO_PRICE_FOR_DIMENSIONS,
    NO_SUBSCRIPTION,
    FrozenState,
    InvoiceResult,
    build_invoices,
    invoice_id,
)
from transforms.pricing.money import round_money
from transforms.pricing.package import price_package
from transforms.pricing.per_unit import price_per_unit
from transforms.pricing.periods import (
    CustomerPeriod,
    Period,
    all_customer_periods,
    billing_periods,
    customer_periods,
    default_subscription,
    periods_frame,
    periods_from_frame,
)
from transforms.pricing.promotions import promotion_applies, promotion_discount
from transforms.pricing.rate import Rated, rate, resolve_price
from transforms.pricing.volume import price_volume

__all__ = [
    "ADJUSTMENT_PENDING", "ITEM_NOT_IN_PLAN", "NO_PRICE_FOR_DIMENSIONS", "NO_SUBSCRIPTION",
    "CustomerPeriod", "FrozenState", "Grant", "InvoiceResult", "Period", "Rated",
    "all_customer_periods", "billing_periods", "build_invoices", "burn_down_order", "customer_periods",
    "default_subscription", "grant_from_credit", "invoice_id", "periods_frame", "periods_from_frame",
    "price_graduated", "price_package", "price_per_unit", "price_volume", "promotion_applies",
    "promotion_discount", "rate", "resolve_price", "reward_earned", "reward_grant", "round_money",
]
