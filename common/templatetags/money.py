"""`{{ amount|money:currency }}`: an amount in minor units shown in currency units ("2500.00 USD")."""

from django import template

from common.admin import money_display

register = template.Library()


@register.filter
def money(amount: int | None, currency: str | None) -> str:
    return money_display(amount, currency)


@register.filter
def bps_percent(bps: int | None) -> str:
    return "—" if bps is None else f"{bps / 100:g}%"
