// The roll-out page: ScorecardService.GetScorecard for the weeks since the launch against the
// weeks before it. Adoption and efficiency week by week against the baseline (charts), the verdict
// of each KPI over the whole period, the teams with their coordination figures (and their agents,
// for a supervisor), and the feedback loop. Definitions: docs/SCORECARD.md.

import {
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from "chart.js";
import { ConnectError } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { field, h, replace } from "./dom.js";
import { duration, percent } from "./format.js";
import type { Api } from "./session.js";
import {
  ScorecardGrouping,
  ScorecardService,
  Verdict,
  type Comparison,
  type Efficiency,
  type GetScorecardResponse,
  type ScorecardGroup,
  type Share,
} from "../gen/switchboard/v1/scorecard_pb.js";
import { FeedbackSource } from "../gen/switchboard/v1/feedback_pb.js";

Chart.register(CategoryScale, LinearScale, LineController, LineElement, PointElement, Legend, Tooltip);

const DAY_MS = 86_400_000;

/** The efficiency KPIs in the order of the proto, with how they read. */
const KPIS: [keyof Efficiency, string, "time" | "rate"][] = [
  ["averageHandleTime", "Average handle time", "time"],
  ["averageSpeedOfAnswer", "Average speed of answer", "time"],
  ["serviceLevel", "Service level", "rate"],
  ["firstContactResolution", "First-contact resolution", "rate"],
  ["repeatContactRate", "Repeat contacts", "rate"],
  ["transferRate", "Transfer rate", "rate"],
  ["averageAfterCallWork", "After-call work", "time"],
];

const ADOPTION: [keyof NonNullable<ScorecardGroup["adoption"]>, string][] = [
  ["popDelivered", "Pop delivered"],
  ["interactionLogged", "Interaction logged"],
  ["dispositionSet", "Disposition set"],
  ["notesWritten", "Notes written"],
];

const VERDICTS: Record<Verdict, string> = {
  [Verdict.UNSPECIFIED]: "–",
  [Verdict.IMPROVED]: "Improved",
  [Verdict.WORSE]: "Worse",
  [Verdict.NO_CLEAR_CHANGE]: "No clear change",
  [Verdict.INSUFFICIENT_DATA]: "Too few calls",
  [Verdict.PROVISIONAL]: "Provisional",
};

const shareOf = (s: Share | undefined) => s?.share;

/** JSON for the data attributes the browser test reads (int64 counts are bigints). */
const json = (value: unknown) => JSON.stringify(value, (_, v: unknown) => (typeof v === "bigint" ? Number(v) : v));

function startOfDay(d: Date): Date {
  return new Date(d.getFullYear(), d.getMonth(), d.getDate());
}

function isoDay(d: Date): string {
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

const period = (start: Date, end: Date) => ({ start: timestampFromDate(start), end: timestampFromDate(end) });

/** A KPI's value as it reads: a time or a percentage. */
function show(kind: "time" | "rate", v: number | undefined): string {
  return kind === "time" ? duration(v) : percent(v);
}

/** A change as it reads, with its sign. */
function change(kind: "time" | "rate", v: number | undefined): string {
  if (v === undefined) return "–";
  const sign = v > 0 ? "+" : v < 0 ? "−" : "±";
  return kind === "time" ? `${sign}${Math.abs(v).toFixed(1)} s` : `${sign}${(Math.abs(v) * 100).toFixed(1)} pts`;
}

export class Rollout {
  private readonly scorecards;
  private launch = startOfDay(new Date(Date.now() - 28 * DAY_MS));
  private weeks = 4;
  private baselineWeeks = 4;
  private grouping = ScorecardGrouping.TEAM;
  private readonly status = h("p", { class: "muted", role: "status", "data-testid": "rollout-status" });
  private readonly verdicts = h("div", { "data-testid": "verdicts" });
  private readonly groups = h("div", { "data-testid": "rollout-groups" });
  private readonly feedback = h("div", { "data-testid": "feedback-loop" });
  private readonly errorLine = h("p", { class: "error", role: "alert" });
  private readonly adoptionCanvas = h("canvas", {
    role: "img",
    "aria-label": "Adoption week by week since the launch",
    "data-testid": "chart-adoption",
  });
  private readonly timesCanvas = h("canvas", {
    role: "img",
    "aria-label": "Handle time and speed of answer week by week, against the baseline",
    "data-testid": "chart-efficiency-times",
  });
  private readonly ratesCanvas = h("canvas", {
    role: "img",
    "aria-label": "Service level and first-contact resolution week by week, against the baseline",
    "data-testid": "chart-efficiency-rates",
  });
  private charts: Chart[] = [];
  private tick = 0;

  constructor(
    private readonly root: HTMLElement,
    api: Api,
    private readonly signal: AbortSignal,
  ) {
    this.scorecards = api.client(ScorecardService);
  }

  start(): void {
    const launch = h("input", {
      type: "date",
      value: isoDay(this.launch),
      "data-testid": "launch-date",
      onchange: (event: Event) => {
        const value = (event.target as HTMLInputElement).value;
        if (value) {
          const [y, m, d] = value.split("-").map(Number);
          this.launch = new Date(y, m - 1, d);
          void this.load();
        }
      },
    });
    const number = (value: number, testId: string, set: (n: number) => void) =>
      h("input", {
        type: "number",
        min: 1,
        max: 26,
        value: String(value),
        "data-testid": testId,
        onchange: (event: Event) => {
          const n = Number((event.target as HTMLInputElement).value);
          if (Number.isInteger(n) && n >= 1 && n <= 26) {
            set(n);
            void this.load();
          }
        },
      });
    const grouping = h(
      "select",
      {
        "data-testid": "rollout-grouping",
        onchange: (event: Event) => {
          this.grouping = Number((event.target as HTMLSelectElement).value) as ScorecardGrouping;
          void this.load();
        },
      },
      h("option", { value: String(ScorecardGrouping.TEAM) }, "By team"),
      h("option", { value: String(ScorecardGrouping.QUEUE) }, "By queue"),
    );
    replace(
      this.root,
      h(
        "div",
        { class: "rollout" },
        h(
          "section",
          { class: "panel", "aria-labelledby": "rollout-title" },
          h("h2", { id: "rollout-title" }, "Roll-out scorecard"),
          h(
            "div",
            { class: "controls" },
            field("Launch day", launch),
            field("Weeks since", number(this.weeks, "weeks-after", (n) => (this.weeks = n))),
            field("Baseline weeks before", number(this.baselineWeeks, "weeks-before", (n) => (this.baselineWeeks = n))),
            field("Groups", grouping),
          ),
          this.status,
          this.errorLine,
        ),
        h(
          "section",
          { class: "panel", "aria-labelledby": "trend-title" },
          h("h2", { id: "trend-title" }, "Week by week against the baseline"),
          h(
            "div",
            { class: "charts" },
            h("figure", {}, h("div", { class: "chart-box" }, this.adoptionCanvas), h("figcaption", {}, "Adoption (% of answered calls)")),
            h("figure", {}, h("div", { class: "chart-box" }, this.timesCanvas), h("figcaption", {}, "Times (seconds); dashed: baseline")),
            h("figure", {}, h("div", { class: "chart-box" }, this.ratesCanvas), h("figcaption", {}, "Rates (%); dashed: baseline")),
          ),
        ),
        h(
          "section",
          { class: "panel", "aria-labelledby": "verdict-title" },
          h("h2", { id: "verdict-title" }, "Efficiency since the launch"),
          this.verdicts,
        ),
        h("section", { class: "panel", "aria-labelledby": "groups-title" }, h("h2", { id: "groups-title" }, "Teams first"), this.groups),
        h("section", { class: "panel", "aria-labelledby": "feedback-title" }, h("h2", { id: "feedback-title" }, "The feedback loop"), this.feedback),
      ),
    );
    void this.load();
  }

  /** The whole period since the launch, each week of it, and the baseline before it. */
  private periods() {
    const now = new Date();
    const baseline = period(new Date(this.launch.getTime() - this.baselineWeeks * 7 * DAY_MS), this.launch);
    const end = new Date(Math.min(this.launch.getTime() + this.weeks * 7 * DAY_MS, now.getTime() + 1000));
    const weeks: { label: string; start: Date; end: Date }[] = [];
    for (let i = 0; i < this.weeks; i++) {
      const start = new Date(this.launch.getTime() + i * 7 * DAY_MS);
      if (start >= end) break;
      weeks.push({ label: `Week ${i + 1}`, start, end: new Date(Math.min(start.getTime() + 7 * DAY_MS, end.getTime())) });
    }
    return { whole: period(this.launch, end), baseline, weeks };
  }

  async load(): Promise<void> {
    const tick = ++this.tick;
    const { whole, baseline, weeks } = this.periods();
    if (weeks.length === 0) {
      this.errorLine.textContent = "The launch day is in the future: nothing to compare yet.";
      return;
    }
    this.status.textContent = "Loading…";
    try {
      const ask = (p: ReturnType<typeof period>) =>
        this.scorecards.getScorecard({ period: p, baselinePeriod: baseline, groupBy: this.grouping }, { signal: this.signal });
      const [card, ...weekly] = await Promise.all([ask(whole), ...weeks.map((w) => ask(period(w.start, w.end)))]);
      if (tick !== this.tick) return;
      this.renderCharts(weeks.map((w) => w.label), weekly);
      this.renderVerdicts(card);
      this.renderGroups(card);
      this.renderFeedback(card);
      this.errorLine.textContent = "";
      this.status.textContent = `${isoDay(this.launch)} onwards against the ${this.baselineWeeks} weeks before; each KPI's interval at ${(card.confidence * 100).toFixed(2)}% (docs/SCORECARD.md).`;
      // The periods asked, for the browser test to ask GetScorecard the same.
      this.root.dataset.periods = json({
        launch: this.launch.toISOString(),
        end: weeks[weeks.length - 1].end.toISOString(),
        baselineStart: new Date(this.launch.getTime() - this.baselineWeeks * 7 * DAY_MS).toISOString(),
        weeks: weeks.map((w) => [w.start.toISOString(), w.end.toISOString()]),
      });
    } catch (error) {
      if (this.signal.aborted) return;
      this.status.textContent = "";
      this.errorLine.textContent = error instanceof ConnectError ? error.rawMessage : String(error);
    }
  }

  private renderCharts(labels: string[], weekly: GetScorecardResponse[]): void {
    for (const chart of this.charts) chart.destroy();
    const options = { responsive: true, maintainAspectRatio: false, animation: false as const };
    const colours = ["#1f5fbf", "#b35900", "#2e7d32", "#6a1b9a"];
    const series = (name: string, data: (number | null)[], colour: string, dashed = false) => ({
      label: name,
      data,
      borderColor: colour,
      backgroundColor: colour,
      borderDash: dashed ? [6, 4] : undefined,
      pointRadius: dashed ? 0 : 3,
      spanGaps: true,
    });
    const adoption = ADOPTION.map(([key, name], i) =>
      series(name, weekly.map((w) => {
        const v = shareOf(w.total?.adoption?.[key] as Share | undefined);
        return v === undefined ? null : v * 100;
      }), colours[i]),
    );
    const efficiency = (keys: (keyof Efficiency)[], scale: number) =>
      keys.flatMap((key, i) => {
        const name = KPIS.find(([k]) => k === key)?.[1] ?? key;
        const comparison = (w: GetScorecardResponse) => w.total?.efficiency?.[key] as Comparison | undefined;
        const now = weekly.map((w) => (comparison(w)?.value === undefined ? null : (comparison(w)?.value ?? 0) * scale));
        const base = weekly.map((w) => (comparison(w)?.baseline === undefined ? null : (comparison(w)?.baseline ?? 0) * scale));
        return [series(name, now, colours[i]), series(`${name}, baseline`, base, colours[i], true)];
      });
    const percentAxis = { y: { min: 0, max: 100, title: { display: true, text: "%" } } };
    this.charts = [
      new Chart(this.adoptionCanvas, { type: "line", data: { labels, datasets: adoption }, options: { ...options, scales: percentAxis } }),
      new Chart(this.timesCanvas, {
        type: "line",
        data: { labels, datasets: efficiency(["averageHandleTime", "averageSpeedOfAnswer"], 1) },
        options: { ...options, scales: { y: { min: 0, title: { display: true, text: "s" } } } },
      }),
      new Chart(this.ratesCanvas, {
        type: "line",
        data: { labels, datasets: efficiency(["serviceLevel", "firstContactResolution"], 100) },
        options: { ...options, scales: percentAxis },
      }),
    ];
    // What each chart draws, for the browser test to compare with GetScorecard.
    this.adoptionCanvas.dataset.drawn = json(adoption.map((s) => s.data));
    this.timesCanvas.dataset.drawn = json(this.charts[1].data.datasets.map((s) => s.data));
    this.ratesCanvas.dataset.drawn = json(this.charts[2].data.datasets.map((s) => s.data));
  }

  private renderVerdicts(card: GetScorecardResponse): void {
    const e = card.total?.efficiency;
    replace(
      this.verdicts,
      h(
        "table",
        {},
        h("caption", { class: "visually-hidden" }, "Each efficiency KPI since the launch against the baseline, with its verdict"),
        h(
          "thead",
          {},
          h("tr", {}, ["KPI", "Since the launch", "Baseline", "Change", "Interval of the change", "Calls (before)", "Verdict"].map((t) => h("th", { scope: "col" }, t))),
        ),
        h(
          "tbody",
          {},
          KPIS.map(([key, name, kind]) => {
            const c = e?.[key] as Comparison | undefined;
            const interval =
              c?.changeLow === undefined || c?.changeHigh === undefined ? "–" : `${change(kind, c.changeLow)} to ${change(kind, c.changeHigh)}`;
            const verdict = c?.verdict ?? Verdict.UNSPECIFIED;
            return h(
              "tr",
              { "data-testid": `verdict-${key}` },
              h("th", { scope: "row" }, name),
              h("td", {}, show(kind, c?.value)),
              h("td", {}, show(kind, c?.baseline)),
              h("td", {}, change(kind, c?.change)),
              h("td", {}, interval),
              h("td", {}, `${c?.calls ?? 0} (${c?.baselineCalls ?? 0})`),
              h("td", { class: `verdict verdict-${Verdict[verdict].toLowerCase()}`, "data-testid": "verdict" }, VERDICTS[verdict]),
            );
          }),
        ),
      ),
    );
  }

  private renderGroups(card: GetScorecardResponse): void {
    const rows = [...(card.total ? [card.total] : []), ...card.groups];
    const shareCell = (s: Share | undefined) => h("td", {}, s?.share === undefined ? "–" : `${percent(s.share)} (${s.count}/${s.of})`);
    replace(
      this.groups,
      h(
        "table",
        {},
        h("caption", { class: "visually-hidden" }, "Adoption and coordination per group"),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Group", "Pop delivered", "Logged", "Disposition", "Notes", "Cases in SLA", "Logged nothing", "AHT", "Transfers resolved in team", "Cases resolved by a teammate"].map((t) =>
              h("th", { scope: "col" }, t),
            ),
          ),
        ),
        h(
          "tbody",
          {},
          rows.map((g, i) => {
            const a = g.adoption;
            const silent = a?.silentAgents.length
              ? `${a.silentAgentCount}: ${a.silentAgents.map((s) => s.displayName || s.agentId).join(", ")}`
              : String(a?.silentAgentCount ?? 0);
            return h(
              "tr",
              { "data-testid": "rollout-group", "data-group": i === 0 ? "(total)" : g.key },
              h("th", { scope: "row" }, i === 0 ? "All" : g.key || "(none)"),
              shareCell(a?.popDelivered),
              shareCell(a?.interactionLogged),
              shareCell(a?.dispositionSet),
              shareCell(a?.notesWritten),
              shareCell(a?.casesUpdatedWithinSla),
              h("td", {}, silent),
              h("td", {}, `${duration(g.efficiency?.averageHandleTime?.value)} · ${VERDICTS[g.efficiency?.averageHandleTime?.verdict ?? Verdict.UNSPECIFIED]}`),
              shareCell(g.coordination?.transfersResolvedInTeam),
              shareCell(g.coordination?.casesResolvedByTeammate),
            );
          }),
        ),
      ),
      // Individual figures come only below the teams', and only for a supervisor.
      card.groups
        .filter((g) => g.agents.length > 0)
        .map((g) =>
          h(
            "details",
            { "data-testid": "group-agents" },
            h("summary", {}, `Agents of ${g.key || "(none)"}`),
            h(
              "ul",
              {},
              g.agents.map((agent) =>
                h(
                  "li",
                  {},
                  `${agent.displayName || agent.agentId}: ${agent.callsAnswered} calls, pop ${percent(agent.popDelivered?.share)}, logged ${percent(agent.interactionLogged?.share)}, AHT ${duration(agent.averageHandleTime)}`,
                ),
              ),
            ),
          ),
        ),
    );
  }

  private renderFeedback(card: GetScorecardResponse): void {
    const f = card.feedback;
    replace(
      this.feedback,
      h(
        "p",
        {},
        `Resolved ${percent(f?.resolved?.share)} (${f?.resolved?.count ?? 0} of ${f?.resolved?.of ?? 0}); median time to resolution ${
          f?.medianHoursToResolution === undefined ? "–" : `${f.medianHoursToResolution.toFixed(1)} h`
        }; ${f?.pastDue ?? 0} past due; negative feedback with its case resolved ${percent(f?.negativeWithCaseResolved?.share)}.`,
      ),
      f && f.bySourceAndCategory.length > 0
        ? h(
            "table",
            {},
            h("caption", { class: "visually-hidden" }, "Feedback by source and category"),
            h("thead", {}, h("tr", {}, ["Source", "Category", "Items", "Resolved", "Past due"].map((t) => h("th", { scope: "col" }, t)))),
            h(
              "tbody",
              {},
              f.bySourceAndCategory.map((c) =>
                h(
                  "tr",
                  {},
                  h("td", {}, c.source === FeedbackSource.INTERNAL ? "staff" : FeedbackSource[c.source].toLowerCase()),
                  h("td", {}, c.category),
                  h("td", {}, String(c.items)),
                  h("td", {}, String(c.resolved)),
                  h("td", {}, String(c.pastDue)),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No feedback in the period."),
    );
  }
}
