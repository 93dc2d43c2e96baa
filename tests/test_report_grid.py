"""The schedule benchmark's report page (smoothprobe/report/grid.py): cells average over seeds, and
a diverged cell and a refused one say which they are."""

import math
from html.parser import HTMLParser

import pandas as pd
import pytest

from smoothprobe.report.grid import DIVERGED, REFUSED, cell_table, write_grid_report


def rows():
    """Two seeds of a 2 × 2 grid, one diverged seed, an adaptive arm and a refused one."""
    out = []
    for seed, noise in ((0, -0.01), (1, 0.01)):
        for lr, warmup, loss in ((1e-3, 0.0, 2.0), (1e-3, 0.1, 1.9), (2e-3, 0.0, 2.2), (2e-3, 0.1, 2.1)):
            out.append({"optimizer": "lion", "kind": "grid", "lr": lr, "warmup": warmup, "seed": seed,
                        "status": "finished", "val_loss": loss + noise})
        out.append({"optimizer": "lion", "kind": "closed", "lr": 1e-3, "warmup": 0.0, "seed": seed,
                    "status": "finished", "val_loss": 1.8 + noise})
        out.append({"optimizer": "lion", "kind": "fitted", "lr": 1e-3, "warmup": 0.0, "seed": seed,
                    "status": "refused", "val_loss": math.nan})
    out[2].update(status="diverged", val_loss=math.inf)  # seed 0 of lr 2e-3, no warm-up
    return pd.DataFrame.from_records(out)


def test_cells_are_seed_means_and_say_diverged_or_refused():
    means, labels = cell_table(rows(), "lion")
    assert list(means.columns) == ["0", "0.1", "closed", "fitted"] and list(means.index) == ["0.001", "0.002"]
    assert means.loc["0.001", "0.1"] == pytest.approx(1.9) and labels.loc["0.001", "0.1"] == "1.900"
    assert means.loc["0.001", "closed"] == pytest.approx(1.8)
    assert labels.loc["0.002", "0"] == DIVERGED  # one seed of two diverged
    assert labels.loc["0.001", "fitted"] == REFUSED  # never ran: not a divergence
    assert labels.loc["0.002", "closed"] == ""  # no run there


class _Items(HTMLParser):
    def __init__(self):
        super().__init__()
        self.depth, self.items, self.open = 0, [], []  # open: the <li> items not yet closed
        self.stray = 0  # nested lists outside an item (invalid HTML)

    def handle_starttag(self, tag, attrs):
        if tag == "ul" and self.depth and not (self.open and self.open[-1][0] == self.depth):
            self.stray += 1
        self.depth += tag == "ul"
        if tag == "li":
            self.items.append([self.depth, ""])
            self.open.append(self.items[-1])

    def handle_endtag(self, tag):
        self.depth -= tag == "ul"
        if tag == "li":
            self.open.pop()

    def handle_data(self, data):
        if self.open and self.open[-1][0] == self.depth:  # an item's own text, not its nested list's
            self.open[-1][1] += data


def test_the_page_lists_the_notes_nested_as_written(tmp_path):
    summary = pd.DataFrame({"optimizer": ["lion"], "val_mean": [1.8]})
    notes = ["- **lion**: reference 1.9", "  - closed: 1.8 met", "  - fitted: MISSED (refused)", "- decisions: 2 of 2"]
    page = write_grid_report(rows(), summary, tmp_path / "r.html", "bench", notes=notes).read_text()
    parser = _Items()
    parser.feed(page)
    assert parser.items == [[1, "lion: reference 1.9"], [2, "closed: 1.8 met"], [2, "fitted: MISSED (refused)"],
                            [1, "decisions: 2 of 2"]]
    assert "<b>lion</b>" in page and parser.depth == 0 and not parser.open and not parser.stray


def test_an_indented_first_note_opens_one_list_not_two(tmp_path):
    summary = pd.DataFrame({"optimizer": ["lion"]})
    page = write_grid_report(rows(), summary, tmp_path / "r.html", "bench", notes=["  - a", "- b"]).read_text()
    parser = _Items()
    parser.feed(page)
    assert parser.items == [[1, "a"], [1, "b"]] and not parser.stray and parser.depth == 0
