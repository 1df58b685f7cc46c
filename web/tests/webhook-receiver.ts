// A webhook receiver for the Rust suite (tests/api/webhooks.rs), on loopback.
//
// Every POST is checked with the `standardwebhooks` package from npm, an implementation of the
// specification independent of Switchboard's, against each secret it was given, and reported as
// one JSON line on stdout: {"id", "timestamp", "verified": [one boolean per secret], "status",
// "type", "cursor", "path", "concurrent" (requests to that path in flight when it arrived, itself
// included), "body"}. The first line is {"listening": <port>}.
//
// POST /_control with a JSON body changes it at run time:
//   {"secrets": ["whsec_..."]}   the secrets to verify against
//   {"mode": "ok"}               answer 204 (the default)
//   {"mode": "fail"}             answer 500
//   {"mode": "hang"}             never answer (the sender's timeout decides)
//   {"mode": "redirect"}         answer 302 to /elsewhere
//   {"mode": "big"}              answer 200 with an endless body
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { Webhook } from "standardwebhooks";

type Mode = "ok" | "fail" | "hang" | "redirect" | "big";

let secrets: string[] = [];
const inFlight = new Map<string, number>();
let mode: Mode = "ok";
const port = Number(process.argv[2] ?? "0");

function body(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    request.on("error", reject);
  });
}

function verified(payload: string, headers: IncomingMessage["headers"]): boolean[] {
  const wanted: Record<string, string> = {
    "webhook-id": String(headers["webhook-id"] ?? ""),
    "webhook-timestamp": String(headers["webhook-timestamp"] ?? ""),
    "webhook-signature": String(headers["webhook-signature"] ?? ""),
  };
  return secrets.map((secret) => {
    try {
      new Webhook(secret).verify(payload, wanted);
      return true;
    } catch {
      return false;
    }
  });
}

function answer(response: ServerResponse): number {
  switch (mode) {
    case "ok":
      response.writeHead(204).end();
      return 204;
    case "fail":
      response.writeHead(500).end("down for maintenance");
      return 500;
    case "redirect":
      response.writeHead(302, { location: "/elsewhere" }).end();
      return 302;
    case "big": {
      response.writeHead(200, { "content-type": "text/plain" });
      const block = "x".repeat(64 * 1024);
      const pump = () => {
        while (response.write(block)) {
          if (response.destroyed) return;
        }
        response.once("drain", pump);
      };
      response.on("close", () => response.removeAllListeners("drain"));
      pump();
      return 200;
    }
    case "hang":
      return 0;
  }
}

const server = createServer(async (request, response) => {
  const path = request.url ?? "";
  const concurrent = (inFlight.get(path) ?? 0) + 1;
  inFlight.set(path, concurrent);
  response.on("close", () => inFlight.set(path, (inFlight.get(path) ?? 1) - 1));
  const payload = await body(request);
  if (request.url === "/_control") {
    const control = JSON.parse(payload) as { secrets?: string[]; mode?: Mode };
    if (control.secrets) secrets = control.secrets;
    if (control.mode) mode = control.mode;
    response.writeHead(204).end();
    return;
  }
  let type = "";
  let cursor = "";
  try {
    const parsed = JSON.parse(payload) as { type?: string; data?: { cursor?: string } };
    type = parsed.type ?? "";
    cursor = parsed.data?.cursor ?? "";
  } catch {
    // Reported with empty type and cursor.
  }
  const status = answer(response);
  const line = {
    id: request.headers["webhook-id"] ?? "",
    timestamp: request.headers["webhook-timestamp"] ?? "",
    verified: verified(payload, request.headers),
    status,
    type,
    cursor,
    path,
    concurrent,
    body: payload,
  };
  process.stdout.write(JSON.stringify(line) + "\n");
});

server.keepAliveTimeout = 60_000;
server.listen(port, "127.0.0.1", () => {
  const address = server.address();
  const bound = typeof address === "object" && address ? address.port : port;
  process.stdout.write(JSON.stringify({ listening: bound }) + "\n");
});
