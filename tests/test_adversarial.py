"""Adversarial training (FGM, PGD): every expectation is computed independently of the adversary code,
either by the classic weight-perturbation recipe or by feeding ``inputs_embeds`` by hand."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from experiments.finetune.adversarial import FGM, PGD, Adversary

EPS = 0.7


@pytest.fixture(scope="module")
def base_model(tiny_encoder_dir):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_encoder_dir, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    return model.double()


@pytest.fixture
def model(base_model):
    return copy.deepcopy(base_model).train()


def make_batch(unique: bool = True):
    g = torch.Generator().manual_seed(3)
    if unique:  # every token id at most once in the whole batch, no padding
        ids = (torch.randperm(100, generator=g)[:12] + 5).view(2, 6)
        mask = torch.ones_like(ids)
    else:
        ids = torch.randint(5, 40, (2, 6), generator=g)
        mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
        ids[1, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}, torch.tensor([0, 2])


def loss_fn(out, labels):
    return nn.functional.cross_entropy(out.logits, labels)


def adversarial_step(model, adversary, inputs, labels):
    """Exactly the pattern a training_step uses; returns (total, clean, adv)."""
    with adversary.watch(model):
        clean = loss_fn(model(**inputs), labels)
    adv = adversary.perturbed_loss(model, lambda: loss_fn(model(**inputs), labels), clean)
    total = clean if adv is None else clean + adversary.adv_weight * adv
    return total, clean, adv


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def record_layernorm_input(model, store):
    """Pre-hook on bert.embeddings.LayerNorm: its input is word + token type + position embeddings."""
    return model.bert.embeddings.LayerNorm.register_forward_pre_hook(lambda m, a: store.append(a[0].detach()))


def unit(g, norm):
    """g / ||g||_2 with the norm over each example's [T, H] (Miyato et al.) or over the whole batch."""
    if norm == "batch":
        return g / g.norm()
    return torch.stack([x / x.norm() for x in g])


def manual_fgm_grads(model, inputs, labels, eps, weight, norm="example"):
    """FGM through ``inputs_embeds``: no hooks, no adversary code."""
    e = model.bert.embeddings.word_embeddings(inputs["input_ids"])
    mask = inputs["attention_mask"]
    clean = loss_fn(model(inputs_embeds=e, attention_mask=mask), labels)
    (g,) = torch.autograd.grad(clean, e, retain_graph=True)
    r = eps * unit(g, norm)
    adv = loss_fn(model(inputs_embeds=e + r.detach(), attention_mask=mask), labels)
    (clean + weight * adv).backward()
    return clean, adv


def test_fgm_satisfies_protocol():
    assert isinstance(FGM(), Adversary) and isinstance(PGD(), Adversary)


@pytest.mark.parametrize("opt,norm", [("sgd", "example"), ("adamw", "example"), ("sgd", "batch")])
def test_fgm_step_matches_independent_gradient_and_leaves_no_perturbation(model, opt, norm):
    inputs, labels = make_batch(unique=False)
    ref = copy.deepcopy(model)
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1), "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2)}[
        opt
    ]
    adversary = FGM(epsilon=EPS, adv_weight=0.5, norm=norm)

    optimizer = make(model.parameters())
    total, _, adv = adversarial_step(model, adversary, inputs, labels)
    assert adv is not None
    total.backward()
    optimizer.step()

    ref_optimizer = make(ref.parameters())
    manual_fgm_grads(ref, inputs, labels, EPS, 0.5, norm)
    ref_optimizer.step()

    # Same gradients summed in a different order: equal up to float64 rounding. A perturbation left in
    # the weights (size EPS) or a second update would be many orders of magnitude larger.
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-10, rtol=0), name
    with torch.no_grad():
        assert torch.allclose(model(**inputs).logits, ref(**inputs).logits, atol=1e-10, rtol=0)
    assert not model.bert.embeddings.word_embeddings._forward_hooks


