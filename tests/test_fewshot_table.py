"""The few-shot table's comparison with the library (``benchmarks/fewshot.py``): paired over the draws
both ran, worked out by hand from hand-made records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import fewshot  # noqa: E402


def write(out: Path, seed: int, method: str, accuracy: float, wall: float) -> None:
    path = fewshot.record_file(out, "phrasebank", 8, seed, method)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": {"test/accuracy": accuracy}, "wall_s": wall, "seed": seed}))


def test_paired_against_the_library_uses_only_draws_both_ran(tmp_path):
    # seed 2: the same accuracy, once as float32 (torchmetrics) and once as float64 (scikit-learn): a tie
    for seed, lib, ours in ((1, (0.80, 100), (0.82, 50)), (2, (0.70, 100), (0.7000000178813934, 60)),
                            (3, (0.90, 200), None)):
        write(tmp_path, seed, "setfit_lib", *lib)
        if ours:
            write(tmp_path, seed, "setfit", *ours)
    diffs, ratios = fewshot.paired(tmp_path, "phrasebank", 8, "setfit")
    assert [round(d, 6) for d in diffs] == [0.02, 0.0] and ratios == [0.5, 0.6]
    lines = fewshot.paired_lines(tmp_path, [("phrasebank", 8), ("conll", 5)], ["setfit_lib", "setfit", "full"])
    # differences +0.02 and 0: mean +0.01, sample std sqrt(2 * 0.01^2 / 1) = 0.0141; walls 0.5x and 0.6x
    assert lines[-1] == "| setfit | +0.0100 ± 0.0141 (ahead 1, tied 1, of 2); wall 0.55x |"
    assert lines[-3] == "| method | phrasebank K=8 |"  # NER columns have no library run
    assert not any(line.startswith("| full |") for line in lines)  # no record, no row


def test_no_paired_draw_no_table(tmp_path):
    write(tmp_path, 1, "setfit", 0.8, 50)
    assert fewshot.paired_lines(tmp_path, [("phrasebank", 8)], ["setfit_lib", "setfit"]) == []


def test_library_records_of_another_block_pair_scores_but_not_wall_times(tmp_path):
    here, other = tmp_path / "here", tmp_path / "other"
    write(here, 1, "setfit_lib", 0.80, 100)
    write(here, 1, "setfit_nodrop", 0.81, 70)
    write(other, 2, "setfit_lib", 0.70, 300)  # another machine: its 300 s says nothing of ours
    write(here, 2, "setfit_nodrop", 0.73, 60)
    write(here, 3, "setfit_nodrop", 0.90, 60)  # no library record anywhere: left out
    diffs, ratios = fewshot.paired(here, "phrasebank", 8, "setfit_nodrop", [other])
    assert [round(d, 6) for d in diffs] == [0.01, 0.03] and ratios == [0.7]
    line = fewshot.paired_lines(here, [("phrasebank", 8)], ["setfit_nodrop"], [other])[-1]
    # mean +0.02, sample std sqrt(2 * 0.01^2) = 0.0141; one wall ratio, of the draw the library ran here
    assert line == "| setfit_nodrop | +0.0200 ± 0.0141 (ahead 2, tied 0, of 2); wall 0.70x (1 of them) |"
    assert fewshot.paired(here, "phrasebank", 8, "setfit_nodrop")[0] == [diffs[0]]  # without it: draw 1 only
