// Editor side of an inspection: decorations colour each token by its top expert for the chosen
// router, a hover lists every router's experts, a status bar item names the router (click to
// switch). State is per document and dropped on edit, because the offsets would no longer match.
import * as vscode from 'vscode';
import { EXPERT_COLORS, expertBackground, expertBorderStyle, expertColor } from './palette';
import { routerKey, type InspectionResult } from './result';
import {
  colourPlan,
  groupAt,
  hoverMarkdown,
  loadSummary,
  routerLabel,
  routingRule,
  tokenGroups,
  type TokenGroup,
} from './view';

export const PICK_ROUTER_COMMAND = 'moelab.inspectRouting.pickRouter';
export const CLEAR_COMMAND = 'moelab.inspectRouting.clear';

interface Shown {
  result: InspectionResult;
  groups: TokenGroup[];
  /** Document offset of the inspected text's first character. */
  base: number;
  router: number;
}

export class RoutingEditorView implements vscode.HoverProvider, vscode.Disposable {
  private readonly shown = new Map<string, Shown>();
  private readonly types = new Map<number, vscode.TextEditorDecorationType>();
  private readonly status = vscode.window.createStatusBarItem(
    'moelab.routing',
    vscode.StatusBarAlignment.Right,
    100,
  );
  private readonly subs: vscode.Disposable[] = [];
  /** The router picked last, kept for the next inspection (as "L3.ffn"). */
  lastRouterKey: string | undefined;

  constructor() {
    this.status.name = 'MoE Lab Routing';
    this.status.command = PICK_ROUTER_COMMAND;
    this.subs.push(
      vscode.workspace.onDidChangeTextDocument((e) => {
        if (e.contentChanges.length) this.clear(e.document.uri);
      }),
      vscode.workspace.onDidCloseTextDocument((d) => this.clear(d.uri)),
      vscode.window.onDidChangeVisibleTextEditors(() => this.paintAll()),
      vscode.window.onDidChangeActiveTextEditor(() => this.updateStatus()),
    );
  }

  show(doc: vscode.TextDocument, base: number, result: InspectionResult, router: number): void {
    this.shown.set(doc.uri.toString(), { result, groups: tokenGroups(result), base, router });
    this.lastRouterKey = routerKey(result.routers[router]);
    this.paintAll();
  }

  current(doc: vscode.TextDocument | undefined): Shown | undefined {
    return doc && this.shown.get(doc.uri.toString());
  }

  setRouter(doc: vscode.TextDocument, router: number): void {
    const s = this.current(doc);
    if (!s) return;
    s.router = router;
    this.lastRouterKey = routerKey(s.result.routers[router]);
    this.paintAll();
  }

  clear(uri?: vscode.Uri): void {
    if (uri) this.shown.delete(uri.toString());
    else this.shown.clear();
    this.paintAll();
  }

  provideHover(doc: vscode.TextDocument, pos: vscode.Position): vscode.Hover | undefined {
    const s = this.current(doc);
    if (!s) return undefined;
    const g = groupAt(s.groups, doc.offsetAt(pos) - s.base);
    if (!g) return undefined;
    const md = new vscode.MarkdownString(hoverMarkdown(s.result, g, s.router));
    md.supportHtml = true; // only for the coloured ■ spans (VS Code keeps span colour styles)
    md.isTrusted = false;
    const range = new vscode.Range(doc.positionAt(s.base + g.start), doc.positionAt(s.base + g.end));
    return new vscode.Hover(md, range);
  }

  private decorationType(expert: number): vscode.TextEditorDecorationType {
    const slot = expert % (EXPERT_COLORS.length * 2);
    let t = this.types.get(slot);
    if (!t) {
      t = vscode.window.createTextEditorDecorationType({
        backgroundColor: expertBackground(expert),
        borderColor: expertColor(expert),
        borderStyle: `none none ${expertBorderStyle(slot)} none`,
        borderWidth: '0 0 2px 0',
        overviewRulerColor: expertColor(expert),
        overviewRulerLane: vscode.OverviewRulerLane.Center,
        rangeBehavior: vscode.DecorationRangeBehavior.ClosedClosed,
      });
      this.types.set(slot, t);
    }
    return t;
  }

  private paintAll(): void {
    for (const editor of vscode.window.visibleTextEditors) this.paint(editor);
    this.updateStatus();
  }

  private paint(editor: vscode.TextEditor): void {
    const s = this.current(editor.document);
    const bySlot = new Map<number, vscode.Range[]>();
    if (s) {
      const doc = editor.document;
      for (const [expert, ranges] of colourPlan(s.groups, s.result.routers[s.router])) {
        this.decorationType(expert);
        const slot = expert % (EXPERT_COLORS.length * 2);
        const list = bySlot.get(slot) ?? [];
        for (const [a, b] of ranges)
          list.push(new vscode.Range(doc.positionAt(s.base + a), doc.positionAt(s.base + b)));
        bySlot.set(slot, list);
      }
    }
    for (const [slot, type] of this.types) editor.setDecorations(type, bySlot.get(slot) ?? []);
  }

  private updateStatus(): void {
    const s = this.current(vscode.window.activeTextEditor?.document);
    if (!s) {
      this.status.hide();
      return;
    }
    const r = s.result.routers[s.router];
    this.status.text = `$(symbol-color) ${routerLabel(r)}`;
    const tip = new vscode.MarkdownString(
      [
        `**MoE Lab routing** — ${s.result.modelType}${s.result.method ? ` (${s.result.method})` : ''}, ${routingRule(r)}`,
        '',
        Array.from(
          { length: r.numExperts },
          (_, e) => `<span style="color:${expertColor(e)};">■</span> E${e}`,
        ).join('  '),
        '',
        `Top-expert share: ${loadSummary(s.result, r)}`,
        '',
        `${s.result.tokens.length} tokens${s.result.windows > 1 ? ` in ${s.result.windows} windows` : ''} · click to switch layer/router`,
      ].join('\n'),
    );
    tip.supportHtml = true;
    this.status.tooltip = tip;
    this.status.show();
  }

  dispose(): void {
    for (const d of this.subs) d.dispose();
    for (const t of this.types.values()) t.dispose();
    this.status.dispose();
    this.shown.clear();
  }
}