def test_fgm_equals_classic_weight_perturbation(model):
    inputs, labels = make_batch(unique=True)
    classic = copy.deepcopy(model)

    total, _, _ = adversarial_step(model, FGM(epsilon=EPS, norm="batch"), inputs, labels)
    total.backward()

    # Classic recipe: backward, perturb the weight rows by eps * g_w / ||g_w||, backward again, restore.
    # One norm over all rows: the batch-wide form (norm="batch").
    loss_fn(classic(**inputs), labels).backward()
    weight = classic.bert.embeddings.word_embeddings.weight
    backup = weight.detach().clone()
    with torch.no_grad():
        weight.add_(EPS * weight.grad / weight.grad.norm())
    loss_fn(classic(**inputs), labels).backward()
    with torch.no_grad():
        weight.copy_(backup)

    ours, theirs = grads(model), grads(classic)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.allclose(ours[name], theirs[name], atol=1e-6), name


def test_fgm_under_lora_perturbs_frozen_embeddings(model):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"]))
    assert not peft_model.get_input_embeddings().weight.requires_grad
    inputs, labels = make_batch(unique=False)
    total, clean, adv = adversarial_step(peft_model, FGM(epsilon=EPS), inputs, labels)
    assert adv is not None and not torch.isclose(adv, clean)
    total.backward()
    lora = {n: p.grad for n, p in peft_model.named_parameters() if "lora_" in n}
    assert lora and all(g is not None for g in lora.values())
    assert any(g.abs().sum() > 0 for g in lora.values())
    assert peft_model.get_input_embeddings().weight.grad is None


def test_pgd_one_step_equals_fgm_and_stays_in_ball(model):
    inputs, labels = make_batch(unique=False)
    other = copy.deepcopy(model)
    _, _, adv_fgm = adversarial_step(model, FGM(epsilon=EPS), inputs, labels)
    adv_fgm.backward()
    _, _, adv_pgd = adversarial_step(other, PGD(epsilon=EPS, alpha=EPS, steps=1), inputs, labels)
    adv_pgd.backward()
    assert torch.allclose(adv_fgm, adv_pgd, atol=1e-10)
    g1, g2 = grads(model), grads(other)
    for name in g1:
        assert torch.allclose(g1[name], g2[name], atol=1e-9), name

    # K = 3: measure r as the difference of the embedding sums between the last and the clean forward.
    model.zero_grad()
    seen, calls = [], []
    handle = record_layernorm_input(model, seen)
    pgd = PGD(epsilon=EPS, alpha=0.5, steps=3, norm="batch")
    try:
        with pgd.watch(model):
            clean = loss_fn(model(**inputs), labels)

        def again():
            calls.append(1)
            return loss_fn(model(**inputs), labels)

        adv = pgd.perturbed_loss(model, again, clean)
    finally:
        handle.remove()
    assert len(calls) == 3 and len(seen) == 4
    norms = [(s - seen[0]).norm().item() for s in seen[1:]]
    assert norms[0] == pytest.approx(0.5, rel=1e-6)  # first step: alpha, inside the ball
    assert all(n <= EPS + 1e-6 for n in norms)
    assert norms[-1] == pytest.approx(EPS, rel=1e-6)  # 3 * 0.5 > eps: projected onto the sphere
    assert adv is not None and adv.item() > clean.item()
    assert all(p.grad is None for p in model.parameters())  # intermediate steps touch no .grad


def test_zero_gradient_is_skipped(model):
    inputs, labels = make_batch()
    for adversary in (FGM(), PGD()):
        with adversary.watch(model):
            clean = loss_fn(model(**inputs), labels) * 0
        called: list[int] = []
        adv = adversary.perturbed_loss(model, lambda called=called: called.append(1), clean)
        assert adv is None and adversary.skipped == 1 and not called
        assert not model.bert.embeddings.word_embeddings._forward_hooks
    assert all(p.grad is None for p in model.parameters())


