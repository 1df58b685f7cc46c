// A real gRPC-web client (Connect-ES's Node transport, HTTP/1.1 as a browser's fetch would use)
// with clients generated from proto/: looks a caller up, then watches an agent and waits for a
// RINGING push. tests/api/grpc_web.rs runs it against a live server and drives the call.
//
// Input (environment): SWITCHBOARD_URL, SWITCHBOARD_TOKEN (for the lookup),
// SWITCHBOARD_AGENT_TOKEN and SWITCHBOARD_AGENT_ID (for the watch), SWITCHBOARD_CALLER.
// Output: one JSON line per step on stdout; exit 0 after the RINGING push, 1 on any error.

import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import { AgentCallEventKind, AgentService } from "../src/gen/switchboard/v1/agents_pb.js";
import { MatchKind, PopSource, ScreenPopService } from "../src/gen/switchboard/v1/screen_pop_pb.js";

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set`);
  }
  return value;
}

function bearer(token: string): Interceptor {
  return (next) => (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
}

function transport(token: string) {
  return createGrpcWebTransport({
    baseUrl: required("SWITCHBOARD_URL"),
    httpVersion: "1.1",
    interceptors: [bearer(token)],
  });
}

function emit(line: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

async function main(): Promise<void> {
  const pops = createClient(ScreenPopService, transport(required("SWITCHBOARD_TOKEN")));
  const { pop, source } = await pops.lookup({ callerNumber: required("SWITCHBOARD_CALLER") });
  emit({
    step: "lookup",
    match: MatchKind[pop?.match ?? MatchKind.UNSPECIFIED],
    name: pop?.card?.displayName ?? "",
    source: PopSource[source],
  });

  const agents = createClient(AgentService, transport(required("SWITCHBOARD_AGENT_TOKEN")));
  const stop = new AbortController();
  const deadline = setTimeout(() => stop.abort(), 20_000);
  for await (const message of agents.watchAgent(
    { agentId: required("SWITCHBOARD_AGENT_ID") },
    { signal: stop.signal },
  )) {
    const kind = AgentCallEventKind[message.kind];
    emit({
      step: "push",
      kind,
      callId: message.call?.callId ?? "",
      name: message.pop?.card?.displayName ?? "",
    });
    if (message.kind === AgentCallEventKind.RINGING) {
      break;
    }
  }
  clearTimeout(deadline);
  stop.abort();
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`grpc-web probe failed: ${String(error)}\n`);
    process.exit(1);
  },
);
