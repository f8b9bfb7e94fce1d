#!/usr/bin/env bash
# docs/errors.md is what scripts/gen-errors-doc makes from the sources now:
# every message the code can give, with its status, file, the tests that
# reach it (docs/errors-coverage.tsv, measured by gen-errors-doc --coverage)
# and the tests that look for it. Fails (with a diff) when a message was
# added, changed or removed without regenerating the page; lists the messages
# no test reaches or names (information, not a failure: coverage may lag).
set -u
src=${DPT_SOURCE_DIR:?}
command -v python3 >/dev/null || { echo "skip: python3 not found"; exit 77; }
exec python3 "$src/scripts/gen-errors-doc" --check --root "$src"
