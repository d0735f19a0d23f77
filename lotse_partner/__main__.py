"""The partner kit's key commands, for the organisation's IT at onboarding and at a rotation.

    python -m lotse_partner keys init --org caritas-paderborn --file keys.json     # new key pairs, public keys printed
    python -m lotse_partner keys show --file keys.json                            # the public keys to register
    python -m lotse_partner keys rotate --use enc --file keys.json                # adds a key; the old ones stay
    LOTSE_PARTNER_TOKEN=… python -m lotse_partner keys register --file keys.json --consent-url https://…

The private keys never leave the file (mode 0600); only public keys are printed or sent. `register` posts
the newest `enc` and `sig` public keys to the consent service (`POST /v1/organisations/{org}/keys`) with a
token of the organisation's partner system (from the environment, never from the command line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import httpx

from contracts.sealed import KeyUse

from .keys import PartnerKeys

USES: tuple[KeyUse, KeyUse] = ("enc", "sig")


def _public(keys: PartnerKeys) -> list[dict[str, object]]:
    return [keys.public(use).model_dump() for use in USES]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lotse_partner", description="The partner kit's key commands.")
    sub = ap.add_subparsers(dest="group", required=True)
    keys_cmd = sub.add_parser("keys", help="the organisation's key pairs")
    ksub = keys_cmd.add_subparsers(dest="command", required=True)
    init = ksub.add_parser("init", help="create the key file (enc and sig key pairs) unless it exists")
    init.add_argument("--org", required=True)
    show = ksub.add_parser("show", help="print the newest public keys")
    rotate = ksub.add_parser("rotate", help="add a new key pair of one use (register it afterwards)")
    rotate.add_argument("--use", choices=USES, required=True)
    register = ksub.add_parser("register", help="register the newest public keys with the consent service")
    register.add_argument("--consent-url", required=True)
    for p in (init, show, rotate, register):
        p.add_argument("--file", type=Path, required=True, help="the private key file (JSON, mode 0600)")
    args = ap.parse_args(argv)

    keys = PartnerKeys.load_or_create(args.file, args.org) if args.command == "init" else PartnerKeys.load(args.file)
    if args.command == "rotate":
        keys.rotate(args.use)
        keys.save(args.file)
    if args.command == "register":
        token = os.environ.get("LOTSE_PARTNER_TOKEN")
        if not token:
            print("set LOTSE_PARTNER_TOKEN to a token of the organisation's partner system", file=sys.stderr)
            return 2
        url = f"{args.consent_url.rstrip('/')}/v1/organisations/{keys.org}/keys"
        for key in _public(keys):
            r = httpx.post(url, json=key, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            if r.status_code not in (200, 201):
                print(f"registering {key['kid']} failed: HTTP {r.status_code} {r.text[:300]}", file=sys.stderr)
                return 1
            print(f"{key['kid']} ({key['use']}): {'registered' if r.status_code == 201 else 'already registered'}")
        return 0
    print(json.dumps(_public(keys), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
