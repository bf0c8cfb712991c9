"""A support assistant from three exported models: the intent, the slots, and the answer with its slots filled.

    python -m experiments.assistant --runs outputs/assistant "I want to cancel order 12345"
    python -m experiments.assistant --intent DIR --slots DIR --answers DIR [--pool FILE] [--values FILE] MESSAGE...

``--runs R`` reads ``R/intent/model``, ``R/slots/model`` and ``R/answers/model``: the exports of
``task=support_intent dataset=bitext``, ``task=ner dataset=bitext_slots`` and ``task=support_response``
(README, "A support assistant"). Everything runs in plain transformers, as a service would:

1. intent: ``pipeline("text-classification")``;
2. slots: ``pipeline("token-classification", aggregation_strategy="first")``, whose words are BERT's
   pre-tokenizer words, the same the slot model was trained on; each slot keeps its character offsets;
3. answer: the bi-encoder embeds the message and the answers of ``--pool`` (default: the embedded Bitext
   answers) written for the predicted intent (``--scope all``: every answer), mean-pooled and
   L2-normalised as in training; the best cosine wins;
4. placeholders: ``{{Order Number}}`` and the other order, purchase and invoice placeholders are filled
   from the slots; any placeholder named in ``--values`` (a JSON object, e.g. ``{"Website Name": "..."}``)
   from there; the rest stay as written.

Prints one JSON object per message.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from experiments.errors import ConfigError, ExperimentsError

#: Bitext answer placeholders that a slot fills (names as they occur in the responses).
SLOT_PLACEHOLDERS = {
    "order_id": ("Order Number", "order number", "Order Number Anonymized", "Order ID Anonymized",
                 "Purchase ID Anonymized", "Purchase Number Anonymized"),
    "invoice_id": ("Invoice Number Anonymized",),
    "person_name": ("Name Field Anonymized",),
}
_PLACEHOLDER = re.compile(r"\{\{([^{}]+)\}\}")


def fill(template: str, slots: list[dict[str, Any]], values: dict[str, str]) -> str:
    """``template`` with each ``{{Name}}`` replaced by a slot value (see :data:`SLOT_PLACEHOLDERS`; the first
    slot of the type; a slot wins over ``values``) or by ``values[Name]``; unknown placeholders are kept."""
    from_slots: dict[str, str] = {}
    for slot in slots:
        for name in SLOT_PLACEHOLDERS.get(slot["type"], ()):
            from_slots.setdefault(name, slot["value"])
    by_name = {**values, **from_slots}
    return _PLACEHOLDER.sub(lambda m: by_name.get(m.group(1).strip(), m.group(0)), template)


class Assistant:
    """The three models, loaded once.

    Raises:
        ConfigError: a model folder is missing.
    """

    def __init__(self, intent: Path, slots: Path, answers: Path, pool: Path, scope: str = "intent",
                 values: dict[str, str] | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer, pipeline

        for name, path in (("intent", intent), ("slots", slots), ("answers", answers)):
            if not (Path(path) / "config.json").is_file():
                raise ConfigError(f"--{name}: {path} is not an exported model folder (no config.json); train it "
                                  "first (README, 'A support assistant')")
        from experiments.tasks.recommendation.answers import read_pairs

        self.intent = pipeline("text-classification", model=str(intent))
        self.slots = pipeline("token-classification", model=str(slots), aggregation_strategy="first")
        self.tokenizer = AutoTokenizer.from_pretrained(answers)
        self.encoder = AutoModel.from_pretrained(answers).eval()
        self.scope = scope
        self.values = values or {}
        self.torch = torch
        pairs = read_pairs(pool)
        self.pool: list[tuple[str, str]] = list(dict.fromkeys((p.answer, p.intent) for p in pairs))
        self._vectors: dict[str, Any] = {}

    def embed(self, texts: list[str]) -> Any:
        """L2-normalised mean-pooled embeddings ``[N, D]``, as ``AnswerSelectionModule.embed``."""
        from experiments.models.pooling import mean_pool

        out = []
        with self.torch.inference_mode():
            for i in range(0, len(texts), 64):
                enc = self.tokenizer(texts[i:i + 64], truncation=True, max_length=128, padding=True,
                                     return_tensors="pt")
                hidden = self.encoder(**enc).last_hidden_state.float()
                out.append(self.torch.nn.functional.normalize(mean_pool(hidden, enc["attention_mask"]), dim=-1))
        return self.torch.cat(out)

    def answer(self, message: str) -> dict[str, Any]:
        intent = self.intent(message)[0]
        slots = [{"type": e["entity_group"], "value": message[e["start"]:e["end"]], "start": int(e["start"]),
                  "end": int(e["end"]), "score": round(float(e["score"]), 4)} for e in self.slots(message)]
        label = intent["label"]
        pool = [a for a, i in self.pool if self.scope == "all" or i == label] or [a for a, _ in self.pool]
        key = label if self.scope == "intent" else "*"
        if key not in self._vectors:
            self._vectors[key] = self.embed(pool)
        scores = (self.embed([message]) @ self._vectors[key].T)[0]
        best = int(scores.argmax())
        return {"message": message, "intent": label, "intent_score": round(float(intent["score"]), 4),
                "slots": slots, "answer_template": pool[best], "answer_score": round(float(scores[best]), 4),
                "answer": fill(pool[best], slots, self.values)}


def main(argv: list[str] | None = None) -> None:
    from experiments.config import resource_path

    parser = argparse.ArgumentParser(prog="python -m experiments.assistant", description=__doc__.splitlines()[0])
    parser.add_argument("messages", nargs="+", help="customer messages")
    parser.add_argument("--runs", type=Path, help="folder with intent/, slots/ and answers/ run folders")
    parser.add_argument("--intent", type=Path)
    parser.add_argument("--slots", type=Path)
    parser.add_argument("--answers", type=Path)
    parser.add_argument("--pool", type=Path, default=Path(resource_path(
        "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv")))
    parser.add_argument("--scope", choices=("intent", "all"), default="intent")
    parser.add_argument("--values", type=Path, help="JSON object: placeholder name -> text")
    args = parser.parse_args(argv)
    try:
        dirs = {k: getattr(args, k) or (args.runs / k / "model" if args.runs else None)
                for k in ("intent", "slots", "answers")}
        if missing := [k for k, v in dirs.items() if v is None]:
            raise ConfigError(f"give --runs or --{' --'.join(missing)}")
        values = json.loads(args.values.read_text()) if args.values else {}
        bot = Assistant(dirs["intent"], dirs["slots"], dirs["answers"], args.pool, args.scope, values)
        for message in args.messages:
            print(json.dumps(bot.answer(message), ensure_ascii=False))
    except ExperimentsError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
