"""Dataset upload over HTTP: the real hymenoptera archive, and every refusal with its status code."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.formats import FORMAT_FILE
from core.settings import Settings
from service.http.app import create_app
from tests.dataset_store.datasets_kit import (
    class_files,
    make_tar,
    make_zip,
    photo,
    tar_member,
    tar_raw_names,
    zip_bomb,
    zip_raw_names,
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("datasets-home")


@pytest.fixture(scope="module")
def client(home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(home=home, max_upload_bytes=80 * 1024 * 1024))) as c:
        yield c


@pytest.fixture(scope="module")
def hymenoptera_zip(tmp_path_factory: pytest.TempPathFactory, hymenoptera: Path) -> bytes:
    """The committed ants/bees folder zipped as users make it: wrapped in its folder, stored (JPEGs don't shrink)."""
    path = tmp_path_factory.mktemp("zips") / "hymenoptera.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for file in sorted(hymenoptera.rglob("*")):
            if file.is_file():
                zf.write(file, f"hymenoptera/{file.relative_to(hymenoptera).as_posix()}")
    return path.read_bytes()


def _upload(client: TestClient, data: bytes, filename: str = "data.zip", **form: str):  # type: ignore[no-untyped-def]
    return client.post("/v1/datasets", files={"file": (filename, data, "application/octet-stream")}, data=form)


def _clean(home: Path) -> None:
    """No temp folder or temp upload survives a request, whatever its outcome."""
    assert list((home / "work" / "uploads").iterdir()) == []
    assert [p.name for p in (home / "datasets").iterdir() if p.name.startswith(".")] == []


def test_hymenoptera_upload_keeps_its_split(client: TestClient, home: Path, hymenoptera_zip: bytes) -> None:
    resp = _upload(client, hymenoptera_zip, "hymenoptera.zip")
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["name"] == "hymenoptera" and body["classes"] == ["ants", "bees"]
    assert body["split_source"] == "archive" and body["layout"] == "split_folders"
    assert body["counts"] == {"train": {"ants": 44, "bees": 40}, "val": {"ants": 25, "bees": 25}}
    assert body["num_files"] == 134 and "files" not in body
    # Nothing rejected but the two non-image files beside the splits, each with its reason.
    assert [p["path"] for p in body["problems"]] == ["hymenoptera/SHA256SUMS", "hymenoptera/SOURCE.md"]
    assert all("not inside a class folder" in p["problem"] for p in body["problems"])
    # What is odd about it: the GIF placeholder among JPEGs, and one very wide photo.
    assert any("GIF" in w and "train/ants/imageNotFound.gif" in w for w in body["warnings"])
    assert any("3:1" in w and "662541407_ff8db781e7.jpg" in w for w in body["warnings"])
    stored = home / "datasets" / body["id"]
    assert len(list((stored / "images" / "val" / "bees").iterdir())) == 25
    assert (stored / "images" / "train" / "ants" / "ant photos.jpg").is_file()  # the name with a space
    _clean(home)

    listed = client.get("/v1/datasets").json()
    assert [d["id"] for d in listed] == [body["id"]] and listed[0]["num_files"] == 134
    report = client.get(f"/v1/datasets/{body['id']}").json()
    assert report == body
    with_files = client.get(f"/v1/datasets/{body['id']}", params={"files": "true"}).json()
    assert len(with_files["files"]) == 134

    again = _upload(client, hymenoptera_zip, "renamed.zip", name="another name")
    assert again.status_code == 200 and again.json()["id"] == body["id"] and again.json()["name"] == "hymenoptera"
    assert len(client.get("/v1/datasets").json()) == 1
    _clean(home)


def test_delete_asks_the_in_use_hook(client: TestClient, home: Path) -> None:
    created = _upload(client, make_zip_bytes(class_files({"a": 5, "b": 5}, seed=42)), name="to delete")
    assert created.status_code == 201 and created.json()["name"] == "to delete"
    ds_id = created.json()["id"]
    app_state = client.app.state  # type: ignore[attr-defined]
    original = app_state.dataset_in_use
    app_state.dataset_in_use = lambda dataset_id: dataset_id == ds_id
    try:
        resp = client.delete(f"/v1/datasets/{ds_id}")
        assert resp.status_code == 409 and "used by a job" in resp.json()["detail"]
    finally:
        app_state.dataset_in_use = original
    assert client.delete(f"/v1/datasets/{ds_id}").status_code == 204
    assert client.get(f"/v1/datasets/{ds_id}").status_code == 404
    assert client.delete(f"/v1/datasets/{ds_id}").status_code == 404
    assert client.get("/v1/datasets/..%2F..%2Fetc").status_code == 404


def make_zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar_bytes(tmp_path: Path, files: dict[str, bytes], extra: list[tarfile.TarInfo]) -> bytes:
    return make_tar(tmp_path / "x.tar.gz", files, extra=extra).read_bytes()


@pytest.mark.parametrize(("case", "status", "words"), [
    ("zip_slip", 400, "'../../outside.jpg' climbs out"),
    ("tar_symlink", 400, "'bees/link.jpg' is a symbolic link"),
    ("zip_bomb", 413, "zip bomb"),
    ("not_archive", 415, ".zip, .tar or .tar.gz"),
    ("one_class", 422, "only one class ('ants')"),
    ("three_images", 422, "'bees' has 3"),
])
def test_refusals(client: TestClient, home: Path, tmp_path: Path, case: str, status: int, words: str) -> None:
    base = class_files({"ants": 5, "bees": 5}, seed=7)
    data = {
        "zip_slip": lambda: make_zip_bytes({**base, "../../outside.jpg": photo(1)}),
        "tar_symlink": lambda: _tar_bytes(tmp_path, base, [tar_member("bees/link.jpg", tarfile.SYMTYPE, "/etc")]),
        "zip_bomb": lambda: zip_bomb(tmp_path / "bomb.zip", mib=40).read_bytes(),
        "not_archive": lambda: photo(3, fmt="PNG"),
        "one_class": lambda: make_zip_bytes(class_files({"ants": 6})),
        "three_images": lambda: make_zip(tmp_path / "t.zip", class_files({"ants": 5, "bees": 3})).read_bytes(),
    }[case]()
    before = sorted(p.name for p in (home / "datasets").iterdir())
    resp = _upload(client, data)
    assert resp.status_code == status, resp.text
    assert words in resp.json()["detail"]
    assert sorted(p.name for p in (home / "datasets").iterdir()) == before
    assert not (home.parent / "outside.jpg").exists()
    _clean(home)


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_names_that_are_not_utf8_are_decoded_and_said(client: TestClient, home: Path, tmp_path: Path,
                                                      kind: str) -> None:
    """A tar from a latin-1 system, a zip from an old Windows tool (cp437, no UTF-8 flag): stored, not a 500."""
    encoding, build = {"tar": ("latin-1", tar_raw_names), "zip": ("cp437", zip_raw_names)}[kind]
    files = {name.replace("ants", "fourmis_é").encode(encoding): data
             for name, data in class_files({"ants": 5, "bees": 5}, seed=11 if kind == "tar" else 12).items()}
    resp = _upload(client, build(tmp_path / f"legacy.{kind}", files).read_bytes(), f"legacy.{kind}")
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["classes"] == ["bees", "fourmis_é"] and body["problems"] == []
    assert any("5 name(s) in the archive are not UTF-8" in w and "fourmis_é/fourmis_é_000.jpg" in w
               for w in body["warnings"]), body["warnings"]
    listed = client.get(f"/v1/datasets/{body['id']}", params={"files": "true"}).json()
    assert sorted({f["label"] for f in listed["files"]}) == ["bees", "fourmis_é"]
    _clean(home)


def test_zip_flagged_utf8_that_is_not_is_refused_with_400(client: TestClient, home: Path, tmp_path: Path) -> None:
    files = {name.encode(): data for name, data in class_files({"ants": 5, "bees": 5}, seed=13).items()}
    files[b"ants/\xff.jpg"] = photo(5)
    resp = _upload(client, zip_raw_names(tmp_path / "lies.zip", files, utf8_flag=True).read_bytes())
    assert resp.status_code == 400 and "not UTF-8" in resp.json()["detail"]
    _clean(home)


def test_bad_requests(client: TestClient, home: Path) -> None:
    resp = client.post("/v1/datasets", content=b"PK\x03\x04", headers={"content-type": "application/zip"})
    assert resp.status_code == 415 and "multipart/form-data" in resp.json()["detail"]
    resp = client.post("/v1/datasets", data={"name": "x"}, files={"other": ("a.txt", b"hi", "text/plain")})
    assert resp.status_code == 422 and "'file' is required" in resp.json()["detail"]
    resp = _upload(client, b"")
    assert resp.status_code == 400 and "empty" in resp.json()["detail"]
    two = [("file", ("a.zip", b"PK", "application/zip")), ("file", ("b.zip", b"PK", "application/zip"))]
    resp = client.post("/v1/datasets", files=two)
    assert resp.status_code == 400 and "one archive per upload" in resp.json()["detail"]
    _clean(home)


def _multipart(archive: bytes, boundary: str = "tuneservetestboundary") -> tuple[bytes, str]:
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\n"
            "Content-Type: application/zip\r\n\r\n").encode()
    return head + archive + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _post_chunked(client: TestClient, body: bytes, content_type: str, chunk: int = 4096) -> tuple[int, bytes]:
    """Drive the ASGI app with a body in many messages and no Content-Length, as a streaming client does
    (TestClient itself always delivers the body in one message)."""
    scope = {"type": "http", "http_version": "1.1", "method": "POST", "path": "/v1/datasets",
             "raw_path": b"/v1/datasets", "root_path": "", "scheme": "http", "query_string": b"",
             "headers": [(b"host", b"testserver"), (b"content-type", content_type.encode()),
                         (b"transfer-encoding", b"chunked")],
             "client": ("test", 1), "server": ("test", 80), "state": {}}
    pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)]
    sent: list[dict] = []  # type: ignore[type-arg]

    async def receive() -> dict:  # type: ignore[type-arg]
        if pieces:
            return {"type": "http.request", "body": pieces.pop(0), "more_body": bool(pieces)}
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        sent.append(message)

    client.portal.call(client.app, scope, receive, send)  # type: ignore[union-attr, arg-type, call-arg]
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_streamed_upload_over_the_limit_or_cut_short_leaves_nothing(tmp_path: Path) -> None:
    archive = make_zip_bytes(class_files({"ants": 30, "bees": 30}))
    with TestClient(create_app(Settings(home=tmp_path, max_upload_bytes=20_000))) as small:
        resp = _upload(small, archive)  # refused on Content-Length alone
        assert resp.status_code == 413 and "over the limit" in resp.json()["detail"]
        body, ctype = _multipart(archive)
        status, text = _post_chunked(small, body, ctype)  # refused mid-stream, after the file was started
        assert status == 413 and b"over the limit" in text
        assert (tmp_path / "work" / "uploads").is_dir()
        status, text = _post_chunked(small, body[:15_000], ctype)  # the client stops inside the file
        assert status == 400 and b"ended before the file part was complete" in text
    assert [p.name for p in (tmp_path / "datasets").iterdir()] == [FORMAT_FILE]  # the format stamp alone
    assert list((tmp_path / "work" / "uploads").iterdir()) == []  # partial uploads were removed


