"""``python -m experiments --help``: our own help text, built from the config folder itself.

Why generated: a hand-written list of options goes stale the day a YAML file is added. Each option's
line is the first sentence of its file's leading comment; a dataset preset is listed under the tasks
its comment names ("Use with task=ner"). Only YAML is read (no torch import), so help is
quick. Hydra shows it through ``hydra.help.template: ${help_text:}`` (see ``conf/config.yaml``).
"""

from __future__ import annotations

import re
from pathlib import Path

GROUPS = {
    "task": "the task family: data, LightningModule, metrics",
    "dataset": "a preset of data files and reader options for a task",
    "model": "the pretrained encoder",
    "finetune": "the strategy: full, LoRA, adversarial, prompt learning, PET, SetFit",
    "recommender": "model family of task=recommendation",
    "answer_model": "model family of task=support_response",
    "augment": "on-the-fly augmentation of the training split",
    "trainer": "Lightning Trainer: devices, precision, epochs (any trainer.<arg>=...)",
    "callbacks": "checkpoints, early stopping, progress bar",
    "logger": "where metrics go",
    "experiment": "pinned paper baselines",
    "debug": "short runs",
    "hparams_search": "Hydra's Optuna sweeper (use with -m)",
}

EXAMPLES = [
    "python -m experiments task=ner                                   # WNUT-17 and MiniLM, embedded: runs offline",
    "python -m experiments task=support_intent finetune=lora trainer.max_epochs=5",
    "python -m experiments mode=predict ckpt_path=outputs/ner/<run>/checkpoints/last.ckpt "
    "data.predict_file=sentences.txt",
    "python -m experiments task=support_intent mode=predict model.name_or_path=outputs/support_intent/<run>/model "
    "data.predict_file=texts.txt   # writes into <run>/predict_<time>/",
]


def describe(path: Path, width: int = 88) -> str:
    """First sentence of the leading comment of a YAML file (``@package`` lines skipped)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("@package"):
            continue
        lines.append(text)
    text = " ".join(lines)
    # The first sentence: up to ". " before a capital letter (not after "et al.") or "; ".
    sentence = re.split(r"(?<!\bal)\.\s+(?=[A-Z`])", text, maxsplit=1)[0].rstrip(".;:")
    return sentence if len(sentence) <= width else sentence[: width - 3].rstrip() + "..."


def preset_tasks(conf: Path) -> dict[str, list[str]]:
    """For each dataset preset, the tasks its leading comment names ("Use with task=ner").

    Raises:
        ValueError: a preset that names no task (tests/test_help.py keeps every preset documented).
    """
    out = {}
    for p in sorted((conf / "dataset").glob("*.yaml")):
        text = p.read_text(encoding="utf-8")
        tasks = re.findall(r"Use with task=(\w+)", text)
        if not tasks:
            raise ValueError(f"{p}: the leading comment names no task ('Use with task=...')")
        out[p.stem] = sorted(set(tasks))
    return out


def help_text(conf: str | Path | None = None) -> str:
    """The whole help text (no ``$``: Hydra's template substitutes ``$NAME`` placeholders)."""
    from experiments.config import config_dir

    conf = Path(conf or config_dir())
    out = ["experiments: fine-tune pretrained transformer encoders (BERT family) on business NLP tasks.",
           "", "Usage: python -m experiments [group=option ...] [key=value ...] [-m for a sweep]", ""]
    fits = preset_tasks(conf)
    for group, what in GROUPS.items():
        files = sorted((conf / group).glob("*.yaml"))
        if not files:
            continue
        out.append(f"{group}: {what}")
        pad = max(len(p.stem) for p in files) + 2
        if group == "dataset":
            for task in sorted({t for ts in fits.values() for t in ts}):
                out.append(f"  with task={task}:")
                out += [f"    {p.stem:<{pad}}{describe(p, 100 - pad)}" for p in files if task in fits[p.stem]]
        else:
            out += [f"  {p.stem:<{pad}}{describe(p, 100 - pad)}" for p in files]
        out.append("")
    out += ["Other keys: mode=train|test|predict, ckpt_path=<.ckpt>|last, seed=N, export.model=true|false, export.onnx=true,",
            "module.compile=true (torch.compile), data.k_shot=K data.k_shot_seed=N data.k_shot_dev=K (few-shot),",
            "optimizer.lr=..., data.batch_size=..., data.max_length=..., module.decode=viterbi|argmax (NER).", "",
            "Examples:", *[f"  {e}" for e in EXAMPLES], "",
            "Outputs: outputs/<task>/<date_time>/ (or hydra.run.dir=...): config.yaml, metrics.json,",
            "classification_report.txt, predictions.jsonl, checkpoints/ (best weights, last.ckpt to resume),",
            "model/ (save_pretrained folder, loads in plain transformers), csv/metrics.csv.", "",
            "Print the composed config: python -m experiments --cfg job [overrides].  Hydra's own flags: --hydra-help.",
            ]
    return "\n".join(out).replace("$", "")
