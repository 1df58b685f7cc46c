// The agent desktop: the agent's state, the live call stream with the caller's card, wrap-up, and
// finding customers. Everything goes through the public API over gRPC-web.

import { ConnectError } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { field, h, replace, sleep } from "./dom.js";
import { dateTime, duration, date } from "./format.js";
import { customerCard, popSummary } from "./card.js";
import type { Api } from "./session.js";
import {
  AgentCallEventKind,
  AgentService,
  AgentState,
  CallState,
  type AgentCall,
  type WatchAgentResponse,
} from "../gen/switchboard/v1/agents_pb.js";
import { CasePriority, CaseService } from "../gen/switchboard/v1/cases_pb.js";
import { ContactKind, CustomerService, type Customer } from "../gen/switchboard/v1/customers_pb.js";
import {
  Channel,
  Direction,
  InteractionService,
  type Disposition,
  type Interaction,
} from "../gen/switchboard/v1/interactions_pb.js";
import { CallerKind, MatchKind, type ScreenPop } from "../gen/switchboard/v1/screen_pop_pb.js";

/** The states an agent picks, as the API names them (a break is AWAY with its reason). */
const BREAK_REASONS = ["Break", "Lunch", "Training", "Meeting", "Coaching"];

interface TrackedCall {
  call: AgentCall;
  pop?: ScreenPop;
  /** The customer the agent settled on: the card's, a picked candidate, or one just created. */
  customerId?: string;
  customerName?: string;
  /** Set once the call ended or went elsewhere while it was the agent's: wrap-up is due. */
  finished?: "ended" | "transferred";
  /** Shown after wrap-up: the interaction as stored (notes masked). */
  saved?: Interaction;
  answeredByMe?: boolean;
}

const callKey = (c: AgentCall) => `${c.gatewayId}/${c.callId}`;

export class AgentDesktop {
  private readonly agents;
  private readonly interactions;
  private readonly customers;
  private readonly cases;
  private readonly calls = new Map<string, TrackedCall>();
  private selected = "";
  private dispositions: Disposition[] = [];
  private state = AgentState.OFFLINE;
  private stateReason = "";
  private streamStatus = "connecting";
  private readonly statusLine = h("p", { class: "stream-status", role: "status", "data-testid": "stream-status" });
  private readonly stateBar = h("div", { class: "state-bar", role: "group", "aria-label": "My state" });
  private readonly callList = h("ul", { class: "call-list", "aria-label": "My calls" });
  private readonly callPanel = h("div", { class: "call-panel", "aria-live": "polite" });
  private readonly errorLine = h("p", { class: "error", role: "alert" });

  constructor(
    private readonly root: HTMLElement,
    private readonly api: Api,
    private readonly signal: AbortSignal,
  ) {
    this.agents = api.client(AgentService);
    this.interactions = api.client(InteractionService);
    this.customers = api.client(CustomerService);
    this.cases = api.client(CaseService);
  }

  get agentId(): string {
    return this.api.session.agentId;
  }

  async start(): Promise<void> {
    replace(
      this.root,
      h(
        "div",
        { class: "desktop" },
        h(
          "section",
          { class: "panel state-panel", "aria-labelledby": "state-title" },
          h("h2", { id: "state-title" }, `Agent ${this.agentId}`),
          this.stateBar,
          this.statusLine,
          this.errorLine,
        ),
        h(
          "section",
          { class: "panel calls-panel", "aria-labelledby": "calls-title" },
          h("h2", { id: "calls-title" }, "Calls"),
          this.callList,
        ),
        h("section", { class: "panel current-panel", "aria-label": "Current call" }, this.callPanel),
        h("section", { class: "panel search-panel", "aria-labelledby": "search-title" }, ...this.searchForm()),
      ),
    );
    this.renderState();
    this.renderCalls();
    void this.loadState();
    void this.loadDispositions();
    void this.watch();
  }

  private fail(error: unknown): void {
    this.errorLine.textContent = error instanceof ConnectError ? error.rawMessage : String(error);
  }

  private async loadState(): Promise<void> {
    try {
      const { changes } = await this.agents.listAgentStates({ agentId: this.agentId, limit: 1 });
      if (changes[0]) {
        this.state = changes[0].state;
        this.stateReason = changes[0].reason;
      }
    } catch {
      // A new agent has no history yet (NOT_FOUND): OFFLINE until they pick a state.
    }
    this.renderState();
  }

