// Webviews cannot trigger downloads: files go to the host, which shows a save dialog.
import { postToHost } from './vscodeApi';

export function saveCsv(suggestedName: string, csv: string): void {
  postToHost({ type: 'saveFile', suggestedName, format: 'csv', data: csv });
}

export function savePng(suggestedName: string, canvas: HTMLCanvasElement): void {
  const url = canvas.toDataURL('image/png');
  postToHost({ type: 'saveFile', suggestedName, format: 'png', data: url.slice(url.indexOf(',') + 1) });
}

export function csvField(v: string | number | undefined): string {
  if (v === undefined || (typeof v === 'number' && !Number.isFinite(v))) return '';
  const s = String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** A file name from a chart title: letters, digits, dashes. */
export function fileStem(title: string): string {
  return title.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^-+|-+$/g, '') || 'chart';
}
