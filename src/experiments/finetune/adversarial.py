"""Adversarial training on the input embeddings (FGM, PGD) as an extra loss term.

The adversary does not own the optimization step. A LightningModule's ``training_step`` runs its own
clean forward inside :meth:`watch`, asks :meth:`perturbed_loss` for the loss under a worst-case
perturbation of the embedding output, and returns ``clean_loss + adv_weight * adv_loss``; Lightning then
does one backward and one optimizer step as usual::

    with adversary.watch(model):
        clean_loss = loss_fn(model(**inputs))
    adv_loss = adversary.perturbed_loss(model, lambda: loss_fn(model(**inputs)), clean_loss)
    loss = clean_loss if adv_loss is None else clean_loss + adversary.adv_weight * adv_loss

Why not the usual recipe (backward, perturb ``word_embeddings.weight``, backward again, restore, step)?
That needs ``automatic_optimization = False``, and Lightning's manual optimization refuses
``accumulate_grad_batches`` and ``gradient_clip_val`` and leaves AMP scaling and DDP gradient sync to
hand-written code. Here the gradient with respect to the embedding *output* is taken with
``torch.autograd.grad`` (no parameter ``.grad`` is touched), the perturbation is added by a temporary
forward hook, and the embedding weights are never modified, so after the optimizer step the weights are
exactly what the optimizer alone makes them. Perturbing the output rather than the weight rows also
works when the embedding is frozen (LoRA): the hook then makes the output a leaf that requires grad.

References:
    * FGM: Miyato, Dai, Goodfellow, "Adversarial Training Methods for Semi-Supervised Text
      Classification", ICLR 2017, arXiv:1605.07725.
    * PGD: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018,
      arXiv:1706.06083 (PGD-K on the embedding output; FreeLB, Zhu et al. 2020, arXiv:1909.11764, is a
      different method that averages the gradients of all K steps and is not what is implemented here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from experiments.errors import ConfigError

__all__ = ["Adversary", "FGM", "PGD", "EMBEDDINGS_MODES", "NORMS", "find_embedding_module"]

EMBEDDINGS_MODES = ("word", "word+position")

LossFn = Callable[[], Tensor]


@runtime_checkable
class Adversary(Protocol):
    """What a training step needs from an adversary (see the module docstring for the call pattern)."""

    epsilon: float
    adv_weight: float
    skipped: int

    def watch(self, model: nn.Module) -> AbstractContextManager[None]: ...

    def perturbed_loss(self, model: nn.Module, loss_fn: LossFn, clean_loss: Tensor) -> Tensor | None: ...


def find_embedding_module(model: nn.Module, embeddings: str = "word") -> nn.Module:
    """The module whose output is perturbed.

    ``"word"``: ``model.get_input_embeddings()`` (also works through a peft wrapper).
    ``"word+position"``: the module named ``*embeddings`` that holds the word embedding as a direct child
    (``bert.embeddings``: word + position + token type, LayerNorm, dropout).

    Raises:
        ValueError: (``ConfigError``) the model has no such module.
    """
    name = type(model).__name__
    get = getattr(model, "get_input_embeddings", None)
    word = None
    if callable(get):
        try:
            word = get()
        except NotImplementedError:
            word = None
    if not isinstance(word, nn.Module):
        raise ConfigError(
            f"adversarial training: {name} has no get_input_embeddings(); cannot find the word embedding"
        )
    if embeddings == "word":
        return word
    owners = {
        id(module): module
        for module_name, module in model.named_modules()
        if module_name.endswith("embeddings")
        and module is not word
        and any(child is word for child in module.children())
    }
    if len(owners) != 1:
        found = "none" if not owners else f"{len(owners)} candidates"
        raise ConfigError(
            f"adversarial training with embeddings='word+position': {name} has no single module named "
            f"'*embeddings' that contains its word embedding ({found}); use embeddings='word'"
        )
    return next(iter(owners.values()))


def _track(output: Tensor) -> Tensor:
    """The embedding output, made a leaf that requires grad when the embedding is frozen."""
    if not isinstance(output, Tensor):
        raise TypeError(
            f"adversarial training: embedding module returned {type(output).__name__}, not a Tensor"
        )
    if torch.is_grad_enabled() and not output.requires_grad:
        return output.detach().requires_grad_()
    return output


@contextmanager
def _hooked(module: nn.Module, hook: Callable[[nn.Module, tuple, Tensor], Tensor]) -> Iterator[None]:
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _forward_with(module: nn.Module, r: Tensor, loss_fn: LossFn) -> tuple[Tensor, Tensor]:
    """Run ``loss_fn`` with ``r`` added to ``module``'s output; return (loss, unperturbed output)."""
    seen: list[Tensor] = []

    def add(_module: nn.Module, _args: tuple, output: Tensor) -> Tensor:
        output = _track(output)
        seen.append(output)
        return output + r.detach().to(output.dtype)

    with _hooked(module, add):
        loss = loss_fn()
    if not seen:
        raise RuntimeError("adversarial training: loss_fn() never ran the embedding module")
    return loss, seen[-1]


