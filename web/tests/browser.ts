// The web app in a real browser: Debian's Chromium, driven headless by playwright-core, against a
// live Switchboard that tests/api/web_ui.rs starts with the data each scenario needs. This script
// is also the gateway: it reports the call events through the public API (Connect-ES, gRPC-web),
// so the time from a RINGING report to the card in the page is measured in one clock.
//
// Input (environment):
//   SWITCHBOARD_URL, SCENARIO (agent | multiple | wallboard | rollout | restart | latency),
//   AGENT_ID, AGENT_TOKEN, SUPERVISOR_TOKEN, GATEWAY_ID, GATEWAY_TOKEN,
//   CALLER, CUSTOMER_NAME, CASE_SUBJECT, LAST_DISPOSITION (agent), SHARED_NUMBER (multiple),
//   RING_CALLS (latency), SCREENSHOTS (a directory: a failing scenario leaves its screenshot).
// Output: one JSON line per step on stdout. The restart scenario prints {"step":"restart"} and
// waits for a line on stdin once the server is back. Exit 0 when every check held, 1 otherwise.

import { readFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium, type Page } from "playwright-core";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { AckOutcome, CallEventService, CallEventType } from "../src/gen/switchboard/v1/call_events_pb.js";
import { AnalyticsService } from "../src/gen/switchboard/v1/analytics_pb.js";
import { ScorecardService, Verdict } from "../src/gen/switchboard/v1/scorecard_pb.js";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";

const env = (name: string): string => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const URL_ = env("SWITCHBOARD_URL");
const emit = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(line)}\n`);

function check(condition: unknown, what: string): asserts condition {
  if (!condition) throw new Error(`check failed: ${what}`);
}

function client<T extends Parameters<typeof createClient>[0]>(service: T, token: string) {
  const bearer: Interceptor = (next) => (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
  return createClient(service, createGrpcWebTransport({ baseUrl: URL_, httpVersion: "1.1", interceptors: [bearer] }));
}

const gateway = () => client(CallEventService, env("GATEWAY_TOKEN"));
let sequence = 0;

async function report(
  callId: string,
  type: CallEventType,
  fields: { callerNumber?: string; queue?: string; agentId?: string; dialedNumber?: string } = {},
): Promise<void> {
  sequence += 1;
  const { ack } = await gateway().reportCallEvent({
    event: {
      gatewayId: env("GATEWAY_ID"),
      eventId: `${callId}-${sequence}`,
      callId,
      type,
      occurredAt: timestampNow(),
      sequence: BigInt(sequence),
      ...fields,
    },
  });
  check(ack?.outcome === AckOutcome.ACCEPTED, `event ${CallEventType[type]} of ${callId} accepted (${ack?.reason})`);
}

async function ring(callId: string, caller: string, queue = "web"): Promise<void> {
  await report(callId, CallEventType.OFFERED, { callerNumber: caller, dialedNumber: "+18005550199" });
  await report(callId, CallEventType.QUEUED, { queue });
  await report(callId, CallEventType.RINGING, { agentId: env("AGENT_ID") });
}

const consoleErrors: string[] = [];

async function open(width: number, height: number) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const page = await browser.newPage({ viewport: { width, height } });
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(message.text());
  });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  page.setDefaultTimeout(15_000);
  return { browser, page };
}

/** Signs in through the form, as a person pastes a token. */
async function signIn(page: Page, token: string, view: "agent" | "wallboard" | "rollout"): Promise<void> {
  await page.goto(`${URL_}/#${view}`);
  await page.getByTestId("token").fill(token);
  await page.getByTestId("sign-in").click();
  const stored = await page.evaluate(() => Object.keys(sessionStorage));
  check(stored.includes("switchboard.session"), "the session is kept in sessionStorage");
  check(!page.url().includes(token), "the token is not in the URL");
}

