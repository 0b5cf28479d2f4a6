"""Mutual TLS for the clusters `pmemlab cluster up` starts: who may join the scheduler or submit to it.

A Dask scheduler runs whatever its clients submit on its workers. Listening on a lab network (or on
127.0.0.1, where every local user reaches it) without credentials, it would run anyone's code as the
lab user. So `cluster up` makes one self-signed key and certificate per cluster (distributed's
Security.temporary), kept in one PEM file, mode 0600, in the cluster's directory. The scheduler, each
worker and each client present it and accept only peers that present it (require_encryption: no
plain-TCP fallback). A remote worker gets its copy over SSH (verified host key) into its workdir,
mode 0600, removed when the worker is stopped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from lab.errors import ConfigError
from lab.paths import data_dir

if TYPE_CHECKING:
    from distributed.security import Security

CREDENTIALS_ENV = "PMEMLAB_CLUSTER_TLS"  # a tls:// cluster's PEM file, where it is not the data directory's
SCHEME = "tls://"
_BLOCK = re.compile(r"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----\n?", re.S)


def default_path() -> Path:
    """Where `cluster up` keeps its cluster's credentials (beside its state file)."""
    return data_dir() / "cluster" / "tls.pem"


def create(path: Path) -> bytes:
    """New credentials (certificate and key, PEM) written to `path`, readable by this user only."""
    from distributed.security import Security

    made = Security.temporary()
    pem = (str(made.tls_scheduler_cert) + str(made.tls_scheduler_key)).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # O_EXCL below: never write through a file or link left there
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return pem


def security(path: Path) -> Security:
    """The distributed Security of the credentials in `path`: this certificate, trusting only itself."""
    from distributed.security import Security

    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the cluster's TLS credentials: {exc.strerror or exc}") from None
    blocks = {m.group(1): m.group(0) for m in _BLOCK.finditer(text)}
    cert, key = blocks.get("CERTIFICATE"), blocks.get("PRIVATE KEY")
    if cert is None or key is None:
        raise ConfigError(f"{path}: not a cluster's TLS credentials (expected a PEM CERTIFICATE and PRIVATE KEY, "
                          "as 'pmemlab cluster up' writes)")
    return Security(require_encryption=True, tls_ca_file=cert,
                    tls_client_cert=cert, tls_client_key=key,
                    tls_scheduler_cert=cert, tls_scheduler_key=key,
                    tls_worker_cert=cert, tls_worker_key=key)


def credentials_for(address: str, given: Path | None = None) -> Path | None:
    """The credentials file to reach `address` with: None for a plain tcp:// scheduler (one the user runs);
    for tls://, `given`, else PMEMLAB_CLUSTER_TLS, else the data directory's cluster's."""
    if not address.startswith(SCHEME):
        return None
    path = given or Path(os.environ.get(CREDENTIALS_ENV) or default_path())
    if not path.is_file():
        raise ConfigError(f"{address} is a TLS scheduler and {path} does not exist: give its cluster's credentials "
                          f"(the tls.pem 'pmemlab cluster up' wrote) with {CREDENTIALS_ENV}=FILE")
    return path


def security_for(address: str, given: Path | None = None) -> Security | None:
    path = credentials_for(address, given)
    return None if path is None else security(path)
