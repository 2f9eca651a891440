// Drives the admin dashboard in the system's headless Chromium (run by tests/dashboard.rs):
// load the page, see it ask for the token, enter it, find the blocked client, its event and its
// suspicious count, click "Unblock" and wait until the row is gone.
//
// usage: node dashboard.mjs <dashboard url> <admin token> <blocked client>
// env:   CHROMIUM (default /usr/bin/chromium), DASHBOARD_SCREENSHOT (optional PNG path)
import { chromium } from "playwright-core";

const [url, token, client] = process.argv.slice(2);
if (!url || !token || !client) {
  console.error("usage: node dashboard.mjs <url> <token> <client>");
  process.exit(2);
}

const TIMEOUT = 15000;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const problems = [];
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => {
    // A blocked inline script or style shows up here; the expected 401 before the token does not
    // count.
    if (m.type() === "error" && !m.text().includes("401")) problems.push("console: " + m.text());
  });

  await page.goto(url);
  // No token yet: the page asks for one.
  await page.waitForFunction(() => /token/.test(document.getElementById("status").textContent));

  await page.fill("#token", token);
  await page.click("#save-token");
  const row = page.locator(`#blocks tbody tr[data-client="${client}"]`);
  await row.waitFor();
  const rowText = await row.textContent();
  if (!rowText.includes("manual dashboard test")) problems.push("block row lacks its reason: " + rowText);
  await page.locator(`#events tbody tr:has-text("${client}")`).first().waitFor();
  await page.locator(`#suspicious tbody tr[data-client="${client}"]`).waitFor();

  if (process.env.DASHBOARD_SCREENSHOT) {
    await page.screenshot({ path: process.env.DASHBOARD_SCREENSHOT, fullPage: true });
  }

  await row.locator("button.unblock").click();
  await row.waitFor({ state: "detached" });
  await page.waitForFunction(
    (c) => document.getElementById("message").textContent.includes("unblocked " + c),
    client,
  );
  // The unblock shows up as the newest event.
  await page.waitForFunction(
    (c) => {
      const first = document.querySelector("#events tbody tr");
      return first && first.textContent.includes("unblocked") && first.textContent.includes(c);
    },
    client,
  );
} catch (e) {
  problems.push(String(e && e.stack ? e.stack : e));
} finally {
  await browser.close();
}

if (problems.length) {
  console.log(JSON.stringify({ ok: false, problems }));
  process.exit(1);
}
console.log(JSON.stringify({ ok: true }));
