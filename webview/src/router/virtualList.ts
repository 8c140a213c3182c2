// A fixed-row-height virtual list: only the rows in view (plus a few) exist in
// the DOM, so 40 layers × 2 routers × 2 runs of heatmaps stay cheap to scroll.
import { el } from '../shared/dom';

const OVERSCAN = 2;

export class VirtualList {
  readonly root: HTMLDivElement;
  private readonly spacer: HTMLDivElement;
  private count = 0;
  private rendered = new Map<number, HTMLElement>();

  constructor(
    private readonly rowHeight: number,
    private readonly renderRow: (index: number) => HTMLElement,
    label: string,
  ) {
    this.spacer = el('div', { class: 'layer-spacer' });
    this.root = el('div', { class: 'layer-list', tabindex: 0, role: 'list', 'aria-label': label }, [
      this.spacer,
    ]);
    this.root.addEventListener('scroll', () => this.update());
    new ResizeObserver(() => this.update()).observe(this.root);
  }

  setCount(count: number): void {
    this.count = count;
    this.spacer.style.height = `${count * this.rowHeight}px`;
    this.refresh();
  }

  /** Re-render the rows in view (data changed). */
  refresh(): void {
    for (const node of this.rendered.values()) node.remove();
    this.rendered.clear();
    this.update();
  }

  private update(): void {
    const top = this.root.scrollTop;
    const height = this.root.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / this.rowHeight) - OVERSCAN);
    const last = Math.min(this.count - 1, Math.ceil((top + height) / this.rowHeight) + OVERSCAN);
    for (const [i, node] of this.rendered) {
      if (i < first || i > last) {
        node.remove();
        this.rendered.delete(i);
      }
    }
    for (let i = first; i <= last; i++) {
      if (this.rendered.has(i)) continue;
      const node = this.renderRow(i);
      node.classList.add('layer-row');
      node.setAttribute('role', 'listitem');
      node.style.top = `${i * this.rowHeight}px`;
      node.style.height = `${this.rowHeight}px`;
      node.dataset.index = String(i);
      this.spacer.append(node);
      this.rendered.set(i, node);
    }
  }
}