/** Presses Tab until the element with `testId` has the focus (a keyboard-only user's path). */
async function tabTo(page: Page, testId: string): Promise<void> {
  for (let i = 0; i < 60; i++) {
    await page.keyboard.press("Tab");
    if (await page.evaluate((id) => document.activeElement?.getAttribute("data-testid") === id, testId)) return;
  }
  throw new Error(`Tab never reached ${testId}`);
}

async function axe(page: Page, where: string): Promise<void> {
  const source = readFileSync(join(import.meta.dirname, "../node_modules/axe-core/axe.min.js"), "utf8");
  // Evaluated over the DevTools protocol: the app's Content-Security-Policy (rightly) refuses
  // an injected script tag.
  await page.evaluate(source);
  const violations = await page.evaluate(async () => {
    // @ts-expect-error axe is the global the script just added
    const result = await window.axe.run(document, { resultTypes: ["violations"] });
    return (result.violations as { id: string; impact: string; nodes: unknown[] }[])
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => `${v.id} (${v.impact}, ${v.nodes.length} nodes)`);
  });
  emit({ step: "axe", where, serious_or_critical: violations });
  check(violations.length === 0, `axe-core finds no serious or critical violation on ${where}: ${violations.join("; ")}`);
}

async function agentStory(page: Page): Promise<void> {
  await signIn(page, env("AGENT_TOKEN"), "agent");
  await page.getByTestId("stream-status").filter({ hasText: "live" }).waitFor();
  // Keyboard only: go available.
  await tabTo(page, "state-available");
  await page.keyboard.press("Enter");
  await page.getByTestId("current-state").filter({ hasText: "available" }).waitFor();
  emit({ step: "available" });

  const callId = `web-${Date.now()}`;
  await ring(callId, env("CALLER"));
  const card = page.getByTestId("card");
  await card.getByTestId("card-name").filter({ hasText: env("CUSTOMER_NAME") }).waitFor();
  check((await card.getByTestId("card-cases").innerText()).includes(env("CASE_SUBJECT")), "the card shows the open case");
  check(
    (await card.getByTestId("card-interactions").innerText()).includes(env("LAST_DISPOSITION")),
    "the card shows the last interaction's disposition",
  );
  emit({ step: "card", name: env("CUSTOMER_NAME") });
  await axe(page, "agent desktop with a card");
  await page.screenshot({ path: join(env("SCREENSHOTS"), "agent-card-1280x800.png") });

  await report(callId, CallEventType.ANSWERED, { agentId: env("AGENT_ID") });
  await page.getByTestId("current-call-state").filter({ hasText: "connected" }).waitFor();
  await report(callId, CallEventType.ENDED);
  await page.getByTestId("wrap-up").waitFor();
  await page.getByTestId("current-state").filter({ hasText: "after call work" }).waitFor();

  // Keyboard only: disposition, notes (with a card number to mask), complete.
  await tabTo(page, "disposition");
  await page.keyboard.press("ArrowDown");
  const picked = await page.getByTestId("disposition").inputValue();
  check(picked !== "", "the keyboard picked a disposition");
  await tabTo(page, "notes");
  await page.keyboard.type("Paid with 4111 1111 1111 1111, all good");
  await tabTo(page, "case-subject");
  await page.keyboard.type("Refund follow-up from the call");
  await tabTo(page, "complete-wrap-up");
  await page.keyboard.press("Enter");
  const stored = await page.getByTestId("stored-notes").innerText();
  check(!stored.includes("4111 1111 1111 1111") && stored.includes("1111"), `the stored notes are masked: ${stored}`);
  await page.getByTestId("current-state").filter({ hasText: "available" }).waitFor();
  emit({ step: "wrapped-up", disposition: picked, stored_notes: stored });

  // The timeline has it, and the next pop of the number shows it.
  await page.getByTestId("search-kind").selectOption("phone");
  await page.getByTestId("search-query").fill(env("CALLER"));
  await page.getByTestId("search-query").press("Enter");
  await page.getByTestId("search-results").getByRole("button").first().click();
  await page.getByTestId("timeline-item").filter({ hasText: picked }).first().waitFor();
  const next = `web-next-${Date.now()}`;
  await ring(next, env("CALLER"));
  await page
    .locator(`[data-testid=card][data-call-id="${next}"]`)
    .getByTestId("card-interactions")
    .filter({ hasText: picked })
    .waitFor();
  emit({ step: "next-pop-shows-it", disposition: picked });
  await report(next, CallEventType.ENDED);

  for (const [width, height] of [
    [1280, 800],
    [1920, 1080],
  ]) {
    await page.setViewportSize({ width, height });
    await page.screenshot({ path: join(env("SCREENSHOTS"), `agent-${width}x${height}.png`), fullPage: true });
  }
}

