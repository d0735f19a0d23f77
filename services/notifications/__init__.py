"""Notifications: multilingual e-mail, SMS and signed webhooks to clients, caseworkers and partner systems."""
