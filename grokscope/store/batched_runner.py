"""Train K seeds as one batch into K ordinary run directories (the files ``train_run`` writes).

Each seed's directory gets its own config.json, status.json, metrics.parquet and checkpoints,
in the same formats, so every other layer (queries, analysis, ``grokscope train --resume``)
treats a batched run like any other. Writes are atomic and happen at the same moments as in
:func:`grokscope.store.runner.train_run`: metrics and status at every checkpoint.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from grokscope import config as config_mod
from grokscope.errors import RunDirError
from grokscope.store import rundir
from grokscope.store.runner import _stop_flag
from grokscope.tasks import build_dataset
from grokscope.train.batched import (
    BatchData,
    BatchedState,
    check_batch,
    new_batched_state,
    restore_batched_state,
    run_batched_training,
    seed_meta,
    seed_tensors,
)
from grokscope.train.loop import resolve_device, set_determinism


def train_batched(
    cfgs: list[config_mod.Config] | None,
    runs: list[Path],
    resume: bool = False,
    progress=None,
) -> list[dict]:
    """Train ``cfgs`` (differing only in train.seed / task.data_seed) into the new directories
    ``runs`` as one batch, or continue them with ``resume=True`` (their newest complete
    checkpoints must share one epoch). ``progress(run_index, row)`` sees every metrics row.
    Returns the final status dict of each run, in order.
    """
    runs = [Path(r) for r in runs]
    if resume:
        cfgs = [rundir.read_config(r) for r in runs]
        snapshots, rows = [], []
        for run in runs:
            epoch, weights, resume_tensors, meta = rundir.load_resume(run)
            snapshots.append((weights, resume_tensors, meta))
            table = rundir.read_metrics(run).to_dict("records")
            # from epoch 0 the loop evaluates epoch 0 again itself
            rows.append([row for row in table if row["epoch"] <= epoch] if epoch > 0 else [])
        epochs = sorted({m["epoch"] for _, _, m in snapshots})
        if len(epochs) > 1:
            raise RunDirError(
                f"runs resumed as one batch must stand at one checkpoint epoch, got {epochs}"
            )
    else:
        assert cfgs is not None and len(cfgs) == len(runs)
        for cfg in cfgs:
            config_mod.resolve(cfg)
        check_batch(cfgs)
        for run in runs:
            if (run / "config.json").exists():
                raise RunDirError(f"{run} already holds a run; use --resume to continue it")
        for cfg, run in zip(cfgs, runs, strict=True):
            run.mkdir(parents=True, exist_ok=True)
            rundir.write_config(run, cfg)
        rows = [[] for _ in runs]
    check_batch(cfgs)

    device = resolve_device(cfgs[0].train.device)
    set_determinism(cfgs[0].train.deterministic, device)
    datasets = [build_dataset(c.task) for c in cfgs]
    if resume:
        state = restore_batched_state(cfgs, datasets, device, snapshots)
    else:
        state = new_batched_state(cfgs, datasets, device)
    data = BatchData.from_datasets(datasets, device)
    for slot, run in enumerate(runs):
        rundir.write_status(
            run,
            state="running",
            device=str(device),
            epochs_done=state.epoch,
            epochs_budget=cfgs[slot].train.epochs,
            t_mem_epoch=state.t_mem_epoch[slot],
            t_grok_epoch=state.t_grok_epoch[slot],
            error=None,
            diverged_epoch=None,
        )

    final: dict[int, dict] = {}
    latest: dict[str, BatchedState] = {"state": state}

    def on_eval(i: int, row: dict) -> None:
        rows[i].append(row)
        if progress is not None:
            progress(i, row)

    def on_checkpoint(st: BatchedState, slots: list[int]) -> None:
        latest["state"] = st
        for slot in slots:
            i = st.runs[slot]
            weights, resume_ = seed_tensors(st, slot)
            # metrics first: a kill between the two leaves rows past the newest checkpoint,
            # which a resume truncates, never a checkpoint without its metrics
            rundir.write_metrics(runs[i], rows[i])
            rundir.save_checkpoint(runs[i], st.epoch, weights, resume_, seed_meta(st, slot))
            rundir.write_status(
                runs[i],
                state="running",
                epochs_done=st.epoch,
                step=st.step,
                wall_s=round(st.wall_s, 3),
                t_mem_epoch=st.t_mem_epoch[slot],
                t_grok_epoch=st.t_grok_epoch[slot],
            )

    def on_finish(i: int, status: dict) -> None:
        rundir.write_metrics(runs[i], rows[i])
        final[i] = rundir.write_status(runs[i], **status)

    with _stop_flag() as flag:
        try:
            outcome = run_batched_training(
                cfgs, state, data, on_eval, on_checkpoint, on_finish, lambda: flag["stop"]
            )
        except Exception as e:  # noqa: BLE001 - recorded in every unfinished run, then re-raised
            for i, run in enumerate(runs):
                if i not in final:
                    rundir.write_metrics(run, rows[i])
                    final[i] = rundir.write_status(
                        run,
                        state="failed",
                        error=f"{e.__class__.__name__}: {e}",
                        traceback=traceback.format_exc(limit=5),
                    )
            raise
    if outcome == "interrupted":
        st = latest["state"]
        for slot, i in enumerate(st.runs):
            final[i] = rundir.write_status(
                runs[i],
                state="interrupted",
                epochs_done=st.epoch,
                step=st.step,
                wall_s=round(st.wall_s, 3),
                t_mem_epoch=st.t_mem_epoch[slot],
                t_grok_epoch=st.t_grok_epoch[slot],
            )
    for i, run in enumerate(runs):
        if resume and i not in final:  # resumed at its last checkpoint, killed before "done"
            meta = snapshots[i][2]
            rundir.write_metrics(run, rows[i])
            final[i] = rundir.write_status(
                run,
                state="done",
                epochs_done=meta["epoch"],
                step=meta["step"],
                t_mem_epoch=meta.get("t_mem_epoch"),
                t_grok_epoch=meta.get("t_grok_epoch"),
            )
    return [final[i] for i in range(len(runs))]
