"""The gateway's rules, without I/O: cursors, what a partner may post to its outbox, when an inbox is overdue."""
