"""The token endpoint client (pooled keep-alive HTTP/1.1, ADR 0008) and DESIGN section 4's token URL rule."""

from grantkeeper.adapters.http.token_client import MAX_BODY_BYTES, HttpTokenEndpoint
from grantkeeper.core.urls import is_loopback_host, validate_token_url

__all__ = ["MAX_BODY_BYTES", "HttpTokenEndpoint", "is_loopback_host", "validate_token_url"]
