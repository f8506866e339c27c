"""Wall time of a TrainingMap fit at a realistic size: 40 runs x 250 checkpoints x 14 features.

Data come from a planted 4-state left-to-right explicit-duration HMM (start -> optional detour
-> plateau -> converged), the detour taken by half of the runs, which converge later. The fit
searches 1..8 states with 5 restarts each, as in Hu et al. (TMLR 2023), and prints the detour
tests (raw and Holm-adjusted p, visits after the default minimum dwell of 2 checkpoints).
Target: at most 60 s on a 2-core machine.

Run: python benchmarks/bench_hmm.py
"""

from __future__ import annotations

import time

import numpy as np

from grokscope.dynamics.hmm import TrainingMap

N_RUNS, N_CHECKPOINTS, N_FEATURES = 40, 250, 14


def planted_runs(seed: int = 0) -> tuple[list[np.ndarray], list[float], list[np.ndarray]]:
    """Feature sequences, convergence epochs and epochs of the planted runs."""
    rng = np.random.default_rng(seed)
    start = np.zeros(N_FEATURES)
    plateau = 3.0 * rng.choice([-1.0, 1.0], N_FEATURES)
    final = plateau + 3.0 * rng.choice([-1.0, 1.0], N_FEATURES)
    # The detour lies halfway between plateau and final and takes its time equally from
    # both, so a detour run's per-run feature means stay where a direct run's are and the
    # paper's per-run z-scoring does not split states by run type.
    detour = 0.5 * (plateau + final)
    means = np.stack([start, detour, plateau, final])
    takes_detour = rng.permutation(N_RUNS) < N_RUNS // 2

    sequences, convergence, epochs = [], [], []
    for i in range(N_RUNS):
        t_start = int(rng.integers(40, 60))
        t_detour = 2 * int(rng.integers(20, 30)) if takes_detour[i] else 0
        t_plateau = int(rng.integers(80, 100)) - t_detour // 2
        edges = np.cumsum([t_start, t_detour, t_plateau])
        states = np.full(N_CHECKPOINTS, 3)
        states[: edges[0]] = 0
        states[edges[0] : edges[1]] = 1
        states[edges[1] : edges[2]] = 2
        ep = 20.0 * np.arange(N_CHECKPOINTS)
        sequences.append(means[states] + rng.standard_normal((N_CHECKPOINTS, N_FEATURES)))
        convergence.append(float(ep[edges[2]]))
        epochs.append(ep)
    return sequences, convergence, epochs


def main() -> None:
    sequences, convergence, epochs = planted_runs()
    names = [f"feature_{j}" for j in range(N_FEATURES)]
    tm = TrainingMap(n_states_range=range(1, 9), n_restarts=5, random_state=0)
    t0 = time.perf_counter()
    tm.fit(sequences, names, convergence, epochs)
    wall = time.perf_counter() - t0
    print(f"data: {N_RUNS} runs x {N_CHECKPOINTS} checkpoints x {N_FEATURES} features")
    print(f"fit wall time: {wall:.1f} s (states 1..8, 5 restarts, n_iter={tm.n_iter})")
    print(f"chosen n_states: {tm.n_states_} (planted: 4)")
    print("held-out BIC:", {n: round(b) for n, b in tm.bic_.items()})
    print(f"detour states: {tm.detours_} (planted: [1])")
    for st in tm.states_:
        if st.p_value is not None:
            print(
                f"  S{st.id}: {len(st.visited_runs)}/{N_RUNS} runs visit, Mann-Whitney "
                f"p = {st.p_value:.2g} (Holm {st.p_value_holm:.2g}), detour = {st.detour}"
            )
    print(
        f"EM fits: {tm.n_fits_}, stopped at n_iter: {tm.n_unconverged_fits_}, "
        f"degenerate restarts: {tm.n_failed_restarts_}"
    )


if __name__ == "__main__":
    main()
