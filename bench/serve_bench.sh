#!/usr/bin/env bash
# The dashboard's cost to training: images/s of `dptrain train` on
# tests/fixtures/digits400 without --serve and with --serve and 4 browser
# pages on the dashboard (headless chromium through puppeteer-core; run
# scripts/fetch-browser-driver first), and with 4 event-stream clients that
# connect and never read. The variants alternate, ROUNDS times; each run's
# figure is the median of its per-iteration images/s (metrics.csv) over the
# iterations after every client was connected (a plain run: after the
# first epoch), and the report is the median over the rounds.
#
#   bench/serve_bench.sh [--rounds R] [--epochs E] [--workers W] [--screenshot PNG]
#
# --screenshot also makes the docs' picture: a finished run's page.
# Env: DPT_CLI (default build/dptrain), CHROMIUM, DPT_BROWSER_DRIVER_DIR.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cli=${DPT_CLI:-$root/build/dptrain}
driver=${DPT_BROWSER_DRIVER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dptrain/puppeteer-core}
export PUPPETEER_DIR=$driver CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
rounds=5 epochs=40 workers=1 shot=
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --screenshot) shot=$2; shift 2 ;;
    *) echo "serve_bench: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -d "$driver/node_modules/puppeteer-core" ] || { echo "serve_bench: run scripts/fetch-browser-driver first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$cli" "$root" "$tmp" "$rounds" "$epochs" "$workers" "$shot" <<'PY'
import json, os, re, signal, socket, statistics, subprocess, sys, time, urllib.request
cli, root, tmp, rounds, epochs, workers, shot = sys.argv[1:8]
rounds, epochs = int(rounds), int(epochs)
data = os.path.join(root, "tests/fixtures/digits400")
js = os.path.join(root, "tests/serve_browser.js")

def wait_file(path, pattern, limit=120):
    t0 = time.time()
    while time.time() - t0 < limit:
        if os.path.exists(path):
            m = re.search(pattern, open(path).read(), re.M)
            if m:
                return m
        time.sleep(0.02)
    raise SystemExit("timed out waiting for %r in %s" % (pattern, path))

def train(out, extra, err):
    args = [cli, "train", "--data", data, "--epochs", str(epochs), "--batch", "32", "--workers", workers,
            "--out", out, "--quiet", "--overwrite"] + extra
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(err, "w"))

def iteration_now(url):
    j = json.load(urllib.request.urlopen(url + "progress.json"))
    return j["records"][-1]["iteration"] if j["records"] else 0

def median_speed(out, after):
    rows = [l.split(",") for l in open(os.path.join(out, "metrics.csv")).read().split("\n")[1:] if l]
    v = [float(r[4]) for r in rows if int(r[1]) > after and r[4]]
    return statistics.median(v), len(v)

def plain(k):
    out = os.path.join(tmp, "plain")
    p = train(out, [], os.path.join(tmp, "plain.err"))
    assert p.wait() == 0
    return median_speed(out, 12)  # after the first epoch (12 iterations)

def browsers(k):
    out, err, ready = os.path.join(tmp, "br"), os.path.join(tmp, "br.err"), os.path.join(tmp, "ready%d" % k)
    for f in (err, ready):
        if os.path.exists(f):
            os.unlink(f)
    node = subprocess.Popen(["node", js, "hold", err, "4", ready], stdin=subprocess.PIPE)
    wait_file(ready, "^launched")            # the browser is up before training starts
    p = train(out, ["--serve", "0"], err)
    url = wait_file(err, r"^dashboard: (http\S+)$").group(1)
    wait_file(ready, "^ready")               # 4 pages connected
    mark = iteration_now(url)
    rc = p.wait()
    node.stdin.close()
    node.wait()
    assert rc == 0
    return median_speed(out, max(mark, 12))

def stalled(k):
    out, err = os.path.join(tmp, "st"), os.path.join(tmp, "st.err")
    p = train(out, ["--serve", "0"], err)
    url = wait_file(err, r"^dashboard: (http\S+)$").group(1)
    host, port = re.match(r"http://([^/:]+):(\d+)/", url).groups()
    socks = []
    for _ in range(4):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((host, int(port)))
        s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read
        socks.append(s)
    mark = iteration_now(url)
    assert p.wait() == 0
    for s in socks:
        s.close()
    return median_speed(out, max(mark, 12))

variants = [("no --serve", plain), ("--serve, 4 browser pages", browsers), ("--serve, 4 stalled SSE clients", stalled)]
res = {name: [] for name, _ in variants}
for k in range(rounds):
    for name, fn in (variants if k % 2 == 0 else variants[::-1]):
        v, n = fn(k)
        res[name].append(v)
        print("round %d  %-32s %8.1f images/s (median of %d iterations)" % (k + 1, name, v, n), flush=True)
base = statistics.median(res["no --serve"])
print("\nmedians over %d rounds (%s epochs of digits400, batch 32, %s worker(s)); the ratio is the"
      " median of each round's ratio to that round's run without --serve:" % (rounds, epochs, workers))
for name, _ in variants:
    m = statistics.median(res[name])
    ratio = statistics.median(v / p for v, p in zip(res[name], res["no --serve"]))
    print("  %-32s %8.1f images/s  (%.3fx)" % (name, m, ratio))

if shot:
    # short names on the page: run where digits400 is a link
    err = os.path.join(tmp, "shot.err")
    os.symlink(data, os.path.join(tmp, "digits400"))
    p = subprocess.Popen([cli, "train", "--data", "digits400", "--epochs", "8", "--batch", "32", "--workers", "2",
                          "--eval-every-epoch", "--out", "out", "--quiet", "--serve", "0", "--serve-linger", "120"],
                         stdout=subprocess.DEVNULL, stderr=open(err, "w"), cwd=tmp)
    url = wait_file(err, r"^dashboard: (http\S+)$").group(1)
    subprocess.run(["node", js, "shot", url, os.path.abspath(shot)], check=True)
    p.send_signal(signal.SIGTERM)            # end the linger
    p.wait()
    print("screenshot:", shot)
PY
