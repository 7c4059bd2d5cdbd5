"""An object-store lake (`s3://bucket/prefix`): a local working copy synchronised with the bucket."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

# ------------------------------------------------------------------ object storage (s3://)
#
# Design: a local working copy synchronised with the bucket. Every engine of meterbill (DuckDB
# COPY, Polars, the ingest journal and locks) keeps working on plain files with real atomic
# renames; the bucket is the system of record. `pull()` makes the mirror equal to the bucket
# (downloads new or changed objects by ETag, re-downloads files changed locally since, deletes
# local files the bucket no longer has); `push()` uploads the warehouse files that changed and
# deletes the warehouse objects that are gone, `_state/` files last. A command that fails pushes
# nothing, and the next pull puts the mirror back to the bucket's state. Object stores have no
# atomic rename: during a push a reader of the bucket can see a table half old, half new; one
# writer at a time (the lake's flock locks only guard one machine).

_REMOTE_LAKES: dict[str, "Mirror"] = {}
_MANIFEST = ".meterbill-mirror.json"
_NOT_SYNCED = ("warehouse/.tmp/", "warehouse/.locks/", _MANIFEST)
_PUSHED = ("warehouse/", "reports/")


def object_store(url: str):
    """An fsspec filesystem for `url`; for s3:// the endpoint is $METERBILL_S3_ENDPOINT or
    $AWS_ENDPOINT_URL, credentials the usual AWS_* variables (or the machine's role)."""
    import fsspec

    scheme = url.split("://", 1)[0]
    opts: dict = {"skip_instance_cache": True}
    if scheme in ("s3", "s3a"):
        endpoint = os.environ.get("METERBILL_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        opts["use_listings_cache"] = False
        if endpoint:
            opts["endpoint_url"] = endpoint
        scheme = "s3"
    return fsspec.filesystem(scheme, **opts)


def mirror_root(url: str) -> Path:
    """Where the working copy of `url` lives: $METERBILL_CACHE/lakes/<scheme>/<bucket>/<prefix>
    (default ~/.cache/meterbill)."""
    scheme, rest = url.split("://", 1)
    cache = Path(os.environ.get("METERBILL_CACHE") or Path.home() / ".cache" / "meterbill")
    parts = [p for p in rest.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ValueError(f"--lake: {url!r} is not a bucket/prefix URL")
    return cache / "lakes" / scheme / Path(*parts)


class Mirror:
    """A local working copy of an object-store lake (see the design note above)."""

    def __init__(self, url: str, local: Path | None = None):
        self.url = url.rstrip("/")
        self.prefix = self.url.split("://", 1)[1].strip("/")
        self.fs = object_store(self.url)
        self.local = local or mirror_root(self.url)

    def _remote(self) -> dict[str, dict]:
        out = {}
        for key, info in self.fs.find(self.prefix, detail=True).items():
            if info.get("type") == "directory":
                continue
            rel = key[len(self.prefix):].lstrip("/")
            if rel and not rel.endswith("/"):
                out[rel] = {"etag": str(info.get("ETag") or info.get("etag") or info.get("mtime") or ""),
                            "size": int(info.get("size") or 0)}
        return out

    def _manifest(self) -> dict[str, dict]:
        p = self.local / _MANIFEST
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}

    def _save(self, man: dict) -> None:
        p = self.local / _MANIFEST
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(man, sort_keys=True), encoding="utf-8")
        os.replace(tmp, p)

    def _local(self, under: tuple[str, ...] | None = None) -> dict[str, Path]:
        out = {}
        if not self.local.is_dir():
            return out
        for p in self.local.rglob("*"):
            if p.is_file():
                rel = p.relative_to(self.local).as_posix()
                if not rel.startswith(_NOT_SYNCED) and (under is None or rel.startswith(under)):
                    out[rel] = p
        return out

    @staticmethod
    def _stat(p: Path) -> list[int]:
        st = p.stat()
        return [st.st_size, st.st_mtime_ns]

    def pull(self) -> dict:
        """Make the working copy equal to the bucket; returns counts of files fetched and removed."""
        self.local.mkdir(parents=True, exist_ok=True)
        remote, man = self._remote(), self._manifest()
        fetched = removed = 0
        for rel, r in remote.items():
            if rel.startswith(_NOT_SYNCED):
                continue
            lp, m = self.local / rel, man.get(rel)
            if m and m["etag"] == r["etag"] and lp.is_file() and self._stat(lp) == m["stat"]:
                continue
            lp.parent.mkdir(parents=True, exist_ok=True)
            tmp = lp.with_name(f".{lp.name}.{uuid.uuid4().hex}.part")
            self.fs.get_file(f"{self.prefix}/{rel}", str(tmp))
            os.replace(tmp, lp)
            man[rel] = {"etag": r["etag"], "stat": self._stat(lp)}
            fetched += 1
        for rel, lp in self._local().items():
            if rel not in remote:
                lp.unlink()
                man.pop(rel, None)
                removed += 1
        for rel in [r for r in man if r not in remote]:
            man.pop(rel)
        self._save(man)
        return {"fetched": fetched, "removed": removed}

    def push(self) -> dict:
        """Upload the warehouse (and reports) files that changed, then delete the objects that are gone."""
        remote, man = self._remote(), self._manifest()
        local = self._local(_PUSHED)
        changed = [rel for rel, lp in local.items()
                   if rel not in remote or rel not in man or man[rel]["stat"] != self._stat(lp)
                   or man[rel]["etag"] != remote[rel]["etag"]]
        changed.sort(key=lambda rel: (rel.startswith("warehouse/_state/"), rel))  # watermarks last
        for rel in changed:
            key = f"{self.prefix}/{rel}"
            self.fs.put_file(str(local[rel]), key)
            info = self.fs.info(key)
            man[rel] = {"etag": str(info.get("ETag") or info.get("etag") or info.get("mtime") or ""),
                        "stat": self._stat(local[rel])}
        gone = sorted(rel for rel in remote if rel.startswith(_PUSHED) and not rel.startswith(_NOT_SYNCED)
                      and rel not in local)
        if gone:
            self.fs.rm([f"{self.prefix}/{rel}" for rel in gone])
        for rel in gone:
            man.pop(rel, None)
        self._save(man)
        return {"uploaded": len(changed), "deleted": len(gone)}


def push_remote_lakes() -> dict[str, dict]:
    """Push every object-store lake opened in this process (the CLI calls it when a command succeeded)."""
    return {url: m.push() for url, m in list(_REMOTE_LAKES.items())}


def forget_remote_lakes() -> None:
    _REMOTE_LAKES.clear()



def pull_mirror(url: str) -> "Mirror":
    """The working copy of `url`, made equal to the bucket, and kept for push_remote_lakes()."""
    mirror = _REMOTE_LAKES.get(url) or Mirror(url)
    mirror.pull()
    _REMOTE_LAKES[url] = mirror
    return mirror
