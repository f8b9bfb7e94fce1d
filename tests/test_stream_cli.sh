#!/usr/bin/env bash
# dptrain train --cache (issue 21, part 3): a folder over a deliberately
# small DPT_MAX_CACHE_MEMORY streams (the mode line says so) and trains the
# same model, byte for byte, as --cache memory, with 2 workers and
# augmentation; bad --cache and budget values exit 1; a corrupt image met
# mid-training in streaming mode stops with its name and exit 1, leaving no
# model, and --skip-corrupt drops it in both modes alike.
set -u
. "$(dirname "$0")/cli_helpers.sh"
src=${DPT_SOURCE_DIR:?}


d=$src/tests/fixtures/digits400 # 400 grey 28x28 PNGs: 306 KB decoded
train() { "$cli" train --epochs 2 --batch 32 --workers 2 --augment reflect,translate=2 "$@"; }

# ---- help and bad values -------------------------------------------------------
"$cli" train --help >"$tmp/h"
grep -q -- "--cache MODE" "$tmp/h" && grep -q "(default auto)" "$tmp/h" && grep -q DPT_MAX_CACHE_MEMORY "$tmp/h" \
  && ok || bad "train --help shows --cache and its default"
expect_error "--cache: 'disk' is not auto, memory or none" "$cli" train --data "$d" --cache disk
for v in 12Q -5 +5 10KB " 10" "1 G" 0x10 nan inf 1e300 17T0 .5G; do
  expect_error "DPT_MAX_CACHE_MEMORY: '$v' is not a size" env DPT_MAX_CACHE_MEMORY="$v" "$cli" train --data "$d" --out "$tmp/x"
done
[ ! -e "$tmp/x/model.safetensors" ] && ok || bad "a bad budget wrote a model"

# ---- over the budget: streaming, the same model -----------------------------------
DPT_MAX_CACHE_MEMORY=100K train --data "$d" --out "$tmp/auto" >"$tmp/auto.log" 2>&1 || bad "auto run failed: $(cat "$tmp/auto.log")"
grep -q "^data cache: none (auto): the decoded images, about 306.2 KiB, would not fit the budget of 100.0 KiB (DPT_MAX_CACHE_MEMORY); streaming" "$tmp/auto.log" \
  && ok || bad "auto over the budget: mode line: $(grep cache "$tmp/auto.log")"
DPT_MAX_CACHE_MEMORY=0.001G train --data "$d" --out "$tmp/fits" >"$tmp/fits.log" 2>&1 || bad "fitting run failed"
grep -q "^data cache: memory (auto): 306.2 KiB of decoded images fit the budget of 1.0 MiB (DPT_MAX_CACHE_MEMORY)" "$tmp/fits.log" \
  && ok || bad "auto within the budget: mode line: $(grep cache "$tmp/fits.log")"
train --data "$d" --out "$tmp/mem" --cache memory >"$tmp/mem.log" 2>&1 || bad "memory run failed"
grep -q "^data cache: memory (--cache memory)" "$tmp/mem.log" && ok || bad "memory: mode line"
for o in auto fits; do
  cmp -s "$tmp/mem/model.safetensors" "$tmp/$o/model.safetensors" && ok || bad "$o: model differs from --cache memory's"
done
grep "test accuracy" "$tmp/mem.log" >"$tmp/a1"; grep "test accuracy" "$tmp/auto.log" >"$tmp/a2"
[ -s "$tmp/a1" ] && cmp -s "$tmp/a1" "$tmp/a2" && ok || bad "test accuracy differs"

# ---- a corrupt image found mid-training ------------------------------------------------
cp -r "$d" "$tmp/ds"
f=$(ls "$tmp/ds/5" | sed -n 20p)
head -c 100 "$d/5/$f" >"$tmp/ds/5/$f"
for w in 1 2; do
  expect_error "$tmp/ds/5/$f: cannot decode image" timeout 120 "$cli" train --data "$tmp/ds" --cache none \
    --epochs 2 --batch 32 --workers $w --out "$tmp/c$w"
  [ ! -e "$tmp/c$w/model.safetensors" ] && ok || bad "corrupt image, $w workers: model written"
done
# Preloading finds it before training, with the same name.
expect_error "$tmp/ds/5/$f: cannot decode image" "$cli" train --data "$tmp/ds" --cache memory --out "$tmp/cm"
# --skip-corrupt: dropped at open in both modes, the same model.
train --data "$tmp/ds" --skip-corrupt --cache none --out "$tmp/s0" >"$tmp/s0.log" 2>&1 || bad "skip-corrupt streaming run failed"
train --data "$tmp/ds" --skip-corrupt --cache memory --out "$tmp/s1" >"$tmp/s1.log" 2>&1 || bad "skip-corrupt memory run failed"
grep -qF "$tmp/ds/5/$f" "$tmp/s0.log" && grep -q "training on 359 images" "$tmp/s0.log" && ok || bad "skip-corrupt streaming: warning"
cmp -s "$tmp/s0/model.safetensors" "$tmp/s1/model.safetensors" && ok || bad "skip-corrupt: models differ"

echo "test_stream_cli: $pass passed, $fail failed"
[ $fail -eq 0 ]
