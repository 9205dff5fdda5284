// A TCP proxy in front of the server, so tests can cut connections (a real disconnect, not a mock)
// or swallow traffic (a server that never answers).
import net from "node:net";

export interface TcpProxy {
  /** http://127.0.0.1:PORT of the proxy. */
  target: string;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Destroys every open connection (both sides); new connections are still accepted. */
  dropAll(): void;
  /** When on, new connections are accepted but nothing is forwarded or answered. */
  setBlackhole(on: boolean): void;
  /**
   * Silently stops forwarding bytes, in both directions, on every open connection, leaving the sockets open
   * (a half-open connection: nothing fails, nothing arrives). New connections are forwarded normally.
   */
  stallAll(): void;
  close(): Promise<void>;
}

export async function startProxy(upstream: string): Promise<TcpProxy> {
  const url = new URL(upstream);
  const sockets = new Set<net.Socket>();
  const pairs = new Set<{ client: net.Socket; up: net.Socket }>();
  let blackhole = false;
  let accepted = 0;
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => s.destroy());
  };
  const server = net.createServer((client) => {
    accepted++;
    track(client);
    if (blackhole) {
      client.resume(); // read and drop
      return;
    }
    const up = net.connect({ host: url.hostname, port: Number(url.port) });
    track(up);
    client.pipe(up);
    up.pipe(client);
    const pair = { client, up };
    pairs.add(pair);
    client.on("close", () => {
      pairs.delete(pair);
      up.destroy();
    });
    up.on("close", () => client.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    target: `http://127.0.0.1:${port}`,
    get accepted() {
      return accepted;
    },
    dropAll() {
      for (const s of sockets) {
        s.destroy();
      }
    },
    setBlackhole(on: boolean) {
      blackhole = on;
    },
    stallAll() {
      for (const { client, up } of pairs) {
        client.unpipe(up);
        up.unpipe(client);
        client.pause();
        up.pause();
      }
      pairs.clear();
    },
    close() {
      for (const s of sockets) {
        s.destroy();
      }
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
