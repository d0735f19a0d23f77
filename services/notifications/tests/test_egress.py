"""Where webhooks may go (SSRF), as pure rules: special-purpose address ranges, the allow-list, literal URLs."""

from __future__ import annotations

import ipaddress

import pytest

from services.notifications.config import NotificationsSettings
from services.notifications.domain.egress import EgressPolicy, special_purpose
from services.notifications.domain.errors import InvalidEndpointUrl
from services.notifications.domain.model import check_endpoint_url


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.7", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private (RFC 1918)"),
        ("172.16.0.1", "private (RFC 1918)"),
        ("172.31.255.255", "private (RFC 1918)"),
        ("192.168.178.1", "private (RFC 1918)"),
        ("100.64.0.1", "shared address space (CGNAT, RFC 6598)"),
        ("100.127.255.254", "shared address space (CGNAT, RFC 6598)"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1", "link-local"),
        ("fd00::1", "unique local (ULA, private)"),
        ("fc00::1", "unique local (ULA, private)"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("0.1.2.3", "'this network' (reserved)"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("192.0.2.10", "documentation (reserved)"),
        ("2001:db8::1", "documentation (reserved)"),
        ("198.18.0.1", "benchmarking (reserved)"),
        # IPv6 addresses that carry an IPv4 address are judged by it.
        ("::ffff:127.0.0.1", "loopback, embedded in ::ffff:7f00:1"),
        ("::ffff:10.0.0.1", "private (RFC 1918), embedded in ::ffff:a00:1"),
        ("64:ff9b::a9fe:a9fe", "link-local, embedded in 64:ff9b::a9fe:a9fe"),
        ("2002:c0a8:0101::1", "private (RFC 1918), embedded in 2002:c0a8:101::1"),
        ("2001::1", "IETF protocol assignments (reserved)"),  # Teredo
    ],
)
def test_special_purpose_addresses_are_refused_with_a_reason(address, why):
    ip = ipaddress.ip_address(address)
    assert special_purpose(ip) == why
    assert EgressPolicy().refusal(ip) == why


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2a00:1450:4001:82b::200e", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_pass(address):
    assert EgressPolicy().refusal(ipaddress.ip_address(address)) is None


def test_the_allow_list_admits_hosts_addresses_and_networks():
    policy = EgressPolicy.from_entries(["127.0.0.1", "10.20.0.0/16", "Hooks.Partner.Internal.", " "])
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None  # the same address, IPv4-mapped
    assert policy.refusal(ipaddress.ip_address("127.0.0.2")) == "loopback"
    assert policy.refusal(ipaddress.ip_address("10.20.3.4")) is None
    assert policy.refusal(ipaddress.ip_address("10.21.0.1")) == "private (RFC 1918)"
    assert policy.host_allowed("hooks.partner.internal") and policy.host_allowed("HOOKS.partner.internal.")
    assert not policy.host_allowed("partner.internal")


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "http://x", "a b", "hooks.example/path"])
def test_a_malformed_allow_list_entry_stops_the_service(entry):
    with pytest.raises(ValueError, match=r"is not a CIDR network|is neither a host name"):
        NotificationsSettings(webhook_allowed_hosts=[entry])


def test_the_allow_list_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("LOTSE_NOTIFICATIONS_WEBHOOK_ALLOWED_HOSTS", '["127.0.0.1", "hooks.internal"]')
    assert NotificationsSettings().webhook_allowed_hosts == ["127.0.0.1", "hooks.internal"]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://127.0.0.1/hooks", "127.0.0.1 is not a public address (loopback)"),
        ("https://[::1]:8443/hooks", "::1 is not a public address (loopback)"),
        ("https://10.0.0.5/hooks", "private (RFC 1918)"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://100.64.1.1/", "CGNAT"),
        ("https://[fd12:3456::1]/", "unique local"),
        ("https://[::ffff:192.168.1.1]/", "private (RFC 1918), embedded in"),
        ("https://0.0.0.0/", "unspecified"),
        ("https://224.1.1.1/", "multicast"),
        ("https://240.0.0.1/", "reserved"),
        ("https://p.example:99999/hooks", "port must be a number"),
    ],
)
def test_endpoint_urls_naming_a_refused_address_are_refused(url, words):
    with pytest.raises(InvalidEndpointUrl) as exc:
        check_endpoint_url(url, allow_http=False, policy=EgressPolicy())
    assert words in str(exc.value) and exc.value.extensions == {"field": "url"} and exc.value.status == 422


def test_an_allow_listed_address_may_be_registered():
    policy = EgressPolicy.from_entries(["127.0.0.1"])
    assert check_endpoint_url("http://127.0.0.1:8080/x", allow_http=True, policy=policy) == "http://127.0.0.1:8080/x"
    with pytest.raises(InvalidEndpointUrl, match="must be absolute and use https"):
        check_endpoint_url("http://127.0.0.1:8080/x", allow_http=False, policy=policy)  # https only still holds
