"""Signing in to mail servers: OAuth2 token providers and the SASL payloads built on them."""