  private async loadDispositions(): Promise<void> {
    try {
      this.dispositions = (await this.interactions.listDispositions({})).dispositions.filter((d) => d.active);
      this.renderCurrent();
    } catch (error) {
      this.fail(error);
    }
  }

  async setState(state: AgentState, reason = ""): Promise<void> {
    try {
      const { current } = await this.agents.setAgentState({ agentId: this.agentId, state, reason });
      this.state = current?.state ?? state;
      this.stateReason = current?.reason ?? reason;
      this.errorLine.textContent = "";
    } catch (error) {
      this.fail(error);
    }
    this.renderState();
  }

  private renderState(): void {
    const button = (text: string, state: AgentState, testId: string, reason = "") =>
      h(
        "button",
        {
          type: "button",
          "data-testid": testId,
          "aria-pressed": String(this.state === state && (reason === "" || this.stateReason === reason)),
          onclick: () => void this.setState(state, reason),
        },
        text,
      );
    const reasons = h(
      "select",
      { "aria-label": "Break reason", "data-testid": "break-reason" },
      BREAK_REASONS.map((r) => h("option", { value: r, selected: this.stateReason === r }, r)),
    );
    const takeBreak = h(
      "button",
      {
        type: "button",
        "data-testid": "state-break",
        "aria-pressed": String(this.state === AgentState.AWAY),
        onclick: () => void this.setState(AgentState.AWAY, reasons.value),
      },
      "Break",
    );
    // A keyboard user's focus stays on the same control across the re-render (the state loads,
    // or changes elsewhere, while they tab through the bar): without this it fell to the page,
    // and their Enter went nowhere.
    const focused = this.stateBar.contains(document.activeElement)
      ? document.activeElement?.getAttribute("data-testid")
      : null;
    replace(
      this.stateBar,
      button("Available", AgentState.AVAILABLE, "state-available"),
      h("span", { class: "break-group" }, takeBreak, reasons),
      button("Wrap-up", AgentState.AFTER_CALL_WORK, "state-wrap-up"),
      button("Offline", AgentState.OFFLINE, "state-offline"),
      h(
        "p",
        { class: "current-state", "data-testid": "current-state" },
        `Now: ${AgentState[this.state].toLowerCase().replace(/_/g, " ")}${this.stateReason ? ` (${this.stateReason})` : ""}`,
      ),
    );
    if (focused) this.stateBar.querySelector<HTMLElement>(`[data-testid="${focused}"]`)?.focus();
  }

  /** Follows the WatchAgent stream for as long as the page lives, reconnecting with back-off. */
  private async watch(): Promise<void> {
    let backoff = 500;
    while (!this.signal.aborted) {
      let snapshot = new Map<string, TrackedCall>();
      try {
        this.setStatus("connecting");
        for await (const message of this.agents.watchAgent({ agentId: this.agentId }, { signal: this.signal })) {
          backoff = 500;
          if (message.kind === AgentCallEventKind.SNAPSHOT && message.call) {
            snapshot.set(callKey(message.call), { call: message.call, pop: message.pop });
          } else if (message.kind === AgentCallEventKind.SYNCED) {
            this.synced(snapshot);
            snapshot = new Map();
            this.setStatus("live");
          } else if (message.kind === AgentCallEventKind.RESYNC) {
            snapshot = new Map();
            this.setStatus("resyncing");
          } else {
            this.change(message);
          }
        }
      } catch (error) {
        if (this.signal.aborted) {
          return;
        }
        this.setStatus(`reconnecting (${error instanceof ConnectError ? error.rawMessage : "connection lost"})`);
      }
      await sleep(backoff, this.signal);
      backoff = Math.min(backoff * 2, 10_000);
    }
  }

  private setStatus(status: string): void {
    this.streamStatus = status;
    this.statusLine.textContent = `Call stream: ${status}`;
    this.statusLine.dataset.state = status.split(" ")[0];
  }

  /** A snapshot is what the agent is on now; a call we knew that is gone from it ended meanwhile. */
  private synced(snapshot: Map<string, TrackedCall>): void {
    for (const [key, tracked] of this.calls) {
      if (!snapshot.has(key) && !tracked.finished && tracked.answeredByMe) {
        tracked.finished = "ended";
        snapshot.set(key, tracked);
      } else if (!snapshot.has(key) && tracked.finished) {
        snapshot.set(key, tracked);
      }
    }
    for (const [key, fresh] of snapshot) {
      const known = this.calls.get(key);
      if (known && !known.finished) {
        known.call = fresh.call;
        known.pop = fresh.pop ?? known.pop;
        snapshot.set(key, known);
      } else if (!known) {
        this.adopt(fresh);
      }
    }
    this.calls.clear();
    for (const [key, tracked] of snapshot) {
      this.calls.set(key, tracked);
    }
    if (!this.calls.has(this.selected)) {
      this.selected = [...this.calls.keys()][0] ?? "";
    }
    this.renderCalls();
  }

