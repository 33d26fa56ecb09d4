"""The token endpoint client (one pooled aiohttp session) and the token URL rule of DESIGN section 4."""

from grantkeeper.adapters.http.token_client import MAX_BODY_BYTES, HttpTokenEndpoint
from grantkeeper.core.urls import is_loopback_host, validate_token_url

__all__ = ["MAX_BODY_BYTES", "HttpTokenEndpoint", "is_loopback_host", "validate_token_url"]
