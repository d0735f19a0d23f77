"""I/O for the consent service: PostgreSQL, the network file, partner topics and the decision cache."""
