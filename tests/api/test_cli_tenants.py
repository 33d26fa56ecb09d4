"""The CLI and the API share tenants: what ``--tenant acme`` made is what acme's key sees, and
``grantkeeper tenants create`` prints the key once."""

from __future__ import annotations

import httpx

from tests.e2e.cli import Cli


def test_tenants_create_prints_a_key_that_sees_what_the_cli_made(api, database_url, key_line, tmp_path):
    cli = Cli(database_url=database_url, keys=key_line, cwd=tmp_path)
    cli.json(
        "providers", "add", "crm", "--token-url", "https://crm.example.test/token",
        "--client-id", "id", "--client-secret", "secret-value", "--tenant", "initech",
    )  # fmt: skip
    created = cli.json("tenants", "create", "initech")
    assert set(created) == {"id", "name", "api_key"}
    assert created["name"] == "initech"

    headers = {"Authorization": f"Bearer {created['api_key']}"}
    providers = httpx.get(f"{api.base_url}/v1/providers", headers=headers).json()
    assert [p["name"] for p in providers] == ["crm"]
    assert "secret-value" not in str(providers)

    again = cli.run("tenants", "create", "initech")
    assert again.returncode == 2
    assert "rotate-key" in again.stderr

    rotated = cli.json("tenants", "rotate-key", "initech")
    assert httpx.get(f"{api.base_url}/v1/providers", headers=headers).status_code == 401
    new_headers = {"Authorization": f"Bearer {rotated['api_key']}"}
    assert httpx.get(f"{api.base_url}/v1/providers", headers=new_headers).status_code == 200

    listed = cli.json("tenants", "list")
    (initech,) = [t for t in listed if t["name"] == "initech"]
    assert initech["has_api_key"] is True
    assert created["api_key"] not in str(listed)
    assert rotated["api_key"] not in str(listed)
