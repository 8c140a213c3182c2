// The tensor-name patterns of the engine (engine/moelab/io/layout.py), read from the file
// `moelab schema` generates so that the engine and the Checkpoints view never disagree on what a
// name says. The patterns keep to the regex syntax Python and JavaScript share. No vscode import.
import layout from '../../../engine/moelab/schema/layout.json';

export type PatternName = keyof typeof layout.patterns;

const compiled = Object.fromEntries(
  Object.entries(layout.patterns).map(([k, p]) => [k, new RegExp(p.regex)]),
) as Record<PatternName, RegExp>;

/** The capture groups of `pattern` in `name`, by the meaning layout.json gives them; undefined if no match. */
export function matchTensor(pattern: PatternName, name: string): Record<string, string> | undefined {
  const m = compiled[pattern].exec(name);
  if (!m) return undefined;
  const groups: string[] = layout.patterns[pattern].groups;
  return Object.fromEntries(groups.map((g, i) => [g, m[i + 1]]));
}

/** What a top-k attention expert runs only for its tokens (analysis/param_count.py counts the same). */
export const ATTN_PER_TOKEN_MATRICES: readonly string[] = layout.attn_per_token_matrices;

export const PATTERN_NAMES = Object.keys(layout.patterns) as PatternName[];
