"""`lotse dev …`: helpers for the local development stack.

    TOKEN=$(lotse dev token --org caritas-paderborn --role caseworker)
    TOKEN=$(lotse dev token --role dpo)                # the district-wide dpo (no org)
    TOKEN=$(lotse dev token --service intake)          # the intake service's own token
    curl -H "Authorization: Bearer $TOKEN" …

Tokens come from the local Keycloak (`deploy/local/stack.sh up`, realm `lotse`). A demo user is
found in the realm file (deploy/keycloak/lotse-realm.json) by organisation and role; its password and
the services' client secrets are the dev-only values the stack generated into
`.run/keycloak/secrets.env`. Only the token is written to stdout.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from lotse_kit.auth import AuthSettings

REPO = Path(__file__).resolve().parent.parent
REALM_FILE = REPO / "deploy" / "keycloak" / "lotse-realm.json"
CLI_CLIENT = "lotse-cli"

app = typer.Typer(help="Local development helpers (the local stack's Keycloak).", no_args_is_help=True)


def run_dir() -> Path:
    return Path(os.environ.get("LOTSE_RUN_DIR", REPO / ".run"))


def secrets_file() -> Path:
    return run_dir() / "keycloak" / "secrets.env"


def env_key(kind: str, name: str) -> str:
    """The key of a client secret or user password in secrets.env (as deploy/local/keycloak/provision.py writes it)."""
    return f"{kind}_{re.sub(r'[^A-Za-z0-9]', '_', name).upper()}"


def dev_secrets(path: Path | None = None) -> dict[str, str]:
    path = path or secrets_file()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: start the local stack first (deploy/local/stack.sh up)")
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            k, _, v = line.partition("=")
            values[k.strip()] = v.strip()
    return values


def realm(path: Path = REALM_FILE) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def demo_users(path: Path = REALM_FILE) -> list[dict[str, Any]]:
    """The realm file's users as (username, org, roles, district_wide) records."""
    out = []
    for u in realm(path).get("users", []):
        attrs = u.get("attributes") or {}
        out.append(
            {
                "username": u["username"],
                "org": (attrs.get("org") or [None])[0],
                "roles": sorted(u.get("realmRoles", [])),
                "district_wide": (attrs.get("district_wide") or ["false"])[0] == "true",
            }
        )
    return out


def find_user(org: str | None, role: str, path: Path = REALM_FILE) -> str:
    """The demo user with that organisation (None: none, i.e. district level) and role."""
    users = demo_users(path)
    found = [u["username"] for u in users if u["org"] == org and role in u["roles"]]
    if len(found) != 1:
        have = ", ".join(f"{u['org'] or '(district)'}/{'+'.join(u['roles'])}" for u in users)
        what = "no demo user" if not found else f"several demo users ({', '.join(found)})"
        raise LookupError(f"{what} with org {org or '(none)'} and role {role}; the realm has: {have}")
    return found[0]


def token_endpoint(issuer: str | None = None) -> str:
    return (issuer or AuthSettings().issuer).rstrip("/") + "/protocol/openid-connect/token"


def _token(data: dict[str, str], issuer: str | None) -> str:
    # Secrets go in the form body, never in the URL.
    r = httpx.post(token_endpoint(issuer), data=data, timeout=10)
    if r.status_code != 200:
        try:
            reason = r.json().get("error_description") or r.json().get("error")
        except ValueError:
            reason = r.text[:200]
        raise RuntimeError(f"Keycloak refused the token request ({r.status_code}): {reason}")
    token: str = r.json()["access_token"]
    return token


def user_token(username: str, *, issuer: str | None = None, secrets: dict[str, str] | None = None) -> str:
    """A password-grant access token for a demo user, through the public lotse-cli client."""
    secrets = secrets if secrets is not None else dev_secrets()
    password = secrets.get(env_key("USER_PASSWORD", username))
    if not password:
        raise LookupError(f"no password for {username} in {secrets_file()}: run deploy/local/stack.sh up")
    return _token({"grant_type": "password", "client_id": CLI_CLIENT, "username": username, "password": password}, issuer)


def service_token(service: str, *, issuer: str | None = None, secrets: dict[str, str] | None = None) -> str:
    """A client-credentials access token for a service (client lotse-<service>)."""
    client = service if service.startswith("lotse-") else f"lotse-{service}"
    secrets = secrets if secrets is not None else dev_secrets()
    secret = secrets.get(env_key("CLIENT_SECRET", client))
    if not secret:
        raise LookupError(f"no client secret for {client} in {secrets_file()}: run deploy/local/stack.sh up")
    return _token({"grant_type": "client_credentials", "client_id": client, "client_secret": secret}, issuer)


@app.command("token")
def token(
    org: Annotated[
        str | None, typer.Option(help="Organisation id (network file); omit for district-level users (auditor, operator, district dpo).")
    ] = None,
    role: Annotated[str | None, typer.Option(help="caseworker, partner_system, auditor, dpo or operator.")] = None,
    service: Annotated[str | None, typer.Option(help="A service's own token instead (intake, consent, notifications, audit).")] = None,
    user: Annotated[str | None, typer.Option(help="A demo user by name instead of --org/--role.")] = None,
    issuer: Annotated[str | None, typer.Option(help="The realm URL; default LOTSE_OIDC_ISSUER or the local Keycloak.")] = None,
) -> None:
    """Print an access token from the local Keycloak (nothing else on stdout)."""
    try:
        if service:
            if org or role or user:
                raise typer.BadParameter("--service stands alone")
            tok = service_token(service, issuer=issuer)
        else:
            if user is None:
                if role is None:
                    raise typer.BadParameter("give --role (and --org), --user or --service")
                user = find_user(org, role)
            tok = user_token(user, issuer=issuer)
    except (LookupError, FileNotFoundError, RuntimeError, httpx.HTTPError) as exc:
        print(f"lotse dev token: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    sys.stdout.write(tok + "\n")


@app.command("users")
def users() -> None:
    """List the demo users of the local realm: name, organisation, roles (no passwords)."""
    for u in demo_users():
        scope = "district-wide" if u["district_wide"] else ""
        sys.stdout.write("\t".join([u["username"], u["org"] or "-", ",".join(u["roles"]), scope]).rstrip() + "\n")
