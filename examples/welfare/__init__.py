"""A welfare association's counselling tool on the partner kit (see README.md)."""
