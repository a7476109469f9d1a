"""A bundle is what was verified (issue 21 §3): the bytes hashed are the bytes loaded, the id names
the content, manifest entries stay inside the bundle, documents are validated after their hashes,
a refused /reload is a 4xx that keeps the old bundle, and a .tar.gz leaves no folder behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import httpx
import pytest
from serving import LiveServer, free_port, train

from quant_cli import stages
from quant_cli.cli import app
from quant_cli.io import read_json, write_json_atomic
from quant_cli.serve.app import create_app
from quant_cli.serve.bundle import load
from quant_cli.serve.manifest import MANIFEST, bundle_id, files_of, sha256

REBUILD = "rebuild the bundle with `qfactory bundle --run RUN`"
MODIFIED = "the bundle was modified after it was built; rebuild it with `qfactory bundle --run RUN`"
QFACTORY = [sys.executable, "-c", "import sys; from quant_cli.cli import app; sys.argv[0] = 'qfactory'; app()"]
REPO = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    """This checkout's quant_cli first in a child process, whatever the installed copy is."""
    env = {**os.environ, **extra, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("QFACTORY_SERVE_TOKEN", None)
    return env


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two bundles of one dataset whose models score the same bars differently (A: 20 trees, B: 10)."""
    root = tmp_path_factory.mktemp("pair")
    first = train(root)
    second = train(root, extra=("model.params.n_estimators=10",), data_dir=first.data_dir)
    stages.bundle_existing(first.run, first.data_dir, archive=True)  # the folder and bundle.tar.gz beside it
    return first.run.path / "bundle", stages.bundle_existing(second.run, second.data_dir).bundle


def _copy(bundle: Path, tmp_path: Path, name: str = "b") -> Path:
    return Path(shutil.copytree(bundle, tmp_path / name, symlinks=True))


def _reseal(folder: Path, keep_id: str | None = None) -> str:
    """Re-hash every file into the manifest, as anyone who can write the folder can: the bundle id is
    derived from the new hashes unless `keep_id` (a forger's) is given. Returns the id written."""
    manifest = read_json(folder / MANIFEST)
    manifest["files"] = {name: sha256(folder / name) for name in files_of(folder)}
    manifest["bundle_id"] = keep_id or bundle_id(manifest["source_run"], manifest["files"])
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest["bundle_id"]


def _verify(runner, bundle: Path):
    return runner.invoke(app, ["bundle", "verify", str(bundle)])


def _scores(bundle: Path) -> dict:
    return {p["symbol"]: p["score"] for p in read_json(bundle / "example" / "expected.json")["predictions"]}


# ---- time of check, time of use ------------------------------------------------------------------


def test_reload_loads_exactly_the_bytes_it_hashed(pair, tmp_path):
    """A thread swaps the live folder's model file between A's and B's while /reload loops: every
    answer carrying A's id carries A's scores (before the fix: hashed A, then loaded B)."""
    a, b = pair
    live = _copy(a, tmp_path, "live")
    models = {"a": (a / "model" / "model.txt").read_bytes(), "b": (b / "model" / "model.txt").read_bytes()}
    for which, data in models.items():
        (tmp_path / which).write_bytes(data)
    a_id, body, expected = read_json(a / MANIFEST)["bundle_id"], read_json(a / "example" / "input.json"), _scores(a)
    assert _scores(b) != pytest.approx(expected)  # B's model scores A's example otherwise
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            for which in ("b", "a"):
                shutil.copyfile(tmp_path / which, tmp_path / "next")
                os.replace(tmp_path / "next", live / "model" / "model.txt")  # atomic: never a half-written file

    swapper = threading.Thread(target=swap, daemon=True)
    seen = {"a_id": 0, "mixed": 0, "refused": 0}
    with LiveServer(create_app(load(a))) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        swapper.start()
        try:
            for _ in range(40):
                reload = client.post("/reload", json={"bundle": str(live)})
                assert reload.status_code in (200, 422), reload.text
                seen["refused"] += reload.status_code == 422
                answer = client.post("/predict", json=body).json()
                if answer["bundle_id"] == a_id:
                    seen["a_id"] += 1
                    got = {p["symbol"]: p["score"] for p in answer["predictions"]}
                    seen["mixed"] += got != pytest.approx(expected, rel=1e-6)
        finally:
            stop.set()
            swapper.join()
    assert seen["a_id"] == 40 and seen["mixed"] == 0, seen  # a refused reload keeps serving A itself


def test_a_swapped_and_rehashed_model_cannot_keep_the_bundle_id(runner, pair, tmp_path):
    """B's model and expected scores put into A with every hash redone but A's id kept: refused."""
    a, b = pair
    forged = _copy(a, tmp_path)
    for name in ("model/model.txt", "example/expected.json"):
        shutil.copyfile(b / name, forged / name)
    a_id = read_json(a / MANIFEST)["bundle_id"]
    _reseal(forged, keep_id=a_id)
    derived = bundle_id(read_json(a / MANIFEST)["source_run"], read_json(forged / MANIFEST)["files"])
    result = _verify(runner, forged)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"error: bundle {forged}: {MANIFEST} says bundle_id '{a_id}', but its files give {derived}; {MODIFIED}"
    )
    _reseal(forged)  # an honest re-hash gives the content its own id, never A's
    assert runner.invoke(app, ["bundle", "verify", str(forged), "--json"]).exit_code == 0
    assert read_json(forged / MANIFEST)["bundle_id"] == derived != a_id


# ---- manifest entries name files inside the bundle -----------------------------------------------


def _outside(folder: Path, secret: Path) -> str:
    return "../secret.txt"


def _absolute(folder: Path, secret: Path) -> str:
    return str(secret)


ESCAPES = {"dotdot": _outside, "absolute": _absolute}


@pytest.mark.parametrize("case", ESCAPES)
def test_manifest_entries_outside_the_bundle_are_refused(runner, pair, tmp_path, case):
    """An entry naming a file outside the bundle, listed with its true hash (verified before the fix)."""
    folder = _copy(pair[0], tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours\n")
    entry = ESCAPES[case](folder, secret)
    manifest = read_json(folder / MANIFEST)
    manifest["files"][entry] = sha256(secret)
    manifest["bundle_id"] = bundle_id(manifest["source_run"], manifest["files"])
    write_json_atomic(folder / MANIFEST, manifest)
    result = _verify(runner, folder)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"error: bundle {folder}: {MANIFEST} entry '{entry}' does not name a file inside "
        f"the bundle (absolute, '..', empty part, or the manifest itself); {REBUILD}"
    )


def test_links_in_a_bundle_are_refused(runner, pair, tmp_path):
    """The model folder a link to a copy elsewhere (same bytes, so every hash matches): refused."""
    folder = _copy(pair[0], tmp_path)
    shutil.move(folder / "model", tmp_path / "elsewhere")
    (folder / "model").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    result = _verify(runner, folder)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"error: bundle {folder}: model is a link; a bundle holds plain files only, {REBUILD}"
    )


