#!/usr/bin/env bash
# dptrain train --serve: the live dashboard, during real training runs on
# tests/fixtures/digits400. Bad --serve values; the page is self-contained;
# /progress.json under 8 concurrent clients (valid JSON, iterations going
# up between fetches); a browser's reconnect resumes after Last-Event-ID; an
# event-stream client that stops reading does not hold training up (the run
# finishes, every record is stored, and the stalled stream, read again,
# delivers every record in order, then the end). Every wait is for an event
# (the URL printed, an iteration reached, the state "finished"), with a
# generous deadline only against hangs.
set -u
. "$(dirname "$0")/cli_helpers.sh"
src=${DPT_SOURCE_DIR:?}
d=$src/tests/fixtures/digits400
# A small network, so that the runs are quick in any build (sanitizers too).
printf 'input in size=28x28x1\nfc fc outputs=classes\nsoftmax sm\n' >"$tmp/tiny.net"

if ! "$cli" train --help | grep -q -- "--serve \[HOST:\]PORT"; then
  bad "train --help does not document --serve"
fi
# Built without libmicrohttpd: the flag says so, and the rest is skipped.
"$cli" train --data "$d" --serve 0 --epochs 0 >"$tmp/out" 2>"$tmp/err"
if grep -q "built without libmicrohttpd" "$tmp/err"; then
  echo "SKIP: this dptrain was built without libmicrohttpd (--serve refused as it should be)"
  exit 77
fi

# ---- bad values ----------------------------------------------------------------
train() { "$cli" train --quiet --epochs 1 --batch 16 --workers 1 --data "$d" --out "$tmp/o" "$@"; }
expect_error "--serve: '70000': the port must be a number from 0 to 65535" train --serve 70000
expect_error "--serve: 'localhost:-1': the port must be a number" train --serve localhost:-1
expect_error "--serve: 'abc': the port must be a number" train --serve abc
expect_error "--serve: ':8080': empty host" train --serve :8080
expect_error "--serve: '::1:80': write an IPv6 address in brackets" train --serve ::1:80
expect_error "--serve no.such.host.invalid: cannot resolve the host" train --serve no.such.host.invalid:0
expect_error "--serve-linger: 'x' is not an integer" train --serve 0 --serve-linger x
expect_error "--serve: '[::1' is not [HOST:]PORT" train --serve '[::1'
# A port another program listens on (the holder is ended right after).
python3 -c 'import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True); time.sleep(120)' >"$tmp/port" &
holder=$!
for i in $(seq 1 400); do [ -s "$tmp/port" ] && break; sleep 0.05; done
expect_error "--serve 127.0.0.1:$(cat "$tmp/port"): cannot listen: Address already in use" \
  train --serve "127.0.0.1:$(cat "$tmp/port")"
kill $holder
[ ! -e "$tmp/o/model.safetensors" ] && ok || bad "a model was written despite a bad --serve"

# The client side, in Python (stdlib only): waits on events, never on sleeps.
cat >"$tmp/client.py" <<'PY'
import json, os, re, signal, socket, sys, threading, time, urllib.request

DEADLINE = 120  # seconds: only against a hang, never reached by a working run

def url_of(errfile):
    t0 = time.time()
    while time.time() - t0 < DEADLINE:
        try:
            m = re.search(r"^dashboard: (http://\S+)$", open(errfile).read(), re.M)
        except FileNotFoundError:
            m = None
        if m:
            return m.group(1)
        time.sleep(0.02)
    sys.exit("no 'dashboard: URL' line on stderr: " + open(errfile).read())

def get(url):
    with urllib.request.urlopen(url, timeout=DEADLINE) as r:
        return r.status, r.headers.get("Content-Type"), r.read()

def progress(base):
    code, ctype, body = get(base + "progress.json")
    assert code == 200 and ctype == "application/json", (code, ctype)
    return json.loads(body)

def last_iteration(j):
    its = [r["iteration"] for r in j["records"]]
    assert its == sorted(its), "iterations out of order"
    return its[-1] if its else 0

def wait_until(base, pred, what):
    t0 = time.time()
    while time.time() - t0 < DEADLINE:
        j = progress(base)
        if pred(j):
            return j
        time.sleep(0.05)  # a poll interval, not a timing assumption
    sys.exit("timed out waiting for " + what)

def sse_connect(base, last_id=None, rcvbuf=None):
    host, port = re.match(r"http://([^/:]+):(\d+)/", base).groups()
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect((host, int(port)))
    extra = "Last-Event-ID: %d\r\n" % last_id if last_id is not None else ""
    s.sendall(("GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n%s\r\n" % extra).encode())
    return s

