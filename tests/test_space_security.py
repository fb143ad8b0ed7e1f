"""The Space strangers cannot steer, through its HTTP API (no browser): the owner's model allow-list,
upload caps, types and counts, the content cache of uploads, and the load test's small version."""

import importlib.util
import socket
from pathlib import Path

import pytest

from hf_hybrid.errors import SpaceError
from hf_hybrid.models.encoder import Encoder
from hf_hybrid.space import app as space_app
from hf_hybrid.space import corpus, search

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def space(tiny_model_dir):
    """The Space with the tiny model on loopback, and a gradio_client session on it."""
    pytest.importorskip("faiss", reason="faiss is not installed (pip install -e '.[faiss]')")
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[space]')")
    from gradio_client import Client

    port = _free_port()
    app = space_app.serve(str(tiny_model_dir), host="127.0.0.1", port=port, block=False)
    url = f"http://127.0.0.1:{port}/"
    try:
        yield url, Client(url, verbose=False)
    finally:
        app.close()


def _upload(client, *paths):
    from gradio_client import handle_file

    return client.predict([handle_file(str(p)) for p in paths], api_name="/on_upload")


def test_models_outside_the_allow_list_are_refused_alike(space, tmp_path, monkeypatch):
    _, client = space
    loads = []
    monkeypatch.setattr(Encoder, "from_pretrained", classmethod(lambda cls, *a, **kw: loads.append(a)))
    existing, missing = tmp_path / "a-real-folder", tmp_path / "no-such-folder"
    existing.mkdir()
    (existing / "config.json").write_text("{}", encoding="utf-8")
    replies = [client.predict(str(path), None, api_name="/on_load")[0] for path in (existing, missing)]
    assert str(existing) in replies[0] and "not offered here" in replies[0]
    assert replies[0].replace(str(existing), "X") == replies[1].replace(str(missing), "X")
    hub = client.predict("someone/any-model", None, api_name="/on_load")[0]
    assert hub.replace("someone/any-model", "X") == replies[1].replace(str(missing), "X")
    assert loads == []  # refused before any file or Hub lookup
    assert client.predict("Nile", 3, api_name="/on_search")[0].startswith("Searched")  # still serving


def test_allowed_models_come_from_the_owner():
    assert space_app.allowed_models(["a", "b"], ["c", "a", " "]) == ["a", "b", "c"]
    assert search.choose_models("c", None, ["a"]) == ([], "model 'c' is not offered here; this Space serves a")


def test_too_large_upload_is_refused_before_the_event(space, tmp_path):
    import httpx

    url, _ = space
    big = b"x\n" * (corpus.MAX_UPLOAD_BYTES // 2 + 1)
    reply = httpx.post(url + "gradio_api/upload", files=[("files", ("big.txt", big, "text/plain"))], timeout=60)
    assert reply.status_code == 413 and "maximum allowed size" in reply.text


def test_an_upload_request_larger_than_the_files_allowed_is_refused_before_it_is_read(space):
    import httpx

    url, _ = space
    cap = corpus.MAX_UPLOAD_REQUEST_BYTES
    host, port = url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as conn:  # the headers alone: no body is sent
        conn.sendall(f"POST /gradio_api/upload HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; "
                     f"boundary=x\r\nContent-Length: {cap + 1}\r\n\r\n".encode())
        reply = b""
        while b"an upload request may hold at most" not in reply and (chunk := conn.recv(4096)):
            reply += chunk  # the status line and the body may come in separate packets
    assert reply.startswith(b"HTTP/1.1 413") and b"an upload request may hold at most" in reply
    small = httpx.post(url + "gradio_api/upload", files=[("files", ("ok.txt", b"a passage\n", "text/plain"))],
                       timeout=60)
    assert small.status_code == 200  # an ordinary upload still goes through


def test_shell_script_upload_is_refused(space, tmp_path):
    from gradio_client.exceptions import AppError

    _, client = space
    (tmp_path / "evil.sh").write_text("echo pwned\n", encoding="utf-8")
    with pytest.raises(AppError, match="Invalid file type"):
        _upload(client, tmp_path / "evil.sh")
    with pytest.raises(SpaceError, match="unsupported file type .sh"):  # and again by the Space itself
        corpus.upload_collection([tmp_path / "evil.sh"])


def test_too_many_files_are_refused(space, tmp_path):
    _, client = space
    paths = []
    for i in range(corpus.MAX_UPLOAD_FILES + 1):
        paths.append(tmp_path / f"p{i}.en.txt")
        paths[-1].write_text(f"passage number {i}\n", encoding="utf-8")
    status = _upload(client, *paths)[0]
    assert status.startswith(f"{len(paths)} files uploaded; at most {corpus.MAX_UPLOAD_FILES}")


def test_repeated_upload_is_not_encoded_again(space, tmp_path, monkeypatch):
    _, client = space
    encoded = []
    encode = Encoder.encode

    def counting(self, texts, kind="passage", *a, **kw):
        encoded.append((kind, len(texts)))
        return encode(self, texts, kind, *a, **kw)

    monkeypatch.setattr(Encoder, "encode", counting)
    text = "Mto Nile ni mrefu kuliko yote.\nNairobi ni mji mkuu wa Kenya.\nZanzibar ni kisiwa.\n"
    for name in ("mine.sw.txt", "again.sw.txt"):
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert _upload(client, tmp_path / "mine.sw.txt")[0] == "Now searching mine.sw.txt."
    assert encoded == [("passage", 3)]
    assert _upload(client, tmp_path / "again.sw.txt")[0] == "Now searching again.sw.txt."
    assert encoded == [("passage", 3)]  # same content, same index: nothing encoded
    assert client.predict("Zanzibar ni kisiwa.", 3, api_name="/on_search")[0] == "Searched 3 passages of again.sw.txt."
    assert encoded == [("passage", 3), ("query", 1)]


def test_small_load_all_answered(tiny_model_dir):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[space]')")
    spec = importlib.util.spec_from_file_location("space_load", ROOT / "benchmarks" / "space_load.py")
    space_load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(space_load)
    summary = space_load.main(["--model", str(tiny_model_dir), "--xquad-r", "", "--clients", "3", "--queries", "3",
                               "--timeout", "240"])
    assert summary["answered"] == 9 and summary["failed"] == 0
    assert summary["peak_rss_mb"] > 0 and summary["p99_ms"] >= summary["p50_ms"] > 0


def test_allow_models_from_the_command_line_or_the_environment(monkeypatch):
    import argparse

    monkeypatch.setenv("HF_HYBRID_ALLOW_MODELS", "org/model-a  ./local-b")
    parser = argparse.ArgumentParser()
    space_app.add_run_arguments(parser)
    assert parser.parse_args([]).allow_models == ["org/model-a", "./local-b"]
    assert parser.parse_args(["--allow-models", "x", "y"]).allow_models == ["x", "y"]