def test_names_with_control_characters_stay_on_one_line(runner, pair, tmp_path):
    """A file named with a newline, on disk or in the manifest: the error is still one line."""
    folder = _copy(pair[0], tmp_path)
    (folder / "notes\nerror: forged.txt").write_text("x")
    result = _verify(runner, folder)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: bundle {folder}: file notes\\nerror: forged.txt is not in {MANIFEST}")
    (folder / "notes\nerror: forged.txt").unlink()
    manifest = read_json(folder / MANIFEST)
    manifest["files"]["model/\nx"] = "0" * 64
    write_json_atomic(folder / MANIFEST, manifest)
    result = _verify(runner, folder)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "entry 'model/\\nx' does not name" in result.stderr


def test_an_archive_holding_a_link_is_refused(runner, pair, tmp_path):
    """Read from the stream, an archive may hold only folders and plain files inside its one bundle folder."""
    archive = tmp_path / "linked.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(pair[0], arcname="bundle")
        link = tarfile.TarInfo("bundle/extra.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/hostname"
        tar.addfile(link)
    result = _verify(runner, archive)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"error: bundle {archive}: archive entry 'bundle/extra.json' is a link or device; "
        f"a bundle holds plain files only, {REBUILD}"
    )


# ---- documents validated after the hashes --------------------------------------------------------


def _no_warmup(folder: Path) -> str:
    pipeline = read_json(folder / "pipeline.json")
    pipeline["warmup"] = dict.fromkeys(pipeline["warmup"], 0)
    write_json_atomic(folder / "pipeline.json", pipeline)
    schema = read_json(folder / "input_schema.json")
    schema["x-qfactory"]["required_bars"] = 0
    write_json_atomic(folder / "input_schema.json", schema)
    return "pipeline.json is not what this qfactory writes (warmup.ret_5: Input should be greater than or equal to 1)"


def _unknown_feature(folder: Path) -> str:
    text = (folder / "pipeline.json").read_text().replace('"hl_range"', '"zz_range"')
    (folder / "pipeline.json").write_text(text)
    return "pipeline.json names features this qfactory does not know: ['zz_range']"


def _state_shape(folder: Path) -> str:
    pipeline = read_json(folder / "pipeline.json")
    pipeline["state"]["columns"] = pipeline["state"]["columns"][:-1]
    write_json_atomic(folder / "pipeline.json", pipeline)
    return (
        "pipeline.json is not what this qfactory writes (state: center must give a value for every column "
        "(scaler 'zscore', fill 'zero'))"
    )


