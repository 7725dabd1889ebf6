/**
 * Plain-language verdicts over the analyses' summaries: one per question the report asks.
 *
 *   weightsVerdict    "Does the head read what the neuron writes?"         (analysis weights)
 *   patchingVerdict   "Does the prediction move when the neuron moves?"    (analysis patching)
 *   residualVerdict   "What did fine-tuning change?"                       (analysis residual)
 *
 * Pure functions of the summary fields they name (the narrow *Input types below, which the full
 * summaries satisfy), so they can be tested with hand-made numbers. Every threshold is in
 * THRESHOLDS and described in THRESHOLD_TEXT, which the report page and docs/report.md show.
 */
import type { Comparison, VectorKind } from "../analysis/weights.ts";

export type VerdictLevel = "yes" | "partly" | "no" | "not assessable";

export interface Verdict {
  /** The question, as the report's section title. */
  question: string;
  level: VerdictLevel;
  /** One sentence: the answer. */
  headline: string;
  /** The numbers behind it, one sentence each, with the threshold each was compared with. */
  evidence: string[];
}

export const THRESHOLDS = {
  /** |cosine|·√d_model above this is far outside the random-direction null (std 1/√d_model). */
  z: 4,
  /** A neuron is specific when its |cosine| ranks within this fraction of the candidates (at least rank 1). */
  rankFraction: 0.01,
  /** The target's |slope| must beat this percentile of the control neurons' |slopes|. */
  controlPercentile: 95,
  /** A slope at least this large (the ideal is 1) counts as a substantial report. */
  minSlope: 0.5,
  /** The neuron's direct write must carry at least this share of the prediction's variance for the head to "read" it. */
  minDirectShare: 0.1,
  /** A |slope| below this (5 % of the ideal) is a negligible effect, even when its CI excludes 0. */
  negligibleSlope: 0.05,
  /** Fine-tuning counts as having made the head work when r(prediction, target) rose by at least this. */
  minRGain: 0.1,
  /** The neuron counts as unchanged by fine-tuning when r(base activation, fine-tuned activation) ≥ this. */
  neuronKeptR: 0.9,
} as const;

/** The thresholds in words, one line per rule, for the page and the docs. */
export const THRESHOLD_TEXT: readonly string[] = [
  `Cosines are compared with the random-direction null: two random directions in d_model dimensions have cosine mean 0, std 1/√d_model; z = cosine·√d_model, and |z| > ${THRESHOLDS.z} counts as far outside it.`,
  `A neuron is specific when its |cosine| ranks in the top ${100 * THRESHOLDS.rankFraction}% of the layer's neurons (rank ≤ max(1, ⌊${THRESHOLDS.rankFraction}·n⌋)).`,
  `Weights ("does the head read what the neuron writes?"): "yes" when the head's reading direction (its filter, not its activation pattern) matches W_out[n, :] with |z| > ${THRESHOLDS.z}, a top-${100 * THRESHOLDS.rankFraction}% rank and a positive sign, the neuron's direct write carries at least ${100 * THRESHOLDS.minDirectShare}% of the prediction's variance, and patching, where it ran, confirms it (CI excludes 0, slope ≥ ${THRESHOLDS.negligibleSlope}, above the ${THRESHOLDS.controlPercentile}th percentile of the controls); "partly" when the filter matches but the share or patching fails, the sign is wrong, or the share passes without a specific filter; else "no" (also when only W_in[:, n], the neuron's input, matches). The activation pattern Σw/(wᵀΣw) never decides: any head that predicts the activation well has a pattern close to Cov(x, act)/Var(act), whatever it reads; it is compared with that target pattern against the patterns of random filters.`,
  `Patching: "yes" when the bootstrap 95% CI of the slope Δprediction/Δactivation excludes 0, the slope is at least ${THRESHOLDS.minSlope} (ideal 1) and the target's |slope| is above the ${THRESHOLDS.controlPercentile}th percentile of the control neurons; "partly" when the CI excludes 0 but one of the other two fails (or no controls ran); "no" when the CI contains 0 or |slope| < ${THRESHOLDS.negligibleSlope} (a negligible effect).`,
  `Residual (fine-tuned runs): "yes" when fine-tuning raised the fixed head's r with the target by at least ${THRESHOLDS.minRGain} and the part of the residual change that tracks the neuron (β at the feature layer) points along the head's direction with |z| > ${THRESHOLDS.z}; "partly" when only one holds; else "no". The neuron counts as kept when its base and fine-tuned activations correlate with r ≥ ${THRESHOLDS.neuronKeptR}.`,
];

