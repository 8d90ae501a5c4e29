"""Hypothesis profiles: local runs explore new random examples every time (that is how the
fuzzers find bugs); CI (CI=true) runs a fixed, reproducible set, so a landing never depends on
the luck of a draw. Anything a local run finds is fixed and pinned with a regression test."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
