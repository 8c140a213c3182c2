// The HTML shell of a panel: a strict Content-Security-Policy with a per-load
// nonce, the bundle's script and stylesheet, nothing inline. vscode-free so it
// can be unit-tested and reused by the headless-browser harness.

export interface WebviewHtmlParts {
  title: string;
  /** webview.cspSource: the origin VS Code serves local resources from. */
  cspSource: string;
  nonce: string;
  scriptUri: string;
  styleUri: string;
}

function escapeAttr(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function contentSecurityPolicy(cspSource: string, nonce: string): string {
  return [
    "default-src 'none'",
    // Only the nonce'd bundle runs: no inline script, no eval.
    `script-src 'nonce-${nonce}'`,
    // Our CSS file; vscode-elements styles its shadow roots with constructable
    // stylesheets, which CSP does not gate, so no 'unsafe-inline' is needed.
    `style-src ${cspSource}`,
    `font-src ${cspSource}`,
    `img-src ${cspSource} data:`,
  ].join('; ');
}

export function webviewHtml(p: WebviewHtmlParts): string {
  const nonce = escapeAttr(p.nonce);
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${escapeAttr(contentSecurityPolicy(p.cspSource, p.nonce))}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${escapeAttr(p.styleUri)}">
<title>${escapeAttr(p.title)}</title>
</head>
<body>
<main id="app" aria-label="${escapeAttr(p.title)}"></main>
<script type="module" nonce="${nonce}" src="${escapeAttr(p.scriptUri)}"></script>
</body>
</html>
`;
}
