#!/usr/bin/env bash
# The depth experiment of docs/structural.md on one GPU machine: a sweep file (default
# examples/sweep_structural_depth.toml, 2 / 4 / 6 layers x 3 seeds; SWEEP_FILE=
# examples/sweep_structural_depth_8seeds.toml for 2 / 4 / 6 / 8 layers x 8 seeds), one process
# per cell with the cell's seeds trained together as stacked weights ($WORKERS cells side by
# side, default 3), then `analyze` of every run, then the results without checkpoints in a
# tarball under $OUT (or ./out). The sweep resumes where a time limit (SWEEP_SECONDS) stopped
# it. Expects grokscope importable (pip install -e . or PYTHONPATH).
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
# several processes share the GPU: MPS lets their small kernels run side by side, if present
if nvidia-cuda-mps-control -d 2>/dev/null; then
    if timeout 60 python3 -c "import torch; torch.zeros(1, device='cuda'); print('MPS works')"; then
        :
    else
        echo quit | nvidia-cuda-mps-control; echo "MPS stopped: a client could not start"
    fi
else
    echo "no MPS"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
FILE=${SWEEP_FILE:-examples/sweep_structural_depth.toml}
NAME=$(python3 -c "import sys, tomllib; print(tomllib.load(open(sys.argv[1], 'rb'))['name'])" "$FILE")
start=$(date +%s)
timeout -s TERM "${SWEEP_SECONDS:-420}" python3 -m grokscope sweep "$FILE" \
    --out sweeps --workers "${WORKERS:-3}" --threads 1 -q 2>&1 | tail -5
echo "sweep: $(( $(date +%s) - start )) s"
for r in sweeps/$NAME/runs/*; do
    (timeout 120 python3 -m grokscope analyze "$r" --every 2 --threads 1 > "$r.analyze.log" 2>&1) &
done
wait
echo "sweep + analysis: $(( $(date +%s) - start )) s"
tail -n 3 sweeps/$NAME/runs/*.analyze.log
tar czf "$OUT/$NAME.tgz" --exclude=checkpoints --exclude=report.html "sweeps/$NAME"
ls -la "$OUT"
