// VS Code theme colours for canvas drawing. CSS can use var(--vscode-*) directly;
// a canvas needs resolved strings, re-read when VS Code switches theme (it
// rewrites the body's class and inline style).
export interface ThemeColors {
  background: string;
  foreground: string;
  muted: string;
  grid: string;
  accent: string;
  warning: string;
  error: string;
  cold: string;
  hot: string;
  highContrast: boolean;
  series: string[];
}

function cssVar(style: CSSStyleDeclaration, name: string, fallback: string): string {
  const v = style.getPropertyValue(name).trim();
  return v || fallback;
}

export function readTheme(): ThemeColors {
  const s = getComputedStyle(document.body);
  const background = cssVar(s, '--vscode-editor-background', '#1e1e1e');
  const foreground = cssVar(s, '--vscode-editor-foreground', cssVar(s, '--vscode-foreground', '#cccccc'));
  const chart = (name: string, fallback: string): string => cssVar(s, `--vscode-charts-${name}`, fallback);
  const base = [
    chart('blue', '#3794ff'),
    chart('orange', '#d18616'),
    chart('green', '#89d185'),
    chart('red', '#f14c4c'),
    chart('purple', '#b180d7'),
    chart('yellow', '#cca700'),
  ];
  // Beyond the six theme chart colours, Tableau's palette keeps runs apart.
  const extra = ['#17becf', '#e377c2', '#8c564b', '#bcbd22', '#7f7f7f', '#aec7e8'];
  return {
    background,
    foreground,
    muted: cssVar(s, '--vscode-descriptionForeground', foreground),
    grid: cssVar(
      s,
      '--vscode-editorWidget-border',
      cssVar(s, '--vscode-panel-border', 'rgba(128,128,128,0.35)'),
    ),
    accent: cssVar(s, '--vscode-focusBorder', base[0]),
    warning: cssVar(s, '--vscode-editorWarning-foreground', '#cca700'),
    error: cssVar(s, '--vscode-errorForeground', '#f48771'),
    cold: base[0],
    hot: base[3],
    highContrast: document.body.classList.contains('vscode-high-contrast'),
    series: [...base, ...extra],
  };
}

export function onThemeChange(callback: () => void): void {
  const observer = new MutationObserver(callback);
  observer.observe(document.body, { attributes: true, attributeFilter: ['class', 'style'] });
  observer.observe(document.documentElement, { attributes: true, attributeFilter: ['style'] });
}
