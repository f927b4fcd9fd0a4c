"""Settings of bench/job_list_load.py's server: the deployed settings, plus the peer views' URLconf."""

import importlib
import os

_deployed = importlib.import_module(os.environ.get("BENCH_BASE_SETTINGS", "marketplace.settings.production"))
globals().update({name: value for name, value in vars(_deployed).items() if name.isupper()})

ROOT_URLCONF = "bench.peer_urls"
