"""SetFit (Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts"): contrastive fine-tuning of a
sentence encoder on pairs drawn from a few labelled examples, then a logistic-regression head on its
embeddings.

Why it fits the existing training step: the strategy is applied where the model is built
(``models.build.build_model``) as :class:`SetFitClassifier`, an encoder whose mean-pooled (and, like
all-MiniLM-L6-v2's ``Normalize`` module, L2-normalised) embedding feeds a linear head. The training batches
are pairs (:mod:`experiments.tasks.pairs`, made by the sentence-classification datamodule), and a forward
on a pair batch returns SetFit's ``CosineSimilarityLoss``: the mean squared error between the cosine
similarity of the two embeddings and the pair's target (1 same class, 0 otherwise). So Lightning's automatic
optimization, accumulation, precision and DDP are unchanged. The head is not trained by gradient: before
every validation and at the end of every training epoch the sentence-classification module embeds the
(K-shot) training set and fits scikit-learn's ``LogisticRegression`` on it, as the ``setfit`` library does
by default (multi-label: one-vs-rest), and copies its coefficients into the head's buffers, which
checkpoints carry. ``logits`` are the head's decision function, so softmax (sigmoid for multi-label) gives
the regression's probabilities and the module, its metrics and its outputs are those of every
sentence-classification run.

Export: ``model/`` is the fine-tuned encoder (``AutoModel`` loads it) plus ``setfit_head.json`` with the
head (``weight`` ``[C, D]``, ``bias`` ``[C]``, pooling, normalisation); :func:`load_setfit` reads both back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from experiments.errors import ConfigError

__all__ = ["SetFitConfig", "SetFitClassifier", "HEAD_FILE", "load_setfit"]

HEAD_FILE = "setfit_head.json"


@dataclass
class SetFitConfig:
    """The ``finetune.adapter`` of ``finetune=setfit``.

    Attributes:
        num_iterations: positive (and negative) pairs generated per training example (SetFit's
            ``num_iterations``; 20 in the paper); the sentence-classification datamodule reads it.
        normalize: L2-normalise the mean-pooled embeddings (all-MiniLM-L6-v2's ``Normalize`` module).
        head_c: inverse L2 strength ``C`` of the logistic regression (scikit-learn's and SetFit's default 1.0).
        head_max_iter: iterations of its lbfgs solver (scikit-learn's default 100).
    """

    num_iterations: int = 20
    normalize: bool = True
    head_c: float = 1.0
    head_max_iter: int = 100

    def __post_init__(self) -> None:
        if isinstance(self.num_iterations, bool) or not isinstance(self.num_iterations, int) \
                or self.num_iterations < 1:
            raise ConfigError(f"finetune.adapter.num_iterations must be a positive integer; got {self.num_iterations!r}")
        if not float(self.head_c) > 0:
            raise ConfigError(f"finetune.adapter.head_c must be > 0; got {self.head_c!r}")


class SetFitClassifier(nn.Module):
    """Encoder + mean pooling (+ L2 normalisation) + a linear head fitted by logistic regression.

    Args:
        encoder: an ``AutoModel`` (no task head).
        num_labels: number of classes (``C``).
        normalize: L2-normalise the embeddings.
        multi_label: the head is one-vs-rest (sigmoid per label) instead of multinomial (softmax).
        head_c, head_max_iter: the logistic regression's ``C`` and solver iterations (:class:`SetFitConfig`).

    Forward: ``input_ids``/``attention_mask`` ``[B, T]`` -> ``logits`` ``[B, C]``. With ``pair_input_ids``,
    ``pair_attention_mask`` ``[B, T']`` and ``pair_similarity`` ``[B]`` also ``loss``: the mean of
    ``(cos(e_a, e_b) - pair_similarity) ** 2`` (sentence-transformers' ``CosineSimilarityLoss``).
    """

    def __init__(self, encoder: nn.Module, num_labels: int, normalize: bool = True, multi_label: bool = False,
                 head_c: float = 1.0, head_max_iter: int = 100):
        super().__init__()
        self.encoder = encoder
        self.head_c, self.head_max_iter = float(head_c), int(head_max_iter)
        self.normalize = bool(normalize)
        self.multi_label = bool(multi_label)
        hidden = int(encoder.config.hidden_size)
        # Buffers, not parameters: fitted by the regression, never by the optimizer; saved in checkpoints.
        self.register_buffer("head_weight", torch.zeros(num_labels, hidden))
        self.register_buffer("head_bias", torch.zeros(num_labels))

    @property
    def config(self) -> Any:
        return self.encoder.config

    def embed(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """Sentence embeddings ``[B, D]``: mean of the last hidden states over the attended tokens."""
        from experiments.models.pooling import mean_pool

        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        emb = mean_pool(hidden, attention_mask)
        return nn.functional.normalize(emb, dim=-1) if self.normalize else emb

    @torch.no_grad()
    def embed_batches(self, batches: Iterable[dict[str, Tensor]],
                      device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """Embeddings ``[N, D]`` of every batch (``input_ids``, ``attention_mask`` and optional
        ``token_type_ids``, each ``[B, L]``) and the batches' ``labels`` (``[N]`` class ids or ``[N, C]``
        multi-hot), concatenated in order; in eval mode (no dropout), the training mode restored after.
        The inputs are moved to ``device`` (default: left where they are); the labels stay."""
        training = self.training
        self.eval()
        embeddings, targets = [], []
        try:
            for batch in batches:
                inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
                if device is not None:
                    inputs = {k: v.to(device) for k, v in inputs.items()}
                embeddings.append(self.embed(**inputs))
                targets.append(batch["labels"])
        finally:
            self.train(training)
        return torch.cat(embeddings), torch.cat(targets)

    def head(self, embeddings: Tensor) -> Tensor:
        return embeddings.float() @ self.head_weight.T + self.head_bias

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None,
                pair_input_ids: Tensor | None = None, pair_attention_mask: Tensor | None = None,
                pair_token_type_ids: Tensor | None = None, pair_similarity: Tensor | None = None,
                **kwargs: Any) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        emb = self.embed(input_ids, attention_mask, token_type_ids)
        loss = None
        if pair_input_ids is not None:
            other = self.embed(pair_input_ids, pair_attention_mask, pair_token_type_ids)
            cos = nn.functional.cosine_similarity(emb.float(), other.float(), dim=-1)
            loss = nn.functional.mse_loss(cos, pair_similarity.float())
        return SequenceClassifierOutput(loss=loss, logits=self.head(emb))

    def fit_head(self, embeddings: Tensor, targets: Tensor, class_weight: str | None = None) -> None:
        """Fit the head on ``embeddings`` ``[N, D]`` and ``targets`` (class ids ``[N]``, or multi-hot ``[N, C]``)
        with scikit-learn's ``LogisticRegression`` (lbfgs, L2 with ``C=head_c``; one-vs-rest for multi-label).

        A class absent from ``targets`` gets a bias of -1e4 (never predicted). ``class_weight="balanced"``
        weighs classes inversely to their frequency (scikit-learn's definition).
        """
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        x = embeddings.detach().float().cpu().numpy()
        y = targets.detach().cpu().numpy()
        num_labels, hidden = self.head_weight.shape
        weight = np.zeros((num_labels, hidden), dtype=np.float64)
        bias = np.full(num_labels, -1e4, dtype=np.float64)

        def regression() -> Any:
            return LogisticRegression(C=self.head_c, max_iter=self.head_max_iter, class_weight=class_weight)

        if self.multi_label:
            for k in range(num_labels):
                column = y[:, k].astype(int)
                if column.min() == column.max():  # always or never on: a constant decision
                    bias[k] = 1e4 if column[0] else -1e4
                    continue
                lr = regression().fit(x, column)
                weight[k], bias[k] = lr.coef_[0], lr.intercept_[0]
        else:
            y = y.astype(int)
            present = np.unique(y)
            if len(present) < 2:
                raise ConfigError("the SetFit head needs training examples of at least two classes")
            lr = regression().fit(x, y)
            if len(lr.classes_) == 2:  # one score z for the second class: softmax([0, z]) = sigmoid(z)
                weight[lr.classes_[1]], bias[lr.classes_[1]] = lr.coef_[0], lr.intercept_[0]
                weight[lr.classes_[0]], bias[lr.classes_[0]] = 0.0, 0.0
            else:
                weight[lr.classes_], bias[lr.classes_] = lr.coef_, lr.intercept_
        self.head_weight.copy_(torch.from_numpy(weight).to(self.head_weight))
        self.head_bias.copy_(torch.from_numpy(bias).to(self.head_bias))

    def save_pretrained(self, folder: str | Path, **kwargs: Any) -> None:
        """The encoder (``AutoModel`` loads it) and :data:`HEAD_FILE` beside it."""
        self.encoder.save_pretrained(folder, **kwargs)
        (Path(folder) / HEAD_FILE).write_text(json.dumps({
            "pooling": "mean", "normalize": self.normalize, "multi_label": self.multi_label,
            "weight": self.head_weight.tolist(), "bias": self.head_bias.tolist(),
            "id2label": {str(k): v for k, v in self.encoder.config.id2label.items()},
        }))


def load_setfit(folder: str | Path, **kwargs: Any) -> SetFitClassifier:
    """A :class:`SetFitClassifier` from an exported ``model/`` folder (encoder + :data:`HEAD_FILE`).

    Raises:
        ConfigError: the folder has no :data:`HEAD_FILE`.
    """
    from transformers import AutoModel

    path = Path(folder) / HEAD_FILE
    if not path.is_file():
        raise ConfigError(f"{folder} has no {HEAD_FILE}: not a SetFit export")
    head = json.loads(path.read_text())
    encoder = AutoModel.from_pretrained(folder, **kwargs)
    model = SetFitClassifier(encoder, len(head["bias"]), normalize=head["normalize"], multi_label=head["multi_label"])
    model.head_weight.copy_(torch.tensor(head["weight"]))
    model.head_bias.copy_(torch.tensor(head["bias"]))
    return model
