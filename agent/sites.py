"""The "sensitive sites" list the ``cautious`` preset uses: on these pages every action that can change
something (click, type, key, drag) asks first, as ``strict`` would everywhere.

A site is sensitive by its host (banks, payment and crypto services, account and identity pages, government)
or by its path (checkout, payment, billing, password and security settings) — the host and path are matched
separately, so a search for "bank" in a query string does not count. Patterns are RE2 (agent/patterns.py).
A user rule (``{"effect": "allow", "url": "..."}``) overrides the list for a site the user trusts.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from agent import patterns


@dataclass(frozen=True, slots=True)
class SensitiveSite:
    name: str
    host: str | None = None  # searched in the lower-cased host name
    path: str | None = None  # searched in the lower-cased path


SENSITIVE_SITES: tuple[SensitiveSite, ...] = (
    SensitiveSite("bank", host=r"(^|[.-])[a-z0-9-]*bank[a-z0-9-]*\.|(^|\.)(chase|wellsfargo|citi|citibank|hsbc|"
                  r"barclays|santander|ing|schwab|fidelity|vanguard|etrade|robinhood|americanexpress|"
                  r"capitalone|discover|sparkasse|commerzbank|lloydsbank|natwest|monzo|n26)\.[a-z.]+$"),
    SensitiveSite("payments", host=r"(^|\.)(paypal|stripe|venmo|wise|revolut|klarna|squareup|cash\.app|"
                  r"checkout|adyen|braintreegateway|afterpay|affirm|alipay|pay\.google|payments\.google)"
                  r"(\.[a-z]+)+$"),
    SensitiveSite("crypto", host=r"(^|\.)(coinbase|binance|kraken|bitstamp|blockchain|crypto|metamask|"
                  r"bitfinex|kucoin|okx|bybit)\.[a-z.]+$"),
    SensitiveSite("account", host=r"^(accounts\.google\.com|myaccount\.google\.com|login\.microsoftonline\.com|"
                  r"login\.live\.com|account\.live\.com|account\.microsoft\.com|appleid\.apple\.com|"
                  r"id\.apple\.com|signin\.aws\.amazon\.com|console\.aws\.amazon\.com|login\.gov|"
                  r"id\.me)$"),
    SensitiveSite("government", host=r"(^|\.)(gov|gouv|gob|gv)(\.[a-z]{2})?$|\.gc\.ca$|(^|\.)(hmrc|irs)\."),
    SensitiveSite("checkout or payment page", path=r"/(checkout|payment|payments|pay|billing|wallet|"
                  r"transfer|transfers|withdraw|send-money|purchase|order/confirm)(/|$)"),
    SensitiveSite("password or security settings", path=r"/(settings/)?(password|passwords|security|2fa|mfa|"
                  r"two-factor|api[-_]?keys|tokens|ssh[-_]?keys|recovery)(/|$)"),
)

for _site in SENSITIVE_SITES:  # a bad entry fails at import, in every test run, not on a user's page
    for _pattern in (_site.host, _site.path):
        if _pattern is not None:
            patterns.compile_pattern(_pattern, _site.name, limited=False)


def sensitive_site(url: str) -> str | None:
    """The name of the sensitive-site entry ``url`` falls under, or None."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower().rstrip(".")
    except ValueError:
        return None
    if parts.scheme not in ("http", "https"):
        return None
    path = parts.path.lower()
    for site in SENSITIVE_SITES:
        if site.host is not None and patterns.search(site.host, host):
            return site.name
        if site.path is not None and patterns.search(site.path, path):
            return site.name
    return None
