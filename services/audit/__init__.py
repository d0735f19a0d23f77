"""The audit service: a tamper-evident (RFC 6962 / RFC 9162) log of every record on every Lotse topic."""