NORMS = ("example", "batch")


def _l2(r: Tensor, norm: str) -> Tensor:
    """L2 norm of ``r`` per example (``[B, 1, ..., 1]``, over all dims but the first) or over the batch
    (a scalar; also for a ``r`` without a batch dimension)."""
    if norm == "batch" or r.dim() < 2:
        return torch.linalg.vector_norm(r)
    return torch.linalg.vector_norm(r.flatten(1), dim=1).reshape(-1, *([1] * (r.dim() - 1)))


def _direction(loss: Tensor, embedded: Tensor | None, retain_graph: bool, norm: str = "example") -> Tensor | None:
    """g / ||g||_2 for g = d loss / d embedded, at least float32.

    ``norm="example"``: each example's gradient ``[T, H]`` has unit norm (Miyato et al. 2017), so the
    perturbation size does not depend on the batch size; an example whose gradient is zero gets none.
    ``norm="batch"``: one norm over the whole batch.

    None when the loss does not depend on ``embedded`` or no norm is positive and finite.
    """
    if embedded is None or not loss.requires_grad:
        return None
    (g,) = torch.autograd.grad(loss, embedded, retain_graph=retain_graph, allow_unused=True)
    if g is None:
        return None
    g = g.to(torch.promote_types(g.dtype, torch.float32))
    n = _l2(g, norm)
    if not bool(torch.isfinite(n).all()) or not bool((n > 0).any()):
        return None
    return torch.where(n > 0, g / n.clamp(min=torch.finfo(g.dtype).tiny), torch.zeros_like(g))


