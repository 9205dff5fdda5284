// Starts a real GrpcBoard server for a test file (or uses GRPCBOARD_TARGET) and stops it afterwards.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { after, before } from "node:test";
import { BoardClient } from "../../src/index.js";

export const SERVER_DLL = process.env.GRPCBOARD_SERVER_DLL ?? "/tmp/grpcboard-server/GrpcBoard.Server.dll";

export interface TestServer {
  /** The server's address, for example http://127.0.0.1:40123 (no trailing slash). */
  target: string;
  /** True when this process started the server (false: GRPCBOARD_TARGET). */
  owned: boolean;
  /** Stops the server if this process started it. */
  stop(): Promise<void>;
}

const LISTENING = /^GrpcBoard listening on (http:\/\/\S+?)\/? \(store: /;
const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of running) {
    child.kill("SIGKILL");
  }
});

/** How to start a test server. */
export interface StartServerOptions {
  /** Extra server arguments (a server started with any is always this process's own). */
  args?: string[];
  /** Start a server here even when GRPCBOARD_TARGET is set. */
  own?: boolean;
  /** --store (default memory); "embedded" keeps its data in `data`. */
  store?: "memory" | "embedded";
  /** --data of an embedded store: start again with the same directory and port to restart "the same" server. */
  data?: string;
  /** --port (default 0: a free one). */
  port?: number;
  startTimeoutMs?: number;
}

/**
 * A server for the tests: GRPCBOARD_TARGET if set (unless `own`, or a special setting is asked for), otherwise
 * `dotnet $GRPCBOARD_SERVER_DLL --port 0 --store memory [extra args]` started here.
 */
export async function startServer(options: StartServerOptions = {}): Promise<TestServer> {
  const external = process.env.GRPCBOARD_TARGET;
  const special = Boolean(options.args?.length) || options.store !== undefined || options.port !== undefined || options.data !== undefined;
  if (external && !options.own && !special) {
    return { target: external.replace(/\/+$/, ""), owned: false, stop: async () => {} };
  }
  if (!existsSync(SERVER_DLL)) {
    throw new Error(
      `GrpcBoard server not found at ${SERVER_DLL}: publish it (dotnet publish src/GrpcBoard.Server -o /tmp/grpcboard-server) ` +
        "or set GRPCBOARD_SERVER_DLL (or GRPCBOARD_TARGET for tests that need no special server flags).",
    );
  }
  const args = [
    SERVER_DLL,
    "--port",
    String(options.port ?? 0),
    "--store",
    options.store ?? "memory",
    ...(options.data !== undefined ? ["--data", options.data] : []),
    "--log-level",
    "Warning",
    ...(options.args ?? []),
  ];
  const child = spawn("dotnet", args, { stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);
  let stderr = "";
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (chunk: string) => {
    stderr = (stderr + chunk).slice(-8000);
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));

  const target = await new Promise<string>((resolve, reject) => {
    const timeoutMs = options.startTimeoutMs ?? 60_000;
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the server did not report its address within ${timeoutMs} ms; stderr:\n${stderr}`));
    }, timeoutMs);
    const lines = createInterface({ input: child.stdout! });
    lines.on("line", (line) => {
      const m = LISTENING.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the server exited before listening (code ${code}, signal ${signal}); stderr:\n${stderr}`));
    });
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
  // Keep draining stdout so the server never blocks on a full pipe.
  child.stdout!.resume();

  return {
    target,
    owned: true,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(timer);
      }
      running.delete(child);
    },
  };
}

/**
 * The usual fixture of a test file: one server (startServer()) and one client for it, made before the file's
 * tests and closed after them. `use` receives both once they exist.
 */
export function useServerAndClient(use: (server: TestServer, client: BoardClient) => void): void {
  let server: TestServer | undefined;
  let client: BoardClient | undefined;
  before(async () => {
    server = await startServer();
    client = new BoardClient(server.target, { defaultTimeoutMs: 10_000 });
    use(server, client);
  });
  after(async () => {
    client?.close();
    await server?.stop();
  });
}
