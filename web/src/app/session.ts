// Who is signed in, and the clients they call Switchboard with.
//
// The credential (a JWT or an API key) lives in sessionStorage only: it goes when the tab closes,
// and it is never put in a URL. The one exception is development mode, where the server says so
// in /ui/config.json and scripts/dev.sh prints sign-in links carrying a demo token in the URL's
// fragment (which browsers never send to the server); the app takes it out of the address bar at
// once.

import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { DescService } from "@bufbuild/protobuf";

const KEY = "switchboard.session";

export type Role = "agent" | "supervisor" | "admin" | "service" | "gateway" | "lookup" | "";

export interface Session {
  token: string;
  /** The agent this desktop acts as: the token's subject for an agent's JWT, else typed in. */
  agentId: string;
  role: Role;
}

export interface UiConfig {
  devMode: boolean;
}

export async function uiConfig(): Promise<UiConfig> {
  try {
    const response = await fetch("/ui/config.json", { cache: "no-store" });
    return response.ok ? ((await response.json()) as UiConfig) : { devMode: false };
  } catch {
    return { devMode: false };
  }
}

/** What a JWT says about itself (unverified: the server verifies; this only fills the form). */
export function claims(token: string): { sub?: string; role?: string } {
  const parts = token.split(".");
  if (parts.length !== 3) {
    return {};
  }
  try {
    const json = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/"));
    return JSON.parse(json) as { sub?: string; role?: string };
  } catch {
    return {};
  }
}

export function load(): Session | undefined {
  const raw = sessionStorage.getItem(KEY);
  if (!raw) {
    return undefined;
  }
  try {
    return JSON.parse(raw) as Session;
  } catch {
    return undefined;
  }
}

export function save(session: Session): void {
  sessionStorage.setItem(KEY, JSON.stringify(session));
}

export function signOut(): void {
  sessionStorage.removeItem(KEY);
}

/** A session from a pasted credential, or an error to show. */
export function fromCredential(token: string, agentId: string): Session | string {
  const trimmed = token.trim();
  if (!trimmed) {
    return "Paste a token or an API key.";
  }
  const c = claims(trimmed);
  const role = (c.role ?? "") as Role;
  const agent = agentId.trim() || (role === "agent" ? (c.sub ?? "") : "");
  return { token: trimmed, agentId: agent, role };
}

/** Takes a dev sign-in token out of the URL fragment (`#token=...`), in dev mode only. */
export function takeDevToken(config: UiConfig): Session | undefined {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!match) {
    return undefined;
  }
  const view = /(?:^#|&)view=([a-z]+)/.exec(location.hash)?.[1] ?? "";
  history.replaceState(null, "", `${location.pathname}${view ? `#${view}` : ""}`);
  if (!config.devMode) {
    return undefined;
  }
  const session = fromCredential(decodeURIComponent(match[1]), "");
  return typeof session === "string" ? undefined : session;
}

export class Api {
  private readonly transport;

  constructor(readonly session: Session) {
    const bearer: Interceptor = (next) => (request) => {
      request.header.set("authorization", `Bearer ${session.token}`);
      return next(request);
    };
    this.transport = createGrpcWebTransport({
      baseUrl: location.origin,
      interceptors: [bearer],
    });
  }

  client<S extends DescService>(service: S): Client<S> {
    return createClient(service, this.transport);
  }
}
