"""The evaluate stage: score the base model and every trained cell, then analyse the scores.

Modules, in the order a score is produced:

- :mod:`curatune.evaluate.config`           ``EvaluateConfig`` and the suite specs (``evaluate:`` section)
- :mod:`curatune.evaluate.suites`           one class per suite kind: load items, fingerprint, score a model
- :mod:`curatune.evaluate.generation`       greedy generation for the task suite
- :mod:`curatune.evaluate.metrics`          task metrics (sacrebleu, exact match, field F1, comet_like)
                                            and every metric's direction and scale
- :mod:`curatune.evaluate.lm_scoring`       batched log-likelihoods (``ItemScores``), as lm-evaluation-harness
- :mod:`curatune.evaluate.multiple_choice`, :mod:`~curatune.evaluate.perplexity`,
  :mod:`~curatune.evaluate.retention`       the log-likelihood suites
- :mod:`curatune.evaluate.runner`           ``run_evaluate``: units, resume (``PartStore``), merged scores
- :mod:`curatune.evaluate.analysis`         learning vs forgetting, saturation, early vs final (a package)
- :mod:`curatune.evaluate.report`           the terminal report (``curatune report``)
- :mod:`curatune.evaluate.command`, :mod:`~curatune.evaluate.report_command`   the CLI commands

Models come from :mod:`curatune.models`, files from :mod:`curatune.rundir`; nothing here
imports the training stage.
"""
