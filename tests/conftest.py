"""Settings for every test: hypothesis without per-example deadlines, which a busy machine turns
into spurious failures (speed is measured by the benchmarks, not by the tests)."""

from hypothesis import settings

settings.register_profile("fairbatch", deadline=None)
settings.load_profile("fairbatch")
