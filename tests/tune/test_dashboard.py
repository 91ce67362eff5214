"""optuna-dashboard for a study: the target resolution, the server, the two commands, and the
page in a real headless browser (Debian's chromium and chromium-driver, through selenium)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("optuna_dashboard")

from gattn import cli  # noqa: E402
from gattn.tune import dashboard as dash  # noqa: E402
from gattn.tune.dashboard import Dashboard, DashboardError, resolve_target  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
GATTN = str(Path(sys.executable).parent / "gattn")
STUDY = "dashboard-check-study"


def _study(path: Path, name: str = STUDY, complete: int = 3, pruned: int = 1) -> optuna.Study:
    """A study file with ``complete`` finished and ``pruned`` pruned trials (no training)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{path}")
    for n in range(complete + pruned):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(-1, 1)})
        state = optuna.trial.TrialState.COMPLETE if n < complete else optuna.trial.TrialState.PRUNED
        study.tell(trial, trial.params["x"] ** 2 if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    return study


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=20) as response:
        return response.read().decode()


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


# ------------------------------------------------------------------------ targets
def test_resolve_target_finds_the_study_file(tmp_path):
    runs = tmp_path / "runs"
    db = runs / "mil" / "study.db"
    _study(db)
    trial_dir = runs / "mil" / STUDY / "trial-0001"
    trial_dir.mkdir(parents=True)
    url = f"sqlite:///{db.resolve()}"
    assert resolve_target(runs / "mil") == (url, None)
    assert resolve_target(runs / "mil" / STUDY) == (url, STUDY)  # a study's report folder names it
    assert resolve_target(trial_dir) == (url, STUDY)
    assert resolve_target(db) == (url, None)
    assert resolve_target(runs) == (url, None)  # the one <pipeline>/study.db below
    assert resolve_target("postgresql://u:p@host/db") == ("postgresql://u:p@host/db", None)
    journal = tmp_path / "s.log"
    journal.touch()
    assert resolve_target(journal) == (f"journal:{journal.resolve()}", None)


def test_resolve_target_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a folder"):
        resolve_target(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=f"no study.db in {tmp_path}"):
        resolve_target(tmp_path)
    _study(tmp_path / "a" / "study.db")
    _study(tmp_path / "b" / "study.db")
    with pytest.raises(DashboardError, match="several studies files"):
        resolve_target(tmp_path)


# ------------------------------------------------------------------------- server
def test_the_server_serves_the_study_and_frees_its_port(tmp_path):
    _study(tmp_path / "study.db")
    with Dashboard(f"sqlite:///{tmp_path / 'study.db'}", port=0, study_name=STUDY) as board:
        port = board.port
        assert port > 0 and board.url == f"http://127.0.0.1:{port}/dashboard/studies/1"
        assert STUDY in _get(f"http://127.0.0.1:{port}/api/studies")
        assert "<html" in _get(board.url).lower()
        with pytest.raises(DashboardError, match=f"127.0.0.1:{port}.*another port"):
            Dashboard(board.storage, port=port).start()  # taken
    assert _refused(port)


def test_bad_ports_are_refused(capsys):
    with pytest.raises(ValueError, match="port"):
        Dashboard("sqlite://", port=70000)
    with pytest.raises(SystemExit):
        cli.main(["dashboard", "runs", "--port", "http"])
    assert "expected a port number" in capsys.readouterr().err


def test_a_missing_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)
    with pytest.raises(DashboardError, match="pip install optuna-dashboard"):
        Dashboard(optuna.storages.InMemoryStorage(), port=0).start()


# ----------------------------------------------------------------------- commands
def test_tune_dashboard_serves_while_the_study_runs_and_stops_with_it(tmp_path, capsys, monkeypatch):
    started: list[Dashboard] = []
    seen: list[str] = []
    real_start, real_optimize = Dashboard.start, __import__("gattn.tune", fromlist=["optimize"]).optimize

    def start(self):
        started.append(self)
        return real_start(self)

    def optimize(*args, **kwargs):  # the study runs: the dashboard answers
        seen.append(_get(f"http://127.0.0.1:{started[0].port}/api/studies"))
        study = real_optimize(*args, **kwargs)
        seen.append(_get(f"http://127.0.0.1:{started[0].port}/api/studies"))
        return study

    monkeypatch.setattr(Dashboard, "start", start)
    monkeypatch.setattr("gattn.tune.optimize", optimize)
    assert cli.main(["--plugin", "tests.tune.fake_pipeline", "tune", "fake", "--trials", "2", "--study-name",
                     "live", "--runs-dir", str(tmp_path), "--no-plots", "--dashboard", "0"]) == 0
    out = capsys.readouterr().out
    port = started[0].port
    assert f"optuna-dashboard: http://127.0.0.1:{port}/dashboard" in out
    assert '"live"' in seen[1] and "2 finished trials" in out
    assert _refused(port)  # stopped with the command


