"""Build a guest image (kernel + initramfs) into the content-addressed cache.

The image id is a hash of everything that goes in: the recipe, the kernel's
identity, the host binaries and libraries copied, the guest sources and the
compiler. Same inputs, same id; an id already in the cache is not rebuilt.
A build happens in a temporary directory that is renamed into place only
when complete, so an interrupted build leaves no half-written entry.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lab.errors import ImageError
from lab.image import cache as image_cache
from lab.image.kernel import KernelFiles, check_kernel, debian_kernel, file_sha256
from lab.image.kmod import ModuleIndex
from lab.image.libdeps import guest_path, shared_libraries, which
from lab.image.recipe import Recipe, load_recipe

BUILDER_VERSION = "1"
GUEST_DIRS = ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "etc/pmemlab", "proc", "sys", "dev", "tmp", "mnt", "run", "root")
MERGED_LINKS = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
GUEST_CFLAGS = ("-static", "-O2", "-Wall", "-Wextra", "-Werror")


def gcc_argv(source: Path, out: Path, gcc: str = "gcc") -> list[str]:
    """How a guest helper is compiled: static, warnings as errors, and its own directory on the
    include path (for the shared images/guest/pmemlab.h)."""
    return [gcc, *GUEST_CFLAGS, "-I", str(source.parent), "-o", str(out), str(source)]


@dataclass(frozen=True)
class BuildInputs:
    """Everything resolved before building: enough to name the image."""

    recipe: Recipe
    recipe_path: Path
    recipe_bytes: bytes
    kernel: KernelFiles
    host_files: dict[str, Path]  # guest relative path -> host file
    sources: dict[str, Path]  # images/-relative name -> file
    compiler: str

    def image_id(self) -> str:
        digest = hashlib.sha256()
        parts = {
            "builder": BUILDER_VERSION,
            "recipe": hashlib.sha256(self.recipe_bytes).hexdigest(),
            "kernel": self.kernel.identity,
            "host_files": {k: file_sha256(v) for k, v in sorted(self.host_files.items())},
            "sources": {k: file_sha256(v) for k, v in sorted(self.sources.items())},
            "compiler": self.compiler,
        }
        digest.update(json.dumps(parts, sort_keys=True).encode())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class BuildResult:
    image: image_cache.Image
    built: bool  # False when the cache already had it
    seconds: float


def _compiler_identity() -> str:
    try:
        out = subprocess.run(["gcc", "--version"], capture_output=True, text=True, timeout=30).stdout
    except FileNotFoundError:
        raise ImageError("gcc not found: the guest helpers are compiled at image build time (apt-get install gcc libc6-dev)") from None
    return out.splitlines()[0] if out else "gcc"


def resolve_inputs(recipe_path: Path, cache: Path, kernel: KernelFiles | None = None) -> BuildInputs:
    recipe, raw = load_recipe(recipe_path)
    if kernel is None:
        kernel = debian_kernel(recipe.kernel.debian_package, cache)
    check_kernel(kernel)
    host_files: dict[str, Path] = {}
    for name in recipe.userland.binaries:
        binary = which(name)
        host_files[f"usr/bin/{name}"] = binary.resolve()
        for lib in shared_libraries(binary):
            host_files[guest_path(lib)] = lib.resolve()
    for extra in recipe.userland.files:
        path = Path(extra)
        if path.is_file():
            host_files[extra.lstrip("/")] = path
    base = recipe_path.parent
    sources = {recipe.guest.init: base / recipe.guest.init}
    sources.update({src: base / src for src in recipe.guest.programs.values()})
    for name, path in sources.items():
        if not path.is_file():
            raise ImageError(f"{recipe_path}: guest source {name!r} not found at {path}")
    # The headers beside the programs' sources go into the id too: changing one rebuilds the image.
    for directory in sorted({Path(src).parent for src in recipe.guest.programs.values()}):
        for header in sorted((base / directory).glob("*.h")):
            sources[(directory / header.name).as_posix()] = header
    return BuildInputs(recipe, recipe_path, raw, kernel, host_files, sources, _compiler_identity())


def _copy_modules(inputs: BuildInputs, root: Path) -> list[str]:
    kernel = inputs.kernel
    if kernel.moddir is None:
        return []
    index = ModuleIndex.load(kernel.moddir)
    wanted = inputs.recipe.modules.load
    target = root / "usr/lib/modules" / kernel.version
    for rel in index.resolve(wanted):
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(kernel.moddir / rel, dest)
    for meta in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (kernel.moddir / meta).is_file():
            shutil.copy2(kernel.moddir / meta, target / meta)
    # which(): depmod lives in /usr/sbin, which an ordinary user's PATH lacks.
    subprocess.run([str(which("depmod")), "-b", str(root), kernel.version], check=True, capture_output=True, timeout=120)
    return index.load_order(wanted)


def _install_busybox(root: Path) -> None:
    busybox = root / "usr/bin/busybox"
    listing = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, timeout=30)
    if listing.returncode != 0:
        raise ImageError("busybox --list-full failed: install busybox-static")
    for applet in listing.stdout.split():
        rel = guest_path(Path("/" + applet))
        link = root / rel
        if rel == "usr/bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/usr/bin/busybox")


def _compile_programs(inputs: BuildInputs, root: Path, log: Path) -> None:
    base = inputs.recipe_path.parent
    for name, src in inputs.recipe.guest.programs.items():
        out = root / "usr/bin" / name if name != "pmemlab-agent" else root / "usr/sbin" / name
        argv = gcc_argv(base / src, out)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        with log.open("a") as handle:
            handle.write(" ".join(argv) + "\n" + proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise ImageError(f"compiling {src} failed:\n{proc.stderr.strip()}")
    for link, target in inputs.recipe.guest.links.items():
        dest = root / "usr/bin" / link
        real = "/usr/sbin/" + target if target == "pmemlab-agent" else "/usr/bin/" + target
        dest.symlink_to(real)


def _write_cpio(root: Path, out: Path, compression: str) -> None:
    """newc cpio of `root` (sorted, fixed owner/mtime), optionally gzip -1."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    proc = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "--owner", "0:0", "--reproducible"],
                          input="\n".join(["."] + names).encode(), cwd=root, capture_output=True, timeout=300)
    if proc.returncode != 0:
        raise ImageError(f"cpio failed: {proc.stderr.decode(errors='replace').strip()}")
    if compression == "gzip":
        with gzip.GzipFile(out, "wb", compresslevel=1, mtime=0) as handle:
            handle.write(proc.stdout)
    else:
        out.write_bytes(proc.stdout)


