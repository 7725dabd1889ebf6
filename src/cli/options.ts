/** Parsers for command-line option values: each bad value gets one error naming it and what was expected. */
import { SelfreportError } from "../errors.ts";
import { resolveModelDir } from "../model/resolve.ts";

export function parseIntOption(name: string, min = -Infinity, max = Infinity): (value: string) => number {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isInteger(n)) throw new SelfreportError(`${name} must be an integer, got "${value}"`);
    if (n < min || n > max) throw new SelfreportError(`${name} must be between ${min} and ${max}, got ${n}`);
    return n;
  };
}

export function parseFloatOption(name: string, min = -Infinity, max = Infinity): (value: string) => number {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n)) throw new SelfreportError(`${name} must be a number, got "${value}"`);
    if (n < min || n > max) throw new SelfreportError(`${name} must be between ${min} and ${max}, got ${n}`);
    return n;
  };
}

export function parseChoice<T extends string>(name: string, choices: readonly T[]): (value: string) => T {
  return (value: string): T => {
    if (!(choices as readonly string[]).includes(value)) throw new SelfreportError(`${name} must be one of ${choices.join(", ")}; got "${value}"`);
    return value as T;
  };
}

/** Parses a comma-separated list of numbers, e.g. "0,0.5,1". */
export function parseNumberList(name: string): (value: string) => number[] {
  return (value: string): number[] => {
    const parts = value.split(",").map((s) => s.trim()).filter((s) => s !== "");
    if (parts.length === 0) throw new SelfreportError(`${name} must be a comma-separated list of numbers, got "${value}"`);
    return parts.map((p) => {
      const n = Number(p);
      if (!Number.isFinite(n)) throw new SelfreportError(`${name}: "${p}" is not a number (in "${value}")`);
      return n;
    });
  };
}

/** For repeatable options: collects each occurrence into an array. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** The folder a --model value names, for output checks (the value itself when it names nothing yet: loading reports that). */
export function modelInput(nameOrDir: string): string {
  try {
    return resolveModelDir(nameOrDir);
  } catch {
    return nameOrDir;
  }
}

