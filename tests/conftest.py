"""The adversarial tally: tests marked `adversarial(kind)` are hostile invocations; at the end of the
run one line counts them: `adversarial: N tried, N held, 0 lost, 0 mixed, 0 tracebacks, 0 exit-1
on bad input`. A case that fails counts under its kind: "lost" (rows or a status lost), "mixed" (two
writers' data in one run), "traceback" (a traceback or more than one line), "exit1" (bad input that
exits 1), anything else only as not held."""

from __future__ import annotations

import pytest

KINDS = ("lost", "mixed", "traceback", "exit1")
_tally = {"tried": 0, "held": 0, **dict.fromkeys(KINDS, 0)}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "adversarial(kind): a hostile invocation counted in the adversarial tally "
                                       "(kind: lost, mixed, traceback, exit1 or other)")


EXISTING = {
    "test_train.py::test_sigkill_leaves_readable_store_and_resume_matches_uninterrupted": "lost",
    "test_train.py::test_signal_flushes_rows_writes_status_and_exits_with_its_code": "lost",
    "test_train.py::test_os_error_mid_run_closes_the_run_as_crashed_in_one_line": "lost",
    "test_train.py::test_probe_on_non_finite_values_records_nan_and_training_goes_on": "lost",
    "test_train.py::test_resume_refuses_changed_flags_a_live_run_and_resume_with_overwrite": "mixed",
    "test_train.py::test_resume_refuses_rows_missing_before_the_checkpoint_and_checkpoints_that_do_not_fit": "lost",
    "test_store.py::test_second_writer_is_refused_naming_the_pid_and_a_dead_holder_does_not_block": "mixed",
    "test_store.py::test_deleting_the_lock_file_does_not_admit_a_second_writer": "mixed",
    "test_store.py::test_a_writer_whose_directory_was_replaced_stops_without_writing_into_the_new_one": "mixed",
    "test_store.py::test_disk_full_frees_the_reserve_for_the_status": "lost",
}
"""Hostile cases that live beside the code they test, counted in the tally too."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = f"{item.path.name}::{item.originalname if hasattr(item, 'originalname') else item.name}"
        if name in EXISTING and item.get_closest_marker("adversarial") is None:
            item.add_marker(pytest.mark.adversarial(EXISTING[name]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("adversarial")
    if marker is None or report.skipped:
        return
    if report.when == "call" or (report.when == "setup" and report.failed):
        _tally["tried"] += 1
        if report.passed:
            _tally["held"] += 1
        else:
            kind = marker.args[0] if marker.args else marker.kwargs.get("kind", "other")
            if kind in KINDS:
                _tally[kind] += 1


def pytest_terminal_summary(terminalreporter) -> None:
    if _tally["tried"]:
        t = _tally
        terminalreporter.write_line(
            f"adversarial: {t['tried']} tried, {t['held']} held, {t['lost']} lost, {t['mixed']} mixed, "
            f"{t['traceback']} tracebacks, {t['exit1']} exit-1 on bad input")
