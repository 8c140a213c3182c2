// Router warnings become VS Code notifications once per run (and kind), however
// often the webview re-reports them or the panel is reopened in this session.
import type { RouterWarning } from '../../../webview/src/protocol';

export class WarningLedger {
  private readonly notified = new Set<string>();

  /** One notification text per run and kind not yet notified. */
  take(warnings: readonly RouterWarning[], runName: (id: string) => string): string[] {
    const grouped = new Map<string, RouterWarning[]>();
    for (const w of warnings) {
      const key = `${w.runId}\u0000${w.kind}`;
      if (this.notified.has(key)) continue;
      grouped.set(key, [...(grouped.get(key) ?? []), w]);
    }
    const out: string[] = [];
    for (const [key, ws] of grouped) {
      this.notified.add(key);
      const first = ws[0];
      const what = first.kind === 'dead' ? 'dead experts' : 'router collapse';
      const more = ws.length > 1 ? ` (and ${ws.length - 1} more router${ws.length > 2 ? 's' : ''})` : '';
      out.push(`MoE Lab: ${what} in run ${runName(first.runId)}: ${first.message}${more}.`);
    }
    return out;
  }
}
