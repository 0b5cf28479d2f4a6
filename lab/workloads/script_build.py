"""A bring-your-own reproducer on its way into the guest: C compiled statically on the host (cached
by content hash), then the program or shell script packed as base64 chunks of gzip for one agent RUN.

No image rebuild and no file-push frame: the agent's RUN carries an argv of at most 1 MiB, and
Linux takes up to 128 KiB per argument, so the packed bytes travel as several arguments of a
`sh -c` that joins them, decodes (busybox base64, gunzip) and execs the result.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from lab.errors import ConfigError
from lab.paths import cache_dir, images_dir

CFLAGS = ("-static", "-O2", "-s", "-Wall")  # stripped: smaller to push; warnings shown, not fatal
HEADER = "pmemlab-repro.h"
CHUNK = 96 * 1024  # under MAX_ARG_STRLEN (128 KiB)
MAX_PACKED = 900 * 1024  # the agent's RUN payload is at most 1 MiB, argv and all
COMPILE_TIMEOUT_S = 300


def header_dir() -> Path:
    return images_dir() / "guest"


def compiled(source: str, name: str) -> bytes:
    """The static program built from C `source` (cached under the cache dir by the hash of the
    source, the header, the compiler and its flags); ConfigError with gcc's first error otherwise."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ConfigError(f"{name}: a C reproducer needs gcc on this host (apt-get install gcc libc6-dev)")
    version = subprocess.run([gcc, "--version"], capture_output=True, text=True, timeout=30).stdout
    header = (header_dir() / HEADER).read_bytes()
    key = hashlib.sha256("\0".join([source, header.decode(), version, *CFLAGS]).encode()).hexdigest()[:24]
    entry = cache_dir() / "repro" / key
    program = entry / "repro"
    if program.is_file():
        return program.read_bytes()
    entry.mkdir(parents=True, exist_ok=True)
    tmp = entry / f".build-{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    try:
        src = tmp / "repro.c"
        src.write_text(source)
        built = subprocess.run([gcc, *CFLAGS, "-I", str(header_dir()), "-o", str(tmp / "repro"), str(src)],
                               capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        if built.returncode != 0:
            first = next((line for line in built.stderr.splitlines() if "error" in line), built.stderr.strip())
            raise ConfigError(f"{name} does not compile: {first.replace(str(src), name)}")
        (tmp / "repro").rename(program)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return program.read_bytes()


def pack(data: bytes, name: str) -> list[str]:
    """`data` as gzip+base64 argument chunks; ConfigError when it cannot fit one agent RUN."""
    text = base64.b64encode(gzip.compress(data, compresslevel=9, mtime=0)).decode()
    if len(text) > MAX_PACKED:
        raise ConfigError(f"{name}: {len(data)} bytes pack to {len(text)}, more than the {MAX_PACKED} one agent "
                          "RUN carries; make the reproducer smaller")
    return [text[i:i + CHUNK] for i in range(0, len(text), CHUNK)] or [""]


# In the guest: $1 how to run it (c|sh), $2 where to put it, $3 the mark before it starts, $4 its
# argument (the mountpoint), then the chunks. The MARK is the start time offsets count from.
UNPACK_AND_RUN = ('k=$1 t=$2 m=$3 a=$4; shift 4; for c in "$@"; do printf %s "$c"; done | base64 -d | gunzip > "$t" '
                  '|| { echo "pmemlab: unpacking $t failed" >&2; exit 125; }; chmod +x "$t" || exit 125; '
                  '[ -z "$m" ] || pmemlab-event MARK "$m" || exit 125; '
                  'if [ "$k" = sh ]; then exec sh "$t" "$a"; else exec "$t" "$a"; fi')
# In the recovery machine: $1 where to put the check script, $2 the mountpoint, $3 the last durable
# ACK (-1: none), then the chunks.
UNPACK_AND_CHECK = ('t=$1 a=$2 d=$3; shift 3; for c in "$@"; do printf %s "$c"; done | base64 -d | gunzip > "$t" '
                    '|| { echo "pmemlab: unpacking $t failed" >&2; exit 125; }; exec sh "$t" "$a" "$d"')
