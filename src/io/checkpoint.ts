/**
 * Training checkpoints: a folder `checkpoint/` holding
 *   params.safetensors     the trainable tensors by name (F32)
 *   optimizer.safetensors  the optimizer's buffers (F32)
 *   state.json             { version, step, optimizerStep, ...whatever the trainer needs to resume }
 *
 * A checkpoint is replaced as a whole: the new one is written to a temporary folder, then swapped
 * in by renames, so a kill at any moment leaves either the old or the new checkpoint, never a mix.
 */
import { existsSync, mkdirSync, renameSync, rmSync, readFileSync } from "node:fs";
import { join, dirname, basename } from "node:path";
import { readSafetensors, writeSafetensors } from "./safetensors.ts";
import { writeJsonAtomic } from "./atomic.ts";
import { SelfreportError } from "../errors.ts";

export const CHECKPOINT_VERSION = 1;

export interface NamedArray {
  shape: readonly number[];
  data: Float32Array;
}

export interface Checkpoint<S> {
  params: Map<string, NamedArray>;
  optimizer: { step: number; buffers: Map<string, Float32Array> };
  state: S & { version: number; step: number };
}

export function saveCheckpoint<S extends object>(dir: string, ck: Checkpoint<S>): void {
  const parent = dirname(dir);
  mkdirSync(parent, { recursive: true });
  const tmp = join(parent, `.${basename(dir)}.tmp-${process.pid}-${Date.now()}`);
  mkdirSync(tmp, { recursive: true });
  try {
    const params: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
    for (const [k, t] of ck.params) params[k] = { dtype: "F32", shape: [...t.shape], data: t.data };
    writeSafetensors(join(tmp, "params.safetensors"), params);
    const opt: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
    for (const [k, b] of ck.optimizer.buffers) opt[k] = { dtype: "F32", shape: [b.length], data: b };
    writeSafetensors(join(tmp, "optimizer.safetensors"), opt, { step: String(ck.optimizer.step) });
    writeJsonAtomic(join(tmp, "state.json"), ck.state);
    const old = `${dir}.old`;
    rmSync(old, { recursive: true, force: true });
    if (existsSync(dir)) renameSync(dir, old);
    renameSync(tmp, dir);
    rmSync(old, { recursive: true, force: true });
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Loads the checkpoint at dir (or its `.old` twin if a swap was interrupted); null when there is none. */
export function loadCheckpoint<S extends object>(dir: string): Checkpoint<S> | null {
  const where = existsSync(join(dir, "state.json")) ? dir : existsSync(join(`${dir}.old`, "state.json")) ? `${dir}.old` : null;
  if (where === null) return null;
  let state: S & { version: number; step: number };
  try {
    state = JSON.parse(readFileSync(join(where, "state.json"), "utf8")) as S & { version: number; step: number };
  } catch (e) {
    throw new SelfreportError(`${where}/state.json: corrupt checkpoint state (${(e as Error).message}); delete the checkpoint folder to start over`);
  }
  if (state.version !== CHECKPOINT_VERSION) {
    throw new SelfreportError(`${where}: checkpoint version ${String(state.version)} is not supported (this selfreport writes version ${CHECKPOINT_VERSION})`);
  }
  const params = new Map<string, NamedArray>();
  for (const [k, t] of readSafetensors(join(where, "params.safetensors")).tensors) {
    if (!(t.data instanceof Float32Array)) throw new SelfreportError(`${where}: checkpoint tensor "${k}" is not float32`);
    params.set(k, { shape: t.shape, data: t.data });
  }
  const optFile = readSafetensors(join(where, "optimizer.safetensors"));
  const buffers = new Map<string, Float32Array>();
  for (const [k, t] of optFile.tensors) {
    if (!(t.data instanceof Float32Array)) throw new SelfreportError(`${where}: optimizer buffer "${k}" is not float32`);
    buffers.set(k, t.data);
  }
  return { params, optimizer: { step: Number(optFile.metadata["step"] ?? 0), buffers }, state };
}
