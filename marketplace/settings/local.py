"""`make run`: embedded defaults (SQLite, local files, filesystem broker, offline payments)."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
