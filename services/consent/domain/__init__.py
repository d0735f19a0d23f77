"""Pure consent rules: records, decisions, forwarding policy and receipts. No I/O."""
