// Number formats shared by the panels' axes, tooltips and tables.
import { format } from 'd3';

export const fmtValue = format('.4~g');
export const fmtSi = format('.3~s');

/** Seconds as a short duration for axis ticks. */
export function fmtDuration(s: number): string {
  if (!Number.isFinite(s)) return '';
  const a = Math.abs(s);
  if (a < 120) return `${+s.toFixed(1)}s`;
  if (a < 7200) return `${+(s / 60).toFixed(1)}m`;
  return `${+(s / 3600).toFixed(2)}h`;
}