def sse_events(s, data=b""):
    """Yield (event, id, data) of a chunked event stream, forever or to its end."""
    buf = data
    body = b""
    head_done = last = False
    while not last:
        if not head_done and b"\r\n\r\n" in buf:
            head, buf = buf.split(b"\r\n\r\n", 1)
            assert b" 200 " in head.split(b"\r\n")[0] and b"text/event-stream" in head, head
            head_done = True
        while head_done:  # de-chunk
            if b"\r\n" not in buf:
                break
            size_line, rest = buf.split(b"\r\n", 1)
            n = int(size_line.split(b";")[0], 16)
            if len(rest) < n + 2:
                break
            if n == 0:
                last = True  # the stream's end: deliver what is left first
                break
            body += rest[:n]
            buf = rest[n + 2:]
        while b"\n\n" in body:
            ev, body = body.split(b"\n\n", 1)
            fields = {}
            for line in ev.decode().split("\n"):
                k, _, v = line.partition(": ")
                fields[k] = v
            yield fields.get("event", "message"), fields.get("id"), fields.get("data")
        if last:
            return
        chunk = s.recv(65536)
        if not chunk:
            return
        buf += chunk

mode, errfile, pidfile = sys.argv[1], sys.argv[2], sys.argv[3]
pid = int(open(pidfile).read())
try:
    base = url_of(errfile)
except BaseException:
    os.kill(pid, signal.SIGTERM)
    raise

def stop_run():
    try:
        os.kill(pid, signal.SIGTERM)  # end the long run or the linger
    except ProcessLookupError:
        pass

try:

    if mode == "concurrent":
        code, ctype, page = get(base)
        assert code == 200 and ctype.startswith("text/html"), (code, ctype)
        page = page.decode()
        assert "EventSource" in page and "<svg" in page and 'id="loss"' in page, "page lacks the live plot"
        # self-contained: nothing fetched from elsewhere
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page), "page loads something from outside"
        assert "http://" not in page and "https://" not in page
        wait_until(base, lambda j: last_iteration(j) >= 5, "iteration 5")
        errors = []
        def client(k):
            try:
                seen = 0
                for _ in range(4):
                    # each fetch must show a later iteration than the last one seen
                    j = wait_until(base, lambda j: last_iteration(j) > seen, "a later iteration")
                    assert j["settings"]["epochs"] == 1000000 and j["settings"]["workers"] == 2, j["settings"]
                    assert j["status"]["state"] == "running"
                    assert len(j["status"]["comm_wait_s"]) == 2
                    seen = last_iteration(j)
            except BaseException as e:  # noqa: report any failure of any thread
                errors.append("client %d: %r" % (k, e))
        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            sys.exit("\n".join(errors))
        print("8 concurrent clients: ok")

    elif mode == "thinned":
        j = wait_until(base, lambda j: j["status"]["state"] != "running", "the end of the run")
        recs = j["records"]
        its = [r["iteration"] for r in recs]
        assert 32 <= len(recs) <= 64, len(recs)
        assert its == sorted(its) and its[0] == 1 and its[-1] == 360, its
        assert sum(r["end_of_epoch"] for r in recs) == 30, "an end-of-epoch record was dropped"
        # 390 records, fewer where the progress queue coalesced some
        assert len(recs) < j["status"]["records"] <= 390 and j["status"]["iteration"] == 360, j["status"]
        print("thinned store: %d of 390 records kept, every epoch's" % len(recs))

    elif mode == "stalled":
        # A client with a tiny receive buffer reads the first event, then stops.
        stalled = sse_connect(base, rcvbuf=4096)
        first = stalled.recv(200)
        assert first, "no first bytes from the event stream"
        j = wait_until(base, lambda j: j["status"]["state"] != "running", "the end of the run")
        assert j["status"]["state"] == "finished", j["status"]
        recs = j["records"]
        ordinary = [r for r in recs if not r["end_of_epoch"]]
        per_epoch = j["status"]["iterations_per_epoch"]
        # (the progress queue may coalesce records when its reader falls
        # behind: fewer records than iterations, never a later one missing)
        its = [r["iteration"] for r in ordinary]
        assert its == sorted(set(its)) and its[-1] == per_epoch * 30, its[-5:]
        assert sum(r["end_of_epoch"] for r in recs) == 30
        # Read the stalled stream now: every record, in order, then "end".
        ids, ended = [], False
        for ev, eid, data in sse_events(stalled, first):
            if ev == "message":
                m = json.loads(data)
                ids += [r[0] for r in m["records"]]
                assert int(eid) == ids[-1]
            elif ev == "end":
                ended = json.loads(data)["state"] == "finished"
                break
        assert ended, "the stalled stream never ended"
        assert ids == list(range(1, len(recs) + 1)), "stalled stream lost or repeated records"
        # A reconnecting browser sends Last-Event-ID: it gets what came after.
        s2 = sse_connect(base, last_id=10)
        for ev, eid, data in sse_events(s2):
            if ev == "message":
                assert json.loads(data)["records"][0][0] == 11, "Last-Event-ID not honoured"
                break
        s2.close()
        print("stalled client: %d records, run finished, stream complete" % len(recs))
