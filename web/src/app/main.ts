// Switchboard's web app: sign-in, then the agent desktop or the supervisor wallboard.

import { h, replace, field } from "./dom.js";
import { AgentDesktop } from "./agent.js";
import { Rollout } from "./rollout.js";
import { Wallboard } from "./wallboard.js";
import * as session from "./session.js";

const main = document.getElementById("main") as HTMLElement;
const nav = document.getElementById("nav") as HTMLElement;
let running: AbortController | undefined;

type View = "agent" | "wallboard" | "rollout";

function view(): View {
  return location.hash === "#wallboard" ? "wallboard" : location.hash === "#rollout" ? "rollout" : "agent";
}

function signIn(config: session.UiConfig, message = ""): void {
  nav.replaceChildren();
  const token = h("input", { type: "password", autocomplete: "off", required: true, "data-testid": "token" });
  const agent = h("input", { type: "text", autocomplete: "username", "data-testid": "agent-id" });
  const error = h("p", { class: "error", role: "alert" }, message);
  replace(
    main,
    h(
      "section",
      { class: "panel sign-in" },
      h("h2", {}, "Sign in"),
      h(
        "form",
        {
          onsubmit: (event: Event) => {
            event.preventDefault();
            const result = session.fromCredential(token.value, agent.value);
            if (typeof result === "string") {
              error.textContent = result;
              return;
            }
            session.save(result);
            start(config);
          },
        },
        field("Token or API key", token, "Kept in this tab only (sessionStorage)."),
        field("Agent id", agent, "For the agent desktop; an agent's own token names it already."),
        error,
        h("button", { type: "submit", "data-testid": "sign-in" }, "Sign in"),
      ),
      config.devMode ? h("p", { class: "muted" }, "Development mode: scripts/dev.sh prints sign-in links.") : null,
    ),
  );
}

function renderNav(config: session.UiConfig, s: session.Session): void {
  const link = (target: View, text: string) =>
    h("a", { href: `#${target}`, "aria-current": view() === target ? "page" : undefined }, text);
  replace(
    nav,
    link("agent", "Agent desktop"),
    link("wallboard", "Wallboard"),
    link("rollout", "Roll-out"),
    h("span", { class: "who" }, s.agentId || s.role || "signed in"),
    h(
      "button",
      {
        type: "button",
        "data-testid": "sign-out",
        onclick: () => {
          running?.abort();
          session.signOut();
          signIn(config);
        },
      },
      "Sign out",
    ),
  );
}

function start(config: session.UiConfig): void {
  running?.abort();
  const s = session.load();
  if (!s) {
    signIn(config);
    return;
  }
  running = new AbortController();
  renderNav(config, s);
  const api = new session.Api(s);
  if (view() === "wallboard") {
    new Wallboard(main, api, running.signal).start();
  } else if (view() === "rollout") {
    new Rollout(main, api, running.signal).start();
  } else if (!s.agentId) {
    signIn(config, "Give the agent id this desktop acts as, or open the wallboard or the roll-out page.");
  } else {
    void new AgentDesktop(main, api, running.signal).start();
  }
}

async function boot(): Promise<void> {
  const config = await session.uiConfig();
  const dev = session.takeDevToken(config);
  if (dev) {
    session.save(dev);
  }
  window.addEventListener("hashchange", () => start(config));
  start(config);
}

void boot();
