#!/usr/bin/env bash
# `mpirun -np N dptrain train` against `dptrain train --workers N`: the same
# seed and N give the same model (the local and MPI all-reduces both add the
# workers' contributions in rank order, so the files are compared byte for
# byte, stricter than the 1e-6 the design asks for). Skips without MPI.
set -u
# Open MPI leaks on purpose at exit (its plugins): no leak reports in
# sanitizer builds here; the single-process tests cover our own memory.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
cli=${DPT_CLI:?}
src=${DPT_SOURCE_DIR:?}
if [ "${DPT_HAVE_MPI:-0}" != 1 ] || ! command -v mpirun >/dev/null; then
  echo "skipped: dptrain was built without MPI or mpirun is missing"
  exit 77
fi
# Open MPI refuses to run as root without these; they belong to the test
# harness, not to the library.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
d=$src/tests/fixtures/digits400
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0 pass=0
for n in 2 3; do
  args=(train --data "$d" --epochs 2 --batch 32 --seed 6 --quiet --device cpu)
  "$cli" "${args[@]}" --workers $n --out "$tmp/local$n" >/dev/null 2>"$tmp/err" || { echo "FAIL local $n: $(cat "$tmp/err")"; fail=$((fail+1)); continue; }
  timeout 300 mpirun -np $n "$cli" "${args[@]}" --out "$tmp/mpi$n" >"$tmp/out" 2>"$tmp/err" || { echo "FAIL mpirun -np $n: $(cat "$tmp/err")"; fail=$((fail+1)); continue; }
  if cmp -s "$tmp/local$n/model.safetensors" "$tmp/mpi$n/model.safetensors"; then
    pass=$((pass+1)); echo "N=$n: mpirun and local threads give the same model file"
  else
    echo "FAIL N=$n: mpirun and local models differ"; fail=$((fail+1))
  fi
  # only rank 0 prints the result
  [ "$(grep -c '^test accuracy' "$tmp/out")" = 1 ] && pass=$((pass+1)) || { echo "FAIL N=$n: $(cat "$tmp/out")"; fail=$((fail+1)); }
done
# Augmentation is drawn by the position in the global minibatch, which each
# rank works out alone: mpirun and local threads still give the same bytes.
args=(train --data "$d" --epochs 1 --batch 32 --seed 6 --quiet --device cpu --augment reflect,rotate=10,translate=2)
if "$cli" "${args[@]}" --workers 3 --out "$tmp/alocal" >/dev/null 2>"$tmp/err" &&
   timeout 300 mpirun -np 3 "$cli" "${args[@]}" --out "$tmp/ampi" >/dev/null 2>>"$tmp/err"; then
  if cmp -s "$tmp/alocal/model.safetensors" "$tmp/ampi/model.safetensors"; then
    pass=$((pass+1)); echo "N=3 with --augment: mpirun and local threads give the same model file"
  else
    echo "FAIL N=3 with --augment: mpirun and local models differ"; fail=$((fail+1))
  fi
else
  echo "FAIL --augment: $(cat "$tmp/err")"; fail=$((fail+1))
fi
# A layer graph (residual blocks, max pooling, concat, dropout, global
# average pooling): 3 workers take uneven shares (11/11/10 of 32), so the
# dropout masks must follow each observation's place in the whole minibatch
# under both backends alike. No --threads: a rank shares the machine's CPUs
# with the ranks beside it as local workers do, so both sides run BLAS with
# the same thread count (OpenBLAS rounds some of this network's shapes
# differently with another count).
net=$src/examples/nets/resnet-mini-28x28x1.net
args=(train --data "$d" --net "$net" --epochs 1 --batch 32 --seed 6 --quiet --device cpu)
if ! "$cli" "${args[@]}" --workers 3 --out "$tmp/glocal" >/dev/null 2>"$tmp/err"; then
  echo "FAIL graph local 3: $(cat "$tmp/err")"; fail=$((fail+1))
elif ! timeout 300 mpirun -np 3 "$cli" "${args[@]}" --out "$tmp/gmpi" >/dev/null 2>"$tmp/err"; then
  echo "FAIL graph mpirun -np 3: $(cat "$tmp/err")"; fail=$((fail+1))
elif cmp -s "$tmp/glocal/model.safetensors" "$tmp/gmpi/model.safetensors"; then
  pass=$((pass+1)); echo "graph network, N=3: mpirun and local threads give the same model file"
else
  echo "FAIL graph network N=3: mpirun and local models differ"; fail=$((fail+1))
fi
# --workers makes no sense under MPI: each rank is one worker.
if timeout 60 mpirun -np 2 "$cli" train --data "$d" --device cpu --workers 2 --epochs 1 --out "$tmp/w" >/dev/null 2>"$tmp/err"; then
  echo "FAIL: --workers under mpirun accepted"; fail=$((fail+1))
elif grep -q "under MPI each rank is one worker" "$tmp/err"; then pass=$((pass+1))
else echo "FAIL: $(cat "$tmp/err")"; fail=$((fail+1)); fi
echo "test_train_mpi: $pass passed, $fail failed"
[ $fail -eq 0 ]
