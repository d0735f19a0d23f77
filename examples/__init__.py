"""Runnable partner-system examples built on the partner kit (lotse_partner); see each README."""