class _EmbeddingAdversary:
    """Shared machinery: validation, the recording hook, the final perturbed forward, skip counting."""

    def __init__(self, epsilon: float, adv_weight: float, embeddings: str, norm: str = "example"):
        if norm not in NORMS:
            raise ConfigError(f"adversarial training: norm must be one of {NORMS}, got {norm!r}")
        self.norm = norm
        if not epsilon > 0:
            raise ConfigError(f"adversarial training: epsilon must be > 0, got {epsilon}")
        if not adv_weight >= 0:
            raise ConfigError(f"adversarial training: adv_weight must be >= 0, got {adv_weight}")
        if embeddings not in EMBEDDINGS_MODES:
            raise ConfigError(
                f"adversarial training: embeddings must be one of {EMBEDDINGS_MODES}, got {embeddings!r}"
            )
        self.epsilon = float(epsilon)
        self.adv_weight = float(adv_weight)
        self.embeddings = embeddings
        self.skipped = 0
        self._module: nn.Module | None = None
        self._recorded: Tensor | None = None

    @contextmanager
    def watch(self, model: nn.Module) -> Iterator[None]:
        """Record the embedding output of the (one) clean forward run inside this block."""
        module = find_embedding_module(model, self.embeddings)
        self._module, self._recorded = module, None

        def record(_module: nn.Module, _args: tuple, output: Tensor) -> Tensor:
            self._recorded = _track(output)
            return self._recorded

        with _hooked(module, record):
            yield

    def perturbed_loss(self, model: nn.Module, loss_fn: LossFn, clean_loss: Tensor) -> Tensor | None:
        """Loss of ``loss_fn()`` with the adversarial perturbation added; None (and ``skipped += 1``)
        when the gradient is zero or not finite. The graph is kept for the caller's backward."""
        module, embedded = self._module, self._recorded
        self._module = self._recorded = None
        if module is None or find_embedding_module(model, self.embeddings) is not module:
            raise RuntimeError(
                "adversarial training: call perturbed_loss() after a forward inside watch(model)"
            )
        r = self._perturbation(module, loss_fn, clean_loss, embedded)
        if r is None:
            self.skipped += 1
            return None
        return _forward_with(module, r, loss_fn)[0]

    def _perturbation(
        self, module: nn.Module, loss_fn: LossFn, clean_loss: Tensor, embedded: Tensor | None
    ) -> Tensor | None:
        raise NotImplementedError


class FGM(_EmbeddingAdversary):
    """Fast gradient method (Miyato et al. 2017): r = epsilon * g / ||g||_2, one extra forward.

    ``norm="example"`` (default, as in the paper): the norm is each example's, so every example's
    perturbation has L2 size ``epsilon`` whatever the batch size; ``norm="batch"``: one norm over the batch
    (the whole batch's perturbation has size ``epsilon``, so each example's shrinks as the batch grows).
    """

    def __init__(self, epsilon: float = 1.0, adv_weight: float = 1.0, embeddings: str = "word",
                 norm: str = "example"):
        super().__init__(epsilon, adv_weight, embeddings, norm)

    def _perturbation(self, module, loss_fn, clean_loss, embedded):
        u = _direction(clean_loss, embedded, retain_graph=True, norm=self.norm)
        return None if u is None else self.epsilon * u


class PGD(_EmbeddingAdversary):
    """Projected gradient descent, PGD-K (Madry et al. 2018): ``steps`` (K) normalized ascent steps of size
    ``alpha``, each projected onto the L2 ball of radius ``epsilon`` (per example with ``norm="example"``,
    the default, or over the batch); ``steps + 1`` forwards in all, and only the final perturbation's loss
    is added (not FreeLB's average over the steps). With ``steps=1`` and ``alpha=epsilon`` it equals
    :class:`FGM`."""

    def __init__(
        self,
        epsilon: float = 1.0,
        alpha: float = 0.3,
        steps: int = 3,
        adv_weight: float = 1.0,
        embeddings: str = "word",
        norm: str = "example",
    ):
        super().__init__(epsilon, adv_weight, embeddings, norm)
        if not alpha > 0:
            raise ConfigError(f"adversarial training: alpha must be > 0, got {alpha}")
        if int(steps) != steps or steps < 1:
            raise ConfigError(f"adversarial training: steps must be an integer >= 1, got {steps}")
        self.alpha = float(alpha)
        self.steps = int(steps)

    def _perturbation(self, module, loss_fn, clean_loss, embedded):
        r: Tensor | None = None
        loss = clean_loss
        for k in range(self.steps):
            if r is not None:
                loss, embedded = _forward_with(module, r, loss_fn)
            u = _direction(loss, embedded, retain_graph=k == 0, norm=self.norm)  # the clean graph is the caller's
            if u is None:
                return None
            r = self.alpha * u if r is None else r + self.alpha * u
            r = r * torch.clamp(self.epsilon / _l2(r, self.norm).clamp(min=torch.finfo(r.dtype).tiny), max=1.0)
        return r
