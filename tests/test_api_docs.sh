#!/usr/bin/env bash
# Every public function (DPT_API in include/dptrain/*.h) has a documentation
# comment where it is declared; scripts/gen-api-docs --check fails otherwise.
# It also reports (without failing) when docs/api/ needs regenerating.
set -u
src=${DPT_SOURCE_DIR:?}
command -v python3 >/dev/null || { echo "skip: python3 not found"; exit 77; }
exec python3 "$src/scripts/gen-api-docs" --check
