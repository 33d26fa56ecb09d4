"""Tenants and their API keys. A key is shown once, at creation; only its SHA-256 is stored.

The keys are 256 random bits, so a fast hash is enough (there is nothing to brute-force), and looking a
request's key up by its hash is one indexed read.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from grantkeeper.core.errors import InvalidInputError
from grantkeeper.ports import ConnectionStore, TenantRecord

API_KEY_PREFIX = "gk_"
_TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def check_tenant_name(name: str) -> None:
    if not _TENANT_NAME.match(name):
        raise InvalidInputError(
            "tenant name must be 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


def issue_api_key(store: ConnectionStore, name: str, *, replace: bool = False) -> tuple[TenantRecord, str]:
    """Create the tenant if needed and give it a new key, returned once: it is never stored or shown again."""
    check_tenant_name(name)
    api_key = new_api_key()
    tenant = store.set_tenant_key(name, hash_api_key(api_key), replace=replace)
    return tenant, api_key


def tenant_for_api_key(store: ConnectionStore, api_key: str) -> TenantRecord | None:
    if not api_key.startswith(API_KEY_PREFIX) or len(api_key) > 200:
        return None
    return store.tenant_for_key(hash_api_key(api_key))
