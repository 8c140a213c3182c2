// Labelled controls from @vscode-elements/elements (only the elements used are
// imported, to keep the bundle small) and a native range input where the
// library has no slider. Every control has a visible label and is reachable by Tab.
import '@vscode-elements/elements/dist/vscode-button/index.js';
import '@vscode-elements/elements/dist/vscode-checkbox/index.js';
import '@vscode-elements/elements/dist/vscode-label/index.js';
import '@vscode-elements/elements/dist/vscode-option/index.js';
import '@vscode-elements/elements/dist/vscode-single-select/index.js';
import '@vscode-elements/elements/dist/vscode-textfield/index.js';
import { custom, el } from './dom';

interface ValueElement extends HTMLElement {
  value: string;
}
interface CheckElement extends HTMLElement {
  checked: boolean;
}

let uid = 0;
const nextId = (prefix: string): string => `${prefix}-${++uid}`;

export function labelled(label: string, control: HTMLElement, id: string): HTMLElement {
  control.id = id;
  return el('div', { class: 'control' }, [custom('vscode-label', { for: id }, [label]), control]);
}

export function textField(
  label: string,
  value: string,
  placeholder: string,
  onInput: (v: string) => void,
): HTMLElement {
  const field = custom<ValueElement>('vscode-textfield', { placeholder, 'aria-label': label });
  field.value = value;
  field.addEventListener('input', () => onInput(field.value));
  return labelled(label, field, nextId('text'));
}

export function select<T extends string>(
  label: string,
  options: { value: T; label: string; description?: string }[],
  value: T,
  onChange: (v: T) => void,
): HTMLElement {
  const sel = custom<ValueElement>('vscode-single-select', { 'aria-label': label });
  for (const o of options)
    sel.append(
      custom('vscode-option', { value: o.value, selected: o.value === value, description: o.description }, [
        o.label,
      ]),
    );
  sel.addEventListener('change', () => onChange(sel.value as T));
  return labelled(label, sel, nextId('select'));
}

export function checkbox(label: string, checked: boolean, onChange: (v: boolean) => void): HTMLElement {
  const box = custom<CheckElement>('vscode-checkbox', { label, checked });
  box.addEventListener('change', () => onChange(box.checked));
  return el('div', { class: 'control control-check' }, [box]);
}

export function slider(
  label: string,
  min: number,
  max: number,
  step: number,
  value: number,
  show: (v: number) => string,
  onInput: (v: number) => void,
): HTMLElement {
  const id = nextId('range');
  const input = el('input', { type: 'range', id, min, max, step, value, class: 'range' });
  const out = el('output', { for: id, class: 'range-value', text: show(value) });
  input.addEventListener('input', () => {
    const v = Number(input.value);
    out.textContent = show(v);
    onInput(v);
  });
  return el('div', { class: 'control control-range' }, [
    el('label', { for: id, text: label }),
    el('div', { class: 'range-row' }, [input, out]),
  ]);
}

export function button(
  label: string,
  onClick: () => void,
  opts: { secondary?: boolean; title?: string; pressed?: boolean } = {},
): HTMLElement {
  const b = custom(
    'vscode-button',
    { secondary: opts.secondary ?? true, title: opts.title, 'aria-label': opts.title ?? label },
    [label],
  );
  if (opts.pressed !== undefined) b.setAttribute('aria-pressed', String(opts.pressed));
  b.addEventListener('click', onClick);
  return b;
}
