"""Sweeps of deployment over a grid — models x device cards x compensation x hardware variants x times x chip
instances — run on ``dask.distributed`` (optional: ``pip install aimc[dask]``) or in a plain loop.

    spec = aimc.sweep.load_spec("sweep.toml")          # or SweepSpec.from_dict({...}); validated here
    res = aimc.sweep.run_sweep(spec, "sweep-out")      # resumable; LocalCluster, scheduler=..., or serial=True
    res.rows, res.summary(), res.table()               # tidy table; files in sweep-out/

See ``aimc/sweep/README.md`` for the spec format and the guarantees.
"""
from .run import SweepError, have_dask, run_sweep, run_task
from .spec import SpecError, SweepSpec, Task, load_spec, set_path
from .table import COLUMNS, SweepResults

__all__ = ["COLUMNS", "SpecError", "SweepError", "SweepResults", "SweepSpec", "Task", "have_dask", "load_spec",
           "run_sweep", "run_task", "set_path"]
