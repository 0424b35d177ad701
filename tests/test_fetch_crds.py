"""hack/fetch-crds.py against a local mirror: layout, integrity check, the Istio extract."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from conftest import ROOT, need
from crdschema import crds_dir

spec = importlib.util.spec_from_file_location("fetch_crds", ROOT / "hack" / "fetch-crds.py")
fetch_crds = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fetch_crds)


@pytest.fixture
def shared():
    directory = crds_dir()
    need(directory and (directory / "istio").is_dir(), "the upstream CRDs (../shared/crds)")
    return directory


def fake_upstream_istio(networking: bytes) -> bytes:
    """A crd-all.gen.yaml-like file: other CRDs around the three we want."""
    docs = networking.decode().split("---\n")
    other = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {}\nspec: {{}}\n"
    return "---\n".join([other.format("envoyfilters.networking.istio.io"), docs[0], other.format("proxyconfigs.networking.istio.io"),
                         docs[1], docs[2], other.format("workloadentries.networking.istio.io")]).encode()


def serve(httpserver, shared, istio_bytes):
    for local, (path, _) in fetch_crds.FILES.items():
        httpserver.expect_request(f"/{path}").respond_with_data((shared / local).read_bytes())
    httpserver.expect_request(f"/{fetch_crds.ISTIO[0]}").respond_with_data(istio_bytes)


def test_fetches_the_same_files(httpserver, shared, tmp_path, monkeypatch, capsys):
    upstream = fake_upstream_istio((shared / "istio/networking.yaml").read_bytes())
    monkeypatch.setattr(fetch_crds, "ISTIO", (fetch_crds.ISTIO[0], fetch_crds.git_blob_id(upstream)))
    serve(httpserver, shared, upstream)
    monkeypatch.setattr(sys, "argv", ["fetch-crds", "--dest", str(tmp_path), "--mirror", httpserver.url_for("").rstrip("/")])
    assert fetch_crds.main() == 0
    for local in list(fetch_crds.FILES) + [fetch_crds.ISTIO_LOCAL]:
        assert (tmp_path / local).read_bytes() == (shared / local).read_bytes(), local
    assert fetch_crds.main() == 0 and "fetched" not in capsys.readouterr().out.split("CRDs are in")[-1]


def test_a_changed_file_is_an_error(httpserver, shared, tmp_path, monkeypatch, capsys):
    serve(httpserver, shared, b"")
    first = next(iter(fetch_crds.FILES.values()))[0]
    httpserver.clear()
    httpserver.expect_request(f"/{first}").respond_with_data(b"tampered: true\n")
    monkeypatch.setattr(sys, "argv", ["fetch-crds", "--dest", str(tmp_path), "--mirror", httpserver.url_for("").rstrip("/")])
    assert fetch_crds.main() == 1
    assert "is not the pinned upstream file" in capsys.readouterr().err


def test_blob_ids_match_the_shared_copies(shared):
    for local, (_, blob) in fetch_crds.FILES.items():
        assert fetch_crds.git_blob_id((shared / local).read_bytes()) == blob, local
