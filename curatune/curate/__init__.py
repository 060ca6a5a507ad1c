"""Curation: deduplicate, filter, decontaminate and balance instruction data.

Entry points: :func:`curatune.curate.pipeline.run_curate` (config + run dir) and
:class:`curatune.curate.pipeline.CurationPipeline` (records in, records + ledger out).
"""
