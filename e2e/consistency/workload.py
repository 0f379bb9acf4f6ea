"""Client threads: PUT / GET / DELETE / LIST / CopyObject / multipart on a small key set
(so keys collide), each through a node picked at random, every outcome in the history."""

from __future__ import annotations

import random
import threading
from typing import Callable

import botocore.exceptions as bx
from botocore.config import Config

from storaged_proc import S3Config, boto3_client

from .history import History, Op
from .values import PART_SIZE, body_origin, make_body, multipart_sizes

# operation -> weight
MIX = {"put": 35, "get": 36, "delete": 8, "list": 10, "copy": 8, "mpu": 3}
# (weight, min size, max size): inline, one chunk, several chunks
PUT_SIZES = ((55, 200, 6_000), (38, 16_000, 300_000), (7, 1_100_000, 2_600_000))
CONNECT_TIMEOUT_S = 2
READ_TIMEOUT_S = 8


def _client(cfg: S3Config):
    return boto3_client(cfg, connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                        retries={"max_attempts": 1, "mode": "standard"},
                        max_pool_connections=4, tcp_keepalive=True)


def classify(exc: BaseException) -> tuple[str, str]:
    """(`fail` | `info` | `notfound`, description) of a client error."""
    if isinstance(exc, bx.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404") or status == 404 and code != "NoSuchBucket":
            return "notfound", f"{status} {code}"
        return ("fail" if 400 <= status < 500 else "info"), f"{status} {code}"
    # Connection errors are `info` too: botocore reports a request that was sent on a pooled
    # connection and then cut (a node killed mid-request) as EndpointConnectionError, and
    # such a write was seen applied.
    return "info", f"{type(exc).__name__}: {exc}"[:200]


class Workload:
    """`clients` threads running until `stop` is set."""

    def __init__(self, history: History, bucket: str, keys: list[str],
                 nodes: Callable[[], list[tuple[str, S3Config]]], clients: int = 4,
                 seed: int = 0, mix: dict[str, int] | None = None):
        self.history = history
        self.bucket = bucket
        self.keys = keys
        self.nodes = nodes
        self.stop = threading.Event()
        self.seed = seed
        self.mix = mix or MIX
        self.threads = [threading.Thread(target=self._run, args=(p,), daemon=True,
                                         name=f"client{p}") for p in range(clients)]
        self._clients: dict[tuple[int, str], object] = {}

    def start(self) -> "Workload":
        for t in self.threads:
            t.start()
        return self

    def join(self, timeout: float = 60) -> list[str]:
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
        return [t.name for t in self.threads if t.is_alive()]

    # -- one client ---------------------------------------------------------------------------

    def _client_for(self, p: int, name: str, cfg: S3Config):
        c = self._clients.get((p, name))
        if c is None:
            c = self._clients[(p, name)] = _client(cfg)
        return c

    def _run(self, p: int) -> None:
        rng = random.Random(self.seed * 1000 + p)
        n = 0
        fs, weights = zip(*self.mix.items())
        while not self.stop.is_set():
            nodes = self.nodes()
            if not nodes:
                self.stop.wait(0.1)
                continue
            name, cfg = rng.choice(nodes)
            client = self._client_for(p, name, cfg)
            f = rng.choices(fs, weights)[0]
            key = rng.choice(self.keys)
            n += 1
            vid = f"p{p}-{n:06d}"
            try:
                getattr(self, f"_{f}")(p, rng, client, name, key, vid)
            except Exception as exc:  # noqa: BLE001 - a client bug must not stop the run
                print(f"client {p}: {f} {key} raised {exc!r}", flush=True)

    def _finish(self, op: Op, exc: BaseException | None, **kw: object) -> None:
        if exc is None:
            self.history.complete(op, "ok", **kw)
            return
        kind, desc = classify(exc)
        if kind == "notfound" and op.f == "get":
            self.history.complete(op, "ok", read=None, **kw)
        else:
            self.history.complete(op, "fail" if kind in ("fail", "notfound") else "info",
                                  error=desc)

    def _put(self, p, rng, client, node, key, vid):
        _, lo, hi = rng.choices(PUT_SIZES, [w for w, _, _ in PUT_SIZES])[0]
        size = rng.randint(lo, hi)
        body = make_body(vid, size)
        op = self.history.invoke(p, "put", key, node, value=vid, size=size)
        try:
            client.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata={"op": vid})
        except Exception as exc:  # noqa: BLE001
            return self._finish(op, exc)
        self._finish(op, None)

    def _get(self, p, rng, client, node, key, vid):
        op = self.history.invoke(p, "get", key, node)
        try:
            r = client.get_object(Bucket=self.bucket, Key=key)
            body = r["Body"].read()
        except Exception as exc:  # noqa: BLE001
            return self._finish(op, exc)
        read = r.get("Metadata", {}).get("op")
        origin = body_origin(body)
        self._finish(op, None, read=read or f"<no op metadata, {len(body)} bytes>",
                     origin=origin, body_ok=origin is not None)

    def _delete(self, p, rng, client, node, key, vid):
        op = self.history.invoke(p, "delete", key, node)
        try:
            client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            return self._finish(op, exc)
        self._finish(op, None)

    def _list(self, p, rng, client, node, key, vid):
        op = self.history.invoke(p, "list", "", node)
        try:
            r = client.list_objects_v2(Bucket=self.bucket, MaxKeys=1000)
        except Exception as exc:  # noqa: BLE001
            return self._finish(op, exc)
        self._finish(op, None, listed=sorted(o["Key"] for o in r.get("Contents", [])))

    def _copy(self, p, rng, client, node, key, vid):
        src = rng.choice([k for k in self.keys if k != key] or self.keys)
        op = self.history.invoke(p, "copy", key, node, value=vid, src=src)
        try:
            client.copy_object(Bucket=self.bucket, Key=key, Metadata={"op": vid},
                               MetadataDirective="REPLACE",
                               CopySource={"Bucket": self.bucket, "Key": src})
        except Exception as exc:  # noqa: BLE001
            return self._finish(op, exc)
        self._finish(op, None)

    def _mpu(self, p, rng, client, node, key, vid):
        size = PART_SIZE + rng.randint(1_000, 400_000)
        body = make_body(vid, size)
        op = self.history.invoke(p, "mpu", key, node, value=vid, size=size)
        completing = False
        try:
            upload = client.create_multipart_upload(Bucket=self.bucket, Key=key,
                                                    Metadata={"op": vid})["UploadId"]
            parts, at = [], 0
            for i, part_size in enumerate(multipart_sizes(size), start=1):
                r = client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload,
                                       PartNumber=i, Body=body[at : at + part_size])
                parts.append({"PartNumber": i, "ETag": r["ETag"]})
                at += part_size
            completing = True
            client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload,
                                             MultipartUpload={"Parts": parts})
        except Exception as exc:  # noqa: BLE001
            if completing:
                return self._finish(op, exc)
            # Only the completion can make the object visible: a failure before it is a
            # certain failure (the open upload is left to the daemon's cleanup).
            self.history.complete(op, "fail", error=classify(exc)[1])
            return None
        self._finish(op, None)

