// The supervisor wallboard: live queues (refreshed every 2 s, one request at a time), today's KPIs
// against a chosen baseline, teams side by side, and one agent's states on demand.

import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  Tooltip,
} from "chart.js";
import { ConnectError } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { field, h, replace, sleep } from "./dom.js";
import { dateTime, duration, percent } from "./format.js";
import type { Api } from "./session.js";
import { AgentService, AgentState, type Agent } from "../gen/switchboard/v1/agents_pb.js";
import {
  AnalyticsService,
  KpiGrouping,
  LiveSource,
  type KpiValue,
  type Kpis,
} from "../gen/switchboard/v1/analytics_pb.js";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip);

/** How often the live queues are read: the next read starts 2 s after the last one began, or at
 * once if it took longer; never two at a time. */
const LIVE_EVERY_MS = 2000;
const KPIS_EVERY_MS = 30_000;

type Baseline = "yesterday" | "last-week" | "last-7-days";

const RATE_KPIS: [keyof Kpis, string][] = [
  ["serviceLevel", "Service level"],
  ["abandonmentRate", "Abandonment"],
  ["firstContactResolution", "FCR"],
  ["transferRate", "Transfer rate"],
];
const TIME_KPIS: [keyof Kpis, string][] = [
  ["averageHandleTime", "AHT"],
  ["averageSpeedOfAnswer", "ASA"],
];

function startOfDay(d: Date): Date {
  return new Date(d.getFullYear(), d.getMonth(), d.getDate());
}

function addDays(d: Date, days: number): Date {
  const copy = new Date(d);
  copy.setDate(copy.getDate() + days);
  return copy;
}

function periods(baseline: Baseline, now = new Date()) {
  const today = startOfDay(now);
  const end = new Date(now.getTime() + 1000);
  const elapsed = end.getTime() - today.getTime();
  const base =
    baseline === "yesterday"
      ? { start: addDays(today, -1), end: new Date(addDays(today, -1).getTime() + elapsed) }
      : baseline === "last-week"
        ? { start: addDays(today, -7), end: new Date(addDays(today, -7).getTime() + elapsed) }
        : { start: addDays(today, -7), end: today };
  const period = (p: { start: Date; end: Date }) => ({
    start: timestampFromDate(p.start),
    end: timestampFromDate(p.end),
  });
  return { period: period({ start: today, end }), baseline: period(base) };
}

const value = (v: KpiValue | undefined) => v?.value;

export class Wallboard {
  private readonly analytics;
  private readonly agents;
  private baseline: Baseline = "yesterday";
  private readonly queues = h("div", { class: "queues", "data-testid": "queues" });
  private readonly liveStatus = h("p", { class: "muted", role: "status", "data-testid": "live-status" });
  private readonly tiles = h("div", { class: "tiles", "data-testid": "kpi-tiles" });
  private readonly teams = h("div", { class: "teams", "data-testid": "teams" });
  private readonly drill = h("div", { class: "drill", "data-testid": "drill" });
  private readonly errorLine = h("p", { class: "error", role: "alert" });
  private rateChart?: Chart;
  private timeChart?: Chart;
  private readonly rateCanvas = h("canvas", {
    role: "img",
    "aria-label": "Rates today against the baseline",
    "data-testid": "chart-rates",
  });
  private readonly timeCanvas = h("canvas", {
    role: "img",
    "aria-label": "Handle time and speed of answer today against the baseline",
    "data-testid": "chart-times",
  });
  private kpiTick = 0;

  constructor(
    private readonly root: HTMLElement,
    api: Api,
    private readonly signal: AbortSignal,
  ) {
    this.analytics = api.client(AnalyticsService);
    this.agents = api.client(AgentService);
  }

  start(): void {
    const baseline = h(
      "select",
      {
        "data-testid": "baseline",
        onchange: (event: Event) => {
          this.baseline = (event.target as HTMLSelectElement).value as Baseline;
          void this.refreshKpis();
        },
      },
      h("option", { value: "yesterday" }, "Yesterday, same hours"),
      h("option", { value: "last-week" }, "Same day last week"),
      h("option", { value: "last-7-days" }, "The 7 days before today"),
    );
    replace(
      this.root,
      h(
        "div",
        { class: "wallboard" },
        h(
          "section",
          { class: "panel", "aria-labelledby": "live-title" },
          h("h2", { id: "live-title" }, "Live queues"),
          this.liveStatus,
          this.queues,
        ),
        h(
          "section",
          { class: "panel kpi-panel", "aria-labelledby": "kpi-title" },
          h("h2", { id: "kpi-title" }, "Today against the baseline"),
          field("Baseline", baseline),
          this.tiles,
          h(
            "div",
            { class: "charts" },
            h("figure", {}, h("div", { class: "chart-box" }, this.rateCanvas), h("figcaption", {}, "Rates")),
            h("figure", {}, h("div", { class: "chart-box" }, this.timeCanvas), h("figcaption", {}, "Times (seconds)")),
          ),
          this.errorLine,
        ),
        h(
          "section",
          { class: "panel", "aria-labelledby": "teams-title" },
          h("h2", { id: "teams-title" }, "Teams"),
          this.teams,
          this.drill,
        ),
      ),
    );
    void this.liveLoop();
    void this.kpiLoop();
  }

