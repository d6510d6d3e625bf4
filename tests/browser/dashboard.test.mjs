// The bank dashboard in a real browser: `bank serve --port 0` on a new store, Debian's
// chromium driven by playwright-core. A deposit submitted through the page's form, and one made
// by another client, must show in the balances table within a second: the table changes only
// when an event arrives over Server-Sent Events (the form's own answer is shown elsewhere).
//
//   node dashboard.test.mjs BANK_EXE [ARTIFACTS_DIR]
// Exit 0: passed; 1: failed; 77: skipped (no chromium, or `npm ci` not run here).
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";

const [bankExe, artifacts = path.resolve("test-artifacts")] = process.argv.slice(2);
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const TOKEN = "browser-t0ken";
const SSE_DEADLINE_MS = 1000;
// Under the test command (tools/scripts/test.sh sets it), a missing browser is a failure, not a
// skip: setup.sh installs both.
const SKIP = process.env.ANNALS_REQUIRE_BROWSER ? 1 : 77;

if (!bankExe) {
  console.error("usage: node dashboard.test.mjs BANK_EXE [ARTIFACTS_DIR]");
  process.exit(2);
}
if (!existsSync(chromiumPath)) {
  console.log(`skipped: no chromium at ${chromiumPath} (apt-get install chromium)`);
  process.exit(SKIP);
}
let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch {
  console.log("skipped: playwright-core is not installed (run `npm ci` in tests/browser)");
  process.exit(SKIP);
}

const dir = mkdtempSync(path.join(tmpdir(), "annals-browser-"));
let server;
let browser;

async function startServer() {
  server = spawn(bankExe, ["--db", path.join(dir, "bank.db"), "serve", "--port", "0",
                           "--token", TOKEN], { stdio: ["ignore", "pipe", "inherit"] });
  const lines = createInterface({ input: server.stdout });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("bank serve printed no URL in 10 s")), 10000);
    server.once("exit", (code) => reject(new Error(`bank serve exited with ${code}`)));
    lines.once("line", (line) => {
      clearTimeout(timer);
      const m = line.match(/listening on (http:\/\/\S+)/);
      m ? resolve(m[1]) : reject(new Error(`unexpected first line: ${line}`));
    });
  });
  return url.endsWith("/") ? url : url + "/";
}

async function post(base, route, body) {
  const r = await fetch(new URL(route, base), {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`POST ${route}: ${r.status} ${await r.text()}`);
  return r.json();
}

const balanceCell = (page, id) => page.locator(`tr[data-account="${id}"] td:nth-child(3)`);

async function expectBalance(page, id, text, since, what) {
  await page.waitForFunction(
    ([sel, want]) => document.querySelector(sel)?.textContent === want,
    [`tr[data-account="${id}"] td:nth-child(3)`, text],
    { timeout: SSE_DEADLINE_MS, polling: 10 });
  const ms = Date.now() - since;
  console.log(`ok: ${what}: the table shows ${text} after ${ms} ms`);
}

let failed = false;
try {
  const base = await startServer();
  console.log(`bank serve at ${base}`);
  await post(base, "accounts", { id: "acc-1", owner: "Ann Smith" });
  await post(base, "accounts/acc-1/deposits", { amount: "10.00" });

  browser = await chromium.launch({ executablePath: chromiumPath, headless: true,
                                    args: ["--no-sandbox", "--disable-gpu"] });
  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  page.on("console", (m) => console.log(`page: ${m.text()}`));
  await page.goto(base);
  await page.waitForFunction(() => document.getElementById("live")?.textContent === "live",
                             null, { timeout: 5000 });
  await expectBalance(page, "acc-1", "10.00", Date.now(), "initial load");

  // The form: token, account, amount, submit.
  await page.fill("#token", TOKEN);
  await page.fill("#account", "acc-1");
  await page.selectOption("#kind", "deposits");
  await page.fill("#amount", "2.50");
  let since = Date.now();
  await page.click("#submit");
  await expectBalance(page, "acc-1", "12.50", since, "deposit through the form");
  await page.waitForFunction(() => document.getElementById("result").className === "ok",
                             null, { timeout: 2000 });

  // Another client's command reaches the page only over SSE.
  since = Date.now();
  await post(base, "accounts/acc-1/withdrawals", { amount: "0.50" });
  await expectBalance(page, "acc-1", "12.00", since, "withdrawal by another client");

  // A wrong token is refused and shown.
  await page.fill("#token", "wrong");
  await page.click("#submit");
  await page.waitForFunction(() => document.getElementById("result").textContent.startsWith("401"),
                             null, { timeout: 2000 });
  if ((await balanceCell(page, "acc-1").textContent()) !== "12.00") {
    throw new Error("a refused command changed the balance shown");
  }
  console.log("ok: a wrong token is refused (401) and the balance stays");

  // The feed and the projections table are filled.
  const feed = await page.locator("#feed li").count();
  // At least the two events made while the page was open (a server may replay older ones).
  if (feed < 2) throw new Error(`the event feed has ${feed} entries, expected at least 2`);
  await page.waitForFunction(
    () => [...document.querySelectorAll("#projections td")].some(
      (td) => td.textContent === "account_balances"),
    null, { timeout: 3000 });
  console.log(`ok: feed has ${feed} events; projections shown`);

  mkdirSync(artifacts, { recursive: true });
  const shot = path.join(artifacts, "dashboard.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.message}`);
} finally {
  if (browser) await browser.close();
  if (server) server.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
