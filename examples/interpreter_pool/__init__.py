"""The KI's interpreter pool on the partner kit (see README.md)."""
