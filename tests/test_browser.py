"""The MLflow UI in a real browser: a small real study, `mlflow server` on loopback over its store,
and headless Chromium (Debian's `chromium`, driven by Playwright) showing the trials nested under
the study's parent run, a trial's metric charts and the parent's plots.

Needs `playwright` (pip, in the test extra) and /usr/bin/chromium (apt; never `playwright
install`, which downloads a browser). Without them the test skips, except in CI (CI=true), where
`.ci/run` installs them and a missing browser fails the test. The screenshot of the expanded
study is saved as test-artifacts/mlflow-ui.png (and, on a failure, the page as it was).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from tests.conftest import ROOT, default_study, tiny_study, write_study
from tests.servers import mlflow_server
from tuner.cli import main

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"the browser test must run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        _unavailable(f"playwright is not installed ({e}); pip install -e '.[test]'")
    if not CHROMIUM.exists():
        _unavailable(f"no {CHROMIUM}; apt-get install chromium")
    with sync_playwright() as p:
        try:
            launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        except Exception as e:  # noqa: BLE001 - Playwright's launch errors vary
            _unavailable(f"{CHROMIUM} does not start: {e}")
        yield launched
        launched.close()


def test_the_mlflow_ui_shows_the_trials_nested_under_the_study(workdir: Path, browser):
    study_file = write_study(
        workdir / "s.yaml", tiny_study(budget={"n_trials": 3, "max_epochs": 2})
    )
    result = CliRunner().invoke(main, ["run", str(study_file), "--report"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    store = f"sqlite:///{workdir}/mlflow.db"
    experiment = MlflowClient(store).get_experiment_by_name("tiny").experiment_id
    study = default_study("tiny", workdir)
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    SHOTS.mkdir(exist_ok=True)

    with mlflow_server(store, workdir / "served", log=workdir / "mlflow-server.log") as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)  # a first page load on a busy 2-core machine
        try:
            # The runs table (the bare experiment page is the GenAI overview).
            page.goto(f"{url}/#/experiments/{experiment}/runs")
            study_row = page.locator(
                '[role="row"]', has=page.get_by_role("link", name="tiny", exact=True)
            )
            study_row.first.wait_for()
            _close_assistant(page)
            trial_links = [page.get_by_role("link", name=f"trial-{i}", exact=True) for i in range(3)]  # fmt: skip
            assert all(link.count() == 0 for link in trial_links)  # nested: collapsed by default
            study_row.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
            for link in trial_links:
                link.wait_for()
            page.screenshot(path=SHOTS / "mlflow-ui.png")

            # A trial's metric charts, the per-epoch and the per-time-step ones.
            trial_links[0].click()
            page.get_by_role("tab", name="Model metrics").click()
            search = page.get_by_placeholder("Search metric charts")
            for chart in ("val_mse", "grad_norm_by_step"):  # charts render when scrolled to
                search.fill(chart)
                page.get_by_text(f"trial-0 ({chart})", exact=True).first.wait_for()  # its legend

            # The study's plots, served from its run's artifacts.
            page.goto(f"{url}/#/experiments/{experiment}/runs/{parent_id}")
            page.get_by_role("tab", name="Artifacts").click()
            page.get_by_text("plots", exact=True).first.click()
            for name in ("history.png", "importances.png", "cells.png", "curves.png"):
                page.get_by_text(name, exact=True).first.wait_for()
            page.get_by_text("curves.png", exact=True).first.click()
            image = page.locator('img[alt$="curves.png"]').first
            image.wait_for()
            page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=image.element_handle())  # fmt: skip
        except Exception:
            page.screenshot(path=SHOTS / "mlflow-ui-failure.png")
            raise
        finally:
            page.close()


def _close_assistant(page) -> None:  # noqa: ANN001 - playwright Page
    """MLflow 3.17 opens an assistant panel over a third of the page; the screenshot wants room."""
    close = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
    if close.count() and close.first.is_visible():
        close.first.click()
