// Runs ONNX models in ONNX Runtime (onnxruntime-node) on inputs dptrain
// wrote and compares with dptrain's outputs (tests/onnx_ref.c):
//   node onnx_run.js ORT_DIR MODEL.onnx X.bin "N C H W" Y.bin "N K" [OUT.bin]
//   node onnx_run.js ORT_DIR --jobs FILE
// ORT_DIR is the folder holding node_modules/onnxruntime-node
// (scripts/fetch-onnxruntime). Prints one JSON line per comparison: rows
// compared, rows whose argmax (class) agrees, the largest absolute
// difference, and the output shape ONNX Runtime gave. Optionally writes
// ORT's output as raw float32. A jobs file holds one comparison a line,
// tab-separated: NAME MODEL X XDIMS Y YDIMS TOLERANCE [OUT]; each gets
// "NAME ok JSON" or "NAME FAIL JSON" (all rows' classes equal and the
// difference within TOLERANCE), and the exit code is 1 when any failed
// (so one process, one runtime start, serves a whole test). Exit 1 on
// error.
'use strict';
const fs = require('fs');
const path = require('path');

const dims = (s) => s.trim().split(/\s+/).map(Number);
const floats = (f) => {
  const b = fs.readFileSync(f);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
};

async function compare(ort, model, xFile, xDims, yFile, yDims, outFile) {
  const xd = dims(xDims), yd = dims(yDims);
  const x = floats(xFile), yRef = floats(yFile);
  if (x.length !== xd.reduce((a, b) => a * b, 1)) throw new Error(xFile + ': size does not match ' + xDims);
  if (yRef.length !== yd.reduce((a, b) => a * b, 1)) throw new Error(yFile + ': size does not match ' + yDims);
  // One thread: results do not depend on how ORT splits the work.
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const feeds = {};
  feeds[session.inputNames[0]] = new ort.Tensor('float32', x, xd);
  const res = await session.run(feeds);
  const y = res[session.outputNames[0]];
  const k = yd[yd.length - 1], rows = yRef.length / k;
  let maxDiff = 0, equal = 0;
  const shapeOk = y.dims.length === yd.length && y.dims.every((d, i) => Number(d) === yd[i]);
  if (shapeOk) {
    for (let r = 0; r < rows; r++) {
      let a = 0, b = 0;
      for (let j = 0; j < k; j++) {
        const i = r * k + j;
        const d = Math.abs(y.data[i] - yRef[i]);
        if (!(d <= maxDiff)) maxDiff = d; // NaN propagates
        if (y.data[i] > y.data[r * k + a]) a = j;
        if (yRef[i] > yRef[r * k + b]) b = j;
      }
      if (a === b) equal++;
    }
  } else {
    maxDiff = NaN;
  }
  if (outFile) fs.writeFileSync(outFile, Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
  return { rows, classes_equal: equal, max_abs_diff: maxDiff, shape: y.dims.map(Number),
    input: session.inputNames[0], output: session.outputNames[0] };
}

async function main() {
  const args = process.argv.slice(2);
  if (args.length < 3) throw new Error('usage: onnx_run.js ORT_DIR MODEL X "dims" Y "dims" [OUT] | ORT_DIR --jobs FILE');
  const ort = require(path.join(path.resolve(args[0]), 'node_modules', 'onnxruntime-node'));
  if (args[1] !== '--jobs') {
    if (args.length < 6) throw new Error('usage: onnx_run.js ORT_DIR MODEL X "dims" Y "dims" [OUT]');
    console.log(JSON.stringify(await compare(ort, ...args.slice(1, 7))));
    return;
  }
  let failed = 0;
  for (const line of fs.readFileSync(args[2], 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const [name, model, x, xd, y, yd, tol, out] = line.split('\t');
    let r, good;
    try {
      r = await compare(ort, model, x, xd, y, yd, out);
      good = r.rows > 0 && r.classes_equal === r.rows && r.max_abs_diff <= Number(tol);
    } catch (e) {
      r = { error: String(e && e.message ? e.message : e) }, good = false;
    }
    failed += good ? 0 : 1;
    console.log(name + (good ? ' ok ' : ' FAIL ') + JSON.stringify(r));
  }
  process.exit(failed ? 1 : 0);
}
main().catch((e) => { console.error('onnx_run.js: ' + (e && e.message ? e.message : e)); process.exit(1); });
