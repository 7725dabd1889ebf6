/** The tensor engine: Tensor + autograd, ops, optimizers, seeded randomness, matmul backends. */
export * from "./tensor.ts";
export * from "./random.ts";
export * from "./ops/elementwise.ts";
export * from "./ops/reduce.ts";
export * from "./ops/shape.ts";
export * from "./ops/matmul.ts";
export * from "./ops/nn.ts";
export * from "./ops/arch.ts";
export * from "./ops/attention.ts";
export * from "./ops/unembed-loss.ts";
export * from "./optim.ts";
export { getBackend, setBackend, availableBackends } from "./backend/index.ts";
export type { Backend } from "./backend/types.ts";
