// The customer card: everything an agent needs in the first second of a call, from the pop the
// WatchAgent stream carries (or a Lookup).

import { h, type Child } from "./dom.js";
import { date, dateTime, localTime, money, relative } from "./format.js";
import { OrderStatus } from "../gen/switchboard/v1/activity_pb.js";
import { CasePriority, CaseStatus } from "../gen/switchboard/v1/cases_pb.js";
import { Tier } from "../gen/switchboard/v1/customers_pb.js";
import { Channel } from "../gen/switchboard/v1/interactions_pb.js";
import {
  CallerKind,
  MatchKind,
  type CardOffer,
  type CustomerCard,
  type ScreenPop,
} from "../gen/switchboard/v1/screen_pop_pb.js";

const label = (name: string) => name.charAt(0) + name.slice(1).toLowerCase().replace(/_/g, " ");

function badge(text: string, kind = ""): HTMLElement {
  return h("span", { class: `badge ${kind}` }, text);
}

function section(title: string, testId: string, ...body: Child[]): HTMLElement {
  return h("section", { class: "card-section", "data-testid": testId }, h("h3", {}, title), ...body);
}

/** A list of `items`, each drawn by `item`, or `none` when there are none. */
function listOr<T>(none: string, items: T[], item: (value: T) => HTMLLIElement): HTMLElement {
  return items.length === 0 ? h("p", { class: "muted" }, none) : h("ul", {}, items.map(item));
}

function offers(list: CardOffer[], dialed: CardOffer | undefined): HTMLElement {
  const all = [...(dialed ? [dialed] : []), ...list.filter((o) => o.campaignId !== dialed?.campaignId)];
  return section(
    "Offers",
    "card-offers",
    listOr("No offer for this customer.", all, (o) =>
      h(
        "li",
        {},
        h("strong", {}, o.campaignName),
        o === dialed ? badge("dialed campaign", "info") : null,
        h("div", {}, o.offerText),
      ),
    ),
  );
}

/** The whole card of one customer. */
export function customerCard(card: CustomerCard, dialed?: CardOffer, now = new Date()): HTMLElement {
  const tier = card.tier === Tier.UNSPECIFIED ? "" : label(Tier[card.tier]);
  const local = localTime(card.timeZone, now);
  const flags: Child[] = [
    card.vip ? badge("VIP", "vip") : null,
    tier ? badge(tier, "tier") : null,
    card.repeatContact ? badge("Repeat contact", "warn") : null,
    card.doNotCall ? badge("Do not call", "danger") : null,
    badge(card.marketingConsent ? "Marketing consent" : "No marketing consent", card.marketingConsent ? "ok" : "muted"),
  ];
  const header = h(
    "header",
    { class: "card-header" },
    h("h2", { "data-testid": "card-name" }, card.displayName),
    card.company ? h("p", { class: "company" }, card.company) : null,
    h("p", { class: "flags" }, flags),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Language"),
      h("dd", {}, card.preferredLanguage || "–"),
      h("dt", {}, "Local time"),
      h("dd", { "data-testid": "card-local-time" }, local ? `${local} (${card.timeZone})` : "–"),
      h("dt", {}, "Last contact"),
      h("dd", {}, relative(date(card.lastContactAt), now) || "–"),
    ),
  );
  const cases = section(
    "Open cases",
    "card-cases",
    listOr("No open case.", card.openCases, (c) =>
      h(
        "li",
        { class: c.overdue ? "overdue" : "" },
        h("strong", {}, c.subject),
        " ",
        badge(label(CaseStatus[c.status])),
        " ",
        badge(label(CasePriority[c.priority])),
        h(
          "div",
          {},
          c.overdue ? h("strong", { class: "danger-text" }, "Overdue: ") : "SLA due ",
          dateTime(c.slaDueAt),
        ),
      ),
    ),
  );
  const interactions = section(
    "Last interactions",
    "card-interactions",
    listOr("No interaction yet.", card.recentInteractions, (i) =>
      h(
        "li",
        {},
        `${label(Channel[i.channel])} · ${dateTime(i.startedAt)}`,
        i.agentId ? ` · ${i.agentId}` : "",
        h(
          "div",
          {},
          i.dispositionLabel || i.dispositionCode || "No disposition",
          i.resolved ? badge("resolved", "ok") : null,
        ),
      ),
    ),
  );
  const orders = section(
    "Orders",
    "card-orders",
    h(
      "p",
      {},
      "Lifetime value: ",
      card.lifetimeValue.length === 0
        ? "none"
        : card.lifetimeValue.map((m) => money(m.currency, m.amountMinor)).join(", "),
    ),
    listOr("No order.", card.recentOrders, (o) =>
      h(
        "li",
        {},
        `${o.orderId} · ${o.amount ? money(o.amount.currency, o.amount.amountMinor) : ""} · `,
        label(OrderStatus[o.status]),
        ` · ${dateTime(o.orderedAt)}`,
      ),
    ),
  );
  const feedback = section(
    "Open feedback",
    "card-feedback",
    listOr("No open complaint.", card.openFeedback, (f) =>
      h("li", {}, `${f.category} · ${f.status} · ${dateTime(f.createTime)}`),
    ),
  );
  return h(
    "article",
    { class: "card", "data-testid": "card", "data-customer-id": card.customerId },
    header,
    h("div", { class: "card-grid" }, cases, interactions, orders, offers(card.offers, dialed), feedback),
  );
}

/** What a pop shows: the card, the candidates to pick from, or who is calling when nobody matched. */
export function popSummary(pop: ScreenPop | undefined): string {
  if (!pop) return "No pop";
  if (pop.callerKind === CallerKind.WITHHELD) return "Withheld number";
  if (pop.callerKind === CallerKind.NOT_A_NUMBER) return "Not a phone number";
  switch (pop.match) {
    case MatchKind.EXACT:
      return pop.card?.displayName ?? "";
    case MatchKind.MULTIPLE:
      return `${pop.candidateCount} customers share ${pop.normalizedNumber}`;
    default:
      return `Unknown caller ${pop.normalizedNumber}`;
  }
}
