"""The support assistant: placeholder filling by hand, and the three tiny models trained on a Bitext-shaped
file, then loaded from their exports in plain transformers to answer a message."""

from __future__ import annotations

import csv
import json

import pytest

from experiments.assistant import fill, main
from experiments.errors import ConfigError


def test_fill_uses_slots_then_values_and_keeps_unknown_placeholders():
    slots = [{"type": "order_id", "value": "123"}, {"type": "order_id", "value": "999"},
             {"type": "account_type", "value": "gold"}]
    template = "Order {{Order Number}} ({{Purchase ID Anonymized}}) on {{Website Name}}: call {{Phone}}."
    assert fill(template, slots, {"Website Name": "shop.example", "Order Number": "never"}) == \
        "Order 123 (123) on shop.example: call {{Phone}}."
    assert fill("no placeholders", [], {}) == "no placeholders"


def write_bitext_like(path):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["instruction", "intent", "category", "entity_type", "start_offset", "end_offset", "response"])
        for n in range(60):
            if n % 2:
                w.writerow([f"cancel order {n}", "cancel_order", "ORDER", "order_id", 13, 13 + len(str(n)),
                            f"order {{{{Order Number}}}} will be cancelled, case {n}"])
            else:
                w.writerow([f"where is my refund {n}", "track_refund", "REFUND", "", "", "",
                            f"your refund is on its way, case {n}"])
    return path


def test_three_tiny_models_answer_a_message(run_cli, tmp_path, capsys):
    data = write_bitext_like(tmp_path / "bitext.csv")
    runs = tmp_path / "runs"
    common = ("debug=limit", "data.batch_size=4", f"data.train_file={data}")
    run_cli("task=support_intent", "dataset=bitext", *common, run_dir=runs / "intent")
    run_cli("task=ner", "dataset=bitext_slots", *common, run_dir=runs / "slots")
    run_cli("task=support_response", *common, "trainer.limit_val_batches=null", "trainer.limit_test_batches=null",
            run_dir=runs / "answers")
    capsys.readouterr()  # the training runs' own output
    main(["--runs", str(runs), "--pool", str(data), "cancel order 17", "where is my refund"])
    first, second = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert first["message"] == "cancel order 17" and first["intent"] in ("cancel_order", "track_refund")
    pool = {r["response"]: r["intent"] for r in csv.DictReader(open(data, newline=""))}
    assert pool[first["answer_template"]] == first["intent"]  # chosen among the predicted intent's answers
    for slot in first["slots"]:
        assert first["message"][slot["start"]:slot["end"]] == slot["value"]
    assert first["answer"] == fill(first["answer_template"], first["slots"], {})
    assert second["message"] == "where is my refund"


def test_a_missing_model_folder_is_a_config_error(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["--runs", str(tmp_path), "hello"])
    assert info.value.code == 2
    with pytest.raises(ConfigError):
        from experiments.assistant import Assistant

        Assistant(tmp_path / "a", tmp_path / "b", tmp_path / "c", tmp_path / "pool.csv")
