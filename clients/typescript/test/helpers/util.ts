import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { BoardError } from "../../src/index.js";

/** A workflow id no other test (or earlier run against a shared server) uses. */
export function uniqueId(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** Resolves with the promise's value, or rejects when it takes longer than ms. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A promise with its resolve function, for events a test awaits. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (e: unknown) => void } {
  let resolve!: (value: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A promise that resolves when the signal is aborted, with its reason. */
export function aborted(signal: AbortSignal): Promise<unknown> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve(signal.reason);
    } else {
      signal.addEventListener("abort", () => resolve(signal.reason), { once: true });
    }
  });
}

/** Asserts that the call fails with a BoardError of this gRPC code name and reason; returns the error. */
export async function expectBoardError(call: Promise<unknown>, codeName: string, reason: string): Promise<BoardError> {
  let caught: unknown;
  try {
    await call;
  } catch (error) {
    caught = error;
  }
  assert.ok(caught !== undefined, `expected ${codeName}/${reason || "(no reason)"}, but the call succeeded`);
  assert.ok(caught instanceof BoardError, `expected a BoardError, got ${String(caught)}`);
  assert.equal(caught.codeName, codeName, `code of: ${caught.message}`);
  assert.equal(caught.reason, reason, `reason of: ${caught.message}`);
  return caught;
}
