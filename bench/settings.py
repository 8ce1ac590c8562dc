"""The production settings plus one trivial view (bench/urls.py) to measure the server's own overhead."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
