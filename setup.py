"""Build hook: generate the gRPC/protobuf modules, and compile the store's hot path with mypyc.

The generated *_pb2*.py files are build products (git ignores them); every build,
editable or not, writes them next to the .proto files before packaging.

The modules listed in `gifee.compiled.MODULES` are compiled to C extensions by mypyc
(part of mypy, a build requirement). An editable install builds them beside their
sources, and records the SHA-256 of each source it compiled (gifee/compiled.<ABI>.json), so
that `gifee.compiled` runs from source whatever no longer matches.
`GIFEE_PURE_PYTHON=1` at build time skips the compilation (and at run time ignores it).
"""

import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "src"
PROTO_DIR = SRC / "gifee" / "store" / "proto"
COMPILED = runpy.run_path(str(SRC / "gifee" / "compiled.py"))  # MODULES and the manifest's helpers
BUILT_FROM: dict[str, str] = {}  # module -> SHA-256 of the source given to mypyc


def generate_protos() -> None:
    from grpc_tools import protoc  # build-time requirement

    protos = sorted(str(p.relative_to(SRC)) for p in PROTO_DIR.glob("*.proto"))
    args = ["protoc", f"-I{SRC}", f"--python_out={SRC}", f"--grpc_python_out={SRC}", f"--pyi_out={SRC}", *protos]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on " + " ".join(protos))


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        generate_protos()
        super().run()


class BuildExtWithManifest(build_ext):
    """Compile, then record which sources the extensions were built from (gifee/compiled.<ABI>.json)."""

    def run(self) -> None:
        super().run()
        if self.extensions:
            package_dir = SRC / "gifee" if self.inplace else Path(self.build_lib) / "gifee"
            package_dir.mkdir(parents=True, exist_ok=True)
            COMPILED["write_manifest"](package_dir, BUILT_FROM)


def compiled_extensions() -> list:
    if COMPILED["pure_python_requested"]():
        # Extensions left in place by an earlier build lose their record, so they count as stale.
        (SRC / "gifee" / COMPILED["MANIFEST"]).unlink(missing_ok=True)
        return []
    from mypyc.build import mypycify  # build-time requirement

    generate_protos()  # mypy reads the generated modules' types while it compiles
    modules = COMPILED["MODULES"]
    # Taken before mypyc reads the sources: an edit during the build leaves them stale, not recorded.
    BUILT_FROM.update(COMPILED["source_digests"](modules, SRC))
    paths = [str(Path("src", *m.split(".")).with_suffix(".py")) for m in modules]
    # The build's environment has only the build requirements: the runtime libraries and their stubs
    # are absent, so their types are Any here. Type checking proper is the test command's (strict).
    flags = ["--config-file=", "--ignore-missing-imports"]
    return mypycify([*flags, *paths], opt_level="3", group_name="gifee_store", target_dir="build/mypyc")


setup(
    cmdclass={"build_py": BuildPyWithProtos, "build_ext": BuildExtWithManifest},
    ext_modules=compiled_extensions(),
)
