"""Build hook: generate the gRPC/protobuf Python modules from gifee's own .proto files.

The generated *_pb2*.py files are build products (git ignores them); every build,
editable or not, writes them next to the .proto files before packaging.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "src"
PROTO_DIR = SRC / "gifee" / "store" / "proto"


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


setup(cmdclass={"build_py": BuildPyWithProtos})
