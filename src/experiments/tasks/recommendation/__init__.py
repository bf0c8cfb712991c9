"""Text-based recommendation (click prediction) in the MIND format: readers and writers (``mind``),
converters from MovieLens and Amazon reviews (``convert``), the DataModule (``datamodule``), the MIND
ranking metrics (``metrics``) and popularity/random baselines (``baselines``)."""
