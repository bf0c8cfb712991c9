"""LightningModules, one per task family (token classification, sequence classification, ranking).

Strategies (LoRA, FGM/PGD) are not modules: LoRA is applied when the model is built and adversarial
training is a component the shared training step asks for an extra loss.
"""