  private adopt(tracked: TrackedCall): void {
    const card = tracked.pop?.match === MatchKind.EXACT ? tracked.pop.card : undefined;
    if (card) {
      tracked.customerId = card.customerId;
      tracked.customerName = card.displayName;
    }
    tracked.answeredByMe = tracked.call.state === CallState.CONNECTED || tracked.call.state === CallState.HELD;
  }

  private change(message: WatchAgentResponse): void {
    const call = message.call;
    if (!call) {
      return;
    }
    const key = callKey(call);
    let tracked = this.calls.get(key);
    if (!tracked) {
      tracked = { call, pop: message.pop };
      this.adopt(tracked);
      this.calls.set(key, tracked);
    }
    tracked.call = call;
    if (message.pop) {
      tracked.pop = message.pop;
    }
    switch (message.kind) {
      case AgentCallEventKind.RINGING:
        this.selected = key;
        break;
      case AgentCallEventKind.ANSWERED:
        tracked.answeredByMe = true;
        this.selected = key;
        void this.setState(AgentState.BUSY);
        break;
      case AgentCallEventKind.TRANSFERRED_AWAY:
        tracked.finished = tracked.answeredByMe ? "transferred" : undefined;
        if (!tracked.finished) this.calls.delete(key);
        break;
      case AgentCallEventKind.ENDED:
        if (tracked.answeredByMe) {
          tracked.finished = "ended";
          this.selected = key;
          void this.setState(AgentState.AFTER_CALL_WORK);
        } else {
          this.calls.delete(key);
        }
        break;
      default:
        break;
    }
    this.renderCalls();
  }

  private renderCalls(): void {
    if (!this.calls.has(this.selected)) {
      this.selected = [...this.calls.keys()][0] ?? "";
    }
    replace(
      this.callList,
      this.calls.size === 0
        ? h("li", { class: "muted" }, "No call. Go available to take calls.")
        : [...this.calls.entries()].map(([key, t]) =>
            h(
              "li",
              {},
              h(
                "button",
                {
                  type: "button",
                  class: `call-item ${key === this.selected ? "selected" : ""}`,
                  "aria-current": key === this.selected ? "true" : undefined,
                  "data-testid": "call-item",
                  "data-call-id": t.call.callId,
                  onclick: () => {
                    this.selected = key;
                    this.renderCalls();
                  },
                },
                h("strong", {}, t.customerName || (t.pop ? popSummary(t.pop) : t.call.callerNumber || "Withheld number")),
                h("span", { class: "call-state", "data-testid": "call-state" }, this.stateText(t)),
              ),
            ),
          ),
    );
    this.renderCurrent();
  }

  private stateText(t: TrackedCall): string {
    if (t.saved) return "wrapped up";
    if (t.finished === "transferred") return "transferred: wrap-up";
    if (t.finished === "ended") return "ended: wrap-up";
    return CallState[t.call.state].toLowerCase();
  }

  private renderCurrent(): void {
    const tracked = this.calls.get(this.selected);
    if (!tracked) {
      replace(this.callPanel, h("h2", {}, "Current call"), h("p", { class: "muted" }, "Waiting for a call."));
      return;
    }
    const { call, pop } = tracked;
    const since = date(call.answeredAt ?? call.offeredAt);
    const header = h(
      "header",
      { class: "call-header" },
      h("h2", {}, "Current call"),
      h(
        "p",
        { "data-testid": "call-summary" },
        `${pop?.callerKind === CallerKind.WITHHELD ? "Withheld number" : call.callerNumber || "Unknown number"}`,
        call.queue ? ` · queue ${call.queue}` : "",
        call.dialedNumber ? ` · dialed ${call.dialedNumber}` : "",
        since ? ` · ${duration((Date.now() - since.getTime()) / 1000)}` : "",
        " · ",
        h("strong", { "data-testid": "current-call-state" }, this.stateText(tracked)),
      ),
    );
    replace(this.callPanel, header, this.who(tracked), tracked.finished ? this.wrapUp(tracked) : null);
  }

