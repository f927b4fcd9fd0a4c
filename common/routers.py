"""The one router every app uses: detail routes take ids through the bounded `id` path converter."""

from rest_framework.routers import SimpleRouter

from . import converters  # noqa: F401 - registers the converters the routes name


class IdRouter(SimpleRouter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, use_regex_path=False, **kwargs)
        self._default_value_pattern = "id"
