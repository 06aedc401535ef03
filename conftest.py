"""Root pytest configuration: the suite's plugin and its Hypothesis profiles.

The ``ci`` profile is loaded by default, so a plain ``pytest`` is deterministic; pass
``--hypothesis-profile dev`` or ``--hypothesis-profile nightly`` for the others.
"""

from hypothesis import settings

from precision_suite.strategies import DEFAULT_PROFILE, register_profiles

pytest_plugins = ["precision_suite.plugin"]

register_profiles()
settings.load_profile(DEFAULT_PROFILE)