  /** The caller: the card, the candidates to choose from, or a quick-create form. */
  private who(tracked: TrackedCall): HTMLElement {
    const pop = tracked.pop;
    if (pop?.match === MatchKind.EXACT && pop.card) {
      const card = customerCard(pop.card, pop.dialedCampaign);
      // When this card reached the screen (epoch ms): what ring-to-visible latency is measured to.
      card.dataset.callId = tracked.call.callId;
      card.dataset.shownAt = String(performance.timeOrigin + performance.now());
      return card;
    }
    if (pop?.match === MatchKind.MULTIPLE) {
      const picked = pop.candidates.find((c) => c.customerId === tracked.customerId);
      const choices = h(
        "fieldset",
        { class: "candidates", "data-testid": "candidates" },
        h("legend", {}, `${pop.candidateCount} customers share this number: who is calling?`),
        pop.candidates.map((c) =>
          h(
            "label",
            { class: "candidate" },
            h("input", {
              type: "radio",
              name: `pick-${tracked.call.callId}`,
              value: c.customerId,
              checked: c.customerId === tracked.customerId,
              "data-testid": "candidate",
              onchange: () => {
                tracked.customerId = c.customerId;
                tracked.customerName = c.displayName;
                this.renderCalls();
              },
            }),
            ` ${c.displayName}${c.company ? ` (${c.company})` : ""}`,
          ),
        ),
      );
      return h("div", {}, choices, picked ? customerCard(picked, pop.dialedCampaign) : null);
    }
    if (tracked.customerId) {
      return h("p", { "data-testid": "created-customer" }, `Customer: ${tracked.customerName ?? tracked.customerId}`);
    }
    return this.quickCreate(tracked);
  }

  private quickCreate(tracked: TrackedCall): HTMLElement {
    const withheld = tracked.pop?.callerKind !== CallerKind.NUMBER || !tracked.pop?.normalizedNumber;
    const name = h("input", { type: "text", required: true, autocomplete: "off", "data-testid": "new-name" });
    const company = h("input", { type: "text", autocomplete: "off" });
    const phone = h("input", {
      type: "tel",
      value: withheld ? "" : (tracked.pop?.normalizedNumber ?? ""),
      "data-testid": "new-phone",
    });
    const form = h(
      "form",
      {
        class: "quick-create",
        "data-testid": "quick-create",
        onsubmit: async (event: Event) => {
          event.preventDefault();
          try {
            const { customer } = await this.customers.createCustomer({
              requestId: `desktop:${callKey(tracked.call)}`,
              displayName: name.value,
              company: company.value,
              contactPoints: phone.value
                ? [{ kind: ContactKind.PHONE, value: phone.value, primary: true }]
                : [],
            });
            tracked.customerId = customer?.id;
            tracked.customerName = customer?.displayName;
            this.renderCalls();
          } catch (error) {
            this.fail(error);
          }
        },
      },
      h("h3", {}, withheld ? "Withheld number: who is calling?" : "New caller: create the customer"),
      field("Name", name),
      field("Company", company),
      field("Phone", phone),
      h("button", { type: "submit" }, "Create customer"),
    );
    return form;
  }

  private wrapUp(tracked: TrackedCall): HTMLElement {
    if (tracked.saved) {
      return h(
        "section",
        { class: "wrap-up done", "data-testid": "wrap-up-done" },
        h("h3", {}, "Wrapped up"),
        h("p", {}, `Disposition: ${tracked.saved.dispositionCode}`),
        h("p", {}, "Notes as stored: ", h("q", { "data-testid": "stored-notes" }, tracked.saved.notes)),
        h(
          "button",
          {
            type: "button",
            onclick: () => {
              this.calls.delete(callKey(tracked.call));
              this.selected = [...this.calls.keys()][0] ?? "";
              this.renderCalls();
            },
          },
          "Close",
        ),
      );
    }
    const disposition = h(
      "select",
      { required: true, "data-testid": "disposition" },
      h("option", { value: "" }, "Choose…"),
      this.dispositions.map((d) => h("option", { value: d.code }, d.label || d.code)),
    );
    const notes = h("textarea", { rows: 4, maxLength: 10000, "data-testid": "notes" });
    const caseSubject = h("input", { type: "text", "data-testid": "case-subject" });
    const error = h("p", { class: "error", role: "alert" });
    const needsCustomer = !tracked.customerId;
    const form = h(
      "form",
      {
        class: "wrap-up",
        "data-testid": "wrap-up",
        onsubmit: async (event: Event) => {
          event.preventDefault();
          if (!tracked.customerId) {
            error.textContent = "Choose or create the customer first.";
            return;
          }
          try {
            const interaction = await this.logInteraction(tracked);
            const { interaction: done } = await this.interactions.completeWrapUp({
              interactionId: interaction.id,
              dispositionCode: disposition.value,
              notes: notes.value,
            });
            if (caseSubject.value.trim()) {
              await this.cases.openCase({
                requestId: `desktop-case:${interaction.id}`,
                customerId: tracked.customerId,
                actor: this.agentId,
                subject: caseSubject.value.trim(),
                description: notes.value,
                priority: CasePriority.NORMAL,
              });
            }
            tracked.saved = done;
            await this.setState(AgentState.AVAILABLE);
            this.renderCalls();
          } catch (e) {
            error.textContent = e instanceof ConnectError ? e.rawMessage : String(e);
          }
        },
      },
      h("h3", {}, "Wrap-up"),
      needsCustomer ? h("p", { class: "warn-text" }, "Choose or create the customer above first.") : null,
      field("Disposition", disposition),
      field("Notes", notes, "Card numbers and security codes are masked before they are stored."),
      field("Open a case (subject, optional)", caseSubject),
      error,
      h("button", { type: "submit", "data-testid": "complete-wrap-up" }, "Complete wrap-up"),
    );
    return form;
  }