  private async liveLoop(): Promise<void> {
    while (!this.signal.aborted) {
      const began = Date.now();
      try {
        const live = await this.analytics.getLiveQueueStats({}, { signal: this.signal });
        this.renderQueues(live.queues);
        this.liveStatus.textContent = `As of ${dateTime(live.asOf)}${live.source === LiveSource.DATABASE ? " (from the database)" : ""}`;
      } catch (error) {
        if (this.signal.aborted) return;
        this.liveStatus.textContent = `Live queues unavailable: ${error instanceof ConnectError ? error.rawMessage : String(error)}`;
      }
      await sleep(Math.max(0, LIVE_EVERY_MS - (Date.now() - began)), this.signal);
    }
  }

  private renderQueues(
    queues: { queue: string; callsWaiting: number; longestWaitSeconds: number; callsInService: number; callsStale: number; agents?: { available: number; busy: number; afterCallWork: number; away: number; offline: number } }[],
  ): void {
    replace(
      this.queues,
      queues.length === 0
        ? h("p", { class: "muted" }, "No queue has a call or an agent.")
        : h(
            "table",
            {},
            h("caption", { class: "visually-hidden" }, "Live queue statistics"),
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ["Queue", "Waiting", "Longest wait", "In service", "Stale", "Available", "Busy", "Wrap-up", "Break", "Offline"].map((t) =>
                  h("th", { scope: "col" }, t),
                ),
              ),
            ),
            h(
              "tbody",
              {},
              queues.map((q) =>
                h(
                  "tr",
                  { "data-testid": "queue-row", "data-queue": q.queue },
                  h("th", { scope: "row" }, q.queue),
                  h("td", { "data-testid": "waiting" }, String(q.callsWaiting)),
                  h("td", {}, q.callsWaiting > 0 ? duration(q.longestWaitSeconds) : "–"),
                  h("td", { "data-testid": "in-service" }, String(q.callsInService)),
                  // Calls with no event for hours (a lost end): neither waiting nor in service.
                  h("td", { "data-testid": "stale", title: "no event for longer than the staleness bound" }, String(q.callsStale)),
                  h("td", {}, String(q.agents?.available ?? 0)),
                  h("td", {}, String(q.agents?.busy ?? 0)),
                  h("td", {}, String(q.agents?.afterCallWork ?? 0)),
                  h("td", {}, String(q.agents?.away ?? 0)),
                  h("td", {}, String(q.agents?.offline ?? 0)),
                ),
              ),
            ),
          ),
    );
  }

  private async kpiLoop(): Promise<void> {
    while (!this.signal.aborted) {
      await this.refreshKpis();
      await sleep(KPIS_EVERY_MS, this.signal);
    }
  }

  async refreshKpis(): Promise<void> {
    const tick = ++this.kpiTick;
    const { period, baseline } = periods(this.baseline);
    const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    try {
      const [total, byTeam] = await Promise.all([
        this.analytics.getKpis({ period, baselinePeriod: baseline, timeZone }),
        this.analytics.getKpis({ period, baselinePeriod: baseline, timeZone, groupBy: KpiGrouping.TEAM }),
      ]);
      if (tick !== this.kpiTick) return;
      const kpis = total.total?.kpis;
      this.renderTiles(kpis);
      this.renderCharts(kpis);
      this.renderTeams(byTeam.groups.map((g) => ({ team: g.key, kpis: g.kpis })));
      this.errorLine.textContent = "";
    } catch (error) {
      this.errorLine.textContent = error instanceof ConnectError ? error.rawMessage : String(error);
    }
  }

  private renderTiles(kpis: Kpis | undefined): void {
    const tile = (name: string, testId: string, v: KpiValue | undefined, show: (x: number | undefined) => string) =>
      h(
        "div",
        { class: "tile", "data-testid": testId },
        h("span", { class: "tile-name" }, name),
        h("strong", { class: "tile-value" }, show(value(v))),
        h("span", { class: "tile-baseline" }, `baseline ${show(v?.baseline)}`),
      );
    const count = (x: number | undefined) => (x === undefined ? "–" : String(Math.round(x)));
    const score = (x: number | undefined) => (x === undefined ? "–" : x.toFixed(1));
    replace(
      this.tiles,
      tile("Offered", "kpi-offered", kpis?.offered, count),
      tile("Answered", "kpi-answered", kpis?.answered, count),
      tile("AHT", "kpi-aht", kpis?.averageHandleTime, duration),
      tile("ASA", "kpi-asa", kpis?.averageSpeedOfAnswer, duration),
      tile("Service level", "kpi-service-level", kpis?.serviceLevel, percent),
      tile("Abandonment", "kpi-abandonment", kpis?.abandonmentRate, percent),
      tile("FCR", "kpi-fcr", kpis?.firstContactResolution, percent),
      tile("Transfer rate", "kpi-transfer", kpis?.transferRate, percent),
      tile("CSAT", "kpi-csat", kpis?.csat, score),
      tile("NPS", "kpi-nps", kpis?.nps, score),
    );
  }

  private renderCharts(kpis: Kpis | undefined): void {
    const data = (list: [keyof Kpis, string][], scale: number) => ({
      labels: list.map(([, name]) => name),
      datasets: [
        {
          label: "Today",
          data: list.map(([key]) => (value(kpis?.[key] as KpiValue | undefined) ?? 0) * scale),
          backgroundColor: "#1f5fbf",
        },
        {
          label: "Baseline",
          data: list.map(([key]) => ((kpis?.[key] as KpiValue | undefined)?.baseline ?? 0) * scale),
          backgroundColor: "#9aa5b1",
        },
      ],
    });
    const options = { responsive: true, maintainAspectRatio: false, animation: false as const };
    if (this.rateChart && this.timeChart) {
      this.rateChart.data = data(RATE_KPIS, 100);
      this.timeChart.data = data(TIME_KPIS, 1);
      this.rateChart.update();
      this.timeChart.update();
    } else {
      this.rateChart = new Chart(this.rateCanvas, {
        type: "bar",
        data: data(RATE_KPIS, 100),
        options: { ...options, scales: { y: { min: 0, max: 100, title: { display: true, text: "%" } } } },
      });
      this.timeChart = new Chart(this.timeCanvas, { type: "bar", data: data(TIME_KPIS, 1), options });
    }
    this.rateCanvas.dataset.drawn = JSON.stringify(this.rateChart.data.datasets[0].data);
    this.timeCanvas.dataset.drawn = JSON.stringify(this.timeChart.data.datasets[0].data);
  }

  private renderTeams(teams: { team: string; kpis?: Kpis }[]): void {
    const columns: [string, (k: Kpis | undefined) => string][] = [
      ["Answered", (k) => (value(k?.answered) === undefined ? "–" : String(value(k?.answered)))],
      ["AHT", (k) => duration(value(k?.averageHandleTime))],
      ["ASA", (k) => duration(value(k?.averageSpeedOfAnswer))],
      ["Service level", (k) => percent(value(k?.serviceLevel))],
      ["FCR", (k) => percent(value(k?.firstContactResolution))],
      ["Transfer rate", (k) => percent(value(k?.transferRate))],
      ["CSAT", (k) => value(k?.csat)?.toFixed(1) ?? "–"],
    ];
    replace(
      this.teams,
      teams.length === 0
        ? h("p", { class: "muted" }, "No answered call today yet.")
        : h(
            "table",
            {},
            h("caption", { class: "visually-hidden" }, "KPIs by team, today"),
            h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Team"), columns.map(([name]) => h("th", { scope: "col" }, name)))),
            h(
              "tbody",
              {},
              teams.map(({ team, kpis }) =>
                h(
                  "tr",
                  { "data-testid": "team-row" },
                  h(
                    "th",
                    { scope: "row" },
                    h("button", { type: "button", class: "link", onclick: () => void this.showTeam(team) }, team || "(no team)"),
                  ),
                  columns.map(([, show]) => h("td", {}, show(kpis))),
                ),
              ),
            ),
          ),
    );
  }

  private async showTeam(team: string): Promise<void> {
    try {
      const { agents } = await this.agents.listAgents({ team, pageSize: 100 });
      replace(
        this.drill,
        h("h3", {}, `Agents of ${team || "no team"}`),
        h(
          "ul",
          {},
          agents.map((a) =>
            h(
              "li",
              {},
              h("button", { type: "button", class: "link", onclick: () => void this.showAgent(a) }, a.displayName || a.agentId),
              ` · ${AgentState[a.state].toLowerCase().replace(/_/g, " ")}`,
            ),
          ),
        ),
      );
    } catch (error) {
      replace(this.drill, h("p", { class: "error" }, error instanceof ConnectError ? error.rawMessage : String(error)));
    }
  }

  private async showAgent(agent: Agent): Promise<void> {
    try {
      const { changes } = await this.agents.listAgentStates({ agentId: agent.agentId, limit: 20 });
      replace(
        this.drill,
        h("h3", {}, `States of ${agent.displayName || agent.agentId}`),
        changes.length === 0 ? h("p", { class: "muted" }, "No state change recorded.") : null,
        h(
          "ol",
          { "data-testid": "agent-states" },
          changes.map((c) =>
            h("li", {}, `${dateTime(c.since)} · ${AgentState[c.state].toLowerCase().replace(/_/g, " ")}${c.reason ? ` (${c.reason})` : ""}`),
          ),
        ),
      );
    } catch (error) {
      replace(this.drill, h("p", { class: "error" }, error instanceof ConnectError ? error.rawMessage : String(error)));
    }
  }
}

