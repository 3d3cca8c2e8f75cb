"""singer-sdk's standard target tests, run in-process against the sandbox over real HTTP."""

from __future__ import annotations

from helpers import API_KEY, WRITE_KEY
from singer_sdk.testing import get_target_test_class

from target_encharge.sandbox import Sandbox
from target_encharge.target import TargetEncharge

_sandbox = Sandbox(api_key=API_KEY, write_key=WRITE_KEY).start()

# The SDK's sample streams are not all people (many have no email): those records are refused and counted,
# which max_failures=-1 allows, so the suite checks that every kind of input is handled without a crash.
TestTargetEncharge = get_target_test_class(
    TargetEncharge,
    config={
        "api_key": API_KEY,
        "write_key": WRITE_KEY,
        "api_url": _sandbox.api_url,
        "ingest_url": _sandbox.ingest_url,
        "max_failures": -1,
        "retry_backoff": 0.01,
        # no progress thread: the SDK's harness ends some runs with an exception, past the run's end that stops it,
        # and a thread left running in this process writes its progress lines into later tests' logs
        "progress_interval": 0,
    },
)