async function multiple(page: Page): Promise<void> {
  await signIn(page, env("AGENT_TOKEN"), "agent");
  await page.getByTestId("stream-status").filter({ hasText: "live" }).waitFor();
  await page.getByTestId("state-available").click();
  const callId = `web-multi-${Date.now()}`;
  await ring(callId, env("SHARED_NUMBER"));
  const candidates = page.getByTestId("candidate");
  await candidates.first().waitFor();
  check((await candidates.count()) >= 2, "several candidates are listed");
  await candidates.nth(1).check();
  const picked = await candidates.nth(1).inputValue();
  await page.getByTestId("card").waitFor();
  await report(callId, CallEventType.ANSWERED, { agentId: env("AGENT_ID") });
  await report(callId, CallEventType.ENDED);
  await page.getByTestId("disposition").selectOption({ index: 1 });
  await page.getByTestId("complete-wrap-up").click();
  await page.getByTestId("wrap-up-done").waitFor();
  emit({ step: "picked", customer_id: picked, call_id: callId });
  await page.getByTestId("wrap-up-done").getByRole("button").click();

  // A withheld caller: the quick-create form makes the customer the wrap-up is logged on.
  const withheld = `web-withheld-${Date.now()}`;
  await ring(withheld, "anonymous");
  await page.getByTestId("quick-create").waitFor();
  check((await page.getByTestId("new-phone").inputValue()) === "", "no number to prefill for a withheld caller");
  await page.getByTestId("new-name").fill("Walk-in Caller");
  await page.getByTestId("quick-create").getByRole("button").click();
  await page.getByTestId("created-customer").waitFor();
  await report(withheld, CallEventType.ANSWERED, { agentId: env("AGENT_ID") });
  await report(withheld, CallEventType.ENDED);
  await page.getByTestId("disposition").selectOption({ index: 1 });
  await page.getByTestId("complete-wrap-up").click();
  await page.getByTestId("wrap-up-done").waitFor();
  emit({ step: "created", name: "Walk-in Caller", call_id: withheld });
}

