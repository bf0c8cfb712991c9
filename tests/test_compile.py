"""module.compile: the network is compiled in place (checkpoint and export keys unchanged), and refused
together with adversarial training. A full compiled training run is in benchmarks (minutes of CPU)."""

from __future__ import annotations

import pytest

from experiments.errors import ConfigError


def _model(tiny_encoder_dir):
    from experiments.models.build import build_model

    return build_model(str(tiny_encoder_dir), head="token_classification", labels=["O", "B-X", "I-X"])


def test_compile_keeps_the_state_dict_keys(tiny_encoder_dir):
    from experiments.modules.token_classification import TokenClassificationModule

    plain = TokenClassificationModule(model=_model(tiny_encoder_dir), labels=["O", "B-X", "I-X"])
    compiled = TokenClassificationModule(model=_model(tiny_encoder_dir), labels=["O", "B-X", "I-X"], compile=True)
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert compiled.model._compiled_call_impl is not None


def test_compile_with_an_adversary_is_refused(tiny_encoder_dir):
    from experiments.finetune.adversarial import FGM
    from experiments.modules.token_classification import TokenClassificationModule

    with pytest.raises(ConfigError, match="compile"):
        TokenClassificationModule(model=_model(tiny_encoder_dir), labels=["O", "B-X", "I-X"], adversary=FGM(),
                                  compile=True)