  /** The call's interaction, logged once (the request id is the call's, so a retry is the same). */
  private async logInteraction(tracked: TrackedCall): Promise<Interaction> {
    const { call } = tracked;
    const started = date(call.answeredAt ?? call.offeredAt) ?? new Date();
    const { interaction } = await this.interactions.logInteraction({
      requestId: `desktop:${callKey(call)}:${this.agentId}`,
      customerId: tracked.customerId,
      channel: Channel.VOICE,
      direction: Direction.INBOUND,
      agentId: this.agentId,
      gatewayId: call.gatewayId,
      callId: call.callId,
      startedAt: timestampFromDate(started),
      endedAt: timestampFromDate(new Date(Math.max(Date.now(), started.getTime()))),
    });
    if (!interaction) {
      throw new Error("the interaction was not returned");
    }
    return interaction;
  }

  private searchForm(): HTMLElement[] {
    const kind = h(
      "select",
      { "data-testid": "search-kind" },
      h("option", { value: "namePrefix" }, "Name starts with"),
      h("option", { value: "phone" }, "Phone"),
      h("option", { value: "email" }, "Email"),
    );
    const query = h("input", { type: "search", "data-testid": "search-query", autocomplete: "off" });
    const results = h("ul", { class: "results", "data-testid": "search-results" });
    const timeline = h("div", { class: "timeline", "data-testid": "timeline" });
    const form = h(
      "form",
      {
        role: "search",
        onsubmit: async (event: Event) => {
          event.preventDefault();
          try {
            const { customers } = await this.customers.searchCustomers({
              query: { case: kind.value as "namePrefix" | "phone" | "email", value: query.value },
              pageSize: 10,
            });
            replace(
              results,
              customers.length === 0
                ? h("li", { class: "muted" }, "Nobody found.")
                : customers.map((c) =>
                    h(
                      "li",
                      {},
                      h(
                        "button",
                        { type: "button", onclick: () => void this.showTimeline(c, timeline) },
                        `${c.displayName}${c.company ? ` · ${c.company}` : ""}`,
                      ),
                    ),
                  ),
            );
          } catch (error) {
            replace(results, h("li", { class: "error" }, error instanceof ConnectError ? error.rawMessage : String(error)));
          }
        },
      },
      field("Search by", kind),
      field("Customer", query),
      h("button", { type: "submit" }, "Search"),
    );
    return [h("h2", { id: "search-title" }, "Find a customer"), form, results, timeline];
  }

  private async showTimeline(customer: Customer, into: HTMLElement): Promise<void> {
    try {
      const { interactions } = await this.interactions.listInteractions({ customerId: customer.id, pageSize: 20 });
      replace(
        into,
        h("h3", {}, `Timeline: ${customer.displayName}`),
        interactions.length === 0
          ? h("p", { class: "muted" }, "No interaction yet.")
          : h(
              "ol",
              {},
              interactions.map((i) =>
                h(
                  "li",
                  { "data-testid": "timeline-item" },
                  `${dateTime(i.startedAt)} · ${Channel[i.channel].toLowerCase()} · ${i.dispositionCode || "no disposition"}`,
                  i.notes ? h("div", { class: "notes" }, i.notes) : null,
                ),
              ),
            ),
      );
    } catch (error) {
      replace(into, h("p", { class: "error" }, error instanceof ConnectError ? error.rawMessage : String(error)));
    }
  }
}
