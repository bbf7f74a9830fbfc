"""Packaging facts users rely on: the version, the typing marker, the
protobuf file names the stubs register, and that the committed stubs, the
dependency floors in both pyprojects and the lowest-versions CI pin agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cluster import REPO
from google.protobuf import descriptor_pool

import d_engine as dengine
from d_engine import _embedded
from d_engine._proto.dengine.v1 import client_pb2 as pb
from d_engine._proto.dengine.v1 import client_pb2_grpc as rpc

PY = REPO / "clients" / "python"


def _floors(pyproject: Path) -> dict:
    text = pyproject.read_text()
    deps = text[text.index("dependencies = [") :]
    deps = deps[: deps.index("]")]
    return dict(re.findall(r'"([A-Za-z0-9_.-]+)>=([0-9.]+),<[0-9.]+"', deps))


def test_version_matches_the_cargo_workspace():
    cargo = (REPO / "Cargo.toml").read_text()
    ws = re.search(r'\[workspace\.package\][^\[]*?\nversion = "([^"]+)"', cargo)
    assert ws, "no [workspace.package] version in Cargo.toml"
    assert dengine.__version__ == ws.group(1)
    if dengine.EMBEDDED_AVAILABLE:
        assert _embedded._native.__version__ == dengine.__version__


def test_the_package_is_marked_typed():
    assert (Path(dengine.__file__).parent / "py.typed").is_file()


def test_stubs_register_under_the_proto_package_path():
    pool = descriptor_pool.Default()
    assert pool.FindFileByName("dengine/v1/client.proto").package == "dengine.v1"
    with pytest.raises(KeyError):
        pool.FindFileByName("client.proto")
    assert pb.DESCRIPTOR.name == "dengine/v1/client.proto"
    assert pb.PutRequest.__module__ == "d_engine._proto.dengine.v1.client_pb2"
    assert pool.FindMessageTypeByName("dengine.v1.PutRequest") is pb.PutRequest.DESCRIPTOR


def test_stubs_were_generated_for_the_lowest_allowed_runtime():
    floors = _floors(PY / "pyproject.toml")
    assert set(floors) == {"grpcio", "protobuf", "googleapis-common-protos"}, floors
    assert _floors(PY / "client-only" / "pyproject.toml") == floors, "the two pyprojects' ranges differ"
    gencode = re.search(r"# Protobuf Python Version: ([0-9.]+)", Path(pb.__file__).read_text())
    assert gencode and gencode.group(1) == floors["protobuf"]
    assert rpc.GRPC_GENERATED_VERSION == floors["grpcio"]
    tools = (PY / "scripts" / "stub-tools.txt").read_text()
    assert f"grpcio-tools=={floors['grpcio']}" in tools
    lowest = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([0-9.]+)$", (PY / "scripts" / "lowest-deps.txt").read_text(), re.M))
    assert lowest == floors


def test_without_the_engine_embedded_use_raises_a_clear_import_error(monkeypatch, tmp_path):
    monkeypatch.setattr(_embedded, "_native", None)
    with pytest.raises(ImportError, match=r"needs the d-engine engine.*abi3 wheel") as info:
        dengine.EmbeddedEngine.start(tmp_path / "data")
    assert info.value.name == "d_engine._native"
    # The gRPC clients do not need it.
    dengine.Client("127.0.0.1:1").close()
