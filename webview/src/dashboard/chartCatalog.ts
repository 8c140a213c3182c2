// Which charts the dashboard shows, in what order, with which titles: the
// metrics of ARCHITECTURE §4 first, then whatever else numeric the engine logs.
export interface ChartSpec {
  metric: string;
  title: string;
}

const KNOWN: Record<string, string> = {
  'train/loss': 'Train loss',
  'eval/loss': 'Eval loss',
  'train/lr': 'Learning rate',
  'train/grad_norm': 'Gradient norm',
  'train/tokens_per_s': 'Tokens / s',
  'train/lb_loss': 'Load-balancing loss',
  'train/z_loss': 'Router z-loss',
};

const ORDER = [
  'train/loss',
  'eval/loss',
  'eval/domain/',
  'train/lr',
  'train/grad_norm',
  'train/tokens_per_s',
  'train/lb_loss',
  'train/z_loss',
];

function rank(metric: string): number {
  const i = ORDER.findIndex((p) => (p.endsWith('/') ? metric.startsWith(p) : metric === p));
  return i < 0 ? ORDER.length : i;
}

export function chartTitle(metric: string): string {
  if (KNOWN[metric]) return KNOWN[metric];
  if (metric.startsWith('eval/domain/')) return `Eval loss · ${metric.slice('eval/domain/'.length)}`;
  const [split, ...rest] = metric.split('/');
  return `${rest.join('/').replace(/_/g, ' ')} (${split})`;
}

export function chartCatalog(metrics: Iterable<string>): ChartSpec[] {
  return [...new Set(metrics)]
    .sort((a, b) => rank(a) - rank(b) || a.localeCompare(b))
    .map((metric) => ({ metric, title: chartTitle(metric) }));
}
