// Read-only virtual documents for header diffs (scheme moelab-diff). Content lives in memory
// for the session; the ".diff" suffix makes VS Code colour it as a diff.
import * as vscode from 'vscode';

export const DIFF_SCHEME = 'moelab-diff';

export class DiffDocumentProvider implements vscode.TextDocumentContentProvider {
  private readonly docs = new Map<string, string>();
  private counter = 0;

  provideTextDocumentContent(uri: vscode.Uri): string {
    return this.docs.get(uri.toString()) ?? '';
  }

  async show(title: string, content: string): Promise<void> {
    const safe = title.replace(/[^\w.-]+/g, '_').slice(0, 80);
    const uri = vscode.Uri.from({
      scheme: DIFF_SCHEME,
      path: `/${safe}.diff`,
      query: String(++this.counter),
    });
    this.docs.set(uri.toString(), content);
    await vscode.window.showTextDocument(uri, { preview: false });
  }
}