export const QUESTIONS = {
  weights: "Does the head read what the neuron writes?",
  patching: "Does the prediction move when the neuron moves?",
  residual: "What did fine-tuning change?",
} as const;

/** The largest rank that counts as specific among n candidates. */
export function rankLimit(n: number): number {
  return Math.max(1, Math.floor(THRESHOLDS.rankFraction * n));
}

function fmt(x: number, digits = 3): string {
  if (!Number.isFinite(x)) return String(x);
  if (x !== 0 && Math.abs(x) < 10 ** -digits) return x.toExponential(1);
  return x.toFixed(digits);
}

/** A confidence interval with enough digits that its two ends differ (up to 6 significant digits). */
export function ciText(ci: readonly [number, number]): string {
  let digits = 3;
  while (digits < 8 && ci[0] !== ci[1] && fmt(ci[0], digits) === fmt(ci[1], digits)) digits++;
  return `[${fmt(ci[0], digits)}, ${fmt(ci[1], digits)}]`;
}

// ───────────────────────────── weights ─────────────────────────────

export interface WeightsVerdictInput {
  target: { layer: number; neuron: number; layer_type: string; d_model: number; feature_layer?: number };
  reading: Partial<Record<VectorKind, Comparison>>;
  direct_write?: { applicable: boolean; share: number | null };
  pattern?: {
    cosine_with_target_pattern?: number;
    random_filter_null?: { n: number; target_pattern: { mean: number; std: number; percentile_abs: number } };
  };
  w_in?: { readout_correlation?: number; gate_readout_correlation?: number | null; spaces?: string } | null;
}

interface Check {
  zOk: boolean;
  rankOk: boolean;
  positive: boolean;
}

function check(c: Comparison): Check {
  return { zOk: Math.abs(c.z) > THRESHOLDS.z, rankOk: c.rank_in_layer <= rankLimit(c.n_in_layer), positive: c.cosine > 0 };
}

function describeComparison(what: string, vector: string, c: Comparison): string {
  const k = check(c);
  return `${what} · ${vector}: cosine ${fmt(c.cosine)}, z ${fmt(c.z, 1)} (${k.zOk ? "beyond" : "within"} ±${THRESHOLDS.z}), ` +
    `rank ${c.rank_in_layer} of ${c.n_in_layer} (${k.rankOk ? "within" : "outside"} the top ${100 * THRESHOLDS.rankFraction}%, rank ≤ ${rankLimit(c.n_in_layer)})`;
}

/** Whether patching shows a causal, specific, non-negligible positive effect of the neuron on the prediction. */
function patchingConfirms(p: PatchingVerdictInput): { ok: boolean; text: string } {
  if (p.fit === null) return { ok: false, text: "patching: no slope could be fitted." };
  const ci = p.fit_bootstrap.slope_ci95 ?? p.fit.slope_ci95;
  const slope = p.fit.slope;
  const excludesZero = ci !== null && (ci[0] > 0 || ci[1] < 0);
  const pct = p.controls.k > 0 ? p.controls.percentile_abs : null;
  const specific = pct !== null && pct > THRESHOLDS.controlPercentile;
  const ok = excludesZero && slope >= THRESHOLDS.negligibleSlope && specific;
  return {
    ok,
    text: `patching: slope ${fmt(slope)}${ci === null ? "" : `, 95% CI ${ciText(ci)}`}` +
      `${pct === null ? ", no control neurons" : `, above ${fmt(pct, 0)}% of the control neurons`} ` +
      `(confirms when the CI excludes 0, the slope is ≥ ${THRESHOLDS.negligibleSlope} and above the ${THRESHOLDS.controlPercentile}th percentile of the controls: ${ok ? "it does" : "it does not"}).`,
  };
}

