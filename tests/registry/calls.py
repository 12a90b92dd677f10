"""The registry calls that tests make again and again. ``create``, ``push`` and ``fork`` answer
the response; ``created``, ``pushed`` and ``forked`` also assert success and answer the JSON."""

from __future__ import annotations

import hashlib

API = "/api/v1"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def create(client, account, name, *, title=None, license="CC-BY-4.0", **fields):
    body = {"name": name, "title": title or f"Design {name}", "license": license, **fields}
    return client.post(f"{API}/designs", json=body, headers=account.headers)


def created(client, account, name, **fields) -> dict:
    response = create(client, account, name, **fields)
    assert response.status_code == 201, response.text
    return response.json()


def push(client, account, design, files, **form):
    return client.post(
        f"{API}/designs/{design}/versions",
        files=[("files", (path, data)) for path, data in files],
        data=form,
        headers=account.headers,
    )


def pushed(client, account, design, files, **form) -> dict:
    response = push(client, account, design, files, **form)
    assert response.status_code == 201, response.text
    return response.json()


def fork(client, account, design, ref, **body):
    return client.post(
        f"{API}/designs/{design}/versions/{ref}/fork", json=body or None, headers=account.headers
    )


def forked(client, account, design, ref, **body) -> dict:
    response = fork(client, account, design, ref, **body)
    assert response.status_code == 201, response.text
    return response.json()


def get(client, url) -> dict:
    response = client.get(f"{API}/designs/{url}")
    assert response.status_code == 200, response.text
    return response.json()