async function wallboard(page: Page): Promise<void> {
  await signIn(page, env("SUPERVISOR_TOKEN"), "wallboard");
  const callId = `web-wall-${Date.now()}`;
  await report(callId, CallEventType.OFFERED, { callerNumber: env("CALLER") });
  await report(callId, CallEventType.QUEUED, { queue: "wallboard-q" });
  const row = page.locator('[data-testid=queue-row][data-queue="wallboard-q"]');
  await row.getByTestId("waiting").filter({ hasText: /^1$/ }).waitFor();
  emit({ step: "waiting" });
  await report(callId, CallEventType.RINGING, { agentId: env("AGENT_ID") });
  await report(callId, CallEventType.ANSWERED, { agentId: env("AGENT_ID") });
  await row.getByTestId("in-service").filter({ hasText: /^1$/ }).waitFor();
  emit({ step: "in-service" });
  await report(callId, CallEventType.ENDED);

  // The charts draw what GetKpis answers for today: ask it the same question and compare.
  await page.selectOption('[data-testid="baseline"]', "last-7-days");
  const analytics = client(AnalyticsService, env("SUPERVISOR_TOKEN"));
  const today = new Date();
  today.setHours(0, 0, 0, 0);
  let drawn = "";
  let expected = "";
  for (let attempt = 0; attempt < 40; attempt++) {
    const { total } = await analytics.getKpis({
      period: { start: timestampFromDate(today), end: timestampFromDate(new Date(Date.now() + 1000)) },
      timeZone: Intl.DateTimeFormat().resolvedOptions().timeZone,
    });
    const k = total?.kpis;
    expected = JSON.stringify(
      [k?.serviceLevel, k?.abandonmentRate, k?.firstContactResolution, k?.transferRate].map((v) => (v?.value ?? 0) * 100),
    );
    drawn = (await page.getByTestId("chart-rates").getAttribute("data-drawn")) ?? "";
    const answered = Number(await page.getByTestId("kpi-answered").locator(".tile-value").innerText());
    if (drawn === expected && answered >= 1) break;
    // The board refreshes KPIs on its own; a baseline change refreshes them at once.
    await page.selectOption('[data-testid="baseline"]', attempt % 2 === 0 ? "yesterday" : "last-7-days");
    await page.waitForTimeout(250);
  }
  check(drawn === expected, `the rate chart draws today's KPIs: drawn ${drawn}, GetKpis ${expected}`);
  emit({ step: "charts", rates: JSON.parse(drawn) });
  await page.locator("[data-testid=team-row] button").first().click();
  await page.getByTestId("drill").getByRole("button").first().click();
  await page.getByTestId("agent-states").getByText("Training").waitFor();
  await axe(page, "wallboard");
  await page.screenshot({ path: join(env("SCREENSHOTS"), "wallboard-1920x1080.png"), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.waitForTimeout(2500);
  await page.screenshot({ path: join(env("SCREENSHOTS"), "wallboard-1280x800.png"), fullPage: true });
}

/** The roll-out page draws what GetScorecard answers for the periods it shows. */
async function rollout(page: Page): Promise<void> {
  await signIn(page, env("SUPERVISOR_TOKEN"), "rollout");
  await page.getByTestId("rollout-status").filter({ hasText: "onwards" }).waitFor();
  const periods = JSON.parse((await page.locator("#main").getAttribute("data-periods")) ?? "{}") as {
    launch: string;
    end: string;
    baselineStart: string;
    weeks: [string, string][];
  };
  const at = (iso: string) => timestampFromDate(new Date(iso));
  const baselinePeriod = { start: at(periods.baselineStart), end: at(periods.launch) };
  const scorecards = client(ScorecardService, env("SUPERVISOR_TOKEN"));
  const card = await scorecards.getScorecard({ period: { start: at(periods.launch), end: at(periods.end) }, baselinePeriod });
  const names: Record<number, string> = {
    [Verdict.IMPROVED]: "Improved",
    [Verdict.WORSE]: "Worse",
    [Verdict.NO_CLEAR_CHANGE]: "No clear change",
    [Verdict.INSUFFICIENT_DATA]: "Too few calls",
    [Verdict.PROVISIONAL]: "Provisional",
  };
  const verdicts: Record<string, string> = {};
  for (const key of ["averageHandleTime", "averageSpeedOfAnswer", "serviceLevel", "firstContactResolution", "repeatContactRate", "transferRate", "averageAfterCallWork"] as const) {
    const shown = await page.getByTestId(`verdict-${key}`).getByTestId("verdict").innerText();
    const expected = names[card.total?.efficiency?.[key]?.verdict ?? 0];
    check(shown === expected, `the ${key} verdict shown is GetScorecard's: ${shown} against ${expected}`);
    verdicts[key] = shown;
  }
  emit({ step: "verdicts", verdicts });
  // The adoption chart's weeks are GetScorecard's, week by week.
  const drawn = JSON.parse((await page.getByTestId("chart-adoption").getAttribute("data-drawn")) ?? "[]") as (number | null)[][];
  const weekly = await Promise.all(
    periods.weeks.map(([start, end]) => scorecards.getScorecard({ period: { start: at(start), end: at(end) }, baselinePeriod })),
  );
  const expected = ["popDelivered", "interactionLogged", "dispositionSet", "notesWritten"].map((key) =>
    weekly.map((w) => {
      const share = (w.total?.adoption as Record<string, { share?: number } | undefined> | undefined)?.[key]?.share;
      return share === undefined ? null : share * 100;
    }),
  );
  check(JSON.stringify(drawn) === JSON.stringify(expected), `the adoption chart draws GetScorecard's weeks: ${JSON.stringify(drawn)} against ${JSON.stringify(expected)}`);
  emit({ step: "adoption", weeks: drawn[1] });
  // A supervisor sees who logged nothing, below the team's figures.
  const teamRow = page.locator('[data-testid=rollout-group][data-group="north"]');
  const silent = await teamRow.locator("td").nth(5).innerText();
  emit({ step: "teams", silent });
  await axe(page, "roll-out page");
  await page.screenshot({ path: join(env("SCREENSHOTS"), "rollout-1920x1080.png"), fullPage: true });
}

async function restart(page: Page): Promise<void> {
  await signIn(page, env("AGENT_TOKEN"), "agent");
  await page.getByTestId("stream-status").filter({ hasText: "live" }).waitFor();
  const callId = `web-restart-${Date.now()}`;
  await ring(callId, env("CALLER"));
  await report(callId, CallEventType.ANSWERED, { agentId: env("AGENT_ID") });
  await page.getByTestId("current-call-state").filter({ hasText: "connected" }).waitFor();
  emit({ step: "restart" });
  const lines = createInterface({ input: process.stdin });
  for await (const _ of lines) break;
  // The stream noticed, reconnected, and the snapshot brought the call back with its card.
  await page.getByTestId("stream-status").filter({ hasText: "live" }).waitFor({ timeout: 30_000 });
  await page.locator(`[data-testid=call-item][data-call-id="${callId}"]`).waitFor();
  await page.getByTestId("card-name").filter({ hasText: env("CUSTOMER_NAME") }).waitFor();
  emit({ step: "resumed", call_id: callId });
}

async function latency(page: Page): Promise<void> {
  await signIn(page, env("AGENT_TOKEN"), "agent");
  await page.getByTestId("stream-status").filter({ hasText: "live" }).waitFor();
  const calls = Number(env("RING_CALLS"));
  const samples: number[] = [];
  for (let i = 0; i < calls; i++) {
    const callId = `web-ring-${Date.now()}-${i}`;
    await report(callId, CallEventType.OFFERED, { callerNumber: env("CALLER") });
    const sent = performance.timeOrigin + performance.now();
    await report(callId, CallEventType.RINGING, { agentId: env("AGENT_ID") });
    const card = page.locator(`[data-testid=card][data-call-id="${callId}"]`);
    await card.waitFor();
    samples.push(Number(await card.getAttribute("data-shown-at")) - sent);
    await report(callId, CallEventType.ENDED);
    await card.waitFor({ state: "detached" });
  }
  samples.sort((a, b) => a - b);
  const at = (q: number) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))];
  emit({ step: "ring-to-visible", calls, p50_ms: at(0.5), p99_ms: at(0.99), max_ms: samples[samples.length - 1] });
}

async function main(): Promise<void> {
  mkdirSync(env("SCREENSHOTS"), { recursive: true });
  const scenario = env("SCENARIO");
  const wide = scenario === "wallboard" || scenario === "rollout";
  const { browser, page } = await open(wide ? 1920 : 1280, wide ? 1080 : 800);
  try {
    const run = { agent: agentStory, multiple, wallboard, rollout, restart, latency }[scenario];
    check(run, `a known scenario: ${scenario}`);
    await run(page);
    check(consoleErrors.length === 0, `no console errors: ${consoleErrors.join(" | ")}`);
    emit({ step: "done", scenario });
  } catch (error) {
    await page
      .screenshot({ path: join(env("SCREENSHOTS"), `FAILED-${scenario}.png`), fullPage: true })
      .catch(() => undefined);
    emit({ step: "failed", scenario, error: String(error), console_errors: consoleErrors });
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}

await main();