/**
 * "Does the head read what the neuron writes?", decided from the head's reading direction (filter) against
 * the write vector, the direct write's share of the prediction's variance and, when given, patching.
 * The activation pattern is shown as evidence of what the prediction co-varies with, never used to decide.
 */
export function weightsVerdict(s: WeightsVerdictInput, patching?: PatchingVerdictInput | null): Verdict {
  const question = QUESTIONS.weights;
  const post = s.target.layer_type === "mlp_post";
  const writeKind: VectorKind = post ? "W_out" : "e_n";
  const writeName = post ? `W_out[${s.target.neuron}, :]` : `e_${s.target.neuron}`;
  const read = s.reading[writeKind];
  if (read === undefined) {
    return { question, level: "not assessable", headline: `The summary has no comparison with the neuron's write vector ${writeName}.`, evidence: [] };
  }
  const evidence = [describeComparison("head direction (filter)", writeName, read)];
  const dw = s.direct_write;
  const share = dw !== undefined && dw.applicable ? dw.share : null;
  if (dw !== undefined && !dw.applicable) {
    return {
      question, level: "no", evidence,
      headline: `No: the head reads layer ${s.target.feature_layer ?? "?"}, before layer ${s.target.layer} writes, so it cannot read the neuron's write.`,
    };
  }
  if (share !== null) {
    evidence.push(`direct write: the neuron's write along the head's gradient carries ${fmtPct(share)} of the prediction's variance (threshold ${100 * THRESHOLDS.minDirectShare}%).`);
  }
  const patch = patching === undefined || patching === null ? null : patchingConfirms(patching);
  if (patch !== null) evidence.push(patch.text);
  const pat = s.pattern;
  if (pat?.cosine_with_target_pattern !== undefined && pat.random_filter_null !== undefined) {
    const nl = pat.random_filter_null.target_pattern;
    evidence.push(`activation pattern (what the prediction co-varies with; not evidence of reading): cosine ${fmt(pat.cosine_with_target_pattern)} with the head-free target pattern Cov(x, act)/Var(act); the patterns of ${pat.random_filter_null.n} random filters give ${fmt(nl.mean)} ± ${fmt(nl.std)}.`);
  }
  // the neuron's readers: W_in, and for a gated MLP also W_gate (where the neuron reads is in w_in.spaces)
  const readers: Array<[string, Comparison | undefined, number | null | undefined]> = [
    ["W_in", s.reading.W_in_folded, s.w_in?.readout_correlation],
    ["W_gate", s.reading.W_gate_folded, s.w_in?.gate_readout_correlation],
  ];
  for (const [name, cmp, r] of readers) {
    if (cmp === undefined) continue;
    const readout = r === undefined || r === null ? "" : `; readout correlation ${fmt(r)} (how strongly what the head reads and what ${name}[:, ${s.target.neuron}] would read from the same residual vectors go together)`;
    evidence.push(describeComparison("head direction", `${name}[:, ${s.target.neuron}] (ln2 folded; the neuron reads the normalised residual stream of its own layer, the head resid_post of layer ${s.target.feature_layer ?? "?"})`, cmp) + readout + ".");
  }

  const k = check(read);
  const filterOk = k.zOk && k.rankOk;
  const shareOk = share === null ? true : share >= THRESHOLDS.minDirectShare; // no variance data: the filter decides alone
  const shareText = share === null ? "" : `the neuron's direct write carries ${fmtPct(share)} of the prediction's variance`;
  if (filterOk && !k.positive) {
    return { question, level: "partly", headline: `Partly: the head reads the neuron's write direction ${writeName} specifically, but with the wrong sign (the prediction falls when the neuron fires).`, evidence };
  }
  if (filterOk && shareOk && (patch === null || patch.ok)) {
    const extra = [share === null ? "" : `, and ${shareText}`, patch === null ? "" : "; patching confirms it"].join("");
    return { question, level: "yes", headline: `Yes: the head reads the direction neuron ${s.target.neuron} writes (${writeName}), far beyond chance and more than almost any other neuron${extra}.`, evidence };
  }
  if (filterOk) {
    const why = !shareOk
      ? `${shareText} (below ${100 * THRESHOLDS.minDirectShare}%): most of what it predicts comes from elsewhere`
      : "patching does not confirm that moving the neuron moves the prediction more than other neurons do";
    return { question, level: "partly", headline: `Partly: the head's direction is specifically aligned with ${writeName}, but ${why}.`, evidence };
  }
  if (share !== null && shareOk && k.positive) {
    return { question, level: "partly", headline: `Partly: ${shareText}, but the head's direction is not specific to ${writeName} (${k.zOk ? "other neurons match as well or better" : "its cosine is within the random-direction null"}).`, evidence };
  }
  if ((k.zOk || k.rankOk) && k.positive && patch !== null && patch.ok) {
    const weak = `${k.zOk ? "other neurons' writes match its direction as well or better" : "its cosine is within the random-direction null"}${share === null ? "" : ` and ${shareText}`}`;
    return { question, level: "partly", headline: `Partly: moving neuron ${s.target.neuron} moves the prediction more than other neurons do (patching) and the head's direction leans towards ${writeName}, but weakly: ${weak}.`, evidence };
  }
  const lean = k.zOk || k.rankOk ? ` (the direction leans towards ${writeName}, but ${k.zOk ? "other neurons match as well or better" : "within the random-direction null"})` : "";
  const base = `the head's direction is not specifically aligned with ${writeName}${lean}${share === null ? "" : ` and ${shareText}`}`;
  for (const [name, cmp] of readers) {
    if (cmp === undefined) continue;
    const w = check(cmp);
    if (w.zOk && w.rankOk) {
      return { question, level: "no", headline: `No: ${base}. It reads what the neuron reads (${name}[:, ${s.target.neuron}]) instead: it recomputes the neuron's input rather than reporting its output.`, evidence };
    }
  }
  return { question, level: "no", headline: `No: ${base}; whatever it reads, it is not this neuron's write.`, evidence };
}

