"""Where the dashboard's artifacts live: a folder, or an S3-compatible bucket, as Optuna keeps them.

A folder (`optuna.artifacts.FileSystemArtifactStore`) is seen only by the processes that mount
it; a bucket (`optuna.artifacts.Boto3ArtifactStore`, credentials and endpoint from the standard
AWS variables, ``AWS_ENDPOINT_URL`` included) by every host that reaches it. The bucket is
probed once when it is opened, so a wrong bucket, endpoint or missing credentials is one line
before any trial runs, not a warning per promotion. boto3 is imported only here, and only for a
bucket: ``import sweep`` and the CLI's start-up never load it.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import optuna
from optuna.trial import FrozenTrial

from sweep.errors import PublishError, SweepError, first_line
from sweep.search import record_artifact
from sweep.settings import ArtifactPlace, S3Location, parse_artifact_place

__all__ = [
    "ArtifactStore",
    "PrefixedS3Store",
    "artifact_place",
    "attach_artifact",
    "open_artifact_store",
    "open_s3_store",
    "writable_folder",
]

# Every S3 call is bounded: a black-holed endpoint costs seconds, not botocore's default minutes.
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 30.0
MAX_ATTEMPTS = 3


class ArtifactStore(Protocol):
    """Optuna's artifact store protocol (``optuna.artifacts``): what optuna-dashboard reads."""

    def open_reader(self, artifact_id: str) -> BinaryIO: ...

    def write(self, artifact_id: str, content_body: BinaryIO) -> None: ...

    def remove(self, artifact_id: str) -> None: ...


class PrefixedS3Store:
    """`optuna.artifacts.Boto3ArtifactStore` under a key prefix (``PREFIX/<artifact id>``).

    Optuna's store puts every artifact at the bucket's top level; a prefix lets one bucket hold
    several campaigns or deployments. With no prefix the keys are Optuna's own, so a stock
    optuna-dashboard configured with ``[artifact_store.boto3] bucket_name`` reads them too.
    """

    def __init__(self, location: S3Location, client: Any) -> None:
        self.location = location
        self._store = optuna.artifacts.Boto3ArtifactStore(location.bucket, client)

    def _key(self, artifact_id: str) -> str:
        prefix = self.location.prefix
        return f"{prefix}/{artifact_id}" if prefix else artifact_id

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._store.open_reader(self._key(artifact_id))

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._store.write(self._key(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        self._store.remove(self._key(artifact_id))


def artifact_place(place: str | os.PathLike[str] | ArtifactPlace) -> ArtifactPlace:
    """A folder or a bucket from what a caller passed (text is parsed as ``SWEEP_ARTIFACTS``)."""
    if isinstance(place, S3Location | Path):
        return place
    return parse_artifact_place(os.fspath(place), "artifacts")


def writable_folder(folder: Path) -> Path:
    """Create the artifact folder if needed and prove it takes a file.

    Checked first, so an unwritable folder costs one clear warning and no half-done work.

    Raises:
        PublishError: the folder cannot be created or written.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".sweep-probe-"):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise PublishError(f"artifact folder {str(folder)!r} is not writable: {reason}") from None
    return folder


# One probed client per bucket and process: a promotion reuses it (boto3 clients are
# thread-safe), and a worker probes once, at start.
_opened: dict[S3Location, PrefixedS3Store] = {}
_opening = threading.Lock()


def open_s3_store(location: S3Location, error: type[SweepError]) -> PrefixedS3Store:
    """A store on `location`'s bucket, checked to exist and to answer with these credentials.

    Raises:
        error: boto3 is not installed, the endpoint is unreachable or not a URL, there are no
            credentials, they are refused, or the bucket does not exist (one line each).
    """
    with _opening:
        if location in _opened:
            return _opened[location]
        store = PrefixedS3Store(location, _probed_client(location, error))
        _opened[location] = store
        return store


def _probed_client(location: S3Location, error: type[SweepError]) -> Any:
    try:
        import boto3
        import botocore.config
        import botocore.exceptions as failures
    except ImportError:
        raise error(
            f"artifacts in {location} need boto3; pip install 'neural-arithmetic-sweep[s3]'"
        ) from None
    config = botocore.config.Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
    )
    try:
        client = boto3.session.Session().client("s3", config=config)
    except (ValueError, failures.BotoCoreError) as e:  # AWS_ENDPOINT_URL that is not a URL, ...
        raise error(f"cannot open artifacts in {location}: {first_line(e)}") from None
    endpoint = client.meta.endpoint_url
    try:
        client.head_bucket(Bucket=location.bucket)
    except failures.NoCredentialsError:
        raise error(
            f"artifacts in {location}: no AWS credentials; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        ) from None
    except (failures.EndpointConnectionError, failures.ConnectTimeoutError,
            failures.ReadTimeoutError) as e:
        raise error(
            f"artifacts in {location}: cannot reach the S3 endpoint {endpoint} "
            f"({type(e).__name__}); check AWS_ENDPOINT_URL"
        ) from None
    except failures.ClientError as e:
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = e.response.get("Error", {}).get("Code", "")
        if status == 404 or code in ("404", "NoSuchBucket"):
            raise error(
                f"artifacts in {location}: bucket {location.bucket!r} does not exist at "
                f"{endpoint}; create it first"
            ) from None
        if status == 403 or code in ("403", "AccessDenied"):
            raise error(
                f"artifacts in {location}: access denied to bucket {location.bucket!r} at "
                f"{endpoint}; check the AWS credentials"
            ) from None
        raise error(f"artifacts in {location}: {code or status}: {first_line(e)}") from None
    except failures.BotoCoreError as e:
        raise error(f"artifacts in {location} at {endpoint}: {first_line(e)}") from None
    return client


def open_artifact_store(
    place: ArtifactPlace, error: type[SweepError], *, create: bool
) -> ArtifactStore:
    """The store for a folder (created and probed if `create`, else it must exist) or a bucket.

    Raises:
        error: As `open_s3_store`, or the folder is missing (without `create`) or unwritable.
    """
    if isinstance(place, S3Location):
        return open_s3_store(place, error)
    if create:
        try:
            writable_folder(place)
        except PublishError as e:
            raise error(str(e)) from None
    elif not place.is_dir():
        raise error(f"artifact folder {str(place)!r} does not exist")
    return optuna.artifacts.FileSystemArtifactStore(place)


def attach_artifact(
    store: ArtifactStore,
    path: Path,
    target: FrozenTrial | optuna.Study,
    storage: optuna.storages.BaseStorage,
) -> None:
    """`optuna.artifacts.upload_artifact` in the safe order: the whole file, then its record.

    Optuna records an artifact before it writes the file, so a disk that fills up mid-write
    (or a bucket that goes away) leaves the dashboard listing half a file. Here a failed write
    is removed and never recorded.
    """
    artifact_id = str(uuid.uuid4())
    try:
        with path.open("rb") as handle:
            store.write(artifact_id, handle)
    except BaseException:
        with contextlib.suppress(Exception):
            store.remove(artifact_id)
        raise
    mimetype, encoding = mimetypes.guess_type(path.name)
    record_artifact(
        target,
        storage,
        artifact_id=artifact_id,
        filename=path.name,
        mimetype=mimetype or "application/octet-stream",
        encoding=encoding,
    )
