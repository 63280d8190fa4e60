"""How `darkroom flower` turns settings into Flower's options, and what it opens without auth."""

from __future__ import annotations

import pytest

from darkroom.settings import Settings
from worker.flower import RUNTIME_BUCKETS_S, is_loopback, parse_basic_auth, plan_flower


def _option(argv: list[str], name: str) -> str | None:
    values = [arg.split("=", 1)[1] for arg in argv if arg.startswith(f"--{name}=")]
    assert len(values) <= 1, argv
    return values[0] if values else None


def test_the_runtime_buckets_reach_half_an_hour_in_flowers_own_option():
    launch = plan_flower(Settings(), "INFO", environ={})
    assert launch.argv[0] == "flower"
    buckets = [
        float(value) for value in _option(launch.argv, "task_runtime_metric_buckets").split(",")
    ]
    assert buckets == sorted(buckets) == list(RUNTIME_BUCKETS_S)
    assert buckets[-1] == 1800
    assert (_option(launch.argv, "port"), _option(launch.argv, "address")) == ("5555", "127.0.0.1")
    assert _option(launch.argv, "logging") == "info"


def test_basic_auth_is_passed_through_and_keeps_the_api_behind_it():
    settings = Settings(
        flower_basic_auth=" ops:s3cret , viewer:pa=ss:word ",
        flower_address="0.0.0.0",
        flower_port=7000,
    )
    launch = plan_flower(settings, "DEBUG", environ={})
    assert _option(launch.argv, "basic_auth") == "ops:s3cret,viewer:pa=ss:word"
    assert (launch.users, launch.open_api, launch.warn) == (("ops", "viewer"), False, False)
    assert "s3cret" not in launch.notice and "ops, viewer" in launch.notice
    assert (_option(launch.argv, "port"), _option(launch.argv, "address")) == ("7000", "0.0.0.0")
    assert _option(launch.argv, "logging") == "debug"


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_without_auth_on_loopback_the_api_is_opened_and_the_operator_told(address):
    launch = plan_flower(Settings(flower_address=address), "INFO", environ={})
    assert (launch.open_api, launch.warn, launch.users) == (True, False, ())
    assert _option(launch.argv, "basic_auth") is None
    assert "FLOWER_UNAUTHENTICATED_API=true" in launch.notice


@pytest.mark.parametrize("address", ["0.0.0.0", "", "10.0.0.5", "flower.internal"])
def test_without_auth_elsewhere_the_api_stays_closed_and_a_warning_says_the_pages_are_open(address):
    launch = plan_flower(Settings(flower_address=address), "INFO", environ={})
    assert (launch.open_api, launch.warn) == (False, True)
    assert "pages are open" in launch.notice and "answers 401" in launch.notice


def test_an_inherited_unauthenticated_api_variable_is_reported_not_hidden():
    launch = plan_flower(
        Settings(flower_address="0.0.0.0"), "INFO", environ={"FLOWER_UNAUTHENTICATED_API": "true"}
    )
    assert (launch.open_api, launch.warn) == (False, True)
    assert "HTTP API is open too" in launch.notice


@pytest.mark.parametrize(
    "value", ["ops", "ops:", ":secret", "ops:secret,,viewer:x", "ops:secret, viewer"]
)
def test_malformed_basic_auth_is_refused_without_echoing_it(value):
    with pytest.raises(ValueError, match="is not 'user:password'") as error:
        parse_basic_auth(value)
    assert "secret" not in str(error.value)


def test_empty_basic_auth_means_none():
    assert parse_basic_auth("") == parse_basic_auth("  ") == []


def test_loopback_detection():
    assert [
        is_loopback(a)
        for a in ("127.0.0.1", "::1", "localhost", "", "0.0.0.0", "::", "example.com")
    ] == [
        True,
        True,
        True,
        False,
        False,
        False,
        False,
    ]