def _deep(folder: Path) -> str:
    (folder / "input_schema.json").write_text("[" * 200_000 + "]" * 200_000)
    return "input_schema.json is not valid JSON (nested 200,000 levels deep, over the limit of 100)"


def _bad_spacing(folder: Path) -> str:
    pipeline = read_json(folder / "pipeline.json")
    pipeline["options"]["bar_spacing"] = "daily"
    write_json_atomic(folder / "pipeline.json", pipeline)
    return (
        "pipeline.json is not what this qfactory writes (options.bar_spacing: frequency 'daily' is not understood; "
        "use a count and a unit s/m/h/d/w, e.g. '5m', '1h', '1d')"
    )


DOCUMENTS = {
    "no_warmup": _no_warmup,
    "unknown_feature": _unknown_feature,
    "state_shape": _state_shape,
    "deep": _deep,
    "bad_spacing": _bad_spacing,
}


@pytest.mark.parametrize("case", DOCUMENTS)
def test_documents_are_validated_after_their_hashes(runner, pair, tmp_path, case):
    folder = _copy(pair[0], tmp_path)
    reason = DOCUMENTS[case](folder)
    _reseal(folder)
    for args in (
        ["bundle", "verify", str(folder)],
        ["predict", "--bundle", str(folder), "--source", "p", "--out", str(tmp_path / "s.csv")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == f"error: bundle {folder}: {reason}; {REBUILD}"


def test_a_garbage_lightgbm_model_is_one_line_and_exit_2(pair, tmp_path):
    """A real process: LightGBM writes '[LightGBM] [Fatal] ...' to the process's stderr before it raises."""
    folder = _copy(pair[0], tmp_path)
    (folder / "model" / "model.txt").write_text("garbage\n")
    _reseal(folder)
    done = subprocess.run(
        [*QFACTORY, "bundle", "verify", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"error: bundle {folder}: model/ cannot be loaded as a lightgbm model (LightGBMError: "
        f"Unknown model format or submodel type in model file model/model.txt); {REBUILD}\n"
    )


@pytest.mark.parametrize(("model", "file"), [("mlp", "weights.pt"), ("xgboost", "xgboost.json")])
def test_other_garbage_native_models_are_one_line_and_exit_2(runner, tmp_path_factory, tmp_path, model, file):
    trained = train(tmp_path_factory.mktemp(model), model)
    folder = _copy(stages.bundle_existing(trained.run, trained.data_dir).bundle, tmp_path)
    (folder / "model" / file).write_bytes(b"garbage")
    _reseal(folder)
    result = _verify(runner, folder)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: bundle {folder}: model/ cannot be loaded as a {model} model (")
    assert result.stderr.endswith(f"); {REBUILD}\n") and result.stderr.count("\n") == 1


# ---- /reload -------------------------------------------------------------------------------------


def test_a_refused_reload_is_a_4xx_and_the_old_bundle_keeps_serving(pair, tmp_path):
    a, _ = pair
    broken = _copy(a, tmp_path)
    (broken / "model" / "model.txt").write_text("garbage\n")
    _reseal(broken)
    a_id, body = read_json(a / MANIFEST)["bundle_id"], read_json(a / "example" / "input.json")
    with LiveServer(create_app(load(a))) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        refused = client.post("/reload", json={"bundle": str(broken)})
        assert refused.status_code == 422, refused.text
        reason = (
            "model/ cannot be loaded as a lightgbm model (LightGBMError: Unknown model format or submodel type "
            f"in model file model/model.txt); {REBUILD}"
        )
        assert refused.json() == {
            "error": f"reload failed, still serving {a_id}: bundle {broken}: {reason}",
            "kind": "BundleError",
        }
        assert client.get("/ready").json() == {"ready": True, "bundle_id": a_id}
        scored = client.post("/predict", json=body)
        assert scored.status_code == 200 and scored.json()["bundle_id"] == a_id


# ---- a .tar.gz leaves nothing behind ------------------------------------------------------------


def test_an_archive_leaves_no_folder_behind_across_reloads_and_sigterm(pair, tmp_path):
    """A real `qfactory serve` on the archive, three reloads of it, then a real SIGTERM: the private
    temporary folder (TMPDIR) is empty afterwards (before: one unpacked folder per load, never removed)."""
    archive = pair[0].with_name("bundle.tar.gz")
    temp = tmp_path / "tmp"
    temp.mkdir()
    port = free_port()
    server = subprocess.Popen(
        [*QFACTORY, "serve", "--bundle", str(archive), "--port", str(port)],
        env=_env(TMPDIR=str(temp)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, server)
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(3):
                assert client.post("/reload", json={"bundle": str(archive)}).status_code == 200
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert sorted(p.name for p in temp.iterdir()) == []


def _wait_ready(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"serve exited {server.returncode}: {server.stderr.read()}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("serve did not become ready")