function fmtPct(x: number): string {
  const p = 100 * x;
  return `${Math.abs(p) < 0.1 && p !== 0 ? p.toExponential(1) : p.toFixed(1)}%`;
}

// ───────────────────────────── patching ─────────────────────────────

export interface PatchingVerdictInput {
  target: { neuron: number };
  fit: { slope: number; slope_ci95: [number, number] | null } | null;
  fit_bootstrap: { slope_ci95: [number, number] | null };
  controls: { k: number; n_defined: number; percentile_abs: number | null; target_scale_slope: number | null };
}

export function patchingVerdict(s: PatchingVerdictInput): Verdict {
  const question = QUESTIONS.patching;
  if (s.fit === null) {
    return { question, level: "not assessable", headline: "Not assessable: the patched activations did not vary, so no slope could be fitted.", evidence: [] };
  }
  const slope = s.fit.slope;
  const boot = s.fit_bootstrap.slope_ci95;
  const ci = boot ?? s.fit.slope_ci95;
  const ciName = boot !== null ? "bootstrap 95% CI" : "t-based 95% CI (no bootstrap interval)";
  if (ci === null) {
    return { question, level: "not assessable", headline: `Not assessable: the slope is ${fmt(slope)} but it has no confidence interval (too few inputs).`, evidence: [] };
  }
  const excludesZero = ci[0] > 0 || ci[1] < 0;
  const containsIdeal = ci[0] <= 1 && 1 <= ci[1];
  const big = slope >= THRESHOLDS.minSlope;
  const evidence = [
    `slope Δprediction/Δactivation ${fmt(slope)}, ${ciName} ${ciText(ci)}: ${excludesZero ? "excludes 0" : "contains 0"}; ${containsIdeal ? "contains" : "excludes"} the ideal 1.`,
    `slope ${big ? "≥" : "<"} ${THRESHOLDS.minSlope} (a perfect self-reporter has 1; 0 means the prediction ignores the neuron).`,
  ];
  const c = s.controls;
  const pct = c.percentile_abs;
  const haveControls = c.k > 0 && pct !== null;
  const specific = haveControls && pct > THRESHOLDS.controlPercentile;
  if (haveControls) {
    evidence.push(`the target's scale-sweep |slope| ${c.target_scale_slope === null ? "n/a" : fmt(Math.abs(c.target_scale_slope))} is above ${fmt(pct, 0)}% of ${c.n_defined} random neurons of the layer (threshold ${THRESHOLDS.controlPercentile}%).`);
  } else {
    evidence.push("no control neurons: whether the prediction moves with any neuron of the layer is unknown.");
  }
  const ideal = containsIdeal ? "consistent with the ideal slope 1" : slope < 1 ? `under-reporting (slope ${fmt(slope)} < 1)` : `over-reporting (slope ${fmt(slope)} > 1)`;
  if (!excludesZero) {
    return { question, level: "no", headline: `No: changing neuron ${s.target.neuron} does not move the prediction detectably (the slope's CI contains 0).`, evidence };
  }
  if (Math.abs(slope) < THRESHOLDS.negligibleSlope) {
    return { question, level: "no", headline: `No: the prediction barely moves with neuron ${s.target.neuron} (|slope| ${fmt(Math.abs(slope))} < ${THRESHOLDS.negligibleSlope}), although the effect is detectable (the CI excludes 0).`, evidence };
  }
  if (slope < 0) {
    return { question, level: "partly", headline: `Partly: the prediction moves with the neuron, but the wrong way (slope ${fmt(slope)}).`, evidence };
  }
  if (big && specific) {
    return { question, level: "yes", headline: `Yes: the prediction follows neuron ${s.target.neuron} causally and more than it follows other neurons of the layer; ${ideal}.`, evidence };
  }
  const why = [
    ...(big ? [] : [`the effect is small (slope ${fmt(slope)} < ${THRESHOLDS.minSlope})`]),
    ...(haveControls ? (specific ? [] : [`other neurons of the layer move it about as much (percentile ${fmt(pct, 0)}% ≤ ${THRESHOLDS.controlPercentile}%)`]) : ["no controls ran"]),
  ];
  return { question, level: "partly", headline: `Partly: the prediction moves with the neuron (CI excludes 0), but ${why.join(" and ")}; ${ideal}.`, evidence };
}

