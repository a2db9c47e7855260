"""Build hook: compile the project's own protos with grpcio-tools.

The generated modules land next to their package (authz/admin/v1/) and are not
committed; Envoy's API comes from the xds-protos package instead.
"""

from __future__ import annotations

import pathlib

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).parent


def compile_protos() -> None:
    import grpc_tools
    from grpc_tools import protoc

    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    for proto in protos:
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{ROOT / 'protos'}",
                f"-I{include}",
                f"--python_out={ROOT}",
                f"--pyi_out={ROOT}",
                f"--grpc_python_out={ROOT}",
                proto,
            ]
        )
        if rc != 0:
            raise SystemExit(f"protoc failed on protos/{proto}")


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        compile_protos()
        super().run()


if __name__ == "__main__":
    setup(cmdclass={"build_py": BuildPyWithProtos})