finally:
    stop_run()
PY

# ---- 8 concurrent clients during a long run, stopped with SIGTERM -----------------
DPT_SERVE_MAX_RECORDS=4096 "$cli" train --data "$d" --net "$tmp/tiny.net" --epochs 1000000 --batch 32 \
  --workers 2 --out "$tmp/run1" --quiet --serve 127.0.0.1:0 >"$tmp/run1.out" 2>"$tmp/run1.err" &
echo $! >"$tmp/run1.pid"
python3 "$tmp/client.py" concurrent "$tmp/run1.err" "$tmp/run1.pid" && ok || bad "concurrent clients"
wait "$(cat "$tmp/run1.pid")"
rc=$?
[ $rc -eq 1 ] && grep -q "interrupted by SIGTERM" "$tmp/run1.err" && ok || bad "run 1: exit $rc: $(cat "$tmp/run1.err")"

# ---- a client that stops reading: the run still finishes ----------------------------
# batch 4: 90 iterations an epoch, 2700 records (about 200 KB of events),
# more than the stalled socket's buffers hold.
"$cli" train --data "$d" --net "$tmp/tiny.net" --epochs 30 --batch 4 --workers 1 --out "$tmp/run2" --quiet \
  --serve 0 --serve-linger 600 >"$tmp/run2.out" 2>"$tmp/run2.err" &
echo $! >"$tmp/run2.pid"
python3 "$tmp/client.py" stalled "$tmp/run2.err" "$tmp/run2.pid" && ok || bad "stalled client"
wait "$(cat "$tmp/run2.pid")"
rc=$?
[ $rc -eq 0 ] && grep -q "test accuracy" "$tmp/run2.out" && [ -s "$tmp/run2/model.safetensors" ] \
  && ok || bad "run 2: exit $rc: $(cat "$tmp/run2.err")"

# ---- a long run's records are thinned, never more than the store holds --------------
# (the store's size lowered to 64 records: 30 epochs of 12 iterations and 30
# end-of-epoch rows are 390 records)
DPT_SERVE_MAX_RECORDS=64 "$cli" train --data "$d" --net "$tmp/tiny.net" --epochs 30 --batch 32 --workers 1 --out "$tmp/run5" \
  --quiet --serve 0 --serve-linger 600 >"$tmp/run5.out" 2>"$tmp/run5.err" &
echo $! >"$tmp/run5.pid"
python3 "$tmp/client.py" thinned "$tmp/run5.err" "$tmp/run5.pid" && ok || bad "thinned store"
wait "$(cat "$tmp/run5.pid")" && ok || bad "run 5: $(cat "$tmp/run5.err")"

# ---- a non-loopback address warns ------------------------------------------------------
"$cli" train --data "$d" --net "$tmp/tiny.net" --epochs 1 --batch 32 --workers 1 --out "$tmp/run3" --quiet \
  --serve 0.0.0.0:0 >"$tmp/run3.out" 2>"$tmp/run3.err" \
  && grep -q "warning: --serve 0.0.0.0 is not a loopback address" "$tmp/run3.err" \
  && ok || bad "0.0.0.0: no warning: $(cat "$tmp/run3.err")"
"$cli" train --data "$d" --net "$tmp/tiny.net" --epochs 1 --batch 32 --workers 1 --out "$tmp/run4" --quiet --overwrite \
  --serve localhost:0 >"$tmp/run4.out" 2>"$tmp/run4.err" \
  && ! grep -q "warning" "$tmp/run4.err" && ok || bad "localhost: $(cat "$tmp/run4.err")"

echo "test_serve: $pass passed, $fail failed"
[ $fail -eq 0 ]
