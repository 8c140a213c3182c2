// Expert colours: Okabe–Ito (colour-blind safe) then Paul Tol's muted set. Used as a translucent
// background plus a solid underline, which reads on light, dark and high-contrast themes alike
// without changing the text colour the theme chose.
export const EXPERT_COLORS = [
  '#E69F00',
  '#56B4E9',
  '#009E73',
  '#F0E442',
  '#0072B2',
  '#D55E00',
  '#CC79A7',
  '#999999',
  '#882255',
  '#44AA99',
  '#117733',
  '#AA4499',
] as const;

export function expertColor(expert: number): string {
  return EXPERT_COLORS[expert % EXPERT_COLORS.length];
}

/** Translucent background (about 30 % opacity) for an expert's tokens. */
export function expertBackground(expert: number): string {
  return `${expertColor(expert)}4D`;
}

/** Past the palette, colours repeat: a dashed underline tells expert 12 from expert 0. */
export function expertBorderStyle(expert: number): 'solid' | 'dashed' {
  return expert < EXPERT_COLORS.length ? 'solid' : 'dashed';
}