def test_streamed_upload_is_stored(client: TestClient, home: Path) -> None:
    body, ctype = _multipart(make_zip_bytes(class_files({"ants": 5, "bees": 5}, seed=99)))
    status, text = _post_chunked(client, body, ctype, chunk=1000)
    assert status == 201, text
    _clean(home)


def test_start_sweeps_partial_uploads_a_crash_left_behind(tmp_path: Path) -> None:
    import os
    import time

    uploads = tmp_path / "work" / "uploads"
    uploads.mkdir(parents=True)
    stale, live, other = uploads / "upload-dead.part", uploads / "upload-live.part", uploads / "notes.txt"
    for path in (stale, live, other):
        path.write_bytes(b"partial archive")
    day_ago = time.time() - 24 * 3600
    os.utime(stale, (day_ago, day_ago))
    os.utime(other, (day_ago, day_ago))
    with TestClient(create_app(Settings(home=tmp_path))):
        pass
    assert sorted(p.name for p in uploads.iterdir()) == ["notes.txt", "upload-live.part"]


def test_upload_chooses_the_split_ratios(client: TestClient, home: Path, tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "ratios.zip", class_files({"ants": 40, "bees": 40}, seed=7)).read_bytes()
    default = _upload(client, archive, "ratios.zip")
    assert default.status_code == 201 and default.json()["counts"]["val"] == {"ants": 10, "bees": 10}
    assert "by default" in default.json()["split_reason"]
    chosen = _upload(client, archive, "ratios.zip", val_fraction="0.3", test_fraction="0",
                     min_val_per_class="0")
    body = chosen.json()
    assert chosen.status_code == 201 and body["id"] != default.json()["id"]  # other ratios: another dataset
    assert body["counts"]["val"] == {"ants": 12, "bees": 12} and not any(body["counts"].get("test", {}).values())
    assert body["split_reason"].startswith("made split: val 30%, test 0% of each class (as asked)")
    _clean(home)


@pytest.mark.parametrize(("form", "words"), [
    ({"val_fraction": "0"}, "val_fraction must be a number above 0.0 and at most 0.5"),
    ({"val_fraction": "lots"}, "e.g. val_fraction=0.2"),
    ({"test_fraction": "0.7"}, "test_fraction must be a number at least 0.0 and at most 0.5"),
    ({"val_fraction": "0.4", "test_fraction": "0.3"}, "keep it at most 0.6 so training keeps at least 40%"),
    ({"min_val_per_class": "-3"}, "min_val_per_class must be a whole number from 0 to 1000"),
])
def test_bad_split_choices_are_refused_naming_the_fix(client: TestClient, home: Path, tmp_path: Path,
                                                      form: dict[str, str], words: str) -> None:
    archive = make_zip(tmp_path / "bad.zip", class_files({"ants": 5, "bees": 5}, seed=8)).read_bytes()
    response = _upload(client, archive, "bad.zip", **form)
    assert response.status_code == 422 and words in response.json()["detail"]
    _clean(home)
