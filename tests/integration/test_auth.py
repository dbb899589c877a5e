"""API keys on the real service: every accepted form, 401s, revocation while serving."""

from __future__ import annotations

import base64
import re

from orchestrator.cli import main
from tests.helpers import busybox_def, chain_flow


def create_key(capsys, data_dir, name: str, tenant: str = "default") -> str:
    assert main(["keys", "create", "--name", name, "--tenant", tenant,
                 "--data-dir", str(data_dir)]) == 0  # fmt: skip
    return capsys.readouterr().out.strip()


async def test_keys_guard_every_endpoint_but_health_and_presigned_urls(
    start_service, tmp_path, capsys
):
    data_dir = tmp_path / "data"
    raw = create_key(capsys, data_dir, "laptop")
    assert re.fullmatch(r"[0-9a-f]{64}", raw)
    client = await start_service(data_dir, auth="required")

    assert (await client.get("/healthz")).status == 200
    for headers in ({}, {"Authorization": "Bearer " + "0" * 64}, {"x-api-key": "nope"}):
        response = await client.get("/api/v1/flow/status/" + "0" * 32, headers=headers)
        assert response.status == 401
        assert await response.json() == {"error": "unauthorized"}

    basic_password = base64.b64encode(f"user:{raw}".encode()).decode()
    for headers in (
        {"Authorization": f"Bearer {raw}"},
        {"x-api-key": raw},
        {"Authorization": f"Basic {raw}"},
        {"Authorization": f"Basic {basic_password}"},
    ):
        response = await client.get("/api/v1/flow/status/" + "0" * 32, headers=headers)
        assert response.status == 400, headers  # past auth: the run does not exist
        assert await response.text() == "Flow run does not exist."

    submitted = await client.post(
        "/api/v1/flow/test",
        json={"Flow": chain_flow("copy"), "NodeDefs": [busybox_def("copy", "cp ${in} ${out}")]},
        headers={"x-api-key": raw},
    )
    run = await submitted.json()
    # The WaitingURL is its own credential: no key needed to upload.
    async with client.session.put(run["WaitingURLs"][0]["PutURL"], data=b"x") as response:
        assert response.status == 200

    assert main(["keys", "list", "--data-dir", str(data_dir)]) == 0
    listing = capsys.readouterr().out
    assert f"{raw[:8]}…{raw[-4:]}" in listing
    assert raw not in listing
    assert "active" in listing and re.search(r"laptop .* 20\d\d-\d\d-\d\dT.*Z +active", listing)

    # Revoked from another process on the same data dir: refused on the next request.
    assert main(["keys", "revoke", "laptop", "--data-dir", str(data_dir)]) == 0
    response = await client.get(f"/api/v1/flow/status/{run['ID']}", headers={"x-api-key": raw})
    assert response.status == 401
    assert await response.json() == {"error": "unauthorized"}


def test_key_names_are_unique(capsys, tmp_path):
    create_key(capsys, tmp_path, "one")
    assert main(["keys", "create", "--name", "one", "--data-dir", str(tmp_path)]) == 2
    assert "exists already" in capsys.readouterr().err
