// Drive Debian's chromium (headless, through puppeteer-core) against a
// `dptrain train --serve` run: tests/test_serve_browser.sh and
// bench/serve_bench.sh use it.
//
//   node serve_browser.js watch URL OUT.json        the plot must grow as training runs
//   node serve_browser.js shot URL OUT.png          wait for the end, then a screenshot
//   node serve_browser.js hold URLFILE N READYFILE  N pages open until stdin closes
//                                                   (the browser starts first, then
//                                                   waits for "dashboard: URL" in URLFILE)
//
// PUPPETEER_DIR: the folder scripts/fetch-browser-driver installed into;
// CHROMIUM: the browser (default /usr/bin/chromium).
"use strict";
const path = require("path");
const fs = require("fs");
const puppeteer = require(path.join(process.env.PUPPETEER_DIR, "node_modules", "puppeteer-core"));

const [mode, url, arg, arg2] = process.argv.slice(2); // hold: url is the URL file
const LIMIT = 120000; // ms: only against a hang

async function main() {
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // root in a container has no user namespace sandbox
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
  });
  try {
    if (mode === "hold") return await hold(browser);
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 820 });
    const origin = new URL(url).origin, elsewhere = [];
    page.on("request", (r) => { if (!r.url().startsWith(origin) && !r.url().startsWith("data:")) elsewhere.push(r.url()); });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(url, { waitUntil: "domcontentloaded", timeout: LIMIT });
    const count = () => page.$eval("#loss", (p) => p.points.numberOfItems);
    if (mode === "watch") {
      // Three successive plots, each with more points than the one before:
      // the plot grows while training runs (events, no reload).
      const seen = [];
      for (let k = 0; k < 3; k++) {
        const before = seen.length ? seen[seen.length - 1] : 0;
        await page.waitForFunction((b) => document.querySelector("#loss").points.numberOfItems > b,
                                   { timeout: LIMIT, polling: "raf" }, before);
        seen.push(await count());
      }
      // A second browser tab at once: it gets the history, then grows too.
      const page2 = await browser.newPage();
      await page2.goto(url, { waitUntil: "domcontentloaded", timeout: LIMIT });
      await page2.waitForFunction((b) => document.querySelector("#loss").points.numberOfItems > b,
                                  { timeout: LIMIT, polling: "raf" }, seen[2]);
      const second = await page2.$eval("#loss", (p) => p.points.numberOfItems);
      const info = await page.evaluate(() => ({
        iteration: document.getElementById("s-iter").textContent,
        epoch: document.getElementById("s-epoch").textContent,
        speed: document.getElementById("s-speed").textContent,
        state: document.getElementById("state").textContent,
        waitRows: document.querySelectorAll("#wait tr").length,
        settings: document.getElementById("settings").textContent,
        workers: document.getElementById("workers").textContent,
      }));
      fs.writeFileSync(arg, JSON.stringify({ seen, second, info, elsewhere, errors }));
      // Told by the shell when the run was stopped: the page must say so.
      if (arg2) {
        fs.writeFileSync(arg2, "ready\n");
        // (the first tab is in the background now: poll by time, not by frame)
        await page.waitForFunction(() => document.getElementById("state").textContent !== "running",
                                   { timeout: LIMIT, polling: 100 });
        const state = await page.$eval("#state", (e) => e.textContent);
        fs.writeFileSync(arg, JSON.stringify({ seen, second, info, elsewhere, errors, state, final: await count() }));
      }
    } else if (mode === "shot") {
      await page.waitForFunction(() => document.getElementById("state").textContent === "finished",
                                 { timeout: LIMIT });
      await new Promise((r) => requestAnimationFrameWait(page, r));
      await page.screenshot({ path: arg, fullPage: true });
    }
  } finally {
    await browser.close();
  }
}

function requestAnimationFrameWait(page, done) {
  page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))).then(done, done);
}

// N pages on the dashboard until stdin closes (the bench's "browsers").
async function hold(browser) {
  const n = Number(arg);
  fs.writeFileSync(arg2, "launched\n"); // the caller may start training now
  let url = null;
  for (let t = 0; t < LIMIT && !url; t += 20) {
    const m = /^dashboard: (http\S+)$/m.exec(fs.existsSync(process.argv[3]) ? fs.readFileSync(process.argv[3], "utf8") : "");
    if (m) url = m[1];
    else await new Promise((r) => setTimeout(r, 20));
  }
  if (!url) throw new Error("no dashboard URL in " + process.argv[3]);
  for (let i = 0; i < n; i++) {
    const p = await browser.newPage();
    await p.goto(url, { waitUntil: "domcontentloaded", timeout: LIMIT });
  }
  fs.appendFileSync(arg2, "ready\n");
  await new Promise((r) => { process.stdin.on("end", r); process.stdin.on("close", r); process.stdin.resume(); });
}

main().catch((e) => { console.error(String(e && e.stack || e)); process.exit(1); });
