"""The consent service: consent ledger, decision API and the disclosure gate to partner topics."""
