#!/usr/bin/env bash
# The dashboard in a real browser: Debian's chromium, headless, driven by
# puppeteer-core (scripts/fetch-browser-driver installs it), loads the page
# of a `dptrain train --serve` run on tests/fixtures/digits400 and sees the
# loss plot's points increase three times as iterations pass (and a second
# tab, opened later, gets the history and more); the page
# shows the iteration, speed, settings, both workers' time in collectives,
# requests nothing from another origin and raises no script error; when the
# run is stopped (SIGTERM, once the browser has seen it grow) the page says
# "interrupted". Skips (77) when chromium, node or the driver is absent.
set -u
. "$(dirname "$0")/cli_helpers.sh"
src=${DPT_SOURCE_DIR:?}
d=$src/tests/fixtures/digits400
# A small network, so that the run is quick in any build (sanitizers too).
printf 'input in size=28x28x1\nfc fc outputs=classes\nsoftmax sm\n' >"$tmp/tiny.net"
chromium=${CHROMIUM:-/usr/bin/chromium}
driver=${DPT_BROWSER_DRIVER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dptrain/puppeteer-core}

if [ ! -x "$chromium" ]; then echo "SKIP: no chromium at $chromium (apt-get install chromium)"; exit 77; fi
if ! command -v node >/dev/null 2>&1; then echo "SKIP: node is missing (apt-get install nodejs)"; exit 77; fi
if [ ! -d "$driver/node_modules/puppeteer-core" ]; then
  echo "SKIP: puppeteer-core is not installed in $driver (run scripts/fetch-browser-driver)"; exit 77
fi
if ! "$cli" train --help | grep -q -- "--serve \[HOST:\]PORT" \
   || "$cli" train --data "$d" --serve 0 --epochs 0 2>&1 | grep -q "built without libmicrohttpd"; then
  echo "SKIP: this dptrain was built without libmicrohttpd"; exit 77
fi

# The event of each wait: a line in a file (the URL, the browser ready).
wait_for() { # FILE PATTERN
  local i
  for i in $(seq 1 2400); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  return 1
}

# A long run: it is stopped once the browser has seen the plot grow.
DPT_SERVE_MAX_RECORDS=4096 "$cli" train --data "$d" --net "$tmp/tiny.net" --epochs 1000000 --batch 32 \
  --workers 2 --out "$tmp/run" --quiet --serve 0 >"$tmp/run.out" 2>"$tmp/run.err" &
pid=$!
if ! wait_for "$tmp/run.err" "^dashboard: http"; then
  kill $pid; bad "no dashboard URL: $(cat "$tmp/run.err")"; exit 1
fi
url=$(sed -n 's/^dashboard: //p' "$tmp/run.err" | head -1)
PUPPETEER_DIR=$driver CHROMIUM=$chromium node "$src/tests/serve_browser.js" watch "$url" "$tmp/seen.json" \
  "$tmp/ready" >"$tmp/node.out" 2>&1 &
node_pid=$!
if wait_for "$tmp/ready" ready; then ok; else bad "the browser never saw the plot grow: $(cat "$tmp/node.out")"; fi
kill -TERM $pid
wait $pid
rc=$?
[ $rc -eq 1 ] && grep -q "interrupted by SIGTERM" "$tmp/run.err" && ok || bad "run: exit $rc: $(cat "$tmp/run.err")"
wait $node_pid && ok || bad "browser: $(cat "$tmp/node.out")"
python3 - "$tmp/seen.json" <<'PY' && ok || bad "browser: $(cat "$tmp/seen.json")"
import json, sys
r = json.load(open(sys.argv[1]))
seen, info = r["seen"], r["info"]
assert seen[0] > 0 and seen[0] < seen[1] < seen[2], seen
assert r["second"] > seen[2], r["second"]          # a second tab at once: history, then more
assert not r["elsewhere"], r["elsewhere"]          # self-contained
assert not r["errors"], r["errors"]                # no script error
assert info["iteration"].split(" / ")[0].isdigit(), info
assert info["epoch"].endswith("/ 1000000"), info
assert info["speed"] not in ("", "\u2013"), info
assert info["waitRows"] == 2, info                 # both workers' time in collectives
assert "sgdm" in info["settings"] and "digits400" in info["settings"] and "tiny.net" in info["settings"], info
assert "CPU (2 worker threads)" in info["workers"], info
assert r["state"] == "interrupted", r.get("state")
assert r["final"] >= seen[2], r
print("browser: plot points %s, then %d at the end; state %s" % (seen, r["final"], r["state"]))
PY

echo "test_serve_browser: $pass passed, $fail failed"
[ $fail -eq 0 ]