def _populate(inputs: BuildInputs, root: Path, log: Path) -> list[str]:
    for rel in GUEST_DIRS:
        (root / rel).mkdir(parents=True, exist_ok=True)
    for link, target in MERGED_LINKS.items():
        (root / link).symlink_to(target)
    for rel, host in sorted(inputs.host_files.items()):
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink():
            dest.unlink()
        shutil.copy2(host, dest)
    _install_busybox(root)
    # Real tools win over busybox applets of the same name.
    for rel, host in inputs.host_files.items():
        if rel.startswith("usr/bin/"):
            for other in ("usr/sbin/", "usr/bin/"):
                alias = root / (other + rel[len("usr/bin/"):])
                if alias.is_symlink() and os.readlink(alias) == "/usr/bin/busybox":
                    alias.unlink()
                    alias.symlink_to("/" + rel)
    _compile_programs(inputs, root, log)
    init = root / "init"
    shutil.copy2(inputs.sources[inputs.recipe.guest.init], init)
    init.chmod(0o755)
    (root / "etc/mtab").symlink_to("/proc/self/mounts")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    modules = _copy_modules(inputs, root)
    (root / "etc/pmemlab/modules").write_text("\n".join(modules) + ("\n" if modules else ""))
    return modules


def build(recipe_path: Path, cache: Path, kernel: KernelFiles | None = None, ref: str | None = None,
          force: bool = False) -> BuildResult:
    """Build (or find) the image for `recipe_path`; point `ref` at it."""
    started = time.monotonic()
    inputs = resolve_inputs(recipe_path, cache, kernel)
    image_id = inputs.image_id()
    ref = ref or (inputs.recipe.name if inputs.kernel.source.startswith("debian:")
                  else f"{inputs.recipe.name}-{inputs.kernel.version}")
    existing = image_cache.find_by_id(cache, image_id)
    if existing is not None and not force:
        image_cache.set_ref(cache, ref, image_id)
        return BuildResult(existing, built=False, seconds=time.monotonic() - started)

    images = cache / "images"
    images.mkdir(parents=True, exist_ok=True)
    staging = images / f".tmp-{image_id}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        root = staging / "root"
        root.mkdir(parents=True)
        log = staging / "build.log"
        modules = _populate(inputs, root, log)
        initramfs_name = "initramfs.cpio.gz" if inputs.recipe.initramfs.compression == "gzip" else "initramfs.cpio"
        _write_cpio(root, staging / initramfs_name, inputs.recipe.initramfs.compression)
        shutil.copy2(inputs.kernel.vmlinuz, staging / "vmlinuz")
        if inputs.kernel.config is not None:
            shutil.copy2(inputs.kernel.config, staging / "config")
        shutil.rmtree(root)
        manifest = {
            "id": image_id,
            "recipe": inputs.recipe.name,
            "recipe_path": str(recipe_path),
            "kernel_version": inputs.kernel.version,
            "kernel_source": inputs.kernel.source,
            "modules": modules,
            "binaries": inputs.recipe.userland.binaries,
            "programs": sorted(inputs.recipe.guest.programs),
            "initramfs": initramfs_name,
            "initramfs_bytes": (staging / initramfs_name).stat().st_size,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        final = images / image_id
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    image_cache.set_ref(cache, ref, image_id)
    image = image_cache.find_by_id(cache, image_id)
    assert image is not None
    return BuildResult(image, built=True, seconds=time.monotonic() - started)
