"""The `lotse` operator CLI."""
