"""Peak RSS of the parent process after loading, after each curation step and after each write,
on the 55k self_instruct records (where the memory of `curatune curate` goes).

    nice python bench/curate_memory_steps.py ../shared/data/instruct/self_instruct/data/finetuning/t0_train_50k/data_per_template
"""
import resource, tempfile, time, json, sys
from pathlib import Path
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import pandas, pyarrow
from curatune.config import validate_config
from curatune.curate.stage import run_curate
from curatune.rundir import RunDir
from curatune.curate import pipeline as pl
print("floor", round(peak()), flush=True)
for name, cls in pl.STEP_CLASSES.items():
    def wrap(f, name=name):
        def run(self, records, context):
            before = peak(); r = f(self, records, context)
            print(f"{name}: peak before {before:.0f} MiB, after {peak():.0f} MiB", flush=True)
            return r
        return run
    cls.run = wrap(cls.run)
import curatune.data.loaders as L
orig = L.load_sources
def load_sources(*a, **k):
    r = orig(*a, **k); print(f"loaded: peak {peak():.0f} MiB", flush=True); return r
L.load_sources = load_sources
import curatune.curate.stage as S
S.load_sources = load_sources  # the stage imported the name itself
import curatune.rundir as R
orig_w = R.atomic_write_parquet
def w(path, frame):
    orig_w(path, frame); print(f"wrote {Path(path).name}: peak {peak():.0f} MiB", flush=True)
S.atomic_write_parquet = w
SI = sys.argv[1]
out = Path(tempfile.mkdtemp())
cfg = validate_config({"run_dir": str(out), "data": {"sources": [{"path": SI, "category": "{file}"}]},
                       "curate": {"workers": 2, "progress": False}})
run_curate(cfg, RunDir(out), progress=False)
print("end", round(peak()))
