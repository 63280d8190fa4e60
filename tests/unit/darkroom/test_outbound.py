"""The outbound URL guard that webhook URLs pass, at submission and again at delivery: what it
refuses and why, what the allow-list lets through, and the address it pins."""

from __future__ import annotations

import ipaddress

import pytest

from darkroom.outbound import UnsafeURL, check_url
from tests.unit.webhook_support import fake_dns


def _check(url: str, *, allow_http: bool = False, allowed: tuple[str, ...] = ()):
    return check_url(url, allow_http=allow_http, allowed_hosts=allowed)


@pytest.mark.parametrize(
    ("url", "allow_http", "reason"),
    [
        ("http://93.184.216.34/hook", False, "DARKROOM_WEBHOOK_ALLOW_HTTP"),
        ("ftp://93.184.216.34/hook", True, "https://"),
        ("https://127.0.0.1/hook", False, "loopback"),
        ("http://localhost:8080/hook", True, "loopback"),
        ("https://10.1.2.3/hook", False, "private"),
        ("https://169.254.169.254/latest/meta-data", False, "link-local"),
        ("https://[::1]/hook", False, "loopback"),
        ("https://[::ffff:127.0.0.1]/hook", False, "loopback"),
        ("https://[::ffff:169.254.169.254]/hook", False, "link-local"),
        ("https://0.0.0.0/hook", False, "unspecified"),
        ("https://100.64.0.1/hook", False, "non-public"),
        ("https://224.0.0.1/hook", False, "multicast"),
        ("https://user:pw@93.184.216.34/hook", False, "credentials"),
        ("https:///hook", False, "no host"),
        ("https://nowhere.invalid/hook", False, "does not resolve"),
        ("https://93.184.216.34:99999/hook", False, "port"),
    ],
)
def test_unsafe_urls_are_refused_with_the_reason(url, allow_http, reason):
    with pytest.raises(UnsafeURL, match=reason):
        _check(url, allow_http=allow_http)


def test_a_refusal_names_the_setting_that_would_allow_it():
    with pytest.raises(UnsafeURL, match="DARKROOM_WEBHOOK_ALLOWED_HOSTS"):
        _check("https://10.1.2.3/hook")


def test_allow_listed_hosts_and_cidrs_pass():
    assert _check("https://93.184.216.34/hook").addresses == (
        ipaddress.ip_address("93.184.216.34"),
    )
    assert (
        _check("http://localhost:8080/hook", allow_http=True, allowed=("localhost",)).port == 8080
    )
    assert _check("https://10.1.2.3/hook", allowed=("10.0.0.0/8",)).hostname == "10.1.2.3"
    assert _check("https://[::ffff:127.0.0.1]/hook", allowed=("127.0.0.1",))
    with pytest.raises(UnsafeURL):
        _check("https://10.1.2.3/hook", allowed=("10.9.0.0/16", "other.local"))


def test_a_host_with_any_internal_address_is_refused(monkeypatch):
    answers = {"mixed.example": ["93.184.216.34", "10.0.0.7"], "public.example": ["93.184.216.34"]}
    fake_dns(monkeypatch, answers)
    with pytest.raises(UnsafeURL, match="The host 'mixed.example' resolves to a private address"):
        _check("https://mixed.example/hook")
    assert _check("https://public.example/hook").hostname == "public.example"


def test_a_checked_url_pins_the_vetted_address_and_keeps_the_host(monkeypatch):
    fake_dns(monkeypatch, {"hooks.example.test": ["2001:db8::5"]})
    checked = _check(
        "https://hooks.example.test:8443/a/b?c=1#frag", allowed=("hooks.example.test",)
    )
    pinned = checked.pinned(checked.addresses[0])
    assert (pinned.url, pinned.host_header, pinned.sni_hostname) == (
        "https://[2001:db8::5]:8443/a/b?c=1",
        "hooks.example.test:8443",
        "hooks.example.test",
    )
