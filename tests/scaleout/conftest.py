"""A real S3-compatible server on loopback for the object-store tests: moto's ThreadedMotoServer
(the only S3 server installable on this machine; no MinIO or SeaweedFS packages here)."""

import socket

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    """Credentials and endpoint in the environment, as a user would set them; a fresh mirror cache."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("METERBILL_S3_ENDPOINT", s3_server)
    monkeypatch.setenv("METERBILL_CACHE", str(tmp_path / "cache"))
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=s3_server, skip_instance_cache=True, use_listings_cache=False)
