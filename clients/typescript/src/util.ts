import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { durationFromMs, durationMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { performance } from "node:perf_hooks";

/** A google.protobuf.Duration of the given milliseconds, for request fields such as lease_duration and wait. */
export function duration(ms: number): Duration {
  return durationFromMs(ms);
}

/** Milliseconds of a Duration-shaped value (a message or a plain init object); 0 when unset. */
export function toMs(d: { seconds?: bigint | number | string; nanos?: number } | undefined): number {
  if (d === undefined) {
    return 0;
  }
  if ("$typeName" in d) {
    return durationMs(d as Duration);
  }
  return Number(d.seconds ?? 0) * 1000 + Math.round((d.nanos ?? 0) / 1_000_000);
}

/** Epoch milliseconds of a Timestamp, or undefined when unset. */
export function timestampToMs(t: Timestamp | undefined): number | undefined {
  return t === undefined ? undefined : timestampMs(t);
}

/**
 * Milliseconds on the local monotonic clock (performance.now()): only differences mean anything. Leases are
 * tracked on it, never on Date.now(), which jumps with clock adjustments and differs between hosts.
 * @internal
 */
export function monotonicMs(): number {
  return performance.now();
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** UTF-8 bytes of a string, for payloads, checkpoints, results and note values. */
export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** The string of UTF-8 bytes. */
export function fromUtf8(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

/** Waits ms milliseconds; rejects with the signal's reason if it is aborted first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, Math.max(0, ms));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** An AbortController that is also aborted (with the same reason) when any of the given signals is. */
export function linkedController(...signals: (AbortSignal | undefined)[]): {
  controller: AbortController;
  dispose: () => void;
} {
  const controller = new AbortController();
  const cleanups: (() => void)[] = [];
  for (const s of signals) {
    if (s === undefined) {
      continue;
    }
    if (s.aborted) {
      controller.abort(s.reason);
      break;
    }
    const onAbort = () => controller.abort(s.reason);
    s.addEventListener("abort", onAbort, { once: true });
    cleanups.push(() => s.removeEventListener("abort", onAbort));
  }
  return { controller, dispose: () => cleanups.forEach((c) => c()) };
}
