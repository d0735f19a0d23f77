"""HTTP routers, event consumers and background workers of the consent service."""
