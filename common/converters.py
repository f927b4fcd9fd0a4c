"""Path converters for object ids: a value the database cannot hold never reaches a view.

A URL id outside PostgreSQL's bigint range (or not a number at all) is simply no match, so every
such route answers 404 in the API's error shape instead of a ValueError or DataError deep in a view.
"""

from django.urls import register_converter

MAX_DATABASE_ID = 2**63 - 1


class IdConverter:
    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_DATABASE_ID:
            raise ValueError("beyond the database's id range")
        return number

    def to_url(self, value: int) -> str:
        return str(value)


class ProviderIdConverter:
    """Payment provider object ids (`pi_…`, `acct_…`): letters, digits, `_` and `-` only."""

    regex = "[A-Za-z0-9_-]{1,255}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class PlotFormatConverter:
    regex = "png|svg"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(IdConverter, "id")
register_converter(ProviderIdConverter, "provider_id")
register_converter(PlotFormatConverter, "plot_format")
