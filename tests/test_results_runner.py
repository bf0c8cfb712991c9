"""The results runner (benchmarks/results.py) on a two-run queue with the tiny BERT: records, the generated
table and plot, and a second call that runs nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import results  # noqa: E402


def test_two_run_queue_records_tables_and_resumes(tmp_path, tiny_encoder_dir, monkeypatch):
    from test_cli import data_overrides, write_data

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    common = [f"model.name_or_path={tiny_encoder_dir}", "trainer.precision=32", "debug=limit",
              "~callbacks.progress_bar", *data_overrides(write_data(tmp_path / "data"))]
    queue = {"tables": {"tiny": {"title": "Tiny table", "protocol": "Two tiny NER runs.", "metrics": ["test/f1"],
                                 "rows": {"full": {"overrides": common, "seeds": [1]},
                                          "lora": {"overrides": [*common, "finetune=lora"], "seeds": [1]},
                                          "never": {"overrides": common, "seeds": []}}},
                        "twins": {"title": "Twins", "metrics": ["test/f1"],
                                  "rows": {"again": {"overrides": list(reversed(common)), "seeds": [1],
                                                     "baseline": "ner_conll2003_minilm"}}}}}
    qfile = tmp_path / "queue.yaml"
    qfile.write_text(json.dumps(queue))  # JSON is YAML
    docs = tmp_path / "docs" / "results.md"
    docs.parent.mkdir()
    docs.write_text("# Results\n\nText before.\n\n<!-- results:tiny -->\nold table\n<!-- /results:tiny -->\n\n"
                    "<!-- results:twins -->\n<!-- /results:twins -->\n\nAfter.\n")
    out = tmp_path / "out"
    args = ["--queue", str(qfile), "--out", str(out), "--docs", str(docs)]

    assert results.main(args) == [("tiny", "full", 1), ("tiny", "lora", 1)]  # "twins" reuses tiny/full
    records = {row: json.loads((out / "tiny" / row / "seed1" / "record.json").read_text()) for row in ("full", "lora")}
    for row, rec in records.items():
        run_metrics = json.loads((out / "tiny" / row / "seed1" / "run" / "metrics.json").read_text())
        assert rec["metrics"]["test/f1"] == run_metrics["test/f1"]
        assert rec["wall_s"] > 0 and rec["peak_rss_mib"] > 0 and rec["machine"]["torch"]
        assert rec["trainable_params"] == run_metrics["train/trainable_params"]
    assert records["lora"]["trainable_params"] < records["full"]["trainable_params"]

    text = docs.read_text()
    assert text.startswith("# Results\n\nText before.") and text.rstrip().endswith("After.") and "old table" not in text
    table = text[text.index("<!-- results:tiny -->"):text.index("<!-- /results:tiny -->")]
    assert "### Tiny table" in table and "Two tiny NER runs." in table and "Machine:" in table
    assert f"| full | 1 | {records['full']['metrics']['test/f1']:.4f} |" in table
    assert f"| lora | 1 | {records['lora']['metrics']['test/f1']:.4f} |" in table
    assert "| never | not run yet |" in table and "![tiny](img/tiny.png)" in table
    assert (docs.parent / "img" / "tiny.png").read_bytes()[:4] == b"\x89PNG"

    # The same command (overrides in another order) is the same run: copied, not trained, and said so.
    again = json.loads((out / "twins" / "again" / "seed1" / "record.json").read_text())
    assert again["reused_from"] == "tiny/full" and again["metrics"] == records["full"]["metrics"]
    assert not (out / "twins" / "again" / "seed1" / "run").exists()
    twins = text[text.index("<!-- results:twins -->"):text.index("<!-- /results:twins -->")]
    f1 = records["full"]["metrics"]["test/f1"]  # conf/experiment/ner_conll2003_minilm.yaml publishes 0.924
    assert f"| again | 1 | {f1:.4f} | 0.9240 (test/f1) | {f1 - 0.924:+.4f} |" in twins
    assert "Devlin et al. 2019" in twins and "again ← tiny/full" in twins

    assert results.main(args) == []  # everything recorded: nothing runs again
    assert results.main([*args, "--plan"]) == []
