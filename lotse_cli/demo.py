"""`lotse demo seed`: fills a freshly started local network with a few realistic cases.

It talks to the running services over their public HTTP APIs only, as caseworkers would.
All names are invented; e-mail addresses use the reserved .example domain and land in the local
mail sink (.run/mail) that `make up` starts.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import httpx
import typer
from rich.console import Console

from lotse_cli.dev import find_user, user_token
from lotse_kit.settings import service_url

app = typer.Typer(help="Demo data for the local network.", no_args_is_help=True)
console = Console()

INFO = {"purpose": True, "consequences_of_refusal": True, "right_to_withdraw": True}

CASES: list[dict[str, Any]] = [
    {
        "org": "jobcenter-kreis-paderborn",
        "client": {
            "given_name": "Olena",
            "family_name": "Demo-Koval",
            "date_of_birth": "1988-04-12",
            "email": "olena@clients.example",
            "preferred_language": "uk",
            "languages": ["uk", "ru"],
            "needs": ["integration_course"],
            "residence_title": "aufenthg_24",
            "residence_valid_until": (date.today() + timedelta(days=80)).isoformat(),
        },
        "consent": {
            "recipients": ["caritas-paderborn", "jobcenter-kreis-paderborn"],
            "purposes": ["referral", "contact_for_notifications"],
            "categories": ["identity", "contact"],
            "information_language": "uk",
        },
        "referral": {"need": "integration_course", "categories": ["identity", "contact"], "reason": "Integrationskurs mit Kinderbetreuung"},
    },
    {
        "org": "kim-kreis-paderborn",
        "client": {
            "given_name": "Samir",
            "family_name": "Demo-Haddad",
            "date_of_birth": "2001-09-30",
            "email": "samir@clients.example",
            "preferred_language": "ar",
            "languages": ["ar", "de"],
            "needs": ["recognition_of_qualifications"],
            "residence_title": "aufenthg_104c",
            "residence_valid_from": (date.today() - timedelta(days=400)).isoformat(),
        },
        "consent": {
            "recipients": ["ki-kreis-paderborn", "kim-kreis-paderborn"],
            "purposes": ["referral", "contact_for_notifications"],
            "categories": ["identity", "contact", "education_qualifications"],
            "information_language": "ar",
        },
        "referral": {
            "need": "recognition_of_qualifications",
            "categories": ["identity", "contact"],
            "reason": "Anerkennung Ausbildung Elektriker",
        },
    },
    {
        "org": "caritas-paderborn",
        "client": {
            "given_name": "Parisa",
            "family_name": "Demo-Rahimi",
            "date_of_birth": "1995-01-20",
            "email": "parisa@clients.example",
            "preferred_language": "fa",
            "languages": ["fa", "en"],
            "needs": ["psychosocial_support"],
            "residence_title": "aufenthaltsgestattung",
            "residence_valid_until": (date.today() + timedelta(days=25)).isoformat(),
        },
        "consent": None,  # no consent yet: the referral is refused with 409
        "referral": {"need": "psychosocial_support", "categories": ["identity", "contact"]},
    },
]


@app.command("seed")
def seed(
    intake: str = service_url("intake"),
    consent: str = service_url("consent"),
) -> None:
    """Register three clients, record consents and send referrals through the process plans."""
    with httpx.Client(timeout=30) as http:
        for case in CASES:
            org = case["org"]
            # Each organisation acts with its caseworker's token from the local Keycloak.
            h = {"Authorization": f"Bearer {user_token(find_user(org, 'caseworker'))}"}
            r = http.post(f"{intake}/v1/clients", headers=h, json={"registering_org": org, **case["client"]})
            _check(r, 201, "register client")
            client_id = r.json()["client_id"]
            if case["consent"]:
                r = http.post(
                    f"{consent}/v1/consents",
                    headers=h,
                    json={"client_id": client_id, "form": "written", "information": INFO, **case["consent"]},
                )
                _check(r, 201, "record consent")
            r = http.post(f"{intake}/v1/clients/{client_id}/referrals", headers=h, json=case["referral"])
            if r.status_code == 201:
                outcome = f"referral sent to {r.json()['to_org']}"
            elif r.status_code == 409:
                outcome = f"referral refused: {r.json().get('detail', r.json().get('title'))}"
            else:
                _check(r, 201, "send referral")
            console.print(f"[bold]{org}[/bold] registered client {client_id} ({case['client']['preferred_language']}): {outcome}")
    console.print("Partner inboxes: `lotse topics list`; mail: .run/mail/new; audit: " + service_url("audit") + "/v1/audit/entries")


def _check(r: httpx.Response, status: int, what: str) -> None:
    if r.status_code != status:
        console.print(f"[red]{what} failed: HTTP {r.status_code} {r.text}[/red]")
        raise typer.Exit(1)
