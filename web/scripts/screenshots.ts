// The README's screenshots, from a running demo (scripts/dev.sh, with `switchboard simulate`
// making calls): signs in with the dev links it printed, goes available, waits for a call whose
// caller has a card, and photographs the agent desktop; then the wallboard.
//
// Usage: AGENT_URL=... WALLBOARD_URL=... OUT=../docs/images npx tsx scripts/screenshots.ts

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const need = (name: string) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const out = need("OUT");
mkdirSync(out, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
});
try {
  const agent = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await agent.goto(need("AGENT_URL"));
  await agent.getByTestId("state-available").click();
  // Take calls as an agent would until one rings whose caller has a card: callers nobody knows
  // get created, shared numbers get a pick, and every call gets its wrap-up.
  const deadline = Date.now() + 300_000;
  while (!(await agent.getByTestId("card-name").isVisible())) {
    if (Date.now() > deadline) throw new Error("no call with a card in 5 minutes");
    if (await agent.getByTestId("new-name").isVisible()) {
      await agent.getByTestId("new-name").fill("Walk-in caller");
      await agent.getByTestId("quick-create").getByRole("button").click();
    } else if (await agent.getByTestId("wrap-up").isVisible()) {
      await agent.getByTestId("disposition").selectOption({ index: 1 });
      await agent.getByTestId("complete-wrap-up").click();
      await agent.getByTestId("wrap-up-done").getByRole("button").click();
    }
    await agent.waitForTimeout(500);
  }
  await agent.waitForTimeout(300);
  await agent.screenshot({ path: join(out, "agent-desktop.png") });
  const board = await browser.newPage({ viewport: { width: 1600, height: 900 } });
  await board.goto(need("WALLBOARD_URL"));
  await board.getByTestId("queue-row").first().waitFor();
  await board.waitForTimeout(3000);
  await board.screenshot({ path: join(out, "wallboard.png") });
} finally {
  await browser.close();
}