def test_tune_without_dashboard_starts_none(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Dashboard, "start", lambda self: pytest.fail("a dashboard was started"))
    assert cli.main(["--plugin", "tests.tune.fake_pipeline", "tune", "fake", "--trials", "1",
                     "--runs-dir", str(tmp_path), "--no-plots"]) == 0
    assert "optuna-dashboard" not in capsys.readouterr().out


def test_gattn_dashboard_serves_a_finished_study_until_ctrl_c(tmp_path, capsys, monkeypatch):
    _study(tmp_path / "runs" / "fake" / "study.db")
    (tmp_path / "runs" / "fake" / STUDY).mkdir()
    pages: list[str] = []

    def ctrl_c() -> None:  # the command waits for Ctrl-C: check the page, then press it
        url = capsys.readouterr().out.split()[1]
        pages.append(url)
        pages.append(_get(url.split("/dashboard")[0] + "/api/studies"))
        raise KeyboardInterrupt

    monkeypatch.setattr(dash, "_wait_for_ctrl_c", ctrl_c)
    assert cli.main(["dashboard", str(tmp_path / "runs" / "fake" / STUDY), "--port", "0"]) == 0
    assert pages[0].endswith("/dashboard/studies/1") and STUDY in pages[1]
    assert _refused(int(pages[0].split(":")[2].split("/")[0]))


@pytest.mark.slow
def test_the_gattn_dashboard_process_stops_on_sigint(tmp_path):
    _study(tmp_path / "runs" / "fake" / "study.db")
    proc = subprocess.Popen([GATTN, "dashboard", str(tmp_path / "runs"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert line.startswith("optuna-dashboard: http://127.0.0.1:"), line
        assert f"1 study ({STUDY})" in line
        assert STUDY in _get(line.split()[1].split("/dashboard")[0] + "/api/studies")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


# ------------------------------------------------------------------------ browser
def _browser() -> tuple[str, str]:
    """Paths of chromium and its driver, or a skip saying what is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver; .ci/install_browser.sh does as root or with "
                    "passwordless sudo)")
    versions = {path: _major_version(path) for path in (browser, driver)}
    if None in versions.values() or len(set(versions.values())) > 1:
        pytest.skip(f"the browser and its driver are not a pair (major versions {versions}); selenium "
                    "refuses them: install Debian's chromium and chromium-driver together")
    pytest.importorskip("selenium", reason="the browser test needs selenium (the dev extra)")
    return browser, driver


def _major_version(program: str) -> int | None:
    """The major version ``program --version`` prints (``Chromium 156.0...``, ``ChromeDriver 156.0...``)."""
    try:
        out = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"(\d+)\.\d+", out)
    return int(found.group(1)) if found else None


def test_the_dashboard_page_shows_the_study_in_a_real_browser(tmp_path):
    browser, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _study(tmp_path / "study.db", complete=3, pruned=1)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,800", "--disable-extensions"):
        options.add_argument(flag)
    shot = tmp_path / "dashboard.png"
    with Dashboard(f"sqlite:///{tmp_path / 'study.db'}", port=0, study_name=STUDY) as board:
        # an explicit driver path: selenium never tries to download one
        chrome = webdriver.Chrome(options=options, service=Service(driver_path))
        try:
            chrome.get(board.url + "/trials")
            body = chrome.find_element(By.TAG_NAME, "body")
            WebDriverWait(chrome, 60).until(lambda _: "4 Trials" in body.text)
            text = body.text
            chrome.save_screenshot(str(shot))
        finally:
            chrome.quit()
    print(f"screenshot: {shot}")
    assert f"{STUDY} (id=1)" in text
    assert "4 Trials" in text  # the finished ones: 3 complete, 1 pruned
    states = [line for line in text.splitlines() if line in ("Complete", "Pruned", "Running", "Fail")]
    assert states.count("Complete") >= 3 and states.count("Pruned") >= 1
    assert shot.stat().st_size > 10_000
    keep = Path(os.environ.get("GATTN_SCREENSHOTS", ROOT / "runs" / "test-artefacts"))  # runs/ is ignored by git
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "dashboard.png")
