"""The sweep stage: fine-tune nested subsets of the data, one cell per (method, size, seed).

Modules, in the order data flows through them:

- :mod:`curatune.train.config`   ``TrainConfig``, the ``train:`` section of the experiment config
- :mod:`curatune.train.subsets`  held-out carve and nested, stratified subsets
- :mod:`curatune.train.plan`     writes train/heldout.parquet, pool.parquet, subsets.parquet, plan.json
- :mod:`curatune.chat_format`  chat template rendering and the assistant-only loss mask
- :mod:`curatune.train.cell`     one cell with the transformers Trainer: skip, restart, resume, done.json
- :mod:`curatune.train.sweep`    ``run_sweep``: local, accelerate-launched or Ray execution, progress
- :mod:`curatune.train.command`  ``curatune sweep``
"""