// ───────────────────────────── residual ─────────────────────────────

export interface ResidualVerdictInput {
  target: { freeze_mode: string; feature_layer: number; layer: number; d_model: number };
  layers: Array<{
    layer: "embed" | number;
    share_of_prediction_change: number | null;
    /** Absent in summaries written before the mean-shift split. */
    share_of_coupled_change?: number | null;
    /** null when the layer is below the noise floor (unchanged). */
    coupled_change_cosines: { W_out: number; head: number } | null;
  }>;
  predictions: { base: { r_with_target: number }; finetuned: { r_with_target: number }; split?: { share_mean_shift: number; share_coupled: number } | null };
  neuron: { r: number };
}

export function residualVerdict(s: ResidualVerdictInput): Verdict {
  const question = QUESTIONS.residual;
  const t = s.target;
  const sqrtD = Math.sqrt(t.d_model);
  const rBase = s.predictions.base.r_with_target;
  const rFt = s.predictions.finetuned.r_with_target;
  const gain = rFt - rBase;
  const gainOk = Number.isFinite(gain) && gain >= THRESHOLDS.minRGain;
  const evidence = [
    `the fixed head's r with the target: ${fmt(rBase)} on the base model's features, ${fmt(rFt)} on the fine-tuned model's (gain ${fmt(gain)}, threshold ${THRESHOLDS.minRGain}).`,
  ];
  const featureLayer = s.layers.find((l) => l.layer === t.feature_layer);
  let alignedOk = false;
  if (featureLayer !== undefined && featureLayer.coupled_change_cosines === null) {
    evidence.push(`at layer ${t.feature_layer} (the head's input) no part of the residual change tracks the neuron above the noise floor: nothing there to be aligned.`);
  } else if (featureLayer !== undefined && featureLayer.coupled_change_cosines !== null) {
    const zHead = featureLayer.coupled_change_cosines.head * sqrtD;
    alignedOk = Math.abs(zHead) > THRESHOLDS.z;
    evidence.push(`the change that tracks the neuron (β at layer ${t.feature_layer}, the head's input) has cosine ${fmt(featureLayer.coupled_change_cosines.head)} with the head direction (z ${fmt(zHead, 1)}, threshold ±${THRESHOLDS.z}).`);
  } else {
    evidence.push(`the summary has no entry for the feature layer ${t.feature_layer}.`);
  }
  const targetLayer = s.layers.find((l) => l.layer === t.layer);
  if (targetLayer !== undefined && targetLayer.coupled_change_cosines !== null) {
    const c = targetLayer.coupled_change_cosines.W_out;
    evidence.push(`at the target layer ${t.layer}, β has cosine ${fmt(c)} with the neuron's W_out row (z ${fmt(c * sqrtD, 1)}).`);
  }
  const split = s.predictions.split;
  if (split != null) {
    evidence.push(`of the change in prediction (mean square), ${fmt(100 * split.share_mean_shift, 1)}% is a mean shift (re-calibrating the fixed head) and ${fmt(100 * split.share_coupled, 1)}% tracks the neuron's activation.`);
  }
  // which block carries the change that tracks the neuron (older summaries: the whole change)
  const key = s.layers.some((l) => l.share_of_coupled_change != null) ? "share_of_coupled_change" : "share_of_prediction_change";
  const shared = s.layers.filter((l) => l.coupled_change_cosines !== null && l[key] != null);
  if (shared.length > 0) {
    const top = shared.reduce((a, b) => (Math.abs(b[key]!) > Math.abs(a[key]!) ? b : a));
    evidence.push(`the largest share of the ${key === "share_of_coupled_change" ? "neuron-tracking " : ""}prediction change comes from ${top.layer === "embed" ? "the embeddings" : `block ${top.layer}`} (${fmt(100 * top[key]!, 0)}%).`);
  }
  const kept = s.neuron.r >= THRESHOLDS.neuronKeptR;
  evidence.push(`the neuron itself: r ${fmt(s.neuron.r, 4)} between its base and fine-tuned activations (${kept ? "kept" : "changed"}; threshold ${THRESHOLDS.neuronKeptR}).`);
  const caveat = kept ? "" : " Fine-tuning also changed the neuron itself, so the model may report a neuron that no longer exists as it was.";
  let level: VerdictLevel;
  let headline: string;
  if (gainOk && alignedOk) {
    level = "yes";
    headline = `Fine-tuning rewrote the ${t.freeze_mode === "partial" ? "trained blocks" : "model"} so that the residual stream carries the neuron's value along the direction the fixed head reads.`;
  } else if (gainOk || alignedOk) {
    level = "partly";
    headline = gainOk
      ? "Fine-tuning made the fixed head predict the neuron better, but the change that tracks the neuron is not clearly along the head's direction."
      : "The change that tracks the neuron points along the head's direction, but the head's predictions did not improve by much.";
  } else {
    level = "no";
    headline = "Fine-tuning did not route the neuron's value to the head: the head's predictions barely improved and the change is not along its direction.";
  }
  return { question, level, headline: headline + caveat, evidence };
}