def test_bf16_autocast_on_cpu(base_model):
    model = copy.deepcopy(base_model).float().train()
    inputs, labels = make_batch(unique=False)
    for adversary in (FGM(epsilon=EPS), PGD(epsilon=EPS, alpha=0.3, steps=2)):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            total, clean, adv = adversarial_step(model, adversary, inputs, labels)
        assert adv is not None and torch.isfinite(total) and adversary.skipped == 0
        total.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_word_plus_position_perturbs_embeddings_output(model):
    inputs, labels = make_batch(unique=False)
    seen = []
    handle = model.bert.encoder.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    adversary = FGM(epsilon=EPS, embeddings="word+position")
    try:
        with adversary.watch(model):
            clean = loss_fn(model(**inputs), labels)
        (g,) = torch.autograd.grad(clean, seen[0], retain_graph=True)
        adv = adversary.perturbed_loss(model, lambda: loss_fn(model(**inputs), labels), clean)
    finally:
        handle.remove()
    assert adv is not None and len(seen) == 2
    assert torch.allclose(seen[1] - seen[0], EPS * unit(g, "example"), atol=1e-10)
    assert not model.bert.embeddings._forward_hooks


def test_bad_models_raise_value_error():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(10, 4)

        def get_input_embeddings(self):
            return self.table

    with pytest.raises(ValueError, match="Toy"):
        with FGM(embeddings="word+position").watch(Toy()):
            pass
    with pytest.raises(ValueError, match="Linear"):
        with FGM().watch(nn.Linear(2, 2)):
            pass
    with pytest.raises(ValueError):
        FGM(embeddings="position")
    with pytest.raises(ValueError):
        PGD(steps=0)


def test_hooks_removed_on_exceptions(model):
    inputs, labels = make_batch()
    adversary = PGD(epsilon=EPS, alpha=0.3, steps=2)
    word = model.bert.embeddings.word_embeddings
    with pytest.raises(KeyError):
        with adversary.watch(model):
            raise KeyError("inside watch")
    assert not word._forward_hooks

    def failing():
        model(**inputs)
        raise KeyError("inside loss_fn")

    with adversary.watch(model):
        clean = loss_fn(model(**inputs), labels)
    with pytest.raises(KeyError):
        adversary.perturbed_loss(model, failing, clean)
    assert not word._forward_hooks
    with pytest.raises(RuntimeError, match="watch"):  # state is not reused after a failed call
        adversary.perturbed_loss(model, failing, clean)


def _perturbations(model, adversary, inputs, labels):
    """The perturbation r added to the word-embedding output, per example ``[B, T, H]``."""
    seen = []
    handle = record_layernorm_input(model, seen)
    try:
        adversarial_step(model, adversary, inputs, labels)
    finally:
        handle.remove()
    return seen[-1] - seen[0]


@pytest.mark.parametrize("make", [lambda: FGM(epsilon=EPS), lambda: PGD(epsilon=EPS, alpha=0.5, steps=3)])
def test_per_example_perturbation_has_size_epsilon_whatever_the_batch(model, make):
    """Miyato et al. normalise each example: its perturbation is epsilon long, and the same whether the
    example is alone or in a batch (no dropout, so the example's gradient does not depend on the others)."""
    inputs, labels = make_batch(unique=False)
    model.eval()  # no dropout: the gradient of each example is its own
    r = _perturbations(model, make(), inputs, labels)
    norms = [float(r[i, : int(inputs["attention_mask"][i].sum())].norm()) for i in range(2)]
    assert norms == pytest.approx([EPS, EPS], rel=1e-6)
    alone = {k: v[:1] for k, v in inputs.items()}
    r0 = _perturbations(model, make(), alone, labels[:1])
    # Mean cross-entropy over 2 examples halves each gradient; after normalisation that disappears.
    assert torch.allclose(r0[0], r[0], atol=1e-8)
    # The batch-wide norm spreads epsilon over the batch: each example gets less.
    rb = _perturbations(model, FGM(epsilon=EPS, norm="batch"), inputs, labels)
    assert float(rb.norm()) == pytest.approx(EPS, rel=1e-6) and float(rb[0].norm()) < EPS


def test_unknown_norm_is_a_config_error():
    from experiments.errors import ConfigError

    with pytest.raises(ConfigError, match="norm"):
        FGM(norm="token")
