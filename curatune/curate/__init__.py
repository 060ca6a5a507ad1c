"""Curation: deduplicate, filter, decontaminate and balance instruction data.

Entry points: :func:`curatune.curate.stage.run_curate` (config + run dir -> curate/) and
:class:`curatune.curate.pipeline.CurationPipeline` (records in, records + ledger out).

Modules:

- :mod:`.config`         one pydantic config per step; ``STEP_CONFIGS`` names every step once
- :mod:`.base`           the step interface (``Step``, ``StepResult``, ``Removal``, ``CurateContext``)
- :mod:`.pipeline`       ``CurationPipeline``: runs steps, keeps the ledger and the invariant
- :mod:`.stage`          ``run_curate``: load sources, run the pipeline, write the run directory
- :mod:`.dedup`, :mod:`.minhash`, :mod:`.embeddings`, :mod:`.template_text`   exact, near and semantic dedup
- :mod:`.quality`, :mod:`.language`, :mod:`.model_score`, :mod:`.decontaminate`, :mod:`.balance`   the other steps
- :mod:`.detection`      precision and recall against planted-flaw labels
- :mod:`.command`        ``curatune curate``
"""
